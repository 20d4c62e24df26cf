
/*
 * The push hint: a Redis connection of the helper's own, subscribed to
 * "mdm:push".  Writers PUBLISH there after they have recorded a push
 * request in PostgreSQL; any message (and every (re)subscription, since
 * messages published meanwhile are lost) makes the helper claim at once.
 * The core's Redis connection cannot carry it: a subscribed connection
 * takes no other command.
 *
 * A plain nginx peer connection (ours: we close it) and hiredis's reply
 * parser.  Losing the hint costs latency only: the poll timer still
 * claims every mdm_apns_poll_interval.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include <hiredis/hiredis.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_apns.h"


#define NGX_MDM_APNS_HINT_BACKOFF_MIN  100
#define NGX_MDM_APNS_HINT_BACKOFF_MAX  5000


typedef struct {
    ngx_peer_connection_t      peer;
    struct sockaddr_un         sun;
    ngx_str_t                  name;
    redisReader               *reader;
    ngx_event_t                timer;       /* connect, or back-off */
    ngx_msec_t                 backoff;
    ngx_msec_t                 timeout;
    size_t                     sent;
    void                     (*wake)(void);
    ngx_log_t                 *log;
    ngx_log_t                  conn_log;
    unsigned                   subscribed:1;
} ngx_mdm_apns_hint_t;


static void ngx_mdm_apns_hint_connect(void);
static void ngx_mdm_apns_hint_write(ngx_event_t *ev);
static void ngx_mdm_apns_hint_read(ngx_event_t *ev);
static void ngx_mdm_apns_hint_message(redisReply *reply);
static void ngx_mdm_apns_hint_close(const char *why);
static void ngx_mdm_apns_hint_timer(ngx_event_t *ev);


/* SUBSCRIBE mdm:push in RESP; the 8 is the channel's length */
static const char  ngx_mdm_apns_hint_subscribe[] =
    "*2\r\n$9\r\nSUBSCRIBE\r\n$8\r\n" NGX_MDM_APNS_HINT_CHANNEL "\r\n";


static ngx_mdm_apns_hint_t  ngx_mdm_apns_hint;


ngx_int_t
ngx_mdm_apns_hint_start(ngx_cycle_t *cycle, void (*wake)(void))
{
    ngx_mdm_apns_hint_t            *h;
    ngx_http_mdm_core_main_conf_t  *cmcf;

    cmcf = ngx_mdm_core_conf();

    if (cmcf == NULL || cmcf->redis.len == 0) {
        return NGX_OK;
    }

    h = &ngx_mdm_apns_hint;
    ngx_memzero(h, sizeof(ngx_mdm_apns_hint_t));

    h->wake = wake;
    h->log = cycle->log;
    h->name = cmcf->redis;
    h->timeout = cmcf->redis_timeout;

    if (cmcf->redis_addr) {
        h->peer.sockaddr = cmcf->redis_addr->sockaddr;
        h->peer.socklen = cmcf->redis_addr->socklen;

    } else {
        if (cmcf->redis_path.len >= sizeof(h->sun.sun_path)) {
            return NGX_ERROR;
        }

        h->sun.sun_family = AF_UNIX;
        ngx_memcpy(h->sun.sun_path, cmcf->redis_path.data,
                   cmcf->redis_path.len);

        h->peer.sockaddr = (struct sockaddr *) &h->sun;
        h->peer.socklen = sizeof(struct sockaddr_un);
    }

    /*
     * nginx logs a connect() to a missing unix socket (Redis stopped) at
     * crit; the connection's own log stays quiet, and close() says what
     * happened at error level
     */
    h->conn_log = *cycle->log;
    h->conn_log.log_level = NGX_LOG_ALERT;

    h->peer.name = &h->name;
    h->peer.get = ngx_event_get_peer;
    h->peer.log = &h->conn_log;
    h->peer.log_error = NGX_ERROR_ERR;

    h->timer.handler = ngx_mdm_apns_hint_timer;
    h->timer.log = cycle->log;
    h->timer.cancelable = 1;

    ngx_mdm_apns_hint_connect();

    return NGX_OK;
}


static void
ngx_mdm_apns_hint_connect(void)
{
    ngx_int_t             rc;
    ngx_connection_t     *c;
    ngx_mdm_apns_hint_t  *h;

    h = &ngx_mdm_apns_hint;

    h->reader = redisReaderCreate();
    if (h->reader == NULL) {
        ngx_mdm_apns_hint_close("out of memory");
        return;
    }

    rc = ngx_event_connect_peer(&h->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_mdm_apns_hint_close("connect failed");
        return;
    }

    c = h->peer.connection;
    c->data = h;
    c->read->handler = ngx_mdm_apns_hint_read;
    c->write->handler = ngx_mdm_apns_hint_write;

    h->sent = 0;
    h->subscribed = 0;

    /* bounds the connect and the subscription's confirmation */
    ngx_add_timer(&h->timer, h->timeout);

    if (rc == NGX_OK) {
        ngx_mdm_apns_hint_write(c->write);
    }
}


