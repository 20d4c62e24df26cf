
/*
 * libcurl multi-socket API on nginx events (DESIGN.md §5).
 *
 * curl opens, owns and closes every socket.  For each socket it reports
 * (CURLMOPT_SOCKETFUNCTION) we take an nginx connection slot on the fd and
 * watch it level-triggered, as libpq's and hiredis's sockets are watched;
 * readiness goes back to curl through curl_multi_socket_action().  curl's
 * single timeout (CURLMOPT_TIMERFUNCTION) is one nginx timer.  Finished
 * transfers are collected after each action and their handlers called.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include "ngx_mdm_curl.h"


typedef struct {
    ngx_mdm_curl_handler_pt    handler;
    void                      *data;
    unsigned                   running:1;
    char                       error[CURL_ERROR_SIZE];
} ngx_mdm_curl_ctx_t;


typedef struct {
    CURLM                     *multi;
    ngx_event_t                timer;
    ngx_log_t                 *log;
    ngx_uint_t                 running;
} ngx_mdm_curl_t;


static int ngx_mdm_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp);
static int ngx_mdm_curl_timer(CURLM *multi, long timeout_ms, void *userp);
static void ngx_mdm_curl_unwatch(ngx_connection_t *c);
static void ngx_mdm_curl_event_handler(ngx_event_t *ev);
static void ngx_mdm_curl_timer_handler(ngx_event_t *ev);
static void ngx_mdm_curl_action(curl_socket_t s, int mask);


static ngx_mdm_curl_t  ngx_mdm_curl;


ngx_int_t
ngx_mdm_curl_init(ngx_cycle_t *cycle)
{
    CURLM  *multi;

    if (ngx_mdm_curl.multi) {
        return NGX_OK;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "mdm curl_global_init() failed");
        return NGX_ERROR;
    }

    multi = curl_multi_init();
    if (multi == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "mdm curl_multi_init() failed");
        return NGX_ERROR;
    }

    (void) curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION,
                             ngx_mdm_curl_socket);
    (void) curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION,
                             ngx_mdm_curl_timer);
    (void) curl_multi_setopt(multi, CURLMOPT_PIPELINING,
                             (long) CURLPIPE_MULTIPLEX);

    ngx_mdm_curl.multi = multi;
    ngx_mdm_curl.log = cycle->log;
    ngx_mdm_curl.timer.handler = ngx_mdm_curl_timer_handler;
    ngx_mdm_curl.timer.log = cycle->log;
    ngx_mdm_curl.timer.cancelable = 1;

    return NGX_OK;
}


CURLM *
ngx_mdm_curl_multi(void)
{
    return ngx_mdm_curl.multi;
}


ngx_uint_t
ngx_mdm_curl_running(void)
{
    return ngx_mdm_curl.running;
}


CURL *
ngx_mdm_curl_create(ngx_mdm_curl_handler_pt handler, void *data)
{
    CURL                *easy;
    ngx_mdm_curl_ctx_t  *ctx;

    ctx = ngx_calloc(sizeof(ngx_mdm_curl_ctx_t), ngx_mdm_curl.log);
    if (ctx == NULL) {
        return NULL;
    }

    easy = curl_easy_init();
    if (easy == NULL) {
        ngx_free(ctx);
        return NULL;
    }

    ctx->handler = handler;
    ctx->data = data;

    (void) curl_easy_setopt(easy, CURLOPT_PRIVATE, ctx);
    (void) curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, ctx->error);
    (void) curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    (void) curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);

    return easy;
}


ngx_int_t
ngx_mdm_curl_start(CURL *easy)
{
    CURLMcode            mc;
    ngx_mdm_curl_ctx_t  *ctx;

    if (ngx_mdm_curl.multi == NULL
        || curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &ctx)
           != CURLE_OK
        || ctx == NULL || ctx->running)
    {
        return NGX_ERROR;
    }

    ctx->error[0] = '\0';

    /* curl asks for a zero timeout through the timer: the transfer starts
     * from the event loop, never from inside this call */

    mc = curl_multi_add_handle(ngx_mdm_curl.multi, easy);
    if (mc != CURLM_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_mdm_curl.log, 0,
                      "mdm curl_multi_add_handle() failed: %s",
                      curl_multi_strerror(mc));
        return NGX_ERROR;
    }

    ctx->running = 1;
    ngx_mdm_curl.running++;

    return NGX_OK;
}


void
ngx_mdm_curl_stop(CURL *easy)
{
    ngx_mdm_curl_ctx_t  *ctx;

    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &ctx)
        != CURLE_OK
        || ctx == NULL || !ctx->running)
    {
        return;
    }

    (void) curl_multi_remove_handle(ngx_mdm_curl.multi, easy);

    ctx->running = 0;
    ngx_mdm_curl.running--;
}


