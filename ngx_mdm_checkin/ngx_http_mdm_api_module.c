
/*
 * ngx_http_mdm_api_module: the admin JSON API.
 *
 * "mdm_api;" serves the API from a prefix location; the path below it
 * chooses the endpoint (the route table below).  Access control is
 * nginx's own (auth_basic, client certificates, auth_request, ...): the
 * module only insists that one is there.  "mdm_api_auth $var;" names a
 * variable that the access control sets only for an authorized request;
 * an empty (or "0") value gets 403.  A location with mdm_api and no
 * mdm_api_auth fails nginx -t unless "mdm_api_auth off;" says so.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_api.h"


/* the push hint of the push-request contract (007_push.sql) */
#define NGX_HTTP_MDM_API_PUSH_CHANNEL  "mdm:push"

#define NGX_HTTP_MDM_API_GET     (NGX_HTTP_GET|NGX_HTTP_HEAD)


typedef struct {
    ngx_str_t                     pattern;     /* "enrollments/ * /commands" */
    ngx_uint_t                    methods;
    ngx_http_mdm_api_handler_pt   handler;
    ngx_uint_t                    body;        /* reads a request body */
} ngx_http_mdm_api_route_t;


static ngx_int_t ngx_http_mdm_api_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_api_access(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
static ngx_http_mdm_api_route_t *ngx_http_mdm_api_route(
    ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx, ngx_uint_t *methods);
static ngx_uint_t ngx_http_mdm_api_match(ngx_http_mdm_api_ctx_t *ctx,
    ngx_str_t *pattern);
static ngx_int_t ngx_http_mdm_api_not_allowed(ngx_http_request_t *r,
    ngx_uint_t methods);
static void ngx_http_mdm_api_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_api_unescape(ngx_http_request_t *r,
    ngx_str_t *value);
static void *ngx_http_mdm_api_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_api_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_mdm_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_api_auth(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_api_challenge_ttl(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_conf_num_bounds_t  ngx_http_mdm_api_max_ids_bounds = {
    ngx_conf_check_num_bounds, 1, 10000000
};


static ngx_command_t  ngx_http_mdm_api_commands[] = {

    { ngx_string("mdm_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_api_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_api_auth,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_api_challenge_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
      |NGX_CONF_TAKE12,
      ngx_http_mdm_api_challenge_ttl,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_api_max_ids"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_api_loc_conf_t, max_ids),
      &ngx_http_mdm_api_max_ids_bounds },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mdm_api_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_mdm_api_create_loc_conf,      /* create location configuration */
    ngx_http_mdm_api_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_mdm_api_module = {
    NGX_MODULE_V1,
    &ngx_http_mdm_api_module_ctx,          /* module context */
    ngx_http_mdm_api_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the endpoints, below the location's prefix; "*" is one path segment */

static ngx_http_mdm_api_route_t  ngx_http_mdm_api_routes[] = {

    { ngx_string("commands"), NGX_HTTP_POST,
      ngx_http_mdm_api_enqueue, 1 },

    { ngx_string("commands/*"), NGX_HTTP_MDM_API_GET,
      ngx_http_mdm_api_command, 0 },

    { ngx_string("commands/*"), NGX_HTTP_DELETE,
      ngx_http_mdm_api_command_cancel, 0 },

    { ngx_string("commands/*/results/*"), NGX_HTTP_MDM_API_GET,
      ngx_http_mdm_api_command_result, 0 },

    { ngx_string("enrollments"), NGX_HTTP_MDM_API_GET,
      ngx_http_mdm_api_enrollments, 0 },

    { ngx_string("enrollments/*"), NGX_HTTP_MDM_API_GET,
      ngx_http_mdm_api_enrollment, 0 },

    { ngx_string("enrollments/*/commands"), NGX_HTTP_MDM_API_GET,
      ngx_http_mdm_api_queue, 0 },

    { ngx_string("enrollments/*/commands"), NGX_HTTP_DELETE,
      ngx_http_mdm_api_queue_clear, 0 },

    { ngx_string("enrollments/*/commands/*"), NGX_HTTP_DELETE,
      ngx_http_mdm_api_queue_cancel, 0 },

    { ngx_string("push"), NGX_HTTP_POST,
      ngx_http_mdm_api_push, 1 },

    { ngx_string("challenges"), NGX_HTTP_POST,
      ngx_http_mdm_api_challenge, 1 },

    { ngx_string("certificates/revoke"), NGX_HTTP_POST,
      ngx_http_mdm_api_revoke, 1 },

    { ngx_null_string, 0, NULL, 0 }
};


static ngx_int_t
ngx_http_mdm_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_uint_t                 methods;
    ngx_http_mdm_api_ctx_t    *ctx;
    ngx_http_mdm_api_route_t  *route;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mdm_api_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_api_module);
    ngx_http_set_ctx(r, ctx, ngx_http_mdm_api_module);

    rc = ngx_http_mdm_api_access(r, ctx);

    if (rc == NGX_DECLINED) {
        (void) ngx_http_discard_request_body(r);
        return ngx_mdm_api_error(r, NGX_HTTP_FORBIDDEN,
                                 "forbidden: the request is not authorized "
                                 "(mdm_api_auth is empty)");
    }

    if (rc != NGX_OK) {
        return rc;
    }

    route = ngx_http_mdm_api_route(r, ctx, &methods);

    if (route == NULL) {
        (void) ngx_http_discard_request_body(r);

        if (methods) {
            return ngx_http_mdm_api_not_allowed(r, methods);
        }

        return ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND,
                                 "no such endpoint: %V", &r->uri);
    }

    if (ngx_mdm_core_conf() == NULL
        || ngx_mdm_core_conf()->pg_conninfo.len == 0)
    {
        (void) ngx_http_discard_request_body(r);
        return ngx_mdm_api_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "mdm_postgres is not configured");
    }

    ctx->handler = route->handler;

    if (!route->body) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ctx->handler(r, ctx);
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_mdm_api_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * The access check.  nginx's access phase has run: a request that reaches
 * us with an empty mdm_api_auth value was not authorized by it
 * (NGX_DECLINED).
 */

static ngx_int_t
ngx_http_mdm_api_access(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    ngx_str_t  value;

    if (ctx->conf->auth == NULL) {
        ngx_str_set(&ctx->actor, "-");
        return NGX_OK;
    }

    if (ngx_http_complex_value(r, ctx->conf->auth, &value) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (value.len == 0 || (value.len == 1 && value.data[0] == '0')) {
        return NGX_DECLINED;
    }

    ctx->actor = value;

    return NGX_OK;
}


/*
 * Split the path below the location into segments and find the route.
 * NULL: none; *methods then holds those the path allows, if any.
 */

static ngx_http_mdm_api_route_t *
ngx_http_mdm_api_route(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx,
    ngx_uint_t *methods)
{
    u_char                    *p, *end, *s;
    ngx_http_mdm_api_route_t  *rt;
    ngx_http_core_loc_conf_t  *clcf;

    *methods = 0;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    end = r->uri.data + r->uri.len;

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(p, clcf->name.data, clcf->name.len) == 0)
    {
        p += clcf->name.len;
    }

    while (p < end && *p == '/') {
        p++;
    }

    if (end > p && end[-1] == '/') {
        end--;
    }

    while (p < end) {
        if (ctx->nseg == NGX_MDM_API_MAX_SEGMENTS) {
            return NULL;
        }

        s = ngx_strlchr(p, end, '/');
        if (s == NULL) {
            s = end;
        }

        ctx->seg[ctx->nseg].data = p;
        ctx->seg[ctx->nseg].len = s - p;
        ctx->nseg++;

        p = s + 1;
    }

    for (rt = ngx_http_mdm_api_routes; rt->handler; rt++) {
        if (!ngx_http_mdm_api_match(ctx, &rt->pattern)) {
            continue;
        }

        if (rt->methods & r->method) {
            return rt;
        }

        *methods |= rt->methods;
    }

    return NULL;
}


static ngx_uint_t
ngx_http_mdm_api_match(ngx_http_mdm_api_ctx_t *ctx, ngx_str_t *pattern)
{
    u_char      *p, *end, *s;
    size_t       len;
    ngx_uint_t   i;

    p = pattern->data;
    end = pattern->data + pattern->len;

    for (i = 0; i < ctx->nseg; i++) {
        if (p >= end) {
            return 0;
        }

        s = ngx_strlchr(p, end, '/');
        if (s == NULL) {
            s = end;
        }

        len = s - p;

        if (len == 1 && *p == '*') {
            if (ctx->seg[i].len == 0) {
                return 0;
            }

        } else if (len != ctx->seg[i].len
                   || ngx_strncmp(p, ctx->seg[i].data, len) != 0)
        {
            return 0;
        }

        p = s + 1;
    }

    return p >= end;
}


static ngx_int_t
ngx_http_mdm_api_not_allowed(ngx_http_request_t *r, ngx_uint_t methods)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    p = ngx_pnalloc(r->pool, sizeof("GET, HEAD, POST, DELETE") - 1);
    if (h == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = p;

    if (methods & NGX_HTTP_GET) {
        p = ngx_cpymem(p, "GET, HEAD, ", sizeof("GET, HEAD, ") - 1);
    }

    if (methods & NGX_HTTP_POST) {
        p = ngx_cpymem(p, "POST, ", sizeof("POST, ") - 1);
    }

    if (methods & NGX_HTTP_DELETE) {
        p = ngx_cpymem(p, "DELETE, ", sizeof("DELETE, ") - 1);
    }

    h->value.len = p - h->value.data - 2;

    return ngx_mdm_api_error(r, NGX_HTTP_NOT_ALLOWED,
                             "method not allowed here; allowed: %V",
                             &h->value);
}


static void
ngx_http_mdm_api_body_handler(ngx_http_request_t *r)
{
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    ngx_http_finalize_request(r, ctx->handler(r, ctx));
}


/* a NUL-terminated copy, for a query parameter */

char *
ngx_http_mdm_api_cstr(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p;

    p = ngx_pnalloc(pool, s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_cpymem(p, s->data, s->len) = '\0';

    return (char *) p;
}


/*
 * The statement of an endpoint keyed by its path: $1 is the path's second
 * segment (seg[1]) and, when "two", $2 its fourth (seg[3]).
 */

ngx_int_t
ngx_http_mdm_api_query_path(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, const char *sql, ngx_uint_t two,
    int result_format, ngx_http_mdm_pg_handler_pt handler)
{
    const char         *values[2];
    ngx_mdm_pg_args_t   args;

    values[0] = ngx_http_mdm_api_cstr(r->pool, &ctx->seg[1]);
    values[1] = two ? ngx_http_mdm_api_cstr(r->pool, &ctx->seg[3]) : "";

    if (values[0] == NULL || values[1] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = sql;
    args.nparams = two ? 2 : 1;
    args.values = values;
    args.result_format = result_format;

    return ngx_http_mdm_pg_query(r, &args, handler);
}


/* query arguments, unescaped into the request pool */

ngx_int_t
ngx_http_mdm_api_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), value) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    return ngx_http_mdm_api_unescape(r, value);
}


static ngx_int_t
ngx_http_mdm_api_unescape(ngx_http_request_t *r, ngx_str_t *value)
{
    u_char  *dst, *src;

    dst = ngx_pnalloc(r->pool, value->len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    src = value->data;
    value->data = dst;

    ngx_unescape_uri(&dst, &src, value->len, 0);

    value->len = dst - value->data;
    *dst = '\0';

    return NGX_OK;
}


/* NGX_OK and *flag, NGX_DECLINED absent, NGX_ERROR not a boolean */

ngx_int_t
ngx_http_mdm_api_arg_flag(ngx_http_request_t *r, const char *name,
    ngx_uint_t *flag)
{
    ngx_str_t  v;

    if (ngx_http_mdm_api_arg(r, name, &v) != NGX_OK) {
        return NGX_DECLINED;
    }

    if ((v.len == 1 && v.data[0] == '1')
        || (v.len == 4 && ngx_strncasecmp(v.data, (u_char *) "true", 4) == 0)
        || (v.len == 3 && ngx_strncasecmp(v.data, (u_char *) "yes", 3) == 0))
    {
        *flag = 1;
        return NGX_OK;
    }

    if ((v.len == 1 && v.data[0] == '0')
        || (v.len == 5 && ngx_strncasecmp(v.data, (u_char *) "false", 5) == 0)
        || (v.len == 2 && ngx_strncasecmp(v.data, (u_char *) "no", 2) == 0))
    {
        *flag = 0;
        return NGX_OK;
    }

    return NGX_ERROR;
}


/*
 * Paging: ?limit=N (1..NGX_MDM_API_PAGE_MAX, *limit is the default) and
 * ?after=<the last key of the previous page>.  NGX_ERROR: bad limit.
 */

ngx_int_t
ngx_http_mdm_api_page(ngx_http_request_t *r, ngx_int_t *limit,
    ngx_str_t *after)
{
    ngx_int_t  n;
    ngx_str_t  v;

    if (ngx_http_mdm_api_arg(r, "limit", &v) == NGX_OK) {
        n = ngx_atoi(v.data, v.len);

        if (n < 1 || n > NGX_MDM_API_PAGE_MAX) {
            return NGX_ERROR;
        }

        *limit = n;
    }

    if (ngx_http_mdm_api_arg(r, "after", after) != NGX_OK) {
        after->len = 0;
        after->data = NULL;
    }

    return NGX_OK;
}


/* the hint of the push-request contract: the rows are committed already */

void
ngx_http_mdm_api_push_hint(ngx_http_request_t *r)
{
    static const char   *argv[] = {
        "PUBLISH", NGX_HTTP_MDM_API_PUSH_CHANNEL, ""
    };
    static const size_t  argvlen[] = {
        sizeof("PUBLISH") - 1, sizeof(NGX_HTTP_MDM_API_PUSH_CHANNEL) - 1, 0
    };

    if (ngx_mdm_core_conf() == NULL || ngx_mdm_core_conf()->redis.len == 0) {
        return;
    }

    /* losing it costs latency only: the helper polls as well */
    (void) ngx_mdm_redis_command(ngx_cycle->log, NULL, NULL, 3, argv,
                                 argvlen);
}


/*
 * A statement failed: a value PostgreSQL refused is the client's fault
 * (400, class 22 "data exception"), a duplicate key a conflict (409),
 * anything else ours (500).
 */

ngx_int_t
ngx_http_mdm_api_db_error(ngx_http_request_t *r, PGresult *res,
    const char *conflict)
{
    char  *state, *msg;

    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

    if (state && conflict && ngx_strcmp(state, "23505") == 0) {
        return ngx_mdm_api_error(r, NGX_HTTP_CONFLICT, "%s", conflict);
    }

    if (state && state[0] == '2' && state[1] == '2') {
        return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST, "invalid value: %s",
                                 msg ? msg : "");
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "mdm api: query failed: %s",
                  res ? PQresultErrorMessage(res) : "no result");

    return ngx_mdm_api_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                             "database error");
}


/*
 * The answer of a statement that cancels queue rows of one command or one
 * enrollment, (found, count): {"<key>": "<id>", "cancelled": N}, or 404
 * "unknown <what>".
 */

ngx_int_t
ngx_http_mdm_api_cancelled(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, const char *what, const char *key, ngx_str_t *id)
{
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK || PQntuples(res) != 1) {
        return ngx_http_mdm_api_db_error(r, res, NULL);
    }

    if (PQgetvalue(res, 0, 0)[0] == '0') {
        return ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND, "unknown %s: %V",
                                 what, id);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm api: %V cancelled %s queued commands of %s %V",
                  &ctx->actor, PQgetvalue(res, 0, 1), what, id);

    ngx_mdm_api_out_init(&out, r->pool, 256);
    ngx_mdm_api_out_lit(&out, "{");
    ngx_mdm_api_out_cstr(&out, key);
    ngx_mdm_api_out_lit(&out, ": ");
    ngx_mdm_api_out_str(&out, id->data, id->len);
    ngx_mdm_api_out_lit(&out, ", \"cancelled\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 1);
    ngx_mdm_api_out_lit(&out, "}");

    return ngx_mdm_api_send(r, NGX_HTTP_OK, &out);
}


