
/*
 * Redis, fire and forget (DESIGN.md §3): a request never waits for Redis
 * and never fails on it.
 *
 * Events: every check-in and every report that was answered goes to the
 * stream mdm:events (XADD MAXLEN ~ mdm_checkin_events_maxlen), for
 * webhooks and push coalescing.  Fields: event (checkin, report, expired),
 * type (the MessageType, the Status, or Expired), enrollment_id,
 * device_id, enrollment_type, command_uuid (reports), then the step's own
 * (token_update_tally; next_command_uuid and next_request_type), node and
 * time (unix, milliseconds).
 *
 * last_seen: each answered request sets HSET mdm:last_seen <id> <time>; the
 * helper process renames the hash to its own key every
 * mdm_checkin_last_seen_interval, writes it to mdm_enrollments.last_seen_at
 * in one statement, and deletes it.  A helper that dies leaves its key,
 * which the next one flushes first; with Redis down last_seen is lost,
 * nothing else.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>
#include "ngx_mdm_checkin_module.h"


#define NGX_MDM_CHECKIN_EVENT_ARGS   32


static void ngx_http_mdm_checkin_redis_done(void *data, void *reply);
static void ngx_mdm_checkin_flush_handler(ngx_event_t *ev);
static void ngx_mdm_checkin_flush_renamed(void *data, void *reply);
static void ngx_mdm_checkin_flush_read(void *data, void *reply);
static void ngx_mdm_checkin_flush_written(void *data, PGresult *res,
    ngx_int_t rc);
static void ngx_mdm_checkin_flush_next(void);


static const char  ngx_mdm_checkin_last_seen_sql[] =
    "SELECT mdm_checkin_last_seen($1)";


static ngx_event_t   ngx_mdm_checkin_flush_ev;
static ngx_msec_t    ngx_mdm_checkin_flush_interval;
static ngx_str_t     ngx_mdm_checkin_flush_key;


void
ngx_http_mdm_checkin_event(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, const char *event, ngx_str_t *extra,
    ngx_uint_t nextra)
{
    int                                argc;
    u_char                            *now, *maxlen;
    ngx_uint_t                         i;
    ngx_time_t                        *tp;
    ngx_mdm_checkin_msg_t             *msg;
    ngx_http_mdm_checkin_main_conf_t  *mcf;
    const char                        *argv[NGX_MDM_CHECKIN_EVENT_ARGS];
    size_t                             argvlen[NGX_MDM_CHECKIN_EVENT_ARGS];

    mcf = ngx_http_get_module_main_conf(r, ngx_http_mdm_checkin_module);
    msg = &ctx->msg;

    now = ngx_pnalloc(r->pool, 2 * (NGX_TIME_T_LEN + 4));
    if (now == NULL) {
        return;
    }

    maxlen = now + NGX_TIME_T_LEN + 4;

    tp = ngx_timeofday();
    *ngx_sprintf(now, "%T%03M", tp->sec, tp->msec) = '\0';
    *ngx_sprintf(maxlen, "%ui", mcf->events_maxlen) = '\0';

#define ngx_mdm_arg(s, n)                                                    \
    argv[argc] = (const char *) (s); argvlen[argc++] = (n)
#define ngx_mdm_arg_c(s)                                                     \
    ngx_mdm_arg(s, ngx_strlen(s))
#define ngx_mdm_arg_str(s)                                                   \
    ngx_mdm_arg((s)->data ? (s)->data : (u_char *) "", (s)->len)

    if (mcf->events) {
        argc = 0;

        ngx_mdm_arg_c("XADD");
        ngx_mdm_arg_c(NGX_MDM_CHECKIN_EVENTS_KEY);
        ngx_mdm_arg_c("MAXLEN");
        ngx_mdm_arg_c("~");
        ngx_mdm_arg_c(maxlen);
        ngx_mdm_arg_c("*");

        ngx_mdm_arg_c("event");
        ngx_mdm_arg_c(event);
        ngx_mdm_arg_c("type");

        if (event[0] == 'e') {
            ngx_mdm_arg_c("Expired");

        } else if (msg->kind == NGX_MDM_CHECKIN_KIND_REPORT) {
            ngx_mdm_arg_str(&msg->status_name);

        } else {
            ngx_mdm_arg_str(&msg->message_type);
        }

        ngx_mdm_arg_c("enrollment_id");
        ngx_mdm_arg_str(&msg->id);
        ngx_mdm_arg_c("device_id");
        ngx_mdm_arg_str(&msg->device_id);
        ngx_mdm_arg_c("enrollment_type");
        ngx_mdm_arg_c(ngx_mdm_checkin_msg_enroll_type_name(msg->enroll_type));

        if (event[0] == 'r' && msg->command_uuid.len) {
            ngx_mdm_arg_c("command_uuid");
            ngx_mdm_arg_str(&msg->command_uuid);
        }

        for (i = 0; i + 1 < nextra && argc + 6 < NGX_MDM_CHECKIN_EVENT_ARGS;
             i += 2)
        {
            ngx_mdm_arg_str(&extra[i]);
            ngx_mdm_arg_str(&extra[i + 1]);
        }

        ngx_mdm_arg_c("node");
        ngx_mdm_arg_str(&ngx_cycle->hostname);
        ngx_mdm_arg_c("time");
        ngx_mdm_arg_c(now);

        (void) ngx_mdm_redis_command(r->connection->log,
                                     ngx_http_mdm_checkin_redis_done, NULL,
                                     argc, argv, argvlen);
    }

    if (event[0] == 'e' || ctx->no_last_seen) {
        return;
    }

    /* seconds with milliseconds, for to_timestamp() */
    *ngx_sprintf(now, "%T.%03M", tp->sec, tp->msec) = '\0';

    argc = 0;
    ngx_mdm_arg_c("HSET");
    ngx_mdm_arg_c(NGX_MDM_CHECKIN_LAST_SEEN_KEY);
    ngx_mdm_arg_str(&msg->id);
    ngx_mdm_arg_c(now);

