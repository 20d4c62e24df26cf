
/*
 * nginx-mdm: CMS helpers (see ngx_mdm_x509.h): Mdm-Signature, attached
 * SignedData verification and signing.
 */


#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include "ngx_mdm_x509_int.h"


static ngx_mdm_x509_rc_e ngx_mdm_cms_parse(const unsigned char *der,
    size_t der_len, int detached, CMS_ContentInfo **cmsp, X509 **signer);
static ngx_mdm_x509_rc_e ngx_mdm_cms_decode_base64(const char *b64,
    size_t b64_len, unsigned char **der, size_t *der_len);


/* CMS */

/*
 * A SignedData with exactly one signer whose certificate it carries;
 * "detached": the content must be absent (1) or present (0).
 */

static ngx_mdm_x509_rc_e
ngx_mdm_cms_parse(const unsigned char *der, size_t der_len, int detached,
    CMS_ContentInfo **cmsp, X509 **signer)
{
    int                        n;
    X509                      *x;
    CMS_SignerInfo            *si;
    CMS_ContentInfo           *cms;
    const unsigned char       *p;
    STACK_OF(CMS_SignerInfo)  *sis;

    if (der == NULL || der_len == 0 || der_len > NGX_MDM_X509_LEN_MAX) {
        ngx_mdm_x509_set_error("empty or too large CMS");
        return NGX_MDM_X509_MALFORMED;
    }

    p = der;

    cms = d2i_CMS_ContentInfo(NULL, &p, (long) der_len);
    if (cms == NULL) {
        ngx_mdm_x509_set_error("not a DER CMS ContentInfo");
        return NGX_MDM_X509_MALFORMED;
    }

    if (p != der + der_len) {
        ngx_mdm_x509_set_error("%zu bytes after the CMS",
                               (size_t) (der + der_len - p));
        goto malformed;
    }

    if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
        ngx_mdm_x509_set_error("CMS is not SignedData");
        goto malformed;
    }

    n = CMS_is_detached(cms);
    if (n != detached) {
        ngx_mdm_x509_set_error(detached ? "CMS content is not detached"
                                        : "CMS has no content");
        goto malformed;
    }

    sis = CMS_get0_SignerInfos(cms);
    n = sis ? sk_CMS_SignerInfo_num(sis) : 0;

    if (n != 1) {
        ngx_mdm_x509_set_error("CMS has %d signers, not one", n);
        goto malformed;
    }

    si = sk_CMS_SignerInfo_value(sis, 0);

    if (CMS_set1_signers_certs(cms, NULL, 0) < 0) {
        ngx_mdm_x509_set_error("bad CMS certificates");
        goto malformed;
    }

    x = NULL;
    CMS_SignerInfo_get0_algs(si, NULL, &x, NULL, NULL);

    if (x == NULL) {
        CMS_ContentInfo_free(cms);
        ngx_mdm_x509_set_error("signer certificate is not in the CMS");
        return NGX_MDM_X509_NO_SIGNER;
    }

    *cmsp = cms;
    *signer = x;

    return NGX_MDM_X509_OK;

malformed:

    CMS_ContentInfo_free(cms);

    return NGX_MDM_X509_MALFORMED;
}


static ngx_mdm_x509_rc_e
ngx_mdm_cms_decode_base64(const char *b64, size_t b64_len,
    unsigned char **der, size_t *der_len)
{
    unsigned char  *buf;

    if (b64 == NULL || b64_len == 0 || b64_len > NGX_MDM_X509_LEN_MAX) {
        ngx_mdm_x509_set_error("empty or too large base64");
        return NGX_MDM_X509_MALFORMED;
    }

    buf = malloc(b64_len);
    if (buf == NULL) {
        ngx_mdm_x509_set_error("malloc() failed");
        return NGX_MDM_X509_ERROR;
    }

    if (ngx_mdm_x509_base64_decode((const unsigned char *) b64, b64_len,
                                   NGX_MDM_B64_STD|NGX_MDM_B64_URL
                                   |NGX_MDM_B64_WS,
                                   buf, b64_len, der_len)
        != 0)
    {
        free(buf);
        ngx_mdm_x509_set_error("bad base64");
        return NGX_MDM_X509_MALFORMED;
    }

    *der = buf;

    return NGX_MDM_X509_OK;
}


