
/*
 * SCEP (RFC 8894) pkiMessages, certificate issuance, CertRep, GetCACert
 * and CRLs on OpenSSL 3.  No nginx here: see ngx_mdm_scep_pki.h.
 */


#include <limits.h>
#include <string.h>
#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_scep_pki.h"


typedef enum {
    NGX_MDM_SCEP_DATA_NONE = 0,
    NGX_MDM_SCEP_DATA_CSR,
    NGX_MDM_SCEP_DATA_ISSUER_AND_SERIAL,
    NGX_MDM_SCEP_DATA_ISSUER_AND_SUBJECT
} ngx_mdm_scep_data_e;


typedef struct {
    int                       type;
    ngx_mdm_scep_data_e       data;
    unsigned                  renewal:1;
    const char               *name;
} ngx_mdm_scep_type_t;


typedef struct {
    int                       rc;
    int                       fail_info;
    const char               *text;
} ngx_mdm_scep_reason_t;


typedef struct {
    int                       nid;
    int                       reply_nid;
} ngx_mdm_scep_cipher_t;


/* IssuerAndSubject (RFC 8894 3.3.3), the messageData of CertPoll */
typedef struct {
    X509_NAME                *issuer;
    X509_NAME                *subject;
} ngx_mdm_scep_ias_t;


/* the signed attributes of a pkiMessage we build */
typedef struct {
    int                       message_type;
    int                       pki_status;       /* -1: none */
    int                       fail_info;        /* -1: none */
    const char               *fail_info_text;
    const char               *transaction_id;
    size_t                    transaction_id_len;
    const unsigned char      *sender_nonce;
    size_t                    sender_nonce_len;
    const unsigned char      *recipient_nonce;
    size_t                    recipient_nonce_len;
} ngx_mdm_scep_attrs_t;


enum {
    NGX_MDM_SCEP_OID_MESSAGE_TYPE = 0,
    NGX_MDM_SCEP_OID_PKI_STATUS,
    NGX_MDM_SCEP_OID_FAIL_INFO,
    NGX_MDM_SCEP_OID_SENDER_NONCE,
    NGX_MDM_SCEP_OID_RECIPIENT_NONCE,
    NGX_MDM_SCEP_OID_TRANSACTION_ID,
    NGX_MDM_SCEP_OID_FAIL_INFO_TEXT,
    NGX_MDM_SCEP_OID_N
};


static void ngx_mdm_scep_msg_init(ngx_mdm_scep_msg_t *msg);
static int ngx_mdm_scep_fail(ngx_mdm_scep_msg_t *msg,
    ngx_mdm_scep_reason_e reason);
static const ngx_mdm_scep_type_t *ngx_mdm_scep_type(int type);
static ASN1_TYPE *ngx_mdm_scep_attr(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static const ASN1_STRING *ngx_mdm_scep_attr_text(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static const ASN1_STRING *ngx_mdm_scep_attr_octets(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static int ngx_mdm_scep_attr_number(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static int ngx_mdm_scep_outer(ngx_mdm_scep_msg_t *msg,
    const unsigned char *der, size_t len, X509 *expect,
    CMS_ContentInfo **out);
static int ngx_mdm_scep_der_enter(const unsigned char **p,
    const unsigned char *end, int tag, int cls, long *len);
static int ngx_mdm_scep_der_skip(const unsigned char **p,
    const unsigned char *end, int tag, int cls);
static int ngx_mdm_scep_envelope_cipher(const unsigned char *p, long len);
static int ngx_mdm_scep_addressed_to(CMS_ContentInfo *env, X509 *cert);
static int ngx_mdm_scep_open(ngx_mdm_scep_msg_t *msg,
    const ASN1_OCTET_STRING *content, X509 **certs, EVP_PKEY **keys,
    int n, BIO **out);
static int ngx_mdm_scep_message_data(ngx_mdm_scep_msg_t *msg,
    const ngx_mdm_scep_type_t *type, CMS_ContentInfo *cms, BIO *data);
static int ngx_mdm_scep_challenge(ngx_mdm_scep_msg_t *msg,
    CMS_ContentInfo *cms);
static ngx_mdm_scep_reason_e ngx_mdm_scep_key_check(EVP_PKEY *pk);
static unsigned ngx_mdm_scep_issued_by(X509 *ca, X509 *x);
static EVP_PKEY *ngx_mdm_scep_legacy_rsa(X509_REQ *csr);
static int ngx_mdm_scep_serial_set(ASN1_INTEGER *ai,
    const ngx_mdm_scep_serial_t *serial);
static AUTHORITY_KEYID *ngx_mdm_scep_akid(const ngx_mdm_scep_ca_t *ca);
static int ngx_mdm_scep_add_ext(X509 *x, int nid, void *value, int crit);
static int ngx_mdm_scep_std_exts(const ngx_mdm_scep_ca_t *ca, X509 *x,
    EVP_PKEY *pk);
static int ngx_mdm_scep_printable(const char *s, size_t len);
static int ngx_mdm_scep_add_attrs(CMS_SignerInfo *si,
    const ngx_mdm_scep_attrs_t *a);
static int ngx_mdm_scep_sign(X509 *signer, EVP_PKEY *key, int digest_nid,
    const ngx_mdm_scep_attrs_t *a, const unsigned char *content,
    size_t content_len, X509 *cert, unsigned char **der, size_t *len);
static int ngx_mdm_scep_cert_first(unsigned char *der, size_t len,
    X509 *cert);
static int ngx_mdm_scep_envelope(X509 *recipient, int cipher_nid,
    const unsigned char *data, size_t len, unsigned char **der,
    size_t *der_len);
static int ngx_mdm_scep_push_unique(STACK_OF(X509) *sk, X509 *x);
static int ngx_mdm_scep_certs_only(STACK_OF(X509) *certs, X509_CRL *crl,
    unsigned char **der, size_t *len);
static time_t ngx_mdm_scep_timegm(const struct tm *tm);
static int ngx_mdm_scep_time(const ASN1_TIME *t, time_t *out);


ASN1_SEQUENCE(ngx_mdm_scep_ias) = {
    ASN1_SIMPLE(ngx_mdm_scep_ias_t, issuer, X509_NAME),
    ASN1_SIMPLE(ngx_mdm_scep_ias_t, subject, X509_NAME)
} static_ASN1_SEQUENCE_END_name(ngx_mdm_scep_ias_t, ngx_mdm_scep_ias)


static const char  *ngx_mdm_scep_oid_text[NGX_MDM_SCEP_OID_N] = {
    "2.16.840.1.113733.1.9.2",          /* messageType */
    "2.16.840.1.113733.1.9.3",          /* pkiStatus */
    "2.16.840.1.113733.1.9.4",          /* failInfo */
    "2.16.840.1.113733.1.9.5",          /* senderNonce */
    "2.16.840.1.113733.1.9.6",          /* recipientNonce */
    "2.16.840.1.113733.1.9.7",          /* transactionID */
    "1.3.6.1.5.5.7.24.1"                /* id-scep-failInfoText */
};

/* created once per process, never freed */
static ASN1_OBJECT  *ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_N];


static const ngx_mdm_scep_type_t  ngx_mdm_scep_types[] = {
    { NGX_MDM_SCEP_CERT_REP, NGX_MDM_SCEP_DATA_NONE, 0, "CertRep" },
    { NGX_MDM_SCEP_RENEWAL_REQ, NGX_MDM_SCEP_DATA_CSR, 1, "RenewalReq" },
    { NGX_MDM_SCEP_UPDATE_REQ, NGX_MDM_SCEP_DATA_CSR, 1, "UpdateReq" },
    { NGX_MDM_SCEP_PKCS_REQ, NGX_MDM_SCEP_DATA_CSR, 0, "PKCSReq" },
    { NGX_MDM_SCEP_CERT_POLL, NGX_MDM_SCEP_DATA_ISSUER_AND_SUBJECT, 0,
      "CertPoll" },
    { NGX_MDM_SCEP_GET_CERT, NGX_MDM_SCEP_DATA_ISSUER_AND_SERIAL, 0,
      "GetCert" },
    { NGX_MDM_SCEP_GET_CRL, NGX_MDM_SCEP_DATA_ISSUER_AND_SERIAL, 0,
      "GetCRL" },
    { 0, NGX_MDM_SCEP_DATA_NONE, 0, NULL }
};


static const int  ngx_mdm_scep_digests[] = {
    NID_sha1, NID_sha224, NID_sha256, NID_sha384, NID_sha512, NID_undef
};


/* the envelope ciphers we open, and the one a CertRep answers with */
static const ngx_mdm_scep_cipher_t  ngx_mdm_scep_ciphers[] = {
    { NID_aes_128_cbc, NID_aes_128_cbc },
    { NID_aes_192_cbc, NID_aes_128_cbc },
    { NID_aes_256_cbc, NID_aes_128_cbc },
    { NID_des_ede3_cbc, NID_des_ede3_cbc },
    { NID_des_cbc, NID_des_cbc },
    { NID_undef, NID_undef }
};


/* why a message is not accepted: what the handler answers, and the log */
static const ngx_mdm_scep_reason_t  ngx_mdm_scep_reasons[] = {
    [NGX_MDM_SCEP_E_NONE] =
        { NGX_MDM_SCEP_OK, -1, NULL },
    [NGX_MDM_SCEP_E_DER] =
        { NGX_MDM_SCEP_MALFORMED, -1,
          "pkiMessage is not one complete DER ContentInfo" },
    [NGX_MDM_SCEP_E_NOT_SIGNED] =
        { NGX_MDM_SCEP_MALFORMED, -1, "pkiMessage is not a SignedData" },
    [NGX_MDM_SCEP_E_SIGNER_INFO] =
        { NGX_MDM_SCEP_MALFORMED, -1,
          "pkiMessage does not have exactly one SignerInfo" },
    [NGX_MDM_SCEP_E_TRANSACTION_ID] =
        { NGX_MDM_SCEP_MALFORMED, -1, "transactionID is missing or invalid" },
    [NGX_MDM_SCEP_E_NONCE] =
        { NGX_MDM_SCEP_MALFORMED, -1, "senderNonce is missing or invalid" },
    [NGX_MDM_SCEP_E_MESSAGE_TYPE] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_REQUEST,
          "messageType is missing or not supported" },
    [NGX_MDM_SCEP_E_STATUS] =
        { NGX_MDM_SCEP_MALFORMED, -1,
          "pkiStatus, failInfo or recipientNonce is missing or invalid" },
    [NGX_MDM_SCEP_E_DIGEST] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_ALG,
          "digest algorithm is not supported" },
    [NGX_MDM_SCEP_E_SIGNER_CERT] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_MESSAGE_CHECK,
          "signer certificate is not in the message" },
    [NGX_MDM_SCEP_E_SIGNATURE] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_MESSAGE_CHECK,
          "signature does not verify" },
    [NGX_MDM_SCEP_E_RENEWAL_SIGNER] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_MESSAGE_CHECK,
          "renewal is not signed by a certificate of this CA" },
    [NGX_MDM_SCEP_E_NO_CONTENT] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_REQUEST,
          "pkiMessage carries no pkcsPKIEnvelope" },
    [NGX_MDM_SCEP_E_ENVELOPE] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_REQUEST,
          "pkcsPKIEnvelope is not an EnvelopedData of data" },
    [NGX_MDM_SCEP_E_CIPHER] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_ALG,
          "pkcsPKIEnvelope cipher is not supported" },
    [NGX_MDM_SCEP_E_RECIPIENT] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_MESSAGE_CHECK,
          "pkcsPKIEnvelope is not encrypted to our certificate" },
    [NGX_MDM_SCEP_E_DECRYPT] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_MESSAGE_CHECK,
          "pkcsPKIEnvelope cannot be decrypted" },
    [NGX_MDM_SCEP_E_MESSAGE_DATA] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_REQUEST,
          "messageData does not parse" },
    [NGX_MDM_SCEP_E_CSR_SIGNATURE] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_MESSAGE_CHECK,
          "CSR signature does not verify" },
    [NGX_MDM_SCEP_E_KEY_TYPE] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_ALG,
          "CSR key is neither RSA nor EC P-256/P-384" },
    [NGX_MDM_SCEP_E_KEY_SIZE] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_REQUEST,
          "CSR RSA key is not 2048 to 8192 bits" },
    [NGX_MDM_SCEP_E_CHALLENGE] =
        { NGX_MDM_SCEP_REFUSED, NGX_MDM_SCEP_BAD_REQUEST,
          "challengePassword is malformed" },
    [NGX_MDM_SCEP_E_INTERNAL] =
        { NGX_MDM_SCEP_ERROR, -1, "internal error" }
};


