
/*
 * APNs push, the helper process's task (DESIGN.md §4, §5).
 *
 * PostgreSQL holds what is wanted (mdm_push_requests, 007_push.sql).  The
 * task claims a batch of due rows in one statement (a lease: a helper that
 * dies loses its rows when the lease ends), pushes each over HTTP/2 with
 * the certificate of the enrollment's topic, and records the batch's
 * answers in one statement.  It claims when the Redis hint says so, on a
 * poll timer, when its own retries come due, and after the sweep.  The
 * process may end at any moment: a push may then be sent twice, never lost.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <jansson.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_curl.h"
#include "ngx_mdm_apns.h"
#include "ngx_mdm_apns_sql.h"


#define NGX_MDM_APNS_BATCHES        3       /* claimed, being pushed */
#define NGX_MDM_APNS_FINISHING      4       /* answers being recorded */
#define NGX_MDM_APNS_FINISH_TRIES   10
#define NGX_MDM_APNS_LEASE_MIN      30000
#define NGX_MDM_APNS_TOKEN_MAX      200     /* hex digits */
#define NGX_MDM_APNS_BODY_MAX       512     /* of an answer */
#define NGX_MDM_APNS_DETAIL_MAX     128
#define NGX_MDM_APNS_GRACE          1000    /* ms after an answer */
#define NGX_MDM_APNS_EXPIRY_CHECK   86400000


typedef enum {
    ngx_mdm_apns_sent = 0,
    ngx_mdm_apns_invalid,                   /* the token is dead */
    ngx_mdm_apns_retry,
    ngx_mdm_apns_failed                     /* given up */
} ngx_mdm_apns_outcome_e;


/* what an APNs answer means (PROTOCOL.md §5); the first match wins */
typedef struct {
    ngx_uint_t                 status_min;
    ngx_uint_t                 status_max;
    const char                *reason;     /* NULL: any */
    ngx_mdm_apns_outcome_e     outcome;
    ngx_uint_t                 certificate; /* a certificate problem */
} ngx_mdm_apns_answer_t;


typedef struct ngx_mdm_apns_batch_s  ngx_mdm_apns_batch_t;

typedef struct {
    ngx_queue_t                queue;       /* waiting to be sent */
    ngx_mdm_apns_batch_t      *batch;
    ngx_mdm_apns_cert_t       *cert;
    ngx_str_t                  id;
    ngx_str_t                  token;       /* lowercase hex */
    ngx_str_t                  body;        /* {"mdm":"<PushMagic>"} */
    ngx_int_t                  requests;
    ngx_int_t                  attempts;
    ngx_mdm_apns_outcome_e     outcome;
    ngx_str_t                  detail;      /* apns-id, or the reason */
    ngx_msec_t                 delay;       /* until it is due again */
} ngx_mdm_apns_item_t;


struct ngx_mdm_apns_batch_s {
    ngx_pool_t                *pool;
    ngx_mdm_apns_item_t       *items;
    ngx_uint_t                 nitems;
    ngx_uint_t                 left;        /* not answered yet */
    ngx_uint_t                 tries;
    ngx_str_t                  results;     /* JSON for the finish */
    ngx_event_t                retry;
};


typedef struct {
    ngx_queue_t                queue;       /* free slots */
    CURL                      *easy;
    ngx_mdm_apns_item_t       *item;
    struct curl_slist         *headers;
    ngx_mdm_apns_cert_t       *headers_cert;
    time_t                     headers_time;
    ngx_mdm_apns_cert_t       *blob_cert;
    u_char                    *url;
    ngx_event_t                grace;       /* answered, still running */
    unsigned                   answered:1;
    size_t                     apns_id_len;
    size_t                     body_len;
    u_char                     apns_id[64];
    u_char                     body[NGX_MDM_APNS_BODY_MAX];
} ngx_mdm_apns_slot_t;


typedef struct {
    ngx_http_mdm_apns_main_conf_t  *amcf;
    ngx_mdm_apns_shm_t             *shm;
    ngx_log_t                      *log;
    ngx_queue_t                     free;       /* slots */
    ngx_queue_t                     waiting;    /* items */
    ngx_uint_t                      nwaiting;
    ngx_uint_t                      nbatches;
    ngx_uint_t                      nfinishing;
    ngx_msec_t                      lease;
    ngx_event_t                     claim_ev;   /* posted */
    ngx_event_t                     poll;
    ngx_event_t                     wake;       /* a known row comes due */
    ngx_event_t                     sweep;
    ngx_event_t                     expiry;     /* daily certificate check */
    time_t                          error_logged;
    unsigned                        claiming:1;
    unsigned                        sweeping:1;
    unsigned                        want:1;     /* rows may be due */
    u_char                          claimer[NGX_MAXHOSTNAMELEN + 64];
} ngx_mdm_apns_t;


static void ngx_mdm_apns_wake_now(void);
static void ngx_mdm_apns_wake_at(ngx_msec_t delay);
static void ngx_mdm_apns_timer_handler(ngx_event_t *ev);
static void ngx_mdm_apns_claim(void);
static void ngx_mdm_apns_claimed(void *data, PGresult *res, ngx_int_t rc);
static ngx_int_t ngx_mdm_apns_item(ngx_mdm_apns_batch_t *batch,
    ngx_mdm_apns_item_t *item, PGresult *res, int row);
static void ngx_mdm_apns_dispatch(void);
static ngx_int_t ngx_mdm_apns_send(ngx_mdm_apns_slot_t *slot,
    ngx_mdm_apns_item_t *item);
