
/*
 * PostgreSQL pool of one nginx process, driven by nginx events.
 *
 * libpq runs in non-blocking mode: connections start with
 * PQconnectStartParams and advance with PQconnectPoll, queries go out with
 * PQsendQueryParams and come back through PQconsumeInput/PQgetResult on
 * level-triggered read events.  libpq owns every socket: we never close one,
 * we only stop watching it.  A query waits in a FIFO for a free connection;
 * with no healthy connection it fails at once so that the caller can answer
 * 503 while other requests go on.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_mdm_core.h"


#define NGX_MDM_PG_BACKOFF_MIN     100
#define NGX_MDM_PG_BACKOFF_MAX     2000

/* statements a process may keep prepared on each connection */
#define NGX_MDM_PG_PREPARED_MAX    32


typedef enum {
    ngx_mdm_pg_state_down = 0,
    ngx_mdm_pg_state_connecting,
    ngx_mdm_pg_state_idle,
    ngx_mdm_pg_state_busy
} ngx_mdm_pg_state_e;


typedef struct {
    PGconn                    *pgconn;
    ngx_connection_t          *c;
    ngx_event_t                timer;      /* connect, query or backoff */
    ngx_mdm_pg_state_e         state;
    PostgresPollingStatusType  poll;
    ngx_msec_t                 backoff;
    ngx_mdm_pg_query_t        *query;
    PGresult                  *result;
    ngx_uint_t                 index;
    uint32_t                   prepared;   /* bit i: statement i prepared */
    unsigned                   preparing:1;
    unsigned                   listener:1;
} ngx_mdm_pg_conn_t;


struct ngx_mdm_pg_query_s {
    ngx_queue_t                queue;
    ngx_mdm_pg_handler_pt      handler;
    void                      *data;
    ngx_log_t                 *log;
    char                      *sql;
    int                        nparams;
    char                     **values;
    int                       *lengths;
    int                       *formats;
    int                        result_format;
    ngx_int_t                  stmt;       /* prepared statement, or -1 */
    unsigned                   simple:1;
    unsigned                   cancelled:1;
    unsigned                   retried:1;
    ngx_msec_t                 expire;
    ngx_mdm_pg_conn_t         *conn;
};


typedef struct {
    ngx_http_mdm_core_main_conf_t  *cmcf;
    ngx_mdm_pg_conn_t              *conns;
    ngx_uint_t                      nconns;
    ngx_queue_t                     waiting;
    ngx_uint_t                      nwaiting;
    ngx_event_t                     wait_timer;
    ngx_event_t                     dispatch_ev;
    ngx_log_t                      *log;
    unsigned                        down:1;
    unsigned                        closed:1;  /* worker_shutdown_timeout */

    /* statements prepared by name, by their SQL's address */
    const char                     *stmts[NGX_MDM_PG_PREPARED_MAX];
    ngx_uint_t                      nstmts;

    /* the connection that LISTENs, outside the rotation */
    ngx_mdm_pg_conn_t               listener;
    const char                     *channel;
    ngx_mdm_pg_notify_pt            notify;
    ngx_mdm_pg_sync_pt              sync;
    void                           *notify_data;
    unsigned                        listening:1;
    unsigned                        syncing:1;
} ngx_mdm_pg_pool_t;


static void ngx_mdm_pg_connect(ngx_mdm_pg_conn_t *pc);
static void ngx_mdm_pg_connect_step(ngx_mdm_pg_conn_t *pc);
static ngx_int_t ngx_mdm_pg_attach(ngx_mdm_pg_conn_t *pc);
static void ngx_mdm_pg_detach(ngx_mdm_pg_conn_t *pc, ngx_uint_t closing);
static ngx_int_t ngx_mdm_pg_watch(ngx_mdm_pg_conn_t *pc, ngx_uint_t read,
    ngx_uint_t write);
static void ngx_mdm_pg_read_handler(ngx_event_t *ev);
static void ngx_mdm_pg_write_handler(ngx_event_t *ev);
static void ngx_mdm_pg_timer_handler(ngx_event_t *ev);
static void ngx_mdm_pg_wait_timer_handler(ngx_event_t *ev);
static void ngx_mdm_pg_waited(void);
static void ngx_mdm_pg_connected(ngx_mdm_pg_conn_t *pc);
static void ngx_mdm_pg_broken(ngx_mdm_pg_conn_t *pc, const char *why);
static void ngx_mdm_pg_send(ngx_mdm_pg_conn_t *pc, ngx_mdm_pg_query_t *q);
static void ngx_mdm_pg_receive(ngx_mdm_pg_conn_t *pc);
static void ngx_mdm_pg_complete(ngx_mdm_pg_query_t *q, PGresult *res,
    ngx_int_t rc);
static void ngx_mdm_pg_dispatch(void);
static void ngx_mdm_pg_dispatch_handler(ngx_event_t *ev);
static void ngx_mdm_pg_update_health(void);
static void ngx_mdm_pg_fail_waiting(void);
static ngx_int_t ngx_mdm_pg_stmt(const char *sql);
static void ngx_mdm_pg_stmt_name(u_char *buf, ngx_int_t stmt);
static ngx_int_t ngx_mdm_pg_send_prepared(ngx_mdm_pg_conn_t *pc,
    ngx_mdm_pg_query_t *q);
