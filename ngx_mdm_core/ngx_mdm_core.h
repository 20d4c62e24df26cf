
/*
 * nginx-mdm core: what the protocol modules may call.
 *
 * PostgreSQL pool, Redis client, helper-process runtime, shared counters
 * and the request glue that waits for a query without blocking the worker.
 * Nothing here knows a protocol module.
 */


#ifndef _NGX_MDM_CORE_H_INCLUDED_
#define _NGX_MDM_CORE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <libpq-fe.h>


typedef struct ngx_mdm_pg_query_s  ngx_mdm_pg_query_t;

/*
 * Completion of a query.  rc is
 *   NGX_OK        res holds the last result (PGRES_TUPLES_OK / COMMAND_OK),
 *   NGX_ERROR     the server answered an error: res holds it (SQLSTATE via
 *                 PQresultErrorField(res, PG_DIAG_SQLSTATE)),
 *   NGX_DECLINED  no healthy connection or the query timed out: res is NULL,
 *                 the caller answers 503.
 * res is cleared by the pool after the handler returns.
 */
typedef void (*ngx_mdm_pg_handler_pt)(void *data, PGresult *res,
    ngx_int_t rc);


typedef struct {
    const char                *sql;
    int                        nparams;
    const char *const         *values;
    const int                 *lengths;   /* NULL: all text */
    const int                 *formats;   /* NULL: all text */
    int                        result_format;   /* 0 text, 1 binary */
    unsigned                   simple:1;  /* PQsendQuery, several
                                             statements, no params */
    unsigned                   prepare:1; /* sql is a constant: prepare
                                             it once per connection and
                                             run it by name (not behind
                                             a transaction pooler) */
    ngx_mdm_pg_handler_pt      handler;
    void                      *data;
    ngx_log_t                 *log;
} ngx_mdm_pg_args_t;


/* PostgreSQL pool of this process (ngx_mdm_pg.c) */
ngx_mdm_pg_query_t *ngx_mdm_pg_query(ngx_mdm_pg_args_t *args);
void ngx_mdm_pg_cancel(ngx_mdm_pg_query_t *q);
ngx_uint_t ngx_mdm_pg_healthy(void);

/*
 * LISTEN on one channel on a connection of its own (one per process, not
 * behind a transaction pooler).  handler(data, payload) for each
 * notification; handler(data, NULL) when notifications may have been
 * missed: LISTEN has just taken effect, or its connection was lost (it is
 * reconnected as the pool's are).  NGX_DECLINED: no database configured,
 * or a channel is already listened to.
 */
typedef void (*ngx_mdm_pg_notify_pt)(void *data, const char *payload);
typedef void (*ngx_mdm_pg_sync_pt)(void *data, ngx_int_t rc);

ngx_int_t ngx_mdm_pg_listen(const char *channel,
    ngx_mdm_pg_notify_pt handler, ngx_mdm_pg_sync_pt sync, void *data);
ngx_uint_t ngx_mdm_pg_listening(void);
/* deliver the notifications already received, without waiting */
void ngx_mdm_pg_listen_poll(void);
/*
 * A round trip on the LISTEN connection: when sync(data, NGX_OK) is called,
 * the notifications of every transaction committed before the call have
 * been delivered (NGX_ERROR: the connection was lost).  NGX_OK: sent,
 * NGX_BUSY: one is under way (its answer may not cover this call),
 * NGX_DECLINED: not listening.
 */
ngx_int_t ngx_mdm_pg_listen_sync(void);


/*
 * Request glue: run a query for r and call handler(r, res, rc) when it is
 * done.  Takes a reference on r (r->main->count) and drops it after the
 * handler; the handler finalizes r as a content handler would.  If r goes
 * away first, the query's answer is dropped.  Returns NGX_DONE, or an HTTP
 * status to finalize with at once (503 when the database is down).
 */
typedef void (*ngx_http_mdm_pg_handler_pt)(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);

ngx_int_t ngx_http_mdm_pg_query(ngx_http_request_t *r,
    ngx_mdm_pg_args_t *args, ngx_http_mdm_pg_handler_pt handler);

/* 503 with Retry-After, for "storage down" */
ngx_int_t ngx_http_mdm_unavailable(ngx_http_request_t *r);

/* send a complete response with a body from memory */
ngx_int_t ngx_http_mdm_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, u_char *body, size_t len);


/*
 * One-time SCEP challenges (ngx_mdm_challenge.c), minted by the enrollment
 * endpoints and the admin API, consumed by SCEP.  Only the SHA-256 of a
 * challenge is stored.  handler(r, rc, challenge, expires_at): rc NGX_OK, or
 * NGX_ERROR / NGX_DECLINED as for queries (the handler answers 500 / 503).
 */
