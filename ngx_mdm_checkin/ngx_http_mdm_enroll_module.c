
/*
 * ngx_http_mdm_enroll_module: enrollment profiles (PROTOCOL.md §2).
 *
 *   mdm_enroll ade;          the ADE url: GET with x-apple-aspen-deviceinfo
 *                            or POST of the signed MachineInfo
 *   mdm_enroll sso;          the ADE configuration_web_url, behind
 *                            whatever authentication nginx runs
 *   mdm_enroll ota_profile;  OTA phase 1: the Profile Service profile
 *   mdm_enroll ota;          OTA phases 2 and 3 (ngx_mdm_enroll_ota.c)
 *
 * Every flow ends the same way: a one-time SCEP challenge minted by the
 * core for this request (bound to the device when it is known), the user
 * and the device recorded with it, and a CMS-signed profile.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_enroll_http.h"
#include "ngx_mdm_enroll_sql.h"


#define NGX_HTTP_MDM_ENROLL_USER_MAX  256


typedef struct {
    ngx_uint_t                      status;
    ngx_str_t                       message;    /* shown by the device */
} ngx_http_mdm_enroll_refusal_t;


static ngx_int_t ngx_http_mdm_enroll_handler(ngx_http_request_t *r);
static void ngx_http_mdm_enroll_cleanup(void *data);
static void ngx_http_mdm_enroll_body(ngx_http_request_t *r);
static u_char *ngx_http_mdm_enroll_read_body(ngx_http_request_t *r,
    size_t *len);
static ngx_int_t ngx_http_mdm_enroll_machine_info(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, u_char *der, size_t len,
    ngx_str_t *b64);
static ngx_int_t ngx_http_mdm_enroll_header_info(ngx_http_request_t *r,
    ngx_str_t *b64);
static ngx_int_t ngx_http_mdm_enroll_os_gate(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx);
static void ngx_http_mdm_enroll_minted(ngx_http_request_t *r, ngx_int_t rc,
    ngx_str_t *challenge, time_t expires_at);
