
/*
 * nginx-mdm admin API: enrollments, their queues, push now.
 *
 *   GET    enrollments                      one page, filters
 *   GET    enrollments/<id>                 one channel, user channels,
 *                                           certificates
 *   GET    enrollments/<id>/commands        its queue
 *   DELETE enrollments/<id>/commands        clear its queue
 *   DELETE enrollments/<id>/commands/<uuid> cancel one command
 *   POST   push                             push now
 *
 * An enrollment is one channel (PROTOCOL.md §3.3): a device channel, id =
 * UDID or EnrollmentID, and its user channels, id = "<device id>:<user>".
 * The JSON of a channel is made by mdm_api_enrollment() (008_api.sql).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_api.h"
#include "ngx_mdm_api_sql.h"


static void ngx_http_mdm_api_enrollments_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_api_enrollment_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_api_queue_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_api_queue_cleared(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_api_queue_cancelled(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_api_pushed(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc);


/* the filters of GET enrollments: query argument, statement parameter */

typedef struct {
    const char   *arg;
    ngx_uint_t    param;
    ngx_uint_t    boolean;
} ngx_http_mdm_api_filter_t;


static ngx_http_mdm_api_filter_t  ngx_http_mdm_api_filters[] = {
    { "device_id", 2, 0 },
    { "serial_number", 3, 0 },
    { "channel", 4, 0 },
    { "enabled", 5, 1 },
    { "udid", 6, 0 },
    { NULL, 0, 0 }
};


/*
 * GET enrollments?limit=&after=&device_id=&serial_number=&channel=
 *     &enabled=&udid=
 */

ngx_int_t
ngx_http_mdm_api_enrollments(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx)
{
    u_char                     *limit;
    ngx_int_t                   n;
    ngx_str_t                   after, v;
    ngx_uint_t                  flag;
    const char                 *values[7];
    ngx_mdm_pg_args_t           args;
    ngx_http_mdm_api_filter_t  *f;

    n = NGX_MDM_API_PAGE_DEFAULT;

    if (ngx_http_mdm_api_page(r, &n, &after) != NGX_OK) {
        return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                 "\"limit\" must be 1 to %d",
                                 NGX_MDM_API_PAGE_MAX);
    }

    ngx_memzero(values, sizeof(values));

    for (f = ngx_http_mdm_api_filters; f->arg; f++) {
        if (!f->boolean) {
            if (ngx_http_mdm_api_arg(r, f->arg, &v) == NGX_OK) {
                values[f->param] = (char *) v.data;
            }

            continue;
        }

        switch (ngx_http_mdm_api_arg_flag(r, f->arg, &flag)) {
        case NGX_OK:
            values[f->param] = flag ? "t" : "f";
            break;
        case NGX_ERROR:
            return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                     "\"%s\" must be true or false",
                                     f->arg);
        }
    }

    limit = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
    if (limit == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(limit, "%i", n) = '\0';

    ctx->total = n;

    values[0] = (char *) after.data;
    values[1] = (char *) limit;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_API_SQL_ENROLLMENTS;
    args.nparams = 7;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args,
                                 ngx_http_mdm_api_enrollments_done);
}


/* {"enrollments": [...], "next": "<last id>" or null} */

static void
ngx_http_mdm_api_enrollments_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    int                      i, n;
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    n = PQntuples(res);

    ngx_mdm_api_out_init(&out, r->pool, 64 + (size_t) n * 1200);
    ngx_mdm_api_out_lit(&out, "{\"enrollments\": [");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_mdm_api_out_lit(&out, ", ");
        }

        ngx_mdm_api_out_pg(&out, res, i, 1);
    }

    ngx_mdm_api_out_page_end(&out, res,
                             n > 0 && (ngx_uint_t) n == ctx->total, 0);

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, NGX_HTTP_OK, &out));
}


/* GET enrollments/<id> */

ngx_int_t
ngx_http_mdm_api_enrollment(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx)
{
    ctx->enrollment_id = ctx->seg[1];

    return ngx_http_mdm_api_query_path(r, ctx, NGX_MDM_API_SQL_ENROLLMENT,
                                       0, 0, ngx_http_mdm_api_enrollment_done);
}


