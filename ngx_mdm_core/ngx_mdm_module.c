
/*
 * ngx_mdm_module: the core of nginx-mdm.  Its directives configure the
 * PostgreSQL pool, the Redis client and the helper process; it starts them
 * in every worker and in the helper, and serves the status location.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_core.h"


#define NGX_MDM_SHM_SIZE  (64 * 1024)


static void *ngx_mdm_create_main_conf(ngx_conf_t *cf);
static char *ngx_mdm_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_mdm_create_loc_conf(ngx_conf_t *cf);
static char *ngx_mdm_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_mdm_postgres(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_mdm_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_mdm_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_mdm_debug_query(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_mdm_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_mdm_shm_init(ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_mdm_init_process(ngx_cycle_t *cycle);
static void ngx_mdm_exit_process(ngx_cycle_t *cycle);
static void ngx_mdm_exiting_handler(ngx_event_t *ev);

ngx_int_t ngx_http_mdm_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_mdm_debug_query_handler(ngx_http_request_t *r);


#define NGX_MDM_EXITING_MAX  4

static ngx_mdm_exiting_pt  ngx_mdm_exiting[NGX_MDM_EXITING_MAX];
static ngx_uint_t          ngx_mdm_nexiting;
static ngx_connection_t   *ngx_mdm_exiting_conn;


static ngx_command_t  ngx_mdm_commands[] = {

    { ngx_string("mdm_postgres"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_mdm_postgres,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_postgres_pool_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, pg_pool_size),
      NULL },

    { ngx_string("mdm_postgres_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, pg_connect_timeout),
      NULL },

    { ngx_string("mdm_postgres_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, pg_timeout),
      NULL },

    { ngx_string("mdm_postgres_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, pg_queue_size),
      NULL },

    { ngx_string("mdm_postgres_migrate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, migrate),
      NULL },

    { ngx_string("mdm_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_mdm_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("mdm_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, retry_after),
      NULL },

    { ngx_string("mdm_helper_path"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_core_main_conf_t, helper_dir),
      NULL },

    { ngx_string("mdm_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_mdm_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_debug_query"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_mdm_debug_query,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_mdm_loc_conf_t, debug_query),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_mdm_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_mdm_postconfiguration,             /* postconfiguration */

    ngx_mdm_create_main_conf,              /* create main configuration */
    ngx_mdm_init_main_conf,                /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_mdm_create_loc_conf,               /* create location configuration */
    ngx_mdm_merge_loc_conf                 /* merge location configuration */
};


ngx_module_t  ngx_mdm_module = {
    NGX_MODULE_V1,
    &ngx_mdm_module_ctx,                   /* module context */
    ngx_mdm_commands,                      /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_mdm_init_process,                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_mdm_exit_process,                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_mdm_core_main_conf_t  *ngx_mdm_conf;
static ngx_mdm_shm_t                  *ngx_mdm_shm_addr;


ngx_http_mdm_core_main_conf_t *
ngx_mdm_core_conf(void)
{
    return ngx_mdm_conf;
}


ngx_mdm_shm_t *
ngx_mdm_shm(void)
{
    return ngx_mdm_shm_addr;
}


static void *
ngx_mdm_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_core_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_core_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     cmcf->pg_conninfo = { 0, NULL };
     *     cmcf->redis = { 0, NULL };
     *     cmcf->helper_dir = { 0, NULL };
     */

    cmcf->pg_pool_size = NGX_CONF_UNSET_UINT;
    cmcf->pg_connect_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->pg_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->pg_queue_size = NGX_CONF_UNSET_UINT;
    cmcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->retry_after = NGX_CONF_UNSET;
    cmcf->migrate = NGX_CONF_UNSET;

    if (ngx_array_init(&cmcf->helper_inits, cf->pool, 4,
                       sizeof(ngx_mdm_helper_init_pt))
        != NGX_OK)
    {
        return NULL;
    }

    return cmcf;
}