static ngx_int_t ngx_mdm_apns_headers(ngx_mdm_apns_slot_t *slot,
    ngx_mdm_apns_cert_t *cert);
static size_t ngx_mdm_apns_header_cb(char *buf, size_t size, size_t n,
    void *data);
static size_t ngx_mdm_apns_body_cb(char *buf, size_t size, size_t n,
    void *data);
static void ngx_mdm_apns_done(CURL *easy, CURLcode rc, void *data);
static void ngx_mdm_apns_grace_handler(ngx_event_t *ev);
static void ngx_mdm_apns_complete(ngx_mdm_apns_slot_t *slot, CURLcode rc);
static void ngx_mdm_apns_answer(ngx_mdm_apns_slot_t *slot,
    ngx_mdm_apns_item_t *item, long status);
static void ngx_mdm_apns_result(ngx_mdm_apns_item_t *item,
    ngx_mdm_apns_outcome_e outcome, u_char *detail, size_t len);
static void ngx_mdm_apns_finish(ngx_mdm_apns_batch_t *batch);
static void ngx_mdm_apns_finish_retry(ngx_event_t *ev);
static void ngx_mdm_apns_finished(void *data, PGresult *res, ngx_int_t rc);
static void ngx_mdm_apns_expiry_handler(ngx_event_t *ev);
static void ngx_mdm_apns_sweep_handler(ngx_event_t *ev);
static void ngx_mdm_apns_swept(void *data, PGresult *res, ngx_int_t rc);


static ngx_mdm_apns_answer_t  ngx_mdm_apns_answers[] = {
    { 200, 200, NULL, ngx_mdm_apns_sent, 0 },
    { 400, 400, "BadDeviceToken", ngx_mdm_apns_invalid, 0 },
    { 400, 400, "DeviceTokenNotForTopic", ngx_mdm_apns_invalid, 0 },
    { 410, 410, NULL, ngx_mdm_apns_invalid, 0 },     /* Unregistered */
    { 403, 403, NULL, ngx_mdm_apns_retry, 1 },       /* BadCertificate */
    { 429, 429, NULL, ngx_mdm_apns_retry, 0 },       /* TooManyRequests */
    { 500, 599, NULL, ngx_mdm_apns_retry, 0 },
    { 0, 999, NULL, ngx_mdm_apns_failed, 0 }         /* ours: don't retry */
};


static ngx_mdm_apns_t  ngx_mdm_apns;


ngx_int_t
ngx_mdm_apns_helper_init(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_mdm_apns_slot_t            *slots;
    ngx_http_mdm_apns_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_mdm_apns_module);
    if (amcf == NULL || amcf->certs.nelts == 0) {
        return NGX_OK;
    }

    if (ngx_mdm_curl_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    /* transfers beyond the streams of one connection wait in curl */
    (void) curl_multi_setopt(ngx_mdm_curl_multi(),
                             CURLMOPT_MAX_CONCURRENT_STREAMS,
                             (long) amcf->concurrency);

    ngx_memzero(&ngx_mdm_apns, sizeof(ngx_mdm_apns_t));

    ngx_mdm_apns.amcf = amcf;
    ngx_mdm_apns.shm = ngx_mdm_apns_shm(amcf);
    ngx_mdm_apns.log = cycle->log;
    ngx_mdm_apns.lease = ngx_max(NGX_MDM_APNS_LEASE_MIN, 3 * amcf->timeout);

    ngx_queue_init(&ngx_mdm_apns.free);
    ngx_queue_init(&ngx_mdm_apns.waiting);

    slots = ngx_pcalloc(cycle->pool,
                        amcf->concurrency * sizeof(ngx_mdm_apns_slot_t));
    if (slots == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < amcf->concurrency; i++) {
        ngx_queue_insert_tail(&ngx_mdm_apns.free, &slots[i].queue);
    }

    /* unique per helper: a respawned helper may get the same pid */
    (void) ngx_snprintf(ngx_mdm_apns.claimer,
                        sizeof(ngx_mdm_apns.claimer) - 1, "%V/%P/%08xD%Z",
                        &cycle->hostname, ngx_pid, (uint32_t) ngx_random());

    ngx_mdm_apns.claim_ev.handler = ngx_mdm_apns_timer_handler;
    ngx_mdm_apns.claim_ev.log = cycle->log;
    ngx_mdm_apns.poll.handler = ngx_mdm_apns_timer_handler;
    ngx_mdm_apns.poll.log = cycle->log;
    ngx_mdm_apns.poll.cancelable = 1;
    ngx_mdm_apns.wake.handler = ngx_mdm_apns_timer_handler;
    ngx_mdm_apns.wake.log = cycle->log;
    ngx_mdm_apns.wake.cancelable = 1;
    ngx_mdm_apns.sweep.handler = ngx_mdm_apns_sweep_handler;
    ngx_mdm_apns.sweep.log = cycle->log;
    ngx_mdm_apns.sweep.cancelable = 1;
    ngx_mdm_apns.expiry.handler = ngx_mdm_apns_expiry_handler;
    ngx_mdm_apns.expiry.log = cycle->log;
    ngx_mdm_apns.expiry.cancelable = 1;

    if (ngx_mdm_apns.shm) {
        ngx_mdm_apns.shm->helper_pid = ngx_pid;
        ngx_mdm_apns.shm->in_flight = 0;
    }

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "mdm apns push started: %ui certificate(s), endpoint %V",
                  amcf->certs.nelts, &amcf->endpoint);

    if (ngx_mdm_apns_hint_start(cycle, ngx_mdm_apns_wake_now) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "mdm apns hint subscriber not started, polling only");
    }

    ngx_add_timer(&ngx_mdm_apns.poll, amcf->poll_interval);

    if (amcf->sweep_interval) {
        ngx_add_timer(&ngx_mdm_apns.sweep, amcf->sweep_interval);
    }

    /* the configuration said so at start; a helper may run for months */
    ngx_add_timer(&ngx_mdm_apns.expiry, NGX_MDM_APNS_EXPIRY_CHECK);

    /* whatever was requested while no helper ran */
    ngx_mdm_apns_wake_now();

    return NGX_OK;
}


