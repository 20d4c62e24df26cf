
/*
 * The device certificate of a check-in or command report (DESIGN.md §6).
 *
 * Where it comes from, first found first taken:
 *   1. the Mdm-Signature header (mdm_checkin_signature on|require): a
 *      detached CMS over the exact body, its one signer;
 *   2. a header set by a trusted load balancer (mdm_checkin_forwarded_header
 *      from an mdm_checkin_trusted_proxy address): RFC 9440 Client-Cert or
 *      nginx's $ssl_client_escaped_cert;
 *   3. the TLS client certificate (ssl_verify_client optional_no_ca).
 * Then its chain to an mdm_checkin_ca certificate, expired only within
 * mdm_checkin_grace.  Its binding to the enrollment is checked by the
 * step's SQL function.  Every refusal is 400 with one INFO line.
 *
 * A verified certificate is remembered, for at most
 * NGX_MDM_CHECKIN_VERIFIED_TTL seconds and never past its notAfter (nor
 * past the grace, for one in it): a TLS client certificate on its
 * connection (a keep-alive connection verifies once), a forwarded one in a
 * table of the worker keyed by the SHA-256 of the header's value (no
 * parsing either).  A certificate that failed is never remembered.
 *
 * Memory (README-part-conn.md): a connection's record lives in the
 * second block of the connection's pool, which nginx takes anyway on an
 * HTTPS keep-alive connection; the forwarded table is calloc()ed, its
 * pages untouched until used, and holds no X509.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/ssl.h>
#include "ngx_mdm_checkin_module.h"


#define NGX_MDM_CHECKIN_VERIFIED_TTL     300
#define NGX_MDM_CHECKIN_FORWARDED_SLOTS  65536


/*
 * A verified certificate, as remembered: what the request needs of it
 * (the hex form is made on recall).  A connection's record references its
 * TLS certificate (the session's own object: no memory), to recognise it;
 * a forwarded one keeps no X509 (each took about 5 KB: a decoded
 * certificate and its public key).
 */
typedef struct {
    X509                             *cert;       /* referenced, or NULL */
    ngx_mdm_x509_verifier_t          *verifier;
    time_t                            until;
    time_t                            not_after;
    u_char                            key[NGX_MDM_X509_SHA256_LEN];
    u_char                            sha256[NGX_MDM_X509_SHA256_LEN];
    unsigned                          in_grace:1;
} ngx_http_mdm_checkin_verified_t;


static ngx_http_mdm_checkin_verified_t *ngx_http_mdm_checkin_conn_verified(
    ngx_connection_t *c, ngx_uint_t create);
static void ngx_http_mdm_checkin_conn_verified_cleanup(void *data);
static ngx_int_t ngx_http_mdm_checkin_recall(ngx_http_mdm_checkin_ctx_t *ctx,
    ngx_http_mdm_checkin_verified_t *v);
static void ngx_http_mdm_checkin_remember(ngx_http_mdm_checkin_ctx_t *ctx,
    ngx_http_mdm_checkin_verified_t *v, X509 *cert);
static ngx_table_elt_t *ngx_http_mdm_checkin_header(ngx_http_request_t *r,
    const u_char *name, size_t len);
static ngx_int_t ngx_http_mdm_checkin_refused(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, const char *reason, const char *detail);
static void ngx_http_mdm_checkin_cert_cleanup(void *data);


static ngx_http_mdm_checkin_verified_t  *ngx_http_mdm_checkin_forwarded;


static const char  *ngx_http_mdm_checkin_sources[] = {
    "TLS client certificate",
    "Mdm-Signature",
    "forwarded certificate"
};


