
/*
 * A PKIOperation, from the pkiMessage to the CertRep (RFC 8894 3.3):
 *
 *   PKCSReq     the challengePassword (the static one, compared in
 *               constant time, or a one-time one from PostgreSQL), then a
 *               serial this process reserved, the certificate, and ONE
 *               round trip that consumes the challenge and records the
 *               certificate (mdm_scep_record, 004_scep.sql);
 *   RenewalReq  signed by a certificate of this CA that is valid or
 *               expired within mdm_scep_renewal_grace; no challenge
 *               (RFC 8894 2.5: the signature authorizes it); the round
 *               trip also binds the new certificate to the enrollment of
 *               the old one (DESIGN.md 6);
 *   CertPoll    we never answer PENDING: the certificate issued in that
 *               transaction (a lost answer), else badCertId;
 *   GetCert     a certificate we issued, by issuer and serial;
 *   GetCRL      this CA's CRL.
 *
 * The RSA work (open the envelope, sign the certificate, sign the
 * CertRep) runs inline: it is CPU, about 0.4 ms per operation with a
 * 2048-bit key, split over two turns of the event loop by the query.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_x509.h"
#include "ngx_mdm_scep_pki.h"
#include "ngx_http_mdm_scep.h"


/* notBefore this far back, for devices whose clock runs behind */
#define NGX_HTTP_MDM_SCEP_BACKDATE  600


typedef struct {
    ngx_http_mdm_scep_loc_conf_t     *lcf;
    ngx_mdm_scep_msg_t                msg;
    X509                             *cert;          /* in the answer */
    ngx_http_mdm_scep_crl_pt          crl_handler;

    uint64_t                          serial;
    time_t                            not_before;
    time_t                            not_after;
    const char                       *source;        /* mdm_certificates */
    char                              challenge[65]; /* hex SHA-256 */
    char                              renewed_from[65];
    char                             *transaction_id;
} ngx_http_mdm_scep_ctx_t;


typedef ngx_int_t (*ngx_http_mdm_scep_step_pt)(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);


/* what each messageType leads to */
typedef struct {
    int                               message_type;
    ngx_http_mdm_scep_step_pt         step;
} ngx_http_mdm_scep_step_t;


/* what each answer of mdm_scep_record() means for the CertRep */
typedef struct {
    ngx_str_t                         code;
    int                               fail_info;     /* -1: SUCCESS */
    char                             *reason;        /* the log */
    char                             *text;          /* failInfoText */
} ngx_http_mdm_scep_code_t;