/* the hint, a sweep or a full batch: rows may be due now */

static void
ngx_mdm_apns_wake_now(void)
{
    ngx_mdm_apns.want = 1;

    if (!ngx_mdm_apns.claim_ev.posted) {
        ngx_post_event(&ngx_mdm_apns.claim_ev, &ngx_posted_events);
    }
}


/*
 * A row we know of comes due after delay.  A little later, since nginx's
 * clock is the one of the last event loop turn: a claim that comes too
 * early finds nothing and only sets the wake again.
 */

static void
ngx_mdm_apns_wake_at(ngx_msec_t delay)
{
    ngx_event_t  *ev;

    ev = &ngx_mdm_apns.wake;
    delay += 10;

    if (ev->timer_set) {
        if ((ngx_msec_int_t) (ev->timer.key - ngx_current_msec - delay) <= 0) {
            return;
        }

        ngx_del_timer(ev);
    }

    ngx_add_timer(ev, delay);
}


static void
ngx_mdm_apns_timer_handler(ngx_event_t *ev)
{
    if (ev == &ngx_mdm_apns.poll) {
        ngx_add_timer(ev, ngx_mdm_apns.amcf->poll_interval);
    }

    ngx_mdm_apns.want = 1;
    ngx_mdm_apns_claim();
}


static void
ngx_mdm_apns_claim(void)
{
    u_char             limit[NGX_INT_T_LEN + 1], lease[NGX_INT_T_LEN + 1];
    u_char             coalesce[NGX_INT_T_LEN + 1];
    const char        *values[4];
    ngx_mdm_pg_args_t  args;

    if (!ngx_mdm_apns.want || ngx_mdm_apns.claiming) {
        return;
    }

    /* enough in hand: claim again when it has gone out */

    if (ngx_mdm_apns.nbatches >= NGX_MDM_APNS_BATCHES
        || ngx_mdm_apns.nfinishing >= NGX_MDM_APNS_FINISHING
        || ngx_mdm_apns.nwaiting >= ngx_mdm_apns.amcf->batch_size)
    {
        return;
    }

    *ngx_sprintf(limit, "%ui", ngx_mdm_apns.amcf->batch_size) = '\0';
    *ngx_sprintf(lease, "%M", ngx_mdm_apns.lease) = '\0';
    *ngx_sprintf(coalesce, "%M", ngx_mdm_apns.amcf->coalesce) = '\0';

    values[0] = (char *) ngx_mdm_apns.claimer;
    values[1] = (char *) limit;
    values[2] = (char *) lease;
    values[3] = (char *) coalesce;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_APNS_SQL_CLAIM;
    args.nparams = 4;
    args.values = values;
    args.handler = ngx_mdm_apns_claimed;
    args.log = ngx_mdm_apns.log;

    if (ngx_mdm_pg_query(&args) == NULL) {
        /* the database is down: the poll timer tries again */
        return;
    }

    ngx_mdm_apns.want = 0;
    ngx_mdm_apns.claiming = 1;
}


static void
ngx_mdm_apns_claimed(void *data, PGresult *res, ngx_int_t rc)
{
    int                    row, nrows;
    char                  *kind;
    ngx_int_t              delay;
    ngx_pool_t            *pool;
    ngx_uint_t             n;
    ngx_mdm_apns_item_t   *item;
    ngx_mdm_apns_batch_t  *batch;

    ngx_mdm_apns.claiming = 0;

    if (rc != NGX_OK) {
        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                          "mdm apns claim failed: %s",
                          PQresultErrorMessage(res));
        }

        ngx_mdm_apns.want = 1;
        return;
    }

    nrows = PQntuples(res);
    n = 0;

    for (row = 0; row < nrows; row++) {
        kind = PQgetvalue(res, row, 0);

        if (kind[0] == 'c') {
            n++;

        } else if ((kind[0] == 'd' || kind[0] == 'n')
                   && !PQgetisnull(res, row, 7))
        {
            delay = ngx_atoi((u_char *) PQgetvalue(res, row, 7),
                             PQgetlength(res, row, 7));
            ngx_mdm_apns_wake_at(delay > 0 ? (ngx_msec_t) delay : 0);
        }
    }

    if ((ngx_uint_t) nrows > ngx_mdm_apns.amcf->batch_size) {
        /* there may be more */
        ngx_mdm_apns.want = 1;
    }

    if (n) {
        pool = ngx_create_pool(4096 + n * 256, ngx_mdm_apns.log);
        if (pool == NULL) {
            return;
        }

        batch = ngx_pcalloc(pool, sizeof(ngx_mdm_apns_batch_t));
        item = ngx_pcalloc(pool, n * sizeof(ngx_mdm_apns_item_t));
        if (batch == NULL || item == NULL) {
            ngx_destroy_pool(pool);
            return;
        }

        batch->pool = pool;
        batch->items = item;
        batch->nitems = n;
        batch->left = n;
        batch->retry.handler = ngx_mdm_apns_finish_retry;
        batch->retry.data = batch;
        batch->retry.log = ngx_mdm_apns.log;
        batch->retry.cancelable = 1;

        ngx_mdm_apns.nbatches++;

        if (ngx_mdm_apns.shm) {
            (void) ngx_atomic_fetch_add(&ngx_mdm_apns.shm->claimed, n);
        }

        for (row = 0; row < nrows; row++) {
            if (PQgetvalue(res, row, 0)[0] != 'c') {
                continue;
            }

            /* an item that fails at once is answered there and then; the
             * last answer of a batch records it */

            if (ngx_mdm_apns_item(batch, item, res, row) == NGX_OK) {
                ngx_queue_insert_tail(&ngx_mdm_apns.waiting, &item->queue);
                ngx_mdm_apns.nwaiting++;
            }

            item++;
        }

        ngx_mdm_apns_dispatch();
    }

    ngx_mdm_apns_claim();
}