ngx_int_t
ngx_http_mdm_checkin_identity(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    X509                             *cert, *tls;
    time_t                            not_after;
    ngx_uint_t                        untrusted_proxy;
    ngx_table_elt_t                  *h;
    STACK_OF(X509)                   *chain;
    ngx_mdm_x509_rc_e                 rc;
    ngx_pool_cleanup_t               *cln;
    ngx_connection_t                 *c;
    ngx_http_mdm_checkin_identity_t  *id;
    ngx_http_mdm_checkin_loc_conf_t  *lcf;
    ngx_http_mdm_checkin_verified_t  *v, *slot;
    u_char                            tls_sha[NGX_MDM_X509_SHA256_LEN];
    u_char                            key[NGX_MDM_X509_SHA256_LEN];

    c = r->connection;
    lcf = ctx->lcf;
    id = &ctx->identity;

    cert = NULL;
    chain = NULL;
    slot = NULL;
    untrusted_proxy = 0;

    /* its X509 is freed with the request, whichever way it came */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_mdm_checkin_cert_cleanup;
    cln->data = id;

    if (lcf->signature != NGX_HTTP_MDM_CHECKIN_SIGNATURE_OFF) {
        h = ngx_http_mdm_checkin_header(r, (u_char *) "Mdm-Signature",
                                        sizeof("Mdm-Signature") - 1);

        if (h) {
            rc = ngx_mdm_cms_verify_mdm_signature((char *) h->value.data,
                                                  h->value.len, ctx->body,
                                                  ctx->len, &cert);
            if (rc != NGX_MDM_X509_OK) {
                return ngx_http_mdm_checkin_refused(r, ctx,
                                             "bad Mdm-Signature",
                                             ngx_mdm_x509_error());
            }

            id->source = NGX_HTTP_MDM_CHECKIN_FROM_SIGNATURE;

        } else if (lcf->signature == NGX_HTTP_MDM_CHECKIN_SIGNATURE_REQUIRE) {
            return ngx_http_mdm_checkin_refused(r, ctx,
                                         "no Mdm-Signature header",
                                         "mdm_checkin_signature require");
        }
    }

    if (cert == NULL && lcf->forwarded_header.len) {
        h = ngx_http_mdm_checkin_header(r, lcf->forwarded_header.data,
                                        lcf->forwarded_header.len);

        if (h && ngx_cidr_match(c->sockaddr, lcf->trusted_proxies)
                 == NGX_OK)
        {
            id->source = NGX_HTTP_MDM_CHECKIN_FROM_FORWARDED;

            if (ngx_http_mdm_checkin_forwarded) {
                (void) EVP_Digest(h->value.data, h->value.len, key, NULL,
                                  EVP_sha256(), NULL);

                slot = &ngx_http_mdm_checkin_forwarded[
                          (key[0] | key[1] << 8)
                          & (NGX_MDM_CHECKIN_FORWARDED_SLOTS - 1)];

                if (ngx_memcmp(slot->key, key, sizeof(key)) == 0
                    && slot->verifier == lcf->verifier
                    && ngx_http_mdm_checkin_recall(ctx, slot) == NGX_OK)
                {
                    /* no X509 in the identity: nothing after needs it */
                    return NGX_OK;
                }
            }

            cert = ngx_mdm_x509_client_cert(h->value.data, h->value.len,
                                            NGX_MDM_X509_FORM_AUTO);
            if (cert == NULL) {
                return ngx_http_mdm_checkin_refused(r, ctx,
                                             "malformed forwarded certificate",
                                             ngx_mdm_x509_error());
            }

            id->source = NGX_HTTP_MDM_CHECKIN_FROM_FORWARDED;

        } else if (h) {
            untrusted_proxy = 1;
        }
    }

    tls = NULL;

    if (c->ssl) {
        tls = SSL_get_peer_certificate(c->ssl->connection);
        chain = SSL_get_peer_cert_chain(c->ssl->connection);
    }

    if (cert == NULL) {
        cert = tls;
        tls = NULL;
        id->source = NGX_HTTP_MDM_CHECKIN_FROM_TLS;

        /* verified before on this connection */

        v = cert ? ngx_http_mdm_checkin_conn_verified(c, 0) : NULL;

        if (v && v->cert == cert && v->verifier == lcf->verifier
            && ngx_http_mdm_checkin_recall(ctx, v) == NGX_OK)
        {
            /* the reference of SSL_get_peer_certificate() is the identity's */
            id->cert = cert;
            return NGX_OK;
        }
    }

    id->cert = cert;

    if (cert == NULL) {
        return ngx_http_mdm_checkin_refused(r, ctx, "no device certificate",
                                     untrusted_proxy
                                     ? "the forwarded certificate header "
                                       "came from an untrusted address"
                                     : "no TLS client certificate, "
                                       "no Mdm-Signature");
    }

    /*
     * One device, one identity: a signer must be the TLS certificate, if
     * any.  Behind a load balancer the TLS certificate is the balancer's.
     */

    if (tls) {
        if (id->source == NGX_HTTP_MDM_CHECKIN_FROM_SIGNATURE
            && (ngx_mdm_x509_sha256(tls, tls_sha) != NGX_MDM_X509_OK
                || ngx_mdm_x509_sha256(cert, id->sha256) != NGX_MDM_X509_OK
                || ngx_memcmp(tls_sha, id->sha256, sizeof(tls_sha)) != 0))
        {
            X509_free(tls);
            return ngx_http_mdm_checkin_refused(r, ctx,
                                         "two device certificates",
                                         "the TLS client certificate is not "
                                         "the one that signed the message");
        }

        X509_free(tls);
    }

    if (id->source != NGX_HTTP_MDM_CHECKIN_FROM_TLS) {
        chain = NULL;
    }

    if (ngx_mdm_x509_sha256(cert, id->sha256) != NGX_MDM_X509_OK
        || ngx_mdm_x509_sha256_hex(cert, (char *) id->sha256_hex)
           != NGX_MDM_X509_OK
        || ngx_mdm_x509_not_after(cert, &not_after) != NGX_MDM_X509_OK)
    {
        return ngx_http_mdm_checkin_refused(r, ctx,
                                     "unreadable device certificate",
                                     ngx_mdm_x509_error());
    }

    id->not_after = not_after;

    rc = ngx_mdm_x509_verify(lcf->verifier, cert, chain, ngx_time(),
                             lcf->grace);

    switch (rc) {

    case NGX_MDM_X509_OK:
        break;

    case NGX_MDM_X509_OK_IN_GRACE:
        id->in_grace = 1;
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "mdm check-in: certificate %s expired, in grace",
                       id->sha256_hex);
        break;

    case NGX_MDM_X509_ERROR:
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mdm check-in: verifying the device certificate "
                      "failed: %s", ngx_mdm_x509_error());
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    default:
        return ngx_http_mdm_checkin_refused(r, ctx,
                                     ngx_mdm_x509_rc_str(rc),
                                     ngx_mdm_x509_error());
    }

    /* remember it */

    if (id->source == NGX_HTTP_MDM_CHECKIN_FROM_TLS) {
        v = ngx_http_mdm_checkin_conn_verified(c, 1);
        if (v) {
            ngx_http_mdm_checkin_remember(ctx, v, id->cert);
        }

    } else if (id->source == NGX_HTTP_MDM_CHECKIN_FROM_FORWARDED
               && slot != NULL)
    {
        ngx_http_mdm_checkin_remember(ctx, slot, NULL);
        ngx_memcpy(slot->key, key, sizeof(key));
    }

    return NGX_OK;
}