static void *
ngx_http_mdm_api_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_api_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_api_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->enabled = 0;
     *     conf->file = { 0, NULL };
     *     conf->line = 0;
     */

    conf->auth = NGX_CONF_UNSET_PTR;
    conf->challenge_ttl = NGX_CONF_UNSET;
    conf->challenge_max_ttl = NGX_CONF_UNSET;
    conf->max_ids = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_mdm_api_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_mdm_api_loc_conf_t  *prev = parent;
    ngx_http_mdm_api_loc_conf_t  *conf = child;

    ngx_conf_merge_ptr_value(conf->auth, prev->auth, NGX_CONF_UNSET_PTR);
    ngx_conf_merge_value(conf->challenge_ttl, prev->challenge_ttl, 3600);
    ngx_conf_merge_value(conf->challenge_max_ttl, prev->challenge_max_ttl,
                         7 * 86400);
    ngx_conf_merge_uint_value(conf->max_ids, prev->max_ids, 1000000);

    /* the API is never served without access control by mistake */
    if (conf->enabled && conf->auth == NGX_CONF_UNSET_PTR) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"mdm_api\" in %V:%ui has no \"mdm_api_auth\": "
                      "protect the location (auth_basic, client "
                      "certificates, auth_request) and name a variable "
                      "that only an authorized request sets, e.g. "
                      "\"mdm_api_auth $remote_user;\", or say "
                      "\"mdm_api_auth off;\"", &conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_api_loc_conf_t  *alcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (alcf->enabled) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

