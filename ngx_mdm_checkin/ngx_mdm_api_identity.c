
/*
 * nginx-mdm admin API: device identities.
 *
 *   POST challenges            mint a one-time SCEP challenge (core's
 *                              ngx_http_mdm_challenge_mint, purpose "api")
 *   POST certificates/revoke   set mdm_certificates.revoked_at, by serial
 *                              or by enrollment; SCEP's CRL and the
 *                              check-in module honour it
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_api.h"
#include "ngx_mdm_api_sql.h"


#define NGX_HTTP_MDM_API_CHALLENGE_ARG_MAX  255


static ngx_int_t ngx_http_mdm_api_json_str(ngx_http_mdm_api_ctx_t *ctx,
    const char *key, ngx_str_t *value);
static void ngx_http_mdm_api_minted(ngx_http_request_t *r, ngx_int_t rc,
    ngx_str_t *challenge, time_t expires_at);
static ngx_int_t ngx_http_mdm_api_serials(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_api_reason(ngx_http_mdm_api_ctx_t *ctx,
    const char **reason);
static void ngx_http_mdm_api_revoked(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc);
static ngx_uint_t ngx_http_mdm_api_out_revocation(ngx_mdm_api_out_t *out,
    PGresult *res, int row);


/*
 * RFC 5280 §5.3.1 CRLReason codes that end a certificate for good: no
 * certificateHold (6) or removeFromCRL (8), 7 is unused.
 */
static const char  *ngx_http_mdm_api_reasons[] = {
    "unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
    "superseded", "cessationOfOperation", NULL, NULL, NULL,
    "privilegeWithdrawn", "aACompromise"
};


/* POST challenges, optional {"udid": ..., "serial": ..., "ttl": seconds} */

ngx_int_t
ngx_http_mdm_api_challenge(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    json_t                    *v;
    ngx_int_t                  rc;
    json_int_t                 ttl;
    ngx_mdm_challenge_args_t   args;

    ngx_memzero(&args, sizeof(ngx_mdm_challenge_args_t));
    args.purpose = "api";
    args.ttl = ctx->conf->challenge_ttl;

    rc = ngx_mdm_api_parse_body(r, ctx, 1);

    if (rc == NGX_ERROR) {
        return ngx_mdm_api_fail(r, ctx);
    }

    if (rc == NGX_OK) {
        if (ngx_http_mdm_api_json_str(ctx, "udid", &args.udid) != NGX_OK
            || ngx_http_mdm_api_json_str(ctx, "serial", &args.serial)
               != NGX_OK)
        {
            return ngx_mdm_api_fail(r, ctx);
        }

        v = json_object_get(ctx->json, "ttl");

        if (v && !json_is_null(v)) {
            ttl = json_integer_value(v);

            if (!json_is_integer(v) || ttl < 1
                || ttl > ctx->conf->challenge_max_ttl)
            {
                return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                         "\"ttl\" must be 1 to %T seconds "
                                         "(mdm_api_challenge_ttl)",
                                         ctx->conf->challenge_max_ttl);
            }

            args.ttl = (time_t) ttl;
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm api: %V mints a challenge, udid \"%V\", "
                  "serial \"%V\", ttl %T", &ctx->actor, &args.udid,
                  &args.serial, args.ttl);

    return ngx_http_mdm_challenge_mint(r, &args, ngx_http_mdm_api_minted);
}


/* an optional string member: absent or null leaves value empty */

static ngx_int_t
ngx_http_mdm_api_json_str(ngx_http_mdm_api_ctx_t *ctx, const char *key,
    ngx_str_t *value)
{
    json_t  *v;

    v = json_object_get(ctx->json, key);

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > NGX_HTTP_MDM_API_CHALLENGE_ARG_MAX)
    {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"%s\" must be a string of 1 to %d bytes",
                               key, NGX_HTTP_MDM_API_CHALLENGE_ARG_MAX);
    }

    value->data = (u_char *) json_string_value(v);
    value->len = json_string_length(v);

    return NGX_OK;
}


static void
ngx_http_mdm_api_minted(ngx_http_request_t *r, ngx_int_t rc,
    ngx_str_t *challenge, time_t expires_at)
{
    u_char              date[sizeof("1970-01-01T00:00:00Z")];
    ngx_tm_t            tm;
    ngx_mdm_api_out_t   out;

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r,
                                      NGX_HTTP_INTERNAL_SERVER_ERROR,
                                      "the challenge could not be stored"));
        return;
    }

    ngx_gmtime(expires_at, &tm);
    (void) ngx_sprintf(date, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    ngx_mdm_api_out_init(&out, r->pool, 256);
    ngx_mdm_api_out_lit(&out, "{\"challenge\": ");
    ngx_mdm_api_out_str(&out, challenge->data, challenge->len);
    ngx_mdm_api_out_lit(&out, ", \"expires_at\": ");
    ngx_mdm_api_out_str(&out, date, sizeof(date) - 1);
    ngx_mdm_api_out_lit(&out, "}");

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, NGX_HTTP_OK, &out));
}


