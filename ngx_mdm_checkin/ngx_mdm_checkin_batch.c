
/*
 * Check-in steps in batches (README.md, "Check-in and commands",
 * "Performance"): command reports, Authenticate and TokenUpdate.  For each
 * of these steps a worker keeps at most mdm_checkin_batch statements in
 * flight; a request that comes while they all are waits, and every
 * request of that step waiting when one returns goes in the next, up to
 * NGX_MDM_CHECKIN_BATCH_MAX: one statement, one transaction, one commit
 * (one WAL flush) for all of them.  For a report:
 *
 *   SELECT ... FROM unnest($1::bytea[], ...) WITH ORDINALITY AS a
 *   CROSS JOIN LATERAL mdm_command_report(a.sha256, ...) AS r
 *
 * the same function, with the same arguments, as a request sent alone; a
 * request alone is sent alone (the step's prepared single statement).
 * Each request gets its own row; an error fails the statement and so every
 * request in it (a deadlock or serialization failure: 503, nothing was
 * written, the devices retry).  Two requests of one enrollment never
 * share a batch (the second waits for the next, so with one statement in
 * flight they run in the order they came in; a device sends its next
 * request only once it has the answer to the last anyway).
 *
 * The arrays are sent in PostgreSQL's binary array format (array_recv):
 * no quoting, and a result plist goes as its bytes.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_checkin_module.h"


#define NGX_MDM_CHECKIN_BATCH_MAX    64
/* a batch takes no more requests once their bodies pass this */
#define NGX_MDM_CHECKIN_BATCH_BYTES  (4 * 1024 * 1024)
#define NGX_MDM_CHECKIN_BATCHERS     8

/*
 * The longest a request waits for a statement in flight: then it goes
 * anyway, in a statement of its own (with whatever waits with it), so
 * that a slow statement (a row lock held elsewhere, a result of megabytes)
 * does not hold back every request of the worker.
 */
#define NGX_MDM_CHECKIN_BATCH_WAIT   10

#define NGX_MDM_PG_BYTEA_OID         17
#define NGX_MDM_PG_TEXT_OID          25


/* one per step that batches */
typedef struct {
    const ngx_http_mdm_checkin_step_t  *step;
    ngx_queue_t                         waiting;
    ngx_uint_t                          in_flight;
    ngx_event_t                         stalled;   /* the wait's bound */
} ngx_mdm_checkin_batcher_t;


typedef struct {
    ngx_mdm_checkin_batcher_t    *batcher;
    ngx_uint_t                    n;
    ngx_http_mdm_checkin_ctx_t   *items[NGX_MDM_CHECKIN_BATCH_MAX];
    u_char                       *arrays[NGX_MDM_CHECKIN_MAX_PARAMS];
    int                           lengths[NGX_MDM_CHECKIN_MAX_PARAMS];
    unsigned                      sent:1;
} ngx_mdm_checkin_batch_t;


typedef struct {
    ngx_mdm_checkin_batcher_t     batchers[NGX_MDM_CHECKIN_BATCHERS];
    ngx_uint_t                    nbatchers;
    ngx_uint_t                    max;
    ngx_uint_t                    prepare;
    unsigned                      enabled:1;
} ngx_mdm_checkin_batching_t;


static void ngx_mdm_checkin_batch_send(ngx_mdm_checkin_batcher_t *bt,
    ngx_uint_t force);
static void ngx_mdm_checkin_batch_stalled(ngx_event_t *ev);
static ngx_int_t ngx_mdm_checkin_batch_query(ngx_mdm_checkin_batch_t *b);
static ngx_int_t ngx_mdm_checkin_batch_arrays(ngx_mdm_checkin_batch_t *b);
static void ngx_mdm_checkin_batch_done(void *data, PGresult *res,
    ngx_int_t rc);
static void ngx_http_mdm_checkin_batch_cleanup(void *data);


static ngx_mdm_checkin_batching_t  ngx_mdm_checkin_batching;