static void ngx_http_mdm_enroll_recorded(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static plist_t ngx_http_mdm_enroll_build(ngx_http_mdm_enroll_ctx_t *ctx);
static void ngx_http_mdm_enroll_free_der(void *data);
static ngx_int_t ngx_http_mdm_enroll_header(ngx_http_request_t *r,
    char *key, ngx_str_t *value);

static void *ngx_http_mdm_enroll_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_enroll_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_mdm_enroll_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_enroll_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_mdm_enroll_check(ngx_conf_t *cf,
    ngx_http_mdm_enroll_loc_conf_t *conf);
static char *ngx_http_mdm_enroll_derive(ngx_conf_t *cf,
    ngx_http_mdm_enroll_loc_conf_t *conf);
static char *ngx_http_mdm_enroll(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_enroll_text(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_enroll_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_enroll_subject(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_enroll_cstr(ngx_pool_t *pool, u_char *data,
    size_t len);
static char *ngx_http_mdm_enroll_topic(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_enroll_push_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mdm_enroll_capabilities(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mdm_enroll_signing_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mdm_enroll_signing_key(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mdm_enroll_ca(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_enroll_min_os(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_mdm_x509_verifier_t *ngx_http_mdm_enroll_verifier(ngx_conf_t *cf,
    STACK_OF(X509) *cas, unsigned flags);
static void ngx_http_mdm_enroll_free_verifier(void *data);
static void ngx_http_mdm_enroll_free_chain(void *data);
static void ngx_http_mdm_enroll_free_key(void *data);
static char *ngx_http_mdm_enroll_check_access_rights(ngx_conf_t *cf,
    void *post, void *data);
static char *ngx_http_mdm_enroll_check_key_size(ngx_conf_t *cf, void *post,
    void *data);


static ngx_conf_post_t  ngx_http_mdm_enroll_access_rights_post =
    { ngx_http_mdm_enroll_check_access_rights };

static ngx_conf_post_t  ngx_http_mdm_enroll_key_size_post =
    { ngx_http_mdm_enroll_check_key_size };


#define NGX_HTTP_MDM_ENROLL_CONF                                              \
    NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF

static ngx_command_t  ngx_http_mdm_enroll_commands[] = {

    { ngx_string("mdm_enroll"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_identifier"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_text,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, identifier),
      NULL },

    { ngx_string("mdm_enroll_display_name"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_text,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, display_name),
      NULL },

    { ngx_string("mdm_enroll_description"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_text,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, description),
      NULL },

    { ngx_string("mdm_enroll_organization"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_text,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, organization),
      NULL },

    { ngx_string("mdm_enroll_scep_url"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, scep_url),
      NULL },

    { ngx_string("mdm_enroll_scep_name"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_text,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, scep_name),
      NULL },

    { ngx_string("mdm_enroll_scep_subject"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_subject,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_scep_key_size"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, key_size),
      &ngx_http_mdm_enroll_key_size_post },

    { ngx_string("mdm_enroll_server_url"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, server_url),
      NULL },

    { ngx_string("mdm_enroll_checkin_url"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, checkin_url),
      NULL },

    { ngx_string("mdm_enroll_topic"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_topic,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_push_certificate"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_push_certificate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_access_rights"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, access_rights),
      &ngx_http_mdm_enroll_access_rights_post },

    { ngx_string("mdm_enroll_sign_message"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, sign_message),
      NULL },

    { ngx_string("mdm_enroll_check_out_when_removed"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, check_out_when_removed),
      NULL },

    { ngx_string("mdm_enroll_server_capabilities"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_1MORE,
      ngx_http_mdm_enroll_capabilities,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_challenge_ttl"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, challenge_ttl),
      NULL },

    { ngx_string("mdm_enroll_signing_certificate"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_signing_certificate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_signing_certificate_key"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_signing_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_user"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, user),
      NULL },

    { ngx_string("mdm_enroll_apple_device_ca"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_ca,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, apple),
      NULL },

    { ngx_string("mdm_enroll_scep_ca"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_ca,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, scep_ca),
      NULL },

    { ngx_string("mdm_enroll_min_os_version"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE23,
      ngx_http_mdm_enroll_min_os,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_enroll_ota_url"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_enroll_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, ota_url),
      NULL },

    { ngx_string("mdm_enroll_ota_token_ttl"),
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_enroll_loc_conf_t, ota_token_ttl),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mdm_enroll_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_mdm_enroll_create_main_conf,  /* create main configuration */
    ngx_http_mdm_enroll_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_mdm_enroll_create_loc_conf,   /* create location configuration */
    ngx_http_mdm_enroll_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_mdm_enroll_module = {
    NGX_MODULE_V1,
    &ngx_http_mdm_enroll_module_ctx,       /* module context */
    ngx_http_mdm_enroll_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_conf_enum_t  ngx_http_mdm_enroll_modes[] = {
    { ngx_string("ade"), NGX_HTTP_MDM_ENROLL_ADE },
    { ngx_string("sso"), NGX_HTTP_MDM_ENROLL_SSO },
    { ngx_string("ota_profile"), NGX_HTTP_MDM_ENROLL_OTA_PROFILE },
    { ngx_string("ota"), NGX_HTTP_MDM_ENROLL_OTA },
    { ngx_null_string, 0 }
};


/* indexed by ngx_http_mdm_enroll_error_e */

static ngx_http_mdm_enroll_refusal_t  ngx_http_mdm_enroll_refusals[] = {
    { NGX_HTTP_BAD_REQUEST,
      ngx_string("The device did not send its device information.") },
    { NGX_HTTP_BAD_REQUEST,
      ngx_string("The device information sent for enrollment is "
                 "malformed.") },
    { NGX_HTTP_FORBIDDEN,
      ngx_string("The device information sent for enrollment is not "
                 "correctly signed.") },
    { NGX_HTTP_FORBIDDEN,
      ngx_string("This device could not be verified as an Apple device.") },
    { NGX_HTTP_BAD_REQUEST,
      ngx_string("The device did not send its UDID and serial number.") },
    { NGX_HTTP_FORBIDDEN,
      ngx_string("This enrollment profile is invalid, has expired or was "
                 "already used. Download a new one.") },
    { NGX_HTTP_FORBIDDEN,
      ngx_string("The enrollment identity of this device is not valid. "
                 "Start the enrollment again.") },
    { NGX_HTTP_FORBIDDEN,
      ngx_string("You are not signed in.") },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
      ngx_string("The enrollment request is too large.") }
};


/*
 * Apple iPhone Device CA, alone: the issuer of device identities.  Never
 * Apple Root CA (ngx_mdm_x509.h): with no time and no EKU checks every
 * certificate Apple issues would pass.  Public certificate, from
 * ../shared/vectors/enroll/zentral_Apple_iPhone_Device_CA_Fullchain.pem.
 */

static const char  ngx_http_mdm_enroll_apple_device_ca[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDaTCCAlGgAwIBAgIBATANBgkqhkiG9w0BAQUFADB5MQswCQYDVQQGEwJVUzET\n"
    "MBEGA1UEChMKQXBwbGUgSW5jLjEmMCQGA1UECxMdQXBwbGUgQ2VydGlmaWNhdGlv\n"
    "biBBdXRob3JpdHkxLTArBgNVBAMTJEFwcGxlIGlQaG9uZSBDZXJ0aWZpY2F0aW9u\n"
    "IEF1dGhvcml0eTAeFw0wNzA0MTYyMjU0NDZaFw0xNDA0MTYyMjU0NDZaMFoxCzAJ\n"
    "BgNVBAYTAlVTMRMwEQYDVQQKEwpBcHBsZSBJbmMuMRUwEwYDVQQLEwxBcHBsZSBp\n"
    "UGhvbmUxHzAdBgNVBAMTFkFwcGxlIGlQaG9uZSBEZXZpY2UgQ0EwgZ8wDQYJKoZI\n"
    "hvcNAQEBBQADgY0AMIGJAoGBAPGUSsnquloYYK3Lok1NTlQZaRdZB2bLl+hmmkdf\n"
    "Rq5nerVKc1SxywT2vTa4DFU4ioSDMVJl+TPhl3ecK0wmsCU/6TKqewh0lOzBSzgd\n"
    "Z04IUpRai1mjXNeT9KD+VYW7TEaXXm6yd0UvZ1y8Cxi/WblshvcqdXbSGXH0KWO5\n"
    "JQuvAgMBAAGjgZ4wgZswDgYDVR0PAQH/BAQDAgGGMA8GA1UdEwEB/wQFMAMBAf8w\n"
    "HQYDVR0OBBYEFLL+ISNEhpVqedWBJo5zENinTI50MB8GA1UdIwQYMBaAFOc0Ki4i\n"
    "3jlga7SUzneDYS8xoHw1MDgGA1UdHwQxMC8wLaAroCmGJ2h0dHA6Ly93d3cuYXBw\n"
    "bGUuY29tL2FwcGxlY2EvaXBob25lLmNybDANBgkqhkiG9w0BAQUFAAOCAQEAd13P\n"
    "Z3pMViukVHe9WUg8Hum+0I/0kHKvjhwVd/IMwGlXyU7DhUYWdja2X/zqj7W24Aq5\n"
    "7dEKm3fqqxK5XCFVGY5HI0cRsdENyTP7lxSiiTRYj2mlPedheCn+k6T5y0U4Xr40\n"
    "FXwWb2nWqCF1AgIudhgvVbxlvqcxUm8Zz7yDeJ0JFovXQhyO5fLUHRLCQFssAbf8\n"
    "B4i8rYYsBUhYTspVJcxVpIIltkYpdIRSIARA49HNvKK4hzjzMS/OhKQpVKw+OCEZ\n"
    "xptCVeN2pjbdt9uzi175oVo/u6B2ArKAW17u6XEHIdDMOe7cb33peVI6TD15W4MI\n"
    "pyQPbp8orlXe+tA8JA==\n"
    "-----END CERTIFICATE-----\n";


static const char  *ngx_http_mdm_enroll_platforms[] = {
    "macos", "ios", "ipados", "tvos", "watchos", "visionos", NULL
};


static ngx_str_t  ngx_http_mdm_enroll_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_mdm_enroll_profile_type =
    ngx_string("application/x-apple-aspen-config");


static ngx_int_t
ngx_http_mdm_enroll_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                        b64;
    ngx_pool_cleanup_t              *cln;
    ngx_http_mdm_enroll_ctx_t       *ctx;
    ngx_http_mdm_enroll_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_enroll_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mdm_enroll_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (ctx == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf = conf;
    cln->handler = ngx_http_mdm_enroll_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_mdm_enroll_module);

    /* the signed bodies: ADE MachineInfo, OTA phases 2 and 3 */

    if (r->method == NGX_HTTP_POST
        && (conf->mode == NGX_HTTP_MDM_ENROLL_ADE
            || conf->mode == NGX_HTTP_MDM_ENROLL_OTA))
    {
        if (r->headers_in.content_length_n > NGX_HTTP_MDM_ENROLL_BODY_MAX) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "mdm enroll: body of %O bytes refused",
                          r->headers_in.content_length_n);
            ngx_http_discard_request_body(r);
            return ngx_http_mdm_enroll_error(r,
                                       NGX_HTTP_MDM_ENROLL_E_TOO_LARGE);
        }

        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r, ngx_http_mdm_enroll_body);
        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    if (r->method != NGX_HTTP_GET || conf->mode == NGX_HTTP_MDM_ENROLL_OTA) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (conf->mode == NGX_HTTP_MDM_ENROLL_OTA_PROFILE) {
        ctx->source = "ota";

        if (ngx_http_mdm_enroll_user(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_mdm_enroll_ota_profile(r, ctx);
    }

    ctx->profile = NGX_HTTP_MDM_ENROLL_PROFILE_FULL;

    if (conf->mode == NGX_HTTP_MDM_ENROLL_SSO) {
        ctx->source = "sso";
        ctx->purpose = "sso";

        if (ngx_http_mdm_enroll_user(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* authentication is nginx's: no user here is a configuration bug */

        if (ctx->user.len == 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm enroll sso: mdm_enroll_user is empty, is the "
                          "location protected by auth_request, auth_basic "
                          "or a client certificate?");
            return ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_NO_USER);
        }

    } else {
        ctx->source = "ade";
        ctx->purpose = "ade";
    }

    rc = ngx_http_mdm_enroll_header_info(r, &b64);
    if (rc != NGX_OK) {
        return rc;
    }

    if (b64.len) {
        rc = ngx_http_mdm_enroll_machine_info(r, ctx, NULL, 0, &b64);
        if (rc != NGX_OK) {
            return rc == NGX_DECLINED ? ctx->rc : rc;
        }

    } else if (conf->mode == NGX_HTTP_MDM_ENROLL_ADE) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll ade: GET without x-apple-aspen-deviceinfo");
        return ngx_http_mdm_enroll_error(r,
                                       NGX_HTTP_MDM_ENROLL_E_NO_DEVICE_INFO);
    }

    return ngx_http_mdm_enroll_issue(r, ctx);
}


static void
ngx_http_mdm_enroll_cleanup(void *data)
{
    ngx_http_mdm_enroll_ctx_t  *ctx = data;

    ngx_mdm_enroll_info_free(&ctx->info);
}


static void
ngx_http_mdm_enroll_body(ngx_http_request_t *r)
{
    u_char                     *body;
    size_t                      len;
    ngx_int_t                   rc;
    ngx_http_mdm_enroll_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_enroll_module);

    body = ngx_http_mdm_enroll_read_body(r, &len);

    if (body == NULL) {
        rc = (len > NGX_HTTP_MDM_ENROLL_BODY_MAX)
             ? ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_TOO_LARGE)
             : NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else if (len == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll: empty body");
        rc = ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_MALFORMED);

    } else if (ctx->conf->mode == NGX_HTTP_MDM_ENROLL_OTA) {
        rc = ngx_http_mdm_enroll_ota_post(r, ctx, body, len);

    } else {
        ctx->source = "ade";
        ctx->purpose = "ade";
        ctx->profile = NGX_HTTP_MDM_ENROLL_PROFILE_FULL;

        rc = ngx_http_mdm_enroll_machine_info(r, ctx, body, len, NULL);

        if (rc == NGX_OK) {
            rc = ngx_http_mdm_enroll_issue(r, ctx);

        } else if (rc == NGX_DECLINED) {
            rc = ctx->rc;
        }
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * The body in one buffer; NULL with *len over the limit when too large,
 * NULL with *len 0 when out of memory or unreadable.  A body nginx kept
 * in a temporary file is at most NGX_HTTP_MDM_ENROLL_BODY_MAX bytes.
 */

static u_char *
ngx_http_mdm_enroll_read_body(ngx_http_request_t *r, size_t *len)
{
    u_char       *p, *body;
    size_t        size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *len = 0;

    if (r->request_body == NULL) {
        return (u_char *) "";
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size += b->in_file ? (size_t) (b->file_last - b->file_pos)
                           : (size_t) (b->last - b->pos);
    }

    if (size > NGX_HTTP_MDM_ENROLL_BODY_MAX) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll: body of %uz bytes refused", size);
        *len = size;
        return NULL;
    }

    body = ngx_pnalloc(r->pool, size + 1);
    if (body == NULL) {
        return NULL;
    }

    p = body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                          b->file_pos);
        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm enroll: cannot read the request body from "
                          "\"%V\"", &b->file->name);
            return NULL;
        }

        p += n;
    }

    *len = p - body;

    return body;
}


/*
 * x-apple-aspen-deviceinfo, or the deviceinfo argument that keeps it
 * across the redirects of a login (Fleet does the same).
 */

static ngx_int_t
ngx_http_mdm_enroll_header_info(ngx_http_request_t *r, ngx_str_t *b64)
{
    u_char           *dst, *src;
    ngx_str_t         arg;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    static ngx_str_t  name = ngx_string("x-apple-aspen-deviceinfo");

    ngx_str_null(b64);

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name.len
            && ngx_strncasecmp(h[i].key.data, name.data, name.len) == 0)
        {
            *b64 = h[i].value;
            return NGX_OK;
        }
    }

    if (ngx_http_arg(r, (u_char *) "deviceinfo", 10, &arg) != NGX_OK
        || arg.len == 0)
    {
        return NGX_OK;
    }

    dst = ngx_pnalloc(r->pool, arg.len);
    if (dst == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b64->data = dst;
    src = arg.data;

    ngx_unescape_uri(&dst, &src, arg.len, NGX_UNESCAPE_URI);

    b64->len = dst - b64->data;

    return NGX_OK;
}


/*
 * A MachineInfo (DER body, or base64 from the header): verified against
 * Apple's device CA without time checks (Apple's intermediates expired),
 * parsed, and held to the minimum OS version.  NGX_OK, NGX_DECLINED when
 * the device was refused (ctx->rc: what sending the refusal gave), or an
 * HTTP status.
 */

static ngx_int_t
ngx_http_mdm_enroll_machine_info(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, u_char *der, size_t len, ngx_str_t *b64)
{
    u_char             *content;
    size_t              size, clen;
    ngx_int_t           rc;
    ngx_mdm_x509_rc_e   xrc;

    size = b64 ? b64->len : len;

    content = ngx_pnalloc(r->pool, size);
    if (content == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (b64) {
        xrc = ngx_mdm_cms_verify_attached_base64((char *) b64->data,
                                                 b64->len, ctx->conf->apple,
                                                 0, content, size, &clen,
                                                 NULL);
    } else {
        xrc = ngx_mdm_cms_verify_attached(der, len, ctx->conf->apple, 0,
                                          content, size, &clen, NULL);
    }

    if (xrc != NGX_MDM_X509_OK) {
        ctx->rc = ngx_http_mdm_enroll_verify_error(r, xrc, "machine info");
        return NGX_DECLINED;
    }

    rc = ngx_http_mdm_enroll_device_info(r, ctx, content, clen);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_mdm_enroll_os_gate(r, ctx);
}


/*
 * The signed content as device attributes, and its JSON for the record.
 * NGX_OK, NGX_DECLINED (refused, ctx->rc) or an HTTP status.
 */

ngx_int_t
ngx_http_mdm_enroll_device_info(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, u_char *content, size_t len)
{
    char                 *json, err[NGX_MDM_ENROLL_ERR_LEN];
    ngx_mdm_enroll_rc_e   rc;

    rc = ngx_mdm_enroll_info_parse(content, len, &ctx->info, err);

    if (rc == NGX_MDM_ENROLL_ENOMEM) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_MDM_ENROLL_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll: device attributes refused: %s", err);
        ctx->rc = ngx_http_mdm_enroll_error(r,
                      rc == NGX_MDM_ENROLL_EMISSING
                      ? NGX_HTTP_MDM_ENROLL_E_ATTRIBUTES
                      : NGX_HTTP_MDM_ENROLL_E_MALFORMED);
        return NGX_DECLINED;
    }

    json = ngx_mdm_enroll_info_json(&ctx->info);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->info_json.len = ngx_strlen(json);
    ctx->info_json.data = ngx_pnalloc(r->pool, ctx->info_json.len + 1);

    if (ctx->info_json.data != NULL) {
        ngx_memcpy(ctx->info_json.data, json, ctx->info_json.len + 1);
    }

    free(json);

    if (ctx->info_json.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


/*
 * Below the configured minimum: 403 com.apple.softwareupdate.required
 * [ADM mdm/errors], only for a device that says it can update during
 * Setup Assistant (MDM_CAN_REQUEST_SOFTWARE_UPDATE), as Fleet does: any
 * other would only fail to enroll.
 */

static ngx_int_t
ngx_http_mdm_enroll_os_gate(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx)
{
    u_char                        *body, *p;
    size_t                         len;
    ngx_uint_t                     i;
    const char                    *platform;
    ngx_mdm_enroll_info_t         *info;
    ngx_http_mdm_enroll_min_os_t  *min;

    info = &ctx->info;

    if (ctx->conf->min_os == NULL || info->product.len == 0
        || info->os_version.len == 0)
    {
        return NGX_OK;
    }

    platform = ngx_mdm_enroll_platform(info->product.data, info->product.len);
    if (platform == NULL) {
        return NGX_OK;
    }

    min = ctx->conf->min_os->elts;

    for (i = 0; i < ctx->conf->min_os->nelts; i++) {
        if (ngx_strcmp(min[i].platform.data, platform) == 0) {
            break;
        }
    }

    if (i == ctx->conf->min_os->nelts
        || ngx_mdm_enroll_version_cmp(info->os_version.data,
                                      info->os_version.len,
                                      min[i].version.data,
                                      min[i].version.len)
           != -1)
    {
        return NGX_OK;
    }

    if (!info->can_request_software_update) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll: %V %s %V is below %V but cannot update "
                      "during setup, enrolling it", (ngx_str_t *) &info->udid,
                      platform, (ngx_str_t *) &info->os_version,
                      &min[i].version);
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm enroll: %V %s %V is below %V, software update required",
                  (ngx_str_t *) &info->udid, platform,
                  (ngx_str_t *) &info->os_version, &min[i].version);

    len = sizeof("{\"code\":\"com.apple.softwareupdate.required\","
                 "\"details\":{\"OSVersion\":\"\",\"BuildVersion\":\"\"}}\n")
          + min[i].version.len + min[i].build.len;

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* version and build are digits, dots and letters (checked in conf) */

    p = ngx_sprintf(body, "{\"code\":\"com.apple.softwareupdate.required\","
                    "\"details\":{\"OSVersion\":\"%V\"", &min[i].version);

    if (min[i].build.len) {
        p = ngx_sprintf(p, ",\"BuildVersion\":\"%V\"", &min[i].build);
    }

    p = ngx_sprintf(p, "}}\n");

    if (ngx_http_mdm_enroll_header(r, "Cache-Control", NULL) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->rc = ngx_http_mdm_send(r, NGX_HTTP_FORBIDDEN,
                                &ngx_http_mdm_enroll_json_type, body,
                                p - body);
    return NGX_DECLINED;
}


/* the authenticated user, from mdm_enroll_user; empty when none */

ngx_int_t
ngx_http_mdm_enroll_user(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx)
{
    ngx_str_t   value;
    ngx_uint_t  i;

    ngx_str_null(&ctx->user);

    if (ctx->conf->user == NULL) {
        return NGX_OK;
    }

    if (ngx_http_complex_value(r, ctx->conf->user, &value) != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < value.len; i++) {
        if (value.data[i] < 0x20 || value.data[i] == 0x7f) {
            break;
        }
    }

    if (value.len > NGX_HTTP_MDM_ENROLL_USER_MAX || i != value.len) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll: user name of %uz bytes with control "
                      "characters or too long, ignored", value.len);
        return NGX_OK;
    }

    ctx->user.data = ngx_pnalloc(r->pool, value.len + 1);
    if (ctx->user.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->user.data, value.data, value.len);
    ctx->user.data[value.len] = '\0';
    ctx->user.len = value.len;

    return NGX_OK;
}


/*
 * The end of every flow: a one-time challenge for this request, bound to
 * the device when known; then the user and device recorded with it; then
 * the profile (ngx_http_mdm_enroll_recorded).
 */

ngx_int_t
ngx_http_mdm_enroll_issue(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx)
{
    ngx_mdm_challenge_args_t  args;

    ngx_memzero(&args, sizeof(ngx_mdm_challenge_args_t));

    args.purpose = ctx->purpose;
    args.ttl = ctx->conf->challenge_ttl;

    if (ctx->info.root) {
        args.udid.len = ctx->info.udid.len;
        args.udid.data = ctx->info.udid.data;
        args.serial.len = ctx->info.serial.len;
        args.serial.data = ctx->info.serial.data;
    }

    return ngx_http_mdm_challenge_mint(r, &args, ngx_http_mdm_enroll_minted);
}


static void
ngx_http_mdm_enroll_minted(ngx_http_request_t *r, ngx_int_t rc,
    ngx_str_t *challenge, time_t expires_at)
{
    u_char                     *hex;
    const char                 *values[5];
    ngx_mdm_pg_args_t           args;
    ngx_http_mdm_enroll_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_enroll_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->challenge = *challenge;

    hex = ngx_pnalloc(r->pool, 2 * NGX_MDM_X509_SHA256_LEN + 1);
    if (hex == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_mdm_challenge_digest(challenge->data, challenge->len, hex);

    values[0] = (char *) hex;
    values[1] = ctx->user.len ? (char *) ctx->user.data : NULL;
    values[2] = ctx->token_id.len ? (char *) ctx->token_id.data : NULL;
    values[3] = ctx->info_json.len ? (char *) ctx->info_json.data : NULL;
    values[4] = ctx->source;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_enroll_record_sql;
    args.nparams = 5;
    args.values = values;

    ngx_http_finalize_request(r,
        ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_enroll_recorded));
}


static void
ngx_http_mdm_enroll_recorded(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    plist_t                     profile;
    ngx_http_mdm_enroll_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_enroll_module);

    if (rc != NGX_OK || PQntuples(res) != 1
        || ngx_strcmp(PQgetvalue(res, 0, 0), "1") != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll: challenge not recorded: %s",
                      rc == NGX_OK ? "no such challenge"
                                   : PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm enroll %s: profile for device \"%V\" serial \"%V\" "
                  "user \"%V\"", ctx->purpose, (ngx_str_t *) &ctx->info.udid,
                  (ngx_str_t *) &ctx->info.serial, &ctx->user);

    profile = ngx_http_mdm_enroll_build(ctx);
    if (profile == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(r,
                     ngx_http_mdm_enroll_send_profile(r, profile, NULL));
}


static plist_t
ngx_http_mdm_enroll_build(ngx_http_mdm_enroll_ctx_t *ctx)
{
    ngx_mdm_enroll_profile_t         p;
    ngx_http_mdm_enroll_loc_conf_t  *conf;

    conf = ctx->conf;

    ngx_memzero(&p, sizeof(ngx_mdm_enroll_profile_t));

    p.display_name = (char *) conf->display_name.data;
    p.description = conf->description.len ? (char *) conf->description.data
                                          : NULL;
    p.organization = conf->organization.len
                     ? (char *) conf->organization.data : NULL;

    p.scep_url = (char *) conf->scep_url.data;
    p.scep_name = conf->scep_name.len ? (char *) conf->scep_name.data : NULL;
    p.challenge = (char *) ctx->challenge.data;
    p.key_size = conf->key_size;
    p.key_usage = 5;        /* signing and encryption, as the references */

    if (conf->subject) {
        p.subject = conf->subject->elts;
        p.nsubject = conf->subject->nelts;
    }

    if (ctx->profile == NGX_HTTP_MDM_ENROLL_PROFILE_OTA_SCEP) {
        p.identifier = conf->ota_identifier;
        p.uuid = conf->ota_uuid;
        p.scep_identifier = conf->ota_scep_identifier;
        p.scep_uuid = conf->ota_scep_uuid;

        return ngx_mdm_enroll_profile(&p);
    }

    p.identifier = (char *) conf->identifier.data;
    p.uuid = conf->uuid;
    p.scep_identifier = conf->scep_identifier;
    p.scep_uuid = conf->scep_uuid;

    p.mdm_identifier = conf->mdm_identifier;
    p.mdm_uuid = conf->mdm_uuid;
    p.server_url = (char *) conf->server_url.data;
    p.checkin_url = conf->checkin_url.len ? (char *) conf->checkin_url.data
                                          : NULL;
    p.topic = (char *) conf->topic.data;
    p.access_rights = conf->access_rights;
    p.sign_message = conf->sign_message;
    p.check_out_when_removed = conf->check_out_when_removed;
    p.capabilities = conf->capabilities->elts;
    p.ncapabilities = conf->capabilities->nelts;

    return ngx_mdm_enroll_profile(&p);
}


/*
 * XML, signed (CMS SignedData, attached content) with the configured
 * certificate, sent as application/x-apple-aspen-config.  Takes profile.
 */

ngx_int_t
ngx_http_mdm_enroll_send_profile(ngx_http_request_t *r, plist_t profile,
    ngx_str_t *filename)
{
    u_char                          *der, *cd;
    char                            *xml;
    size_t                           xml_len, der_len;
    ngx_str_t                        value;
    ngx_pool_cleanup_t              *cln;
    ngx_mdm_plist_err_t              err;
    ngx_http_mdm_enroll_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_enroll_module);

    if (ngx_mdm_plist_to_xml(profile, &xml, &xml_len, &err)
        != NGX_MDM_PLIST_OK)
    {
        plist_free(profile);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll: profile not written: %s", err.text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    plist_free(profile);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_mdm_plist_xml_free(xml);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    der = ngx_mdm_cms_sign((u_char *) xml, xml_len, conf->sign_cert,
                           conf->sign_key, conf->sign_chain, &der_len);

    ngx_mdm_plist_xml_free(xml);

    if (der == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll: profile not signed: %s",
                      ngx_mdm_x509_error());
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_mdm_enroll_free_der;
    cln->data = der;

    /* it carries a one-time secret: never stored by a cache */

    if (ngx_http_mdm_enroll_header(r, "Cache-Control", NULL) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&value, "nosniff");

    if (ngx_http_mdm_enroll_header(r, "X-Content-Type-Options", &value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (filename) {
        cd = ngx_pnalloc(r->pool, sizeof("attachment; filename=\"\"")
                                  + filename->len);
        if (cd == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        value.data = cd;
        value.len = ngx_sprintf(cd, "attachment; filename=\"%V\"", filename)
                    - cd;

        if (ngx_http_mdm_enroll_header(r, "Content-Disposition", &value)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &ngx_http_mdm_enroll_profile_type,
                             der, der_len);
}


static void
ngx_http_mdm_enroll_free_der(void *data)
{
    ngx_mdm_x509_free(data);
}


/* a response header; a NULL value is "Cache-Control: no-store" */

static ngx_int_t
ngx_http_mdm_enroll_header(ngx_http_request_t *r, char *key, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);

    if (value) {
        h->value = *value;

    } else {
        ngx_str_set(&h->value, "no-store");
    }

    return NGX_OK;
}


/* a refusal the device shows: {"message": "..."} */

ngx_int_t
ngx_http_mdm_enroll_error(ngx_http_request_t *r,
    ngx_http_mdm_enroll_error_e err)
{
    u_char                         *body, *p;
    ngx_http_mdm_enroll_refusal_t  *refusal;

    refusal = &ngx_http_mdm_enroll_refusals[err];

    body = ngx_pnalloc(r->pool, sizeof("{\"message\":\"\"}\n")
                                + refusal->message.len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"message\":\"%V\"}\n", &refusal->message);

    if (ngx_http_mdm_enroll_header(r, "Cache-Control", NULL) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_mdm_send(r, refusal->status,
                             &ngx_http_mdm_enroll_json_type, body, p - body);
}


/* a CMS body that did not verify: the device's fault, or ours */

ngx_int_t
ngx_http_mdm_enroll_verify_error(ngx_http_request_t *r, ngx_mdm_x509_rc_e rc,
    const char *what)
{
    ngx_http_mdm_enroll_error_e  err;

    switch (rc) {

    case NGX_MDM_X509_MALFORMED:
    case NGX_MDM_X509_NO_SIGNER:
        err = NGX_HTTP_MDM_ENROLL_E_MALFORMED;
        break;

    case NGX_MDM_X509_BAD_SIGNATURE:
        err = NGX_HTTP_MDM_ENROLL_E_SIGNATURE;
        break;

    case NGX_MDM_X509_UNTRUSTED:
    case NGX_MDM_X509_EXPIRED:
    case NGX_MDM_X509_NOT_YET_VALID:
        err = NGX_HTTP_MDM_ENROLL_E_NOT_APPLE;
        break;

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll: %s not verified: %s", what,
                      ngx_mdm_x509_error());
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm enroll: %s refused: %s: %s", what,
                  ngx_mdm_x509_rc_str(rc), ngx_mdm_x509_error());

    return ngx_http_mdm_enroll_error(r, err);
}


/* configuration */

static void *
ngx_http_mdm_enroll_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_enroll_main_conf_t));
}


static char *
ngx_http_mdm_enroll_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mdm_enroll_main_conf_t  *emcf = conf;

    size_t           len;
    STACK_OF(X509)  *cas;

    len = sizeof(ngx_http_mdm_enroll_apple_device_ca) - 1;

    cas = ngx_mdm_x509_chain_from_pem(ngx_http_mdm_enroll_apple_device_ca,
                                      len);
    if (cas == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mdm enroll: Apple iPhone Device CA: %s",
                           ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    emcf->apple = ngx_http_mdm_enroll_verifier(cf, cas,
                                               NGX_MDM_X509_APPLE_DEVICE);

    ngx_mdm_x509_chain_free(cas);

    return emcf->apple ? NGX_CONF_OK : NGX_CONF_ERROR;
}


static void *
ngx_http_mdm_enroll_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_enroll_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_enroll_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->mode = NGX_HTTP_MDM_ENROLL_OFF;
     *     conf->identifier = { 0, NULL };
     *     conf->display_name = { 0, NULL };
     *     conf->description = { 0, NULL };
     *     conf->organization = { 0, NULL };
     *     conf->scep_url = { 0, NULL };
     *     conf->scep_name = { 0, NULL };
     *     conf->server_url = { 0, NULL };
     *     conf->checkin_url = { 0, NULL };
     *     conf->topic = { 0, NULL };
     *     conf->ota_url = { 0, NULL };
     *     conf->user = NULL;
     *     conf->uuid = ... (derived in merge)
     */

    conf->subject = NGX_CONF_UNSET_PTR;
    conf->key_size = NGX_CONF_UNSET;
    conf->access_rights = NGX_CONF_UNSET;
    conf->sign_message = NGX_CONF_UNSET;
    conf->check_out_when_removed = NGX_CONF_UNSET;
    conf->capabilities = NGX_CONF_UNSET_PTR;
    conf->challenge_ttl = NGX_CONF_UNSET;
    conf->sign_cert = NGX_CONF_UNSET_PTR;
    conf->sign_chain = NGX_CONF_UNSET_PTR;
    conf->sign_key = NGX_CONF_UNSET_PTR;
    conf->apple = NGX_CONF_UNSET_PTR;
    conf->scep_ca = NGX_CONF_UNSET_PTR;
    conf->min_os = NGX_CONF_UNSET_PTR;
    conf->ota_token_ttl = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_mdm_enroll_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_mdm_enroll_loc_conf_t *prev = parent;
    ngx_http_mdm_enroll_loc_conf_t *conf = child;

    char                             **cap;
    ngx_http_mdm_enroll_main_conf_t   *emcf;

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_mdm_enroll_module);

    ngx_conf_merge_str_value(conf->identifier, prev->identifier,
                             "org.nginx-mdm.enrollment");
    ngx_conf_merge_str_value(conf->display_name, prev->display_name,
                             "MDM Enrollment");
    ngx_conf_merge_str_value(conf->description, prev->description, "");
    ngx_conf_merge_str_value(conf->organization, prev->organization, "");
    ngx_conf_merge_str_value(conf->scep_url, prev->scep_url, "");
    ngx_conf_merge_str_value(conf->scep_name, prev->scep_name, "");
    ngx_conf_merge_ptr_value(conf->subject, prev->subject, NULL);
    ngx_conf_merge_value(conf->key_size, prev->key_size, 2048);
    ngx_conf_merge_str_value(conf->server_url, prev->server_url, "");
    ngx_conf_merge_str_value(conf->checkin_url, prev->checkin_url, "");
    ngx_conf_merge_str_value(conf->topic, prev->topic, "");
    ngx_conf_merge_value(conf->access_rights, prev->access_rights,
                         NGX_MDM_ENROLL_ACCESS_ALL);
    ngx_conf_merge_value(conf->sign_message, prev->sign_message, 0);
    ngx_conf_merge_value(conf->check_out_when_removed,
                         prev->check_out_when_removed, 1);
    ngx_conf_merge_ptr_value(conf->capabilities, prev->capabilities, NULL);
    ngx_conf_merge_sec_value(conf->challenge_ttl, prev->challenge_ttl, 3600);
    ngx_conf_merge_ptr_value(conf->sign_cert, prev->sign_cert, NULL);
    ngx_conf_merge_ptr_value(conf->sign_chain, prev->sign_chain, NULL);
    ngx_conf_merge_ptr_value(conf->sign_key, prev->sign_key, NULL);
    ngx_conf_merge_ptr_value(conf->apple, prev->apple, emcf->apple);
    ngx_conf_merge_ptr_value(conf->scep_ca, prev->scep_ca, NULL);
    ngx_conf_merge_ptr_value(conf->min_os, prev->min_os, NULL);
    ngx_conf_merge_str_value(conf->ota_url, prev->ota_url, "");
    ngx_conf_merge_sec_value(conf->ota_token_ttl, prev->ota_token_ttl, 3600);

    if (conf->user == NULL) {
        conf->user = prev->user;
    }

    if (conf->mode == NGX_HTTP_MDM_ENROLL_OFF) {
        return NGX_CONF_OK;
    }

    if (conf->capabilities == NULL) {
        conf->capabilities = ngx_array_create(cf->pool, 2, sizeof(char *));
        cap = conf->capabilities ? ngx_array_push_n(conf->capabilities, 2)
                                 : NULL;
        if (cap == NULL) {
            return NGX_CONF_ERROR;
        }

        cap[0] = NGX_MDM_ENROLL_CAP_PER_USER;
        cap[1] = NGX_MDM_ENROLL_CAP_BOOTSTRAP;
    }

    if (ngx_http_mdm_enroll_check(cf, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_mdm_enroll_derive(cf, conf);
}


/* what each kind of location cannot do without */

static char *
ngx_http_mdm_enroll_check(ngx_conf_t *cf, ngx_http_mdm_enroll_loc_conf_t *conf)
{
    const char  *missing;

    missing = NULL;

    if (conf->sign_cert == NULL) {
        missing = "mdm_enroll_signing_certificate";

    } else if (conf->sign_key == NULL) {
        missing = "mdm_enroll_signing_certificate_key";

    } else if (conf->mode == NGX_HTTP_MDM_ENROLL_OTA_PROFILE) {
        if (conf->ota_url.len == 0) {
            missing = "mdm_enroll_ota_url";
        }

    } else if (conf->scep_url.len == 0) {
        missing = "mdm_enroll_scep_url";

    } else if (conf->server_url.len == 0) {
        missing = "mdm_enroll_server_url";

    } else if (conf->topic.len == 0) {
        missing = "mdm_enroll_topic\" or \"mdm_enroll_push_certificate";

    } else if (conf->mode == NGX_HTTP_MDM_ENROLL_SSO && conf->user == NULL) {
        missing = "mdm_enroll_user";

    } else if (conf->mode == NGX_HTTP_MDM_ENROLL_OTA
               && conf->scep_ca == NULL)
    {
        missing = "mdm_enroll_scep_ca";
    }

    if (missing) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"mdm_enroll\" in %V:%ui needs \"%s\"",
                      &conf->mode_file, conf->mode_line, missing);
        return NGX_CONF_ERROR;
    }

    if (ngx_mdm_x509_key_matches(conf->sign_cert, conf->sign_key)
        != NGX_MDM_X509_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"mdm_enroll\" in %V:%ui: the signing key does not "
                      "match the signing certificate",
                      &conf->mode_file, conf->mode_line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Identifiers and UUIDs that stay the same for a server, so that a
 * profile installed again replaces the one before it.
 */

static char *
ngx_http_mdm_enroll_derive(ngx_conf_t *cf,
    ngx_http_mdm_enroll_loc_conf_t *conf)
{
    size_t       len;
    u_char      *seed, *ota_seed;
    ngx_uint_t   i;

    static struct {
        size_t      offset;
        const char *suffix;
    }  ids[] = {
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, scep_identifier),
          ".scep" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, mdm_identifier),
          ".mdm" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, service_identifier),
          ".ota" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, ota_identifier),
          ".ota-identity" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, ota_scep_identifier),
          ".ota-identity.scep" }
    };

    len = conf->identifier.len + sizeof("|") + conf->server_url.len;
    seed = ngx_pnalloc(cf->pool, len);
    if (seed == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(seed, "%V|%V%Z", &conf->identifier, &conf->server_url);

    len = conf->identifier.len + sizeof("|") + conf->ota_url.len;
    ota_seed = ngx_pnalloc(cf->pool, len);
    if (ota_seed == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(ota_seed, "%V|%V%Z", &conf->identifier, &conf->ota_url);

    ngx_mdm_enroll_uuid((char *) seed, "profile", conf->uuid);
    ngx_mdm_enroll_uuid((char *) seed, "scep", conf->scep_uuid);
    ngx_mdm_enroll_uuid((char *) seed, "mdm", conf->mdm_uuid);
    ngx_mdm_enroll_uuid((char *) seed, "ota-identity", conf->ota_uuid);
    ngx_mdm_enroll_uuid((char *) seed, "ota-identity-scep",
                        conf->ota_scep_uuid);
    ngx_mdm_enroll_uuid((char *) ota_seed, "ota-service",
                        conf->service_uuid);

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        len = conf->identifier.len + ngx_strlen(ids[i].suffix) + 1;

        seed = ngx_pnalloc(cf->pool, len);
        if (seed == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(seed, "%V%s%Z", &conf->identifier, ids[i].suffix);

        *(char **) ((char *) conf + ids[i].offset) = (char *) seed;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_enroll(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    if (elcf->mode != NGX_HTTP_MDM_ENROLL_OFF) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; ngx_http_mdm_enroll_modes[i].name.len; i++) {
        if (ngx_strcmp(value[1].data, ngx_http_mdm_enroll_modes[i].name.data)
            == 0)
        {
            break;
        }
    }

    if (ngx_http_mdm_enroll_modes[i].name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", use \"ade\", \"sso\", "
                           "\"ota_profile\" or \"ota\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    elcf->mode = ngx_http_mdm_enroll_modes[i].value;
    elcf->mode_file.len = cf->conf_file->file.name.len;
    elcf->mode_file.data = ngx_pstrdup(cf->pool, &cf->conf_file->file.name);
    if (elcf->mode_file.data == NULL) {
        return NGX_CONF_ERROR;
    }

    elcf->mode_line = cf->conf_file->line;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mdm_enroll_handler;

    return NGX_CONF_OK;
}


/* text that goes into a profile: no control characters */

static char *
ngx_http_mdm_enroll_text(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t   *field, *value;
    ngx_uint_t   i;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] < 0x20 || value[1].data[i] == 0x7f) {
            return "must not contain control characters";
        }
    }

    if (value[1].len == 0 && cmd->offset
        == offsetof(ngx_http_mdm_enroll_loc_conf_t, identifier))
    {
        return "must not be empty";
    }

    *field = value[1];

    return NGX_CONF_OK;
}


