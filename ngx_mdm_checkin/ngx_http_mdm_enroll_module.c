
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
      NGX_HTTP_MDM_ENROLL_CONF|NGX_CONF_TAKE12,
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


static ngx_str_t  ngx_http_mdm_enroll_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_mdm_enroll_profile_type =
    ngx_string("application/x-apple-aspen-config");


ngx_int_t
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

    /* the profile needs it NUL-terminated */

    ctx->challenge.len = challenge->len;
    ctx->challenge.data = ngx_pnalloc(r->pool, challenge->len + 1);
    if (ctx->challenge.data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    *ngx_cpymem(ctx->challenge.data, challenge->data, challenge->len) = '\0';

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
