
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
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/ssl.h>
#include "ngx_mdm_checkin_module.h"


static ngx_table_elt_t *ngx_http_mdm_checkin_header(ngx_http_request_t *r,
    const u_char *name, size_t len);
static ngx_int_t ngx_http_mdm_checkin_refused(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx, const char *reason, const char *detail);
static void ngx_http_mdm_checkin_cert_cleanup(void *data);


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
    u_char                            tls_sha[NGX_MDM_X509_SHA256_LEN];

    c = r->connection;
    lcf = ctx->lcf;
    id = &ctx->identity;

    cert = NULL;
    chain = NULL;
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

    return NGX_OK;
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
