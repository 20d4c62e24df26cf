
/*
 * One-time SCEP challenges: 24 random bytes in hex (hex, because a CSR may
 * carry the challengePassword as a PrintableString), handed to whoever
 * asked (an enrollment profile, the admin API) and stored as a SHA-256
 * digest with an expiry and an optional device binding.  SCEP consumes a
 * challenge atomically with the certificate it allows (ngx_mdm_scep).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "ngx_mdm_core.h"


#define NGX_MDM_CHALLENGE_BYTES  24


typedef struct {
    ngx_str_t                           challenge;
    time_t                              expires_at;
    ngx_http_mdm_challenge_handler_pt   handler;
} ngx_mdm_challenge_ctx_t;


static void ngx_mdm_challenge_stored(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc);


static const char  ngx_mdm_challenge_insert_sql[] =
    "INSERT INTO mdm_challenges (digest, purpose, udid, serial_number, "
    "expires_at) VALUES (decode($1, 'hex'), $2, $3, $4, "
    "to_timestamp($5::bigint))";


void
ngx_mdm_challenge_digest(const u_char *challenge, size_t len, u_char *hex)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;

    mdlen = 0;
    (void) EVP_Digest(challenge, len, md, &mdlen, EVP_sha256(), NULL);

    *ngx_hex_dump(hex, md, mdlen) = '\0';
}


ngx_int_t
ngx_http_mdm_challenge_mint(ngx_http_request_t *r,
    ngx_mdm_challenge_args_t *args, ngx_http_mdm_challenge_handler_pt handler)
{
    u_char                   raw[NGX_MDM_CHALLENGE_BYTES];
    u_char                  *hex, *expires;
    const char              *values[5];
    ngx_mdm_pg_args_t        pg;
    ngx_mdm_challenge_ctx_t *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_mdm_challenge_ctx_t));
    hex = ngx_pnalloc(r->pool, 2 * EVP_MAX_MD_SIZE + 1);
    expires = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 1);
    if (ctx == NULL || hex == NULL || expires == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "mdm challenge: RAND_bytes() failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->challenge.data = ngx_pnalloc(r->pool, 2 * sizeof(raw));
    if (ctx->challenge.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->challenge.len = ngx_hex_dump(ctx->challenge.data, raw, sizeof(raw))
                         - ctx->challenge.data;

    ngx_mdm_challenge_digest(ctx->challenge.data, ctx->challenge.len, hex);

    ctx->expires_at = ngx_time() + args->ttl;
    ctx->handler = handler;
    *ngx_sprintf(expires, "%T", ctx->expires_at) = '\0';

    values[0] = (char *) hex;
    values[1] = args->purpose;
    values[2] = NULL;
    values[3] = NULL;
    values[4] = (char *) expires;

    if (args->udid.len) {
        values[2] = ngx_pnalloc(r->pool, args->udid.len + 1);
        if (values[2] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ngx_cpystrn((u_char *) values[2], args->udid.data,
                    args->udid.len + 1);
    }

    if (args->serial.len) {
        values[3] = ngx_pnalloc(r->pool, args->serial.len + 1);
        if (values[3] == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ngx_cpystrn((u_char *) values[3], args->serial.data,
                    args->serial.len + 1);
    }

    ngx_http_set_ctx(r, ctx, ngx_mdm_module);

    ngx_memzero(&pg, sizeof(ngx_mdm_pg_args_t));
    pg.sql = ngx_mdm_challenge_insert_sql;
    pg.nparams = 5;
    pg.values = values;

    return ngx_http_mdm_pg_query(r, &pg, ngx_mdm_challenge_stored);
}


static void
ngx_mdm_challenge_stored(ngx_http_request_t *r, PGresult *res, ngx_int_t rc)
{
    ngx_mdm_challenge_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_mdm_module);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm challenge not stored: %s",
                      PQresultErrorMessage(res));
    }

    ctx->handler(r, rc, &ctx->challenge, ctx->expires_at);
}
