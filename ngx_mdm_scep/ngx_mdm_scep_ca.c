
/*
 * SCEP (RFC 8894): what the CA makes.  Certificates from CSRs, CertReps
 * (signed, with the reply enveloped to the requester), the GetCACert
 * bundle and CRLs.  No nginx here: see ngx_mdm_scep_pki.h.
 */


#include <limits.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_scep_pki_int.h"


static EVP_PKEY *ngx_mdm_scep_legacy_rsa(X509_REQ *csr);
static int ngx_mdm_scep_serial_set(ASN1_INTEGER *ai,
    const ngx_mdm_scep_serial_t *serial);
static AUTHORITY_KEYID *ngx_mdm_scep_akid(const ngx_mdm_scep_ca_t *ca);
static int ngx_mdm_scep_add_ext(X509 *x, int nid, void *value, int crit);
static int ngx_mdm_scep_std_exts(const ngx_mdm_scep_ca_t *ca, X509 *x,
    EVP_PKEY *pk);
static int ngx_mdm_scep_crl_reason(X509_REVOKED *r, int reason);
static int ngx_mdm_scep_printable(const char *s, size_t len);
static int ngx_mdm_scep_add_attrs(CMS_SignerInfo *si,
    const ngx_mdm_scep_attrs_t *a);
static int ngx_mdm_scep_cert_first(unsigned char *der, size_t len,
    X509 *cert);
static int ngx_mdm_scep_push_unique(STACK_OF(X509) *sk, X509 *x);
static int ngx_mdm_scep_certs_only(STACK_OF(X509) *certs, X509_CRL *crl,
    unsigned char **der, size_t *len);


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
             && ngx_mdm_scep_crl_reason(r, revoked[i].reason)
                == NGX_MDM_SCEP_OK
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


/* CRLReason 1..10 but 7 (unused in RFC 5280 5.3.1); others: none */

static int
ngx_mdm_scep_crl_reason(X509_REVOKED *r, int reason)
{
    int                ok;
    ASN1_ENUMERATED   *e;

    if (reason <= 0 || reason > 10 || reason == 7) {
        return NGX_MDM_SCEP_OK;
    }

    e = ASN1_ENUMERATED_new();

    ok = e != NULL
         && ASN1_ENUMERATED_set(e, reason)
         && X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, e, 0, 0) == 1;

    ASN1_ENUMERATED_free(e);

    return ok ? NGX_MDM_SCEP_OK : NGX_MDM_SCEP_ERROR;
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

int
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

int
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
