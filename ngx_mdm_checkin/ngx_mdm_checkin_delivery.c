
/*
 * Delivery counts, written behind (005_checkin.sql, 3.).  A command handed
 * to a device is noted here, in this worker's memory: (enrollment id,
 * command uuid) -> how many times, and when last.  Two ways out:
 *
 * - the device's answer to that command (Acknowledged, Error, NotNow, ...)
 *   comes to this worker: the note is taken and goes with the answer, in
 *   the UPDATE that stores it (mdm_command_report's p_sent, p_sent_at):
 *   no write of its own;
 * - otherwise, every mdm_checkin_delivery_flush, the notes left go to
 *   PostgreSQL in one statement (mdm_queue_delivered), which adds them to
 *   sent_count and moves sent_at.  Rows that were locked (their device's
 *   answer being stored) come back from it and are noted again.
 *
 * One flush at a time.  A flush that fails keeps its notes for the next
 * try.  At most NGX_MDM_DELIVERY_MAX notes: beyond, new ones are dropped
 * with an error-log line.  A worker that leaves gracefully (reload, quit)
 * writes what it holds at once, and again for each delivery until it
 * exits; nginx waits for those statements.  What a worker holds when it
 * crashes or is killed, or when PostgreSQL fails it on its way out, is
 * lost: the counts are lower, the command itself is not touched (one sent
 * and never answered is still Queued and is sent again whatever
 * sent_count says).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_checkin_module.h"


#define NGX_MDM_DELIVERY_BUCKETS   4096
#define NGX_MDM_DELIVERY_MAX       200000
#define NGX_MDM_DELIVERY_FLUSH     20000
#define NGX_MDM_DELIVERY_EXIT_DELAY  10        /* ms */
#define NGX_MDM_DELIVERY_EXIT_TRIES  300


typedef struct ngx_mdm_delivery_s  ngx_mdm_delivery_t;

struct ngx_mdm_delivery_s {
    ngx_mdm_delivery_t     *next;
    ngx_uint_t              hash;
    time_t                  sec;
    ngx_msec_t              msec;
    ngx_uint_t              count;
    size_t                  id_len;
    size_t                  uuid_len;
    u_char                  data[1];      /* id, then uuid */
};


typedef struct {
    ngx_mdm_delivery_t    **buckets;
    ngx_uint_t              n;
    ngx_msec_t              interval;
    ngx_event_t             ev;
    u_char                 *sending;      /* the flush in flight */
    size_t                  sending_len;
    ngx_uint_t              dropped;
    ngx_uint_t              exit_tries;
    unsigned                enabled:1;
    unsigned                busy:1;
} ngx_mdm_checkin_delivery_t;


static ngx_mdm_delivery_t **ngx_mdm_checkin_delivery_find(u_char *id,
    size_t id_len, u_char *uuid, size_t uuid_len, ngx_uint_t hash);
static ngx_int_t ngx_mdm_checkin_delivery_note(u_char *id, size_t id_len,
    u_char *uuid, size_t uuid_len, time_t sec, ngx_msec_t msec,
    ngx_uint_t count);
static void ngx_mdm_checkin_delivery_handler(ngx_event_t *ev);
static void ngx_mdm_checkin_delivery_done(void *data, PGresult *res,
    ngx_int_t rc);
static void ngx_mdm_checkin_delivery_parse(u_char *p, u_char *last);
static void ngx_mdm_checkin_delivery_arm(void);
static void ngx_mdm_checkin_delivery_exiting(void);
static void ngx_mdm_checkin_delivery_drop(ngx_mdm_checkin_delivery_t *d);


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

    /* calloc(): pages untouched until a bucket on them is used */
    d->buckets = calloc(NGX_MDM_DELIVERY_BUCKETS, sizeof(void *));
    if (d->buckets == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "calloc() of the delivery counts failed");
        return NGX_ERROR;
    }

    d->interval = mcf->delivery_flush;
    d->ev.handler = ngx_mdm_checkin_delivery_handler;
    d->ev.data = d;
    d->ev.log = cycle->log;
    d->ev.cancelable = 1;
    d->enabled = 1;

    return ngx_mdm_on_exiting(cycle, ngx_mdm_checkin_delivery_exiting);
}


