
/*
 * The Idle cache of a worker (README.md, "Check-in and commands",
 * "Performance"): which enrollments are known to have nothing queued, with
 * the certificate that proved it, so that their next Idle is answered
 * without a database round trip.
 *
 * An entry is made only from the database's own answer to an Idle: the
 * binding was checked and nothing was pending, not even a held command
 * (the Idle released the holds first).  It says so until one of:
 *   - a notification on the channel mdm_checkin (005_checkin.sql: new
 *     or re-queued commands name their enrollments; revocations and binding
 *     changes drop everything), which PostgreSQL sends after the commit;
 *   - this worker sends any other message of the enrollment to the
 *     database;
 *   - its time is up (mdm_checkin_cache_ttl, or the certificate's expiry);
 *   - the LISTEN connection is lost (everything is dropped, and nothing is
 *     kept until LISTEN is in effect again).
 *
 * Races: an Idle's query may read the queue before an enqueue commits and
 * its answer arrive after the notification.  Every invalidation bumps a
 * generation; an Idle records the generation when its query goes out and
 * fills the cache only if neither its enrollment nor the whole cache was
 * invalidated since (an invalidated enrollment keeps an entry, a
 * "tombstone", for that; evicting one counts as invalidating everything
 * for the queries under way).
 *
 * A notification reaches the worker some time after the commit that sent
 * it: an enqueuer may see its commit, and a device its push, before the
 * worker has heard of it.  So a hit is answered only after a "sync", a
 * round trip on the LISTEN connection that began after the request came
 * (ngx_mdm_pg_listen_sync: PostgreSQL sends the notifications of every
 * transaction committed before a query ahead of its answer), and the entry
 * is looked up again then.  One sync serves every request that came before
 * it was sent: an empty query per batch of Idles instead of a statement
 * per Idle.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_checkin_module.h"


#define NGX_MDM_CHECKIN_CACHE_CHANNEL  "mdm_checkin"


typedef struct ngx_mdm_checkin_cache_entry_s  ngx_mdm_checkin_cache_entry_t;

struct ngx_mdm_checkin_cache_entry_s {
    ngx_mdm_checkin_cache_entry_t  *next;       /* in its bucket */
    ngx_queue_t                     lru;
    ngx_uint_t                      hash;
    uint64_t                        inval_gen;  /* last invalidated */
    ngx_msec_t                      expires;    /* of "empty" */
    ngx_msec_t                      seen;       /* last_seen sent */
    u_char                          sha256[NGX_MDM_X509_SHA256_LEN];
    unsigned                        empty:1;
    size_t                          len;
    u_char                          id[1];
};


typedef struct {
    ngx_mdm_checkin_cache_entry_t **buckets;
    ngx_uint_t                      mask;
    ngx_uint_t                      n;
    ngx_uint_t                      max;
    ngx_queue_t                     lru;        /* most recent first */
    uint64_t                        gen;
    uint64_t                        flush_gen;
    ngx_msec_t                      ttl;
    ngx_log_t                      *log;
    ngx_uint_t                      hits;
    ngx_uint_t                      fills;
    ngx_queue_t                     synced;     /* the sync under way
                                                   covers them */
    ngx_queue_t                     unsynced;   /* came after it was sent */
    unsigned                        enabled:1;
    unsigned                        syncing:1;
} ngx_mdm_checkin_cache_t;


static ngx_mdm_checkin_cache_entry_t *ngx_mdm_checkin_cache_find(
    const u_char *id, size_t len, ngx_uint_t hash);
static ngx_mdm_checkin_cache_entry_t *ngx_mdm_checkin_cache_add(
    const u_char *id, size_t len, ngx_uint_t hash);
static void ngx_mdm_checkin_cache_free(ngx_mdm_checkin_cache_entry_t *e);
static void ngx_mdm_checkin_cache_invalidate(const u_char *id, size_t len);
static void ngx_mdm_checkin_cache_flush(void);
static void ngx_mdm_checkin_cache_notify(void *data, const char *payload);
static void ngx_mdm_checkin_cache_synced(void *data, ngx_int_t rc);
static void ngx_mdm_checkin_cache_resume(ngx_queue_t *list, ngx_int_t rc);


static ngx_mdm_checkin_cache_t  ngx_mdm_checkin_cache;