static void
ngx_http_mdm_api_enrollment_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    int                      len;
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND,
                                      "unknown enrollment: %V",
                                      &ctx->enrollment_id));
        return;
    }

    /* json_build_object() ends with "}": the object, extended */

    len = PQgetlength(res, 0, 0);

    if (len < 2 || PQgetvalue(res, 0, 0)[len - 1] != '}') {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_mdm_api_out_init(&out, r->pool, 4096);
    ngx_mdm_api_out_raw(&out, PQgetvalue(res, 0, 0), len - 1);
    ngx_mdm_api_out_lit(&out, ", \"user_channels\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 1);
    ngx_mdm_api_out_lit(&out, ", \"certificates\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 2);
    ngx_mdm_api_out_lit(&out, "}");

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, NGX_HTTP_OK, &out));
}


/* GET enrollments/<id>/commands?all=1&limit=&after=<command uuid> */

ngx_int_t
ngx_http_mdm_api_queue(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    u_char             *limit;
    ngx_int_t           n;
    ngx_str_t           after;
    ngx_uint_t          all;
    const char         *values[4];
    ngx_mdm_pg_args_t   args;

    n = NGX_MDM_API_PAGE_DEFAULT;

    if (ngx_http_mdm_api_page(r, &n, &after) != NGX_OK) {
        return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                 "\"limit\" must be 1 to %d",
                                 NGX_MDM_API_PAGE_MAX);
    }

    all = 0;
    if (ngx_http_mdm_api_arg_flag(r, "all", &all) == NGX_ERROR) {
        return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                 "\"all\" must be 1 or 0");
    }

    ctx->enrollment_id = ctx->seg[1];
    ctx->total = n;

    limit = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
    values[0] = ngx_http_mdm_api_cstr(r->pool, &ctx->seg[1]);

    if (limit == NULL || values[0] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(limit, "%i", n) = '\0';

    values[1] = all ? "t" : "f";
    values[2] = (char *) after.data;
    values[3] = (char *) limit;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_API_SQL_QUEUE;
    args.nparams = 4;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_api_queue_done);
}


static void
ngx_http_mdm_api_queue_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    int                      i, n, rows;
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    /* columns 0 to 9 */
    static const ngx_mdm_api_field_t  fields[] = {
        { "command_uuid", 1 }, { "request_type", 1 },
        { "status", 1 }, { "priority", 0 },
        { "queued_at", 1 }, { "sent_at", 1 },
        { "sent_count", 0 }, { "not_now_tally", 0 },
        { "updated_at", 1 }, { "expires_at", 1 }
    };

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    n = PQntuples(res);

    if (n == 0) {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND,
                                      "unknown enrollment: %V",
                                      &ctx->enrollment_id));
        return;
    }

    ngx_mdm_api_out_init(&out, r->pool, 128 + (size_t) n * 400);
    ngx_mdm_api_out_lit(&out, "{\"enrollment_id\": ");
    ngx_mdm_api_out_str(&out, ctx->enrollment_id.data,
                        ctx->enrollment_id.len);
    ngx_mdm_api_out_lit(&out, ", \"commands\": [");

    rows = 0;

    for (i = 0; i < n; i++) {
        if (PQgetisnull(res, i, 0)) {
            continue;
        }

        if (rows++) {
            ngx_mdm_api_out_lit(&out, ", ");
        }

        ngx_mdm_api_out_lit(&out, "{");
        ngx_mdm_api_out_fields(&out, res, i, 0, fields,
                               sizeof(fields) / sizeof(fields[0]));
        ngx_mdm_api_out_lit(&out, "}");
    }

    ngx_mdm_api_out_page_end(&out, res,
                             rows > 0 && (ngx_uint_t) rows == ctx->total, 0);

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, NGX_HTTP_OK, &out));
}


/* DELETE enrollments/<id>/commands: {"enrollment_id", "cancelled": N} */

ngx_int_t
ngx_http_mdm_api_queue_clear(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx)
{
    ctx->enrollment_id = ctx->seg[1];

    return ngx_http_mdm_api_query_path(r, ctx, NGX_MDM_API_SQL_QUEUE_CLEAR,
                                       0, 0, ngx_http_mdm_api_queue_cleared);
}


static void
ngx_http_mdm_api_queue_cleared(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    ngx_http_finalize_request(r, ngx_http_mdm_api_cancelled(r, res, rc,
                                     "enrollment", "enrollment_id",
                                     &ctx->enrollment_id));
}


/* DELETE enrollments/<id>/commands/<uuid> */