static ngx_http_mdm_scep_ctx_t *ngx_http_mdm_scep_ctx(ngx_http_request_t *r);
static void ngx_http_mdm_scep_cleanup(void *data);
static ngx_int_t ngx_http_mdm_scep_enroll(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_scep_renew(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_scep_serial(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static void ngx_http_mdm_scep_serials_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static ngx_int_t ngx_http_mdm_scep_issue(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static void ngx_http_mdm_scep_record_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static ngx_int_t ngx_http_mdm_scep_cert_poll(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_scep_get_cert(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static void ngx_http_mdm_scep_found(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc);
static ngx_int_t ngx_http_mdm_scep_get_crl(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static void ngx_http_mdm_scep_get_crl_done(ngx_http_request_t *r,
    ngx_int_t rc);
static void ngx_http_mdm_scep_crl_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc);
static ngx_int_t ngx_http_mdm_scep_ours(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_scep_fail(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx, int fail_info, char *reason, char *text);
static ngx_int_t ngx_http_mdm_scep_reply(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx, int status, int fail_info, char *text);


/* the SQL of this module, all of it */

/* a block of serials for this process: $1 how many */
static const char  ngx_http_mdm_scep_serials_sql[] =
    "SELECT nextval('mdm_certificate_serial') "
    "FROM generate_series(1, $1::integer)";

/* see 004_scep.sql; $6 is the DER in binary; prepared (mdm_scep_prepare) */
static const char  ngx_http_mdm_scep_record_sql[] =
    "SELECT o_code, o_der FROM mdm_scep_record($1::bigint, "
    "decode($2, 'hex'), $3, $4::bigint, $5::bigint, $6::bytea, $7, "
    "decode($8, 'hex'), decode($9, 'hex'), $10)";

/* CertPoll: $1 transactionID, $2 subject (RFC 2253, as recorded) */
static const char  ngx_http_mdm_scep_poll_sql[] =
    "SELECT der FROM mdm_certificates "
    "WHERE transaction_id = $1 AND subject = $2 "
    "ORDER BY issued_at DESC LIMIT 1";

/* GetCert: $1 serial */
static const char  ngx_http_mdm_scep_get_cert_sql[] =
    "SELECT der FROM mdm_certificates WHERE serial = $1::bigint";

/*
 * The CRL: its number, then one row per revoked certificate (serial,
 * revocation time, CRLReason), if any.
 */
static const char  ngx_http_mdm_scep_crl_sql[] =
    "SELECT n.v, c.serial, extract(epoch FROM c.revoked_at)::bigint, "
    "c.revocation_reason "
    "FROM (SELECT nextval('mdm_scep_crl_number') AS v) n "
    "LEFT JOIN mdm_certificates c ON c.revoked_at IS NOT NULL";


static ngx_http_mdm_scep_step_t  ngx_http_mdm_scep_steps[] = {
    { NGX_MDM_SCEP_PKCS_REQ, ngx_http_mdm_scep_enroll },
    { NGX_MDM_SCEP_RENEWAL_REQ, ngx_http_mdm_scep_renew },
    { NGX_MDM_SCEP_UPDATE_REQ, ngx_http_mdm_scep_renew },
    { NGX_MDM_SCEP_CERT_POLL, ngx_http_mdm_scep_cert_poll },
    { NGX_MDM_SCEP_GET_CERT, ngx_http_mdm_scep_get_cert },
    { NGX_MDM_SCEP_GET_CRL, ngx_http_mdm_scep_get_crl },
    { 0, NULL }
};


static ngx_http_mdm_scep_code_t  ngx_http_mdm_scep_codes[] = {
    { ngx_string("ok"), -1, NULL, NULL },
    { ngx_string("replay"), -1, NULL, NULL },
    { ngx_string("challenge_unknown"), NGX_MDM_SCEP_BAD_REQUEST,
      "challengePassword is unknown",
      "challengePassword is not accepted" },
    { ngx_string("challenge_used"), NGX_MDM_SCEP_BAD_REQUEST,
      "challengePassword was used already",
      "challengePassword is not accepted" },
    { ngx_string("challenge_expired"), NGX_MDM_SCEP_BAD_REQUEST,
      "challengePassword has expired",
      "challengePassword is not accepted" },
    { ngx_string("renewal_unknown"), NGX_MDM_SCEP_BAD_CERT_ID,
      "the renewed certificate is not in mdm_certificates",
      "the certificate to renew is unknown" },
    { ngx_string("renewal_revoked"), NGX_MDM_SCEP_BAD_REQUEST,
      "the renewed certificate is revoked",
      "the certificate to renew is revoked" },
    { ngx_null_string, 0, NULL, NULL }
};


/* this process's reserved serials, handed out in order */
static uint64_t    ngx_http_mdm_scep_serials[NGX_HTTP_MDM_SCEP_SERIAL_MAX];
static ngx_uint_t  ngx_http_mdm_scep_serials_next;
static ngx_uint_t  ngx_http_mdm_scep_serials_n;


ngx_int_t
ngx_http_mdm_scep_pkiop(ngx_http_request_t *r, u_char *der, size_t len)
{
    int                        rc;
    u_char                    *p;
    ngx_http_mdm_scep_ctx_t   *ctx;
    ngx_http_mdm_scep_step_t  *s;

    ctx = ngx_http_mdm_scep_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_mdm_scep_parse(&ctx->lcf->ca->pki, der, len, &ctx->msg);

    /* single DES only where allowed: the provider is process-wide */

    if ((rc == NGX_MDM_SCEP_OK || rc == NGX_MDM_SCEP_REFUSED)
        && ctx->msg.cipher_nid == NID_des_cbc && !ctx->lcf->des)
    {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_ALG,
                                      "DES envelope, mdm_scep_des is off",
                                      "DES is not accepted, use AES");
    }

    switch (rc) {

    case NGX_MDM_SCEP_OK:
        break;

    case NGX_MDM_SCEP_MALFORMED:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: bad pkiMessage: %s", ctx->msg.error);
        return ngx_http_mdm_scep_refuse(r, NGX_HTTP_BAD_REQUEST,
                                        "malformed pkiMessage\n");

    case NGX_MDM_SCEP_REFUSED:
        return ngx_http_mdm_scep_fail(r, ctx, ctx->msg.fail_info,
                                      (char *) ctx->msg.error,
                                      (char *) ctx->msg.error);

    default:
        ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: cannot parse the pkiMessage");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* recorded for replays and CertPoll when it is plain text */

    for (p = (u_char *) ctx->msg.transaction_id; *p; p++) {
        if (*p < 0x20 || *p > 0x7e) {
            break;
        }
    }

    if (*p == '\0') {
        ctx->transaction_id = ctx->msg.transaction_id;
    }

    for (s = ngx_http_mdm_scep_steps; s->step; s++) {
        if (s->message_type == ctx->msg.message_type) {
            return s->step(r, ctx);
        }
    }

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "mdm scep: parsed messageType %d has no step",
                  ctx->msg.message_type);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static ngx_http_mdm_scep_ctx_t *
ngx_http_mdm_scep_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_mdm_scep_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_scep_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mdm_scep_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (ctx == NULL || cln == NULL) {
        return NULL;
    }

    ctx->lcf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_scep_module);
    ctx->msg.message_type = -1;

    cln->handler = ngx_http_mdm_scep_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_mdm_scep_module);

    return ctx;
}


static void
ngx_http_mdm_scep_cleanup(void *data)
{
    ngx_http_mdm_scep_ctx_t  *ctx = data;

    ngx_mdm_scep_msg_free(&ctx->msg);
    X509_free(ctx->cert);
}


/* PKCSReq: a challenge must allow it */

static ngx_int_t
ngx_http_mdm_scep_enroll(ngx_http_request_t *r, ngx_http_mdm_scep_ctx_t *ctx)
{
    u_char                         md[NGX_HTTP_MDM_SCEP_DIGEST_LEN];
    ngx_http_mdm_scep_loc_conf_t  *lcf;

    lcf = ctx->lcf;

    if (ctx->msg.challenge == NULL || ctx->msg.challenge_len == 0) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_REQUEST,
                                      "no challengePassword",
                                      "challengePassword is missing");
    }

    if (lcf->challenge.len) {
        if (EVP_Digest(ctx->msg.challenge, ctx->msg.challenge_len, md, NULL,
                       EVP_sha256(), NULL)
            != 1)
        {
            ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm scep: SHA-256 failed");
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (CRYPTO_memcmp(md, lcf->challenge_digest, sizeof(md)) == 0) {
            ctx->source = "static";
            return ngx_http_mdm_scep_serial(r, ctx);
        }
    }

    if (!lcf->one_time) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_REQUEST,
                                      "challengePassword is wrong",
                                      "challengePassword is not accepted");
    }

    ngx_mdm_challenge_digest((u_char *) ctx->msg.challenge,
                             ctx->msg.challenge_len,
                             (u_char *) ctx->challenge);
    ctx->source = "challenge";

    return ngx_http_mdm_scep_serial(r, ctx);
}


/*
 * RenewalReq (and the drafts' UpdateReq): the parser checked that our CA
 * issued the signer; here its validity, in the database its record.  A
 * challengePassword in it is ignored (scepclient resends its first CSR).
 */

static ngx_int_t
ngx_http_mdm_scep_renew(ngx_http_request_t *r, ngx_http_mdm_scep_ctx_t *ctx)
{
    time_t  now, left;

    now = ngx_time();

    if (X509_cmp_time(X509_get0_notBefore(ctx->msg.signer), &now) > 0) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_REQUEST,
                                      "the renewed certificate is not yet "
                                      "valid",
                                      "the certificate to renew is not "
                                      "valid yet");
    }

    left = ngx_mdm_x509_expires_in(ctx->msg.signer, now);

    if (left < 0 && -left > ctx->lcf->renewal_grace) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_REQUEST,
                                      "the renewed certificate expired "
                                      "beyond mdm_scep_renewal_grace",
                                      "the certificate to renew has "
                                      "expired");
    }

    if (ngx_mdm_x509_sha256_hex(ctx->msg.signer, ctx->renewed_from)
        != NGX_MDM_X509_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: %s", ngx_mdm_x509_error());
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->source = "renewal";

    return ngx_http_mdm_scep_serial(r, ctx);
}


