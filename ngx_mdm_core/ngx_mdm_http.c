
/*
 * Request glue: wait for PostgreSQL and Redis without blocking, answer
 * "storage down" uniformly, and the status location built on both.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>
#include "ngx_mdm_core.h"


typedef struct {
    ngx_http_request_t            *r;
    ngx_mdm_pg_query_t            *query;
    ngx_http_mdm_pg_handler_pt     handler;
} ngx_http_mdm_pg_ctx_t;


typedef struct {
    ngx_http_request_t            *r;
    ngx_mdm_pg_query_t            *query;
    ngx_mdm_redis_cmd_t           *cmd;
    ngx_uint_t                     pending;
    double                         start;
    double                         pg_ms;
    double                         redis_ms;
    ngx_int_t                      schema_version;
    unsigned                       pg_ok:1;
    unsigned                       redis_ok:1;
    unsigned                       redis_configured:1;
} ngx_http_mdm_status_ctx_t;


static void ngx_http_mdm_pg_done(void *data, PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_pg_cleanup(void *data);
static void ngx_http_mdm_status_pg_done(void *data, PGresult *res,
    ngx_int_t rc);
static void ngx_http_mdm_status_redis_done(void *data, void *reply);
static void ngx_http_mdm_status_cleanup(void *data);
static void ngx_http_mdm_status_done(ngx_http_mdm_status_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_status_finish(ngx_http_mdm_status_ctx_t *ctx);
static void ngx_http_mdm_debug_query_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);


static const char  ngx_http_mdm_status_sql[] =
    "SELECT coalesce(max(version), 0) FROM mdm_schema_migrations";


static double
ngx_http_mdm_now_ms(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1000000.0;
}


ngx_int_t
ngx_http_mdm_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, u_char *body, size_t len)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;

    if (content_type) {
        r->headers_out.content_type = *content_type;
        r->headers_out.content_type_len = content_type->len;
    }

    if (len == 0) {
        r->header_only = r->header_only || r->method == NGX_HTTP_HEAD;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (len) {
        b->pos = body;
        b->last = body + len;
        b->memory = 1;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_mdm_unavailable(ngx_http_request_t *r)
{
    ngx_table_elt_t                *h;
    ngx_http_mdm_core_main_conf_t  *cmcf;

    static ngx_str_t  type = ngx_string("text/plain");
    static u_char     body[] = "storage unavailable, retry later\n";

    cmcf = ngx_mdm_core_conf();

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (h->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    h->value.len = ngx_sprintf(h->value.data, "%T",
                               cmcf ? cmcf->retry_after : 5)
                   - h->value.data;

    return ngx_http_mdm_send(r, NGX_HTTP_SERVICE_UNAVAILABLE, &type,
                             body, sizeof(body) - 1);
}


ngx_int_t
ngx_http_mdm_pg_query(ngx_http_request_t *r, ngx_mdm_pg_args_t *args,
    ngx_http_mdm_pg_handler_pt handler)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_mdm_pg_ctx_t  *ctx;

    ctx = ngx_palloc(r->pool, sizeof(ngx_http_mdm_pg_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (ctx == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->r = r;
    ctx->handler = handler;

    args->handler = ngx_http_mdm_pg_done;
    args->data = ctx;
    args->log = r->connection->log;

    ctx->query = ngx_mdm_pg_query(args);

    if (ctx->query == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm postgres unavailable, answering 503");
        return ngx_http_mdm_unavailable(r);
    }

    cln->handler = ngx_http_mdm_pg_cleanup;
    cln->data = ctx;

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_http_mdm_pg_done(void *data, PGresult *res, ngx_int_t rc)
{
    ngx_http_mdm_pg_ctx_t  *ctx = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    ctx->query = NULL;
    r = ctx->r;
    c = r->connection;

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mdm postgres unavailable, answering 503");
        ngx_http_finalize_request(r, ngx_http_mdm_unavailable(r));

    } else {
        ctx->handler(r, res, rc);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_mdm_pg_cleanup(void *data)
{
    ngx_http_mdm_pg_ctx_t  *ctx = data;

    if (ctx->query) {
        ngx_mdm_pg_cancel(ctx->query);
        ctx->query = NULL;
    }
}


/*
 * The status location: a real round trip to PostgreSQL and to Redis, run
 * side by side, then one JSON document.  503 when PostgreSQL is down, so
 * that a load balancer takes the node out.
 */

ngx_int_t
ngx_http_mdm_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_mdm_pg_args_t           args;
    ngx_pool_cleanup_t         *cln;
    ngx_http_mdm_status_ctx_t  *ctx;

    static const char  *ping[] = { "PING" };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_mdm_core_conf() == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mdm_status_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (ctx == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->r = r;
    ctx->start = ngx_http_mdm_now_ms();
    cln->handler = ngx_http_mdm_status_cleanup;
    cln->data = ctx;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_http_mdm_status_sql;
    args.handler = ngx_http_mdm_status_pg_done;
    args.data = ctx;
    args.log = r->connection->log;

    ctx->query = ngx_mdm_pg_query(&args);
    if (ctx->query) {
        ctx->pending++;
    }

    if (ngx_mdm_core_conf()->redis.len) {
        ctx->redis_configured = 1;
        ctx->cmd = ngx_mdm_redis_command(r->connection->log,
                                         ngx_http_mdm_status_redis_done,
                                         ctx, 1, ping, NULL);
        if (ctx->cmd) {
            ctx->pending++;
        }
    }

    if (ctx->pending == 0) {
        return ngx_http_mdm_status_finish(ctx);
    }

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_http_mdm_status_pg_done(void *data, PGresult *res, ngx_int_t rc)
{
    ngx_http_mdm_status_ctx_t  *ctx = data;

    char  *state;

    ctx->query = NULL;
    ctx->pg_ms = ngx_http_mdm_now_ms() - ctx->start;

    if (rc == NGX_OK && PQntuples(res) == 1) {
        ctx->pg_ok = 1;
        ctx->schema_version = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                                       PQgetlength(res, 0, 0));

    } else if (rc == NGX_ERROR) {
        /* before the first migration the version table is missing */
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && ngx_strcmp(state, "42P01") == 0) {
            ctx->pg_ok = 1;
            ctx->schema_version = 0;
        }
    }

    if (--ctx->pending == 0) {
        ngx_http_mdm_status_done(ctx);
    }
}


