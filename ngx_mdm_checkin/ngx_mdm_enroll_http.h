
/*
 * nginx-mdm enrollment module: what its files share (the configuration,
 * the request context, the steps every flow ends with).  Nothing outside
 * ngx_mdm_checkin/ngx_*enroll* includes it.
 */


#ifndef _NGX_MDM_ENROLL_HTTP_H_INCLUDED_
#define _NGX_MDM_ENROLL_HTTP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_x509.h"
#include "ngx_mdm_enroll.h"


/* what a location serves (mdm_enroll) */
#define NGX_HTTP_MDM_ENROLL_OFF          0
#define NGX_HTTP_MDM_ENROLL_ADE          1   /* ADE url: MachineInfo */
#define NGX_HTTP_MDM_ENROLL_SSO          2   /* configuration_web_url */
#define NGX_HTTP_MDM_ENROLL_OTA_PROFILE  3   /* OTA phase 1 */
#define NGX_HTTP_MDM_ENROLL_OTA          4   /* OTA phases 2 and 3 */

/* a signed request body larger than this is refused (Fleet: 10 KiB) */
#define NGX_HTTP_MDM_ENROLL_BODY_MAX     (64 * 1024)

/* one-time OTA tokens: random bytes, handed out in hex */
#define NGX_HTTP_MDM_ENROLL_TOKEN_BYTES  24


/* what the device is told when it is refused (a table, not ifs) */
typedef enum {
    NGX_HTTP_MDM_ENROLL_E_NO_DEVICE_INFO = 0,
    NGX_HTTP_MDM_ENROLL_E_MALFORMED,
    NGX_HTTP_MDM_ENROLL_E_SIGNATURE,
    NGX_HTTP_MDM_ENROLL_E_NOT_APPLE,
    NGX_HTTP_MDM_ENROLL_E_ATTRIBUTES,
    NGX_HTTP_MDM_ENROLL_E_TOKEN,
    NGX_HTTP_MDM_ENROLL_E_IDENTITY,
    NGX_HTTP_MDM_ENROLL_E_NO_USER,
    NGX_HTTP_MDM_ENROLL_E_TOO_LARGE
} ngx_http_mdm_enroll_error_e;


/* the profile a flow ends with */
typedef enum {
    NGX_HTTP_MDM_ENROLL_PROFILE_FULL = 0,  /* SCEP + MDM */
    NGX_HTTP_MDM_ENROLL_PROFILE_OTA_SCEP    /* OTA phase 2: SCEP alone */
} ngx_http_mdm_enroll_profile_e;


typedef struct {
    ngx_str_t                       platform;   /* macos, ios, ... */
    ngx_str_t                       version;
    ngx_str_t                       build;      /* may be empty */
} ngx_http_mdm_enroll_min_os_t;


typedef struct {
    ngx_mdm_x509_verifier_t        *apple;      /* Apple iPhone Device CA */
} ngx_http_mdm_enroll_main_conf_t;


typedef struct {
    ngx_uint_t                      mode;
    ngx_str_t                       mode_file;  /* where mdm_enroll is */
    ngx_uint_t                      mode_line;

    /* the profile */
    ngx_str_t                       identifier;
    ngx_str_t                       display_name;
    ngx_str_t                       description;
    ngx_str_t                       organization;
    ngx_str_t                       scep_url;
    ngx_str_t                       scep_name;
    ngx_array_t                    *subject;    /* ngx_mdm_enroll_rdn_t */
    ngx_int_t                       key_size;
    ngx_str_t                       server_url;
    ngx_str_t                       checkin_url;
    ngx_str_t                       topic;
    ngx_int_t                       access_rights;
    ngx_flag_t                      sign_message;
    ngx_flag_t                      check_out_when_removed;
    ngx_array_t                    *capabilities;   /* char * */
    time_t                          challenge_ttl;

    /* profile signing */
    X509                           *sign_cert;
    STACK_OF(X509)                 *sign_chain;
    EVP_PKEY                       *sign_key;

    /* who: the authenticated user */
    ngx_http_complex_value_t       *user;

    /* device identities: Apple's (ADE, OTA phase 2), ours (phase 3) */
    ngx_mdm_x509_verifier_t        *apple;
    ngx_mdm_x509_verifier_t        *scep_ca;

    ngx_array_t                    *min_os;  /* ngx_http_mdm_enroll_min_os_t */

    /* OTA */
    ngx_str_t                       ota_url;
    time_t                          ota_token_ttl;

    /* fixed per server: a reinstalled profile replaces the old one */
    char                            uuid[NGX_MDM_ENROLL_UUID_LEN + 1];
    char                            scep_uuid[NGX_MDM_ENROLL_UUID_LEN + 1];
    char                            mdm_uuid[NGX_MDM_ENROLL_UUID_LEN + 1];
    char                            service_uuid[NGX_MDM_ENROLL_UUID_LEN + 1];
    char                            ota_uuid[NGX_MDM_ENROLL_UUID_LEN + 1];
    char                            ota_scep_uuid[NGX_MDM_ENROLL_UUID_LEN
                                                  + 1];
    char                           *scep_identifier;
    char                           *mdm_identifier;
    char                           *service_identifier;
    char                           *ota_identifier;
    char                           *ota_scep_identifier;
} ngx_http_mdm_enroll_loc_conf_t;


