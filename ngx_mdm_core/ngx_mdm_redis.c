
/*
 * Redis client of one nginx process: hiredis async with an nginx adapter.
 *
 * hiredis owns the socket and closes it; we only watch it, level-triggered
 * (hiredis reads at most 16 KiB a call).  hiredis 0.14 has no timeouts, so
 * nginx timers bound the connect and every command: a command older than
 * mdm_redis_timeout drops the connection, which fails every pending command
 * and starts a reconnect.  Callbacks carry a token, never a request.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include "ngx_mdm_core.h"


#define NGX_MDM_REDIS_BACKOFF_MIN  100
#define NGX_MDM_REDIS_BACKOFF_MAX  2000


struct ngx_mdm_redis_cmd_s {
    ngx_queue_t                 queue;
    ngx_mdm_redis_handler_pt    handler;
    void                       *data;
    ngx_msec_t                  expire;
};


typedef enum {
    ngx_mdm_redis_state_down = 0,
    ngx_mdm_redis_state_connecting,
    ngx_mdm_redis_state_up
} ngx_mdm_redis_state_e;


typedef struct {
    ngx_http_mdm_core_main_conf_t  *cmcf;
    redisAsyncContext              *ac;
    ngx_connection_t               *c;
    ngx_event_t                     timer;   /* connect, deadline, backoff */
    ngx_mdm_redis_state_e           state;
    ngx_msec_t                      backoff;
    ngx_queue_t                     pending;
    ngx_log_t                      *log;
    unsigned                        failed_once:1;
} ngx_mdm_redis_t;


static void ngx_mdm_redis_connect(void);
static void ngx_mdm_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_mdm_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_mdm_redis_gone(const char *why);
static void ngx_mdm_redis_add_read(void *privdata);
static void ngx_mdm_redis_del_read(void *privdata);
static void ngx_mdm_redis_add_write(void *privdata);
static void ngx_mdm_redis_del_write(void *privdata);
static void ngx_mdm_redis_cleanup(void *privdata);
static void ngx_mdm_redis_read_handler(ngx_event_t *ev);
static void ngx_mdm_redis_write_handler(ngx_event_t *ev);
static void ngx_mdm_redis_timer_handler(ngx_event_t *ev);
static void ngx_mdm_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_mdm_redis_arm_deadline(void);


static ngx_mdm_redis_t  ngx_mdm_redis;


ngx_int_t
ngx_mdm_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_mdm_core_main_conf_t *cmcf)
{
    ngx_memzero(&ngx_mdm_redis, sizeof(ngx_mdm_redis_t));

    if (cmcf->redis.len == 0) {
        return NGX_OK;
    }

    ngx_mdm_redis.cmcf = cmcf;
    ngx_mdm_redis.log = cycle->log;
    ngx_queue_init(&ngx_mdm_redis.pending);

    ngx_mdm_redis.timer.handler = ngx_mdm_redis_timer_handler;
    ngx_mdm_redis.timer.log = cycle->log;
    ngx_mdm_redis.timer.cancelable = 1;

    ngx_mdm_redis_connect();

    return NGX_OK;
}


void
ngx_mdm_redis_exit_process(void)
{
    redisAsyncContext  *ac;

    if (ngx_mdm_redis.timer.timer_set) {
        ngx_del_timer(&ngx_mdm_redis.timer);
    }

    ac = ngx_mdm_redis.ac;
    if (ac) {
        /* cleanup() unwatches; gone() sees ngx_exiting and stays down */
        redisAsyncFree(ac);
    }

    if (ngx_mdm_redis.timer.timer_set) {
        ngx_del_timer(&ngx_mdm_redis.timer);
    }
}


ngx_uint_t
ngx_mdm_redis_healthy(void)
{
    return ngx_mdm_redis.state == ngx_mdm_redis_state_up;
}