ngx_int_t
ngx_mdm_checkin_identity_init_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    ngx_http_mdm_checkin_forwarded = NULL;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_mdm_checkin_module);
    if (mcf == NULL || !mcf->used || !mcf->cache) {
        return NGX_OK;
    }

    /*
     * calloc(), not ngx_calloc() (malloc() and memset()): zeroed pages
     * that take no memory until used (a server that never sees a
     * forwarded certificate never touches them).
     */

    ngx_http_mdm_checkin_forwarded = calloc(NGX_MDM_CHECKIN_FORWARDED_SLOTS,
                                      sizeof(ngx_http_mdm_checkin_verified_t));
    if (ngx_http_mdm_checkin_forwarded == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "calloc(%uz) failed",
                      (size_t) NGX_MDM_CHECKIN_FORWARDED_SLOTS
                      * sizeof(ngx_http_mdm_checkin_verified_t));
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The connection's verified certificate: kept in a cleanup of the
 * connection's pool, found by its handler.  On an HTTPS keep-alive
 * connection it shares the pool's second block with nginx's own (the first
 * is full after the handshake), so it costs no allocation of its own.
 */

static ngx_http_mdm_checkin_verified_t *
ngx_http_mdm_checkin_conn_verified(ngx_connection_t *c, ngx_uint_t create)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = c->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_mdm_checkin_conn_verified_cleanup) {
            return cln->data;
        }
    }

    if (!create) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(c->pool,
                               sizeof(ngx_http_mdm_checkin_verified_t));
    if (cln == NULL) {
        return NULL;
    }

    ngx_memzero(cln->data, sizeof(ngx_http_mdm_checkin_verified_t));
    cln->handler = ngx_http_mdm_checkin_conn_verified_cleanup;

    return cln->data;
}


