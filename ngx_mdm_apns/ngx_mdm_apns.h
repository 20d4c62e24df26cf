
/*
 * nginx-mdm APNs push: what the module's files share.
 *
 * ngx_http_mdm_apns_module.c  directives, push certificates, status
 * ngx_mdm_apns_push.c         the helper task: claim, push, record
 * ngx_mdm_apns_hint.c         the Redis "mdm:push" subscriber
 */


#ifndef _NGX_MDM_APNS_H_INCLUDED_
#define _NGX_MDM_APNS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_MDM_APNS_PRODUCTION       "https://api.push.apple.com"
#define NGX_MDM_APNS_SANDBOX          "https://api.sandbox.push.apple.com"
#define NGX_MDM_APNS_HINT_CHANNEL     "mdm:push"

#define NGX_MDM_APNS_EXPIRATION_OFF   -2


/* an operator's push certificate; its topic chooses it */
typedef struct {
    ngx_str_t                  topic;         /* the subject UID */
    ngx_str_t                  cert_file;
    ngx_str_t                  cert_pem;      /* leaf, for the curl blob */
    ngx_str_t                  key_pem;       /* unencrypted, ditto */
    time_t                     not_after;
    ngx_uint_t                 line;          /* of mdm_apns_certificate */
    time_t                     logged;        /* helper: last 403 logged */
} ngx_mdm_apns_cert_t;


/* this node's counters, in shared memory ("mdm_apns" zone) */
typedef struct {
    ngx_atomic_t               claimed;
    ngx_atomic_t               sent;
    ngx_atomic_t               failed;
    ngx_atomic_t               retried;
    ngx_atomic_t               invalid_tokens;
    ngx_atomic_t               certificate_errors;
    ngx_atomic_t               certificate_error;       /* 403 since 200 */
    ngx_atomic_t               certificate_error_at;    /* unix time */
    ngx_atomic_t               last_sent_at;            /* unix time */
    ngx_atomic_t               connections;
    ngx_atomic_t               in_flight;
    ngx_atomic_t               helper_pid;
} ngx_mdm_apns_shm_t;


typedef struct {
    ngx_array_t                certs;         /* ngx_mdm_apns_cert_t */
    ngx_str_t                  endpoint;
    ngx_str_t                  trusted_pem;   /* CA for the endpoint */
    time_t                     expiration;
    time_t                     expiry_warning;
    ngx_msec_t                 poll_interval;
    ngx_msec_t                 sweep_interval;
    ngx_msec_t                 coalesce;
    ngx_msec_t                 timeout;
    ngx_msec_t                 backoff_min;
    ngx_msec_t                 backoff_max;
    ngx_uint_t                 max_attempts;
    ngx_uint_t                 batch_size;
    ngx_uint_t                 concurrency;
    ngx_shm_zone_t            *shm_zone;
} ngx_http_mdm_apns_main_conf_t;


extern ngx_module_t  ngx_http_mdm_apns_module;


ngx_mdm_apns_shm_t *ngx_mdm_apns_shm(ngx_http_mdm_apns_main_conf_t *amcf);

/* the helper task (ngx_mdm_apns_push.c), registered by postconfiguration */
ngx_int_t ngx_mdm_apns_helper_init(ngx_cycle_t *cycle);

/* the hint subscriber calls wake(); it connects only if mdm_redis is set */
ngx_int_t ngx_mdm_apns_hint_start(ngx_cycle_t *cycle, void (*wake)(void));


#endif /* _NGX_MDM_APNS_H_INCLUDED_ */