ngx_int_t
ngx_mdm_checkin_batch_init_process(ngx_cycle_t *cycle)
{
    ngx_mdm_checkin_batching_t        *bg;
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    bg = &ngx_mdm_checkin_batching;
    ngx_memzero(bg, sizeof(ngx_mdm_checkin_batching_t));

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_mdm_checkin_module);
    if (mcf == NULL || !mcf->used || mcf->batch == 0) {
        return NGX_OK;
    }

    bg->max = mcf->batch;
    bg->prepare = mcf->prepare;
    bg->enabled = 1;

    return NGX_OK;
}


ngx_uint_t
ngx_mdm_checkin_batch_usable(const ngx_http_mdm_checkin_step_t *step)
{
    return ngx_mdm_checkin_batching.enabled && step->batch_sql != NULL;
}


static ngx_mdm_checkin_batcher_t *
ngx_mdm_checkin_batcher(const ngx_http_mdm_checkin_step_t *step)
{
    ngx_uint_t                   i;
    ngx_mdm_checkin_batcher_t   *bt;
    ngx_mdm_checkin_batching_t  *bg;

    bg = &ngx_mdm_checkin_batching;

    for (i = 0; i < bg->nbatchers; i++) {
        if (bg->batchers[i].step == step) {
            return &bg->batchers[i];
        }
    }

    if (bg->nbatchers == NGX_MDM_CHECKIN_BATCHERS) {
        return NULL;
    }

    bt = &bg->batchers[bg->nbatchers++];
    bt->step = step;
    ngx_queue_init(&bt->waiting);

    bt->stalled.handler = ngx_mdm_checkin_batch_stalled;
    bt->stalled.data = bt;
    bt->stalled.log = ngx_cycle->log;
    bt->stalled.cancelable = 1;

    return bt;
}


/*
 * The request's parameters are in ctx (its step's, in their order): send
 * it now if a statement of its step is free, else wait for one.
 */