static void
ngx_http_mdm_checkin_conn_verified_cleanup(void *data)
{
    ngx_http_mdm_checkin_verified_t  *v = data;

    if (v->cert) {
        X509_free(v->cert);
        v->cert = NULL;
    }
}


/*
 * NGX_OK: the identity is known and still valid; ctx->identity is set but
 * for its certificate (the caller's reference).  NGX_DECLINED changes
 * nothing.
 */

static ngx_int_t
ngx_http_mdm_checkin_recall(ngx_http_mdm_checkin_ctx_t *ctx,
    ngx_http_mdm_checkin_verified_t *v)
{
    u_char                           *p;
    ngx_http_mdm_checkin_identity_t  *id;

    if (v->until == 0 || ngx_time() >= v->until) {
        return NGX_DECLINED;
    }

    id = &ctx->identity;

    id->not_after = v->not_after;
    id->in_grace = v->in_grace;
    ngx_memcpy(id->sha256, v->sha256, sizeof(id->sha256));

    p = ngx_hex_dump(id->sha256_hex, v->sha256, sizeof(v->sha256));
    *p = '\0';

    return NGX_OK;
}


static void
ngx_http_mdm_checkin_remember(ngx_http_mdm_checkin_ctx_t *ctx,
    ngx_http_mdm_checkin_verified_t *v, X509 *cert)
{
    time_t                            until, now;
    ngx_http_mdm_checkin_identity_t  *id;

    id = &ctx->identity;
    now = ngx_time();

    until = id->in_grace ? id->not_after + ctx->lcf->grace : id->not_after;

    if (until > now + NGX_MDM_CHECKIN_VERIFIED_TTL) {
        until = now + NGX_MDM_CHECKIN_VERIFIED_TTL;
    }

    if (cert && !X509_up_ref(cert)) {
        return;
    }

    if (v->cert) {
        X509_free(v->cert);
    }

    v->cert = cert;
    v->verifier = ctx->lcf->verifier;
    v->until = until;
    v->not_after = id->not_after;
    v->in_grace = id->in_grace;
    ngx_memcpy(v->sha256, id->sha256, sizeof(v->sha256));
}


static ngx_table_elt_t *
ngx_http_mdm_checkin_header(ngx_http_request_t *r, const u_char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* one INFO line: the client's fault; the device gets 400 */

static ngx_int_t
ngx_http_mdm_checkin_refused(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, const char *reason, const char *detail)
{
    ngx_http_mdm_checkin_identity_t  *id;

    id = &ctx->identity;

    if (id->cert == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm check-in refused: %s (%s)",
                      reason, detail ? detail : "");

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm check-in refused: %s (%s), %s, certificate %s",
                      reason, detail ? detail : "",
                      ngx_http_mdm_checkin_sources[id->source],
                      id->sha256_hex[0] ? (char *) id->sha256_hex : "?");
    }

    ctx->reason = reason;

    return NGX_HTTP_BAD_REQUEST;
}


static void
ngx_http_mdm_checkin_cert_cleanup(void *data)
{
    ngx_http_mdm_checkin_identity_t  *id = data;

    if (id->cert) {
        X509_free(id->cert);
        id->cert = NULL;
    }
}


/* mdm_checkin_trusted_proxy 10.0.0.0/8 | 192.0.2.1 | ::1 */

char *
ngx_http_mdm_checkin_trusted_proxy(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_checkin_loc_conf_t  *lcf = conf;

    ngx_int_t    rc;
    ngx_str_t   *value;
    ngx_cidr_t  *cidr;

    value = cf->args->elts;

    if (lcf->trusted_proxies == NGX_CONF_UNSET_PTR) {
        lcf->trusted_proxies = ngx_array_create(cf->pool, 2,
                                                sizeof(ngx_cidr_t));
        if (lcf->trusted_proxies == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    cidr = ngx_array_push(lcf->trusted_proxies);
    if (cidr == NULL) {
        return NGX_CONF_ERROR;
    }

    rc = ngx_ptocidr(&value[1], cidr);

    if (rc == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address or network \"%V\": give an "
                           "address or a CIDR block such as 10.0.0.0/8",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (rc == NGX_DONE) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "low address bits of %V are meaningless",
                           &value[1]);
    }

    return NGX_CONF_OK;
}