static void ngx_mdm_pg_listen_start(ngx_mdm_pg_conn_t *pc);
static void ngx_mdm_pg_listen_done(ngx_mdm_pg_conn_t *pc);
static void ngx_mdm_pg_listen_lost(void);
static void ngx_mdm_pg_notifies(ngx_mdm_pg_conn_t *pc);


static ngx_mdm_pg_pool_t  ngx_mdm_pg_pool;


ngx_int_t
ngx_mdm_pg_init_process(ngx_cycle_t *cycle,
    ngx_http_mdm_core_main_conf_t *cmcf)
{
    ngx_uint_t          i;
    ngx_mdm_pg_conn_t  *pc;

    ngx_memzero(&ngx_mdm_pg_pool, sizeof(ngx_mdm_pg_pool_t));

    if (cmcf->pg_conninfo.len == 0) {
        return NGX_OK;
    }

    ngx_mdm_pg_pool.cmcf = cmcf;
    ngx_mdm_pg_pool.log = cycle->log;
    ngx_mdm_pg_pool.nconns = cmcf->pg_pool_size;
    ngx_queue_init(&ngx_mdm_pg_pool.waiting);

    ngx_mdm_pg_pool.conns = ngx_pcalloc(cycle->pool, cmcf->pg_pool_size
                                        * sizeof(ngx_mdm_pg_conn_t));
    if (ngx_mdm_pg_pool.conns == NULL) {
        return NGX_ERROR;
    }

    ngx_mdm_pg_pool.wait_timer.handler = ngx_mdm_pg_wait_timer_handler;
    ngx_mdm_pg_pool.wait_timer.log = cycle->log;
    /* a query waiting for a connection keeps a worker that is leaving */
    ngx_mdm_pg_pool.wait_timer.cancelable = 0;
    ngx_mdm_pg_pool.dispatch_ev.handler = ngx_mdm_pg_dispatch_handler;
    ngx_mdm_pg_pool.dispatch_ev.log = cycle->log;

    for (i = 0; i < ngx_mdm_pg_pool.nconns; i++) {
        pc = &ngx_mdm_pg_pool.conns[i];
        pc->index = i;
        pc->timer.handler = ngx_mdm_pg_timer_handler;
        pc->timer.data = pc;
        pc->timer.log = cycle->log;
        pc->timer.cancelable = 1;

        ngx_mdm_pg_connect(pc);
    }

    return NGX_OK;
}


/* the process is leaving: close every connection, drop waiting queries */

void
ngx_mdm_pg_exit_process(void)
{
    ngx_uint_t          i;
    ngx_mdm_pg_conn_t  *pc;

    for (i = 0; i < ngx_mdm_pg_pool.nconns; i++) {
        pc = &ngx_mdm_pg_pool.conns[i];

        if (pc->timer.timer_set) {
            ngx_del_timer(&pc->timer);
        }

        ngx_mdm_pg_detach(pc, 1);

        if (pc->result) {
            PQclear(pc->result);
            pc->result = NULL;
        }

        if (pc->pgconn) {
            PQfinish(pc->pgconn);
            pc->pgconn = NULL;
        }

        pc->state = ngx_mdm_pg_state_down;
    }

    pc = &ngx_mdm_pg_pool.listener;

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    ngx_mdm_pg_detach(pc, 1);

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    if (pc->pgconn) {
        PQfinish(pc->pgconn);
        pc->pgconn = NULL;
    }

    pc->state = ngx_mdm_pg_state_down;

    ngx_mdm_pg_pool.listening = 0;
    ngx_mdm_pg_pool.notify = NULL;
    ngx_mdm_pg_pool.nconns = 0;
    ngx_mdm_pg_pool.cmcf = NULL;
}


ngx_uint_t
ngx_mdm_pg_healthy(void)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < ngx_mdm_pg_pool.nconns; i++) {
        if (ngx_mdm_pg_pool.conns[i].state >= ngx_mdm_pg_state_idle) {
            n++;
        }
    }

    return n;
}