/* the worker starts to leave: what it holds goes now */

static void
ngx_mdm_checkin_delivery_exiting(void)
{
    ngx_mdm_checkin_delivery_t  *d;

    d = &ngx_mdm_checkin_delivery;

    if (d->ev.timer_set) {
        ngx_del_timer(&d->ev);
    }

    ngx_mdm_checkin_delivery_handler(&d->ev);
}


/* a command was handed to enrollment id */

void
ngx_mdm_checkin_delivered(ngx_str_t *id, u_char *uuid, size_t len)
{
    ngx_time_t                  *tp;
    ngx_mdm_checkin_delivery_t  *d;

    d = &ngx_mdm_checkin_delivery;

    if (!d->enabled) {
        return;
    }

    /* the flush's separators cannot be part of a field */

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

    tp = ngx_timeofday();

    if (ngx_mdm_checkin_delivery_note(id->data, id->len, uuid, len, tp->sec,
                                      tp->msec, 1)
        != NGX_OK)
    {
        return;
    }

    if (d->n >= NGX_MDM_DELIVERY_FLUSH && !d->busy) {
        if (d->ev.timer_set) {
            ngx_del_timer(&d->ev);
        }

        ngx_post_event(&d->ev, &ngx_posted_events);
        return;
    }

    ngx_mdm_checkin_delivery_arm();
}


/*
 * The device answers command uuid: take its note, if this worker has one.
 * *count is 0 when none; at gets the time of the last delivery ("%T.%03M").
 */

void
ngx_mdm_checkin_delivery_take(ngx_str_t *id, ngx_str_t *uuid,
    ngx_uint_t *count, u_char *at)
{
    ngx_uint_t                   hash;
    ngx_mdm_delivery_t         **pe, *e;
    ngx_mdm_checkin_delivery_t  *d;

    d = &ngx_mdm_checkin_delivery;
    *count = 0;

    if (!d->enabled || d->n == 0 || uuid->len == 0) {
        return;
    }

    hash = ngx_hash_key(id->data, id->len) ^ ngx_hash_key(uuid->data,
                                                          uuid->len);

    pe = ngx_mdm_checkin_delivery_find(id->data, id->len, uuid->data,
                                       uuid->len, hash);
    if (pe == NULL) {
        return;
    }

    e = *pe;
    *pe = e->next;
    d->n--;

    *count = e->count;
    *ngx_sprintf(at, "%T.%03M", e->sec, e->msec) = '\0';

    ngx_free(e);
}


/* the answer that carried a taken note failed: note it again */

void
ngx_mdm_checkin_delivery_untake(ngx_str_t *id, ngx_str_t *uuid,
    ngx_uint_t count, u_char *at)
{
    u_char     *dot;
    size_t      len;
    time_t      sec;
    ngx_int_t   msec;

    if (!ngx_mdm_checkin_delivery.enabled || count == 0) {
        return;
    }

    /* at is "%T.%03M" */

    len = ngx_strlen(at);
    dot = ngx_strlchr(at, at + len, '.');

    sec = ngx_atotm(at, dot ? (size_t) (dot - at) : len);
    msec = dot ? ngx_atoi(dot + 1, at + len - dot - 1) : 0;

    if (sec == NGX_ERROR || msec == NGX_ERROR) {
        return;
    }

    (void) ngx_mdm_checkin_delivery_note(id->data, id->len, uuid->data,
                                         uuid->len, sec, (ngx_msec_t) msec,
                                         count);

    ngx_mdm_checkin_delivery_arm();
}