typedef void (*ngx_http_mdm_challenge_handler_pt)(ngx_http_request_t *r,
    ngx_int_t rc, ngx_str_t *challenge, time_t expires_at);

typedef struct {
    const char                *purpose;     /* enroll, ota, api, ... */
    ngx_str_t                  udid;        /* binds it to a device */
    ngx_str_t                  serial;
    time_t                     ttl;         /* seconds */
} ngx_mdm_challenge_args_t;

ngx_int_t ngx_http_mdm_challenge_mint(ngx_http_request_t *r,
    ngx_mdm_challenge_args_t *args,
    ngx_http_mdm_challenge_handler_pt handler);

/* lowercase hex SHA-256 of a challenge, as stored: 65 bytes with the NUL */
void ngx_mdm_challenge_digest(const u_char *challenge, size_t len,
    u_char *hex);


/* Redis (ngx_mdm_redis.c) */
typedef struct ngx_mdm_redis_cmd_s  ngx_mdm_redis_cmd_t;

/*
 * reply is a redisReply *, NULL when the command failed (no connection,
 * timeout, disconnect); it is freed by hiredis after the handler.
 */
typedef void (*ngx_mdm_redis_handler_pt)(void *data, void *reply);

ngx_mdm_redis_cmd_t *ngx_mdm_redis_command(ngx_log_t *log,
    ngx_mdm_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);
void ngx_mdm_redis_cancel(ngx_mdm_redis_cmd_t *cmd);
ngx_uint_t ngx_mdm_redis_healthy(void);


/* helper process (ngx_mdm_helper.c) */
typedef ngx_int_t (*ngx_mdm_helper_init_pt)(ngx_cycle_t *cycle);

ngx_int_t ngx_mdm_helper_register(ngx_conf_t *cf,
    ngx_mdm_helper_init_pt init);
ngx_int_t ngx_mdm_helper_schema_ready(void);


/*
 * Work a worker finishes before it leaves gracefully (reload, quit): the
 * handler runs once, when nginx closes the worker's idle connections.  A
 * handler that starts a query is waited for (ngx_mdm_module.c).
 */
typedef void (*ngx_mdm_exiting_pt)(void);

ngx_int_t ngx_mdm_on_exiting(ngx_cycle_t *cycle, ngx_mdm_exiting_pt handler);


/* shared counters (shared memory, this node) */
typedef struct {
    ngx_atomic_t               helper_heartbeat;   /* unix time */
    ngx_atomic_t               helper_pid;
    ngx_atomic_t               schema_version;
    ngx_atomic_t               pg_errors;
    ngx_atomic_t               pg_unavailable;
    ngx_atomic_t               redis_errors;
    ngx_atomic_t               requests;
    ngx_atomic_t               counters[32];   /* owned by the modules */
} ngx_mdm_shm_t;

ngx_mdm_shm_t *ngx_mdm_shm(void);


/* core main configuration */
typedef struct {
    ngx_str_t                  pg_conninfo;
    ngx_array_t               *pg_keywords;   /* of char *, NULL ended */
    ngx_array_t               *pg_values;
    ngx_uint_t                 pg_pool_size;
    ngx_msec_t                 pg_connect_timeout;
    ngx_msec_t                 pg_timeout;
    ngx_uint_t                 pg_queue_size;

    ngx_str_t                  redis;
    ngx_addr_t                *redis_addr;   /* NULL: unix socket */
    ngx_str_t                  redis_path;
    ngx_msec_t                 redis_timeout;

    time_t                     retry_after;

    ngx_str_t                  helper_dir;
    ngx_path_t                *helper_path;
    ngx_array_t                helper_inits;   /* ngx_mdm_helper_init_pt */
    ngx_shm_zone_t            *shm_zone;
    ngx_flag_t                 migrate;
} ngx_http_mdm_core_main_conf_t;


typedef struct {
    ngx_str_t                  debug_query;
} ngx_mdm_loc_conf_t;


extern ngx_module_t  ngx_mdm_module;

ngx_http_mdm_core_main_conf_t *ngx_mdm_core_conf(void);

ngx_int_t ngx_mdm_pg_init_process(ngx_cycle_t *cycle,
    ngx_http_mdm_core_main_conf_t *cmcf);
ngx_int_t ngx_mdm_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_mdm_core_main_conf_t *cmcf);
void ngx_mdm_pg_exit_process(void);
void ngx_mdm_redis_exit_process(void);
ngx_msec_t ngx_mdm_helper_manager(void *data);


#endif /* _NGX_MDM_CORE_H_INCLUDED_ */
