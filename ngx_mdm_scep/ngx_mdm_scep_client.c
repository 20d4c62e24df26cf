
/*
 * SCEP (RFC 8894): the client side, what a device does.  For tests,
 * fuzzing and benchmarks; the server never calls it.
 */


#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_scep_pki_int.h"


X509 *
ngx_mdm_scep_client_signer(EVP_PKEY *key, const char *cn, time_t validity)
{
    X509       *x;
    X509_NAME  *name;

    x = X509_new();
    if (x == NULL) {
        return NULL;
    }

    name = X509_get_subject_name(x);

    if (!X509_set_version(x, X509_VERSION_3)
        || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1)
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                       (const unsigned char *) cn, -1, -1, 0)
        || !X509_set_issuer_name(x, name)
        || X509_gmtime_adj(X509_getm_notBefore(x), -600) == NULL
        || X509_gmtime_adj(X509_getm_notAfter(x), (long) validity) == NULL
        || !X509_set_pubkey(x, key)
        || X509_sign(x, key, EVP_sha256()) <= 0)
    {
        X509_free(x);
        return NULL;
    }

    return x;
}


/* "san" is in OpenSSL configuration syntax: "DNS:a.example,URI:urn:x" */

X509_REQ *
ngx_mdm_scep_client_csr(EVP_PKEY *key, const char *cn, const char *challenge,
    const char *san)
{
    int                        ok;
    X509_REQ                  *req;
    X509_EXTENSION            *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    req = X509_REQ_new();
    if (req == NULL) {
        return NULL;
    }

    ok = X509_REQ_set_version(req, X509_REQ_VERSION_1)
         && (cn == NULL
             || X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req),
                                           "CN", MBSTRING_UTF8,
                                           (const unsigned char *) cn, -1,
                                           -1, 0))
         && X509_REQ_set_pubkey(req, key)
         && (challenge == NULL
             || X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword,
                                          MBSTRING_UTF8,
                                          (const unsigned char *) challenge,
                                          -1));

    if (ok && san != NULL) {
        exts = sk_X509_EXTENSION_new_null();
        ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, san);

        if (exts != NULL && ext != NULL && sk_X509_EXTENSION_push(exts, ext))
        {
            ext = NULL;
            ok = X509_REQ_add_extensions(req, exts);

        } else {
            ok = 0;
        }

        X509_EXTENSION_free(ext);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }

    if (!ok || X509_REQ_sign(req, key, EVP_sha256()) <= 0) {
        X509_REQ_free(req);
        return NULL;
    }

    return req;
}


int
ngx_mdm_scep_client_request(const ngx_mdm_scep_request_t *req,
    unsigned char **der, size_t *len)
{
    int                         n, rc;
    size_t                      env_len;
    unsigned char              *data, *env;
    ngx_mdm_scep_ias_t          ias;
    ngx_mdm_scep_attrs_t        a;
    PKCS7_ISSUER_AND_SERIAL    *iasn;
    const ngx_mdm_scep_type_t  *type;

    *der = NULL;
    *len = 0;

    type = ngx_mdm_scep_type(req->message_type);

    if (ngx_mdm_scep_init() != NGX_MDM_SCEP_OK
        || type == NULL
        || type->data == NGX_MDM_SCEP_DATA_NONE
        || req->transaction_id == NULL
        || req->sender_nonce == NULL)
    {
        return NGX_MDM_SCEP_ERROR;
    }

    data = NULL;
    n = -1;

    switch (type->data) {

    case NGX_MDM_SCEP_DATA_CSR:
        if (req->csr != NULL) {
            n = i2d_X509_REQ(req->csr, &data);
        }
        break;

    case NGX_MDM_SCEP_DATA_ISSUER_AND_SERIAL:
        iasn = PKCS7_ISSUER_AND_SERIAL_new();

        if (iasn != NULL && req->issuer != NULL && req->serial != NULL
            && X509_NAME_set(&iasn->issuer, req->issuer))
        {
            ASN1_INTEGER_free(iasn->serial);
            iasn->serial = ASN1_INTEGER_dup(req->serial);

            if (iasn->serial != NULL) {
                n = i2d_PKCS7_ISSUER_AND_SERIAL(iasn, &data);
            }
        }

        PKCS7_ISSUER_AND_SERIAL_free(iasn);
        break;

    default: /* NGX_MDM_SCEP_DATA_ISSUER_AND_SUBJECT */
        if (req->issuer != NULL && req->subject != NULL) {
            ias.issuer = req->issuer;
            ias.subject = req->subject;
            n = ASN1_item_i2d((ASN1_VALUE *) &ias, &data,
                              ASN1_ITEM_rptr(ngx_mdm_scep_ias));
        }
        break;
    }

    if (n <= 0) {
        OPENSSL_free(data);
        return NGX_MDM_SCEP_ERROR;
    }

    memset(&a, 0, sizeof(ngx_mdm_scep_attrs_t));

    a.message_type = req->message_type;
    a.pki_status = -1;
    a.fail_info = -1;
    a.transaction_id = req->transaction_id;
    a.transaction_id_len = strlen(req->transaction_id);
    a.sender_nonce = req->sender_nonce;
    a.sender_nonce_len = req->sender_nonce_len;

    env = NULL;

    rc = ngx_mdm_scep_envelope(req->recipient, req->cipher_nid, data, n,
                               &env, &env_len);

    if (rc == NGX_MDM_SCEP_OK) {
        rc = ngx_mdm_scep_sign(req->signer, req->signer_key, req->digest_nid,
                               &a, env, env_len, NULL, der, len);
    }

    OPENSSL_free(data);
    OPENSSL_free(env);

    return rc;
}