int
ngx_mdm_scep_init(void)
{
    int  i;

    for (i = 0; i < NGX_MDM_SCEP_OID_N; i++) {
        if (ngx_mdm_scep_oid[i] == NULL) {
            ngx_mdm_scep_oid[i] = OBJ_txt2obj(ngx_mdm_scep_oid_text[i], 1);
            if (ngx_mdm_scep_oid[i] == NULL) {
                return NGX_MDM_SCEP_ERROR;
            }
        }
    }

    return NGX_MDM_SCEP_OK;
}


int
ngx_mdm_scep_ca_init(ngx_mdm_scep_ca_t *ca, const char **err)
{
    unsigned int              n;
    EVP_PKEY                 *opener;
    const ASN1_OCTET_STRING  *ski;

    if (ngx_mdm_scep_init() != NGX_MDM_SCEP_OK) {
        *err = "cannot create the SCEP attribute OIDs";
        return NGX_MDM_SCEP_ERROR;
    }

    if (ca->cert == NULL || ca->key == NULL) {
        *err = "CA certificate or key is missing";
        return NGX_MDM_SCEP_ERROR;
    }

    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        *err = "CA key does not match the CA certificate";
        return NGX_MDM_SCEP_ERROR;
    }

    if (X509_check_ca(ca->cert) == 0) {
        *err = "CA certificate is not a CA certificate";
        return NGX_MDM_SCEP_ERROR;
    }

    if ((ca->ra_cert == NULL) != (ca->ra_key == NULL)) {
        *err = "RA certificate and RA key go together";
        return NGX_MDM_SCEP_ERROR;
    }

    if (ca->ra_cert != NULL
        && X509_check_private_key(ca->ra_cert, ca->ra_key) != 1)
    {
        *err = "RA key does not match the RA certificate";
        return NGX_MDM_SCEP_ERROR;
    }

    /* clients encrypt to us with RSA key transport only */
    opener = ca->ra_key ? ca->ra_key : ca->key;

    if (EVP_PKEY_get_base_id(opener) != EVP_PKEY_RSA) {
        *err = "the key that opens envelopes (RA, else CA) must be RSA";
        return NGX_MDM_SCEP_ERROR;
    }

    ski = X509_get0_subject_key_id(ca->cert);

    if (ski != NULL && ASN1_STRING_length(ski) > 0
        && (size_t) ASN1_STRING_length(ski) <= sizeof(ca->key_id))
    {
        ca->key_id_len = ASN1_STRING_length(ski);
        memcpy(ca->key_id, ASN1_STRING_get0_data(ski), ca->key_id_len);

    } else {
        if (X509_pubkey_digest(ca->cert, EVP_sha1(), ca->key_id, &n) != 1) {
            *err = "cannot hash the CA public key";
            return NGX_MDM_SCEP_ERROR;
        }

        ca->key_id_len = n;
    }

    ca->signer_cert = ca->ra_cert ? ca->ra_cert : ca->cert;
    ca->signer_key = ca->ra_key ? ca->ra_key : ca->key;

    return NGX_MDM_SCEP_OK;
}


static void
ngx_mdm_scep_msg_init(ngx_mdm_scep_msg_t *msg)
{
    memset(msg, 0, sizeof(ngx_mdm_scep_msg_t));

    msg->fail_info = -1;
    msg->message_type = -1;
    msg->pki_status = -1;
    msg->digest_nid = NID_undef;
    msg->cipher_nid = NID_undef;
}


void
ngx_mdm_scep_msg_free(ngx_mdm_scep_msg_t *msg)
{
    X509_free(msg->signer);
    X509_REQ_free(msg->csr);
    OPENSSL_free(msg->challenge);
    X509_NAME_free(msg->issuer);
    X509_NAME_free(msg->subject);
    ASN1_INTEGER_free(msg->serial);
    sk_X509_pop_free(msg->certs, X509_free);
    sk_X509_CRL_pop_free(msg->crls, X509_CRL_free);

    msg->signer = NULL;
    msg->csr = NULL;
    msg->challenge = NULL;
    msg->challenge_len = 0;
    msg->issuer = NULL;
    msg->subject = NULL;
    msg->serial = NULL;
    msg->certs = NULL;
    msg->crls = NULL;
}


static int
ngx_mdm_scep_fail(ngx_mdm_scep_msg_t *msg, ngx_mdm_scep_reason_e reason)
{
    msg->reason = reason;
    msg->error = ngx_mdm_scep_reasons[reason].text;
    msg->fail_info = ngx_mdm_scep_reasons[reason].fail_info;

    return ngx_mdm_scep_reasons[reason].rc;
}


static const ngx_mdm_scep_type_t *
ngx_mdm_scep_type(int type)
{
    const ngx_mdm_scep_type_t  *t;

    for (t = ngx_mdm_scep_types; t->name; t++) {
        if (t->type == type) {
            return t;
        }
    }

    return NULL;
}


const char *
ngx_mdm_scep_type_name(int message_type)
{
    const ngx_mdm_scep_type_t  *t;

    t = ngx_mdm_scep_type(message_type);

    return t ? t->name : "unknown";
}


int
ngx_mdm_scep_parse(const ngx_mdm_scep_ca_t *ca, const unsigned char *der,
    size_t len, ngx_mdm_scep_msg_t *msg)
{
    int                         rc;
    BIO                        *data;
    X509                       *certs[2];
    EVP_PKEY                   *keys[2];
    CMS_ContentInfo            *cms;
    ASN1_OCTET_STRING         **content;
    const ngx_mdm_scep_type_t  *type;

    ngx_mdm_scep_msg_init(msg);

    if (ngx_mdm_scep_init() != NGX_MDM_SCEP_OK) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_INTERNAL);
    }

    data = NULL;

    rc = ngx_mdm_scep_outer(msg, der, len, NULL, &cms);
    if (rc != NGX_MDM_SCEP_OK) {
        goto done;
    }

    type = ngx_mdm_scep_type(msg->message_type);

    if (type == NULL || type->data == NGX_MDM_SCEP_DATA_NONE) {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_TYPE);
        goto done;
    }

    msg->signer_from_ca = ngx_mdm_scep_issued_by(ca->cert, msg->signer);

    if (type->renewal && !msg->signer_from_ca) {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_RENEWAL_SIGNER);
        goto done;
    }

    content = CMS_get0_content(cms);

    if (content == NULL || *content == NULL) {
        rc = ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_NO_CONTENT);
        goto done;
    }

    certs[0] = ca->ra_cert;
    keys[0] = ca->ra_key;
    certs[1] = ca->cert;
    keys[1] = ca->key;

    rc = ngx_mdm_scep_open(msg, *content, certs, keys, 2, &data);
    if (rc != NGX_MDM_SCEP_OK) {
        goto done;
    }

    rc = ngx_mdm_scep_message_data(msg, type, cms, data);