/* ServerURL and CheckInURL must be https [ADM com.apple.mdm.yaml] */

static char *
ngx_http_mdm_enroll_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t   *field, *value;
    ngx_uint_t   https, i;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    https = (cmd->offset
             == offsetof(ngx_http_mdm_enroll_loc_conf_t, server_url)
             || cmd->offset
                == offsetof(ngx_http_mdm_enroll_loc_conf_t, checkin_url));

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= 0x20 || value[1].data[i] >= 0x7f) {
            return "must be a URL without spaces or control characters";
        }
    }

    if (!(value[1].len > 8
          && ngx_strncasecmp(value[1].data, (u_char *) "https://", 8) == 0)
        && !(!https && value[1].len > 7
             && ngx_strncasecmp(value[1].data, (u_char *) "http://", 7) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be an %s URL, not \"%V\"",
                           &cmd->name, https ? "https://" : "http(s)://",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    *field = value[1];

    return NGX_CONF_OK;
}


/*
 * "/O=Example Inc./CN=MDM Identity": each part TYPE=VALUE, TYPE a short
 * name (CN, O, OU, C, ST, L) or a dotted OID, as the SCEP payload's
 * Subject takes them [ADM com.apple.security.scep.yaml].
 */

static char *
ngx_http_mdm_enroll_subject(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    u_char                *p, *last, *part, *eq, *s;
    ngx_str_t             *value;
    ngx_mdm_enroll_rdn_t  *rdn;

    if (elcf->subject != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    elcf->subject = ngx_array_create(cf->pool, 4,
                                     sizeof(ngx_mdm_enroll_rdn_t));
    if (elcf->subject == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value[1].data;
    last = p + value[1].len;

    if (p == last || *p != '/') {
        goto invalid;
    }

    while (p < last) {
        part = ++p;

        while (p < last && *p != '/') {
            if (*p < 0x20 || *p == 0x7f) {
                goto invalid;
            }

            p++;
        }

        eq = ngx_strlchr(part, p, '=');
        if (eq == NULL || eq == part || eq + 1 == p) {
            goto invalid;
        }

        for (s = part; s < eq; s++) {
            if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'Z')
                  || (*s >= 'a' && *s <= 'z') || *s == '.'))
            {
                goto invalid;
            }
        }

        rdn = ngx_array_push(elcf->subject);
        if (rdn == NULL) {
            return NGX_CONF_ERROR;
        }

        rdn->type = ngx_http_mdm_enroll_cstr(cf->pool, part, eq - part);
        rdn->value = ngx_http_mdm_enroll_cstr(cf->pool, eq + 1, p - eq - 1);

        if (rdn->type == NULL || rdn->value == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid subject \"%V\", use "
                       "\"/O=Example Inc./CN=MDM Identity\"", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_mdm_enroll_cstr(ngx_pool_t *pool, u_char *data, size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, data, len);
    p[len] = '\0';

    return (char *) p;
}


static char *
ngx_http_mdm_enroll_topic(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (elcf->topic.data) {
        return "is duplicate, or set with mdm_enroll_push_certificate";
    }

    value = cf->args->elts;

    if (value[1].len <= sizeof(NGX_MDM_APNS_TOPIC_PREFIX) - 1
        || ngx_strncmp(value[1].data, NGX_MDM_APNS_TOPIC_PREFIX,
                       sizeof(NGX_MDM_APNS_TOPIC_PREFIX) - 1) != 0)
    {
        return "must start with \"" NGX_MDM_APNS_TOPIC_PREFIX "\"";
    }

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= 0x20 || value[1].data[i] >= 0x7f) {
            return "must not contain spaces or control characters";
        }
    }

    elcf->topic = value[1];

    return NGX_CONF_OK;
}


