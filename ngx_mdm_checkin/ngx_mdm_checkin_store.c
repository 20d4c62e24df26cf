
/*
 * The steps of the check-in protocol and the command loop: for each
 * message, one call of one SQL function of ngx_mdm_core/sql/005_checkin.sql
 * (one round trip: binding check, the step, and for a report the next
 * command), then the answer and the events.
 *
 * Every statement takes $1 = the certificate's SHA-256 (bytea, binary) and
 * $2 = the grace in seconds; results come back in binary format, so a
 * command's bytes arrive as they were enqueued.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_checkin_module.h"


typedef struct {
    ngx_str_t                  code;
    ngx_uint_t                 status;     /* 0: go on with the step */
    const char                *reason;
} ngx_http_mdm_checkin_code_t;


static void ngx_http_mdm_checkin_params_authenticate(
    ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_params_token_update(
    ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_params_id(ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_params_bootstrap_token(
    ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_params_verify(
    ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_params_report(
    ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_param(ngx_http_mdm_checkin_ctx_t *ctx,
    const u_char *data, size_t len, int binary);
static void ngx_http_mdm_checkin_param_str(ngx_http_mdm_checkin_ctx_t *ctx,
    ngx_mdm_plist_str_t *s, int binary);
static void ngx_http_mdm_checkin_param_bool(ngx_http_mdm_checkin_ctx_t *ctx,
    int value);

static ngx_int_t ngx_http_mdm_checkin_query(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_done_empty(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res);
static void ngx_http_mdm_checkin_done_token_update(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res);
static void ngx_http_mdm_checkin_done_bootstrap_token(
    ngx_http_request_t *r, ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res);
static void ngx_http_mdm_checkin_done_verify(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res);
static void ngx_http_mdm_checkin_done_report(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res);
static void ngx_http_mdm_checkin_expired(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, u_char *p, size_t len);


/* the SQL of every step, in one place */

static const char  ngx_http_mdm_checkin_sql_authenticate[] =
    "SELECT mdm_checkin_authenticate($1, to_timestamp($3::float8), $2, $4, "
    "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

static const char  ngx_http_mdm_checkin_sql_token_update[] =
    "SELECT o_code, o_token_update_tally FROM mdm_checkin_token_update("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

static const char  ngx_http_mdm_checkin_sql_check_out[] =
    "SELECT mdm_checkin_check_out($1, $2, $3, $4)";

static const char  ngx_http_mdm_checkin_sql_set_bootstrap_token[] =
    "SELECT mdm_checkin_set_bootstrap_token($1, $2, $3, $4, $5, $6)";

static const char  ngx_http_mdm_checkin_sql_get_bootstrap_token[] =
    "SELECT o_code, o_bootstrap_token "
    "FROM mdm_checkin_get_bootstrap_token($1, $2, $3, $4)";

static const char  ngx_http_mdm_checkin_sql_verify[] =
    "SELECT mdm_checkin_verify($1, $2, $3, $4)";

static const char  ngx_http_mdm_checkin_sql_report[] =
    "SELECT o_code, o_command_uuid, o_request_type, o_command, o_expired "
    "FROM mdm_command_report($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/*
 * The same for several requests at once (ngx_mdm_checkin_batch.c): $n is
 * the array of every request's n-th parameter, binary ones as bytea[],
 * the others as text[] (cast as the single statement's function takes
 * them); the last column is the request's place.
 */

static const char  ngx_http_mdm_checkin_batch_authenticate[] =
    "SELECT mdm_checkin_authenticate(a.p1, to_timestamp(a.p3::float8), "
        "a.p2::integer, a.p4, a.p5, a.p6, a.p7, a.p8, a.p9, a.p10, a.p11, "
        "a.p12, a.p13, a.p14, a.p15, a.p16), a.i "
    "FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], "
        "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], "
        "$10::text[], $11::text[], $12::text[], $13::text[], $14::text[], "
        "$15::text[], $16::text[]) "
    "WITH ORDINALITY AS a(p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, "
        "p12, p13, p14, p15, p16, i)";

static const char  ngx_http_mdm_checkin_batch_token_update[] =
    "SELECT r.o_code, r.o_token_update_tally, a.i "
    "FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], "
        "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], "
        "$10::text[], $11::text[], $12::bytea[], $13::text[], $14::bytea[], "
        "$15::text[]) "
    "WITH ORDINALITY AS a(p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, "
        "p12, p13, p14, p15, i) "
    "CROSS JOIN LATERAL mdm_checkin_token_update(a.p1, a.p2::integer, "
        "a.p3, a.p4, a.p5, a.p6, a.p7, a.p8, a.p9, a.p10, a.p11, a.p12, "
        "a.p13, a.p14, a.p15::boolean) AS r";

static const char  ngx_http_mdm_checkin_batch_report[] =
    "SELECT r.o_code, r.o_command_uuid, r.o_request_type, r.o_command, "
        "r.o_expired, a.i "
    "FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], "
        "$5::text[], $6::text[], $7::bytea[], $8::text[], $9::text[]) "
    "WITH ORDINALITY AS a(p1, p2, p3, p4, p5, p6, p7, p8, p9, i) "
    "CROSS JOIN LATERAL mdm_command_report(a.p1, a.p2::integer, a.p3, "
        "a.p4, a.p5, a.p6, a.p7, a.p8::integer, a.p9::float8) AS r";


/* one step per message type, by ngx_mdm_checkin_type_e */

static const ngx_http_mdm_checkin_step_t  ngx_http_mdm_checkin_steps[] = {

    [NGX_MDM_CHECKIN_AUTHENTICATE] =
        { "Authenticate", ngx_http_mdm_checkin_sql_authenticate,
          ngx_http_mdm_checkin_params_authenticate,
          ngx_http_mdm_checkin_done_empty,
          ngx_http_mdm_checkin_batch_authenticate },

    [NGX_MDM_CHECKIN_TOKEN_UPDATE] =
        { "TokenUpdate", ngx_http_mdm_checkin_sql_token_update,
          ngx_http_mdm_checkin_params_token_update,
          ngx_http_mdm_checkin_done_token_update,
          ngx_http_mdm_checkin_batch_token_update },

    [NGX_MDM_CHECKIN_CHECK_OUT] =
        { "CheckOut", ngx_http_mdm_checkin_sql_check_out,
          ngx_http_mdm_checkin_params_id,
          ngx_http_mdm_checkin_done_empty },

    [NGX_MDM_CHECKIN_SET_BOOTSTRAP_TOKEN] =
        { "SetBootstrapToken", ngx_http_mdm_checkin_sql_set_bootstrap_token,
          ngx_http_mdm_checkin_params_bootstrap_token,
          ngx_http_mdm_checkin_done_empty },

    [NGX_MDM_CHECKIN_GET_BOOTSTRAP_TOKEN] =
        { "GetBootstrapToken", ngx_http_mdm_checkin_sql_get_bootstrap_token,
          ngx_http_mdm_checkin_params_id,
          ngx_http_mdm_checkin_done_bootstrap_token },

    [NGX_MDM_CHECKIN_USER_AUTHENTICATE] =
        { "UserAuthenticate", ngx_http_mdm_checkin_sql_verify,
          ngx_http_mdm_checkin_params_verify,
          ngx_http_mdm_checkin_done_verify },

    [NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT] =
        { "DeclarativeManagement", ngx_http_mdm_checkin_sql_verify,
          ngx_http_mdm_checkin_params_verify,
          ngx_http_mdm_checkin_done_verify },

    [NGX_MDM_CHECKIN_GET_TOKEN] =
        { "GetToken", ngx_http_mdm_checkin_sql_verify,
          ngx_http_mdm_checkin_params_verify,
          ngx_http_mdm_checkin_done_verify },

    [NGX_MDM_CHECKIN_RETURN_TO_SERVICE] =
        { "ReturnToService", NULL, NULL, NULL },
};


static const ngx_http_mdm_checkin_step_t  ngx_http_mdm_checkin_report_step =
    { "command report", ngx_http_mdm_checkin_sql_report,
      ngx_http_mdm_checkin_params_report,
      ngx_http_mdm_checkin_done_report,
      ngx_http_mdm_checkin_batch_report };


/*
 * The codes of 005_checkin.sql and what the device gets for them: 400 for
 * a certificate it must not use, 500 for a binding that does not fit (as
 * NanoMDM answers: the device retries later and never unenrolls).
 */

static ngx_http_mdm_checkin_code_t  ngx_http_mdm_checkin_codes[] = {
    { ngx_string("ok"), 0, NULL },
    { ngx_string("unknown_command"), 0, NULL },
    { ngx_string("revoked"), NGX_HTTP_BAD_REQUEST,
      "device certificate revoked" },
    { ngx_string("expired"), NGX_HTTP_BAD_REQUEST,
      "device certificate binding expired" },
    { ngx_string("unbound"), NGX_HTTP_INTERNAL_SERVER_ERROR,
      "device certificate bound to no enrollment" },
    { ngx_string("mismatch"), NGX_HTTP_INTERNAL_SERVER_ERROR,
      "device certificate bound to another enrollment" },
    { ngx_string("unknown"), NGX_HTTP_INTERNAL_SERVER_ERROR,
      "unknown enrollment" },
    { ngx_null_string, NGX_HTTP_INTERNAL_SERVER_ERROR,
      "unexpected answer from the database" }
};


ngx_int_t
ngx_http_mdm_checkin_run(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_uint_t                          last_seen;
    ngx_mdm_checkin_msg_t              *msg;
    const ngx_http_mdm_checkin_step_t  *step;

    msg = &ctx->msg;

    if (msg->kind == NGX_MDM_CHECKIN_KIND_REPORT) {
        step = &ngx_http_mdm_checkin_report_step;

    } else {
        step = &ngx_http_mdm_checkin_steps[msg->type];

        if (msg->type == NGX_MDM_CHECKIN_AUTHENTICATE && msg->user_channel) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "mdm check-in refused: Authenticate on the user "
                          "channel \"%V\"", (ngx_str_t *) &msg->id);
            return ngx_http_mdm_checkin_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "Authenticate on a user channel");
        }

        /* served elsewhere: no round trip to refuse what we cannot do */

        if (step->sql == NULL
            || (msg->type == NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT
                && ngx_http_mdm_checkin_dm_hook == NULL)
            || (msg->type == NGX_MDM_CHECKIN_GET_TOKEN
                && ngx_http_mdm_checkin_get_token_hook == NULL))
        {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "mdm check-in: %s from \"%V\" answered 501: no "
                          "handler for it is configured", step->name,
                          (ngx_str_t *) &msg->id);
            return ngx_http_mdm_checkin_refuse(r, NGX_HTTP_NOT_IMPLEMENTED,
                       msg->type == NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT
                       ? "DeclarativeManagement is not served here"
                       : msg->type == NGX_MDM_CHECKIN_GET_TOKEN
                         ? "GetToken is not served here: no token handler"
                         : "check-in message not supported here");
        }
    }

    ctx->step = step;

    /* these write last_seen_at with the rest of the row */
    ctx->no_last_seen = msg->kind != NGX_MDM_CHECKIN_KIND_REPORT
                        && (msg->type == NGX_MDM_CHECKIN_AUTHENTICATE
                            || msg->type == NGX_MDM_CHECKIN_TOKEN_UPDATE);

    /*
     * An Idle of an enrollment known to have nothing queued is answered
     * here; any other message goes to the database and makes the worker
     * forget what it knew of the enrollment.
     */

    if (msg->kind == NGX_MDM_CHECKIN_KIND_REPORT
        && msg->status == NGX_MDM_CHECKIN_STATUS_IDLE)
    {
        if (ngx_mdm_checkin_cache_lookup(msg->id.data, msg->id.len,
                                         ctx->identity.sha256, &last_seen)
            == NGX_OK
            && ngx_mdm_checkin_cache_wait(r, ctx) == NGX_OK)
        {
            /* answered once the notifications are known to be in */
            return NGX_DONE;
        }

    } else {
        ngx_mdm_checkin_cache_drop(msg->id.data, msg->id.len);
    }

    return ngx_http_mdm_checkin_query(r, ctx);
}


/* a hit waited for the sync: look again, then answer or ask the database */

void
ngx_http_mdm_checkin_idle_synced(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, ngx_int_t rc)
{
    ngx_uint_t              last_seen;
    ngx_mdm_checkin_msg_t  *msg;

    msg = &ctx->msg;

    if (rc == NGX_OK
        && ngx_mdm_checkin_cache_lookup(msg->id.data, msg->id.len,
                                        ctx->identity.sha256, &last_seen)
           == NGX_OK)
    {
        ctx->no_last_seen = !last_seen;
        ngx_http_mdm_checkin_event(r, ctx, "report", NULL, 0);

        ngx_http_finalize_request(r, ngx_http_mdm_checkin_answer(r, NULL, 0));
        return;
    }

    ngx_http_finalize_request(r, ngx_http_mdm_checkin_query(r, ctx));
}


static ngx_int_t
ngx_http_mdm_checkin_query(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_mdm_pg_args_t                   args;
    ngx_mdm_checkin_msg_t              *msg;
    const ngx_http_mdm_checkin_step_t  *step;
    ngx_http_mdm_checkin_main_conf_t   *mcf;

    msg = &ctx->msg;
    step = ctx->step;
    ctx->nparams = 0;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_mdm_checkin_module);

    if (msg->kind == NGX_MDM_CHECKIN_KIND_REPORT
        && msg->status == NGX_MDM_CHECKIN_STATUS_IDLE)
    {
        ctx->cache_gen = ngx_mdm_checkin_cache_begin();
    }

    ngx_http_mdm_checkin_param(ctx, ctx->identity.sha256,
                               NGX_MDM_X509_SHA256_LEN, 1);

    *ngx_sprintf(ctx->grace, "%T", ctx->lcf->grace) = '\0';
    ngx_http_mdm_checkin_param(ctx, ctx->grace, 0, 0);

    step->params(ctx);

    if (ngx_mdm_checkin_batch_usable(step)) {
        return ngx_http_mdm_checkin_batch_add(r, ctx);
    }

    ctx->row = 0;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = step->sql;
    args.nparams = ctx->nparams;
    args.values = ctx->values;
    args.lengths = ctx->lengths;
    args.formats = ctx->formats;
    args.result_format = 1;
    args.prepare = mcf->prepare ? 1 : 0;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_checkin_db_done);
}


/* parameters: $1 and $2 are set, the step's own begin at $3 */

static void
ngx_http_mdm_checkin_params_authenticate(ngx_http_mdm_checkin_ctx_t *ctx)
{
    const char             *type;
    ngx_mdm_checkin_msg_t  *msg;

    msg = &ctx->msg;

    *ngx_sprintf(ctx->not_after, "%T", ctx->identity.not_after) = '\0';
    ngx_http_mdm_checkin_param(ctx, ctx->not_after, 0, 0);

    type = ngx_mdm_checkin_msg_enroll_type_name(msg->enroll_type);

    ngx_http_mdm_checkin_param_str(ctx, &msg->id, 0);
    ngx_http_mdm_checkin_param(ctx, (u_char *) type, 0, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->udid, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->topic, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->serial_number, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->model, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->model_name, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->product_name, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->os_version, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->build_version, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->device_name, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->imei, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->meid, 0);
}


static void
ngx_http_mdm_checkin_params_token_update(ngx_http_mdm_checkin_ctx_t *ctx)
{
    const char             *type;
    ngx_mdm_checkin_msg_t  *msg;

    msg = &ctx->msg;
    type = ngx_mdm_checkin_msg_enroll_type_name(msg->enroll_type);

    ngx_http_mdm_checkin_param_str(ctx, &msg->id, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->device_id, 0);
    ngx_http_mdm_checkin_param(ctx, (u_char *) type, 0, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->udid, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->enrollment_user_id, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->user_id, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->user_short_name, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->user_long_name, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->topic, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->token, 1);
    ngx_http_mdm_checkin_param_str(ctx, &msg->push_magic, 0);
    ngx_http_mdm_checkin_param_str(ctx, &msg->unlock_token, 1);
    ngx_http_mdm_checkin_param_bool(ctx, msg->awaiting_configuration);
}


static void
ngx_http_mdm_checkin_params_id(ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_http_mdm_checkin_param_str(ctx, &ctx->msg.id, 0);
    ngx_http_mdm_checkin_param_str(ctx, &ctx->msg.device_id, 0);
}


static void
ngx_http_mdm_checkin_params_bootstrap_token(ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_http_mdm_checkin_params_id(ctx);
    ngx_http_mdm_checkin_param_str(ctx, &ctx->msg.bootstrap_token, 1);
    ngx_http_mdm_checkin_param_bool(ctx, ctx->msg.awaiting_configuration);
}


/* UserAuthenticate comes before its user channel exists: check the device */

static void
ngx_http_mdm_checkin_params_verify(ngx_http_mdm_checkin_ctx_t *ctx)
{
    if (ctx->msg.type == NGX_MDM_CHECKIN_USER_AUTHENTICATE) {
        ngx_http_mdm_checkin_param_str(ctx, &ctx->msg.device_id, 0);
        ngx_http_mdm_checkin_param_str(ctx, &ctx->msg.device_id, 0);
        return;
    }

    ngx_http_mdm_checkin_params_id(ctx);
}


static void
ngx_http_mdm_checkin_params_report(ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_mdm_checkin_msg_t  *msg;

    msg = &ctx->msg;

    ngx_http_mdm_checkin_params_id(ctx);
    ngx_http_mdm_checkin_param_str(ctx, &msg->status_name, 0);

    if (msg->status == NGX_MDM_CHECKIN_STATUS_IDLE) {
        ngx_http_mdm_checkin_param(ctx, NULL, 0, 0);
        ngx_http_mdm_checkin_param(ctx, NULL, 0, 1);
        ngx_http_mdm_checkin_param(ctx, NULL, 0, 0);
        ngx_http_mdm_checkin_param(ctx, NULL, 0, 0);
        return;
    }

    ngx_http_mdm_checkin_param_str(ctx, &msg->command_uuid, 0);
    ngx_http_mdm_checkin_param(ctx, ctx->body, ctx->len, 1);

    /* this worker handed that command out: the count goes with the answer */

    ngx_mdm_checkin_delivery_take((ngx_str_t *) &msg->id,
                                  (ngx_str_t *) &msg->command_uuid,
                                  &ctx->sent, ctx->sent_at);

    if (ctx->sent == 0) {
        ngx_http_mdm_checkin_param(ctx, NULL, 0, 0);
        ngx_http_mdm_checkin_param(ctx, NULL, 0, 0);
        return;
    }

    *ngx_sprintf(ctx->sent_text, "%ui", ctx->sent) = '\0';
    ngx_http_mdm_checkin_param(ctx, ctx->sent_text, 0, 0);
    ngx_http_mdm_checkin_param(ctx, ctx->sent_at, 0, 0);
}


static void
ngx_http_mdm_checkin_param(ngx_http_mdm_checkin_ctx_t *ctx,
    const u_char *data, size_t len, int binary)
{
    ngx_uint_t  i;

    i = ctx->nparams++;

    ctx->values[i] = (const char *) data;
    ctx->lengths[i] = (int) len;
    ctx->formats[i] = binary;
}


/* absent or empty: NULL; plist strings are NUL-terminated */

static void
ngx_http_mdm_checkin_param_str(ngx_http_mdm_checkin_ctx_t *ctx,
    ngx_mdm_plist_str_t *s, int binary)
{
    if (s->data == NULL || s->len == 0) {
        ngx_http_mdm_checkin_param(ctx, NULL, 0, binary);
        return;
    }

    ngx_http_mdm_checkin_param(ctx, s->data, s->len, binary);
}


static void
ngx_http_mdm_checkin_param_bool(ngx_http_mdm_checkin_ctx_t *ctx, int value)
{
    ngx_http_mdm_checkin_param(ctx,
                               value == NGX_MDM_CHECKIN_UNSET
                               ? NULL : (u_char *) (value ? "t" : "f"),
                               0, 0);
}


/* the database answered */

void
ngx_http_mdm_checkin_db_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    u_char                       *code, *p;
    char                         *state;
    size_t                        len;
    ngx_uint_t                    level;
    ngx_http_mdm_checkin_ctx_t   *ctx;
    ngx_http_mdm_checkin_code_t  *c;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_checkin_module);

    if (rc != NGX_OK && ctx->sent) {
        /* nothing was stored: the delivery count is noted again */
        ngx_mdm_checkin_delivery_untake((ngx_str_t *) &ctx->msg.id,
                                        (ngx_str_t *) &ctx->msg.command_uuid,
                                        ctx->sent, ctx->sent_at);
        ctx->sent = 0;
    }

    if (rc == NGX_ERROR) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        p = (u_char *) PQresultErrorMessage(res);
        len = ngx_strlen(p);

        while (len && (p[len - 1] == '\n' || p[len - 1] == ' ')) {
            len--;
        }

        /*
         * Before the helper applied the schema, and on a serialization
         * failure or deadlock: nothing was written, the device retries.
         */

        if (state
            && (ngx_strcmp(state, "42883") == 0
                || ngx_strcmp(state, "42P01") == 0
                || ngx_strcmp(state, "42703") == 0
                || ngx_strcmp(state, "40001") == 0
                || ngx_strcmp(state, "40P01") == 0))
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm check-in %s of \"%V\": storage not ready, "
                          "answering 503: %*s", ctx->step->name,
                          (ngx_str_t *) &ctx->msg.id, len, p);
            ngx_http_finalize_request(r, ngx_http_mdm_unavailable(r));
            return;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm check-in %s of \"%V\" failed: %*s",
                      ctx->step->name, (ngx_str_t *) &ctx->msg.id, len, p);
        ngx_http_finalize_request(r,
            ngx_http_mdm_checkin_refuse(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        "storage error"));
        return;
    }

    if (PQntuples(res) <= ctx->row || PQgetisnull(res, ctx->row, 0)) {
        code = (u_char *) "";
        len = 0;

    } else {
        code = (u_char *) PQgetvalue(res, ctx->row, 0);
        len = PQgetlength(res, ctx->row, 0);
    }

    for (c = ngx_http_mdm_checkin_codes; c->code.len; c++) {
        if (c->code.len == len && ngx_strncmp(c->code.data, code, len) == 0) {
            break;
        }
    }

    if (c->status == 0) {
        ctx->step->done(r, ctx, res);
        return;
    }

    level = c->code.len ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, r->connection->log, 0,
                  "mdm check-in %s of \"%V\" refused: %s, certificate %s",
                  ctx->step->name, (ngx_str_t *) &ctx->msg.id, c->reason,
                  ctx->identity.sha256_hex);

    ngx_http_finalize_request(r,
        ngx_http_mdm_checkin_refuse(r, c->status, c->reason));
}