static ngx_mdm_delivery_t **
ngx_mdm_checkin_delivery_find(u_char *id, size_t id_len, u_char *uuid,
    size_t uuid_len, ngx_uint_t hash)
{
    ngx_mdm_delivery_t  **pe, *e;

    for (pe = &ngx_mdm_checkin_delivery.buckets[hash
                                      % NGX_MDM_DELIVERY_BUCKETS];
         *pe;
         pe = &(*pe)->next)
    {
        e = *pe;

        if (e->hash == hash && e->id_len == id_len
            && e->uuid_len == uuid_len
            && ngx_memcmp(e->data, id, id_len) == 0
            && ngx_memcmp(e->data + id_len, uuid, uuid_len) == 0)
        {
            return pe;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_mdm_checkin_delivery_note(u_char *id, size_t id_len, u_char *uuid,
    size_t uuid_len, time_t sec, ngx_msec_t msec, ngx_uint_t count)
{
    ngx_uint_t                   hash;
    ngx_mdm_delivery_t         **pe, *e;
    ngx_mdm_checkin_delivery_t  *d;

    d = &ngx_mdm_checkin_delivery;

    hash = ngx_hash_key(id, id_len) ^ ngx_hash_key(uuid, uuid_len);

    pe = ngx_mdm_checkin_delivery_find(id, id_len, uuid, uuid_len, hash);

    if (pe) {
        e = *pe;
        e->count += count;

        if (sec > e->sec || (sec == e->sec && msec > e->msec)) {
            e->sec = sec;
            e->msec = msec;
        }

        return NGX_OK;
    }

    if (d->n >= NGX_MDM_DELIVERY_MAX) {
        if (d->dropped++ == 0) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "mdm check-in: %ui delivery counts not written "
                          "yet: dropping new ones", d->n);
        }

        return NGX_DECLINED;
    }

    e = ngx_alloc(sizeof(ngx_mdm_delivery_t) + id_len + uuid_len,
                  ngx_cycle->log);
    if (e == NULL) {
        return NGX_ERROR;
    }

    e->hash = hash;
    e->sec = sec;
    e->msec = msec;
    e->count = count;
    e->id_len = id_len;
    e->uuid_len = uuid_len;
    ngx_memcpy(e->data, id, id_len);
    ngx_memcpy(e->data + id_len, uuid, uuid_len);

    pe = &d->buckets[hash % NGX_MDM_DELIVERY_BUCKETS];
    e->next = *pe;
    *pe = e;
    d->n++;

    return NGX_OK;
}


static void
ngx_mdm_checkin_delivery_arm(void)
{
    ngx_mdm_checkin_delivery_t  *d;

    d = &ngx_mdm_checkin_delivery;

    if (d->n == 0 || d->busy || d->ev.posted) {
        return;
    }

    if (!ngx_exiting) {
        if (!d->ev.timer_set) {
            ngx_add_timer(&d->ev, d->interval);
        }

        return;
    }

    /*
     * leaving: soon, and the worker waits for it; rows still locked are
     * tried for a few seconds, then given up
     */

    if (d->exit_tries >= NGX_MDM_DELIVERY_EXIT_TRIES) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm check-in: %ui delivery counts still locked as "
                      "the worker leaves, lost", d->n);
        ngx_mdm_checkin_delivery_drop(d);
        return;
    }

    if (d->ev.timer_set && d->ev.cancelable) {
        ngx_del_timer(&d->ev);
    }

    if (!d->ev.timer_set) {
        d->ev.cancelable = 0;
        ngx_add_timer(&d->ev, ngx_min(d->interval,
                                      NGX_MDM_DELIVERY_EXIT_DELAY));
    }
}


static void
ngx_mdm_checkin_delivery_drop(ngx_mdm_checkin_delivery_t *d)
{
    ngx_uint_t           i;
    ngx_mdm_delivery_t  *e, *next;

    for (i = 0; i < NGX_MDM_DELIVERY_BUCKETS; i++) {
        for (e = d->buckets[i]; e; e = next) {
            next = e->next;
            ngx_free(e);
        }

        d->buckets[i] = NULL;
    }

    d->n = 0;
}


/* every note left, "<time>\t<id>\t<uuid>\t<count>\n", in one statement */