/* the topic is the push certificate's UID, as APNs knows it */

static char *
ngx_http_mdm_enroll_push_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    char        topic[NGX_MDM_X509_UID_SIZE];
    X509       *cert;
    ngx_str_t  *value, path;

    if (elcf->topic.data) {
        return "is duplicate, or set with mdm_enroll_topic";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cert = ngx_mdm_x509_load_cert((char *) path.data);
    if (cert == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    if (ngx_mdm_x509_apns_topic(cert, topic, sizeof(topic))
        != NGX_MDM_X509_OK)
    {
        X509_free(cert);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not an MDM push certificate: %s",
                           &path, ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    X509_free(cert);

    elcf->topic.len = ngx_strlen(topic);
    elcf->topic.data = ngx_pnalloc(cf->pool, elcf->topic.len + 1);
    if (elcf->topic.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(elcf->topic.data, topic, elcf->topic.len + 1);

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_enroll_capabilities(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    char        **cap;
    ngx_str_t    *value;
    ngx_uint_t    i;

    if (elcf->capabilities != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    elcf->capabilities = ngx_array_create(cf->pool, cf->args->nelts,
                                          sizeof(char *));
    if (elcf->capabilities == NULL) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "none") == 0) {
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strcmp(value[i].data, NGX_MDM_ENROLL_CAP_PER_USER) != 0
            && ngx_strcmp(value[i].data, NGX_MDM_ENROLL_CAP_BOOTSTRAP) != 0
            && ngx_strcmp(value[i].data, NGX_MDM_ENROLL_CAP_TOKEN) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown server capability \"%V\", use "
                               "\"" NGX_MDM_ENROLL_CAP_PER_USER "\", "
                               "\"" NGX_MDM_ENROLL_CAP_BOOTSTRAP "\", "
                               "\"" NGX_MDM_ENROLL_CAP_TOKEN "\" or "
                               "\"none\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        cap = ngx_array_push(elcf->capabilities);
        if (cap == NULL) {
            return NGX_CONF_ERROR;
        }

        *cap = (char *) value[i].data;
    }

    return NGX_CONF_OK;
}


/* the signer's certificate first, then its chain, sent in every profile */

static char *
ngx_http_mdm_enroll_signing_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t           *value, path;
    STACK_OF(X509)      *chain;
    ngx_pool_cleanup_t  *cln;

    if (elcf->sign_cert != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    chain = ngx_mdm_x509_load_chain((char *) path.data);
    if (chain == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_mdm_enroll_free_chain;
    cln->data = chain;

    elcf->sign_chain = chain;
    elcf->sign_cert = sk_X509_value(chain, 0);

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_enroll_signing_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    EVP_PKEY            *key;
    ngx_str_t           *value, path;
    ngx_pool_cleanup_t  *cln;

    if (elcf->sign_key != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    key = ngx_mdm_x509_load_key((char *) path.data, NULL);
    if (key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_mdm_enroll_free_key;
    cln->data = key;

    elcf->sign_key = key;

    return NGX_CONF_OK;
}


/*
 * mdm_enroll_apple_device_ca: exactly one certificate, the issuer of
 * device identities (see the warning in ngx_mdm_x509.h); a file holding
 * a chain would make every certificate in it an anchor.
 * mdm_enroll_scep_ca: our SCEP CA(s), times checked.
 */

static char *
ngx_http_mdm_enroll_ca(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t                 *value, path;
    ngx_uint_t                 apple;
    STACK_OF(X509)            *cas;
    ngx_mdm_x509_verifier_t  **field;

    field = (ngx_mdm_x509_verifier_t **) (p + cmd->offset);

    if (*field != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    apple = (cmd->offset == offsetof(ngx_http_mdm_enroll_loc_conf_t, apple));

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cas = ngx_mdm_x509_load_chain((char *) path.data);
    if (cas == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    if (apple && sk_X509_num(cas) != 1) {
        ngx_mdm_x509_chain_free(cas);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" holds %d certificates: give the device "
                           "CA alone (\"Apple iPhone Device CA\"), never "
                           "Apple Root CA or a full chain", &path,
                           sk_X509_num(cas));
        return NGX_CONF_ERROR;
    }

    *field = ngx_http_mdm_enroll_verifier(cf, cas,
                                          apple ? NGX_MDM_X509_APPLE_DEVICE
                                                : 0);

    ngx_mdm_x509_chain_free(cas);

    return *field ? NGX_CONF_OK : NGX_CONF_ERROR;
}


static ngx_mdm_x509_verifier_t *
ngx_http_mdm_enroll_verifier(ngx_conf_t *cf, STACK_OF(X509) *cas,
    unsigned flags)
{
    X509_STORE               *store;
    ngx_pool_cleanup_t       *cln;
    ngx_mdm_x509_verifier_t  *v;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    store = ngx_mdm_x509_store_create(cas);
    if (store == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NULL;
    }

    v = ngx_mdm_x509_verifier_create(store, flags);

    X509_STORE_free(store);

    if (v == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NULL;
    }

    cln->handler = ngx_http_mdm_enroll_free_verifier;
    cln->data = v;

    return v;
}


static void
ngx_http_mdm_enroll_free_verifier(void *data)
{
    ngx_mdm_x509_verifier_free(data);
}


static void
ngx_http_mdm_enroll_free_chain(void *data)
{
    ngx_mdm_x509_chain_free(data);
}


static void
ngx_http_mdm_enroll_free_key(void *data)
{
    EVP_PKEY_free(data);
}


/* mdm_enroll_min_os_version PLATFORM VERSION [BUILD] */

static char *
ngx_http_mdm_enroll_min_os(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t                     *value;
    ngx_uint_t                     i;
    ngx_http_mdm_enroll_min_os_t  *min;

    value = cf->args->elts;

    if (elcf->min_os == NGX_CONF_UNSET_PTR) {
        elcf->min_os = ngx_array_create(cf->pool, 3,
                                        sizeof(ngx_http_mdm_enroll_min_os_t));
        if (elcf->min_os == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; ngx_http_mdm_enroll_platforms[i]; i++) {
        if (ngx_strcmp(value[1].data, ngx_http_mdm_enroll_platforms[i]) == 0)
        {
            break;
        }
    }

    if (ngx_http_mdm_enroll_platforms[i] == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown platform \"%V\", use \"macos\", \"ios\", "
                           "\"ipados\", \"tvos\", \"watchos\" or "
                           "\"visionos\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    min = elcf->min_os->elts;

    for (i = 0; i < elcf->min_os->nelts; i++) {
        if (ngx_strcmp(min[i].platform.data, value[1].data) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate platform \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_mdm_enroll_version_cmp(value[2].data, value[2].len,
                                   value[2].data, value[2].len) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid version \"%V\", use e.g. \"17.0\"",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    min = ngx_array_push(elcf->min_os);
    if (min == NULL) {
        return NGX_CONF_ERROR;
    }

    min->platform = value[1];
    min->version = value[2];
    ngx_str_null(&min->build);

    if (cf->args->nelts == 4) {
        for (i = 0; i < value[3].len; i++) {
            if (!((value[3].data[i] >= '0' && value[3].data[i] <= '9')
                  || (value[3].data[i] >= 'A' && value[3].data[i] <= 'Z')
                  || (value[3].data[i] >= 'a' && value[3].data[i] <= 'z')))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid build \"%V\", use e.g. "
                                   "\"21A329\"", &value[3]);
                return NGX_CONF_ERROR;
            }
        }

        min->build = value[3];
    }

    return NGX_CONF_OK;
}


/* Apple: "Never 0; 2 needs 1; 128 needs 64" [ADM com.apple.mdm.yaml] */

static char *
ngx_http_mdm_enroll_check_access_rights(ngx_conf_t *cf, void *post,
    void *data)
{
    ngx_int_t  *np = data;

    if (*np < 1 || *np > NGX_MDM_ENROLL_ACCESS_ALL) {
        return "must be between 1 and 8191";
    }

    if ((*np & 2) && !(*np & 1)) {
        return "must include 1 (inspect profiles) with 2";
    }

    if ((*np & 128) && !(*np & 64)) {
        return "must include 64 (inspect provisioning profiles) with 128";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_enroll_check_key_size(ngx_conf_t *cf, void *post, void *data)
{
    ngx_int_t  *np = data;

    if (*np != 1024 && *np != 2048 && *np != 4096) {
        return "must be 1024, 2048 or 4096";
    }

    return NGX_CONF_OK;
}
