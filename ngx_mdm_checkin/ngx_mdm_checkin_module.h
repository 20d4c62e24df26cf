
/*
 * nginx-mdm check-in and command protocol: what the module's files share.
 *
 * ngx_http_mdm_checkin_module.c   directives, the handler, the responses
 * ngx_mdm_checkin_identity.c      the device certificate and its chain
 * ngx_mdm_checkin_store.c         the SQL of every step (one round trip)
 * ngx_mdm_checkin_events.c        Redis: events stream, last_seen
 *                                 write-behind and its helper flush
 * ngx_mdm_checkin_cache.c         the worker's Idle cache and its
 *                                 invalidation (LISTEN mdm_checkin)
 */


#ifndef _NGX_MDM_CHECKIN_MODULE_H_INCLUDED_
#define _NGX_MDM_CHECKIN_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_x509.h"
#include "ngx_mdm_checkin_msg.h"


#define NGX_HTTP_MDM_CHECKIN_SIGNATURE_OFF      0
#define NGX_HTTP_MDM_CHECKIN_SIGNATURE_ON       1
#define NGX_HTTP_MDM_CHECKIN_SIGNATURE_REQUIRE  2

#define NGX_HTTP_MDM_CHECKIN_UA_DECLINE         0
#define NGX_HTTP_MDM_CHECKIN_UA_DIGEST          1

/* where the device certificate came from */
#define NGX_HTTP_MDM_CHECKIN_FROM_TLS           0
#define NGX_HTTP_MDM_CHECKIN_FROM_SIGNATURE     1
#define NGX_HTTP_MDM_CHECKIN_FROM_FORWARDED     2

#define NGX_MDM_CHECKIN_EVENTS_KEY      "mdm:events"
#define NGX_MDM_CHECKIN_LAST_SEEN_KEY   "mdm:last_seen"

#define NGX_MDM_CHECKIN_MAX_PARAMS      20


typedef struct {
    ngx_flag_t                 enable;          /* mdm_checkin */
    STACK_OF(X509)            *cas;             /* mdm_checkin_ca */
    ngx_mdm_x509_verifier_t   *verifier;
    time_t                     grace;
    ngx_uint_t                 signature;
    ngx_str_t                  forwarded_header;
    ngx_array_t               *trusted_proxies;  /* ngx_cidr_t */
    ngx_uint_t                 user_authenticate;
} ngx_http_mdm_checkin_loc_conf_t;


typedef struct {
    ngx_flag_t                 events;
    ngx_uint_t                 events_maxlen;
    ngx_msec_t                 last_seen_interval;
    ngx_msec_t                 delivery_flush;
    ngx_uint_t                 batch;           /* mdm_checkin_batch */
    ngx_flag_t                 cache;           /* mdm_checkin_cache */
    ngx_msec_t                 cache_ttl;
    ngx_uint_t                 cache_size;
    ngx_flag_t                 prepare;         /* mdm_checkin_prepare */
    ngx_uint_t                 used;            /* some mdm_checkin */
} ngx_http_mdm_checkin_main_conf_t;


typedef struct {
    X509                      *cert;
    u_char                     sha256[NGX_MDM_X509_SHA256_LEN];
    u_char                     sha256_hex[NGX_MDM_X509_SHA256_HEX_LEN + 1];
    time_t                     not_after;
    ngx_uint_t                 source;
    unsigned                   in_grace:1;
} ngx_http_mdm_checkin_identity_t;


typedef struct ngx_http_mdm_checkin_ctx_s  ngx_http_mdm_checkin_ctx_t;
typedef struct ngx_http_mdm_checkin_step_s  ngx_http_mdm_checkin_step_t;

/*
 * A step: its SQL, how its parameters are taken from the message, and what
 * answers the device once the database has spoken.
 */
typedef void (*ngx_http_mdm_checkin_done_pt)(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, PGresult *res);

struct ngx_http_mdm_checkin_step_s {
    const char                        *name;
    const char                        *sql;
    void                             (*params)(ngx_http_mdm_checkin_ctx_t *ctx);
    ngx_http_mdm_checkin_done_pt       done;
    /* several requests in one statement: $n is the array of the n-th
       parameters (bytea[] for binary ones, else text[]), the columns are
       sql's then the row's place (ngx_mdm_checkin_batch.c); NULL: never */
    const char                        *batch_sql;
};


struct ngx_http_mdm_checkin_ctx_s {
    ngx_http_mdm_checkin_loc_conf_t   *lcf;
    ngx_http_mdm_checkin_identity_t    identity;
    ngx_mdm_checkin_msg_t              msg;
    u_char                            *body;
    size_t                             len;
    const ngx_http_mdm_checkin_step_t *step;
    const char                        *reason;   /* of a refusal */
    uint64_t                           cache_gen; /* the Idle's query
                                                     began at */
    ngx_http_request_t                *request;
    ngx_queue_t                        sync_link; /* waiting for a sync */
    ngx_queue_t                        batch_link; /* waiting for a batch */
    void                              *batch;     /* the batch sent */
    int                                row;       /* its row in res */
    unsigned                           no_last_seen:1;
    unsigned                           batched:1; /* waiting or sent */