static void
ngx_mdm_checkin_delivery_handler(ngx_event_t *ev)
{
    u_char                      *batch, *p;
    size_t                       len;
    ngx_uint_t                   i;
    const char                  *values[1];
    ngx_mdm_pg_args_t            args;
    ngx_mdm_delivery_t          *e, *next;
    ngx_mdm_checkin_delivery_t  *d;

    d = ev->data;

    if (d->busy || d->n == 0) {
        return;
    }

    len = 1;

    for (i = 0; i < NGX_MDM_DELIVERY_BUCKETS; i++) {
        for (e = d->buckets[i]; e; e = e->next) {
            len += NGX_TIME_T_LEN + 4 + e->id_len + e->uuid_len
                   + NGX_INT_T_LEN + 4;
        }
    }

    batch = ngx_alloc(len, ev->log);
    if (batch == NULL) {
        d->exit_tries += ngx_exiting;
        ngx_mdm_checkin_delivery_arm();
        return;
    }

    p = batch;

    for (i = 0; i < NGX_MDM_DELIVERY_BUCKETS; i++) {
        for (e = d->buckets[i]; e; e = next) {
            next = e->next;

            p = ngx_sprintf(p, "%T.%03M\t", e->sec, e->msec);
            p = ngx_cpymem(p, e->data, e->id_len);
            *p++ = '\t';
            p = ngx_cpymem(p, e->data + e->id_len, e->uuid_len);
            p = ngx_sprintf(p, "\t%ui\n", e->count);

            ngx_free(e);
        }

        d->buckets[i] = NULL;
    }

    *p = '\0';
    d->n = 0;
    d->busy = 1;

    values[0] = (char *) batch;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_checkin_delivered_sql;
    args.nparams = 1;
    args.values = values;
    args.handler = ngx_mdm_checkin_delivery_done;
    args.data = d;
    args.log = ev->log;
    args.prepare = 1;

    d->sending = batch;
    d->sending_len = p - batch;

    if (ngx_mdm_pg_query(&args) == NULL) {
        ngx_mdm_checkin_delivery_done(d, NULL, NGX_DECLINED);
    }
}


static void
ngx_mdm_checkin_delivery_done(void *data, PGresult *res, ngx_int_t rc)
{
    u_char                      *p;
    ngx_mdm_checkin_delivery_t  *d = data;

    d->busy = 0;

    if (rc == NGX_OK) {
        d->dropped = 0;

        /* rows that were locked: noted again, for the next flush */

        if (!PQgetisnull(res, 0, 0)) {
            d->exit_tries += ngx_exiting;
            p = (u_char *) PQgetvalue(res, 0, 0);
            ngx_mdm_checkin_delivery_parse(p, p + PQgetlength(res, 0, 0));
        }

    } else if (ngx_exiting) {
        /* no next try: the worker is leaving */
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm check-in: writing delivery counts failed as the "
                      "worker leaves, counts lost: %s",
                      res ? PQresultErrorMessage(res) : "no connection");

    } else {
        /* the statement failed as a whole: nothing of it was written */
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm check-in: writing delivery counts failed, kept "
                      "for the next try: %s",
                      res ? PQresultErrorMessage(res) : "no connection");

        ngx_mdm_checkin_delivery_parse(d->sending,
                                       d->sending + d->sending_len);
    }

    ngx_free(d->sending);
    d->sending = NULL;

    ngx_mdm_checkin_delivery_arm();
}


/* lines "<sec>[.<fraction>]\t<id>\t<uuid>\t<count>" back into notes */

static void
ngx_mdm_checkin_delivery_parse(u_char *p, u_char *last)
{
    u_char      *nl, *f[4], *dot;
    size_t       flen[4];
    ngx_int_t    sec, count;
    ngx_uint_t   i, msec, digits;

    while (p < last) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        for (i = 0; i < 4; i++) {
            f[i] = p;
            p = ngx_strlchr(p, nl, '\t');
            if (p == NULL) {
                p = nl;
            }

            flen[i] = p - f[i];

            if (p < nl) {
                p++;
            }
        }

        p = nl + 1;

        dot = ngx_strlchr(f[0], f[0] + flen[0], '.');
        sec = ngx_atotm(f[0], (dot ? dot : f[0] + flen[0]) - f[0]);
        msec = 0;

        if (dot) {
            for (i = 1, digits = 0; i < 4 && dot + i < f[0] + flen[0]; i++) {
                if (dot[i] < '0' || dot[i] > '9') {
                    break;
                }

                msec = msec * 10 + (dot[i] - '0');
                digits++;
            }

            while (digits++ < 3) {
                msec *= 10;
            }
        }

        count = ngx_atoi(f[3], flen[3]);

        if (sec == NGX_ERROR || count == NGX_ERROR || count == 0
            || flen[1] == 0 || flen[2] == 0)
        {
            continue;
        }

        (void) ngx_mdm_checkin_delivery_note(f[1], flen[1], f[2], flen[2],
                                             sec, msec, count);
    }
}