/* a serial from this process's block, or a new block first */

static ngx_int_t
ngx_http_mdm_scep_serial(ngx_http_request_t *r, ngx_http_mdm_scep_ctx_t *ctx)
{
    u_char             *n;
    const char         *values[1];
    ngx_mdm_pg_args_t   args;

    if (ngx_http_mdm_scep_serials_next < ngx_http_mdm_scep_serials_n) {
        ctx->serial =
            ngx_http_mdm_scep_serials[ngx_http_mdm_scep_serials_next++];
        return ngx_http_mdm_scep_issue(r, ctx);
    }

    n = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
    if (n == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(n, "%ui", ctx->lcf->serial_block) = '\0';
    values[0] = (char *) n;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_http_mdm_scep_serials_sql;
    args.nparams = 1;
    args.values = values;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_scep_serials_done);
}


static void
ngx_http_mdm_scep_serials_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    int                       i, n;
    off_t                     value;
    uint64_t                  serial;
    ngx_uint_t                have;
    ngx_http_mdm_scep_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_scep_module);

    n = (rc == NGX_OK) ? PQntuples(res) : 0;

    if (n == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: no serial from mdm_certificate_serial: %s",
                      rc == NGX_OK ? "no rows" : PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* requests that ran out at the same time each add their block */

    have = ngx_http_mdm_scep_serials_n - ngx_http_mdm_scep_serials_next;
    ngx_memmove(ngx_http_mdm_scep_serials,
                ngx_http_mdm_scep_serials + ngx_http_mdm_scep_serials_next,
                have * sizeof(uint64_t));
    ngx_http_mdm_scep_serials_next = 0;
    ngx_http_mdm_scep_serials_n = have;

    ctx->serial = 0;

    for (i = 0; i < n; i++) {
        value = ngx_atoof((u_char *) PQgetvalue(res, i, 0),
                          PQgetlength(res, i, 0));

        if (value <= 0) {
            continue;
        }

        serial = (uint64_t) value;

        if (ctx->serial == 0) {
            ctx->serial = serial;

        } else if (ngx_http_mdm_scep_serials_n < NGX_HTTP_MDM_SCEP_SERIAL_MAX)
        {
            ngx_http_mdm_scep_serials[ngx_http_mdm_scep_serials_n++] =
                                                                     serial;
        }
    }

    if (ctx->serial == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: bad serial from mdm_certificate_serial");
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(r, ngx_http_mdm_scep_issue(r, ctx));
}


/*
 * Signs the certificate, then one round trip records it (and consumes
 * the challenge, or checks the renewed certificate).  A refusal there
 * throws the certificate away: it was never sent.
 */

static ngx_int_t
ngx_http_mdm_scep_issue(ngx_http_request_t *r, ngx_http_mdm_scep_ctx_t *ctx)
{
    int                             n, rc;
    u_char                         *der, *p;
    time_t                          now;
    const char                     *err, *values[10];
    unsigned char                  *out;
    ngx_mdm_pg_args_t               args;
    ngx_mdm_scep_issue_t            issue;
    ngx_http_mdm_scep_ca_t         *ca;
    int                             lengths[10], formats[10];
    char                            sha256[NGX_MDM_X509_SHA256_HEX_LEN + 1];
    char                            subject[NGX_MDM_X509_SUBJECT_SIZE];
    u_char                          nums[3][NGX_INT64_LEN + 1];

    ca = ctx->lcf->ca;
    now = ngx_time();

    ngx_memzero(&issue, sizeof(ngx_mdm_scep_issue_t));
    issue.serial.value = ctx->serial;
    issue.now = now;
    issue.backdate = NGX_HTTP_MDM_SCEP_BACKDATE;
    issue.validity = ngx_min(ctx->lcf->validity, ca->not_after - now);

    if (issue.validity <= 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: the CA certificate has expired");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_mdm_scep_issue(&ca->pki, ctx->msg.csr, &issue, &ctx->cert,
                            &err);

    if (rc == NGX_MDM_SCEP_REFUSED) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_REQUEST,
                                      (char *) err, (char *) err);
    }

    if (rc != NGX_MDM_SCEP_OK) {
        ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: cannot issue: %s", err);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->not_before = now - issue.backdate;
    ctx->not_after = now + issue.validity;

    if (ngx_mdm_x509_subject(ctx->cert, subject, sizeof(subject))
        != NGX_MDM_X509_OK)
    {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_REQUEST,
                                      "CSR subject is too long",
                                      "CSR subject is too long");
    }

    out = NULL;
    n = i2d_X509(ctx->cert, &out);
    der = (n > 0) ? ngx_pnalloc(r->pool, n) : NULL;

    if (der == NULL
        || ngx_mdm_x509_sha256_hex(ctx->cert, sha256) != NGX_MDM_X509_OK)
    {
        OPENSSL_free(out);
        ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: cannot encode the certificate");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(der, out, n);
    OPENSSL_free(out);

    p = ngx_sprintf(nums[0], "%uL", ctx->serial);
    *p = '\0';
    p = ngx_sprintf(nums[1], "%T", ctx->not_before);
    *p = '\0';
    p = ngx_sprintf(nums[2], "%T", ctx->not_after);
    *p = '\0';

    ngx_memzero(formats, sizeof(formats));
    ngx_memzero(lengths, sizeof(lengths));

    values[0] = (char *) nums[0];
    values[1] = sha256;
    values[2] = subject;
    values[3] = (char *) nums[1];
    values[4] = (char *) nums[2];
    values[5] = (char *) der;
    lengths[5] = n;
    formats[5] = 1;
    values[6] = ctx->source;
    values[7] = ctx->challenge[0] ? ctx->challenge : NULL;
    values[8] = ctx->renewed_from[0] ? ctx->renewed_from : NULL;
    values[9] = ctx->transaction_id;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_http_mdm_scep_record_sql;
    args.nparams = 10;
    args.values = values;
    args.lengths = lengths;
    args.formats = formats;
    args.result_format = 1;
    args.prepare = ctx->lcf->prepare ? 1 : 0;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_scep_record_done);
}