done:

    BIO_free(data);
    CMS_ContentInfo_free(cms);

    if (rc == NGX_MDM_SCEP_MALFORMED || rc == NGX_MDM_SCEP_REFUSED) {
        ERR_clear_error();
    }

    return rc;
}


/* the value of a signed attribute present once with one value, or NULL */

static ASN1_TYPE *
ngx_mdm_scep_attr(CMS_SignerInfo *si, const ASN1_OBJECT *obj)
{
    int              i;
    X509_ATTRIBUTE  *attr;

    i = CMS_signed_get_attr_by_OBJ(si, obj, -1);

    if (i < 0 || CMS_signed_get_attr_by_OBJ(si, obj, i) >= 0) {
        return NULL;
    }

    attr = CMS_signed_get_attr(si, i);

    if (attr == NULL || X509_ATTRIBUTE_count(attr) != 1) {
        return NULL;
    }

    return X509_ATTRIBUTE_get0_type(attr, 0);
}


static const ASN1_STRING *
ngx_mdm_scep_attr_text(CMS_SignerInfo *si, const ASN1_OBJECT *obj)
{
    ASN1_TYPE  *t;

    t = ngx_mdm_scep_attr(si, obj);

    /* RFC 8894 says PrintableString; accept the other plain text types */
    if (t == NULL
        || (t->type != V_ASN1_PRINTABLESTRING
            && t->type != V_ASN1_UTF8STRING
            && t->type != V_ASN1_IA5STRING))
    {
        return NULL;
    }

    return t->value.asn1_string;
}


static const ASN1_STRING *
ngx_mdm_scep_attr_octets(CMS_SignerInfo *si, const ASN1_OBJECT *obj)
{
    ASN1_TYPE  *t;

    t = ngx_mdm_scep_attr(si, obj);

    if (t == NULL || t->type != V_ASN1_OCTET_STRING) {
        return NULL;
    }

    return t->value.octet_string;
}


/* a decimal of 1 to 3 digits (messageType, pkiStatus, failInfo), or -1 */

static int
ngx_mdm_scep_attr_number(CMS_SignerInfo *si, const ASN1_OBJECT *obj)
{
    int                   i, n, len;
    const ASN1_STRING    *s;
    const unsigned char  *p;

    s = ngx_mdm_scep_attr_text(si, obj);
    if (s == NULL) {
        return -1;
    }

    p = ASN1_STRING_get0_data(s);
    len = ASN1_STRING_length(s);

    if (len < 1 || len > 3) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        n = n * 10 + (p[i] - '0');
    }

    return n;
}


/*
 * The outer SignedData: DER, one SignerInfo, the SCEP attributes, an
 * accepted digest, and a signature that verifies with the signer's
 * certificate (from the message, or "expect" only when given).
 */

static int
ngx_mdm_scep_outer(ngx_mdm_scep_msg_t *msg, const unsigned char *der,
    size_t len, X509 *expect, CMS_ContentInfo **out)
{
    int                        i, nid, ok;
    BIO                       *dcont;
    X509                      *signer;
    ASN1_TYPE                 *t;
    X509_ALGOR                *dig;
    CMS_SignerInfo            *si;
    CMS_ContentInfo           *cms;
    STACK_OF(X509)            *certs;
    ASN1_OCTET_STRING        **content;
    const ASN1_STRING         *s;
    const unsigned char       *p;
    STACK_OF(CMS_SignerInfo)  *sis;
    const ngx_mdm_scep_type_t  *type;

    *out = NULL;

    if (der == NULL || len == 0 || len > LONG_MAX) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_DER);
    }

    p = der;
    cms = d2i_CMS_ContentInfo(NULL, &p, (long) len);

    if (cms == NULL) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_DER);
    }

    *out = cms;

    if (p != der + len) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_DER);
    }

    if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_NOT_SIGNED);
    }

    sis = CMS_get0_SignerInfos(cms);

    if (sk_CMS_SignerInfo_num(sis) != 1) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_SIGNER_INFO);
    }

    si = sk_CMS_SignerInfo_value(sis, 0);

    /* transactionID and senderNonce first: a CertRep needs both */

    s = ngx_mdm_scep_attr_text(si,
                           ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_TRANSACTION_ID]);

    if (s == NULL
        || ASN1_STRING_length(s) < 1
        || ASN1_STRING_length(s) > NGX_MDM_SCEP_TRANSACTION_ID_MAX
        || memchr(ASN1_STRING_get0_data(s), '\0', ASN1_STRING_length(s)))
    {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_TRANSACTION_ID);
    }

    msg->transaction_id_len = ASN1_STRING_length(s);
    memcpy(msg->transaction_id, ASN1_STRING_get0_data(s),
           msg->transaction_id_len);
    msg->transaction_id[msg->transaction_id_len] = '\0';

    s = ngx_mdm_scep_attr_octets(si,
                             ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_SENDER_NONCE]);

    /*
     * The RFC says 16 bytes, Apple sends 8: take any length.  A device
     * reading a CertRep ("expect" set) tolerates none, as the micromdm/scep
     * server sends none.
     */

    if (s == NULL && expect != NULL) {
        msg->sender_nonce_len = 0;

    } else if (s == NULL
               || ASN1_STRING_length(s) < 1
               || ASN1_STRING_length(s) > NGX_MDM_SCEP_NONCE_MAX)
    {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_NONCE);

    } else {
        msg->sender_nonce_len = ASN1_STRING_length(s);
        memcpy(msg->sender_nonce, ASN1_STRING_get0_data(s),
               msg->sender_nonce_len);
    }

    s = ngx_mdm_scep_attr_octets(si,
                          ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_RECIPIENT_NONCE]);

    if (s != NULL
        && ASN1_STRING_length(s) >= 1
        && ASN1_STRING_length(s) <= NGX_MDM_SCEP_NONCE_MAX)
    {
        msg->recipient_nonce_len = ASN1_STRING_length(s);
        memcpy(msg->recipient_nonce, ASN1_STRING_get0_data(s),
               msg->recipient_nonce_len);
    }

    /* signingTime is reported, not judged: badTime is local policy */

    t = ngx_mdm_scep_attr(si, OBJ_nid2obj(NID_pkcs9_signingTime));

    if (t != NULL
        && (t->type == V_ASN1_UTCTIME || t->type == V_ASN1_GENERALIZEDTIME)
        && ngx_mdm_scep_time(t->value.asn1_string, &msg->signing_time)
           != NGX_MDM_SCEP_OK)
    {
        msg->signing_time = 0;
    }

    msg->message_type = ngx_mdm_scep_attr_number(si,
                             ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_MESSAGE_TYPE]);

    /* a server reads requests, a device reads CertReps */

    type = ngx_mdm_scep_type(msg->message_type);

    if (type == NULL
        || (expect == NULL && type->data == NGX_MDM_SCEP_DATA_NONE)
        || (expect != NULL && type->data != NGX_MDM_SCEP_DATA_NONE))
    {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_TYPE);
    }

    if (msg->message_type == NGX_MDM_SCEP_CERT_REP) {
        msg->pki_status = ngx_mdm_scep_attr_number(si,
                               ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_PKI_STATUS]);
        msg->fail_info = ngx_mdm_scep_attr_number(si,
                                ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_FAIL_INFO]);
    }

    dig = NULL;
    CMS_SignerInfo_get0_algs(si, NULL, NULL, &dig, NULL);
    nid = dig ? OBJ_obj2nid(dig->algorithm) : NID_undef;

    for (i = 0; ngx_mdm_scep_digests[i] != NID_undef; i++) {
        if (ngx_mdm_scep_digests[i] == nid) {
            break;
        }
    }

    if (nid == NID_undef || ngx_mdm_scep_digests[i] == NID_undef) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_DIGEST);
    }

    msg->digest_nid = nid;

    certs = NULL;

    if (expect != NULL) {
        certs = sk_X509_new_null();

        if (certs == NULL || !sk_X509_push(certs, expect)) {
            sk_X509_free(certs);
            return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_INTERNAL);
        }
    }

    i = CMS_set1_signers_certs(cms, certs, expect ? CMS_NOINTERN : 0);
    sk_X509_free(certs);

    signer = NULL;
    CMS_SignerInfo_get0_algs(si, NULL, &signer, NULL, NULL);

    if (i < 0 || signer == NULL) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_SIGNER_CERT);
    }

    if (!X509_up_ref(signer)) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_INTERNAL);
    }

    msg->signer = signer;

    if (OBJ_obj2nid(CMS_get0_eContentType(cms)) != NID_pkcs7_data) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_ENVELOPE);
    }

    /* FAILURE and PENDING CertReps have no content: verify over nothing */

    content = CMS_get0_content(cms);
    dcont = NULL;

    if (content == NULL || *content == NULL) {
        dcont = BIO_new_mem_buf("", 0);
        if (dcont == NULL) {
            return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_INTERNAL);
        }
    }

    /* no chain: the signer is self-signed, or checked by the caller */

    ok = CMS_verify(cms, NULL, NULL, dcont, NULL,
                    CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY);

    BIO_free(dcont);

    if (ok != 1) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_SIGNATURE);
    }

    return NGX_MDM_SCEP_OK;
}