static void
ngx_http_mdm_checkin_done_empty(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res)
{
    ngx_http_mdm_checkin_event(r, ctx, "checkin", NULL, 0);

    ngx_http_finalize_request(r, ngx_http_mdm_checkin_answer(r, NULL, 0));
}


static void
ngx_http_mdm_checkin_done_token_update(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  extra[2];

    ngx_str_set(&extra[0], "token_update_tally");
    extra[1].data = (u_char *) PQgetvalue(res, ctx->row, 1);
    extra[1].len = PQgetlength(res, ctx->row, 1);

    ngx_http_mdm_checkin_event(r, ctx, "checkin", extra, 2);

    ngx_http_finalize_request(r, ngx_http_mdm_checkin_answer(r, NULL, 0));
}


/* the stored token, or 200 with an empty body when none [NM] */

static void
ngx_http_mdm_checkin_done_bootstrap_token(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res)
{
    ngx_http_mdm_checkin_event(r, ctx, "checkin", NULL, 0);

    if (PQgetisnull(res, ctx->row, 1)) {
        ngx_http_finalize_request(r, ngx_http_mdm_checkin_answer(r, NULL, 0));
        return;
    }

    ngx_http_finalize_request(r,
        ngx_http_mdm_checkin_answer_bootstrap_token(r,
                                    (u_char *) PQgetvalue(res, ctx->row, 1),
                                    PQgetlength(res, ctx->row, 1)));
}