static void
ngx_http_mdm_scep_record_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    X509                      *x;
    ngx_str_t                  code;
    const u_char              *p;
    ngx_http_mdm_scep_ctx_t   *ctx;
    ngx_http_mdm_scep_code_t  *c;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_scep_module);

    if (rc != NGX_OK || PQntuples(res) != 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: recording serial %uL failed: %s",
                      ctx->serial,
                      rc == NGX_OK ? "no row" : PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    code.data = (u_char *) PQgetvalue(res, 0, 0);
    code.len = PQgetlength(res, 0, 0);

    for (c = ngx_http_mdm_scep_codes; c->code.len; c++) {
        if (c->code.len == code.len
            && ngx_strncmp(c->code.data, code.data, code.len) == 0)
        {
            break;
        }
    }

    if (c->code.len == 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "mdm scep: mdm_scep_record() answered \"%V\"", &code);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (c->fail_info >= 0) {
        ngx_http_finalize_request(r, ngx_http_mdm_scep_fail(r, ctx,
                                                    c->fail_info, c->reason,
                                                    c->text));
        return;
    }

    if (!PQgetisnull(res, 0, 1)) {
        /* replay: the certificate of the first answer, not the new one */
        p = (const u_char *) PQgetvalue(res, 0, 1);
        x = d2i_X509(NULL, &p, PQgetlength(res, 0, 1));

        if (x == NULL) {
            ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm scep: recorded certificate does not parse");
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        X509_free(ctx->cert);
        ctx->cert = x;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: %s sent again, answered with the "
                      "certificate issued then",
                      ngx_mdm_scep_type_name(ctx->msg.message_type));

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: %s: issued serial %uL (%s)",
                      ngx_mdm_scep_type_name(ctx->msg.message_type),
                      ctx->serial, ctx->source);
    }

    ngx_http_finalize_request(r, ngx_http_mdm_scep_reply(r, ctx,
                                                       NGX_MDM_SCEP_SUCCESS,
                                                       -1, NULL));
}