ngx_int_t
ngx_mdm_checkin_cache_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                         size;
    ngx_mdm_checkin_cache_t           *cache;
    ngx_http_mdm_core_main_conf_t     *cmcf;
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    cache = &ngx_mdm_checkin_cache;
    ngx_memzero(cache, sizeof(ngx_mdm_checkin_cache_t));

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_mdm_checkin_module);
    cmcf = ngx_mdm_core_conf();

    if (mcf == NULL || !mcf->used || !mcf->cache || cmcf == NULL) {
        return NGX_OK;
    }

    /* last_seen needs Redis when the database is not asked */

    if (cmcf->redis.len == 0) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "mdm check-in: no Idle cache without mdm_redis");
        return NGX_OK;
    }

    for (size = 64; size < mcf->cache_size; size <<= 1) { /* void */ }

    /*
     * calloc(), not ngx_calloc() (malloc() and memset()): zeroed pages that
     * take no memory until a bucket on them is used
     */
    cache->buckets = calloc(size, sizeof(ngx_mdm_checkin_cache_entry_t *));
    if (cache->buckets == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "calloc(%uz) failed",
                      size * sizeof(ngx_mdm_checkin_cache_entry_t *));
        return NGX_ERROR;
    }

    cache->mask = size - 1;
    cache->max = mcf->cache_size;
    cache->ttl = mcf->cache_ttl;
    cache->log = cycle->log;
    cache->gen = 1;
    cache->flush_gen = 1;
    ngx_queue_init(&cache->lru);
    ngx_queue_init(&cache->synced);
    ngx_queue_init(&cache->unsynced);

    if (ngx_mdm_pg_listen(NGX_MDM_CHECKIN_CACHE_CHANNEL,
                          ngx_mdm_checkin_cache_notify,
                          ngx_mdm_checkin_cache_synced, NULL)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "mdm check-in: no Idle cache: cannot LISTEN");
        return NGX_OK;
    }

    cache->enabled = 1;

    return NGX_OK;
}


/* the cache may answer: LISTEN is in effect */

ngx_uint_t
ngx_mdm_checkin_cache_usable(void)
{
    return ngx_mdm_checkin_cache.enabled && ngx_mdm_pg_listening();
}


/*
 * An Idle of this enrollment with this certificate: NGX_OK when nothing is
 * queued for it (answer at once), else NGX_DECLINED.  *last_seen is set
 * when the last_seen write-behind should hear of it (at most once a
 * second per enrollment).
 */

ngx_int_t
ngx_mdm_checkin_cache_lookup(const u_char *id, size_t len,
    const u_char *sha256, ngx_uint_t *last_seen)
{
    ngx_uint_t                      hash;
    ngx_mdm_checkin_cache_t        *cache;
    ngx_mdm_checkin_cache_entry_t  *e;

    cache = &ngx_mdm_checkin_cache;

    if (!ngx_mdm_checkin_cache_usable()) {
        return NGX_DECLINED;
    }

    /* an invalidation that has arrived comes first */
    ngx_mdm_pg_listen_poll();

    if (!ngx_mdm_pg_listening()) {
        return NGX_DECLINED;
    }

    hash = ngx_hash_key((u_char *) id, len);
    e = ngx_mdm_checkin_cache_find(id, len, hash);

    if (e == NULL
        || !e->empty
        || (ngx_msec_int_t) (e->expires - ngx_current_msec) <= 0
        || ngx_memcmp(e->sha256, sha256, NGX_MDM_X509_SHA256_LEN) != 0)
    {
        return NGX_DECLINED;
    }

    ngx_queue_remove(&e->lru);
    ngx_queue_insert_head(&cache->lru, &e->lru);

    *last_seen = 0;

    if (ngx_current_msec - e->seen >= 1000) {
        e->seen = ngx_current_msec;
        *last_seen = 1;
    }

    cache->hits++;

    return NGX_OK;
}


/* the generation a query starts at: 0 when it may not fill the cache */

uint64_t
ngx_mdm_checkin_cache_begin(void)
{
    if (!ngx_mdm_checkin_cache_usable()) {
        return 0;
    }

    return ngx_mdm_checkin_cache.gen;
}


/*
 * The database answered an Idle that began at generation gen: nothing is
 * queued.  ttl: how long the certificate stays acceptable, in seconds.
 */