static void
ngx_http_mdm_checkin_done_verify(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res)
{
    ngx_int_t  rc;

    ngx_http_mdm_checkin_event(r, ctx, "checkin", NULL, 0);

    switch (ctx->msg.type) {

    case NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT:
        rc = ngx_http_mdm_checkin_dm_hook(r, ctx);
        break;

    case NGX_MDM_CHECKIN_GET_TOKEN:
        rc = ngx_http_mdm_checkin_get_token_hook(r, ctx);
        break;

    default: /* NGX_MDM_CHECKIN_USER_AUTHENTICATE */
        rc = ngx_http_mdm_checkin_answer_digest(r, ctx);
    }

    ngx_http_finalize_request(r, rc);
}


/* the report is stored: send the next command, or 200 with an empty body */

static void
ngx_http_mdm_checkin_done_report(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  extra[4];

    if (PQgetlength(res, ctx->row, 0) == sizeof("unknown_command") - 1) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm check-in: %V report of \"%V\" for command \"%V\" "
                      "that is not in its queue: not stored",
                      (ngx_str_t *) &ctx->msg.status_name,
                      (ngx_str_t *) &ctx->msg.id,
                      (ngx_str_t *) &ctx->msg.command_uuid);
    }

    if (!PQgetisnull(res, ctx->row, 4)) {
        ngx_http_mdm_checkin_expired(r, ctx,
                                     (u_char *) PQgetvalue(res, ctx->row, 4),
                                     PQgetlength(res, ctx->row, 4));
    }

    if (PQgetisnull(res, ctx->row, 3)) {

        if (ctx->cache_gen && PQgetisnull(res, ctx->row, 4)) {
            /* an Idle, nothing queued: remember it */
            ngx_mdm_checkin_cache_fill(ctx->msg.id.data, ctx->msg.id.len,
                                       ctx->identity.sha256, ctx->cache_gen,
                                       (ctx->identity.in_grace
                                        ? ctx->identity.not_after
                                          + ctx->lcf->grace
                                        : ctx->identity.not_after)
                                       - ngx_time());
        }

        ngx_http_mdm_checkin_event(r, ctx, "report", NULL, 0);
        ngx_http_finalize_request(r, ngx_http_mdm_checkin_answer(r, NULL, 0));
        return;
    }

    ngx_str_set(&extra[0], "next_command_uuid");
    extra[1].data = (u_char *) PQgetvalue(res, ctx->row, 1);
    extra[1].len = PQgetlength(res, ctx->row, 1);

    ngx_mdm_checkin_delivered((ngx_str_t *) &ctx->msg.id, extra[1].data,
                              extra[1].len);

    ngx_str_set(&extra[2], "next_request_type");
    extra[3].data = (u_char *) PQgetvalue(res, ctx->row, 2);
    extra[3].len = PQgetlength(res, ctx->row, 2);

    ngx_http_mdm_checkin_event(r, ctx, "report", extra, 4);

    ngx_http_finalize_request(r,
        ngx_http_mdm_checkin_answer(r, (u_char *) PQgetvalue(res, ctx->row, 3),
                                    PQgetlength(res, ctx->row, 3)));
}


/* one "expired" event per command that expired undelivered */

static void
ngx_http_mdm_checkin_expired(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, u_char *p, size_t len)
{
    u_char     *last, *nl;
    ngx_str_t   extra[2];

    last = p + len;
    ngx_str_set(&extra[0], "command_uuid");

    while (p < last) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        extra[1].data = p;
        extra[1].len = nl - p;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm check-in: command \"%V\" for \"%V\" expired "
                      "undelivered", &extra[1], (ngx_str_t *) &ctx->msg.id);

        ngx_http_mdm_checkin_event(r, ctx, "expired", extra, 2);

        p = nl + 1;
    }
}