/*
 * POST certificates/revoke {"serials": [4097, "4098", "0x1002"],
 * "enrollment_ids": [...], "reason": "keyCompromise" or 1}
 */

ngx_int_t
ngx_http_mdm_api_revoke(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    ngx_int_t           rc;
    const char         *values[3];
    ngx_mdm_pg_args_t   args;

    if (ngx_mdm_api_parse_body(r, ctx, 0) != NGX_OK
        || ngx_http_mdm_api_serials(r, ctx) != NGX_OK
        || ngx_http_mdm_api_reason(ctx, &values[2]) != NGX_OK)
    {
        return ngx_mdm_api_fail(r, ctx);
    }

    rc = ngx_mdm_api_ids_from_json(r, ctx, "enrollment_ids", 0);

    if (rc == NGX_ERROR) {
        return ngx_mdm_api_fail(r, ctx);
    }

    if (rc == NGX_DECLINED) {
        if (ngx_mdm_api_ids_init(&ctx->ids, r->pool, 0) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->ids.ids.nelts + ctx->serials.ids.nelts == 0) {
        return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                 "give \"serials\" or \"enrollment_ids\"");
    }

    values[0] = ngx_mdm_api_ids_literal(&ctx->serials, r->pool);
    values[1] = ngx_mdm_api_ids_literal(&ctx->ids, r->pool);

    if (values[0] == NULL || values[1] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_API_SQL_REVOKE " ORDER BY 1, 2, 3";
    args.nparams = 3;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_api_revoked);
}


/* ctx->serials: positive 63-bit serials as decimal text, repeats dropped */

static ngx_int_t
ngx_http_mdm_api_serials(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    u_char      *p, *s, *end;
    size_t       i, n;
    json_t      *list, *item;
    uint64_t     serial, digit;
    ngx_uint_t   base;

    list = json_object_get(ctx->json, "serials");
    n = json_array_size(list);

    if (list && !json_is_array(list)) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"serials\" must be an array");
    }

    if (n > ctx->conf->max_ids) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"serials\" has more than mdm_api_max_ids "
                               "(%ui) items", ctx->conf->max_ids);
    }

    if (ngx_mdm_api_ids_init(&ctx->serials, r->pool, n) != NGX_OK) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "out of memory");
    }

    for (i = 0; i < n; i++) {
        item = json_array_get(list, i);
        serial = 0;

        if (json_is_integer(item) && json_integer_value(item) > 0) {
            serial = (uint64_t) json_integer_value(item);

        } else if (json_is_string(item) && json_string_length(item) > 0) {
            s = (u_char *) json_string_value(item);
            end = s + json_string_length(item);
            base = 10;

            if (end - s > 2 && s[0] == '0' && (s[1] | 0x20) == 'x') {
                base = 16;
                s += 2;
            }

            for ( /* void */ ; s < end; s++) {
                if (*s >= '0' && *s <= '9') {
                    digit = *s - '0';

                } else if (base == 16 && (*s | 0x20) >= 'a'
                           && (*s | 0x20) <= 'f')
                {
                    digit = (*s | 0x20) - 'a' + 10;

                } else {
                    break;
                }

                if (serial > ((uint64_t) INT64_MAX - digit) / base) {
                    break;
                }

                serial = serial * base + digit;
            }

            if (s < end) {
                serial = 0;
            }
        }

        if (serial == 0) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"serials\"[%uz] is not a positive "
                                   "serial number (integer, or decimal or "
                                   "0x-hex string)", i);
        }

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "out of memory");
        }

        (void) ngx_mdm_api_ids_add(&ctx->serials, p,
                                   ngx_sprintf(p, "%uL", serial) - p);
    }

    return NGX_OK;
}


/* "reason": a CRLReason code or name; absent: NULL (unspecified) */

static ngx_int_t
ngx_http_mdm_api_reason(ngx_http_mdm_api_ctx_t *ctx, const char **reason)
{
    json_t      *v;
    ngx_int_t    code;
    ngx_uint_t   i, n;

    static const char  *codes[] = {
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"
    };

    *reason = NULL;
    n = sizeof(ngx_http_mdm_api_reasons) / sizeof(char *);

    v = json_object_get(ctx->json, "reason");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    code = -1;

    if (json_is_integer(v) && json_integer_value(v) >= 0
        && json_integer_value(v) < (json_int_t) n)
    {
        code = (ngx_int_t) json_integer_value(v);

    } else if (json_is_string(v)) {
        for (i = 0; i < n; i++) {
            if (ngx_http_mdm_api_reasons[i]
                && ngx_strcmp(ngx_http_mdm_api_reasons[i],
                              json_string_value(v)) == 0)
            {
                code = i;
                break;
            }
        }
    }

    if (code < 0 || ngx_http_mdm_api_reasons[code] == NULL) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"reason\" must be a CRLReason: unspecified "
                               "(0), keyCompromise (1), cACompromise (2), "
                               "affiliationChanged (3), superseded (4), "
                               "cessationOfOperation (5), privilegeWithdrawn "
                               "(9) or aACompromise (10)");
    }

    *reason = codes[code];

    return NGX_OK;
}