#undef ngx_mdm_arg
#undef ngx_mdm_arg_c
#undef ngx_mdm_arg_str

    (void) ngx_mdm_redis_command(r->connection->log,
                                 ngx_http_mdm_checkin_redis_done, NULL,
                                 argc, argv, argvlen);
}


static void
ngx_http_mdm_checkin_redis_done(void *data, void *reply)
{
    redisReply  *rr = reply;

    if (rr && rr->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm check-in: redis: %*s", (size_t) rr->len, rr->str);
    }
}


/* the helper's task */

ngx_int_t
ngx_mdm_checkin_last_seen_init(ngx_cycle_t *cycle)
{
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_mdm_checkin_module);
    if (mcf == NULL) {
        return NGX_OK;
    }

    ngx_mdm_checkin_flush_interval = mcf->last_seen_interval;

    ngx_mdm_checkin_flush_key.len = sizeof(NGX_MDM_CHECKIN_LAST_SEEN_KEY)
                                    + sizeof(":flush:") - 2
                                    + cycle->hostname.len;
    ngx_mdm_checkin_flush_key.data = ngx_pnalloc(cycle->pool,
                                       ngx_mdm_checkin_flush_key.len + 1);
    if (ngx_mdm_checkin_flush_key.data == NULL) {
        return NGX_ERROR;
    }

    *ngx_sprintf(ngx_mdm_checkin_flush_key.data, "%s:flush:%V",
                 NGX_MDM_CHECKIN_LAST_SEEN_KEY, &cycle->hostname) = '\0';

    ngx_mdm_checkin_flush_ev.handler = ngx_mdm_checkin_flush_handler;
    ngx_mdm_checkin_flush_ev.log = cycle->log;
    ngx_mdm_checkin_flush_ev.cancelable = 1;

    ngx_add_timer(&ngx_mdm_checkin_flush_ev, ngx_mdm_checkin_flush_interval);

    return NGX_OK;
}


/*
 * RENAMENX moves the live hash to our key unless a flush of ours is left
 * over (then that one goes first); "no such key" means nothing was seen.
 */