/* a claimed row as an item to send; NGX_DECLINED: answered already */

static ngx_int_t
ngx_mdm_apns_item(ngx_mdm_apns_batch_t *batch, ngx_mdm_apns_item_t *item,
    PGresult *res, int row)
{
    u_char                         *p;
    size_t                          len;
    ngx_str_t                       topic, magic;
    ngx_uint_t                      i;
    ngx_mdm_apns_cert_t            *cert;
    ngx_http_mdm_apns_main_conf_t  *amcf;

    static time_t                   logged;

    amcf = ngx_mdm_apns.amcf;

    item->batch = batch;

    item->requests = ngx_atoi((u_char *) PQgetvalue(res, row, 2),
                              PQgetlength(res, row, 2));
    item->attempts = ngx_atoi((u_char *) PQgetvalue(res, row, 3),
                              PQgetlength(res, row, 3));

    item->id.len = PQgetlength(res, row, 1);
    item->id.data = ngx_pnalloc(batch->pool, item->id.len);
    if (item->id.data == NULL) {
        item->id.len = 0;
        goto failed;
    }
    ngx_memcpy(item->id.data, PQgetvalue(res, row, 1), item->id.len);

    topic.len = PQgetlength(res, row, 4);
    topic.data = (u_char *) PQgetvalue(res, row, 4);

    cert = amcf->certs.elts;

    for (i = 0; i < amcf->certs.nelts; i++) {
        if (cert[i].topic.len == topic.len
            && ngx_strncmp(cert[i].topic.data, topic.data, topic.len) == 0)
        {
            item->cert = &cert[i];
            break;
        }
    }

    if (item->cert == NULL) {
        if (logged != ngx_time()) {
            logged = ngx_time();
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                          "mdm apns: no push certificate for topic \"%V\" "
                          "of enrollment \"%V\"", &topic, &item->id);
        }

        ngx_mdm_apns_result(item, ngx_mdm_apns_failed,
                            (u_char *) "NoCertificateForTopic",
                            sizeof("NoCertificateForTopic") - 1);
        return NGX_DECLINED;
    }

    item->token.len = PQgetlength(res, row, 5);

    if (item->token.len > NGX_MDM_APNS_TOKEN_MAX) {
        ngx_mdm_apns_result(item, ngx_mdm_apns_invalid,
                            (u_char *) "TokenTooLong",
                            sizeof("TokenTooLong") - 1);
        return NGX_DECLINED;
    }

    item->token.data = ngx_pnalloc(batch->pool, item->token.len);
    if (item->token.data == NULL) {
        goto failed;
    }
    ngx_memcpy(item->token.data, PQgetvalue(res, row, 5), item->token.len);

    magic.len = PQgetlength(res, row, 6);
    magic.data = (u_char *) PQgetvalue(res, row, 6);

    len = sizeof("{\"mdm\":\"\"}") - 1
          + magic.len + ngx_escape_json(NULL, magic.data, magic.len);

    p = ngx_pnalloc(batch->pool, len);
    if (p == NULL) {
        goto failed;
    }

    item->body.data = p;
    p = ngx_cpymem(p, "{\"mdm\":\"", sizeof("{\"mdm\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, magic.data, magic.len);
    p = ngx_cpymem(p, "\"}", 2);
    item->body.len = p - item->body.data;

    return NGX_OK;

failed:

    ngx_mdm_apns_result(item, ngx_mdm_apns_retry, (u_char *) "NoMemory",
                        sizeof("NoMemory") - 1);
    return NGX_DECLINED;
}


static void
ngx_mdm_apns_dispatch(void)
{
    ngx_queue_t          *q;
    ngx_mdm_apns_slot_t  *slot;
    ngx_mdm_apns_item_t  *item;

    while (!ngx_queue_empty(&ngx_mdm_apns.waiting)
           && !ngx_queue_empty(&ngx_mdm_apns.free))
    {
        q = ngx_queue_head(&ngx_mdm_apns.waiting);
        ngx_queue_remove(q);
        ngx_mdm_apns.nwaiting--;
        item = ngx_queue_data(q, ngx_mdm_apns_item_t, queue);

        q = ngx_queue_head(&ngx_mdm_apns.free);
        ngx_queue_remove(q);
        slot = ngx_queue_data(q, ngx_mdm_apns_slot_t, queue);

        if (ngx_mdm_apns_send(slot, item) != NGX_OK) {
            ngx_queue_insert_head(&ngx_mdm_apns.free, &slot->queue);
            ngx_mdm_apns_result(item, ngx_mdm_apns_retry,
                                (u_char *) "InternalError",
                                sizeof("InternalError") - 1);
        }
    }
}


/*
 * POST /3/device/<token> {"mdm":"<PushMagic>"} (PROTOCOL.md §5).  Handles
 * are kept and reused; the certificate and key go to curl from memory.
 */

static ngx_int_t
ngx_mdm_apns_send(ngx_mdm_apns_slot_t *slot, ngx_mdm_apns_item_t *item)
{
    u_char                         *p;
    CURL                           *easy;
    struct curl_blob                blob;
    ngx_http_mdm_apns_main_conf_t  *amcf;

    amcf = ngx_mdm_apns.amcf;

    if (slot->easy == NULL) {
        easy = ngx_mdm_curl_create(ngx_mdm_apns_done, slot);
        if (easy == NULL) {
            return NGX_ERROR;
        }

        slot->url = ngx_alloc(amcf->endpoint.len + sizeof("/3/device/")
                              + NGX_MDM_APNS_TOKEN_MAX, ngx_mdm_apns.log);
        if (slot->url == NULL) {
            ngx_mdm_curl_destroy(easy);
            return NGX_ERROR;
        }

        p = ngx_cpymem(slot->url, amcf->endpoint.data, amcf->endpoint.len);
        (void) ngx_cpymem(p, "/3/device/", sizeof("/3/device/") - 1);

        (void) curl_easy_setopt(easy, CURLOPT_HTTP_VERSION,
                                (long) CURL_HTTP_VERSION_2TLS);
        (void) curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https");
        (void) curl_easy_setopt(easy, CURLOPT_POST, 1L);
        (void) curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                                (long) amcf->timeout);
        (void) curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                                (long) amcf->timeout);
        (void) curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
        (void) curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
        (void) curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
        (void) curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION,
                                ngx_mdm_apns_header_cb);
        (void) curl_easy_setopt(easy, CURLOPT_HEADERDATA, slot);
        (void) curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION,
                                ngx_mdm_apns_body_cb);
        (void) curl_easy_setopt(easy, CURLOPT_WRITEDATA, slot);

        if (amcf->trusted_pem.len) {
            blob.data = amcf->trusted_pem.data;
            blob.len = amcf->trusted_pem.len;
            blob.flags = CURL_BLOB_NOCOPY;
            (void) curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &blob);
        }

        slot->easy = easy;
        slot->grace.handler = ngx_mdm_apns_grace_handler;
        slot->grace.data = slot;
        slot->grace.log = ngx_mdm_apns.log;
        slot->grace.cancelable = 1;
    }

    easy = slot->easy;

    if (slot->blob_cert != item->cert) {
        /* the configuration's memory outlives the helper: no copy */
        blob.data = item->cert->cert_pem.data;
        blob.len = item->cert->cert_pem.len;
        blob.flags = CURL_BLOB_NOCOPY;
        (void) curl_easy_setopt(easy, CURLOPT_SSLCERT_BLOB, &blob);

        blob.data = item->cert->key_pem.data;
        blob.len = item->cert->key_pem.len;
        blob.flags = CURL_BLOB_NOCOPY;
        (void) curl_easy_setopt(easy, CURLOPT_SSLKEY_BLOB, &blob);

        slot->blob_cert = item->cert;
    }

    if (ngx_mdm_apns_headers(slot, item->cert) != NGX_OK) {
        return NGX_ERROR;
    }

    p = slot->url + amcf->endpoint.len + sizeof("/3/device/") - 1;
    p = ngx_cpymem(p, item->token.data, item->token.len);
    *p = '\0';

    (void) curl_easy_setopt(easy, CURLOPT_URL, slot->url);
    (void) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, slot->headers);
    (void) curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE,
                            (long) item->body.len);
    (void) curl_easy_setopt(easy, CURLOPT_POSTFIELDS, item->body.data);

    slot->apns_id_len = 0;
    slot->body_len = 0;
    slot->answered = 0;

    if (ngx_mdm_curl_start(easy) != NGX_OK) {
        return NGX_ERROR;
    }

    slot->item = item;

    if (ngx_mdm_apns.shm) {
        (void) ngx_atomic_fetch_add(&ngx_mdm_apns.shm->in_flight, 1);
    }

    return NGX_OK;
}