static char *
ngx_mdm_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mdm_core_main_conf_t  *cmcf = conf;

    ngx_conf_init_uint_value(cmcf->pg_pool_size, 4);
    ngx_conf_init_msec_value(cmcf->pg_connect_timeout, 5000);
    ngx_conf_init_msec_value(cmcf->pg_timeout, 10000);
    ngx_conf_init_uint_value(cmcf->pg_queue_size, 8192);
    ngx_conf_init_msec_value(cmcf->redis_timeout, 2000);
    ngx_conf_init_value(cmcf->retry_after, 5);
    ngx_conf_init_value(cmcf->migrate, 1);

    if (cmcf->pg_pool_size == 0 || cmcf->pg_pool_size > 256) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_postgres_pool_size\" must be 1 to 256");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_mdm_create_loc_conf(ngx_conf_t *cf)
{
    ngx_mdm_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_mdm_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    return lcf;
}


static char *
ngx_mdm_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_mdm_loc_conf_t  *prev = parent;
    ngx_mdm_loc_conf_t  *conf = child;

    ngx_conf_merge_str_value(conf->debug_query, prev->debug_query, "");

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_mdm_pg_param(ngx_conf_t *cf, ngx_http_mdm_core_main_conf_t *cmcf,
    const char *key, const char *value)
{
    char  **k, **v;

    k = ngx_array_push(cmcf->pg_keywords);
    v = ngx_array_push(cmcf->pg_values);
    if (k == NULL || v == NULL) {
        return NGX_ERROR;
    }

    *k = (char *) key;
    *v = (char *) value;

    return NGX_OK;
}


/*
 * Host names are resolved here, at configuration time, as nginx does for
 * upstream servers: libpq then gets "hostaddr" and a worker never calls
 * getaddrinfo.  statement_timeout bounds every query on the server side.
 */