/* CertPoll: the certificate issued in the same transaction, if any */

static ngx_int_t
ngx_http_mdm_scep_cert_poll(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx)
{
    size_t              len;
    char               *subject;
    const char         *values[2];
    ngx_mdm_pg_args_t   args;

    if (ngx_http_mdm_scep_ours(r, ctx) != NGX_OK) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_CERT_ID,
                                      "CertPoll names another issuer",
                                      "no such certificate");
    }

    subject = ngx_pnalloc(r->pool, NGX_MDM_X509_SUBJECT_SIZE);
    if (subject == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_mdm_scep_name_string(ctx->msg.subject, subject,
                                   NGX_MDM_X509_SUBJECT_SIZE);

    if (len == 0 || ctx->transaction_id == NULL) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_CERT_ID,
                                      "CertPoll for no issued certificate",
                                      "no such certificate");
    }

    values[0] = ctx->transaction_id;
    values[1] = subject;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_http_mdm_scep_poll_sql;
    args.nparams = 2;
    args.values = values;
    args.result_format = 1;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_scep_found);
}


/* GetCert: a certificate we issued, by IssuerAndSerialNumber */

static ngx_int_t
ngx_http_mdm_scep_get_cert(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx)
{
    u_char             *p;
    uint64_t            serial;
    const char         *values[1];
    ngx_mdm_pg_args_t   args;

    if (ngx_http_mdm_scep_ours(r, ctx) != NGX_OK
        || ASN1_INTEGER_get_uint64(&serial, ctx->msg.serial) != 1
        || serial == 0 || serial > (uint64_t) INT64_MAX)
    {
        ERR_clear_error();
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_CERT_ID,
                                      "GetCert for a serial or issuer "
                                      "not ours",
                                      "no such certificate");
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(p, "%uL", serial) = '\0';
    values[0] = (char *) p;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_http_mdm_scep_get_cert_sql;
    args.nparams = 1;
    args.values = values;
    args.result_format = 1;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_scep_found);
}


