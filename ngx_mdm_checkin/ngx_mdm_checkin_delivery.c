
/*
 * Delivery bookkeeping, written behind (005_checkin.sql, 3.): a command
 * handed to a device is noted here, in this worker's memory, as
 * "<unix time>\t<enrollment id>\t<command uuid>\n"; every
 * mdm_checkin_delivery_flush the lines go to PostgreSQL in one statement
 * (mdm_queue_delivered), which adds them to sent_count and moves sent_at.
 * So the request that delivers a command writes nothing for it: an Idle
 * is a read-only transaction.
 *
 * One flush at a time; lines noted meanwhile wait for the next.  Rows
 * that were locked (their device's answer being stored) come back from
 * the statement and join the next batch.  A flush that fails keeps its
 * lines for the next try, up to
 * NGX_MDM_DELIVERY_MAX bytes, beyond which new lines are dropped with an
 * error-log line.  What a worker holds when it exits or crashes (one
 * interval) is lost: the counts are lower, the command itself is not
 * touched (a command sent and never answered is still Queued and is sent
 * again whatever sent_count says).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_checkin_module.h"


#define NGX_MDM_DELIVERY_MAX     (4 * 1024 * 1024)
#define NGX_MDM_DELIVERY_FLUSH   (256 * 1024)


typedef struct {
    u_char                 *buf;
    size_t                  len;
    size_t                  size;
    u_char                 *sending;      /* the batch in flight */
    size_t                  sending_len;
    ngx_msec_t              interval;
    ngx_event_t             ev;
    ngx_uint_t              dropped;
    unsigned                enabled:1;
    unsigned                busy:1;
} ngx_mdm_checkin_delivery_t;


static void ngx_mdm_checkin_delivery_handler(ngx_event_t *ev);
static void ngx_mdm_checkin_delivery_done(void *data, PGresult *res,
    ngx_int_t rc);
static void ngx_mdm_checkin_delivery_arm(void);
static ngx_int_t ngx_mdm_checkin_delivery_room(ngx_mdm_checkin_delivery_t *d,
    size_t need);


static const char  ngx_mdm_checkin_delivered_sql[] =
    "SELECT mdm_queue_delivered($1)";


static ngx_mdm_checkin_delivery_t  ngx_mdm_checkin_delivery;


ngx_int_t
ngx_mdm_checkin_delivery_init_process(ngx_cycle_t *cycle)
{
    ngx_mdm_checkin_delivery_t        *d;
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    d = &ngx_mdm_checkin_delivery;
    ngx_memzero(d, sizeof(ngx_mdm_checkin_delivery_t));

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_mdm_checkin_module);
    if (mcf == NULL || !mcf->used) {
        return NGX_OK;
    }

    d->interval = mcf->delivery_flush;
    d->ev.handler = ngx_mdm_checkin_delivery_handler;
    d->ev.data = d;
    d->ev.log = cycle->log;
    d->ev.cancelable = 1;
    d->enabled = 1;

    return NGX_OK;
}


/* a command was handed to enrollment id */

void
ngx_mdm_checkin_delivered(ngx_str_t *id, u_char *uuid, size_t len)
{
    u_char                      *p;
    size_t                       need;
    ngx_time_t                  *tp;
    ngx_mdm_checkin_delivery_t  *d;

    d = &ngx_mdm_checkin_delivery;

    if (!d->enabled) {
        return;
    }

    /* the batch's separators cannot be part of a field */

    if (ngx_strlchr(id->data, id->data + id->len, '\t')
        || ngx_strlchr(id->data, id->data + id->len, '\n')
        || ngx_strlchr(uuid, uuid + len, '\t')
        || ngx_strlchr(uuid, uuid + len, '\n'))
    {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "mdm check-in: delivery of a command whose id holds a "
                      "tab or line feed not counted");
        return;
    }

    /* time, 2 tabs, line feed, and a spare byte for the final NUL */
    need = NGX_TIME_T_LEN + 4 + id->len + len + 4;

    if (ngx_mdm_checkin_delivery_room(d, need) != NGX_OK) {
        return;
    }

    tp = ngx_timeofday();

    p = d->buf + d->len;
    p = ngx_sprintf(p, "%T.%03M\t%V\t", tp->sec, tp->msec, id);
    p = ngx_cpymem(p, uuid, len);
    *p++ = '\n';
    d->len = p - d->buf;

    if (d->len >= NGX_MDM_DELIVERY_FLUSH && !d->busy) {
        if (d->ev.timer_set) {
            ngx_del_timer(&d->ev);
        }

        ngx_post_event(&d->ev, &ngx_posted_events);
        return;
    }

    ngx_mdm_checkin_delivery_arm();
}