static char *
ngx_mdm_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_core_main_conf_t  *cmcf = conf;

    char               *err, *host, *hostaddr, *options;
    u_char             *last;
    ngx_str_t          *value, name;
    ngx_url_t           u;
    PQconninfoOption   *opts, *o;

    if (cmcf->pg_conninfo.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    cmcf->pg_conninfo = value[1];

    err = NULL;
    opts = PQconninfoParse((char *) value[1].data, &err);
    if (opts == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid connection string in \"mdm_postgres\": "
                           "%s", err ? err : "out of memory");
        if (err) {
            PQfreemem(err);
        }
        return NGX_CONF_ERROR;
    }

    cmcf->pg_keywords = ngx_array_create(cf->pool, 16, sizeof(char *));
    cmcf->pg_values = ngx_array_create(cf->pool, 16, sizeof(char *));
    if (cmcf->pg_keywords == NULL || cmcf->pg_values == NULL) {
        PQconninfoFree(opts);
        return NGX_CONF_ERROR;
    }

    host = NULL;
    hostaddr = NULL;
    options = NULL;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0') {
            continue;
        }

        last = ngx_pnalloc(cf->pool, ngx_strlen(o->val) + 1);
        if (last == NULL) {
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }
        ngx_cpystrn(last, (u_char *) o->val, ngx_strlen(o->val) + 1);

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = (char *) last;
        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = (char *) last;
        } else if (ngx_strcmp(o->keyword, "options") == 0) {
            options = (char *) last;
        }

        if (ngx_mdm_pg_param(cf, cmcf, o->keyword, (char *) last)
            != NGX_OK)
        {
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }
    }

    PQconninfoFree(opts);

    if (host && hostaddr == NULL && host[0] != '/') {

        if (ngx_strchr(host, ',')) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"mdm_postgres\" takes one host, "
                               "give a load balancer or pgbouncer address "
                               "for several");
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));
        u.url.data = (u_char *) host;
        u.url.len = ngx_strlen(host);
        u.default_port = 5432;
        u.no_port = 1;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cannot resolve postgres host \"%s\" "
                               "in \"mdm_postgres\"%s%s", host,
                               u.err ? ": " : "", u.err ? u.err : "");
            return NGX_CONF_ERROR;
        }

        name.len = NGX_SOCKADDR_STRLEN;
        name.data = ngx_pnalloc(cf->pool, name.len + 1);
        if (name.data == NULL) {
            return NGX_CONF_ERROR;
        }

        name.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                                 name.data, name.len, 0);
        name.data[name.len] = '\0';

        if (ngx_mdm_pg_param(cf, cmcf, "hostaddr", (char *) name.data)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (options == NULL) {
        /* filled in with the timeout once the main conf is complete */
        if (ngx_mdm_pg_param(cf, cmcf, "options", NULL) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_mdm_pg_param(cf, cmcf, "fallback_application_name", "nginx-mdm")
        != NGX_OK
        || ngx_mdm_pg_param(cf, cmcf, NULL, NULL) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_mdm_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_core_main_conf_t  *cmcf = conf;

    ngx_str_t  *value;
    ngx_url_t   u;

    if (cmcf->redis.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    cmcf->redis = value[1];

    if (value[1].len > 5 && ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        cmcf->redis_path.len = value[1].len - 5;
        cmcf->redis_path.data = value[1].data + 5;
        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address \"%V\" in \"mdm_redis\"%s%s, "
                           "use host:port or unix:/path",
                           &value[1], u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    cmcf->redis_addr = &u.addrs[0];

    cmcf->redis_path.data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (cmcf->redis_path.data == NULL) {
        return NGX_CONF_ERROR;
    }

    cmcf->redis_path.len = ngx_sock_ntop(u.addrs[0].sockaddr,
                                         u.addrs[0].socklen,
                                         cmcf->redis_path.data,
                                         NGX_SOCKADDR_STRLEN, 0);
    cmcf->redis_path.data[cmcf->redis_path.len] = '\0';

    return NGX_CONF_OK;
}


static char *
ngx_mdm_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mdm_status_handler;

    return NGX_CONF_OK;
}


static char *
ngx_mdm_debug_query(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                      *rv;
    ngx_http_core_loc_conf_t  *clcf;

    rv = ngx_conf_set_str_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mdm_debug_query_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_mdm_postconfiguration(ngx_conf_t *cf)
{
    u_char                         *p;
    ngx_str_t                       name;
    ngx_uint_t                      i;
    ngx_path_t                     *path;
    ngx_http_mdm_core_main_conf_t  *cmcf;
    char                          **k, **v;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_module);

    if (cmcf->pg_conninfo.len == 0) {
        if (cmcf->redis.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"mdm_redis\" needs \"mdm_postgres\"");
            return NGX_ERROR;
        }
        return NGX_OK;
    }

    /* the server-side bound on every statement */

    k = cmcf->pg_keywords->elts;
    v = cmcf->pg_values->elts;

    for (i = 0; k[i]; i++) {
        if (ngx_strcmp(k[i], "options") == 0 && v[i] == NULL) {
            p = ngx_pnalloc(cf->pool, 64);
            if (p == NULL) {
                return NGX_ERROR;
            }
            ngx_sprintf(p, "-c statement_timeout=%M%Z", cmcf->pg_timeout);
            v[i] = (char *) p;
        }
    }

    /* counters and the helper heartbeat, shared by this node's processes */

    ngx_str_set(&name, "mdm_core");
    cmcf->shm_zone = ngx_shared_memory_add(cf, &name, NGX_MDM_SHM_SIZE,
                                           &ngx_mdm_module);
    if (cmcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    cmcf->shm_zone->init = ngx_mdm_shm_init;
    cmcf->shm_zone->data = cmcf;

    /*
     * The helper process: a path with a manager callback makes stock nginx
     * start, restart and stop a dedicated process for it (DESIGN.md §4).
     */

    if (cmcf->helper_dir.len == 0) {
        p = (u_char *) NGX_HTTP_CLIENT_TEMP_PATH;
        name.data = p;
        name.len = ngx_strlen(p);
        while (name.len && p[name.len - 1] != '/') {
            name.len--;
        }

        cmcf->helper_dir.len = name.len + sizeof("mdm") - 1;
        cmcf->helper_dir.data = ngx_pnalloc(cf->pool, cmcf->helper_dir.len);
        if (cmcf->helper_dir.data == NULL) {
            return NGX_ERROR;
        }
        ngx_memcpy(ngx_cpymem(cmcf->helper_dir.data, p, name.len), "mdm", 3);
    }

    path = ngx_pcalloc(cf->pool, sizeof(ngx_path_t));
    if (path == NULL) {
        return NGX_ERROR;
    }

    path->name = cmcf->helper_dir;

    if (ngx_conf_full_name(cf->cycle, &path->name, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    path->manager = ngx_mdm_helper_manager;
    path->data = cmcf;
    path->conf_file = cf->conf_file->file.name.data;
    path->line = cf->conf_file->line;

    if (ngx_add_path(cf, &path) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf->helper_path = path;

    return NGX_OK;
}


static ngx_int_t
ngx_mdm_shm_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        /* reload: keep the counters of the previous cycle */
        shm_zone->data = data;
        ngx_mdm_shm_addr = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        ngx_mdm_shm_addr = shpool->data;
        return NGX_OK;
    }

    ngx_mdm_shm_addr = ngx_slab_calloc(shpool, sizeof(ngx_mdm_shm_t));
    if (ngx_mdm_shm_addr == NULL) {
        return NGX_ERROR;
    }

    shpool->data = ngx_mdm_shm_addr;
    shm_zone->data = ngx_mdm_shm_addr;

    return NGX_OK;
}


static ngx_int_t
ngx_mdm_init_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_core_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_mdm_module);
    if (cmcf == NULL || cmcf->pg_conninfo.len == 0) {
        return NGX_OK;
    }

    ngx_mdm_conf = cmcf;
    ngx_mdm_shm_addr = cmcf->shm_zone->data;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE
        && ngx_process != NGX_PROCESS_HELPER)
    {
        return NGX_OK;
    }

    if (ngx_mdm_pg_init_process(cycle, cmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_mdm_redis_init_process(cycle, cmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_mdm_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_mdm_exiting_conn) {
        ngx_close_connection(ngx_mdm_exiting_conn);
        ngx_mdm_exiting_conn = NULL;
    }

    if (ngx_mdm_conf == NULL) {
        return;
    }

    ngx_mdm_pg_exit_process();
    ngx_mdm_redis_exit_process();
}


/*
 * nginx tells no module that a worker starts to leave gracefully, but it
 * does close the worker's idle connections then: it calls the read
 * handler of every connection marked idle, with c->close set
 * (ngx_close_idle_connections()).  The handlers hang on one such
 * connection, a slot on /dev/null that is never watched for events.
 * What a handler starts keeps the worker as long as it needs: queries
 * under way hold non-cancelable timers (ngx_mdm_pg.c, ngx_mdm_redis.c).
 * Workers only: a single process (master_process off) exits at once.
 */

ngx_int_t
ngx_mdm_on_exiting(ngx_cycle_t *cycle, ngx_mdm_exiting_pt handler)
{
    ngx_fd_t           fd;
    ngx_connection_t  *c;

    if (ngx_process != NGX_PROCESS_WORKER) {
        return NGX_OK;
    }

    if (ngx_mdm_nexiting == NGX_MDM_EXITING_MAX) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "mdm: too many handlers for a worker's exit");
        return NGX_ERROR;
    }

    if (ngx_mdm_exiting_conn == NULL) {
        fd = ngx_open_file("/dev/null", NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
        if (fd == NGX_INVALID_FILE) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          ngx_open_file_n " \"/dev/null\" failed");
            return NGX_ERROR;
        }

        c = ngx_get_connection(fd, cycle->log);
        if (c == NULL) {
            (void) ngx_close_file(fd);
            return NGX_ERROR;
        }

        c->idle = 1;
        c->read->handler = ngx_mdm_exiting_handler;
        c->read->log = cycle->log;
        c->write->handler = ngx_mdm_exiting_handler;
        c->write->log = cycle->log;

        ngx_mdm_exiting_conn = c;
    }

    ngx_mdm_exiting[ngx_mdm_nexiting++] = handler;

    return NGX_OK;
}


static void
ngx_mdm_exiting_handler(ngx_event_t *ev)
{
    ngx_uint_t         i;
    ngx_connection_t  *c;

    c = ev->data;

    if (!c->close) {
        return;
    }

    ngx_mdm_exiting_conn = NULL;
    ngx_close_connection(c);

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "mdm: worker leaving, finishing its writes");

    for (i = 0; i < ngx_mdm_nexiting; i++) {
        ngx_mdm_exiting[i]();
    }
}