    /* query parameters; text ones are NUL-terminated */
    ngx_uint_t                         nparams;
    const char                        *values[NGX_MDM_CHECKIN_MAX_PARAMS];
    int                                lengths[NGX_MDM_CHECKIN_MAX_PARAMS];
    int                                formats[NGX_MDM_CHECKIN_MAX_PARAMS];
    u_char                             grace[NGX_TIME_T_LEN + 1];
    u_char                             not_after[NGX_TIME_T_LEN + 1];

    /* a report's delivery count taken from the worker's notes */
    ngx_uint_t                         sent;
    u_char                             sent_text[NGX_INT_T_LEN + 1];
    u_char                             sent_at[NGX_TIME_T_LEN + 5];
};


/*
 * Hooks for the steps served by other components of this folder: a
 * DeclarativeManagement component and a GetToken handler set them at
 * postconfiguration.  Called after the certificate binding was verified,
 * as a content handler would be: return an HTTP status or NGX_DONE (and
 * finalize later).  ctx->msg is valid until the request ends.  While a
 * hook is NULL the device gets 501 and a line saying what is missing.
 */
typedef ngx_int_t (*ngx_http_mdm_checkin_hook_pt)(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);

extern ngx_http_mdm_checkin_hook_pt  ngx_http_mdm_checkin_dm_hook;
extern ngx_http_mdm_checkin_hook_pt  ngx_http_mdm_checkin_get_token_hook;


extern ngx_module_t  ngx_http_mdm_checkin_module;


/* ngx_mdm_checkin_identity.c: NGX_OK, or an HTTP status (logged) */
ngx_int_t ngx_http_mdm_checkin_identity(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);
char *ngx_http_mdm_checkin_trusted_proxy(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

/*
 * ngx_mdm_checkin_store.c: runs the message's step; NGX_DONE while the
 * database works, else what ngx_http_finalize_request() takes.
 */
ngx_int_t ngx_http_mdm_checkin_run(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);

/* answers (ngx_http_mdm_checkin_module.c): what ngx_http_mdm_send gives */
ngx_int_t ngx_http_mdm_checkin_refuse(ngx_http_request_t *r,
    ngx_int_t status, const char *reason);
ngx_int_t ngx_http_mdm_checkin_answer(ngx_http_request_t *r,
    const u_char *body, size_t len);
ngx_int_t ngx_http_mdm_checkin_answer_bootstrap_token(ngx_http_request_t *r,
    const u_char *token, size_t len);
ngx_int_t ngx_http_mdm_checkin_answer_digest(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);

/* ngx_mdm_checkin_events.c: fire and forget, never fails a request */
void ngx_http_mdm_checkin_event(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, const char *event, ngx_str_t *extra,
    ngx_uint_t nextra);
ngx_int_t ngx_mdm_checkin_last_seen_init(ngx_cycle_t *cycle);
ngx_int_t ngx_mdm_checkin_delivery_init_process(ngx_cycle_t *cycle);
ngx_int_t ngx_mdm_checkin_batch_init_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_mdm_checkin_batch_usable(
    const ngx_http_mdm_checkin_step_t *step);
ngx_int_t ngx_http_mdm_checkin_batch_add(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);
void ngx_http_mdm_checkin_db_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc);
void ngx_mdm_checkin_delivered(ngx_str_t *id, u_char *uuid, size_t len);
void ngx_mdm_checkin_delivery_take(ngx_str_t *id, ngx_str_t *uuid,
    ngx_uint_t *count, u_char *at);
void ngx_mdm_checkin_delivery_untake(ngx_str_t *id, ngx_str_t *uuid,
    ngx_uint_t count, u_char *at);

/* ngx_mdm_checkin_cache.c: the Idle cache of this worker */
ngx_int_t ngx_mdm_checkin_cache_init_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_mdm_checkin_cache_usable(void);
ngx_int_t ngx_mdm_checkin_cache_lookup(const u_char *id, size_t len,
    const u_char *sha256, ngx_uint_t *last_seen);
uint64_t ngx_mdm_checkin_cache_begin(void);
void ngx_mdm_checkin_cache_fill(const u_char *id, size_t len,
    const u_char *sha256, uint64_t gen, time_t ttl);
void ngx_mdm_checkin_cache_drop(const u_char *id, size_t len);
ngx_int_t ngx_mdm_checkin_cache_wait(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);
/* store.c: the sync is done (NGX_OK) or failed: answer or ask the database */
void ngx_http_mdm_checkin_idle_synced(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, ngx_int_t rc);

/* ngx_mdm_checkin_identity.c: verified certificates of this worker */
ngx_int_t ngx_mdm_checkin_identity_init_process(ngx_cycle_t *cycle);


#endif /* _NGX_MDM_CHECKIN_MODULE_H_INCLUDED_ */