static void
ngx_mdm_apns_hint_write(ngx_event_t *ev)
{
    ssize_t               n;
    ngx_connection_t     *c;
    ngx_mdm_apns_hint_t  *h;

    c = ev->data;
    h = c->data;

    while (h->sent < sizeof(ngx_mdm_apns_hint_subscribe) - 1) {
        n = c->send(c, (u_char *) ngx_mdm_apns_hint_subscribe + h->sent,
                    sizeof(ngx_mdm_apns_hint_subscribe) - 1 - h->sent);

        if (n == NGX_AGAIN) {
            (void) ngx_handle_write_event(ev, 0);
            return;
        }

        if (n == NGX_ERROR) {
            ngx_mdm_apns_hint_close("send failed");
            return;
        }

        h->sent += n;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_mdm_apns_hint_close("cannot watch the socket");
    }
}


static void
ngx_mdm_apns_hint_read(ngx_event_t *ev)
{
    void                 *reply;
    u_char                buf[4096];
    ssize_t               n;
    ngx_connection_t     *c;
    ngx_mdm_apns_hint_t  *h;

    c = ev->data;
    h = c->data;

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_mdm_apns_hint_close(n == 0 ? "connection closed"
                                           : "recv failed");
            return;
        }

        if (redisReaderFeed(h->reader, (char *) buf, n) != REDIS_OK) {
            ngx_mdm_apns_hint_close("out of memory");
            return;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(h->reader, &reply) != REDIS_OK) {
                ngx_mdm_apns_hint_close("protocol error");
                return;
            }

            if (reply == NULL) {
                break;
            }

            ngx_mdm_apns_hint_message(reply);
            freeReplyObject(reply);

            if (h->peer.connection == NULL) {
                /* closed on an error reply */
                return;
            }
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_mdm_apns_hint_close("cannot watch the socket");
    }
}


/* ["subscribe", channel, n] once, then ["message", channel, payload] */

static void
ngx_mdm_apns_hint_message(redisReply *reply)
{
    redisReply           *kind;
    ngx_mdm_apns_hint_t  *h;

    h = &ngx_mdm_apns_hint;

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, h->log, 0,
                      "mdm apns hint: redis answered \"%*s\"",
                      ngx_min(reply->len, 128), reply->str);
        ngx_mdm_apns_hint_close(NULL);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    kind = reply->element[0];

    if (kind->len == 9 && ngx_strncasecmp((u_char *) kind->str,
                                          (u_char *) "subscribe", 9) == 0)
    {
        if (h->timer.timer_set) {
            ngx_del_timer(&h->timer);
        }

        h->subscribed = 1;
        h->backoff = 0;

        ngx_log_error(NGX_LOG_INFO, h->log, 0,
                      "mdm apns hint subscribed to \""
                      NGX_MDM_APNS_HINT_CHANNEL "\"");

        /* what was published while we were not listening */
        h->wake();
        return;
    }

    if (kind->len == 7 && ngx_strncasecmp((u_char *) kind->str,
                                          (u_char *) "message", 7) == 0)
    {
        h->wake();
    }
}


static void
ngx_mdm_apns_hint_close(const char *why)
{
    ngx_mdm_apns_hint_t  *h;

    h = &ngx_mdm_apns_hint;

    if (why && (h->subscribed || h->backoff == 0)) {
        ngx_log_error(NGX_LOG_ERR, h->log, 0,
                      "mdm apns hint connection to redis \"%V\": %s, "
                      "reconnecting", &h->name, why);
    }

    if (h->peer.connection) {
        ngx_close_connection(h->peer.connection);
        h->peer.connection = NULL;
    }

    if (h->reader) {
        redisReaderFree(h->reader);
        h->reader = NULL;
    }

    h->subscribed = 0;
    h->backoff = h->backoff ? ngx_min(h->backoff * 2,
                                      NGX_MDM_APNS_HINT_BACKOFF_MAX)
                            : NGX_MDM_APNS_HINT_BACKOFF_MIN;

    if (h->timer.timer_set) {
        ngx_del_timer(&h->timer);
    }

    ngx_add_timer(&h->timer, h->backoff);
}


static void
ngx_mdm_apns_hint_timer(ngx_event_t *ev)
{
    ngx_mdm_apns_hint_t  *h;

    h = &ngx_mdm_apns_hint;

    if (h->peer.connection) {
        ngx_mdm_apns_hint_close("no subscription in time");
        return;
    }

    ngx_mdm_apns_hint_connect();
}
