
/*
 * nginx-mdm enrollment: over-the-air enrollment, the three phases of
 * Apple's Profile Service (PROTOCOL.md §2.5).
 *
 *   1. GET (mdm_enroll ota_profile): a signed Profile Service profile
 *      whose Challenge is a one-time enrollment token (stored as its
 *      SHA-256, with the user who downloaded it).
 *   2. POST (mdm_enroll ota), signed by the device's Apple identity: the
 *      token is used up, and the answer is a profile holding only a SCEP
 *      payload, with a challenge bound to the device (purpose ota_scep).
 *   3. POST, signed by the identity SCEP issued for that challenge: the
 *      answer is the enrollment profile (purpose ota).
 *
 * Phase 2 and 3 come to the same URL; the signer tells them apart: Apple
 * iPhone Device CA for phase 2, our SCEP CA for phase 3 [ZT ota.py].
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/rand.h>
#include "ngx_mdm_enroll_http.h"
#include "ngx_mdm_enroll_sql.h"


static void ngx_http_mdm_enroll_ota_token_stored(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static ngx_int_t ngx_http_mdm_enroll_ota_phase2(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx);
static void ngx_http_mdm_enroll_ota_token_used(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static ngx_int_t ngx_http_mdm_enroll_ota_phase3(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, X509 *signer);
static void ngx_http_mdm_enroll_ota_identity(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static ngx_int_t ngx_http_mdm_enroll_ota_copy(ngx_http_request_t *r,
    ngx_str_t *dst, PGresult *res, int field);


/* what the device sends in phases 2 and 3 [MM mdm/enroll/service.go] */

static const char  *ngx_http_mdm_enroll_ota_attributes[] = {
    "UDID", "VERSION", "PRODUCT", "SERIAL", "MEID", "IMEI"
};


/* phase 1 */

ngx_int_t
ngx_http_mdm_enroll_ota_profile(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx)
{
    u_char              raw[NGX_HTTP_MDM_ENROLL_TOKEN_BYTES];
    u_char             *digest, *expires;
    const char         *values[3];
    ngx_mdm_pg_args_t   args;

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "mdm enroll ota: RAND_bytes() failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->challenge.data = ngx_pnalloc(r->pool, 2 * sizeof(raw) + 1);
    digest = ngx_pnalloc(r->pool, 2 * NGX_MDM_X509_SHA256_LEN + 1);
    expires = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 1);

    if (ctx->challenge.data == NULL || digest == NULL || expires == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->challenge.len = ngx_hex_dump(ctx->challenge.data, raw, sizeof(raw))
                         - ctx->challenge.data;
    ctx->challenge.data[ctx->challenge.len] = '\0';

    ngx_mdm_challenge_digest(ctx->challenge.data, ctx->challenge.len,
                             digest);

    *ngx_sprintf(expires, "%T", ngx_time() + ctx->conf->ota_token_ttl) = '\0';

    values[0] = (char *) digest;
    values[1] = ctx->user.len ? (char *) ctx->user.data : NULL;
    values[2] = (char *) expires;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_enroll_token_insert_sql;
    args.nparams = 3;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args,
                                 ngx_http_mdm_enroll_ota_token_stored);
}