typedef struct {
    ngx_http_mdm_enroll_loc_conf_t *conf;
    ngx_mdm_enroll_info_t           info;       /* root freed by cleanup */
    ngx_str_t                       info_json;  /* NUL-terminated */
    ngx_str_t                       user;       /* NUL-terminated or empty */
    ngx_str_t                       token_id;   /* OTA: the consumed token */
    const char                     *purpose;    /* of the challenge */
    const char                     *source;     /* ade, sso, ota */
    ngx_http_mdm_enroll_profile_e   profile;
    ngx_int_t                       rc;         /* of a refusal sent */
    ngx_str_t                       challenge;
    u_char                          cert_sha256[NGX_MDM_X509_SHA256_HEX_LEN
                                                + 1];
} ngx_http_mdm_enroll_ctx_t;


extern ngx_module_t  ngx_http_mdm_enroll_module;


/* ngx_http_mdm_enroll_module.c */
ngx_int_t ngx_http_mdm_enroll_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_mdm_enroll_error(ngx_http_request_t *r,
    ngx_http_mdm_enroll_error_e err);
ngx_int_t ngx_http_mdm_enroll_verify_error(ngx_http_request_t *r,
    ngx_mdm_x509_rc_e rc, const char *what);
ngx_int_t ngx_http_mdm_enroll_device_info(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, u_char *content, size_t len);
ngx_int_t ngx_http_mdm_enroll_issue(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx);
ngx_int_t ngx_http_mdm_enroll_send_profile(ngx_http_request_t *r,
    plist_t profile, ngx_str_t *filename);
ngx_int_t ngx_http_mdm_enroll_user(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx);

/* ngx_mdm_enroll_conf.c: configuration (the module's tables point here) */
void *ngx_http_mdm_enroll_create_main_conf(ngx_conf_t *cf);
char *ngx_http_mdm_enroll_init_main_conf(ngx_conf_t *cf, void *conf);
void *ngx_http_mdm_enroll_create_loc_conf(ngx_conf_t *cf);
char *ngx_http_mdm_enroll_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
char *ngx_http_mdm_enroll(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_mdm_enroll_text(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_mdm_enroll_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_mdm_enroll_subject(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_mdm_enroll_topic(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_mdm_enroll_push_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_mdm_enroll_capabilities(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_mdm_enroll_signing_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_mdm_enroll_signing_key(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_mdm_enroll_ca(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_mdm_enroll_min_os(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_mdm_enroll_check_access_rights(ngx_conf_t *cf,
    void *post, void *data);
char *ngx_http_mdm_enroll_check_key_size(ngx_conf_t *cf, void *post,
    void *data);

/* ngx_mdm_enroll_ota.c */
ngx_int_t ngx_http_mdm_enroll_ota_profile(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx);
ngx_int_t ngx_http_mdm_enroll_ota_post(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, u_char *body, size_t len);


#endif /* _NGX_MDM_ENROLL_HTTP_H_INCLUDED_ */