/* the same for every push of a topic, but apns-expiration moves on */

static ngx_int_t
ngx_mdm_apns_headers(ngx_mdm_apns_slot_t *slot, ngx_mdm_apns_cert_t *cert)
{
    time_t              now, exp;
    u_char              line[320];
    ngx_uint_t          i;
    struct curl_slist  *list, *next;

    static const char  *fixed[] = {
        "apns-push-type: mdm",
        "apns-priority: 10",
        "content-type: application/json",
        "accept:",              /* no "Accept: * / *" of curl's */
        NULL
    };

    now = ngx_time();
    exp = ngx_mdm_apns.amcf->expiration;

    if (slot->headers && slot->headers_cert == cert
        && (exp == NGX_MDM_APNS_EXPIRATION_OFF || slot->headers_time == now))
    {
        return NGX_OK;
    }

    *ngx_snprintf(line, sizeof(line) - 1, "apns-topic: %V", &cert->topic)
        = '\0';

    list = curl_slist_append(NULL, (char *) line);

    for (i = 0, next = list; next && fixed[i]; i++) {
        next = curl_slist_append(list, fixed[i]);
    }

    if (next && exp != NGX_MDM_APNS_EXPIRATION_OFF) {
        /* 0: deliver once, do not store */
        *ngx_sprintf(line, "apns-expiration: %T", exp ? now + exp : 0)
            = '\0';
        next = curl_slist_append(list, (char *) line);
    }

    if (next == NULL) {
        curl_slist_free_all(list);
        return NGX_ERROR;
    }

    curl_slist_free_all(slot->headers);

    slot->headers = list;
    slot->headers_cert = cert;
    slot->headers_time = now;

    return NGX_OK;
}