#if (NGX_PCRE)
    if (clcf->regex) {
        return "must be in a prefix location, e.g. "
               "\"location /api/v1/mdm/ { ... }\"";
    }
#endif

    if (clcf->exact_match || clcf->named) {
        return "must be in a prefix location, e.g. "
               "\"location /api/v1/mdm/ { ... }\"";
    }

    clcf->handler = ngx_http_mdm_api_handler;

    alcf->enabled = 1;
    alcf->file = cf->conf_file->file.name;
    alcf->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_api_auth(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_api_loc_conf_t  *alcf = conf;

    ngx_str_t                         *value;
    ngx_http_compile_complex_value_t   ccv;

    if (alcf->auth != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        alcf->auth = NULL;
        return NGX_CONF_OK;
    }

    if (ngx_http_script_variables_count(&value[1]) == 0) {
        return "needs a variable that nginx's access control sets, "
               "e.g. $remote_user, or \"off\"";
    }

    alcf->auth = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (alcf->auth == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = alcf->auth;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* mdm_api_challenge_ttl default [max] */

static char *
ngx_http_mdm_api_challenge_ttl(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_api_loc_conf_t  *alcf = conf;

    time_t      ttl, max;
    ngx_str_t  *value;

    if (alcf->challenge_ttl != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ttl = ngx_parse_time(&value[1], 1);
    max = (cf->args->nelts == 3) ? ngx_parse_time(&value[2], 1)
                                 : ngx_max(ttl, 7 * 86400);

    if (ttl == (time_t) NGX_ERROR || max == (time_t) NGX_ERROR
        || ttl < 1 || max < ttl)
    {
        return "takes a default time and an optional maximum, "
               "e.g. \"1h 7d\", with 1s <= default <= maximum";
    }

    alcf->challenge_ttl = ttl;
    alcf->challenge_max_ttl = max;

    return NGX_CONF_OK;
}