static void
ngx_http_mdm_enroll_ota_token_stored(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    plist_t                          profile;
    ngx_mdm_enroll_service_t         s;
    ngx_http_mdm_enroll_ctx_t       *ctx;
    ngx_http_mdm_enroll_loc_conf_t  *conf;

    static ngx_str_t  filename = ngx_string("enroll.mobileconfig");

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_enroll_module);
    conf = ctx->conf;

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll ota: token not stored: %s",
                      PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memzero(&s, sizeof(ngx_mdm_enroll_service_t));

    s.identifier = conf->service_identifier;
    s.uuid = conf->service_uuid;
    s.display_name = (char *) conf->display_name.data;
    s.description = conf->description.len ? (char *) conf->description.data
                                          : NULL;
    s.organization = conf->organization.len
                     ? (char *) conf->organization.data : NULL;
    s.url = (char *) conf->ota_url.data;
    s.challenge = (char *) ctx->challenge.data;
    s.attributes = ngx_http_mdm_enroll_ota_attributes;
    s.nattributes = sizeof(ngx_http_mdm_enroll_ota_attributes)
                    / sizeof(ngx_http_mdm_enroll_ota_attributes[0]);

    profile = ngx_mdm_enroll_service_profile(&s);
    if (profile == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm enroll ota: profile service for user \"%V\"",
                  &ctx->user);

    ngx_http_finalize_request(r,
               ngx_http_mdm_enroll_send_profile(r, profile, &filename));
}


/*
 * Phases 2 and 3: which one the signer says.  Nothing is written before
 * the signature, the chain and the attributes have passed.
 */

ngx_int_t
ngx_http_mdm_enroll_ota_post(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, u_char *body, size_t len)
{
    u_char             *content;
    char                apple_err[256];
    X509               *signer;
    size_t              clen;
    ngx_int_t           rc;
    ngx_mdm_x509_rc_e   xrc;

    ctx->source = "ota";

    content = ngx_pnalloc(r->pool, len);
    if (content == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    signer = NULL;

    xrc = ngx_mdm_cms_verify_attached(body, len, ctx->conf->apple, 0,
                                      content, len, &clen, NULL);

    if (xrc == NGX_MDM_X509_OK) {
        rc = ngx_http_mdm_enroll_device_info(r, ctx, content, clen);
        if (rc != NGX_OK) {
            return rc == NGX_DECLINED ? ctx->rc : rc;
        }

        return ngx_http_mdm_enroll_ota_phase2(r, ctx);
    }

    if (xrc != NGX_MDM_X509_UNTRUSTED) {
        return ngx_http_mdm_enroll_verify_error(r, xrc, "ota request");
    }

    /* not Apple's: our throw-away identity, or nobody's */

    ngx_cpystrn((u_char *) apple_err, (u_char *) ngx_mdm_x509_error(),
                sizeof(apple_err));

    xrc = ngx_mdm_cms_verify_attached(body, len, ctx->conf->scep_ca, 0,
                                      content, len, &clen, &signer);

    switch (xrc) {

    case NGX_MDM_X509_OK:
        break;

    case NGX_MDM_X509_UNTRUSTED:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll ota: signer is neither an Apple device "
                      "nor an identity of our SCEP CA: %s; %s",
                      apple_err, ngx_mdm_x509_error());
        return ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_NOT_APPLE);

    case NGX_MDM_X509_EXPIRED:
    case NGX_MDM_X509_NOT_YET_VALID:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll ota: phase 3 identity refused: %s",
                      ngx_mdm_x509_error());
        return ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_IDENTITY);

    default:
        return ngx_http_mdm_enroll_verify_error(r, xrc, "ota phase 3");
    }

    rc = ngx_http_mdm_enroll_device_info(r, ctx, content, clen);

    if (rc == NGX_OK) {
        rc = ngx_http_mdm_enroll_ota_phase3(r, ctx, signer);

    } else if (rc == NGX_DECLINED) {
        rc = ctx->rc;
    }

    X509_free(signer);

    return rc;
}


static ngx_int_t
ngx_http_mdm_enroll_ota_phase2(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx)
{
    u_char             *digest;
    const char         *values[3];
    ngx_mdm_pg_args_t   args;

    if (ctx->info.challenge.len == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll ota: phase 2 of device \"%V\" without "
                      "CHALLENGE", (ngx_str_t *) &ctx->info.udid);
        return ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_TOKEN);
    }

    digest = ngx_pnalloc(r->pool, 2 * NGX_MDM_X509_SHA256_LEN + 1);
    if (digest == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_mdm_challenge_digest(ctx->info.challenge.data, ctx->info.challenge.len,
                             digest);

    /* plist strings are NUL-terminated */

    values[0] = (char *) digest;
    values[1] = (char *) ctx->info.udid.data;
    values[2] = (char *) ctx->info.serial.data;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_enroll_token_use_sql;
    args.nparams = 3;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_enroll_ota_token_used);
}