/*
 * Enters a DER element with the given tag: 1 entered (*p at its content,
 * *len its length), 0 another tag (nothing moved), -1 bad or indefinite.
 */

static int
ngx_mdm_scep_der_enter(const unsigned char **p, const unsigned char *end,
    int tag, int cls, long *len)
{
    int                   rc, t, c;
    long                  l;
    const unsigned char  *q;

    q = *p;

    if (q >= end) {
        return -1;
    }

    rc = ASN1_get_object(&q, &l, &t, &c, end - q);

    if ((rc & 0x80) || (rc & 0x01)) {
        return -1;
    }

    if (t != tag || c != cls) {
        return 0;
    }

    *p = q;
    *len = l;

    return 1;
}


/* skips a DER element with the given tag: as ngx_mdm_scep_der_enter() */

static int
ngx_mdm_scep_der_skip(const unsigned char **p, const unsigned char *end,
    int tag, int cls)
{
    int   rc;
    long  len;

    rc = ngx_mdm_scep_der_enter(p, end, tag, cls, &len);

    if (rc == 1) {
        *p += len;
    }

    return rc;
}


/*
 * OpenSSL has no getter for the content-encryption algorithm of a CMS
 * EnvelopedData: read it from the DER.  Returns the NID, NID_undef, or -1
 * when the encoding uses indefinite lengths (the caller re-encodes).
 */

static int
ngx_mdm_scep_envelope_cipher(const unsigned char *p, long len)
{
    int                   nid;
    long                  l;
    X509_ALGOR           *alg;
    const unsigned char  *end;

    end = p + len;

    /* ContentInfo { contentType, [0] EnvelopedData { version, */

    if (ngx_mdm_scep_der_enter(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL,
                               &l) != 1
        || ngx_mdm_scep_der_skip(&p, p + l, V_ASN1_OBJECT, V_ASN1_UNIVERSAL)
           != 1
        || ngx_mdm_scep_der_enter(&p, end, 0, V_ASN1_CONTEXT_SPECIFIC, &l)
           != 1
        || ngx_mdm_scep_der_enter(&p, p + l, V_ASN1_SEQUENCE,
                                  V_ASN1_UNIVERSAL, &l) != 1)
    {
        return -1;
    }

    end = p + l;

    /* originatorInfo [0] OPTIONAL, recipientInfos, encryptedContentInfo */

    if (ngx_mdm_scep_der_skip(&p, end, V_ASN1_INTEGER, V_ASN1_UNIVERSAL) != 1
        || ngx_mdm_scep_der_skip(&p, end, 0, V_ASN1_CONTEXT_SPECIFIC) < 0
        || ngx_mdm_scep_der_skip(&p, end, V_ASN1_SET, V_ASN1_UNIVERSAL) != 1
        || ngx_mdm_scep_der_enter(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL,
                                  &l) != 1)
    {
        return -1;
    }

    end = p + l;

    /* { contentType, contentEncryptionAlgorithm, ... */

    if (ngx_mdm_scep_der_skip(&p, end, V_ASN1_OBJECT, V_ASN1_UNIVERSAL) != 1) {
        return -1;
    }

    alg = d2i_X509_ALGOR(NULL, &p, end - p);
    if (alg == NULL) {
        return -1;
    }

    nid = OBJ_obj2nid(alg->algorithm);
    X509_ALGOR_free(alg);

    return nid;
}


/*
 * Whether a RecipientInfo names "cert" (key transport, or key agreement
 * for EC devices): CMS_decrypt() fails without an error code otherwise.
 */

static int
ngx_mdm_scep_addressed_to(CMS_ContentInfo *env, X509 *cert)
{
    int                                   i, j;
    CMS_RecipientInfo                    *ri;
    STACK_OF(CMS_RecipientInfo)          *ris;
    STACK_OF(CMS_RecipientEncryptedKey)  *reks;

    ris = CMS_get0_RecipientInfos(env);

    for (i = 0; i < sk_CMS_RecipientInfo_num(ris); i++) {
        ri = sk_CMS_RecipientInfo_value(ris, i);

        switch (CMS_RecipientInfo_type(ri)) {

        case CMS_RECIPINFO_TRANS:
            if (CMS_RecipientInfo_ktri_cert_cmp(ri, cert) == 0) {
                return 1;
            }

            break;

        case CMS_RECIPINFO_AGREE:
            reks = CMS_RecipientInfo_kari_get0_reks(ri);

            for (j = 0; j < sk_CMS_RecipientEncryptedKey_num(reks); j++) {
                if (CMS_RecipientEncryptedKey_cert_cmp(
                        sk_CMS_RecipientEncryptedKey_value(reks, j), cert)
                    == 0)
                {
                    return 1;
                }
            }

            break;
        }
    }

    return 0;
}


/* decrypts the pkcsPKIEnvelope with the first pair it is addressed to */

static int
ngx_mdm_scep_open(ngx_mdm_scep_msg_t *msg, const ASN1_OCTET_STRING *content,
    X509 **certs, EVP_PKEY **keys, int n, BIO **out)
{
    int                           i, nid, der_len;
    BIO                          *bio;
    long                          len;
    unsigned char                *der;
    CMS_ContentInfo              *env;
    ngx_mdm_scep_reason_e         reason;
    const unsigned char          *p, *start;
    const ngx_mdm_scep_cipher_t  *c;

    *out = NULL;

    start = ASN1_STRING_get0_data(content);
    len = ASN1_STRING_length(content);
    p = start;

    env = d2i_CMS_ContentInfo(NULL, &p, len);

    if (env == NULL
        || p != start + len
        || OBJ_obj2nid(CMS_get0_type(env)) != NID_pkcs7_enveloped
        || OBJ_obj2nid(CMS_get0_eContentType(env)) != NID_pkcs7_data)
    {
        CMS_ContentInfo_free(env);
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_ENVELOPE);
    }

    nid = ngx_mdm_scep_envelope_cipher(start, len);

    if (nid == -1) {
        /* BER with indefinite lengths: walk OpenSSL's DER of it */
        der = NULL;
        der_len = i2d_CMS_ContentInfo(env, &der);

        if (der_len > 0) {
            nid = ngx_mdm_scep_envelope_cipher(der, der_len);
        }

        OPENSSL_free(der);
    }

    for (c = ngx_mdm_scep_ciphers; c->nid != NID_undef; c++) {
        if (c->nid == nid) {
            break;
        }
    }

    if (c->nid == NID_undef) {
        CMS_ContentInfo_free(env);
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_CIPHER);
    }

    msg->cipher_nid = nid;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        CMS_ContentInfo_free(env);
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_INTERNAL);
    }

    /*
     * With the certificate given, CMS_decrypt() opens only the matching
     * RecipientInfo, once, and a failed RSA decryption goes on with a
     * random key (OpenSSL's MMA countermeasure): no padding oracle.
     */

    reason = NGX_MDM_SCEP_E_RECIPIENT;

    for (i = 0; i < n; i++) {
        if (certs[i] == NULL || keys[i] == NULL
            || !ngx_mdm_scep_addressed_to(env, certs[i]))
        {
            continue;
        }

        reason = CMS_decrypt(env, keys[i], certs[i], NULL, bio, CMS_BINARY)
                 == 1 ? NGX_MDM_SCEP_E_NONE : NGX_MDM_SCEP_E_DECRYPT;
        break;
    }

    CMS_ContentInfo_free(env);

    if (reason != NGX_MDM_SCEP_E_NONE) {
        BIO_free(bio);
        return ngx_mdm_scep_fail(msg, reason);
    }

    *out = bio;

    return NGX_MDM_SCEP_OK;
}


static int
ngx_mdm_scep_message_data(ngx_mdm_scep_msg_t *msg,
    const ngx_mdm_scep_type_t *type, CMS_ContentInfo *cms, BIO *data)
{
    long                       len;
    char                      *buf;
    ngx_mdm_scep_ias_t        *ias;
    ngx_mdm_scep_reason_e      reason;
    const unsigned char       *p, *end;
    PKCS7_ISSUER_AND_SERIAL   *iasn;

    len = BIO_get_mem_data(data, &buf);

    if (len <= 0) {
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_DATA);
    }

    p = (const unsigned char *) buf;
    end = p + len;

    switch (type->data) {

    case NGX_MDM_SCEP_DATA_CSR:
        msg->csr = d2i_X509_REQ(NULL, &p, len);

        if (msg->csr == NULL || p != end) {
            return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_DATA);
        }

        if (ngx_mdm_scep_csr_check(msg->csr, &reason) != NGX_MDM_SCEP_OK) {
            return ngx_mdm_scep_fail(msg, reason);
        }

        if (ngx_mdm_scep_challenge(msg, cms) != NGX_MDM_SCEP_OK) {
            return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_CHALLENGE);
        }

        return NGX_MDM_SCEP_OK;

    case NGX_MDM_SCEP_DATA_ISSUER_AND_SERIAL:
        iasn = d2i_PKCS7_ISSUER_AND_SERIAL(NULL, &p, len);

        if (iasn == NULL || p != end) {
            PKCS7_ISSUER_AND_SERIAL_free(iasn);
            return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_DATA);
        }

        msg->issuer = iasn->issuer;
        msg->serial = iasn->serial;
        iasn->issuer = NULL;
        iasn->serial = NULL;
        PKCS7_ISSUER_AND_SERIAL_free(iasn);

        return NGX_MDM_SCEP_OK;

    case NGX_MDM_SCEP_DATA_ISSUER_AND_SUBJECT:
        ias = (ngx_mdm_scep_ias_t *) ASN1_item_d2i(NULL, &p, len,
                                             ASN1_ITEM_rptr(ngx_mdm_scep_ias));

        if (ias == NULL || p != end) {
            ASN1_item_free((ASN1_VALUE *) ias,
                           ASN1_ITEM_rptr(ngx_mdm_scep_ias));
            return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_DATA);
        }

        msg->issuer = ias->issuer;
        msg->subject = ias->subject;
        ias->issuer = NULL;
        ias->subject = NULL;
        ASN1_item_free((ASN1_VALUE *) ias, ASN1_ITEM_rptr(ngx_mdm_scep_ias));

        return NGX_MDM_SCEP_OK;

    default:
        return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_TYPE);
    }
}