ngx_mdm_pg_query_t *
ngx_mdm_pg_query(ngx_mdm_pg_args_t *args)
{
    u_char              *p;
    size_t               size, sqllen;
    ngx_int_t            i;
    ngx_mdm_pg_query_t  *q;

    if (ngx_mdm_pg_pool.cmcf == NULL || ngx_mdm_pg_pool.down
        || ngx_mdm_pg_pool.closed
        || ngx_mdm_pg_pool.nwaiting >= ngx_mdm_pg_pool.cmcf->pg_queue_size)
    {
        if (ngx_mdm_shm()) {
            (void) ngx_atomic_fetch_add(&ngx_mdm_shm()->pg_unavailable, 1);
        }
        return NULL;
    }

    /* one block: the query, the SQL, the parameter arrays and values */

    sqllen = ngx_strlen(args->sql) + 1;
    size = sizeof(ngx_mdm_pg_query_t) + sqllen
           + args->nparams * (sizeof(char *) + 2 * sizeof(int));

    for (i = 0; i < args->nparams; i++) {
        if (args->values[i] == NULL) {
            continue;
        }

        size += (args->lengths && args->formats && args->formats[i])
                ? (size_t) args->lengths[i] + 1
                : ngx_strlen(args->values[i]) + 1;
    }

    q = ngx_alloc(size, args->log);
    if (q == NULL) {
        return NULL;
    }

    ngx_memzero(q, sizeof(ngx_mdm_pg_query_t));

    p = (u_char *) (q + 1);

    q->values = (char **) p;
    p += args->nparams * sizeof(char *);
    q->lengths = (int *) p;
    p += args->nparams * sizeof(int);
    q->formats = (int *) p;
    p += args->nparams * sizeof(int);

    for (i = 0; i < args->nparams; i++) {
        q->formats[i] = args->formats ? args->formats[i] : 0;

        if (args->values[i] == NULL) {
            q->values[i] = NULL;
            q->lengths[i] = 0;
            continue;
        }

        q->lengths[i] = (q->formats[i] && args->lengths)
                        ? args->lengths[i]
                        : (int) ngx_strlen(args->values[i]);

        q->values[i] = (char *) p;
        p = ngx_cpymem(p, args->values[i], q->lengths[i]);
        *p++ = '\0';
    }

    q->sql = (char *) p;
    ngx_memcpy(p, args->sql, sqllen);

    q->nparams = args->nparams;
    q->result_format = args->result_format;
    q->simple = args->simple;
    q->stmt = (args->prepare && !args->simple) ? ngx_mdm_pg_stmt(args->sql)
                                                : -1;
    q->handler = args->handler;
    q->data = args->data;
    q->log = args->log;
    q->expire = ngx_current_msec + ngx_mdm_pg_pool.cmcf->pg_timeout;

    ngx_queue_insert_tail(&ngx_mdm_pg_pool.waiting, &q->queue);
    ngx_mdm_pg_pool.nwaiting++;

    /* never complete a query before its caller has the handle */
    if (!ngx_mdm_pg_pool.dispatch_ev.posted) {
        ngx_post_event(&ngx_mdm_pg_pool.dispatch_ev, &ngx_posted_events);
    }

    if (!ngx_mdm_pg_pool.wait_timer.timer_set) {
        ngx_add_timer(&ngx_mdm_pg_pool.wait_timer,
                      ngx_mdm_pg_pool.cmcf->pg_timeout);
    }

    return q;
}


void
ngx_mdm_pg_cancel(ngx_mdm_pg_query_t *q)
{
    if (q->conn) {
        /* in flight: the answer is read and dropped, then q is freed */
        q->cancelled = 1;
        return;
    }

    ngx_queue_remove(&q->queue);
    ngx_mdm_pg_pool.nwaiting--;
    ngx_free(q);

    ngx_mdm_pg_waited();
}


static void
ngx_mdm_pg_connect(ngx_mdm_pg_conn_t *pc)
{
    ngx_http_mdm_core_main_conf_t  *cmcf;

    cmcf = ngx_mdm_pg_pool.cmcf;

    pc->pgconn = PQconnectStartParams(
                     (const char *const *) cmcf->pg_keywords->elts,
                     (const char *const *) cmcf->pg_values->elts, 0);

    if (pc->pgconn == NULL || PQstatus(pc->pgconn) == CONNECTION_BAD) {
        ngx_mdm_pg_broken(pc, pc->pgconn ? PQerrorMessage(pc->pgconn)
                                         : "out of memory");
        return;
    }

    pc->state = ngx_mdm_pg_state_connecting;

    /* libpq: poll as if PGRES_POLLING_WRITING had been returned */
    pc->poll = PGRES_POLLING_WRITING;

    if (ngx_mdm_pg_attach(pc) != NGX_OK
        || ngx_mdm_pg_watch(pc, 0, 1) != NGX_OK)
    {
        ngx_mdm_pg_broken(pc, "cannot watch socket");
        return;
    }

    /* a connection being made holds no worker that is leaving */
    pc->timer.cancelable = 1;
    ngx_add_timer(&pc->timer, cmcf->pg_connect_timeout);
}


/*
 * libpq may close and reopen its socket during the handshake (a retry
 * without SSL, say), possibly under the same number, so the socket is
 * unwatched before each PQconnectPoll and watched again after it.
 */

static void
ngx_mdm_pg_connect_step(ngx_mdm_pg_conn_t *pc)
{
    ngx_mdm_pg_detach(pc, 0);

    pc->poll = PQconnectPoll(pc->pgconn);

    switch (pc->poll) {

    case PGRES_POLLING_OK:
        if (ngx_mdm_pg_attach(pc) != NGX_OK) {
            ngx_mdm_pg_broken(pc, "cannot watch socket");
            return;
        }
        ngx_mdm_pg_connected(pc);
        return;

    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (ngx_mdm_pg_attach(pc) != NGX_OK
            || ngx_mdm_pg_watch(pc, pc->poll == PGRES_POLLING_READING,
                                pc->poll == PGRES_POLLING_WRITING)
               != NGX_OK)
        {
            ngx_mdm_pg_broken(pc, "cannot watch socket");
        }
        return;

    default:
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }
}