static size_t
ngx_mdm_apns_header_cb(char *buf, size_t size, size_t n, void *data)
{
    ngx_mdm_apns_slot_t  *slot = data;

    long     status;
    u_char  *p, *last;
    size_t   len;

    len = size * n;

    if (len <= 2 && buf[0] != ' ' && buf[0] != '\t') {
        /* the end of a header block; one of 1xx is not the answer */

        status = 0;
        (void) curl_easy_getinfo(slot->easy, CURLINFO_RESPONSE_CODE, &status);

        if (status >= 200) {
            slot->answered = 1;
            ngx_add_timer(&slot->grace, NGX_MDM_APNS_GRACE);
        }

        return len;
    }

    if (len > sizeof("apns-id:") - 1
        && ngx_strncasecmp((u_char *) buf, (u_char *) "apns-id:",
                           sizeof("apns-id:") - 1) == 0)
    {
        p = (u_char *) buf + sizeof("apns-id:") - 1;
        last = (u_char *) buf + len;

        while (p < last && (*p == ' ' || *p == '\t')) {
            p++;
        }

        while (last > p && (last[-1] == '\r' || last[-1] == '\n'
                            || last[-1] == ' '))
        {
            last--;
        }

        slot->apns_id_len = ngx_min((size_t) (last - p),
                                    sizeof(slot->apns_id));
        ngx_memcpy(slot->apns_id, p, slot->apns_id_len);
    }

    return len;
}


static size_t
ngx_mdm_apns_body_cb(char *buf, size_t size, size_t n, void *data)
{
    ngx_mdm_apns_slot_t  *slot = data;

    size_t  len;

    len = ngx_min(size * n, sizeof(slot->body) - slot->body_len);

    ngx_memcpy(slot->body + slot->body_len, buf, len);
    slot->body_len += len;

    return size * n;
}


static void
ngx_mdm_apns_done(CURL *easy, CURLcode rc, void *data)
{
    ngx_mdm_apns_complete(data, rc);
}


/*
 * APNs answered, but the transfer goes on.  curl 7.88 fails, or waits for
 * its timeout on, a stream that the server closed with its answer before
 * the request body went out (a server may answer an error from the
 * headers alone).  The answer is what counts: after a short grace for the
 * rest of its body, the transfer is ended.
 */

static void
ngx_mdm_apns_grace_handler(ngx_event_t *ev)
{
    ngx_mdm_apns_slot_t  *slot = ev->data;

    if (slot->item == NULL) {
        return;
    }

    ngx_mdm_curl_stop(slot->easy);
    ngx_mdm_apns_complete(slot, CURLE_OK);
}


static void
ngx_mdm_apns_complete(ngx_mdm_apns_slot_t *slot, CURLcode rc)
{
    long                  status, connects;
    CURL                 *easy;
    const char           *err;
    ngx_mdm_apns_item_t  *item;

    easy = slot->easy;
    item = slot->item;
    slot->item = NULL;

    if (slot->grace.timer_set) {
        ngx_del_timer(&slot->grace);
    }

    if (rc != CURLE_OK && slot->answered) {
        rc = CURLE_OK;
    }

    ngx_queue_insert_tail(&ngx_mdm_apns.free, &slot->queue);

    connects = 0;
    (void) curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects);

    if (ngx_mdm_apns.shm) {
        (void) ngx_atomic_fetch_add(&ngx_mdm_apns.shm->in_flight, -1);
        (void) ngx_atomic_fetch_add(&ngx_mdm_apns.shm->connections,
                                    connects);
    }

    if (rc != CURLE_OK) {
        err = ngx_mdm_curl_error(easy, rc);

        /* a lost connection fails every stream on it: log it once */
        if (ngx_mdm_apns.error_logged != ngx_time()) {
            ngx_mdm_apns.error_logged = ngx_time();
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                          "mdm apns push to %V failed, will retry: %s",
                          &ngx_mdm_apns.amcf->endpoint, err);
        }

        ngx_mdm_apns_result(item, ngx_mdm_apns_retry, (u_char *) err,
                            ngx_strlen(err));

    } else {
        status = 0;
        (void) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

        ngx_mdm_apns_answer(slot, item, status);
    }

    ngx_mdm_apns_dispatch();
    ngx_mdm_apns_claim();
}