/*
 * challengePassword from the CSR, else from the signed attributes where
 * Apple repeats it; a DirectoryString, kept as UTF-8.  Absent is not an
 * error: the caller decides whether a challenge is needed.
 */

static int
ngx_mdm_scep_challenge(ngx_mdm_scep_msg_t *msg, CMS_ContentInfo *cms)
{
    int              i, n;
    ASN1_TYPE       *t;
    unsigned char   *utf8;
    CMS_SignerInfo  *si;
    X509_ATTRIBUTE  *attr;

    i = X509_REQ_get_attr_by_NID(msg->csr, NID_pkcs9_challengePassword, -1);

    if (i >= 0) {
        if (X509_REQ_get_attr_by_NID(msg->csr, NID_pkcs9_challengePassword, i)
            >= 0)
        {
            return NGX_MDM_SCEP_REFUSED;
        }

        attr = X509_REQ_get_attr(msg->csr, i);

    } else {
        si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);

        i = CMS_signed_get_attr_by_NID(si, NID_pkcs9_challengePassword, -1);
        if (i < 0) {
            return NGX_MDM_SCEP_OK;
        }

        if (CMS_signed_get_attr_by_NID(si, NID_pkcs9_challengePassword, i)
            >= 0)
        {
            return NGX_MDM_SCEP_REFUSED;
        }

        attr = CMS_signed_get_attr(si, i);
    }

    if (attr == NULL || X509_ATTRIBUTE_count(attr) != 1) {
        return NGX_MDM_SCEP_REFUSED;
    }

    t = X509_ATTRIBUTE_get0_type(attr, 0);
    if (t == NULL) {
        return NGX_MDM_SCEP_REFUSED;
    }

    switch (t->type) {
    case V_ASN1_PRINTABLESTRING:
    case V_ASN1_UTF8STRING:
    case V_ASN1_IA5STRING:
    case V_ASN1_T61STRING:
    case V_ASN1_VISIBLESTRING:
    case V_ASN1_BMPSTRING:
    case V_ASN1_UNIVERSALSTRING:
        break;
    default:
        return NGX_MDM_SCEP_REFUSED;
    }

    n = ASN1_STRING_to_UTF8(&utf8, t->value.asn1_string);
    if (n < 0) {
        return NGX_MDM_SCEP_REFUSED;
    }

    if (memchr(utf8, '\0', n) != NULL) {
        OPENSSL_free(utf8);
        return NGX_MDM_SCEP_REFUSED;
    }

    msg->challenge = (char *) utf8;
    msg->challenge_len = n;

    return NGX_MDM_SCEP_OK;
}


int
ngx_mdm_scep_csr_check(X509_REQ *csr, ngx_mdm_scep_reason_e *reason)
{
    EVP_PKEY  *pk;

    pk = X509_REQ_get0_pubkey(csr);

    if (pk == NULL) {
        *reason = NGX_MDM_SCEP_E_KEY_TYPE;

    } else if (X509_REQ_verify(csr, pk) != 1) {
        *reason = NGX_MDM_SCEP_E_CSR_SIGNATURE;

    } else {
        *reason = ngx_mdm_scep_key_check(pk);
    }

    if (*reason != NGX_MDM_SCEP_E_NONE) {
        ERR_clear_error();
        return NGX_MDM_SCEP_REFUSED;
    }

    return NGX_MDM_SCEP_OK;
}


static ngx_mdm_scep_reason_e
ngx_mdm_scep_key_check(EVP_PKEY *pk)
{
    int   bits;
    char  group[32];

    switch (EVP_PKEY_get_base_id(pk)) {

    case EVP_PKEY_RSA:
        bits = EVP_PKEY_get_bits(pk);

        if (bits < 2048 || bits > 8192) {
            return NGX_MDM_SCEP_E_KEY_SIZE;
        }

        return NGX_MDM_SCEP_E_NONE;

    case EVP_PKEY_EC:
        if (EVP_PKEY_get_group_name(pk, group, sizeof(group), NULL) != 1) {
            return NGX_MDM_SCEP_E_KEY_TYPE;
        }

        if (strcmp(group, SN_X9_62_prime256v1) == 0
            || strcmp(group, SN_secp384r1) == 0)
        {
            return NGX_MDM_SCEP_E_NONE;
        }

        return NGX_MDM_SCEP_E_KEY_TYPE;

    default:
        return NGX_MDM_SCEP_E_KEY_TYPE;
    }
}


static unsigned
ngx_mdm_scep_issued_by(X509 *ca, X509 *x)
{
    EVP_PKEY  *pk;

    if (X509_check_issued(ca, x) != X509_V_OK) {
        return 0;
    }

    pk = X509_get0_pubkey(ca);

    return pk != NULL && X509_verify(x, pk) == 1;
}


int
ngx_mdm_scep_issue(const ngx_mdm_scep_ca_t *ca, X509_REQ *csr,
    const ngx_mdm_scep_issue_t *issue, X509 **cert, const char **err)
{
    int                        i, rc, ok;
    void                      *names;
    time_t                     now;
    X509                      *x;
    EVP_PKEY                  *pk, *legacy;
    X509_NAME                 *subject;
    X509_EXTENSION            *ext, *san;
    ngx_mdm_scep_reason_e      reason;
    STACK_OF(X509_EXTENSION)  *exts;

    *cert = NULL;
    x = NULL;
    rc = NGX_MDM_SCEP_REFUSED;

    if (issue->validity <= 0 || issue->backdate < 0) {
        *err = "certificate validity is not positive";
        return NGX_MDM_SCEP_ERROR;
    }

    pk = X509_REQ_get0_pubkey(csr);
    reason = pk ? ngx_mdm_scep_key_check(pk) : NGX_MDM_SCEP_E_KEY_TYPE;

    if (reason != NGX_MDM_SCEP_E_NONE) {
        *err = ngx_mdm_scep_reasons[reason].text;
        ERR_clear_error();
        return NGX_MDM_SCEP_REFUSED;
    }

    exts = X509_REQ_get_extensions(csr);

    if (exts == NULL) {
        *err = "CSR extension request does not parse";
        goto failed;
    }

    san = NULL;

    for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        ext = sk_X509_EXTENSION_value(exts, i);

        if (OBJ_obj2nid(X509_EXTENSION_get_object(ext))
            != NID_subject_alt_name)
        {
            continue;
        }

        if (san != NULL) {
            *err = "CSR requests subjectAltName twice";
            goto failed;
        }

        san = ext;
    }

    if (san != NULL) {
        names = X509V3_EXT_d2i(san);

        if (names == NULL) {
            *err = "CSR subjectAltName does not parse";
            goto failed;
        }

        GENERAL_NAMES_free(names);
    }

    subject = X509_REQ_get_subject_name(csr);

    if (X509_NAME_entry_count(subject) == 0 && san == NULL) {
        *err = "CSR has neither a subject nor a subjectAltName";
        goto failed;
    }

    rc = NGX_MDM_SCEP_ERROR;
    *err = "cannot build the certificate";

    now = issue->now ? issue->now : time(NULL);

    x = X509_new();

    if (x == NULL
        || !X509_set_version(x, X509_VERSION_3)
        || !X509_set_issuer_name(x, X509_get_subject_name(ca->cert))
        || !X509_set_subject_name(x, subject)
        || ASN1_TIME_set(X509_getm_notBefore(x), now - issue->backdate)
           == NULL
        || ASN1_TIME_set(X509_getm_notAfter(x), now + issue->validity)
           == NULL)
    {
        goto failed;
    }

    legacy = ngx_mdm_scep_legacy_rsa(csr);
    ok = X509_set_pubkey(x, legacy ? legacy : pk);
    EVP_PKEY_free(legacy);

    if (!ok) {
        goto failed;
    }

    if (ngx_mdm_scep_serial_set(X509_get_serialNumber(x), &issue->serial)
        != NGX_MDM_SCEP_OK)
    {
        *err = "serial is zero or longer than 20 bytes";
        goto failed;
    }

    if (ngx_mdm_scep_std_exts(ca, x, pk) != NGX_MDM_SCEP_OK) {
        goto failed;
    }

    if (san != NULL) {
        /* RFC 5280 4.2.1.6: critical when the subject is empty */
        if (!X509_EXTENSION_set_critical(san, X509_NAME_entry_count(subject)
                                              == 0)
            || !X509_add_ext(x, san, -1))
        {
            goto failed;
        }
    }

    if (X509_sign(x, ca->key, EVP_sha256()) <= 0) {
        *err = "cannot sign the certificate";
        goto failed;
    }

    *cert = x;
    x = NULL;
    rc = NGX_MDM_SCEP_OK;