/* room for need more bytes (and the final NUL) in the buffer */

static ngx_int_t
ngx_mdm_checkin_delivery_room(ngx_mdm_checkin_delivery_t *d, size_t need)
{
    u_char  *p;
    size_t   size;

    if (d->len + need > d->size) {

        if (d->len + need > NGX_MDM_DELIVERY_MAX) {
            if (d->dropped++ == 0) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "mdm check-in: delivery counts not written "
                              "yet exceed %uz bytes: dropping new ones",
                              (size_t) NGX_MDM_DELIVERY_MAX);
            }

            return NGX_DECLINED;
        }

        size = ngx_max(d->size * 2, 16384);

        while (size < d->len + need) {
            size *= 2;
        }

        p = ngx_alloc(size, ngx_cycle->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (d->len) {
            ngx_memcpy(p, d->buf, d->len);
        }

        if (d->buf) {
            ngx_free(d->buf);
        }

        d->buf = p;
        d->size = size;
    }

    return NGX_OK;
}


static void
ngx_mdm_checkin_delivery_arm(void)
{
    ngx_mdm_checkin_delivery_t  *d;

    d = &ngx_mdm_checkin_delivery;

    if (d->len && !d->busy && !d->ev.timer_set && !d->ev.posted) {
        ngx_add_timer(&d->ev, d->interval);
    }
}


static void
ngx_mdm_checkin_delivery_handler(ngx_event_t *ev)
{
    const char                  *values[1];
    ngx_mdm_pg_args_t            args;
    ngx_mdm_checkin_delivery_t  *d;

    d = ev->data;

    if (d->busy || d->len == 0) {
        return;
    }

    /* the batch leaves the buffer: new deliveries start a new one */

    d->sending = d->buf;
    d->sending_len = d->len;
    d->sending[d->len] = '\0';      /* room: need counts a spare byte */
    d->buf = NULL;
    d->len = 0;
    d->size = 0;
    d->busy = 1;

    values[0] = (char *) d->sending;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_checkin_delivered_sql;
    args.nparams = 1;
    args.values = values;
    args.handler = ngx_mdm_checkin_delivery_done;
    args.data = d;
    args.log = ev->log;
    args.prepare = 1;

    if (ngx_mdm_pg_query(&args) == NULL) {
        ngx_mdm_checkin_delivery_done(d, NULL, NGX_DECLINED);
    }
}


static void
ngx_mdm_checkin_delivery_done(void *data, PGresult *res, ngx_int_t rc)
{
    u_char                      *p;
    size_t                       len;
    ngx_mdm_checkin_delivery_t  *d = data;

    d->busy = 0;

    if (rc == NGX_OK) {
        ngx_free(d->sending);
        d->sending = NULL;
        d->dropped = 0;

        /* rows that were locked: in the next batch */

        len = PQgetlength(res, 0, 0);

        if (len && ngx_mdm_checkin_delivery_room(d, len + 2) == NGX_OK) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                           "mdm check-in: delivery counts of locked rows "
                           "left for the next batch");

            p = ngx_cpymem(d->buf + d->len, PQgetvalue(res, 0, 0), len);
            *p++ = '\n';
            d->len = p - d->buf;
        }

        ngx_mdm_checkin_delivery_arm();
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "mdm check-in: writing delivery counts failed, kept for "
                  "the next try: %s",
                  res ? PQresultErrorMessage(res) : "no connection");

    /* put the batch back in front of what came meanwhile */

    if (d->len + d->sending_len + 1 > NGX_MDM_DELIVERY_MAX) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm check-in: %uz bytes of delivery counts dropped",
                      d->sending_len);

    } else {
        p = ngx_alloc(d->len + d->sending_len + 1 + 16384, ngx_cycle->log);

        if (p != NULL) {
            ngx_memcpy(p, d->sending, d->sending_len);

            if (d->len) {
                ngx_memcpy(p + d->sending_len, d->buf, d->len);
            }

            if (d->buf) {
                ngx_free(d->buf);
            }

            d->buf = p;
            d->len += d->sending_len;
            d->size = d->len + 1 + 16384;
        }
    }

    ngx_free(d->sending);
    d->sending = NULL;

    ngx_mdm_checkin_delivery_arm();
}