static void
ngx_mdm_apns_answer(ngx_mdm_apns_slot_t *slot, ngx_mdm_apns_item_t *item,
    long status)
{
    u_char                 *detail, buf[NGX_MDM_APNS_DETAIL_MAX];
    size_t                  i, len;
    json_t                 *root, *reason;
    const char             *s;
    ngx_mdm_apns_cert_t    *cert;
    ngx_mdm_apns_answer_t  *a;

    if (status == 200) {
        ngx_mdm_apns_result(item, ngx_mdm_apns_sent, slot->apns_id,
                            slot->apns_id_len);
        return;
    }

    /* {"reason": "BadDeviceToken", "timestamp": ...} */

    s = NULL;
    root = json_loadb((char *) slot->body, slot->body_len, 0, NULL);

    if (root) {
        reason = json_object_get(root, "reason");
        s = json_is_string(reason) ? json_string_value(reason) : NULL;
    }

    if (s && *s) {
        len = ngx_min(ngx_strlen(s), sizeof(buf));

        for (i = 0; i < len; i++) {
            buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        }

    } else {
        len = ngx_snprintf(buf, sizeof(buf), "HTTP %l", status) - buf;
    }

    if (root) {
        json_decref(root);
    }

    detail = buf;

    for (a = ngx_mdm_apns_answers; /* void */; a++) {
        if ((ngx_uint_t) status < a->status_min
            || (ngx_uint_t) status > a->status_max)
        {
            continue;
        }

        if (a->reason == NULL
            || (ngx_strlen(a->reason) == len
                && ngx_strncmp(a->reason, detail, len) == 0))
        {
            break;
        }
    }

    cert = item->cert;

    if (a->certificate) {
        if (ngx_mdm_apns.shm) {
            (void) ngx_atomic_fetch_add(
                       &ngx_mdm_apns.shm->certificate_errors, 1);
            ngx_mdm_apns.shm->certificate_error = 1;
            ngx_mdm_apns.shm->certificate_error_at = ngx_time();
        }

        if (cert->logged != ngx_time()) {
            cert->logged = ngx_time();
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                          "mdm apns refused the push certificate \"%V\" "
                          "for topic \"%V\": %l %*s; renew or replace it "
                          "and reload", &cert->cert_file, &cert->topic,
                          status, len, detail);
        }

    } else if (a->outcome == ngx_mdm_apns_failed) {
        i = ngx_min(item->token.len, 8);
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                      "mdm apns refused the push to enrollment \"%V\" "
                      "(token %*s...): %l %*s", &item->id, i,
                      item->token.data, status, len, detail);
    }

    ngx_mdm_apns_result(item, a->outcome, detail, len);
}


/*
 * An item's outcome.  Retries back off exponentially from the configured
 * minimum, with jitter (half fixed, half random), up to the maximum, and
 * give up after the configured attempts.
 */

static void
ngx_mdm_apns_result(ngx_mdm_apns_item_t *item,
    ngx_mdm_apns_outcome_e outcome, u_char *detail, size_t len)
{
    size_t                          i;
    ngx_uint_t                      shift;
    ngx_msec_t                      delay;
    ngx_mdm_apns_shm_t             *shm;
    ngx_mdm_apns_batch_t           *batch;
    ngx_http_mdm_apns_main_conf_t  *amcf;

    amcf = ngx_mdm_apns.amcf;
    shm = ngx_mdm_apns.shm;
    batch = item->batch;

    /* printable ASCII only: it goes to the log and into JSON as is */

    len = ngx_min(len, NGX_MDM_APNS_DETAIL_MAX);

    item->detail.data = ngx_pnalloc(batch->pool, len);
    if (item->detail.data) {
        item->detail.len = len;

        for (i = 0; i < len; i++) {
            item->detail.data[i] = (detail[i] >= 0x20 && detail[i] < 0x7f)
                                   ? detail[i] : '?';
        }
    }

    delay = 0;

    if (outcome == ngx_mdm_apns_retry
        && (ngx_uint_t) item->attempts >= amcf->max_attempts)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                      "mdm apns gave up pushing to enrollment \"%V\" after "
                      "%i attempts: %V", &item->id, item->attempts,
                      &item->detail);
        outcome = ngx_mdm_apns_failed;
    }

    switch (outcome) {

    case ngx_mdm_apns_sent:
        /* requested again while in flight: once more, after the window */
        delay = amcf->coalesce;

        if (shm) {
            (void) ngx_atomic_fetch_add(&shm->sent, 1);
            shm->last_sent_at = ngx_time();
            shm->certificate_error = 0;
        }
        break;

    case ngx_mdm_apns_invalid:
        if (shm) {
            (void) ngx_atomic_fetch_add(&shm->invalid_tokens, 1);
            (void) ngx_atomic_fetch_add(&shm->failed, 1);
        }
        break;

    case ngx_mdm_apns_retry:
        shift = ngx_min((ngx_uint_t) ngx_max(item->attempts, 1) - 1, 20);
        delay = ngx_min(amcf->backoff_min << shift, amcf->backoff_max);
        delay = delay / 2 + (ngx_msec_t) ngx_random() % (delay / 2 + 1);

        if (shm) {
            (void) ngx_atomic_fetch_add(&shm->retried, 1);
        }
        break;

    default: /* ngx_mdm_apns_failed */
        if (shm) {
            (void) ngx_atomic_fetch_add(&shm->failed, 1);
        }
        break;
    }

    item->outcome = outcome;
    item->delay = delay;

    if (--batch->left == 0) {
        ngx_mdm_apns.nbatches--;
        ngx_mdm_apns_finish(batch);
    }
}


/* the batch's answers, in one statement */