failed:

    X509_free(x);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

    if (rc == NGX_MDM_SCEP_REFUSED) {
        ERR_clear_error();
    }

    return rc;
}


/*
 * OpenSSL 3.0 puts a provider key into a certificate through an encoder
 * and a decoder (0.3 ms, more than the signature); a legacy RSA key made
 * from the same bits takes the ASN.1 method path (5 us).
 */

static EVP_PKEY *
ngx_mdm_scep_legacy_rsa(X509_REQ *csr)
{
    int                   len;
    ASN1_OBJECT          *alg;
    const unsigned char  *p;

    if (!X509_PUBKEY_get0_param(&alg, &p, &len, NULL,
                                X509_REQ_get_X509_PUBKEY(csr))
        || OBJ_obj2nid(alg) != NID_rsaEncryption)
    {
        return NULL;
    }

    return d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, len);
}


static int
ngx_mdm_scep_serial_set(ASN1_INTEGER *ai, const ngx_mdm_scep_serial_t *serial)
{
    int      ok;
    BIGNUM  *bn;

    if (serial->data == NULL) {
        if (serial->value == 0) {
            return NGX_MDM_SCEP_ERROR;
        }

        return ASN1_INTEGER_set_uint64(ai, serial->value) == 1
               ? NGX_MDM_SCEP_OK : NGX_MDM_SCEP_ERROR;
    }

    if (serial->len == 0 || serial->len > 64) {
        return NGX_MDM_SCEP_ERROR;
    }

    bn = BN_bin2bn(serial->data, (int) serial->len, NULL);
    if (bn == NULL) {
        return NGX_MDM_SCEP_ERROR;
    }

    /* RFC 5280 4.1.2.2: positive, at most 20 octets once encoded */

    ok = !BN_is_zero(bn)
         && BN_num_bits(bn) <= 159
         && BN_to_ASN1_INTEGER(bn, ai) != NULL;

    BN_free(bn);

    return ok ? NGX_MDM_SCEP_OK : NGX_MDM_SCEP_ERROR;
}


static AUTHORITY_KEYID *
ngx_mdm_scep_akid(const ngx_mdm_scep_ca_t *ca)
{
    AUTHORITY_KEYID  *akid;

    akid = AUTHORITY_KEYID_new();
    if (akid == NULL) {
        return NULL;
    }

    akid->keyid = ASN1_OCTET_STRING_new();

    if (akid->keyid == NULL
        || !ASN1_OCTET_STRING_set(akid->keyid, ca->key_id,
                                  (int) ca->key_id_len))
    {
        AUTHORITY_KEYID_free(akid);
        return NULL;
    }

    return akid;
}


static int
ngx_mdm_scep_add_ext(X509 *x, int nid, void *value, int crit)
{
    if (value == NULL) {
        return NGX_MDM_SCEP_ERROR;
    }

    return X509_add1_ext_i2d(x, nid, value, crit, X509V3_ADD_DEFAULT) == 1
           ? NGX_MDM_SCEP_OK : NGX_MDM_SCEP_ERROR;
}


/*
 * basicConstraints CA:FALSE, keyUsage, extendedKeyUsage clientAuth, SKI,
 * AKI.  keyEncipherment only for RSA: RFC 5480 3 does not allow it for EC.
 */

static int
ngx_mdm_scep_std_exts(const ngx_mdm_scep_ca_t *ca, X509 *x, EVP_PKEY *pk)
{
    int                  rc;
    unsigned int         n;
    unsigned char        md[EVP_MAX_MD_SIZE];
    ASN1_BIT_STRING     *ku;
    AUTHORITY_KEYID     *akid;
    BASIC_CONSTRAINTS   *bc;
    ASN1_OCTET_STRING   *ski;
    EXTENDED_KEY_USAGE  *eku;

    bc = BASIC_CONSTRAINTS_new();
    ku = ASN1_BIT_STRING_new();
    eku = sk_ASN1_OBJECT_new_null();
    ski = ASN1_OCTET_STRING_new();
    akid = ngx_mdm_scep_akid(ca);

    rc = NGX_MDM_SCEP_ERROR;

    if (bc == NULL || ku == NULL || eku == NULL || ski == NULL
        || akid == NULL)
    {
        goto failed;
    }

    bc->ca = 0;

    if (!ASN1_BIT_STRING_set_bit(ku, 0, 1)
        || (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA
            && !ASN1_BIT_STRING_set_bit(ku, 2, 1))
        || !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth))
        || X509_pubkey_digest(x, EVP_sha1(), md, &n) != 1
        || !ASN1_OCTET_STRING_set(ski, md, (int) n))
    {
        goto failed;
    }

    if (ngx_mdm_scep_add_ext(x, NID_basic_constraints, bc, 1)
        != NGX_MDM_SCEP_OK
        || ngx_mdm_scep_add_ext(x, NID_key_usage, ku, 1) != NGX_MDM_SCEP_OK
        || ngx_mdm_scep_add_ext(x, NID_ext_key_usage, eku, 0)
           != NGX_MDM_SCEP_OK
        || ngx_mdm_scep_add_ext(x, NID_subject_key_identifier, ski, 0)
           != NGX_MDM_SCEP_OK
        || ngx_mdm_scep_add_ext(x, NID_authority_key_identifier, akid, 0)
           != NGX_MDM_SCEP_OK)
    {
        goto failed;
    }

    rc = NGX_MDM_SCEP_OK;

failed:

    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku);
    ASN1_OCTET_STRING_free(ski);
    AUTHORITY_KEYID_free(akid);

    return rc;
}


void
ngx_mdm_scep_reply_init(ngx_mdm_scep_reply_t *rep,
    const ngx_mdm_scep_msg_t *msg, int status)
{
    memset(rep, 0, sizeof(ngx_mdm_scep_reply_t));

    rep->status = status;
    rep->fail_info = msg->fail_info >= 0 ? msg->fail_info
                                         : NGX_MDM_SCEP_BAD_REQUEST;
    rep->transaction_id = msg->transaction_id;
    rep->transaction_id_len = msg->transaction_id_len;
    rep->recipient_nonce = msg->sender_nonce;
    rep->recipient_nonce_len = msg->sender_nonce_len;
    rep->digest_nid = msg->digest_nid;
    rep->cipher_nid = msg->cipher_nid;
    rep->recipient = msg->signer;
}


int
ngx_mdm_scep_certrep(const ngx_mdm_scep_ca_t *ca,
    const ngx_mdm_scep_reply_t *rep, unsigned char **der, size_t *len)
{
    int                           i, rc, digest, cipher;
    size_t                        inner_len, env_len;
    unsigned char                 nonce[NGX_MDM_SCEP_NONCE_LEN];
    unsigned char                *inner, *env;
    STACK_OF(X509)               *certs;
    ngx_mdm_scep_attrs_t          a;
    const ngx_mdm_scep_cipher_t  *c;

    *der = NULL;
    *len = 0;

    if (ngx_mdm_scep_init() != NGX_MDM_SCEP_OK
        || ca->signer_cert == NULL
        || rep->transaction_id == NULL
        || rep->transaction_id_len < 1
        || rep->transaction_id_len > NGX_MDM_SCEP_TRANSACTION_ID_MAX
        || rep->recipient_nonce == NULL
        || rep->recipient_nonce_len < 1
        || rep->recipient_nonce_len > NGX_MDM_SCEP_NONCE_MAX)
    {
        return NGX_MDM_SCEP_ERROR;
    }

    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        return NGX_MDM_SCEP_ERROR;
    }

    memset(&a, 0, sizeof(ngx_mdm_scep_attrs_t));

    a.message_type = NGX_MDM_SCEP_CERT_REP;
    a.pki_status = rep->status;
    a.fail_info = -1;
    a.transaction_id = rep->transaction_id;
    a.transaction_id_len = rep->transaction_id_len;
    a.sender_nonce = nonce;
    a.sender_nonce_len = sizeof(nonce);
    a.recipient_nonce = rep->recipient_nonce;
    a.recipient_nonce_len = rep->recipient_nonce_len;

    /* mirror the client's digest */

    digest = NID_sha256;

    for (i = 0; ngx_mdm_scep_digests[i] != NID_undef; i++) {
        if (ngx_mdm_scep_digests[i] == rep->digest_nid) {
            digest = rep->digest_nid;
        }
    }

    switch (rep->status) {

    case NGX_MDM_SCEP_FAILURE:
        if (rep->fail_info < NGX_MDM_SCEP_BAD_ALG
            || rep->fail_info > NGX_MDM_SCEP_BAD_CERT_ID)
        {
            return NGX_MDM_SCEP_ERROR;
        }

        a.fail_info = rep->fail_info;
        a.fail_info_text = rep->fail_info_text;

        /* fall through */

    case NGX_MDM_SCEP_PENDING:
        return ngx_mdm_scep_sign(ca->signer_cert, ca->signer_key, digest, &a,
                                 NULL, 0, NULL, der, len);

    case NGX_MDM_SCEP_SUCCESS:
        break;

    default:
        return NGX_MDM_SCEP_ERROR;
    }

    if (rep->recipient == NULL || (rep->cert == NULL && rep->crl == NULL)) {
        return NGX_MDM_SCEP_ERROR;
    }

    cipher = NID_aes_128_cbc;

    for (c = ngx_mdm_scep_ciphers; c->nid != NID_undef; c++) {
        if (c->nid == rep->cipher_nid) {
            cipher = c->reply_nid;
        }
    }

    inner = NULL;
    env = NULL;

    certs = sk_X509_new_null();
    if (certs == NULL) {
        return NGX_MDM_SCEP_ERROR;
    }

    rc = NGX_MDM_SCEP_ERROR;

    if ((rep->cert == NULL || sk_X509_push(certs, rep->cert))
        && ngx_mdm_scep_certs_only(certs, rep->crl, &inner, &inner_len)
           == NGX_MDM_SCEP_OK
        && ngx_mdm_scep_envelope(rep->recipient, cipher, inner, inner_len,
                                 &env, &env_len)
           == NGX_MDM_SCEP_OK)
    {
        rc = ngx_mdm_scep_sign(ca->signer_cert, ca->signer_key, digest, &a,
                               env, env_len, rep->cert, der, len);
    }

    sk_X509_free(certs);
    OPENSSL_free(inner);
    OPENSSL_free(env);

    return rc;
}