static void
ngx_http_mdm_scep_found(ngx_http_request_t *r, PGresult *res, ngx_int_t rc)
{
    const u_char             *p;
    ngx_http_mdm_scep_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_scep_module);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: %s lookup failed: %s",
                      ngx_mdm_scep_type_name(ctx->msg.message_type),
                      PQresultErrorMessage(res));
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (PQntuples(res) == 1) {
        p = (const u_char *) PQgetvalue(res, 0, 0);
        ctx->cert = d2i_X509(NULL, &p, PQgetlength(res, 0, 0));
        ERR_clear_error();
    }

    /* recorded under another CA with the same name: not this one's */

    if (ctx->cert == NULL
        || X509_NAME_cmp(X509_get_issuer_name(ctx->cert), ctx->msg.issuer)
           != 0
        || X509_check_issued(ctx->lcf->ca->pki.cert, ctx->cert) != X509_V_OK)
    {
        ngx_http_finalize_request(r, ngx_http_mdm_scep_fail(r, ctx,
                                             NGX_MDM_SCEP_BAD_CERT_ID,
                                             "no such certificate",
                                             "no such certificate"));
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm scep: %s answered",
                  ngx_mdm_scep_type_name(ctx->msg.message_type));

    ngx_http_finalize_request(r, ngx_http_mdm_scep_reply(r, ctx,
                                                       NGX_MDM_SCEP_SUCCESS,
                                                       -1, NULL));
}


