
/*
 * SCEP (RFC 8894): reading pkiMessages.  The outer SignedData and its
 * attributes, the pkcsPKIEnvelope, the messageData and the CSR checks.
 * No nginx here: see ngx_mdm_scep_pki.h.
 */


#include <limits.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_scep_pki_int.h"


/*
 * A CSR (RFC 2986) with its public key left as DER, for
 * ngx_mdm_scep_csr_rsa(); the CertificationRequestInfo keeps the bytes
 * received, which the signature covers.
 */
typedef struct {
    X509_ALGOR                *algorithm;
    ASN1_BIT_STRING           *public_key;
} ngx_mdm_scep_spki_t;


typedef struct {
    ASN1_ENCODING              enc;
    ASN1_INTEGER              *version;
    X509_NAME                 *subject;
    ngx_mdm_scep_spki_t       *spki;
    STACK_OF(X509_ATTRIBUTE)  *attributes;
} ngx_mdm_scep_req_info_t;


typedef struct {
    ngx_mdm_scep_req_info_t   *info;
    X509_ALGOR                *sig_alg;
    ASN1_BIT_STRING           *signature;
} ngx_mdm_scep_req_t;


static ASN1_TYPE *ngx_mdm_scep_attr(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static const ASN1_STRING *ngx_mdm_scep_attr_text(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static const ASN1_STRING *ngx_mdm_scep_attr_octets(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static int ngx_mdm_scep_attr_number(CMS_SignerInfo *si,
    const ASN1_OBJECT *obj);
static int ngx_mdm_scep_envelope_cipher(const unsigned char *p, long len);
static int ngx_mdm_scep_addressed_to(CMS_ContentInfo *env, X509 *cert);
static int ngx_mdm_scep_message_data(ngx_mdm_scep_msg_t *msg,
    const ngx_mdm_scep_type_t *type, CMS_ContentInfo *cms, BIO *data);
static X509_REQ *ngx_mdm_scep_csr_rsa(const unsigned char *der, long len,
    ngx_mdm_scep_reason_e *reason);
static int ngx_mdm_scep_challenge(ngx_mdm_scep_msg_t *msg,
    CMS_ContentInfo *cms);
static unsigned ngx_mdm_scep_issued_by(X509 *ca, X509 *x);
static time_t ngx_mdm_scep_timegm(const struct tm *tm);
static int ngx_mdm_scep_time(const ASN1_TIME *t, time_t *out);


ASN1_SEQUENCE(ngx_mdm_scep_ias) = {
    ASN1_SIMPLE(ngx_mdm_scep_ias_t, issuer, X509_NAME),
    ASN1_SIMPLE(ngx_mdm_scep_ias_t, subject, X509_NAME)
} ASN1_SEQUENCE_END_name(ngx_mdm_scep_ias_t, ngx_mdm_scep_ias)


ASN1_SEQUENCE(ngx_mdm_scep_spki) = {
    ASN1_SIMPLE(ngx_mdm_scep_spki_t, algorithm, X509_ALGOR),
    ASN1_SIMPLE(ngx_mdm_scep_spki_t, public_key, ASN1_BIT_STRING)
} static_ASN1_SEQUENCE_END_name(ngx_mdm_scep_spki_t, ngx_mdm_scep_spki)


/*
 * As OpenSSL's X509_REQ_INFO: attributes optional, for broken encoders.
 * ASN1_SEQUENCE_enc() wants the type named as the item.
 */
typedef ngx_mdm_scep_req_info_t  ngx_mdm_scep_req_info;

ASN1_SEQUENCE_enc(ngx_mdm_scep_req_info, enc, 0) = {
    ASN1_SIMPLE(ngx_mdm_scep_req_info, version, ASN1_INTEGER),
    ASN1_SIMPLE(ngx_mdm_scep_req_info, subject, X509_NAME),
    ASN1_SIMPLE(ngx_mdm_scep_req_info, spki, ngx_mdm_scep_spki),
    ASN1_IMP_SET_OF_OPT(ngx_mdm_scep_req_info, attributes, X509_ATTRIBUTE,
                        0)
} static_ASN1_SEQUENCE_END_ref(ngx_mdm_scep_req_info, ngx_mdm_scep_req_info)


ASN1_SEQUENCE(ngx_mdm_scep_req) = {
    ASN1_SIMPLE(ngx_mdm_scep_req_t, info, ngx_mdm_scep_req_info),
    ASN1_SIMPLE(ngx_mdm_scep_req_t, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(ngx_mdm_scep_req_t, signature, ASN1_BIT_STRING)
} static_ASN1_SEQUENCE_END_name(ngx_mdm_scep_req_t, ngx_mdm_scep_req)


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
ASN1_OBJECT  *ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_N];


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


const int  ngx_mdm_scep_digests[] = {
    NID_sha1, NID_sha224, NID_sha256, NID_sha384, NID_sha512, NID_undef
};


/* the envelope ciphers we open, and the one a CertRep answers with */
const ngx_mdm_scep_cipher_t  ngx_mdm_scep_ciphers[] = {
    { NID_aes_128_cbc, NID_aes_128_cbc },
    { NID_aes_192_cbc, NID_aes_128_cbc },
    { NID_aes_256_cbc, NID_aes_128_cbc },
    { NID_des_ede3_cbc, NID_des_ede3_cbc },
    { NID_des_cbc, NID_des_cbc },
    { NID_undef, NID_undef }
};


/* why a message is not accepted: what the handler answers, and the log */
const ngx_mdm_scep_reason_t  ngx_mdm_scep_reasons[] = {
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



void
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


int
ngx_mdm_scep_fail(ngx_mdm_scep_msg_t *msg, ngx_mdm_scep_reason_e reason)
{
    msg->reason = reason;
    msg->error = ngx_mdm_scep_reasons[reason].text;
    msg->fail_info = ngx_mdm_scep_reasons[reason].fail_info;

    return ngx_mdm_scep_reasons[reason].rc;
}


const ngx_mdm_scep_type_t *
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

int
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

int
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

int
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

int
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
        msg->csr = ngx_mdm_scep_csr_rsa(p, len, &reason);

        if (msg->csr == NULL && reason != NGX_MDM_SCEP_E_NONE) {
            return ngx_mdm_scep_fail(msg, reason);
        }

        if (msg->csr == NULL) {
            msg->csr = d2i_X509_REQ(NULL, &p, len);

            if (msg->csr == NULL || p != end) {
                return ngx_mdm_scep_fail(msg, NGX_MDM_SCEP_E_MESSAGE_DATA);
            }

            if (ngx_mdm_scep_csr_check(msg->csr, &reason) != NGX_MDM_SCEP_OK)
            {
                return ngx_mdm_scep_fail(msg, reason);
            }
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
 * A CSR with an RSA key, read without OpenSSL 3.0's decoders: d2i_X509_REQ()
 * runs one to decode the key (0.15 ms, a tenth of a PKCSReq's work), where
 * the legacy RSA reader takes microseconds.  The signature is checked on the
 * CertificationRequestInfo as received, as X509_REQ_verify() does, and the
 * key as ngx_mdm_scep_csr_check() does.  Returns the CSR; or NULL with
 * *reason set to refuse, or E_NONE for d2i_X509_REQ() to decide (not RSA,
 * not parsed here).
 */

static X509_REQ *
ngx_mdm_scep_csr_rsa(const unsigned char *der, long len,
    ngx_mdm_scep_reason_e *reason)
{
    int                   i, ok;
    X509_REQ             *csr;
    EVP_PKEY             *pk;
    X509_ALGOR           *alg;
    ASN1_BIT_STRING      *sig;
    ngx_mdm_scep_req_t   *req;
    const unsigned char  *p;

    *reason = NGX_MDM_SCEP_E_NONE;

    p = der;
    req = (ngx_mdm_scep_req_t *) ASN1_item_d2i(NULL, &p, len,
                                              ASN1_ITEM_rptr(ngx_mdm_scep_req));

    pk = NULL;

    if (req != NULL && p == der + len
        && OBJ_obj2nid(req->info->spki->algorithm->algorithm)
           == NID_rsaEncryption)
    {
        p = ASN1_STRING_get0_data(req->info->spki->public_key);
        pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p,
                           ASN1_STRING_length(req->info->spki->public_key));
    }

    csr = NULL;

    if (pk == NULL) {
        goto done;
    }

    if (ASN1_item_verify(ASN1_ITEM_rptr(ngx_mdm_scep_req_info), req->sig_alg,
                         req->signature, req->info, pk)
        != 1)
    {
        *reason = NGX_MDM_SCEP_E_CSR_SIGNATURE;
        goto done;
    }

    *reason = ngx_mdm_scep_key_check(pk);

    if (*reason != NGX_MDM_SCEP_E_NONE) {
        goto done;
    }

    csr = X509_REQ_new();
    alg = X509_ALGOR_dup(req->sig_alg);
    sig = ASN1_STRING_dup(req->signature);

    ok = csr != NULL && alg != NULL && sig != NULL
         && X509_REQ_set_version(csr, ASN1_INTEGER_get(req->info->version))
         && X509_REQ_set_subject_name(csr, req->info->subject)
         && X509_REQ_set_pubkey(csr, pk)
         && X509_REQ_set1_signature_algo(csr, alg);

    for (i = 0; ok && i < sk_X509_ATTRIBUTE_num(req->info->attributes); i++) {
        ok = X509_REQ_add1_attr(csr,
                                sk_X509_ATTRIBUTE_value(req->info->attributes,
                                                        i));
    }

    X509_ALGOR_free(alg);

    if (ok) {
        X509_REQ_set0_signature(csr, sig);

    } else {
        ASN1_STRING_free(sig);
        X509_REQ_free(csr);
        csr = NULL;
        *reason = NGX_MDM_SCEP_E_INTERNAL;
    }

done:

    EVP_PKEY_free(pk);
    ASN1_item_free((ASN1_VALUE *) req, ASN1_ITEM_rptr(ngx_mdm_scep_req));

    if (*reason != NGX_MDM_SCEP_E_INTERNAL) {
        ERR_clear_error();
    }

    return csr;
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


ngx_mdm_scep_reason_e
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