ngx_mdm_redis_cmd_t *
ngx_mdm_redis_command(ngx_log_t *log, ngx_mdm_redis_handler_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen)
{
    ngx_mdm_redis_cmd_t  *cmd;

    if (ngx_mdm_redis.ac == NULL
        || (ngx_mdm_redis.state != ngx_mdm_redis_state_up
            && ngx_mdm_redis.failed_once))
    {
        return NULL;
    }

    cmd = ngx_alloc(sizeof(ngx_mdm_redis_cmd_t), log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->expire = ngx_current_msec + ngx_mdm_redis.cmcf->redis_timeout;

    if (redisAsyncCommandArgv(ngx_mdm_redis.ac, ngx_mdm_redis_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_free(cmd);
        return NULL;
    }

    ngx_queue_insert_tail(&ngx_mdm_redis.pending, &cmd->queue);

    ngx_mdm_redis_arm_deadline();

    return cmd;
}


void
ngx_mdm_redis_cancel(ngx_mdm_redis_cmd_t *cmd)
{
    /* the reply still comes; it is dropped and the token freed then */
    cmd->handler = NULL;
}


static void
ngx_mdm_redis_connect(void)
{
    redisAsyncContext              *ac;
    ngx_http_mdm_core_main_conf_t  *cmcf;

    cmcf = ngx_mdm_redis.cmcf;

    if (cmcf->redis_addr == NULL) {
        ac = redisAsyncConnectUnix((char *) cmcf->redis_path.data);

    } else {
        ac = redisAsyncConnect((char *) cmcf->redis_path.data,
                               ngx_inet_get_port(cmcf->redis_addr->sockaddr));
    }

    if (ac == NULL || ac->err) {
        if (ac) {
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_redis.log, 0,
                          "mdm redis connect to \"%V\" failed: %s",
                          &cmcf->redis, ac->errstr);
            redisAsyncFree(ac);
        }

        ngx_mdm_redis_gone(NULL);
        return;
    }

    ngx_mdm_redis.ac = ac;
    ngx_mdm_redis.state = ngx_mdm_redis_state_connecting;

    ac->ev.data = &ngx_mdm_redis;
    ac->ev.addRead = ngx_mdm_redis_add_read;
    ac->ev.delRead = ngx_mdm_redis_del_read;
    ac->ev.addWrite = ngx_mdm_redis_add_write;
    ac->ev.delWrite = ngx_mdm_redis_del_write;
    ac->ev.cleanup = ngx_mdm_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_mdm_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_mdm_redis_on_disconnect);

    /* hiredis reports a non-blocking connect through the write event */
    ngx_mdm_redis_add_write(&ngx_mdm_redis);

    if (ngx_mdm_redis.timer.timer_set) {
        ngx_del_timer(&ngx_mdm_redis.timer);
    }

    ngx_mdm_redis.timer.cancelable = 1;
    ngx_add_timer(&ngx_mdm_redis.timer, cmcf->redis_timeout);
}


static void
ngx_mdm_redis_on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_redis.log, 0,
                      "mdm redis connect to \"%V\" failed: %s",
                      &ngx_mdm_redis.cmcf->redis, ac->errstr);
        /* hiredis frees the context next; cleanup() schedules a retry */
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_mdm_redis.log, 0,
                  "mdm redis connection ready");

    ngx_mdm_redis.state = ngx_mdm_redis_state_up;
    ngx_mdm_redis.backoff = 0;

    if (ngx_mdm_redis.timer.timer_set) {
        ngx_del_timer(&ngx_mdm_redis.timer);
    }

    ngx_mdm_redis_arm_deadline();
}


static void
ngx_mdm_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_redis.log, 0,
                      "mdm redis connection lost: %s", ac->errstr);
    }
}


/* the context is gone (or never came): retry after a back-off */

static void
ngx_mdm_redis_gone(const char *why)
{
    if (why) {
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_redis.log, 0,
                      "mdm redis: %s", why);
    }

    if (ngx_mdm_shm()) {
        (void) ngx_atomic_fetch_add(&ngx_mdm_shm()->redis_errors, 1);
    }

    ngx_mdm_redis.ac = NULL;
    ngx_mdm_redis.state = ngx_mdm_redis_state_down;
    ngx_mdm_redis.failed_once = 1;

    ngx_mdm_redis.backoff = ngx_mdm_redis.backoff
                            ? ngx_min(ngx_mdm_redis.backoff * 2,
                                      NGX_MDM_REDIS_BACKOFF_MAX)
                            : NGX_MDM_REDIS_BACKOFF_MIN;

    if (ngx_mdm_redis.timer.timer_set) {
        ngx_del_timer(&ngx_mdm_redis.timer);
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_mdm_redis.timer.cancelable = 1;
        ngx_add_timer(&ngx_mdm_redis.timer, ngx_mdm_redis.backoff);
    }
}