void
ngx_mdm_checkin_cache_fill(const u_char *id, size_t len,
    const u_char *sha256, uint64_t gen, time_t ttl)
{
    ngx_uint_t                      hash;
    ngx_msec_t                      msec;
    ngx_mdm_checkin_cache_t        *cache;
    ngx_mdm_checkin_cache_entry_t  *e;

    cache = &ngx_mdm_checkin_cache;

    if (gen == 0 || gen < cache->flush_gen || !ngx_mdm_checkin_cache_usable()
        || ttl <= 0)
    {
        return;
    }

    hash = ngx_hash_key((u_char *) id, len);
    e = ngx_mdm_checkin_cache_find(id, len, hash);

    if (e) {
        if (e->inval_gen > gen) {
            return;
        }

        ngx_queue_remove(&e->lru);
        ngx_queue_insert_head(&cache->lru, &e->lru);

    } else {
        e = ngx_mdm_checkin_cache_add(id, len, hash);
        if (e == NULL) {
            return;
        }

        e->seen = ngx_current_msec;
    }

    msec = cache->ttl;

    if (ttl < (time_t) (msec / 1000)) {
        msec = (ngx_msec_t) ttl * 1000;
    }

    ngx_memcpy(e->sha256, sha256, NGX_MDM_X509_SHA256_LEN);
    e->expires = ngx_current_msec + msec;
    e->empty = 1;

    cache->fills++;
}


/* this worker sends a message of the enrollment to the database */

void
ngx_mdm_checkin_cache_drop(const u_char *id, size_t len)
{
    if (ngx_mdm_checkin_cache.enabled) {
        ngx_mdm_checkin_cache_invalidate(id, len);
    }
}


static ngx_mdm_checkin_cache_entry_t *
ngx_mdm_checkin_cache_find(const u_char *id, size_t len, ngx_uint_t hash)
{
    ngx_mdm_checkin_cache_entry_t  *e;

    for (e = ngx_mdm_checkin_cache.buckets[hash & ngx_mdm_checkin_cache.mask];
         e;
         e = e->next)
    {
        if (e->hash == hash && e->len == len
            && ngx_memcmp(e->id, id, len) == 0)
        {
            return e;
        }
    }

    return NULL;
}


static ngx_mdm_checkin_cache_entry_t *
ngx_mdm_checkin_cache_add(const u_char *id, size_t len, ngx_uint_t hash)
{
    ngx_queue_t                    *q;
    ngx_mdm_checkin_cache_t        *cache;
    ngx_mdm_checkin_cache_entry_t  *e, **b;

    cache = &ngx_mdm_checkin_cache;

    if (cache->n >= cache->max) {
        q = ngx_queue_last(&cache->lru);
        e = ngx_queue_data(q, ngx_mdm_checkin_cache_entry_t, lru);

        /* a query under way may have begun before this invalidation */
        if (e->inval_gen > cache->flush_gen) {
            cache->flush_gen = e->inval_gen;
        }

        ngx_mdm_checkin_cache_free(e);
    }

    e = ngx_alloc(offsetof(ngx_mdm_checkin_cache_entry_t, id) + len,
                  cache->log);
    if (e == NULL) {
        return NULL;
    }

    ngx_memzero(e, offsetof(ngx_mdm_checkin_cache_entry_t, id));

    e->hash = hash;
    e->len = len;
    ngx_memcpy(e->id, id, len);

    b = &cache->buckets[hash & cache->mask];
    e->next = *b;
    *b = e;

    ngx_queue_insert_head(&cache->lru, &e->lru);
    cache->n++;

    return e;
}


static void
ngx_mdm_checkin_cache_free(ngx_mdm_checkin_cache_entry_t *e)
{
    ngx_mdm_checkin_cache_t        *cache;
    ngx_mdm_checkin_cache_entry_t **b;

    cache = &ngx_mdm_checkin_cache;

    for (b = &cache->buckets[e->hash & cache->mask]; *b; b = &(*b)->next) {
        if (*b == e) {
            *b = e->next;
            break;
        }
    }

    ngx_queue_remove(&e->lru);
    cache->n--;

    ngx_free(e);
}