/*
 * {"enrollments": {"<id>": {"revoked": true, "certificates": [{"serial":
 * 4097, "revoked_at": ..., "already_revoked": false}]}}, "certificates":
 * {"<serial>": {"revoked": true, "revoked_at": ..., "already_revoked":
 * false}}, "revoked": N}.  Rows come ordered by kind ('e' before 's'),
 * key, serial.
 */

static void
ngx_http_mdm_api_revoked(ngx_http_request_t *r, PGresult *res, ngx_int_t rc)
{
    int                      i, j, k, n, len;
    u_char                  *p;
    ngx_uint_t               newly, unknown, total, status, listed;
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    n = PQntuples(res);
    newly = 0;
    unknown = 0;

    ngx_mdm_api_out_init(&out, r->pool, 256 + (size_t) n * 128);
    ngx_mdm_api_out_lit(&out, "{\"enrollments\": {");

    /* one group of rows per enrollment */

    for (i = 0; i < n && PQgetvalue(res, i, 0)[0] == 'e'; i = j) {
        len = PQgetlength(res, i, 1);

        for (j = i + 1; j < n; j++) {
            if (PQgetvalue(res, j, 0)[0] != 'e'
                || PQgetlength(res, j, 1) != len
                || ngx_memcmp(PQgetvalue(res, j, 1), PQgetvalue(res, i, 1),
                              len) != 0)
            {
                break;
            }
        }

        if (i) {
            ngx_mdm_api_out_lit(&out, ", ");
        }

        ngx_mdm_api_out_pg_str(&out, res, i, 1);

        if (!ngx_mdm_api_pg_bool(res, i, 5)) {
            unknown++;
            ngx_mdm_api_out_lit(&out, ": {\"revoked\": false, "
                                      "\"error\": \"unknown enrollment\"}");
            continue;
        }

        ngx_mdm_api_out_lit(&out, ": {\"revoked\": true, "
                                  "\"certificates\": [");
        listed = 0;

        for (k = i; k < j; k++) {
            if (PQgetisnull(res, k, 2)) {
                continue;
            }

            if (listed++) {
                ngx_mdm_api_out_lit(&out, ", ");
            }

            ngx_mdm_api_out_lit(&out, "{\"serial\": ");
            ngx_mdm_api_out_pg(&out, res, k, 2);
            newly += ngx_http_mdm_api_out_revocation(&out, res, k);
            ngx_mdm_api_out_lit(&out, "}");
        }

        ngx_mdm_api_out_lit(&out, "]}");
    }

    ngx_mdm_api_out_lit(&out, "}, \"certificates\": {");

    for (k = i; i < n; i++) {
        if (i > k) {
            ngx_mdm_api_out_lit(&out, ", ");
        }

        ngx_mdm_api_out_pg_str(&out, res, i, 1);

        if (!ngx_mdm_api_pg_bool(res, i, 5)) {
            unknown++;
            ngx_mdm_api_out_lit(&out, ": {\"revoked\": false, "
                                      "\"error\": \"unknown certificate\"}");
            continue;
        }

        ngx_mdm_api_out_lit(&out, ": {\"revoked\": true");
        newly += ngx_http_mdm_api_out_revocation(&out, res, i);
        ngx_mdm_api_out_lit(&out, "}");
    }

    p = ngx_mdm_api_out_reserve(&out, sizeof("}, \"revoked\": }")
                                      + NGX_INT_T_LEN);
    if (p) {
        p = ngx_sprintf(p, "}, \"revoked\": %ui}", newly);
        out.total += p - out.buf->last;
        out.buf->last = p;
    }

    total = ctx->ids.ids.nelts + ctx->serials.ids.nelts;
    status = (unknown == 0) ? NGX_HTTP_OK
             : (unknown == total) ? NGX_HTTP_NOT_FOUND
             : NGX_HTTP_MDM_MULTI_STATUS;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm api: %V revoked %ui certificates", &ctx->actor,
                  newly);

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, status, &out));
}


/* ", revoked_at, already_revoked" of a row; 1 if revoked by this call */

static ngx_uint_t
ngx_http_mdm_api_out_revocation(ngx_mdm_api_out_t *out, PGresult *res,
    int row)
{
    ngx_uint_t  newly;

    newly = ngx_mdm_api_pg_bool(res, row, 4);

    ngx_mdm_api_out_lit(out, ", \"revoked_at\": ");
    ngx_mdm_api_out_pg_str(out, res, row, 3);

    if (newly) {
        ngx_mdm_api_out_lit(out, ", \"already_revoked\": false");

    } else {
        ngx_mdm_api_out_lit(out, ", \"already_revoked\": true");
    }

    return newly;
}