/* GetCRL: the CRL of this CA, for IssuerAndSerialNumber of any of ours */

static ngx_int_t
ngx_http_mdm_scep_get_crl(ngx_http_request_t *r,
    ngx_http_mdm_scep_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ngx_http_mdm_scep_ours(r, ctx) != NGX_OK) {
        return ngx_http_mdm_scep_fail(r, ctx, NGX_MDM_SCEP_BAD_CERT_ID,
                                      "GetCRL names another issuer",
                                      "no CRL for that issuer");
    }

    rc = ngx_http_mdm_scep_crl(r, ngx_http_mdm_scep_get_crl_done);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_mdm_scep_reply(r, ctx, NGX_MDM_SCEP_SUCCESS, -1, NULL);
}


static void
ngx_http_mdm_scep_get_crl_done(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_http_mdm_scep_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_scep_module);

    if (rc == NGX_OK) {
        rc = ngx_http_mdm_scep_reply(r, ctx, NGX_MDM_SCEP_SUCCESS, -1, NULL);
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * The CRL of the request's CA: NGX_DECLINED when this process's copy is
 * fresh (younger than mdm_scep_crl_cache) and may be used at once; else
 * what the caller returns to finalize with, handler(r, rc) coming later
 * when that is NGX_DONE.  (NGX_OK may mean a 503 was sent.)
 */

ngx_int_t
ngx_http_mdm_scep_crl(ngx_http_request_t *r, ngx_http_mdm_scep_crl_pt handler)
{
    ngx_mdm_pg_args_t         args;
    ngx_http_mdm_scep_ca_t   *ca;
    ngx_http_mdm_scep_ctx_t  *ctx;

    ctx = ngx_http_mdm_scep_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ca = ctx->lcf->ca;

    if (ca->crl != NULL && ngx_time() - ca->crl_time < ctx->lcf->crl_cache) {
        return NGX_DECLINED;
    }

    ctx->crl_handler = handler;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = ngx_http_mdm_scep_crl_sql;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_scep_crl_done);
}