static void
ngx_http_mdm_enroll_ota_token_used(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    ngx_http_mdm_enroll_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_enroll_module);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll ota: token not checked: %s",
                      PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (PQntuples(res) != 1) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll ota: device \"%V\" sent an unknown, used "
                      "or expired enrollment token",
                      (ngx_str_t *) &ctx->info.udid);
        ngx_http_finalize_request(r,
                 ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_TOKEN));
        return;
    }

    if (ngx_http_mdm_enroll_ota_copy(r, &ctx->token_id, res, 0) != NGX_OK
        || ngx_http_mdm_enroll_ota_copy(r, &ctx->user, res, 1) != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->purpose = "ota_scep";
    ctx->profile = NGX_HTTP_MDM_ENROLL_PROFILE_OTA_SCEP;

    ngx_http_finalize_request(r, ngx_http_mdm_enroll_issue(r, ctx));
}


/* phase 3: the identity must be one we issued for this very device */

static ngx_int_t
ngx_http_mdm_enroll_ota_phase3(ngx_http_request_t *r,
    ngx_http_mdm_enroll_ctx_t *ctx, X509 *signer)
{
    const char         *values[2];
    ngx_mdm_pg_args_t   args;

    if (ngx_mdm_x509_sha256_hex(signer, (char *) ctx->cert_sha256)
        != NGX_MDM_X509_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    values[0] = (char *) ctx->cert_sha256;
    values[1] = (char *) ctx->info.udid.data;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_mdm_enroll_identity_sql;
    args.nparams = 2;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_enroll_ota_identity);
}


static void
ngx_http_mdm_enroll_ota_identity(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    const char                 *reason;
    ngx_http_mdm_enroll_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_enroll_module);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm enroll ota: identity not checked: %s",
                      PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (PQntuples(res) != 1) {
        reason = "was not issued for OTA enrollment";

    } else if (PQgetvalue(res, 0, 0)[0] != 't') {
        reason = "was issued for another device";

    } else if (PQgetvalue(res, 0, 1)[0] != 't') {
        reason = "is revoked";

    } else {
        reason = NULL;
    }

    if (reason) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm enroll ota: phase 3 of device \"%V\": identity "
                      "%s %s", (ngx_str_t *) &ctx->info.udid,
                      ctx->cert_sha256, reason);
        ngx_http_finalize_request(r,
              ngx_http_mdm_enroll_error(r, NGX_HTTP_MDM_ENROLL_E_IDENTITY));
        return;
    }

    if (ngx_http_mdm_enroll_ota_copy(r, &ctx->user, res, 2) != NGX_OK
        || ngx_http_mdm_enroll_ota_copy(r, &ctx->token_id, res, 3) != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->purpose = "ota";
    ctx->profile = NGX_HTTP_MDM_ENROLL_PROFILE_FULL;

    ngx_http_finalize_request(r, ngx_http_mdm_enroll_issue(r, ctx));
}


/* a field of res into the request pool, NUL-terminated; "" is empty */

static ngx_int_t
ngx_http_mdm_enroll_ota_copy(ngx_http_request_t *r, ngx_str_t *dst,
    PGresult *res, int field)
{
    size_t  len;

    len = PQgetlength(res, 0, field);

    if (len == 0) {
        ngx_str_null(dst);
        return NGX_OK;
    }

    dst->data = ngx_pnalloc(r->pool, len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, PQgetvalue(res, 0, field), len + 1);
    dst->len = len;

    return NGX_OK;
}