ngx_mdm_x509_rc_e
ngx_mdm_cms_verify_detached(const unsigned char *der, size_t der_len,
    const unsigned char *body, size_t body_len, X509 **signer)
{
    BIO                *bio, *mem;
    X509               *x;
    CMS_ContentInfo    *cms;
    ngx_mdm_x509_rc_e   rc;

    if (body_len > NGX_MDM_X509_LEN_MAX || (body == NULL && body_len)) {
        ngx_mdm_x509_set_error("bad body");
        return NGX_MDM_X509_ERROR;
    }

    rc = ngx_mdm_cms_parse(der, der_len, 1, &cms, &x);
    if (rc != NGX_MDM_X509_OK) {
        return rc;
    }

    /*
     * OpenSSL 3.0's CMS_verify() copies a memory BIO into a temporary one
     * that it leaks when CMS_dataInit() fails (an unknown digest, say):
     * a null filter on top hides the memory BIO from it.
     */

    mem = BIO_new_mem_buf(body_len ? (const void *) body : "", (int) body_len);
    bio = BIO_new(BIO_f_null());

    if (mem == NULL || bio == NULL) {
        BIO_free(mem);
        BIO_free(bio);
        CMS_ContentInfo_free(cms);
        ngx_mdm_x509_set_error("BIO_new() failed");
        return NGX_MDM_X509_ERROR;
    }

    BIO_push(bio, mem);

    if (CMS_verify(cms, NULL, NULL, bio, NULL,
                   CMS_NO_SIGNER_CERT_VERIFY|CMS_BINARY)
        != 1)
    {
        ngx_mdm_x509_set_error("signature does not match the body");
        rc = NGX_MDM_X509_BAD_SIGNATURE;
        goto done;
    }

    if (signer != NULL) {
        if (X509_up_ref(x) != 1) {
            ngx_mdm_x509_set_error("X509_up_ref() failed");
            rc = NGX_MDM_X509_ERROR;
            goto done;
        }

        *signer = x;
    }

    ERR_clear_error();

done:

    BIO_free_all(bio);
    CMS_ContentInfo_free(cms);

    return rc;
}


ngx_mdm_x509_rc_e
ngx_mdm_cms_verify_mdm_signature(const char *b64, size_t b64_len,
    const unsigned char *body, size_t body_len, X509 **signer)
{
    size_t              len;
    unsigned char      *der;
    ngx_mdm_x509_rc_e   rc;

    rc = ngx_mdm_cms_decode_base64(b64, b64_len, &der, &len);
    if (rc != NGX_MDM_X509_OK) {
        return rc;
    }

    rc = ngx_mdm_cms_verify_detached(der, len, body, body_len, signer);

    free(der);

    return rc;
}


ngx_mdm_x509_rc_e
ngx_mdm_cms_verify_attached(const unsigned char *der, size_t der_len,
    ngx_mdm_x509_verifier_t *v, time_t now, unsigned char *content,
    size_t content_size, size_t *content_len, X509 **signer)
{
    int                     len;
    X509                   *x;
    STACK_OF(X509)         *certs;
    CMS_ContentInfo        *cms;
    ASN1_OCTET_STRING     **pos;
    ngx_mdm_x509_rc_e       rc;

    if (v == NULL) {
        ngx_mdm_x509_set_error("no verifier");
        return NGX_MDM_X509_ERROR;
    }

    rc = ngx_mdm_cms_parse(der, der_len, 0, &cms, &x);
    if (rc != NGX_MDM_X509_OK) {
        return rc;
    }

    certs = NULL;

    pos = CMS_get0_content(cms);
    if (pos == NULL || *pos == NULL) {
        ngx_mdm_x509_set_error("CMS has no content");
        rc = NGX_MDM_X509_MALFORMED;
        goto done;
    }

    if (CMS_verify(cms, NULL, NULL, NULL, NULL,
                   CMS_NO_SIGNER_CERT_VERIFY|CMS_BINARY)
        != 1)
    {
        ngx_mdm_x509_set_error("signature does not match the content");
        rc = NGX_MDM_X509_BAD_SIGNATURE;
        goto done;
    }

    /* the chain, with the CMS certificates as intermediates */

    certs = CMS_get1_certs(cms);

    rc = ngx_mdm_x509_verify(v, x, certs, now, 0);
    if (rc != NGX_MDM_X509_OK) {
        goto done;
    }

    len = ASN1_STRING_length(*pos);

    if (len < 0 || (content != NULL && (size_t) len > content_size)) {
        ngx_mdm_x509_set_error("content of %d bytes does not fit", len);
        rc = NGX_MDM_X509_ERROR;
        goto done;
    }

    if (signer != NULL) {
        if (X509_up_ref(x) != 1) {
            ngx_mdm_x509_set_error("X509_up_ref() failed");
            rc = NGX_MDM_X509_ERROR;
            goto done;
        }

        *signer = x;
    }

    if (content != NULL && len > 0) {
        memcpy(content, ASN1_STRING_get0_data(*pos), (size_t) len);
    }

    if (content_len != NULL) {
        *content_len = (size_t) len;
    }

    ERR_clear_error();

done:

    ngx_mdm_x509_chain_free(certs);
    CMS_ContentInfo_free(cms);

    return rc;
}