static void
ngx_http_mdm_scep_crl_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    int                       i, n, len;
    time_t                    now;
    uint64_t                  number;
    X509_CRL                 *crl;
    unsigned char            *der;
    ngx_http_mdm_scep_ca_t   *ca;
    ngx_mdm_scep_revoked_t   *revoked;
    ngx_http_mdm_scep_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_scep_module);
    ca = ctx->lcf->ca;

    n = (rc == NGX_OK) ? PQntuples(res) : 0;

    if (n == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: CRL query failed: %s",
                      rc == NGX_OK ? "no rows" : PQresultErrorMessage(res));
        ctx->crl_handler(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    revoked = ngx_palloc(r->pool, n * sizeof(ngx_mdm_scep_revoked_t));
    if (revoked == NULL) {
        ctx->crl_handler(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    number = (uint64_t) ngx_atoof((u_char *) PQgetvalue(res, 0, 0),
                                  PQgetlength(res, 0, 0));

    for (i = 0, len = 0; i < n; i++) {
        if (PQgetisnull(res, i, 1)) {
            continue;   /* the row of an empty CRL */
        }

        revoked[len].serial.data = NULL;
        revoked[len].serial.value = (uint64_t) ngx_atoof(
                                         (u_char *) PQgetvalue(res, i, 1),
                                         PQgetlength(res, i, 1));
        revoked[len].revoked = (time_t) ngx_atoof(
                                         (u_char *) PQgetvalue(res, i, 2),
                                         PQgetlength(res, i, 2));
        revoked[len].reason = PQgetisnull(res, i, 3)
                              ? 0
                              : ngx_atoi((u_char *) PQgetvalue(res, i, 3),
                                         PQgetlength(res, i, 3));
        len++;
    }

    now = ngx_time();

    crl = ngx_mdm_scep_crl(&ca->pki, revoked, len, now,
                           now + ctx->lcf->crl_validity, number);

    der = NULL;
    n = crl ? i2d_X509_CRL(crl, &der) : 0;

    if (n <= 0) {
        X509_CRL_free(crl);
        ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: cannot sign the CRL");
        ctx->crl_handler(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_mdm_scep_crl_free(ca);

    ca->crl = crl;
    ca->crl_der = der;
    ca->crl_len = n;
    ca->crl_time = now;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm scep: CRL %uL signed, %d revoked", number, len);

    ctx->crl_handler(r, NGX_OK);
}


void
ngx_http_mdm_scep_crl_free(ngx_http_mdm_scep_ca_t *ca)
{
    X509_CRL_free(ca->crl);
    OPENSSL_free(ca->crl_der);

    ca->crl = NULL;
    ca->crl_der = NULL;
    ca->crl_len = 0;
}


/* GetCert, GetCRL and CertPoll must name this CA as the issuer */

static ngx_int_t
ngx_http_mdm_scep_ours(ngx_http_request_t *r, ngx_http_mdm_scep_ctx_t *ctx)
{
    if (ctx->msg.issuer == NULL
        || X509_NAME_cmp(ctx->msg.issuer,
                         X509_get_subject_name(ctx->lcf->ca->pki.cert))
           != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* CertRep FAILURE: one log line, at INFO (the client's fault) */

static ngx_int_t
ngx_http_mdm_scep_fail(ngx_http_request_t *r, ngx_http_mdm_scep_ctx_t *ctx,
    int fail_info, char *reason, char *text)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm scep: %s refused (failInfo %d): %s",
                  ngx_mdm_scep_type_name(ctx->msg.message_type), fail_info,
                  reason);

    return ngx_http_mdm_scep_reply(r, ctx, NGX_MDM_SCEP_FAILURE, fail_info,
                                   text);
}


static ngx_int_t
ngx_http_mdm_scep_reply(ngx_http_request_t *r, ngx_http_mdm_scep_ctx_t *ctx,
    int status, int fail_info, char *text)
{
    u_char                *p;
    size_t                 len;
    unsigned char         *der;
    ngx_mdm_scep_reply_t   rep;

    static ngx_str_t  type = ngx_string("application/x-pki-message");

    ngx_mdm_scep_reply_init(&rep, &ctx->msg, status);

    if (status == NGX_MDM_SCEP_FAILURE) {
        rep.fail_info = fail_info;
        rep.fail_info_text = text;

    } else {
        rep.cert = ctx->cert;
        rep.crl = (ctx->msg.message_type == NGX_MDM_SCEP_GET_CRL)
                  ? ctx->lcf->ca->crl : NULL;
    }

    if (ngx_mdm_scep_certrep(&ctx->lcf->ca->pki, &rep, &der, &len)
        != NGX_MDM_SCEP_OK)
    {
        ngx_ssl_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm scep: cannot build the CertRep");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        OPENSSL_free(der);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, der, len);
    OPENSSL_free(der);

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &type, p, len);
}