static void
ngx_mdm_checkin_flush_handler(ngx_event_t *ev)
{
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "RENAMENX";
    argvlen[0] = sizeof("RENAMENX") - 1;
    argv[1] = NGX_MDM_CHECKIN_LAST_SEEN_KEY;
    argvlen[1] = sizeof(NGX_MDM_CHECKIN_LAST_SEEN_KEY) - 1;
    argv[2] = (char *) ngx_mdm_checkin_flush_key.data;
    argvlen[2] = ngx_mdm_checkin_flush_key.len;

    if (ngx_mdm_redis_command(ev->log, ngx_mdm_checkin_flush_renamed, NULL,
                              3, argv, argvlen)
        == NULL)
    {
        ngx_mdm_checkin_flush_next();
    }
}


static void
ngx_mdm_checkin_flush_renamed(void *data, void *reply)
{
    const char  *argv[2];
    size_t       argvlen[2];

    if (reply == NULL) {
        ngx_mdm_checkin_flush_next();
        return;
    }

    argv[0] = "HGETALL";
    argvlen[0] = sizeof("HGETALL") - 1;
    argv[1] = (char *) ngx_mdm_checkin_flush_key.data;
    argvlen[1] = ngx_mdm_checkin_flush_key.len;

    if (ngx_mdm_redis_command(ngx_cycle->log, ngx_mdm_checkin_flush_read,
                              NULL, 2, argv, argvlen)
        == NULL)
    {
        ngx_mdm_checkin_flush_next();
    }
}


/* "<time>\t<id>\n" per enrollment, one statement for all of them */

static void
ngx_mdm_checkin_flush_read(void *data, void *reply)
{
    u_char             *batch, *p;
    size_t              len, i;
    const char         *values[1];
    redisReply         *rr = reply, *id, *at;
    ngx_mdm_pg_args_t   args;

    if (rr == NULL || rr->type != REDIS_REPLY_ARRAY || rr->elements < 2) {
        ngx_mdm_checkin_flush_next();
        return;
    }

    len = 0;

    for (i = 0; i + 1 < rr->elements; i += 2) {
        len += rr->element[i]->len + rr->element[i + 1]->len + 2;
    }

    batch = ngx_alloc(len + 1, ngx_cycle->log);
    if (batch == NULL) {
        ngx_mdm_checkin_flush_next();
        return;
    }

    p = batch;

    for (i = 0; i + 1 < rr->elements; i += 2) {
        id = rr->element[i];
        at = rr->element[i + 1];

        if (id->type != REDIS_REPLY_STRING || at->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        p = ngx_cpymem(p, at->str, at->len);
        *p++ = '\t';
        p = ngx_cpymem(p, id->str, id->len);
        *p++ = '\n';
    }

    *p = '\0';
    values[0] = (char *) batch;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_checkin_last_seen_sql;
    args.nparams = 1;
    args.values = values;
    args.handler = ngx_mdm_checkin_flush_written;
    args.data = (void *) (uintptr_t) (rr->elements / 2);
    args.log = ngx_cycle->log;

    /* libpq copies the parameters when the query is sent */

    if (ngx_mdm_pg_query(&args) == NULL) {
        ngx_mdm_checkin_flush_next();
    }

    ngx_free(batch);
}


static void
ngx_mdm_checkin_flush_written(void *data, PGresult *res, ngx_int_t rc)
{
    const char  *argv[2];
    size_t       argvlen[2];

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm check-in: writing last_seen failed, kept in "
                      "redis for the next try: %s",
                      res ? PQresultErrorMessage(res) : "no connection");
        ngx_mdm_checkin_flush_next();
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, ngx_cycle->log, 0,
                   "mdm check-in: last_seen of %ui enrollments, %s updated",
                   (ngx_uint_t) (uintptr_t) data, PQgetvalue(res, 0, 0));

    argv[0] = "DEL";
    argvlen[0] = sizeof("DEL") - 1;
    argv[1] = (char *) ngx_mdm_checkin_flush_key.data;
    argvlen[1] = ngx_mdm_checkin_flush_key.len;

    (void) ngx_mdm_redis_command(ngx_cycle->log,
                                 ngx_http_mdm_checkin_redis_done, NULL,
                                 2, argv, argvlen);

    ngx_mdm_checkin_flush_next();
}


static void
ngx_mdm_checkin_flush_next(void)
{
    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&ngx_mdm_checkin_flush_ev,
                      ngx_mdm_checkin_flush_interval);
    }
}