static void
ngx_http_mdm_status_redis_done(void *data, void *reply)
{
    ngx_http_mdm_status_ctx_t  *ctx = data;

    redisReply  *rr = reply;

    ctx->cmd = NULL;
    ctx->redis_ms = ngx_http_mdm_now_ms() - ctx->start;
    ctx->redis_ok = (rr && rr->type == REDIS_REPLY_STATUS);

    if (--ctx->pending == 0) {
        ngx_http_mdm_status_done(ctx);
    }
}


static void
ngx_http_mdm_status_cleanup(void *data)
{
    ngx_http_mdm_status_ctx_t  *ctx = data;

    if (ctx->query) {
        ngx_mdm_pg_cancel(ctx->query);
        ctx->query = NULL;
    }

    if (ctx->cmd) {
        ngx_mdm_redis_cancel(ctx->cmd);
        ctx->cmd = NULL;
    }
}


static void
ngx_http_mdm_status_done(ngx_http_mdm_status_ctx_t *ctx)
{
    ngx_connection_t  *c;

    c = ctx->r->connection;

    ngx_http_finalize_request(ctx->r, ngx_http_mdm_status_finish(ctx));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_mdm_status_finish(ngx_http_mdm_status_ctx_t *ctx)
{
    u_char              *p, *body;
    time_t               beat;
    ngx_mdm_shm_t       *shm;
    ngx_http_request_t  *r;

    static ngx_str_t  type = ngx_string("application/json");

    r = ctx->r;
    shm = ngx_mdm_shm();

    body = ngx_pnalloc(r->pool, 1024);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"postgres\": {\"ok\": %s, \"latency_ms\": %.3f, "
                    "\"healthy_connections\": %ui, \"pool_size\": %ui}, ",
                    ctx->pg_ok ? "true" : "false", ctx->pg_ok ? ctx->pg_ms : 0,
                    ngx_mdm_pg_healthy(), ngx_mdm_core_conf()->pg_pool_size);

    if (ctx->redis_configured) {
        p = ngx_sprintf(p, "\"redis\": {\"ok\": %s, \"latency_ms\": %.3f}, ",
                        ctx->redis_ok ? "true" : "false",
                        ctx->redis_ok ? ctx->redis_ms : 0);
    } else {
        p = ngx_sprintf(p, "\"redis\": null, ");
    }

    if (ctx->pg_ok) {
        p = ngx_sprintf(p, "\"schema_version\": %i, ", ctx->schema_version);
    } else {
        p = ngx_sprintf(p, "\"schema_version\": null, ");
    }

    beat = shm ? (time_t) shm->helper_heartbeat : 0;

    if (beat) {
        p = ngx_sprintf(p, "\"helper\": {\"heartbeat_age_s\": %T, "
                        "\"pid\": %uA}, ",
                        ngx_max(ngx_time() - beat, 0), shm->helper_pid);
    } else {
        p = ngx_sprintf(p, "\"helper\": {\"heartbeat_age_s\": null}, ");
    }

    if (shm) {
        p = ngx_sprintf(p, "\"counters\": {\"pg_errors\": %uA, "
                        "\"pg_unavailable\": %uA, \"redis_errors\": %uA}}\n",
                        shm->pg_errors, shm->pg_unavailable,
                        shm->redis_errors);
    } else {
        p = ngx_sprintf(p, "\"counters\": {}}\n");
    }

    return ngx_http_mdm_send(r, ctx->pg_ok ? NGX_HTTP_OK
                                           : NGX_HTTP_SERVICE_UNAVAILABLE,
                             &type, body, p - body);
}


/*
 * mdm_debug_query: for tests only, runs the configured statement and
 * returns the first field of the first row.
 */

ngx_int_t
ngx_http_mdm_debug_query_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_mdm_pg_args_t               args;
    ngx_mdm_loc_conf_t  *lcf;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_mdm_module);

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = (char *) lcf->debug_query.data;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_debug_query_done);
}


static void
ngx_http_mdm_debug_query_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    u_char  *p;
    size_t   len;

    static ngx_str_t  type = ngx_string("text/plain");

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm debug query failed: %s",
                      PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (PQntuples(res) > 0 && PQnfields(res) > 0) {
        len = PQgetlength(res, 0, 0);
        p = ngx_pnalloc(r->pool, len + 1);
        if (p == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
        ngx_memcpy(p, PQgetvalue(res, 0, 0), len);
        p[len++] = '\n';

    } else {
        p = (u_char *) "\n";
        len = 1;
    }

    ngx_http_finalize_request(r, ngx_http_mdm_send(r, NGX_HTTP_OK, &type,
                                                   p, len));
}