/*
 * Reads a CertRep as a device does: the signature must verify with
 * "ca_signer" (the CA or RA certificate), and a SUCCESS envelope opens
 * with "cert" and "key" (the request's signer).
 */

int
ngx_mdm_scep_client_parse(const unsigned char *der, size_t len,
    X509 *ca_signer, X509 *cert, EVP_PKEY *key, ngx_mdm_scep_msg_t *msg)
{
    int                   rc;
    BIO                  *data;
    long                  n;
    char                 *buf;
    CMS_ContentInfo      *cms, *inner;
    ASN1_OCTET_STRING   **content;
    const unsigned char  *p;

    ngx_mdm_scep_msg_init(msg);

    if (ngx_mdm_scep_init() != NGX_MDM_SCEP_OK || ca_signer == NULL) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_INTERNAL);
    }

    data = NULL;
    inner = NULL;

    rc = ngx_mdm_scep_outer(msg, der, len, ca_signer, &cms);
    if (rc != NGX_MDM_SCEP_OK) {
        goto done;
    }

    if (msg->message_type != NGX_MDM_SCEP_CERT_REP) {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_TYPE);
        goto done;
    }

    if (msg->recipient_nonce_len == 0
        || (msg->pki_status != NGX_MDM_SCEP_SUCCESS
            && msg->pki_status != NGX_MDM_SCEP_FAILURE
            && msg->pki_status != NGX_MDM_SCEP_PENDING)
        || (msg->pki_status == NGX_MDM_SCEP_FAILURE
            && (msg->fail_info < NGX_MDM_SCEP_BAD_ALG
                || msg->fail_info > NGX_MDM_SCEP_BAD_CERT_ID)))
    {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_STATUS);
        goto done;
    }

    content = CMS_get0_content(cms);

    if (msg->pki_status != NGX_MDM_SCEP_SUCCESS) {
        if (content != NULL && *content != NULL
            && ASN1_STRING_length(*content) > 0)
        {
            rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_STATUS);
        }

        goto done;
    }

    if (content == NULL || *content == NULL) {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_NO_CONTENT);
        goto done;
    }

    rc = ngx_mdm_scep_open(msg, *content, &cert, &key, 1, &data);
    if (rc != NGX_MDM_SCEP_OK) {
        goto done;
    }

    n = BIO_get_mem_data(data, &buf);
    p = (const unsigned char *) buf;

    inner = n > 0 ? d2i_CMS_ContentInfo(NULL, &p, n) : NULL;

    if (inner == NULL
        || p != (const unsigned char *) buf + n
        || OBJ_obj2nid(CMS_get0_type(inner)) != NID_pkcs7_signed)
    {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_DATA);
        goto done;
    }

    msg->certs = CMS_get1_certs(inner);
    msg->crls = CMS_get1_crls(inner);

    if (msg->certs == NULL && msg->crls == NULL) {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_DATA);
    }

done:

    CMS_ContentInfo_free(inner);
    BIO_free(data);
    CMS_ContentInfo_free(cms);

    if (rc == NGX_MDM_SCEP_MALFORMED || rc == NGX_MDM_SCEP_REFUSED) {
        ERR_clear_error();
    }

    return rc;
}