void
ngx_mdm_curl_destroy(CURL *easy)
{
    ngx_mdm_curl_ctx_t  *ctx;

    ngx_mdm_curl_stop(easy);

    ctx = NULL;
    (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &ctx);

    curl_easy_cleanup(easy);

    if (ctx) {
        ngx_free(ctx);
    }
}


const char *
ngx_mdm_curl_error(CURL *easy, CURLcode rc)
{
    ngx_mdm_curl_ctx_t  *ctx;

    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &ctx)
        == CURLE_OK
        && ctx && ctx->error[0])
    {
        return ctx->error;
    }

    return curl_easy_strerror(rc);
}


/*
 * CURLMOPT_SOCKETFUNCTION.  socketp is the nginx connection we took for
 * the socket (curl_multi_assign), NULL the first time curl reports it.
 */

static int
ngx_mdm_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp,
    void *socketp)
{
    ngx_connection_t  *c;

    c = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (c) {
            ngx_mdm_curl_unwatch(c);
            (void) curl_multi_assign(ngx_mdm_curl.multi, s, NULL);
        }
        return 0;
    }

    if (c == NULL) {
        c = ngx_get_connection(s, ngx_mdm_curl.log);
        if (c == NULL) {
            return -1;
        }

        c->data = NULL;
        c->log = ngx_mdm_curl.log;
        c->read->handler = ngx_mdm_curl_event_handler;
        c->write->handler = ngx_mdm_curl_event_handler;
        c->read->log = ngx_mdm_curl.log;
        c->write->log = ngx_mdm_curl.log;

        (void) curl_multi_assign(ngx_mdm_curl.multi, s, c);
    }

    if ((what & CURL_POLL_IN) && !c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return -1;
        }

    } else if (!(what & CURL_POLL_IN) && c->read->active) {
        if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
            return -1;
        }
    }

    if ((what & CURL_POLL_OUT) && !c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return -1;
        }

    } else if (!(what & CURL_POLL_OUT) && c->write->active) {
        if (ngx_del_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
            return -1;
        }
    }

    return 0;
}


/*
 * CURL_POLL_REMOVE: give the slot back without closing the fd, which is
 * curl's.  The fd is still open here: curl says REMOVE before it closes a
 * socket, and also for a connection it keeps idle in its cache.  So the fd
 * is taken out of epoll for real, not with NGX_CLOSE_EVENT: an idle HTTP/2
 * connection still receives PINGs and GOAWAYs, and a level-triggered fd left
 * in epoll would then fire into a freed slot.
 */

static void
ngx_mdm_curl_unwatch(ngx_connection_t *c)
{
    if (c->read->active || c->write->active) {
        (void) ngx_del_conn(c, 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
}


static int
ngx_mdm_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    /* ngx_add_timer() keeps a set timer that is less than 300 ms off */

    if (ngx_mdm_curl.timer.timer_set) {
        ngx_del_timer(&ngx_mdm_curl.timer);
    }

    if (timeout_ms >= 0) {
        ngx_add_timer(&ngx_mdm_curl.timer, (ngx_msec_t) timeout_ms);
    }

    return 0;
}


static void
ngx_mdm_curl_event_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    ngx_mdm_curl_action(c->fd, ev->write ? CURL_CSELECT_OUT
                                         : CURL_CSELECT_IN);
}


static void
ngx_mdm_curl_timer_handler(ngx_event_t *ev)
{
    ngx_mdm_curl_action(CURL_SOCKET_TIMEOUT, 0);
}


/*
 * Tell curl about the socket (which may give it back, closing the
 * connection slot), then complete what finished.  A handler may start new
 * transfers: curl only asks for a timer then.
 */

static void
ngx_mdm_curl_action(curl_socket_t s, int mask)
{
    int                  running, left;
    CURL                *easy;
    CURLcode             rc;
    CURLMsg             *msg;
    CURLMcode            mc;
    ngx_mdm_curl_ctx_t  *ctx;

    mc = curl_multi_socket_action(ngx_mdm_curl.multi, s, mask, &running);

    if (mc != CURLM_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_mdm_curl.log, 0,
                      "mdm curl_multi_socket_action() failed: %s",
                      curl_multi_strerror(mc));
    }

    while ((msg = curl_multi_info_read(ngx_mdm_curl.multi, &left))) {

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        rc = msg->data.result;

        ctx = NULL;
        (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &ctx);

        (void) curl_multi_remove_handle(ngx_mdm_curl.multi, easy);

        if (ctx == NULL || !ctx->running) {
            continue;
        }

        ctx->running = 0;
        ngx_mdm_curl.running--;

        ctx->handler(easy, rc, ctx->data);
    }
}