ngx_mdm_x509_rc_e
ngx_mdm_cms_verify_attached_base64(const char *b64, size_t b64_len,
    ngx_mdm_x509_verifier_t *v, time_t now, unsigned char *content,
    size_t content_size, size_t *content_len, X509 **signer)
{
    size_t              len;
    unsigned char      *der;
    ngx_mdm_x509_rc_e   rc;

    rc = ngx_mdm_cms_decode_base64(b64, b64_len, &der, &len);
    if (rc != NGX_MDM_X509_OK) {
        return rc;
    }

    rc = ngx_mdm_cms_verify_attached(der, len, v, now, content, content_size,
                                     content_len, signer);

    free(der);

    return rc;
}


/* signing */

unsigned char *
ngx_mdm_cms_sign(const unsigned char *data, size_t len, X509 *cert,
    EVP_PKEY *key, STACK_OF(X509) *chain, size_t *out_len)
{
    int               i, n;
    BIO              *bio;
    X509             *x;
    unsigned char    *out;
    unsigned int      flags;
    CMS_ContentInfo  *cms;

    if (cert == NULL || key == NULL || out_len == NULL
        || len > NGX_MDM_X509_LEN_MAX || (data == NULL && len))
    {
        ngx_mdm_x509_set_error("bad arguments to sign");
        return NULL;
    }

    out = NULL;
    cms = NULL;

    /* the exact bytes: no MIME canonicalisation, no S/MIME capabilities */

    flags = CMS_BINARY|CMS_NOSMIMECAP;

    bio = BIO_new_mem_buf(len ? (const void *) data : "", (int) len);
    if (bio == NULL) {
        ngx_mdm_x509_set_error("BIO_new_mem_buf() failed");
        return NULL;
    }

    cms = CMS_sign(NULL, NULL, NULL, NULL, flags|CMS_PARTIAL);
    if (cms == NULL) {
        ngx_mdm_x509_set_error("CMS_sign() failed");
        goto done;
    }

    if (CMS_add1_signer(cms, cert, key, EVP_sha256(), flags) == NULL) {
        ngx_mdm_x509_set_error("CMS_add1_signer() failed");
        goto done;
    }

    for (i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        x = sk_X509_value(chain, i);

        if (X509_cmp(x, cert) == 0) {
            continue;
        }

        if (CMS_add1_cert(cms, x) != 1) {
            ngx_mdm_x509_set_error("CMS_add1_cert() failed");
            goto done;
        }
    }

    if (CMS_final(cms, bio, NULL, flags) != 1) {
        ngx_mdm_x509_set_error("CMS_final() failed");
        goto done;
    }

    n = i2d_CMS_ContentInfo(cms, &out);
    if (n <= 0) {
        ngx_mdm_x509_set_error("i2d_CMS_ContentInfo() failed");
        out = NULL;
        goto done;
    }

    *out_len = (size_t) n;

    ERR_clear_error();

done:

    CMS_ContentInfo_free(cms);
    BIO_free(bio);

    return out;
}