static ngx_connection_t *
ngx_mdm_redis_conn(void)
{
    ngx_connection_t  *c;

    if (ngx_mdm_redis.c) {
        return ngx_mdm_redis.c;
    }

    c = ngx_get_connection(ngx_mdm_redis.ac->c.fd, ngx_mdm_redis.log);
    if (c == NULL) {
        return NULL;
    }

    c->data = &ngx_mdm_redis;
    c->log = ngx_mdm_redis.log;
    c->read->handler = ngx_mdm_redis_read_handler;
    c->write->handler = ngx_mdm_redis_write_handler;
    c->read->log = ngx_mdm_redis.log;
    c->write->log = ngx_mdm_redis.log;

    ngx_mdm_redis.c = c;

    return c;
}


static void
ngx_mdm_redis_add_read(void *privdata)
{
    ngx_connection_t  *c;

    c = ngx_mdm_redis_conn();
    if (c && !c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_mdm_redis_del_read(void *privdata)
{
    ngx_connection_t  *c;

    c = ngx_mdm_redis.c;
    if (c && c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_mdm_redis_add_write(void *privdata)
{
    ngx_connection_t  *c;

    c = ngx_mdm_redis_conn();
    if (c && !c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_mdm_redis_del_write(void *privdata)
{
    ngx_connection_t  *c;

    c = ngx_mdm_redis.c;
    if (c && c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis frees the context and closes the socket right after this */

static void
ngx_mdm_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c;

    c = ngx_mdm_redis.c;

    if (c) {
        if (c->read->active || c->write->active) {
            ngx_del_conn(c, NGX_CLOSE_EVENT);
        }

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        ngx_mdm_redis.c = NULL;
    }

    ngx_mdm_redis_gone(NULL);
}


static void
ngx_mdm_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    if (ngx_mdm_redis.ac == NULL) {
        return;
    }

    if (c->close) {
        /* worker_shutdown_timeout: nginx closes what is left */
        redisAsyncFree(ngx_mdm_redis.ac);
        return;
    }

    redisAsyncHandleRead(ngx_mdm_redis.ac);
}


static void
ngx_mdm_redis_write_handler(ngx_event_t *ev)
{
    if (ngx_mdm_redis.ac) {
        redisAsyncHandleWrite(ngx_mdm_redis.ac);
    }
}


static void
ngx_mdm_redis_timer_handler(ngx_event_t *ev)
{
    switch (ngx_mdm_redis.state) {

    case ngx_mdm_redis_state_down:
        ngx_mdm_redis_connect();
        return;

    case ngx_mdm_redis_state_connecting:
        ngx_log_error(NGX_LOG_ERR, ngx_mdm_redis.log, 0,
                      "mdm redis connect to \"%V\" timed out",
                      &ngx_mdm_redis.cmcf->redis);
        redisAsyncFree(ngx_mdm_redis.ac);
        return;

    case ngx_mdm_redis_state_up:
        if (ngx_queue_empty(&ngx_mdm_redis.pending)) {
            return;
        }

        ngx_mdm_redis_arm_deadline();

        if (!ngx_mdm_redis.timer.timer_set) {
            ngx_log_error(NGX_LOG_ERR, ngx_mdm_redis.log, 0,
                          "mdm redis command timed out, reconnecting");
            redisAsyncFree(ngx_mdm_redis.ac);
        }
        return;
    }
}


/* timer for the oldest pending command; not set when it has expired */

static void
ngx_mdm_redis_arm_deadline(void)
{
    ngx_queue_t          *q;
    ngx_mdm_redis_cmd_t  *cmd;

    if (ngx_mdm_redis.state != ngx_mdm_redis_state_up) {
        return;
    }

    if (ngx_mdm_redis.timer.timer_set) {
        ngx_del_timer(&ngx_mdm_redis.timer);
    }

    if (ngx_queue_empty(&ngx_mdm_redis.pending)) {
        return;
    }

    q = ngx_queue_head(&ngx_mdm_redis.pending);
    cmd = ngx_queue_data(q, ngx_mdm_redis_cmd_t, queue);

    if ((ngx_msec_int_t) (cmd->expire - ngx_current_msec) <= 0) {
        return;
    }

    /* commands awaiting replies keep a worker that is leaving */
    ngx_mdm_redis.timer.cancelable = 0;
    ngx_add_timer(&ngx_mdm_redis.timer, cmd->expire - ngx_current_msec);
}


static void
ngx_mdm_redis_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    ngx_mdm_redis_cmd_t  *cmd;

    cmd = privdata;

    ngx_queue_remove(&cmd->queue);

    if (cmd->handler) {
        cmd->handler(cmd->data, reply);
    }

    ngx_free(cmd);

    if (reply && ngx_mdm_redis.state == ngx_mdm_redis_state_up) {
        ngx_mdm_redis_arm_deadline();
    }
}