ngx_int_t
ngx_http_mdm_api_queue_cancel(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx)
{
    ctx->enrollment_id = ctx->seg[1];
    ctx->command_uuid = ctx->seg[3];

    return ngx_http_mdm_api_query_path(r, ctx, NGX_MDM_API_SQL_QUEUE_CANCEL,
                                       1, 0, ngx_http_mdm_api_queue_cancelled);
}


static void
ngx_http_mdm_api_queue_cancelled(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND,
                                      "command %V is not in the queue of "
                                      "%V", &ctx->command_uuid,
                                      &ctx->enrollment_id));
        return;
    }

    if (PQgetvalue(res, 0, 1)[0] == '0') {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r, NGX_HTTP_CONFLICT,
                                      "command %V is %s, no longer pending",
                                      &ctx->command_uuid,
                                      PQgetvalue(res, 0, 0)));
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm api: %V cancelled command %V for %V",
                  &ctx->actor, &ctx->command_uuid, &ctx->enrollment_id);

    ngx_mdm_api_out_init(&out, r->pool, 256);
    ngx_mdm_api_out_lit(&out, "{\"enrollment_id\": ");
    ngx_mdm_api_out_str(&out, ctx->enrollment_id.data,
                        ctx->enrollment_id.len);
    ngx_mdm_api_out_lit(&out, ", \"command_uuid\": ");
    ngx_mdm_api_out_str(&out, ctx->command_uuid.data, ctx->command_uuid.len);
    ngx_mdm_api_out_lit(&out, ", \"status\": \"Cancelled\", "
                              "\"previous_status\": ");
    ngx_mdm_api_out_pg_str(&out, res, 0, 0);
    ngx_mdm_api_out_lit(&out, "}");

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, NGX_HTTP_OK, &out));
}


/*
 * POST push {"enrollment_ids": [...]}: a push request for each channel
 * that can be pushed (007_push.sql), the reason for the others.
 */

ngx_int_t
ngx_http_mdm_api_push(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    const char         *values[1];
    ngx_mdm_pg_args_t   args;

    if (ngx_mdm_api_parse_body(r, ctx, 0) != NGX_OK
        || ngx_mdm_api_ids_from_json(r, ctx, "enrollment_ids", 1) != NGX_OK)
    {
        return ngx_mdm_api_fail(r, ctx);
    }

    values[0] = ngx_mdm_api_ids_literal(&ctx->ids, r->pool);
    if (values[0] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_API_SQL_PUSH;
    args.nparams = 1;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_api_pushed);
}


/*
 * {"requested": N, "enrollments": {"<id>": {"push": true}, "<id>":
 * {"push": false, "error": "no push token"}}}: 200, 207, or 404 when
 * every ID is unknown.
 */

static void
ngx_http_mdm_api_pushed(ngx_http_request_t *r, PGresult *res, ngx_int_t rc)
{
    int                      i, n;
    char                    *error;
    ngx_uint_t               status, unknown;
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK || PQntuples(res) < 1) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        if (PQgetisnull(res, i, 1)) {
            continue;
        }

        error = PQgetvalue(res, i, 2);
        unknown = (ngx_strcmp(error, "unknown enrollment") == 0);

        ngx_mdm_api_ids_fail(&ctx->ids, (u_char *) PQgetvalue(res, i, 1),
                             PQgetlength(res, i, 1), error, unknown);
    }

    status = ngx_mdm_api_ids_status(&ctx->ids);

    if (PQgetvalue(res, 0, 0)[0] != '0') {
        ngx_http_mdm_api_push_hint(r);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm api: %V asked to push %s of %ui enrollments",
                  &ctx->actor, PQgetvalue(res, 0, 0), ctx->ids.ids.nelts);

    ngx_mdm_api_out_init(&out, r->pool,
                         ctx->ids.literal_len + 20 * ctx->ids.ids.nelts);
    ngx_mdm_api_out_lit(&out, "{\"requested\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 0);

    if (status == NGX_HTTP_NOT_FOUND) {
        ngx_mdm_api_out_lit(&out, ", \"error\": \"unknown enrollments\"");
    }

    ngx_mdm_api_out_lit(&out, ", \"enrollments\": ");
    ngx_mdm_api_out_ids(&out, &ctx->ids, "push");
    ngx_mdm_api_out_lit(&out, "}");

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, status, &out));
}