int
ngx_mdm_scep_ca_certs(const ngx_mdm_scep_ca_t *ca, unsigned char **der,
    size_t *len)
{
    int              i, rc;
    STACK_OF(X509)  *certs;

    *der = NULL;
    *len = 0;

    certs = sk_X509_new_null();
    if (certs == NULL) {
        return NGX_MDM_SCEP_ERROR;
    }

    rc = ngx_mdm_scep_push_unique(certs, ca->cert);

    if (rc == NGX_MDM_SCEP_OK && ca->ra_cert != NULL) {
        rc = ngx_mdm_scep_push_unique(certs, ca->ra_cert);
    }

    for (i = 0; rc == NGX_MDM_SCEP_OK && i < sk_X509_num(ca->chain); i++) {
        rc = ngx_mdm_scep_push_unique(certs, sk_X509_value(ca->chain, i));
    }

    if (rc == NGX_MDM_SCEP_OK) {
        rc = ngx_mdm_scep_certs_only(certs, NULL, der, len);
    }

    sk_X509_free(certs);

    return rc;
}


X509_CRL *
ngx_mdm_scep_crl(const ngx_mdm_scep_ca_t *ca,
    const ngx_mdm_scep_revoked_t *revoked, size_t n, time_t this_update,
    time_t next_update, uint64_t crl_number)
{
    int               ok;
    size_t            i;
    X509_CRL         *crl;
    ASN1_TIME        *tm;
    X509_REVOKED     *r;
    ASN1_INTEGER     *num;
    AUTHORITY_KEYID  *akid;

    crl = X509_CRL_new();
    tm = ASN1_TIME_new();
    num = ASN1_INTEGER_new();
    akid = ngx_mdm_scep_akid(ca);

    ok = crl != NULL && tm != NULL && num != NULL && akid != NULL
         && next_update > this_update
         && X509_CRL_set_version(crl, X509_CRL_VERSION_2)
         && X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert))
         && ASN1_TIME_set(tm, this_update) != NULL
         && X509_CRL_set1_lastUpdate(crl, tm)
         && ASN1_TIME_set(tm, next_update) != NULL
         && X509_CRL_set1_nextUpdate(crl, tm);

    for (i = 0; ok && i < n; i++) {
        r = X509_REVOKED_new();

        ok = r != NULL
             && ngx_mdm_scep_serial_set(num, &revoked[i].serial)
                == NGX_MDM_SCEP_OK
             && X509_REVOKED_set_serialNumber(r, num)
             && ASN1_TIME_set(tm, revoked[i].revoked) != NULL
             && X509_REVOKED_set_revocationDate(r, tm)
             && X509_CRL_add0_revoked(crl, r);

        if (!ok) {
            X509_REVOKED_free(r);
        }
    }

    ok = ok
         && ASN1_INTEGER_set_uint64(num, crl_number)
         && X509_CRL_add1_ext_i2d(crl, NID_authority_key_identifier, akid, 0,
                                  X509V3_ADD_DEFAULT) == 1
         && X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0,
                                  X509V3_ADD_DEFAULT) == 1
         && X509_CRL_sort(crl)
         && X509_CRL_sign(crl, ca->key, EVP_sha256()) > 0;

    ASN1_TIME_free(tm);
    ASN1_INTEGER_free(num);
    AUTHORITY_KEYID_free(akid);

    if (!ok) {
        X509_CRL_free(crl);
        return NULL;
    }

    return crl;
}


/* PrintableString's alphabet (X.680 41.4) */

static int
ngx_mdm_scep_printable(const char *s, size_t len)
{
    size_t         i;
    unsigned char  c;

    for (i = 0; i < len; i++) {
        c = s[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9'))
        {
            continue;
        }

        if (c == '\0' || strchr(" '()+,-./:=?", c) == NULL) {
            return 0;
        }
    }

    return 1;
}


static int
ngx_mdm_scep_add_attrs(CMS_SignerInfo *si, const ngx_mdm_scep_attrs_t *a)
{
    int    i, n, type, values[3], oids[3];
    char   num[16];

    values[0] = a->message_type;
    values[1] = a->pki_status;
    values[2] = a->fail_info;
    oids[0] = NGX_MDM_SCEP_OID_MESSAGE_TYPE;
    oids[1] = NGX_MDM_SCEP_OID_PKI_STATUS;
    oids[2] = NGX_MDM_SCEP_OID_FAIL_INFO;

    for (i = 0; i < 3; i++) {
        if (values[i] < 0) {
            continue;
        }

        n = snprintf(num, sizeof(num), "%d", values[i]);

        if (!CMS_signed_add1_attr_by_OBJ(si, ngx_mdm_scep_oid[oids[i]],
                                         V_ASN1_PRINTABLESTRING, num, n))
        {
            return NGX_MDM_SCEP_ERROR;
        }
    }

    if (a->fail_info_text != NULL
        && !CMS_signed_add1_attr_by_OBJ(si,
                     ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_FAIL_INFO_TEXT],
                     V_ASN1_UTF8STRING, a->fail_info_text,
                     (int) strlen(a->fail_info_text)))
    {
        return NGX_MDM_SCEP_ERROR;
    }

    type = ngx_mdm_scep_printable(a->transaction_id, a->transaction_id_len)
           ? V_ASN1_PRINTABLESTRING : V_ASN1_UTF8STRING;

    if (!CMS_signed_add1_attr_by_OBJ(si,
                     ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_TRANSACTION_ID],
                     type, a->transaction_id, (int) a->transaction_id_len)
        || !CMS_signed_add1_attr_by_OBJ(si,
                     ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_SENDER_NONCE],
                     V_ASN1_OCTET_STRING, a->sender_nonce,
                     (int) a->sender_nonce_len))
    {
        return NGX_MDM_SCEP_ERROR;
    }

    if (a->recipient_nonce != NULL
        && !CMS_signed_add1_attr_by_OBJ(si,
                     ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_RECIPIENT_NONCE],
                     V_ASN1_OCTET_STRING, a->recipient_nonce,
                     (int) a->recipient_nonce_len))
    {
        return NGX_MDM_SCEP_ERROR;
    }

    return NGX_MDM_SCEP_OK;
}


/*
 * A pkiMessage: SignedData over "content" (absent when NULL), signed
 * attributes from "a" plus contentType, messageDigest and signingTime,
 * and "cert" first in the certificates, then the signer's.
 */

static int
ngx_mdm_scep_sign(X509 *signer, EVP_PKEY *key, int digest_nid,
    const ngx_mdm_scep_attrs_t *a, const unsigned char *content,
    size_t content_len, X509 *cert, unsigned char **der, size_t *len)
{
    int               n, rc;
    BIO              *in;
    const EVP_MD     *md;
    CMS_SignerInfo   *si;
    CMS_ContentInfo  *cms;

    *der = NULL;
    *len = 0;

    md = EVP_get_digestbynid(digest_nid);

    if (md == NULL || signer == NULL || key == NULL
        || content_len > INT_MAX)
    {
        return NGX_MDM_SCEP_ERROR;
    }

    cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_PARTIAL | CMS_BINARY);
    if (cms == NULL) {
        return NGX_MDM_SCEP_ERROR;
    }

    in = NULL;
    rc = NGX_MDM_SCEP_ERROR;

    if (content == NULL && !CMS_set_detached(cms, 1)) {
        goto failed;
    }

    si = CMS_add1_signer(cms, signer, key, md,
                         CMS_BINARY | CMS_NOSMIMECAP | CMS_NOCERTS
                         | CMS_PARTIAL);

    if (si == NULL || ngx_mdm_scep_add_attrs(si, a) != NGX_MDM_SCEP_OK) {
        goto failed;
    }

    if (cert != NULL && !CMS_add1_cert(cms, cert)) {
        goto failed;
    }

    if ((cert == NULL || X509_cmp(cert, signer) != 0)
        && !CMS_add1_cert(cms, signer))
    {
        goto failed;
    }

    in = BIO_new_mem_buf(content ? content : (const unsigned char *) "",
                         (int) content_len);

    if (in == NULL || CMS_final(cms, in, NULL, CMS_BINARY) != 1) {
        goto failed;
    }

    n = i2d_CMS_ContentInfo(cms, der);
    if (n <= 0) {
        *der = NULL;
        goto failed;
    }

    *len = n;

    if (cert != NULL
        && ngx_mdm_scep_cert_first(*der, *len, cert) != NGX_MDM_SCEP_OK)
    {
        OPENSSL_free(*der);
        *der = NULL;
        *len = 0;
        goto failed;
    }

    rc = NGX_MDM_SCEP_OK;