static void
ngx_mdm_checkin_cache_invalidate(const u_char *id, size_t len)
{
    ngx_uint_t                      hash;
    ngx_mdm_checkin_cache_t        *cache;
    ngx_mdm_checkin_cache_entry_t  *e;

    cache = &ngx_mdm_checkin_cache;

    cache->gen++;

    hash = ngx_hash_key((u_char *) id, len);
    e = ngx_mdm_checkin_cache_find(id, len, hash);

    if (e == NULL) {
        /* a tombstone: keeps a query under way from filling */
        e = ngx_mdm_checkin_cache_add(id, len, hash);

        if (e == NULL) {
            cache->flush_gen = cache->gen;
            return;
        }
    }

    e->empty = 0;
    e->inval_gen = cache->gen;
}


static void
ngx_mdm_checkin_cache_flush(void)
{
    ngx_queue_t                    *q;
    ngx_mdm_checkin_cache_t        *cache;

    cache = &ngx_mdm_checkin_cache;

    cache->gen++;
    cache->flush_gen = cache->gen;

    while (!ngx_queue_empty(&cache->lru)) {
        q = ngx_queue_head(&cache->lru);
        ngx_mdm_checkin_cache_free(ngx_queue_data(q,
                                       ngx_mdm_checkin_cache_entry_t, lru));
    }
}


/* a notification: enrollment ids one a line, "*" (or a loss): everything */

static void
ngx_mdm_checkin_cache_notify(void *data, const char *payload)
{
    u_char  *p, *last, *nl;

    if (!ngx_mdm_checkin_cache.enabled) {
        return;
    }

    if (payload == NULL || payload[0] == '\0'
        || (payload[0] == '*' && payload[1] == '\0'))
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_mdm_checkin_cache.log, 0,
                       "mdm check-in cache: flush (%s)",
                       payload ? payload : "listen state");
        ngx_mdm_checkin_cache_flush();
        return;
    }

    p = (u_char *) payload;
    last = p + ngx_strlen(payload);

    while (p < last) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        if (nl > p) {
            ngx_mdm_checkin_cache_invalidate(p, nl - p);
        }

        p = nl + 1;
    }
}


/*
 * A hit waits for a sync that begins after it: NGX_OK (r is kept until
 * ngx_http_mdm_checkin_idle_synced() is called), or NGX_DECLINED (no sync
 * possible: ask the database).
 */

ngx_int_t
ngx_mdm_checkin_cache_wait(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_mdm_checkin_cache_t  *cache;

    cache = &ngx_mdm_checkin_cache;

    ctx->request = r;

    if (cache->syncing) {
        ngx_queue_insert_tail(&cache->unsynced, &ctx->sync_link);
        r->main->count++;
        return NGX_OK;
    }

    if (ngx_mdm_pg_listen_sync() != NGX_OK) {
        return NGX_DECLINED;
    }

    cache->syncing = 1;
    ngx_queue_insert_tail(&cache->synced, &ctx->sync_link);
    r->main->count++;

    return NGX_OK;
}


static void
ngx_mdm_checkin_cache_synced(void *data, ngx_int_t rc)
{
    ngx_queue_t               done;
    ngx_mdm_checkin_cache_t  *cache;

    cache = &ngx_mdm_checkin_cache;
    cache->syncing = 0;

    ngx_queue_init(&done);

    if (!ngx_queue_empty(&cache->synced)) {
        ngx_queue_add(&done, &cache->synced);
        ngx_queue_init(&cache->synced);
    }

    /* the next batch's sync goes out first */

    if (!ngx_queue_empty(&cache->unsynced)) {
        ngx_queue_add(&cache->synced, &cache->unsynced);
        ngx_queue_init(&cache->unsynced);

        if (rc == NGX_OK && ngx_mdm_pg_listen_sync() == NGX_OK) {
            cache->syncing = 1;

        } else {
            ngx_queue_add(&done, &cache->synced);
            ngx_queue_init(&cache->synced);
        }
    }

    ngx_mdm_checkin_cache_resume(&done, rc);
}


static void
ngx_mdm_checkin_cache_resume(ngx_queue_t *list, ngx_int_t rc)
{
    ngx_queue_t                 *q;
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_mdm_checkin_ctx_t  *ctx;

    while (!ngx_queue_empty(list)) {
        q = ngx_queue_head(list);
        ngx_queue_remove(q);

        ctx = ngx_queue_data(q, ngx_http_mdm_checkin_ctx_t, sync_link);
        r = ctx->request;
        c = r->connection;

        ngx_http_mdm_checkin_idle_synced(r, ctx, rc);
        ngx_http_run_posted_requests(c);
    }
}