static void
ngx_mdm_apns_finish(ngx_mdm_apns_batch_t *batch)
{
    u_char               *p;
    size_t                len;
    ngx_uint_t            i;
    const char           *values[2];
    ngx_mdm_pg_args_t     args;
    ngx_mdm_apns_item_t  *item;

    static const char     outcomes[] = "sirf";

    if (batch->results.data == NULL) {
        len = 2;
        item = batch->items;

        for (i = 0; i < batch->nitems; i++) {
            len += sizeof("{\"i\":\"\",\"o\":\"s\",\"d\":\"\",\"n\":,\"w\":},")
                   + 2 * NGX_INT_T_LEN
                   + item[i].id.len
                   + ngx_escape_json(NULL, item[i].id.data, item[i].id.len)
                   + item[i].detail.len
                   + ngx_escape_json(NULL, item[i].detail.data,
                                     item[i].detail.len);
        }

        p = ngx_pnalloc(batch->pool, len);
        if (p == NULL) {
            ngx_destroy_pool(batch->pool);
            return;
        }

        batch->results.data = p;
        *p++ = '[';

        for (i = 0; i < batch->nitems; i++) {
            p = ngx_sprintf(p, "%s{\"i\":\"", i ? "," : "");
            p = (u_char *) ngx_escape_json(p, item[i].id.data,
                                           item[i].id.len);
            p = ngx_sprintf(p, "\",\"o\":\"%c\",\"d\":\"",
                            outcomes[item[i].outcome]);
            p = (u_char *) ngx_escape_json(p, item[i].detail.data,
                                           item[i].detail.len);
            p = ngx_sprintf(p, "\",\"n\":%i,\"w\":%M}", item[i].requests,
                            item[i].delay);
        }

        *p++ = ']';
        *p++ = '\0';
        batch->results.len = p - batch->results.data;

        ngx_mdm_apns.nfinishing++;
    }

    values[0] = (char *) ngx_mdm_apns.claimer;
    values[1] = (char *) batch->results.data;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_APNS_SQL_FINISH;
    args.nparams = 2;
    args.values = values;
    args.handler = ngx_mdm_apns_finished;
    args.data = batch;
    args.log = ngx_mdm_apns.log;

    if (ngx_mdm_pg_query(&args) == NULL) {
        ngx_mdm_apns_finished(batch, NULL, NGX_DECLINED);
    }
}


static void
ngx_mdm_apns_finish_retry(ngx_event_t *ev)
{
    ngx_mdm_apns_finish(ev->data);
}


static void
ngx_mdm_apns_finished(void *data, PGresult *res, ngx_int_t rc)
{
    ngx_mdm_apns_batch_t  *batch = data;

    ngx_int_t  delay;


    if (rc == NGX_DECLINED
        && ++batch->tries < NGX_MDM_APNS_FINISH_TRIES
        && !ngx_exiting && !ngx_quit && !ngx_terminate)
    {
        /* no database now: try again, well within the lease */
        ngx_add_timer(&batch->retry, 1000);
        return;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                      "mdm apns cannot record %ui push results, their "
                      "requests are taken again when the lease ends: %s",
                      batch->nitems,
                      res ? PQresultErrorMessage(res) : "no database");

    } else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        delay = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                         PQgetlength(res, 0, 0));
        ngx_mdm_apns_wake_at(delay > 0 ? (ngx_msec_t) delay : 0);
    }

    ngx_mdm_apns.nfinishing--;

    if (batch->retry.timer_set) {
        ngx_del_timer(&batch->retry);
    }

    ngx_destroy_pool(batch->pool);

    ngx_mdm_apns_claim();
}


static void
ngx_mdm_apns_expiry_handler(ngx_event_t *ev)
{
    time_t                          left;
    ngx_uint_t                      i;
    ngx_mdm_apns_cert_t            *cert;
    ngx_http_mdm_apns_main_conf_t  *amcf;

    ngx_add_timer(ev, NGX_MDM_APNS_EXPIRY_CHECK);

    amcf = ngx_mdm_apns.amcf;
    cert = amcf->certs.elts;

    for (i = 0; i < amcf->certs.nelts; i++) {
        left = cert[i].not_after - ngx_time();

        if (left <= 0) {
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                          "mdm push certificate \"%V\" for topic \"%V\" "
                          "has expired: APNs will refuse it",
                          &cert[i].cert_file, &cert[i].topic);

        } else if (left < amcf->expiry_warning) {
            ngx_log_error(NGX_LOG_WARN, ngx_mdm_apns.log, 0,
                          "mdm push certificate \"%V\" for topic \"%V\" "
                          "expires in %T days: renew it with the same topic",
                          &cert[i].cert_file, &cert[i].topic, left / 86400);
        }
    }
}


static void
ngx_mdm_apns_sweep_handler(ngx_event_t *ev)
{
    u_char             interval[NGX_INT_T_LEN + 1];
    const char        *values[1];
    ngx_mdm_pg_args_t  args;

    ngx_add_timer(ev, ngx_mdm_apns.amcf->sweep_interval);

    if (ngx_mdm_apns.sweeping) {
        return;
    }

    *ngx_sprintf(interval, "%M", ngx_mdm_apns.amcf->sweep_interval) = '\0';
    values[0] = (char *) interval;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_APNS_SQL_SWEEP;
    args.nparams = 1;
    args.values = values;
    args.handler = ngx_mdm_apns_swept;
    args.log = ngx_mdm_apns.log;

    if (ngx_mdm_pg_query(&args)) {
        ngx_mdm_apns.sweeping = 1;
    }
}


static void
ngx_mdm_apns_swept(void *data, PGresult *res, ngx_int_t rc)
{
    char  *n;

    ngx_mdm_apns.sweeping = 0;

    if (rc != NGX_OK) {
        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_apns.log, 0,
                          "mdm apns sweep failed: %s",
                          PQresultErrorMessage(res));
        }
        return;
    }

    n = PQcmdTuples(res);

    if (n[0] && !(n[0] == '0' && n[1] == '\0')) {
        ngx_log_error(NGX_LOG_INFO, ngx_mdm_apns.log, 0,
                      "mdm apns sweep: %s silent enrollments with pending "
                      "commands to push again", n);
        ngx_mdm_apns_wake_now();
    }
}