failed:

    BIO_free(in);
    CMS_ContentInfo_free(cms);

    return rc;
}


/*
 * DER sorts the SET OF certificates; clients of the Go references take the
 * first one as theirs (micromdm/scep puts it first), so move it there.
 * The signature does not cover the certificates.
 */

static int
ngx_mdm_scep_cert_first(unsigned char *der, size_t len, X509 *cert)
{
    int                   i, n, tag, cls;
    long                  l, clen;
    unsigned char        *x, *tmp, *set;
    const unsigned char  *p, *end, *q;

    x = NULL;
    n = i2d_X509(cert, &x);
    if (n <= 0) {
        return NGX_MDM_SCEP_ERROR;
    }

    p = der;
    end = der + len;

    /* ContentInfo { contentType, [0] SignedData { version, digests, */

    if (ngx_mdm_scep_der_enter(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL,
                               &l) != 1
        || ngx_mdm_scep_der_skip(&p, p + l, V_ASN1_OBJECT, V_ASN1_UNIVERSAL)
           != 1
        || ngx_mdm_scep_der_enter(&p, end, 0, V_ASN1_CONTEXT_SPECIFIC, &l)
           != 1
        || ngx_mdm_scep_der_enter(&p, p + l, V_ASN1_SEQUENCE,
                                  V_ASN1_UNIVERSAL, &l) != 1)
    {
        goto failed;
    }

    end = p + l;

    /* encapContentInfo, [0] certificates */

    if (ngx_mdm_scep_der_skip(&p, end, V_ASN1_INTEGER, V_ASN1_UNIVERSAL) != 1
        || ngx_mdm_scep_der_skip(&p, end, V_ASN1_SET, V_ASN1_UNIVERSAL) != 1
        || ngx_mdm_scep_der_skip(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL)
           != 1
        || ngx_mdm_scep_der_enter(&p, end, 0, V_ASN1_CONTEXT_SPECIFIC, &l)
           != 1)
    {
        goto failed;
    }

    set = der + (p - der);
    end = p + l;

    for (q = p; q < end; q += clen) {
        p = q;

        i = ASN1_get_object(&p, &l, &tag, &cls, end - q);
        if (i & 0x81) {
            goto failed;
        }

        clen = (p - q) + l;

        if (clen == n && memcmp(q, x, n) == 0) {
            if (q != set) {
                tmp = OPENSSL_malloc(n);
                if (tmp == NULL) {
                    goto failed;
                }

                memcpy(tmp, q, n);
                memmove(set + n, set, q - set);
                memcpy(set, tmp, n);
                OPENSSL_free(tmp);
            }

            OPENSSL_free(x);
            return NGX_MDM_SCEP_OK;
        }
    }

failed:

    OPENSSL_free(x);

    return NGX_MDM_SCEP_ERROR;
}


/* EnvelopedData of "data" to one recipient (RSA transport or EC agree) */

static int
ngx_mdm_scep_envelope(X509 *recipient, int cipher_nid,
    const unsigned char *data, size_t len, unsigned char **der,
    size_t *der_len)
{
    int                n, rc;
    BIO               *in;
    STACK_OF(X509)    *to;
    CMS_ContentInfo   *cms;
    const EVP_CIPHER  *cipher;

    *der = NULL;
    cipher = EVP_get_cipherbynid(cipher_nid);

    if (cipher == NULL || recipient == NULL || len > INT_MAX) {
        return NGX_MDM_SCEP_ERROR;
    }

    to = sk_X509_new_null();
    in = BIO_new_mem_buf(data, (int) len);
    cms = NULL;
    rc = NGX_MDM_SCEP_ERROR;

    if (to != NULL && in != NULL && sk_X509_push(to, recipient)) {
        cms = CMS_encrypt(to, in, cipher, CMS_BINARY);
    }

    if (cms != NULL) {
        n = i2d_CMS_ContentInfo(cms, der);

        if (n > 0) {
            *der_len = n;
            rc = NGX_MDM_SCEP_OK;

        } else {
            *der = NULL;
        }
    }

    CMS_ContentInfo_free(cms);
    BIO_free(in);
    sk_X509_free(to);

    return rc;
}


static int
ngx_mdm_scep_push_unique(STACK_OF(X509) *sk, X509 *x)
{
    int  i;

    for (i = 0; i < sk_X509_num(sk); i++) {
        if (X509_cmp(sk_X509_value(sk, i), x) == 0) {
            return NGX_MDM_SCEP_OK;
        }
    }

    return sk_X509_push(sk, x) ? NGX_MDM_SCEP_OK : NGX_MDM_SCEP_ERROR;
}


/* a degenerate certificates-only SignedData (RFC 8894 3.4): no eContent */

static int
ngx_mdm_scep_certs_only(STACK_OF(X509) *certs, X509_CRL *crl,
    unsigned char **der, size_t *len)
{
    int               i, n, rc;
    CMS_ContentInfo  *cms;

    *der = NULL;

    cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_PARTIAL | CMS_BINARY);
    if (cms == NULL) {
        return NGX_MDM_SCEP_ERROR;
    }

    rc = NGX_MDM_SCEP_ERROR;

    if (!CMS_set_detached(cms, 1)) {
        goto failed;
    }

    for (i = 0; i < sk_X509_num(certs); i++) {
        if (!CMS_add1_cert(cms, sk_X509_value(certs, i))) {
            goto failed;
        }
    }

    if (crl != NULL && !CMS_add1_crl(cms, crl)) {
        goto failed;
    }

    n = i2d_CMS_ContentInfo(cms, der);
    if (n <= 0) {
        *der = NULL;
        goto failed;
    }

    *len = n;
    rc = NGX_MDM_SCEP_OK;

failed:

    CMS_ContentInfo_free(cms);

    return rc;
}


/* days from the civil calendar: no timegm() in C99 */

static time_t
ngx_mdm_scep_timegm(const struct tm *tm)
{
    long long  y, m, era, yoe, doy, doe, days;

    y = (long long) tm->tm_year + 1900;
    m = tm->tm_mon + 1;

    if (m <= 2) {
        y--;
    }

    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + tm->tm_mday - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = era * 146097 + doe - 719468;

    return (time_t) (days * 86400 + tm->tm_hour * 3600 + tm->tm_min * 60
                     + tm->tm_sec);
}


static int
ngx_mdm_scep_time(const ASN1_TIME *t, time_t *out)
{
    struct tm  tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        return NGX_MDM_SCEP_ERROR;
    }

    *out = ngx_mdm_scep_timegm(&tm);

    return NGX_MDM_SCEP_OK;
}


size_t
ngx_mdm_scep_serial_hex(const ASN1_INTEGER *serial, char *buf, size_t size)
{
    int                   i, len;
    size_t                n;
    const unsigned char  *p;
    static const char     hex[] = "0123456789abcdef";

    if (serial == NULL) {
        return 0;
    }

    p = ASN1_STRING_get0_data(serial);
    len = ASN1_STRING_length(serial);
    n = 0;

    if (ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) {
        if (size < 2) {
            return 0;
        }

        buf[n++] = '-';
    }

    if (len == 0) {
        if (n + 3 > size) {
            return 0;
        }

        buf[n++] = '0';
        buf[n++] = '0';
        buf[n] = '\0';
        return n;
    }

    if (n + (size_t) len * 2 + 1 > size) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        buf[n++] = hex[p[i] >> 4];
        buf[n++] = hex[p[i] & 0xf];
    }

    buf[n] = '\0';

    return n;
}


size_t
ngx_mdm_scep_serial_dec(const ASN1_INTEGER *serial, char *buf, size_t size)
{
    char    *dec;
    size_t   n;
    BIGNUM  *bn;

    if (serial == NULL) {
        return 0;
    }

    bn = ASN1_INTEGER_to_BN(serial, NULL);
    if (bn == NULL) {
        return 0;
    }

    dec = BN_bn2dec(bn);
    BN_free(bn);

    if (dec == NULL) {
        return 0;
    }

    n = strlen(dec);

    if (n + 1 > size) {
        n = 0;

    } else {
        memcpy(buf, dec, n + 1);
    }

    OPENSSL_free(dec);

    return n;
}


size_t
ngx_mdm_scep_name_string(const X509_NAME *name, char *buf, size_t size)
{
    BIO     *bio;
    long     len;
    char    *p;
    size_t   n;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return 0;
    }

    n = 0;

    if (X509_NAME_print_ex(bio, name, 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB)
        >= 0)
    {
        len = BIO_get_mem_data(bio, &p);

        if (len >= 0 && (size_t) len + 1 <= size) {
            memcpy(buf, p, len);
            buf[len] = '\0';
            n = len;
        }
    }

    BIO_free(bio);

    return n;
}


/* the client side: what a device does, for tests, fuzzing and benches */

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