ngx_int_t
ngx_http_mdm_checkin_batch_add(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_pool_cleanup_t         *cln;
    ngx_mdm_checkin_batch_t    *b;
    ngx_mdm_checkin_batcher_t  *bt;

    bt = ngx_mdm_checkin_batcher(ctx->step);
    if (bt == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_mdm_checkin_batch_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->batch = NULL;
    ctx->row = 0;

    if (bt->in_flight < ngx_mdm_checkin_batching.max
        && ngx_queue_empty(&bt->waiting))
    {
        b = ngx_calloc(sizeof(ngx_mdm_checkin_batch_t), ngx_cycle->log);
        if (b == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->batcher = bt;
        b->items[0] = ctx;
        b->n = 1;

        if (ngx_mdm_checkin_batch_query(b) != NGX_OK) {
            ngx_free(b);
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm postgres unavailable, answering 503");
            return ngx_http_mdm_unavailable(r);
        }

        ctx->batch = b;

    } else {
        ngx_queue_insert_tail(&bt->waiting, &ctx->batch_link);

        if (!bt->stalled.timer_set) {
            ngx_add_timer(&bt->stalled, NGX_MDM_CHECKIN_BATCH_WAIT);
        }
    }

    ctx->batched = 1;
    r->main->count++;

    return NGX_DONE;
}


/*
 * The first request waiting has waited NGX_MDM_CHECKIN_BATCH_WAIT: the
 * statements in flight are slow; what waits goes now, in one more.
 */

static void
ngx_mdm_checkin_batch_stalled(ngx_event_t *ev)
{
    ngx_mdm_checkin_batcher_t  *bt = ev->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "mdm check-in: %s statements slow, one more",
                   bt->step->name);

    ngx_mdm_checkin_batch_send(bt, 1);
}


/* statements of this step are free (or slow: force): send what waits */

static void
ngx_mdm_checkin_batch_send(ngx_mdm_checkin_batcher_t *bt, ngx_uint_t force)
{
    size_t                       bytes;
    ngx_uint_t                   i;
    ngx_queue_t                 *q, *next;
    ngx_http_request_t          *r;
    ngx_mdm_checkin_batch_t     *b;
    ngx_http_mdm_checkin_ctx_t  *ctx, *other;

    while ((force || bt->in_flight < ngx_mdm_checkin_batching.max)
           && !ngx_queue_empty(&bt->waiting))
    {
        force = 0;

        b = ngx_calloc(sizeof(ngx_mdm_checkin_batch_t), ngx_cycle->log);

        if (b == NULL) {
            /* the first one waiting fails, the others wait on */
            q = ngx_queue_head(&bt->waiting);
            ngx_queue_remove(q);
            ctx = ngx_queue_data(q, ngx_http_mdm_checkin_ctx_t, batch_link);
            ctx->batched = 0;
            r = ctx->request;
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            ngx_http_run_posted_requests(r->connection);
            continue;
        }

        b->batcher = bt;
        bytes = 0;

        /* in arrival order, one request per enrollment, up to a size */

        for (q = ngx_queue_head(&bt->waiting);
             q != ngx_queue_sentinel(&bt->waiting)
             && b->n < NGX_MDM_CHECKIN_BATCH_MAX;
             q = next)
        {
            next = ngx_queue_next(q);
            ctx = ngx_queue_data(q, ngx_http_mdm_checkin_ctx_t, batch_link);

            if (b->n && bytes + ctx->len > NGX_MDM_CHECKIN_BATCH_BYTES) {
                break;
            }

            for (i = 0; i < b->n; i++) {
                other = b->items[i];

                if (other->msg.id.len == ctx->msg.id.len
                    && ngx_memcmp(other->msg.id.data, ctx->msg.id.data,
                                  ctx->msg.id.len)
                       == 0)
                {
                    break;
                }
            }

            if (i < b->n) {
                continue;
            }

            ngx_queue_remove(q);
            ctx->batch = b;
            ctx->row = (int) b->n;
            b->items[b->n++] = ctx;
            bytes += ctx->len;
        }

        if (ngx_mdm_checkin_batch_query(b) != NGX_OK) {
            ngx_mdm_checkin_batch_done(b, NULL, NGX_DECLINED);
        }
    }

    /* the wait of the first one left is bounded again from now */

    if (ngx_queue_empty(&bt->waiting)) {
        if (bt->stalled.timer_set) {
            ngx_del_timer(&bt->stalled);
        }

    } else {
        ngx_add_timer(&bt->stalled, NGX_MDM_CHECKIN_BATCH_WAIT);
    }
}


/* one request: its step's prepared statement; several: the arrays */

static ngx_int_t
ngx_mdm_checkin_batch_query(ngx_mdm_checkin_batch_t *b)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_mdm_pg_args_t            args;
    ngx_http_mdm_checkin_ctx_t  *ctx;
    int                          formats[NGX_MDM_CHECKIN_MAX_PARAMS];

    ctx = b->items[0];

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.result_format = 1;
    args.prepare = ngx_mdm_checkin_batching.prepare ? 1 : 0;
    args.handler = ngx_mdm_checkin_batch_done;
    args.data = b;
    args.log = ngx_cycle->log;
    args.nparams = ctx->nparams;

    if (b->n == 1) {
        args.sql = ctx->step->sql;
        args.values = ctx->values;
        args.lengths = ctx->lengths;
        args.formats = ctx->formats;

    } else {
        if (ngx_mdm_checkin_batch_arrays(b) != NGX_OK) {
            rc = NGX_ERROR;
            goto done;
        }

        for (i = 0; i < ctx->nparams; i++) {
            formats[i] = 1;
        }

        args.sql = ctx->step->batch_sql;
        args.values = (const char *const *) b->arrays;
        args.lengths = b->lengths;
        args.formats = formats;

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "mdm check-in: a batch of %ui %s", b->n,
                       ctx->step->name);
    }

    /* the pool copies the parameters */

    rc = ngx_mdm_pg_query(&args) ? NGX_OK : NGX_ERROR;

    if (rc == NGX_OK) {
        b->batcher->in_flight++;
        b->sent = 1;
    }

done:

    for (i = 0; i < NGX_MDM_CHECKIN_MAX_PARAMS; i++) {
        if (b->arrays[i]) {
            ngx_free(b->arrays[i]);
            b->arrays[i] = NULL;
        }
    }

    return rc;
}


/*
 * One binary array per column: ndim, has-null flag, element type, length,
 * lower bound, then each element as its length (-1: NULL) and bytes.
 */