static void
ngx_mdm_pg_connected(ngx_mdm_pg_conn_t *pc)
{
    if (PQsetnonblocking(pc->pgconn, 1) != 0
        || ngx_mdm_pg_watch(pc, 1, 0) != NGX_OK)
    {
        ngx_mdm_pg_broken(pc, "cannot switch to non-blocking mode");
        return;
    }

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    ngx_log_error(NGX_LOG_INFO, ngx_mdm_pg_pool.log, 0,
                  "mdm postgres connection #%ui ready", pc->index);

    pc->state = ngx_mdm_pg_state_idle;
    pc->backoff = 0;
    pc->prepared = 0;

    if (pc->listener) {
        ngx_mdm_pg_listen_start(pc);
        return;
    }

    ngx_mdm_pg_update_health();
    ngx_mdm_pg_dispatch();
}


static ngx_int_t
ngx_mdm_pg_attach(ngx_mdm_pg_conn_t *pc)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = PQsocket(pc->pgconn);
    if (fd == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    if (pc->c && pc->c->fd == fd) {
        return NGX_OK;
    }

    c = ngx_get_connection(fd, ngx_mdm_pg_pool.log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->read->handler = ngx_mdm_pg_read_handler;
    c->write->handler = ngx_mdm_pg_write_handler;
    c->read->log = ngx_mdm_pg_pool.log;
    c->write->log = ngx_mdm_pg_pool.log;
    c->log = ngx_mdm_pg_pool.log;

    pc->c = c;

    return NGX_OK;
}


/*
 * Stop watching the socket and give the connection slot back; the socket
 * itself stays libpq's.  "closing": libpq is about to close it, so the
 * kernel drops it from epoll by itself.
 */

static void
ngx_mdm_pg_detach(ngx_mdm_pg_conn_t *pc, ngx_uint_t closing)
{
    ngx_connection_t  *c;

    c = pc->c;
    if (c == NULL) {
        return;
    }

    if (c->read->active || c->write->active) {
        ngx_del_conn(c, closing ? NGX_CLOSE_EVENT : 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
    pc->c = NULL;
}


/* level-triggered interest in read and/or write readiness */

static ngx_int_t
ngx_mdm_pg_watch(ngx_mdm_pg_conn_t *pc, ngx_uint_t read, ngx_uint_t write)
{
    ngx_connection_t  *c;

    c = pc->c;

    if (read && !c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!read && c->read->active) {
        if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (write && !c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!write && c->write->active) {
        if (ngx_del_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_mdm_pg_read_handler(ngx_event_t *ev)
{
    ngx_connection_t   *c;
    ngx_mdm_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (c->close) {
        /*
         * worker_shutdown_timeout has passed: nginx closes what is left.
         * A query under way fails (its request with it), so do the ones
         * waiting for a connection, and no new one starts.
         */
        ngx_mdm_pg_pool.closed = 1;

        if (pc->state == ngx_mdm_pg_state_busy) {
            ngx_mdm_pg_broken(pc, "the worker's shutdown timeout passed "
                              "with a query under way");

        } else {
            ngx_mdm_pg_detach(pc, 1);
            PQfinish(pc->pgconn);
            pc->pgconn = NULL;
            pc->state = ngx_mdm_pg_state_down;

            if (pc->timer.timer_set) {
                ngx_del_timer(&pc->timer);
            }

            if (pc->listener) {
                ngx_mdm_pg_listen_lost();
            }
        }

        ngx_mdm_pg_fail_waiting();
        return;
    }

    switch (pc->state) {

    case ngx_mdm_pg_state_connecting:
        if (pc->poll == PGRES_POLLING_READING) {
            ngx_mdm_pg_connect_step(pc);
        }
        return;

    case ngx_mdm_pg_state_idle:
        /* a notice, a parameter change or the server going away */
        if (!PQconsumeInput(pc->pgconn)
            || PQstatus(pc->pgconn) == CONNECTION_BAD)
        {
            ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
            return;
        }

        while (!PQisBusy(pc->pgconn)) {
            PGresult *res = PQgetResult(pc->pgconn);
            if (res == NULL) {
                break;
            }
            PQclear(res);
        }

        ngx_mdm_pg_notifies(pc);
        return;

    case ngx_mdm_pg_state_busy:
        ngx_mdm_pg_receive(pc);
        return;

    default:
        return;
    }
}


static void
ngx_mdm_pg_write_handler(ngx_event_t *ev)
{
    int                 rc;
    ngx_connection_t   *c;
    ngx_mdm_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    switch (pc->state) {

    case ngx_mdm_pg_state_connecting:
        if (pc->poll == PGRES_POLLING_WRITING) {
            ngx_mdm_pg_connect_step(pc);
        }
        return;

    case ngx_mdm_pg_state_busy:
        rc = PQflush(pc->pgconn);

        if (rc < 0) {
            ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
            return;
        }

        if (rc == 0 && ngx_mdm_pg_watch(pc, 1, 0) != NGX_OK) {
            ngx_mdm_pg_broken(pc, "cannot watch socket");
        }
        return;

    default:
        (void) ngx_mdm_pg_watch(pc, 1, 0);
        return;
    }
}


static void
ngx_mdm_pg_timer_handler(ngx_event_t *ev)
{
    ngx_mdm_pg_conn_t  *pc;

    pc = ev->data;

    switch (pc->state) {

    case ngx_mdm_pg_state_down:
        ngx_mdm_pg_connect(pc);
        return;

    case ngx_mdm_pg_state_connecting:
        ngx_mdm_pg_broken(pc, "connect timed out");
        return;

    case ngx_mdm_pg_state_busy:
        /* the server, or the path to it, hangs: give the connection up */
        ngx_mdm_pg_broken(pc, "query timed out");
        return;

    default:
        return;
    }
}


static void
ngx_mdm_pg_broken(ngx_mdm_pg_conn_t *pc, const char *why)
{
    size_t               i, len;
    u_char               msg[256];
    ngx_mdm_pg_query_t  *q;

    /* libpq's messages span lines: keep the log to one */

    len = ngx_cpystrn(msg, (u_char *) (why ? why : ""), sizeof(msg)) - msg;
    for (i = 0; i < len; i++) {
        if (msg[i] == '\n' || msg[i] == '\t') {
            msg[i] = ' ';
        }
    }
    while (len && msg[len - 1] == ' ') {
        len--;
    }

    if (pc->state != ngx_mdm_pg_state_down || pc->backoff == 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_pg_pool.log, 0,
                      "mdm postgres connection #%ui failed: %*s",
                      pc->index, len, msg);
    }

    if (ngx_mdm_shm()) {
        (void) ngx_atomic_fetch_add(&ngx_mdm_shm()->pg_errors, 1);
    }

    ngx_mdm_pg_detach(pc, 1);

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    if (pc->pgconn) {
        PQfinish(pc->pgconn);
        pc->pgconn = NULL;
    }

    pc->state = ngx_mdm_pg_state_down;
    pc->preparing = 0;
    pc->prepared = 0;

    q = pc->query;
    pc->query = NULL;

    if (q) {
        ngx_mdm_pg_complete(q, NULL, NGX_DECLINED);
    }

    if (pc->listener) {
        ngx_mdm_pg_listen_lost();
    }

    pc->backoff = pc->backoff ? ngx_min(pc->backoff * 2,
                                        NGX_MDM_PG_BACKOFF_MAX)
                              : NGX_MDM_PG_BACKOFF_MIN;

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        pc->timer.cancelable = 1;
        ngx_add_timer(&pc->timer, pc->backoff);
    }

    if (!pc->listener) {
        ngx_mdm_pg_update_health();
    }
}


static void
ngx_mdm_pg_update_health(void)
{
    ngx_uint_t  i, connecting, up;

    connecting = 0;
    up = 0;

    for (i = 0; i < ngx_mdm_pg_pool.nconns; i++) {
        switch (ngx_mdm_pg_pool.conns[i].state) {
        case ngx_mdm_pg_state_idle:
        case ngx_mdm_pg_state_busy:
            up++;
            break;
        case ngx_mdm_pg_state_connecting:
            connecting++;
            break;
        default:
            break;
        }
    }

    if (up) {
        ngx_mdm_pg_pool.down = 0;
        return;
    }

    /*
     * Nothing is up.  Until the first connection attempt has failed (at
     * start) queries wait; after a failure they fail at once.
     */

    if (connecting == ngx_mdm_pg_pool.nconns && !ngx_mdm_pg_pool.down) {
        return;
    }

    ngx_mdm_pg_pool.down = 1;
    ngx_mdm_pg_fail_waiting();
}


static void
ngx_mdm_pg_fail_waiting(void)
{
    ngx_queue_t         *qu;
    ngx_mdm_pg_query_t  *q;

    while (!ngx_queue_empty(&ngx_mdm_pg_pool.waiting)) {
        qu = ngx_queue_head(&ngx_mdm_pg_pool.waiting);
        q = ngx_queue_data(qu, ngx_mdm_pg_query_t, queue);
        ngx_queue_remove(qu);
        ngx_mdm_pg_pool.nwaiting--;
        ngx_mdm_pg_complete(q, NULL, NGX_DECLINED);
    }

    ngx_mdm_pg_waited();
}


static void
ngx_mdm_pg_dispatch(void)
{
    ngx_uint_t           i;
    ngx_queue_t         *qu;
    ngx_mdm_pg_conn_t   *pc;
    ngx_mdm_pg_query_t  *q;

    for (i = 0; i < ngx_mdm_pg_pool.nconns; i++) {

        if (ngx_queue_empty(&ngx_mdm_pg_pool.waiting)) {
            break;
        }

        pc = &ngx_mdm_pg_pool.conns[i];

        if (pc->state != ngx_mdm_pg_state_idle) {
            continue;
        }

        qu = ngx_queue_head(&ngx_mdm_pg_pool.waiting);
        q = ngx_queue_data(qu, ngx_mdm_pg_query_t, queue);
        ngx_queue_remove(qu);
        ngx_mdm_pg_pool.nwaiting--;

        ngx_mdm_pg_send(pc, q);
    }

    ngx_mdm_pg_waited();
}


/* no query waits: the wait timer goes, it would hold a leaving worker */

static void
ngx_mdm_pg_waited(void)
{
    if (ngx_queue_empty(&ngx_mdm_pg_pool.waiting)
        && ngx_mdm_pg_pool.wait_timer.timer_set)
    {
        ngx_del_timer(&ngx_mdm_pg_pool.wait_timer);
    }
}


static void
ngx_mdm_pg_dispatch_handler(ngx_event_t *ev)
{
    ngx_mdm_pg_dispatch();
}


static void
ngx_mdm_pg_send(ngx_mdm_pg_conn_t *pc, ngx_mdm_pg_query_t *q)
{
    int         ok, rc;
    ngx_msec_t  left;

    if (q->simple) {
        ok = PQsendQuery(pc->pgconn, q->sql);

    } else if (q->stmt >= 0) {
        ok = ngx_mdm_pg_send_prepared(pc, q);

    } else {
        ok = PQsendQueryParams(pc->pgconn, q->sql, q->nparams, NULL,
                               (const char *const *) q->values, q->lengths,
                               q->formats, q->result_format);
    }

    pc->query = q;
    q->conn = pc;

    if (!ok) {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }

    pc->state = ngx_mdm_pg_state_busy;

    rc = PQflush(pc->pgconn);
    if (rc < 0) {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }

    if (rc == 1 && ngx_mdm_pg_watch(pc, 1, 1) != NGX_OK) {
        ngx_mdm_pg_broken(pc, "cannot watch socket");
        return;
    }

    left = (ngx_msec_int_t) (q->expire - ngx_current_msec) > 0
           ? q->expire - ngx_current_msec : 1;

    /*
     * A query in flight keeps a worker that is leaving (reload, quit)
     * until it is answered or times out: its requester, a device's
     * check-in say, is answered before the worker exits.
     */
    pc->timer.cancelable = 0;
    ngx_add_timer(&pc->timer, left);
}


static void
ngx_mdm_pg_receive(ngx_mdm_pg_conn_t *pc)
{
    PGresult            *res;
    ngx_int_t            rc;
    ngx_mdm_pg_query_t  *q;

    if (!PQconsumeInput(pc->pgconn)) {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }

    for ( ;; ) {

        if (PQisBusy(pc->pgconn)) {
            return;
        }

        res = PQgetResult(pc->pgconn);
        if (res == NULL) {
            break;
        }

        /* keep the first error, else the last result */

        if (pc->result
            && PQresultStatus(pc->result) == PGRES_FATAL_ERROR)
        {
            PQclear(res);
            continue;
        }

        if (pc->result) {
            PQclear(pc->result);
        }

        pc->result = res;
    }

    if (PQstatus(pc->pgconn) == CONNECTION_BAD) {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }

    if (pc->listener) {
        ngx_mdm_pg_listen_done(pc);
        return;
    }

    q = pc->query;

    if (pc->preparing) {
        /* the statement is prepared: now the query itself */
        pc->preparing = 0;
        res = pc->result;

        if (res && PQresultStatus(res) == PGRES_COMMAND_OK && q) {
            PQclear(res);
            pc->result = NULL;
            pc->prepared |= (uint32_t) 1 << q->stmt;

            if (ngx_mdm_pg_send_prepared(pc, q) == 0) {
                ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
                return;
            }

            if (PQflush(pc->pgconn) < 0) {
                ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
            }

            return;
        }
    }

    if (q && q->stmt >= 0 && !q->retried && pc->result
        && PQresultStatus(pc->result) == PGRES_FATAL_ERROR
        && ngx_strcmp(PQresultErrorField(pc->result, PG_DIAG_SQLSTATE)
                      ? PQresultErrorField(pc->result, PG_DIAG_SQLSTATE)
                      : "", "26000") == 0)
    {
        /* the statement went (DISCARD ALL, a pooler): prepare it again */
        ngx_log_error(NGX_LOG_WARN, ngx_mdm_pg_pool.log, 0,
                      "mdm postgres connection #%ui lost its prepared "
                      "statements, preparing again", pc->index);
        PQclear(pc->result);
        pc->result = NULL;
        pc->prepared = 0;
        q->retried = 1;

        if (ngx_mdm_pg_send_prepared(pc, q) == 0
            || PQflush(pc->pgconn) < 0)
        {
            ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        }

        return;
    }

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    res = pc->result;
    pc->result = NULL;
    pc->query = NULL;
    pc->state = ngx_mdm_pg_state_idle;

    switch (res ? PQresultStatus(res) : PGRES_FATAL_ERROR) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        rc = NGX_OK;
        break;
    default:
        rc = NGX_ERROR;
        if (ngx_mdm_shm()) {
            (void) ngx_atomic_fetch_add(&ngx_mdm_shm()->pg_errors, 1);
        }
        break;
    }

    if (q) {
        ngx_mdm_pg_complete(q, res, rc);
    }

    if (res) {
        PQclear(res);
    }

    ngx_mdm_pg_dispatch();
}


static void
ngx_mdm_pg_complete(ngx_mdm_pg_query_t *q, PGresult *res, ngx_int_t rc)
{
    if (!q->cancelled && q->handler) {
        q->conn = NULL;
        q->handler(q->data, res, rc);
    }

    ngx_free(q);
}


static void
ngx_mdm_pg_wait_timer_handler(ngx_event_t *ev)
{
    ngx_msec_t           next;
    ngx_queue_t         *qu;
    ngx_mdm_pg_query_t  *q;

    while (!ngx_queue_empty(&ngx_mdm_pg_pool.waiting)) {
        qu = ngx_queue_head(&ngx_mdm_pg_pool.waiting);
        q = ngx_queue_data(qu, ngx_mdm_pg_query_t, queue);

        if ((ngx_msec_int_t) (q->expire - ngx_current_msec) > 0) {
            next = q->expire - ngx_current_msec;
            ngx_add_timer(ev, next);
            return;
        }

        ngx_queue_remove(qu);
        ngx_mdm_pg_pool.nwaiting--;

        ngx_log_error(NGX_LOG_ERR, q->log, 0,
                      "mdm postgres query waited too long for a connection");

        ngx_mdm_pg_complete(q, NULL, NGX_DECLINED);
    }
}


/*
 * Prepared statements: a query whose args->prepare is set is prepared once
 * per connection under the name "mdm_<n>", n the SQL's place in this
 * process's list (keyed by the SQL's address: a caller's constant), and
 * executed by name from then on: no parsing or planning per call.  A
 * statement the server forgot (DISCARD ALL, a pooler) is prepared again,
 * once per query.
 */

static ngx_int_t
ngx_mdm_pg_stmt(const char *sql)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_mdm_pg_pool.nstmts; i++) {
        if (ngx_mdm_pg_pool.stmts[i] == sql) {
            return i;
        }
    }

    if (ngx_mdm_pg_pool.nstmts == NGX_MDM_PG_PREPARED_MAX) {
        return -1;
    }

    ngx_mdm_pg_pool.stmts[ngx_mdm_pg_pool.nstmts] = sql;

    return ngx_mdm_pg_pool.nstmts++;
}


static void
ngx_mdm_pg_stmt_name(u_char *buf, ngx_int_t stmt)
{
    *ngx_sprintf(buf, "mdm_%i", stmt) = '\0';
}


/* 1 when sent, 0 on failure (libpq's error message says why) */

static ngx_int_t
ngx_mdm_pg_send_prepared(ngx_mdm_pg_conn_t *pc, ngx_mdm_pg_query_t *q)
{
    u_char  name[NGX_INT_T_LEN + 8];

    ngx_mdm_pg_stmt_name(name, q->stmt);

    if (pc->prepared & ((uint32_t) 1 << q->stmt)) {
        return PQsendQueryPrepared(pc->pgconn, (char *) name, q->nparams,
                                   (const char *const *) q->values,
                                   q->lengths, q->formats, q->result_format);
    }

    pc->preparing = 1;

    return PQsendPrepare(pc->pgconn, (char *) name, q->sql, q->nparams,
                         NULL);
}


/*
 * LISTEN: one more connection per process, outside the rotation, that
 * LISTENs on one channel and hands each notification's payload to the
 * handler.  handler(data, NULL) says "anything may have been missed": the
 * connection was lost, or LISTEN has just taken effect (again).
 */

ngx_int_t
ngx_mdm_pg_listen(const char *channel, ngx_mdm_pg_notify_pt handler,
    ngx_mdm_pg_sync_pt sync, void *data)
{
    ngx_mdm_pg_conn_t  *pc;

    if (ngx_mdm_pg_pool.cmcf == NULL || ngx_mdm_pg_pool.notify) {
        return NGX_DECLINED;
    }

    ngx_mdm_pg_pool.channel = channel;
    ngx_mdm_pg_pool.notify = handler;
    ngx_mdm_pg_pool.sync = sync;
    ngx_mdm_pg_pool.notify_data = data;

    pc = &ngx_mdm_pg_pool.listener;
    ngx_memzero(pc, sizeof(ngx_mdm_pg_conn_t));

    pc->listener = 1;
    pc->index = ngx_mdm_pg_pool.nconns;
    pc->timer.handler = ngx_mdm_pg_timer_handler;
    pc->timer.data = pc;
    pc->timer.log = ngx_mdm_pg_pool.log;
    pc->timer.cancelable = 1;

    ngx_mdm_pg_connect(pc);

    return NGX_OK;
}


ngx_uint_t
ngx_mdm_pg_listening(void)
{
    return ngx_mdm_pg_pool.listening;
}


/* read what the server has already sent: notifications, or a loss */

void
ngx_mdm_pg_listen_poll(void)
{
    ngx_mdm_pg_conn_t  *pc;

    pc = &ngx_mdm_pg_pool.listener;

    if (!ngx_mdm_pg_pool.listening || pc->state != ngx_mdm_pg_state_idle) {
        return;
    }

    if (!PQconsumeInput(pc->pgconn)
        || PQstatus(pc->pgconn) == CONNECTION_BAD)
    {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }

    ngx_mdm_pg_notifies(pc);
}


/*
 * A sync: an empty query on the LISTEN connection.  The server sends the
 * notifications of every transaction that committed before the query
 * arrived ahead of the query's answer (PostgreSQL processes a pending
 * notify interrupt before ReadyForQuery), so when sync(data, NGX_OK) is
 * called, every such notification has been handed to the handler.
 * NGX_OK: sent; NGX_BUSY: one is under way; NGX_DECLINED: not listening.
 */

ngx_int_t
ngx_mdm_pg_listen_sync(void)
{
    ngx_mdm_pg_conn_t  *pc;

    pc = &ngx_mdm_pg_pool.listener;

    if (ngx_mdm_pg_pool.syncing) {
        return NGX_BUSY;
    }

    if (!ngx_mdm_pg_pool.listening || pc->state != ngx_mdm_pg_state_idle) {
        return NGX_DECLINED;
    }

    if (!PQsendQuery(pc->pgconn, "") || PQflush(pc->pgconn) < 0) {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return NGX_DECLINED;
    }

    pc->state = ngx_mdm_pg_state_busy;
    ngx_mdm_pg_pool.syncing = 1;

    /* requests wait for it: it keeps a worker that is leaving */
    pc->timer.cancelable = 0;
    ngx_add_timer(&pc->timer, ngx_mdm_pg_pool.cmcf->pg_timeout);

    return NGX_OK;
}


static void
ngx_mdm_pg_listen_start(ngx_mdm_pg_conn_t *pc)
{
    u_char  *p;
    char    *id;
    u_char   sql[192];

    id = PQescapeIdentifier(pc->pgconn, ngx_mdm_pg_pool.channel,
                            ngx_strlen(ngx_mdm_pg_pool.channel));
    if (id == NULL) {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }

    /* named, so that an operator sees which backends these are */
    p = ngx_snprintf(sql, sizeof(sql) - 1,
                     "SET application_name = 'nginx-mdm listen'; LISTEN %s",
                     id);
    *p = '\0';
    PQfreemem(id);

    if (!PQsendQuery(pc->pgconn, (char *) sql) || PQflush(pc->pgconn) < 0) {
        ngx_mdm_pg_broken(pc, PQerrorMessage(pc->pgconn));
        return;
    }

    pc->state = ngx_mdm_pg_state_busy;

    pc->timer.cancelable = 1;
    ngx_add_timer(&pc->timer, ngx_mdm_pg_pool.cmcf->pg_timeout);
}


static void
ngx_mdm_pg_listen_done(ngx_mdm_pg_conn_t *pc)
{
    PGresult  *res;

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    res = pc->result;
    pc->result = NULL;

    if (ngx_mdm_pg_pool.syncing) {
        if (res) {
            PQclear(res);
        }

        pc->state = ngx_mdm_pg_state_idle;
        ngx_mdm_pg_pool.syncing = 0;

        /* the notifications came before the answer: first them */
        ngx_mdm_pg_notifies(pc);

        if (ngx_mdm_pg_pool.sync) {
            ngx_mdm_pg_pool.sync(ngx_mdm_pg_pool.notify_data, NGX_OK);
        }

        return;
    }

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        ngx_mdm_pg_broken(pc, res ? PQresultErrorMessage(res)
                                  : "LISTEN failed");
        if (res) {
            PQclear(res);
        }
        return;
    }

    PQclear(res);

    pc->state = ngx_mdm_pg_state_idle;
    ngx_mdm_pg_pool.listening = 1;

    ngx_log_error(NGX_LOG_INFO, ngx_mdm_pg_pool.log, 0,
                  "mdm postgres listening on \"%s\"",
                  ngx_mdm_pg_pool.channel);

    /* whatever came before LISTEN took effect was missed */
    ngx_mdm_pg_pool.notify(ngx_mdm_pg_pool.notify_data, NULL);

    ngx_mdm_pg_notifies(pc);
}


static void
ngx_mdm_pg_listen_lost(void)
{
    if (ngx_mdm_pg_pool.listening) {
        ngx_mdm_pg_pool.listening = 0;
        ngx_mdm_pg_pool.notify(ngx_mdm_pg_pool.notify_data, NULL);
    }

    if (ngx_mdm_pg_pool.syncing) {
        ngx_mdm_pg_pool.syncing = 0;

        if (ngx_mdm_pg_pool.sync) {
            ngx_mdm_pg_pool.sync(ngx_mdm_pg_pool.notify_data, NGX_ERROR);
        }
    }
}


static void
ngx_mdm_pg_notifies(ngx_mdm_pg_conn_t *pc)
{
    PGnotify  *n;

    if (!pc->listener) {
        return;
    }

    while ((n = PQnotifies(pc->pgconn)) != NULL) {
        if (ngx_mdm_pg_pool.notify) {
            ngx_mdm_pg_pool.notify(ngx_mdm_pg_pool.notify_data,
                                   n->extra ? n->extra : "");
        }

        PQfreemem(n);
    }
}