static ngx_int_t
ngx_mdm_checkin_batch_arrays(ngx_mdm_checkin_batch_t *b)
{
    u_char                      *p;
    size_t                       size, len;
    uint32_t                     v, nulls, type;
    ngx_uint_t                   col, i;
    ngx_http_mdm_checkin_ctx_t  *ctx;

#define ngx_mdm_put32(p, n)                                                  \
    v = htonl((uint32_t) (n)); p = ngx_cpymem(p, &v, 4)

    for (col = 0; col < b->items[0]->nparams; col++) {
        type = b->items[0]->formats[col] ? NGX_MDM_PG_BYTEA_OID
                                         : NGX_MDM_PG_TEXT_OID;
        size = 20;
        nulls = 0;

        for (i = 0; i < b->n; i++) {
            ctx = b->items[i];
            size += 4;

            if (ctx->values[col] == NULL) {
                nulls = 1;
                continue;
            }

            size += ctx->formats[col] ? (size_t) ctx->lengths[col]
                                      : ngx_strlen(ctx->values[col]);
        }

        if (size > 0x7fffffff) {
            return NGX_ERROR;
        }

        p = ngx_alloc(size, ngx_cycle->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        b->arrays[col] = p;
        b->lengths[col] = (int) size;

        ngx_mdm_put32(p, 1);
        ngx_mdm_put32(p, nulls);
        ngx_mdm_put32(p, type);
        ngx_mdm_put32(p, b->n);
        ngx_mdm_put32(p, 1);

        for (i = 0; i < b->n; i++) {
            ctx = b->items[i];

            if (ctx->values[col] == NULL) {
                ngx_mdm_put32(p, 0xffffffff);
                continue;
            }

            len = ctx->formats[col] ? (size_t) ctx->lengths[col]
                                    : ngx_strlen(ctx->values[col]);

            ngx_mdm_put32(p, len);
            p = ngx_cpymem(p, ctx->values[col], len);
        }
    }

#undef ngx_mdm_put32

    return NGX_OK;
}


/* each request gets its row (or the statement's error) */

static void
ngx_mdm_checkin_batch_done(void *data, PGresult *res, ngx_int_t rc)
{
    ngx_mdm_checkin_batch_t *b = data;

    ngx_uint_t                   i;
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_mdm_checkin_batcher_t   *bt;
    ngx_http_mdm_checkin_ctx_t  *ctx;

    bt = b->batcher;

    if (b->sent) {
        bt->in_flight--;
    }

    if (rc == NGX_OK && PQntuples(res) != (int) b->n) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm check-in: a batch of %ui %s returned %d rows",
                      b->n, bt->step->name, PQntuples(res));
    }

    for (i = 0; i < b->n; i++) {
        ctx = b->items[i];

        if (ctx == NULL) {
            continue;       /* the request is gone */
        }

        ctx->batch = NULL;
        ctx->batched = 0;
        r = ctx->request;
        c = r->connection;

        if (rc == NGX_DECLINED) {
            if (ctx->sent) {
                ngx_mdm_checkin_delivery_untake((ngx_str_t *) &ctx->msg.id,
                                        (ngx_str_t *) &ctx->msg.command_uuid,
                                        ctx->sent, ctx->sent_at);
                ctx->sent = 0;
            }

            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "mdm postgres unavailable, answering 503");
            ngx_http_finalize_request(r, ngx_http_mdm_unavailable(r));

        } else {
            ngx_http_mdm_checkin_db_done(r, res, rc);
        }

        ngx_http_run_posted_requests(c);
    }

    /* a batch that never went: its sender goes on with what waits */

    if (b->sent) {
        ngx_free(b);
        ngx_mdm_checkin_batch_send(bt, 0);
        return;
    }

    ngx_free(b);
}


/* the request ends before its batch: forget it */

static void
ngx_http_mdm_checkin_batch_cleanup(void *data)
{
    ngx_http_mdm_checkin_ctx_t *ctx = data;

    ngx_mdm_checkin_batch_t  *b;

    if (!ctx->batched) {
        return;
    }

    ctx->batched = 0;
    b = ctx->batch;

    if (b == NULL) {
        ngx_queue_remove(&ctx->batch_link);
        return;     /* a timer left with nothing waiting is harmless */
    }

    b->items[ctx->row] = NULL;
}
