/* sources: ngx_mdm_scep/ngx_mdm_scep_pki.c ngx_mdm_scep/ngx_mdm_scep_ca.c ngx_mdm_scep/ngx_mdm_scep_client.c */

/*
 * SCEP message library: round trips as a device would run them, the
 * refusals a CertRep FAILURE answers, hostile input, and real vectors.
 * Run from the repository root; vectors in $MDM_VECTORS or
 * ../shared/vectors.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_scep_pki.h"


#define YEAR  (365 * 24 * 3600)


typedef struct {
    const char         *label;
    ngx_mdm_scep_ca_t  *ca;
    EVP_PKEY           *device_key;
    int                 digest_nid;
    int                 cipher_nid;
    int                 reply_cipher_nid;
    unsigned long       verify_flags;
    uint64_t            serial;
} round_trip_t;


static int           test_n;
static int           test_failed;
static const char   *vectors;


static void
ok(int cond, const char *fmt, ...)
{
    va_list  ap;

    test_n++;

    if (!cond) {
        test_failed++;
    }

    printf("%s %d - ", cond ? "ok" : "not ok", test_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}


static unsigned char *
read_file(const char *name, size_t *len)
{
    FILE           *f;
    char            path[1024];
    long            n;
    unsigned char  *buf;

    snprintf(path, sizeof(path), "%s/%s", vectors, name);

    f = fopen(path, "rb");
    if (f == NULL) {
        printf("# cannot open %s\n", path);
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc(n + 1);

    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        free(buf);
        fclose(f);
        return NULL;
    }

    fclose(f);
    *len = n;

    return buf;
}


static X509 *
read_cert(const char *name)
{
    BIO            *bio;
    X509           *x;
    size_t          len;
    unsigned char  *buf;

    buf = read_file(name, &len);
    if (buf == NULL) {
        return NULL;
    }

    bio = BIO_new_mem_buf(buf, (int) len);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    free(buf);

    return x;
}


static EVP_PKEY *
rsa_key(int bits)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
}


static EVP_PKEY *
ec_key(const char *curve)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}


static EVP_PKEY *
read_key(const char *name, const char *passphrase)
{
    BIO            *bio;
    size_t          len;
    EVP_PKEY       *key;
    unsigned char  *buf;

    buf = read_file(name, &len);
    if (buf == NULL) {
        return NULL;
    }

    bio = BIO_new_mem_buf(buf, (int) len);
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *) passphrase);
    BIO_free(bio);
    free(buf);

    return key;
}


static time_t
cert_time(const ASN1_TIME *t, time_t now)
{
    int         day, sec;
    ASN1_TIME  *ref;

    ref = ASN1_TIME_set(NULL, now);

    if (ref == NULL || !ASN1_TIME_diff(&day, &sec, ref, t)) {
        day = 0;
        sec = 0;
    }

    ASN1_TIME_free(ref);

    return now + (time_t) day * 86400 + sec;
}


static int
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX       ctx;
    X509_EXTENSION  *ext;
    int              rc;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);

    if (ext == NULL) {
        return 0;
    }

    rc = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);

    return rc;
}


static X509 *
make_ca(EVP_PKEY *key, const char *cn)
{
    X509       *x;
    X509_NAME  *name;

    x = X509_new();
    name = X509_get_subject_name(x);

    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * YEAR);
    X509_set_pubkey(x, key);

    if (!add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE")
        || !add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign")
        || !add_ext(x, x, NID_subject_key_identifier, "hash")
        || X509_sign(x, key, EVP_sha256()) <= 0)
    {
        X509_free(x);
        return NULL;
    }

    return x;
}


static int
make_request(int type, X509 *signer, EVP_PKEY *signer_key, X509 *recipient,
    X509_REQ *csr, X509_NAME *issuer, X509_NAME *subject,
    const ASN1_INTEGER *serial, int digest_nid, int cipher_nid,
    const char *tid, const unsigned char *nonce, size_t nonce_len,
    unsigned char **der, size_t *len)
{
    ngx_mdm_scep_request_t  req;

    memset(&req, 0, sizeof(req));

    req.message_type = type;
    req.transaction_id = tid;
    req.sender_nonce = nonce;
    req.sender_nonce_len = nonce_len;
    req.digest_nid = digest_nid;
    req.cipher_nid = cipher_nid;
    req.signer = signer;
    req.signer_key = signer_key;
    req.recipient = recipient;
    req.csr = csr;
    req.issuer = issuer;
    req.subject = subject;
    req.serial = serial;

    return ngx_mdm_scep_client_request(&req, der, len);
}


static void
random_tid(char *tid)
{
    int            i;
    unsigned char  b[20];

    RAND_bytes(b, sizeof(b));

    for (i = 0; i < 20; i++) {
        sprintf(tid + i * 2, "%02X", b[i]);
    }
}


static int
verify_chain(X509 *ca, X509 *cert, unsigned long flags)
{
    int             rc;
    X509_STORE     *store;
    X509_STORE_CTX  *ctx;

    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();

    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX_init(ctx, store, cert, NULL);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    X509_STORE_CTX_set_flags(ctx, flags);

    rc = X509_verify_cert(ctx);

    if (rc != 1) {
        printf("# verify: %s\n",
               X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }

    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);

    return rc == 1;
}


static int
ext_critical(X509 *x, int nid)
{
    int  i;

    i = X509_get_ext_by_NID(x, nid, -1);

    return i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, i));
}


static int
same_san(X509 *x, X509_REQ *csr)
{
    int                        i, same;
    X509_EXTENSION            *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    i = X509_get_ext_by_NID(x, NID_subject_alt_name, -1);
    if (i < 0) {
        return 0;
    }

    ext = X509_get_ext(x, i);
    exts = X509_REQ_get_extensions(csr);
    same = 0;

    for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION  *e = sk_X509_EXTENSION_value(exts, i);

        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name
            && ASN1_OCTET_STRING_cmp(X509_EXTENSION_get_data(e),
                                     X509_EXTENSION_get_data(ext)) == 0)
        {
            same = 1;
        }
    }

    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

    return same;
}


/* the outer certificates of a pkiMessage and whether content is absent */

static X509 *
outer_first_cert(const unsigned char *der, size_t len, int *detached,
    int *has_text)
{
    X509                  *x;
    CMS_SignerInfo        *si;
    ASN1_OBJECT           *obj;
    STACK_OF(X509)        *certs;
    CMS_ContentInfo       *cms;
    ASN1_OCTET_STRING    **pos;
    const unsigned char   *p;

    p = der;
    cms = d2i_CMS_ContentInfo(NULL, &p, (long) len);
    if (cms == NULL) {
        return NULL;
    }

    pos = CMS_get0_content(cms);
    *detached = pos == NULL || *pos == NULL;

    si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
    obj = OBJ_txt2obj("1.3.6.1.5.5.7.24.1", 1);
    *has_text = CMS_signed_get_attr_by_OBJ(si, obj, -1) >= 0;
    ASN1_OBJECT_free(obj);

    certs = CMS_get1_certs(cms);
    x = NULL;

    if (sk_X509_num(certs) > 0) {
        x = sk_X509_value(certs, 0);
        X509_up_ref(x);
    }

    sk_X509_pop_free(certs, X509_free);
    CMS_ContentInfo_free(cms);

    return x;
}


static int
same_crl(X509_CRL *a, X509_CRL *b)
{
    int             na, nb, same;
    unsigned char  *da, *db;

    da = NULL;
    db = NULL;
    na = i2d_X509_CRL(a, &da);
    nb = i2d_X509_CRL(b, &db);
    same = na > 0 && na == nb && memcmp(da, db, na) == 0;
    OPENSSL_free(da);
    OPENSSL_free(db);

    return same;
}


static int
has_cert(STACK_OF(X509) *certs, X509 *x)
{
    int  i;

    for (i = 0; i < sk_X509_num(certs); i++) {
        if (X509_cmp(sk_X509_value(certs, i), x) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * PKCSReq → parse → issue → CertRep → the device opens it.  Returns the
 * issued certificate (and the device signer for renewal tests).
 */

static X509 *
round_trip(round_trip_t *t, X509 **signer_out)
{
    int                    rc, detached, has_text;
    char                   tid[41], hex[64], dec[64], subj[256];
    X509                  *signer, *cert, *first;
    size_t                 len, rep_len;
    time_t                 now, nb, na;
    X509_REQ              *csr;
    unsigned char          nonce[8], *der, *rep_der;
    ngx_mdm_scep_msg_t     msg, rmsg;
    ngx_mdm_scep_reply_t   rep;
    ngx_mdm_scep_issue_t   iss;
    const ASN1_OCTET_STRING  *aki;

    now = time(NULL);
    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));

    signer = ngx_mdm_scep_client_signer(t->device_key, "MDM SCEP SIGNER",
                                        YEAR);
    csr = ngx_mdm_scep_client_csr(t->device_key, "device-1",
                                  "c0ffee-challenge",
                                  "DNS:device.example,URI:urn:uuid:1234,"
                                  "email:dev@example.org");

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, t->device_key,
                      t->ca->cert, csr, NULL, NULL, NULL, t->digest_nid,
                      t->cipher_nid, tid, nonce, sizeof(nonce), &der, &len);
    ok(rc == NGX_MDM_SCEP_OK, "%s: client builds PKCSReq", t->label);

    rc = ngx_mdm_scep_parse(t->ca, der, len, &msg);
    ok(rc == NGX_MDM_SCEP_OK, "%s: PKCSReq parses (%s)", t->label,
       msg.error ? msg.error : "ok");

    ok(msg.message_type == NGX_MDM_SCEP_PKCS_REQ
       && strcmp(msg.transaction_id, tid) == 0
       && msg.sender_nonce_len == 8
       && memcmp(msg.sender_nonce, nonce, 8) == 0
       && msg.digest_nid == t->digest_nid
       && msg.cipher_nid == t->cipher_nid
       && msg.signing_time > now - 1000 && msg.signing_time < now + 1000,
       "%s: messageType, transactionID, 8-byte nonce, digest, cipher",
       t->label);

    ok(msg.signer != NULL && X509_cmp(msg.signer, signer) == 0
       && !msg.signer_from_ca && msg.csr != NULL
       && msg.challenge != NULL
       && strcmp(msg.challenge, "c0ffee-challenge") == 0
       && msg.challenge_len == 16,
       "%s: signer, CSR and challengePassword", t->label);

    memset(&iss, 0, sizeof(iss));
    iss.serial.value = t->serial;
    iss.validity = YEAR;
    iss.backdate = 600;

    cert = NULL;
    rc = msg.csr ? ngx_mdm_scep_issue(t->ca, msg.csr, &iss, &cert,
                                      &msg.error)
                 : NGX_MDM_SCEP_ERROR;
    ok(rc == NGX_MDM_SCEP_OK && cert != NULL, "%s: certificate issued",
       t->label);

    if (cert == NULL) {
        ngx_mdm_scep_msg_free(&msg);
        OPENSSL_free(der);
        X509_REQ_free(csr);
        X509_free(signer);
        return NULL;
    }

    aki = X509_get0_authority_key_id(cert);

    ok(X509_get_version(cert) == X509_VERSION_3
       && X509_NAME_cmp(X509_get_subject_name(cert),
                        X509_REQ_get_subject_name(csr)) == 0
       && X509_NAME_cmp(X509_get_issuer_name(cert),
                        X509_get_subject_name(t->ca->cert)) == 0
       && same_san(cert, csr) && !ext_critical(cert, NID_subject_alt_name)
       && X509_cmp(cert, cert) == 0
       && EVP_PKEY_eq(X509_get0_pubkey(cert), t->device_key) == 1,
       "%s: subject, issuer, SAN and key copied", t->label);

    ok(ext_critical(cert, NID_key_usage)
       && (X509_get_key_usage(cert)
           == (EVP_PKEY_get_base_id(t->device_key) == EVP_PKEY_RSA
               ? (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT)
               : KU_DIGITAL_SIGNATURE))
       && X509_get_extended_key_usage(cert) == XKU_SSL_CLIENT
       && ext_critical(cert, NID_basic_constraints)
       && X509_check_ca(cert) == 0
       && X509_get0_subject_key_id(cert) != NULL
       && aki != NULL
       && ASN1_STRING_length(aki) == (int) t->ca->key_id_len
       && memcmp(ASN1_STRING_get0_data(aki), t->ca->key_id,
                 t->ca->key_id_len) == 0,
       "%s: keyUsage, EKU clientAuth, CA:FALSE, SKI, AKI", t->label);

    nb = cert_time(X509_get0_notBefore(cert), now);
    na = cert_time(X509_get0_notAfter(cert), now);

    ok(nb >= now - 600 - 5 && nb <= now - 600 + 5
       && na >= now + YEAR - 5 && na <= now + YEAR + 5
       && (X509_get_signature_nid(cert) == NID_sha256WithRSAEncryption
           || X509_get_signature_nid(cert) == NID_ecdsa_with_SHA256),
       "%s: notBefore backdated, validity, SHA-256 signature", t->label);

    ok(ngx_mdm_scep_serial_hex(X509_get0_serialNumber(cert), hex,
                               sizeof(hex)) > 0
       && ngx_mdm_scep_serial_dec(X509_get0_serialNumber(cert), dec,
                                  sizeof(dec)) > 0
       && strtoull(dec, NULL, 10) == t->serial
       && strtoull(hex, NULL, 16) == t->serial
       && ngx_mdm_scep_name_string(X509_get_subject_name(cert), subj,
                                   sizeof(subj)) > 0
       && strcmp(subj, "CN=device-1") == 0,
       "%s: serial %s / %s, subject %s", t->label, hex, dec, subj);

    ok(verify_chain(t->ca->cert, cert, t->verify_flags),
       "%s: issued certificate chains to the CA (X509_verify_cert)",
       t->label);

    ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
    rep.cert = cert;

    rc = ngx_mdm_scep_certrep(t->ca, &rep, &rep_der, &rep_len);
    ok(rc == NGX_MDM_SCEP_OK, "%s: CertRep SUCCESS built", t->label);

    rc = ngx_mdm_scep_client_parse(rep_der, rep_len, t->ca->signer_cert,
                                   signer, t->device_key, &rmsg);
    ok(rc == NGX_MDM_SCEP_OK && rmsg.pki_status == NGX_MDM_SCEP_SUCCESS
       && rmsg.message_type == NGX_MDM_SCEP_CERT_REP,
       "%s: device verifies and decrypts CertRep (%s)", t->label,
       rmsg.error ? rmsg.error : "ok");

    ok(strcmp(rmsg.transaction_id, tid) == 0
       && rmsg.recipient_nonce_len == 8
       && memcmp(rmsg.recipient_nonce, nonce, 8) == 0
       && rmsg.sender_nonce_len == NGX_MDM_SCEP_NONCE_LEN
       && memcmp(rmsg.sender_nonce, nonce, 8) != 0
       && rmsg.signing_time > now - 1000,
       "%s: transactionID echoed, recipientNonce = senderNonce, fresh "
       "senderNonce, signingTime", t->label);

    ok(rmsg.digest_nid == t->digest_nid
       && rmsg.cipher_nid == t->reply_cipher_nid,
       "%s: CertRep mirrors digest %s, envelope %s", t->label,
       OBJ_nid2sn(rmsg.digest_nid), OBJ_nid2sn(rmsg.cipher_nid));

    ok(rmsg.certs != NULL && sk_X509_num(rmsg.certs) == 1
       && X509_cmp(sk_X509_value(rmsg.certs, 0), cert) == 0,
       "%s: envelope holds the issued certificate", t->label);

    first = outer_first_cert(rep_der, rep_len, &detached, &has_text);
    ok(first != NULL && X509_cmp(first, cert) == 0 && !detached,
       "%s: issued certificate first in the outer certificates", t->label);
    X509_free(first);

    ngx_mdm_scep_msg_free(&rmsg);
    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(rep_der);
    OPENSSL_free(der);
    X509_REQ_free(csr);

    if (signer_out) {
        *signer_out = signer;

    } else {
        X509_free(signer);
    }

    return cert;
}


static void
test_renewal(ngx_mdm_scep_ca_t *ca, X509 *issued, EVP_PKEY *device_key)
{
    int                   rc;
    char                  tid[41];
    X509                 *cert, *self;
    size_t                len, rep_len;
    X509_REQ             *csr;
    EVP_PKEY             *new_key;
    unsigned char         nonce[16], *der, *rep_der;
    ngx_mdm_scep_msg_t    msg, rmsg;
    ngx_mdm_scep_reply_t  rep;
    ngx_mdm_scep_issue_t  iss;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));
    new_key = rsa_key(2048);
    csr = ngx_mdm_scep_client_csr(new_key, "device-1", NULL,
                                  "DNS:device.example");

    rc = make_request(NGX_MDM_SCEP_RENEWAL_REQ, issued, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_OK
       && msg.message_type == NGX_MDM_SCEP_RENEWAL_REQ
       && msg.signer_from_ca && X509_cmp(msg.signer, issued) == 0
       && msg.challenge == NULL,
       "RenewalReq signed by an issued certificate parses (%s)",
       msg.error ? msg.error : "ok");

    memset(&iss, 0, sizeof(iss));
    iss.serial.value = 0x7000000000000001ULL;
    iss.validity = YEAR;

    cert = NULL;
    rc = msg.csr ? ngx_mdm_scep_issue(ca, msg.csr, &iss, &cert, &msg.error)
                 : NGX_MDM_SCEP_ERROR;

    ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
    rep.cert = cert;
    rep_der = NULL;

    rc = rc == NGX_MDM_SCEP_OK
         ? ngx_mdm_scep_certrep(ca, &rep, &rep_der, &rep_len) : rc;
    rc = rc == NGX_MDM_SCEP_OK
         ? ngx_mdm_scep_client_parse(rep_der, rep_len, ca->signer_cert,
                                     issued, device_key, &rmsg)
         : rc;

    ok(rc == NGX_MDM_SCEP_OK && rmsg.certs != NULL
       && X509_cmp(sk_X509_value(rmsg.certs, 0), cert) == 0
       && EVP_PKEY_eq(X509_get0_pubkey(cert), new_key) == 1,
       "RenewalReq: CertRep encrypted to the old certificate, new key");

    if (rc == NGX_MDM_SCEP_OK) {
        ngx_mdm_scep_msg_free(&rmsg);
    }

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(rep_der);
    OPENSSL_free(der);
    X509_free(cert);

    /* a RenewalReq signed by a self-signed certificate is refused */

    self = ngx_mdm_scep_client_signer(device_key, "MDM SCEP SIGNER", YEAR);
    rc = make_request(NGX_MDM_SCEP_RENEWAL_REQ, self, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_REFUSED
       && msg.reason == NGX_MDM_SCEP_E_RENEWAL_SIGNER
       && msg.fail_info == NGX_MDM_SCEP_BAD_MESSAGE_CHECK
       && strcmp(msg.transaction_id, tid) == 0 && msg.sender_nonce_len == 16,
       "RenewalReq with a self-signed signer: FAILURE badMessageCheck");

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_free(self);
    X509_REQ_free(csr);
    EVP_PKEY_free(new_key);
}


static void
test_get_cert_crl(ngx_mdm_scep_ca_t *ca, X509 *issued, X509 *signer,
    EVP_PKEY *device_key)
{
    int                     i, rc, detached, has_text;
    char                    tid[41];
    X509                   *first;
    size_t                  len, rep_len;
    X509_CRL               *crl, *got;
    X509_REVOKED           *rev, *rev2;
    ASN1_INTEGER           *num;
    ASN1_ENUMERATED        *reason;
    unsigned char           nonce[16], *der, *rep_der, big[9];
    ngx_mdm_scep_msg_t      msg, rmsg;
    ngx_mdm_scep_reply_t    rep;
    ngx_mdm_scep_revoked_t  revoked[2];

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));

    /* GetCert */

    rc = make_request(NGX_MDM_SCEP_GET_CERT, signer, device_key, ca->cert,
                      NULL, X509_get_issuer_name(issued), NULL,
                      X509_get0_serialNumber(issued), NID_sha256,
                      NID_aes_256_cbc, tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_OK && msg.message_type == NGX_MDM_SCEP_GET_CERT
       && msg.issuer != NULL
       && X509_NAME_cmp(msg.issuer, X509_get_issuer_name(issued)) == 0
       && msg.serial != NULL
       && ASN1_INTEGER_cmp(msg.serial, X509_get0_serialNumber(issued)) == 0,
       "GetCert: IssuerAndSerialNumber parsed (%s)",
       msg.error ? msg.error : "ok");

    ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
    rep.cert = issued;
    rep_der = NULL;

    rc = ngx_mdm_scep_certrep(ca, &rep, &rep_der, &rep_len);
    rc = rc == NGX_MDM_SCEP_OK
         ? ngx_mdm_scep_client_parse(rep_der, rep_len, ca->signer_cert,
                                     signer, device_key, &rmsg)
         : rc;

    ok(rc == NGX_MDM_SCEP_OK && has_cert(rmsg.certs, issued)
       && rmsg.cipher_nid == NID_aes_128_cbc,
       "GetCert: CertRep SUCCESS carries the certificate (AES-256 request, "
       "AES-128 reply)");

    first = outer_first_cert(rep_der, rep_len, &detached, &has_text);
    ok(first != NULL && X509_cmp(first, issued) == 0,
       "GetCert: certificate first in the outer certificates");
    X509_free(first);

    if (rc == NGX_MDM_SCEP_OK) {
        ngx_mdm_scep_msg_free(&rmsg);
    }

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(rep_der);
    OPENSSL_free(der);

    /* GetCRL */

    rc = make_request(NGX_MDM_SCEP_GET_CRL, signer, device_key, ca->cert,
                      NULL, X509_get_issuer_name(issued), NULL,
                      X509_get0_serialNumber(issued), NID_sha512,
                      NID_des_ede3_cbc, tid, nonce, sizeof(nonce), &der,
                      &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_OK && msg.message_type == NGX_MDM_SCEP_GET_CRL
       && msg.serial != NULL && msg.digest_nid == NID_sha512
       && msg.cipher_nid == NID_des_ede3_cbc,
       "GetCRL: parsed (SHA-512, 3DES)");

    memset(revoked, 0, sizeof(revoked));
    memset(big, 0xA5, sizeof(big));
    revoked[0].serial.value = ASN1_INTEGER_get(
                                          X509_get0_serialNumber(issued));
    revoked[0].revoked = time(NULL) - 60;
    revoked[1].serial.data = big;
    revoked[1].serial.len = sizeof(big);
    revoked[1].revoked = time(NULL) - 120;
    revoked[1].reason = 1;                          /* keyCompromise */

    crl = ngx_mdm_scep_crl(ca, revoked, 2, time(NULL), time(NULL) + 86400,
                           42);

    num = crl ? X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL) : NULL;
    rev = NULL;

    ok(crl != NULL
       && X509_CRL_verify(crl, X509_get0_pubkey(ca->cert)) == 1
       && X509_CRL_get_version(crl) == X509_CRL_VERSION_2
       && sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == 2
       && X509_CRL_get0_by_serial(crl, &rev,
                                  X509_get0_serialNumber(issued)) == 1
       && num != NULL && ASN1_INTEGER_get(num) == 42
       && X509_CRL_get_ext_by_NID(crl, NID_authority_key_identifier, -1)
          >= 0,
       "CRL: signed by the CA, v2, entries, cRLNumber, AKI");
    ASN1_INTEGER_free(num);

    reason = NULL;
    rev2 = NULL;

    if (crl != NULL) {
        for (i = 0; i < sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)); i++) {
            rev2 = sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl), i);
            if (rev2 != rev) {
                reason = X509_REVOKED_get_ext_d2i(rev2, NID_crl_reason, NULL,
                                                  NULL);
                break;
            }
        }
    }

    ok(rev != NULL
       && X509_REVOKED_get_ext_by_NID(rev, NID_crl_reason, -1) < 0
       && reason != NULL && ASN1_ENUMERATED_get(reason) == 1,
       "CRL: reasonCode keyCompromise, none for unspecified");
    ASN1_ENUMERATED_free(reason);

    ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
    rep.crl = crl;
    rep_der = NULL;

    rc = ngx_mdm_scep_certrep(ca, &rep, &rep_der, &rep_len);
    rc = rc == NGX_MDM_SCEP_OK
         ? ngx_mdm_scep_client_parse(rep_der, rep_len, ca->signer_cert,
                                     signer, device_key, &rmsg)
         : rc;

    got = rc == NGX_MDM_SCEP_OK && sk_X509_CRL_num(rmsg.crls) == 1
          ? sk_X509_CRL_value(rmsg.crls, 0) : NULL;

    if (got == NULL) {
        printf("# GetCRL reply: rc %d, %s\n", rc,
               rmsg.error ? rmsg.error : "ok");
    }

    ok(got != NULL && same_crl(got, crl)
       && rmsg.digest_nid == NID_sha512
       && rmsg.cipher_nid == NID_des_ede3_cbc,
       "GetCRL: CertRep SUCCESS carries the CRL (SHA-512, 3DES mirrored)");

    if (rc == NGX_MDM_SCEP_OK) {
        ngx_mdm_scep_msg_free(&rmsg);
    }

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(rep_der);
    OPENSSL_free(der);
    X509_CRL_free(crl);

    /* CertPoll */

    rc = make_request(NGX_MDM_SCEP_CERT_POLL, signer, device_key, ca->cert,
                      NULL, X509_get_issuer_name(issued),
                      X509_get_subject_name(issued), NULL, NID_sha256,
                      NID_aes_128_cbc, tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_OK && msg.message_type == NGX_MDM_SCEP_CERT_POLL
       && msg.issuer != NULL && msg.subject != NULL
       && X509_NAME_cmp(msg.issuer, X509_get_issuer_name(issued)) == 0
       && X509_NAME_cmp(msg.subject, X509_get_subject_name(issued)) == 0,
       "CertPoll: IssuerAndSubject parsed");

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
}


static void
test_failure_pending(ngx_mdm_scep_ca_t *ca, X509 *signer,
    EVP_PKEY *device_key)
{
    int                   rc, detached, has_text;
    char                  tid[41];
    X509                 *first;
    size_t                len, rep_len;
    X509_REQ             *csr;
    unsigned char         nonce[16], *der, *rep_der;
    ngx_mdm_scep_msg_t    msg, rmsg;
    ngx_mdm_scep_reply_t  rep;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));
    csr = ngx_mdm_scep_client_csr(device_key, "device-1", "wrong", NULL);

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha1, NID_des_ede3_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;
    ok(rc == NGX_MDM_SCEP_OK, "FAILURE: request parses");

    /* a business refusal (bad challenge) */

    ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_FAILURE);
    rep.fail_info = NGX_MDM_SCEP_BAD_REQUEST;
    rep.fail_info_text = "challenge not accepted";

    rc = ngx_mdm_scep_certrep(ca, &rep, &rep_der, &rep_len);
    rc = rc == NGX_MDM_SCEP_OK
         ? ngx_mdm_scep_client_parse(rep_der, rep_len, ca->signer_cert,
                                     signer, device_key, &rmsg)
         : rc;

    ok(rc == NGX_MDM_SCEP_OK && rmsg.pki_status == NGX_MDM_SCEP_FAILURE
       && rmsg.fail_info == NGX_MDM_SCEP_BAD_REQUEST
       && strcmp(rmsg.transaction_id, tid) == 0
       && rmsg.recipient_nonce_len == 16
       && memcmp(rmsg.recipient_nonce, nonce, 16) == 0
       && rmsg.sender_nonce_len == 16
       && memcmp(rmsg.sender_nonce, nonce, 16) != 0
       && rmsg.digest_nid == NID_sha1 && rmsg.certs == NULL,
       "FAILURE: pkiStatus 2, failInfo badRequest, nonces, SHA-1 mirrored");

    first = outer_first_cert(rep_der, rep_len, &detached, &has_text);
    ok(first != NULL && X509_cmp(first, ca->signer_cert) == 0 && detached
       && has_text,
       "FAILURE: no content, failInfoText, only the CA certificate");
    X509_free(first);

    if (rc == NGX_MDM_SCEP_OK) {
        ngx_mdm_scep_msg_free(&rmsg);
    }

    OPENSSL_free(rep_der);

    /* PENDING */

    ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_PENDING);

    rc = ngx_mdm_scep_certrep(ca, &rep, &rep_der, &rep_len);
    rc = rc == NGX_MDM_SCEP_OK
         ? ngx_mdm_scep_client_parse(rep_der, rep_len, ca->signer_cert,
                                     signer, device_key, &rmsg)
         : rc;

    ok(rc == NGX_MDM_SCEP_OK && rmsg.pki_status == NGX_MDM_SCEP_PENDING
       && rmsg.fail_info == -1
       && strcmp(rmsg.transaction_id, tid) == 0
       && memcmp(rmsg.recipient_nonce, nonce, 16) == 0,
       "PENDING: pkiStatus 3, no failInfo, nonces");

    first = outer_first_cert(rep_der, rep_len, &detached, &has_text);
    ok(first != NULL && detached && !has_text, "PENDING: no content");
    X509_free(first);

    /* a CertRep sent to the server is not a request */

    if (rc == NGX_MDM_SCEP_OK) {
        ngx_mdm_scep_msg_free(&rmsg);
    }

    rc = ngx_mdm_scep_parse(ca, rep_der, rep_len, &rmsg);
    ok(rc == NGX_MDM_SCEP_REFUSED
       && rmsg.reason == NGX_MDM_SCEP_E_MESSAGE_TYPE
       && rmsg.fail_info == NGX_MDM_SCEP_BAD_REQUEST,
       "a CertRep sent as a request: FAILURE badRequest");
    ngx_mdm_scep_msg_free(&rmsg);

    /* bad arguments are our failure, not the client's */

    OPENSSL_free(rep_der);

    rep.status = NGX_MDM_SCEP_FAILURE;
    rep.fail_info = 9;
    ok(ngx_mdm_scep_certrep(ca, &rep, &rep_der, &rep_len)
       == NGX_MDM_SCEP_ERROR && rep_der == NULL,
       "CertRep with an unknown failInfo is refused by the builder");
    ERR_clear_error();

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_REQ_free(csr);
}


/*
 * An RSA CSR is read without OpenSSL's decoders (ngx_mdm_scep_csr_rsa):
 * the CSR it hands over must be the one sent, and refusals the same as on
 * the general path (EC keys take that one).
 */

static void
test_csr_rsa(ngx_mdm_scep_ca_t *ca, X509 *signer, EVP_PKEY *device_key)
{
    int                        rc, n;
    char                       tid[41];
    size_t                     len;
    X509_REQ                  *csr;
    EVP_PKEY                  *pk;
    unsigned char              nonce[16], *der, *a, *b;
    ngx_mdm_scep_msg_t         msg;
    STACK_OF(X509_EXTENSION)  *exts;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));

    csr = ngx_mdm_scep_client_csr(device_key, "fast \xc3\xa9", "secret-1",
                                  "DNS:fast.example,URI:urn:x");

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_OK && msg.csr != NULL, "RSA CSR: parsed");

    if (rc == NGX_MDM_SCEP_OK && msg.csr != NULL) {
        pk = X509_REQ_get0_pubkey(msg.csr);
        exts = X509_REQ_get_extensions(msg.csr);

        ok(X509_NAME_cmp(X509_REQ_get_subject_name(msg.csr),
                         X509_REQ_get_subject_name(csr)) == 0
           && pk != NULL && EVP_PKEY_eq(pk, device_key) == 1
           && X509_REQ_verify(msg.csr, pk) == 1
           && msg.challenge != NULL && strcmp(msg.challenge, "secret-1") == 0
           && sk_X509_EXTENSION_num(exts) == 1,
           "RSA CSR: subject, key, signature, challenge and extensions kept");

        /* the same DER as sent, attribute for attribute */
        a = NULL;
        b = NULL;
        n = i2d_X509_REQ(msg.csr, &a);
        ok(n > 0 && n == i2d_X509_REQ(csr, &b) && memcmp(a, b, n) == 0,
           "RSA CSR: re-encodes to the bytes sent");

        OPENSSL_free(a);
        OPENSSL_free(b);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_REQ_free(csr);
}


static void
test_bad_csrs(ngx_mdm_scep_ca_t *ca, X509 *signer, EVP_PKEY *device_key)
{
    int                    rc;
    char                   tid[41];
    X509                  *cert;
    size_t                 len;
    X509_REQ              *csr;
    EVP_PKEY              *other, *small, *p521, *p384;
    const char            *err;
    unsigned char          nonce[16], *der;
    ngx_mdm_scep_msg_t     msg;
    ngx_mdm_scep_issue_t   iss;
    ngx_mdm_scep_reason_e  reason;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));

    memset(&iss, 0, sizeof(iss));
    iss.serial.value = 99;
    iss.validity = YEAR;

    /* a CSR signed by a key other than the one it carries */

    other = rsa_key(2048);
    csr = ngx_mdm_scep_client_csr(device_key, "device-1", "x", NULL);
    X509_REQ_sign(csr, other, EVP_sha256());

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_REFUSED
       && msg.reason == NGX_MDM_SCEP_E_CSR_SIGNATURE
       && msg.fail_info == NGX_MDM_SCEP_BAD_MESSAGE_CHECK
       && strcmp(msg.transaction_id, tid) == 0 && msg.signer != NULL
       && ERR_peek_error() == 0,
       "CSR with a bad self-signature: FAILURE badMessageCheck (%s)",
       msg.error ? msg.error : "ok");

    ok(ngx_mdm_scep_csr_check(csr, &reason) == NGX_MDM_SCEP_REFUSED
       && reason == NGX_MDM_SCEP_E_CSR_SIGNATURE,
       "ngx_mdm_scep_csr_check() refuses it too");

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_REQ_free(csr);

    /* RSA-1024 */

    small = rsa_key(1024);
    csr = ngx_mdm_scep_client_csr(small, "device-1", "x", NULL);

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_REFUSED && msg.reason == NGX_MDM_SCEP_E_KEY_SIZE
       && msg.fail_info == NGX_MDM_SCEP_BAD_REQUEST,
       "RSA-1024 CSR: FAILURE badRequest");

    cert = NULL;
    rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
    ok(rc == NGX_MDM_SCEP_REFUSED && cert == NULL,
       "RSA-1024 CSR: issue refuses (%s)", err);

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_REQ_free(csr);

    /* EC curves */

    p521 = ec_key("P-521");
    p384 = ec_key("P-384");

    csr = ngx_mdm_scep_client_csr(p521, "device-1", "x", NULL);
    ok(ngx_mdm_scep_csr_check(csr, &reason) == NGX_MDM_SCEP_REFUSED
       && reason == NGX_MDM_SCEP_E_KEY_TYPE
       && ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err)
          == NGX_MDM_SCEP_REFUSED,
       "EC P-521 CSR refused (badAlg)");
    X509_REQ_free(csr);

    csr = ngx_mdm_scep_client_csr(p384, "device-1", "x", NULL);
    rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
    ok(ngx_mdm_scep_csr_check(csr, &reason) == NGX_MDM_SCEP_OK
       && rc == NGX_MDM_SCEP_OK
       && X509_get_key_usage(cert) == KU_DIGITAL_SIGNATURE,
       "EC P-384 CSR accepted, keyUsage digitalSignature only");
    X509_free(cert);
    X509_REQ_free(csr);

    /* subject and subjectAltName rules */

    csr = ngx_mdm_scep_client_csr(device_key, NULL, NULL, "DNS:only.example");
    cert = NULL;
    rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
    ok(rc == NGX_MDM_SCEP_OK && same_san(cert, csr)
       && ext_critical(cert, NID_subject_alt_name),
       "empty subject: subjectAltName copied as critical");
    X509_free(cert);
    X509_REQ_free(csr);

    csr = ngx_mdm_scep_client_csr(device_key, NULL, NULL, NULL);
    cert = NULL;
    rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
    ok(rc == NGX_MDM_SCEP_REFUSED && cert == NULL,
       "neither subject nor subjectAltName: refused (%s)", err);
    X509_REQ_free(csr);

    /* caller mistakes */

    csr = ngx_mdm_scep_client_csr(device_key, "device-1", NULL, NULL);
    iss.serial.value = 0;
    rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
    ok(rc == NGX_MDM_SCEP_ERROR && cert == NULL, "serial 0: error (%s)",
       err);

    {
        unsigned char  s20[20], s21[21];

        memset(s20, 0x7f, sizeof(s20));
        memset(s21, 0x01, sizeof(s21));
        s21[0] = 0;
        iss.serial.data = s20;
        iss.serial.len = sizeof(s20);
        rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
        ok(rc == NGX_MDM_SCEP_OK
           && ASN1_STRING_length(X509_get0_serialNumber(cert)) == 20,
           "20-byte serial from bytes");
        X509_free(cert);

        s20[0] = 0x80;
        rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
        ok(rc == NGX_MDM_SCEP_ERROR,
           "serial that encodes to 21 bytes: error");

        iss.serial.data = s21;
        iss.serial.len = sizeof(s21);
        rc = ngx_mdm_scep_issue(ca, csr, &iss, &cert, &err);
        ok(rc == NGX_MDM_SCEP_OK, "leading zero byte in serial bytes is fine");
        X509_free(cert);
        ERR_clear_error();
    }

    X509_REQ_free(csr);

    /* a UTF-8 challenge */

    csr = ngx_mdm_scep_client_csr(device_key, "device-1", "p\xc3\xa4ss", NULL);

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_OK && msg.challenge != NULL
       && msg.challenge_len == 5
       && memcmp(msg.challenge, "p\xc3\xa4ss", 5) == 0,
       "UTF8String challengePassword read as UTF-8");

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_REQ_free(csr);

    EVP_PKEY_free(other);
    EVP_PKEY_free(small);
    EVP_PKEY_free(p521);
    EVP_PKEY_free(p384);
}


static int
classified(int rc, ngx_mdm_scep_msg_t *msg)
{
    if (rc == NGX_MDM_SCEP_MALFORMED) {
        return ERR_peek_error() == 0;
    }

    if (rc == NGX_MDM_SCEP_REFUSED) {
        return ERR_peek_error() == 0 && msg->transaction_id_len > 0
               && msg->sender_nonce_len > 0 && msg->fail_info >= 0
               && msg->fail_info <= NGX_MDM_SCEP_BAD_CERT_ID;
    }

    return rc == NGX_MDM_SCEP_OK;
}


static void
test_hostile(ngx_mdm_scep_ca_t *ca, X509 *signer, EVP_PKEY *device_key)
{
    int                  rc, good, refused, malformed, accepted;
    char                 tid[41];
    size_t               i, len, bits;
    X509_REQ            *csr;
    unsigned char        nonce[16], *der, *copy, junk[512], *cert_der;
    ngx_mdm_scep_msg_t   msg;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));
    csr = ngx_mdm_scep_client_csr(device_key, "device-1", "x",
                                  "DNS:a.example");

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    ok(rc == NGX_MDM_SCEP_OK, "hostile: a valid request of %zu bytes", len);

    /* garbage */

    good = 1;

    rc = ngx_mdm_scep_parse(ca, NULL, 0, &msg);
    good &= rc == NGX_MDM_SCEP_MALFORMED;
    ngx_mdm_scep_msg_free(&msg);

    rc = ngx_mdm_scep_parse(ca, (const unsigned char *) "hello", 5, &msg);
    good &= rc == NGX_MDM_SCEP_MALFORMED && msg.reason == NGX_MDM_SCEP_E_DER;
    ngx_mdm_scep_msg_free(&msg);

    for (i = 0; i < 200; i++) {
        RAND_bytes(junk, sizeof(junk));
        junk[0] = 0x30;
        rc = ngx_mdm_scep_parse(ca, junk, 1 + i * 2, &msg);
        good &= rc == NGX_MDM_SCEP_MALFORMED && ERR_peek_error() == 0;
        ngx_mdm_scep_msg_free(&msg);
    }

    ok(good, "garbage: MALFORMED, error queue empty");

    cert_der = NULL;
    i = i2d_X509(ca->cert, &cert_der);
    rc = ngx_mdm_scep_parse(ca, cert_der, i, &msg);
    ok(rc == NGX_MDM_SCEP_MALFORMED && msg.reason == NGX_MDM_SCEP_E_DER,
       "a certificate is not a pkiMessage: MALFORMED");
    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(cert_der);

    copy = malloc(len + 1);
    memcpy(copy, der, len);
    copy[len] = 0;
    rc = ngx_mdm_scep_parse(ca, copy, len + 1, &msg);
    ok(rc == NGX_MDM_SCEP_MALFORMED && msg.reason == NGX_MDM_SCEP_E_DER,
       "trailing byte: MALFORMED");
    ngx_mdm_scep_msg_free(&msg);

    /* every proper prefix */

    good = 1;

    for (i = 0; i < len; i++) {
        memcpy(copy, der, i);
        rc = ngx_mdm_scep_parse(ca, copy, i, &msg);

        if (rc != NGX_MDM_SCEP_MALFORMED || ERR_peek_error() != 0) {
            printf("# prefix %zu: rc %d\n", i, rc);
            good = 0;
        }

        ngx_mdm_scep_msg_free(&msg);
    }

    ok(good, "all %zu truncations: MALFORMED", len);

    /* bit flips: every byte, one bit each, rotating */

    good = 1;
    refused = 0;
    malformed = 0;
    accepted = 0;

    for (i = 0; i < len; i++) {
        memcpy(copy, der, len);
        bits = i % 8;
        copy[i] ^= (unsigned char) (1 << bits);

        rc = ngx_mdm_scep_parse(ca, copy, len, &msg);

        if (!classified(rc, &msg)) {
            printf("# flip at %zu: rc %d reason %d\n", i, rc, msg.reason);
            good = 0;
        }

        refused += rc == NGX_MDM_SCEP_REFUSED;
        malformed += rc == NGX_MDM_SCEP_MALFORMED;
        accepted += rc == NGX_MDM_SCEP_OK;

        ngx_mdm_scep_msg_free(&msg);
    }

    ok(good && refused > 0 && malformed > 0,
       "%zu bit flips classified: %d MALFORMED, %d REFUSED, %d OK "
       "(unsigned parts)", len, malformed, refused, accepted);

    free(copy);
    OPENSSL_free(der);
    X509_REQ_free(csr);
}


static void
test_other_ca(ngx_mdm_scep_ca_t *ca, X509 *signer, EVP_PKEY *device_key)
{
    int                  rc;
    char                 tid[41];
    X509                *other;
    size_t               len;
    X509_REQ            *csr;
    EVP_PKEY            *other_key;
    unsigned char        nonce[16], *der;
    ngx_mdm_scep_msg_t   msg;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));
    other_key = rsa_key(2048);
    other = make_ca(other_key, "Other CA");
    csr = ngx_mdm_scep_client_csr(device_key, "device-1", "x", NULL);

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, other, csr,
                      NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc, tid,
                      nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    ok(rc == NGX_MDM_SCEP_REFUSED && msg.reason == NGX_MDM_SCEP_E_RECIPIENT
       && msg.fail_info == NGX_MDM_SCEP_BAD_MESSAGE_CHECK
       && strcmp(msg.transaction_id, tid) == 0 && msg.signer != NULL
       && ERR_peek_error() == 0,
       "encrypted to another CA: FAILURE badMessageCheck (%s)",
       msg.error ? msg.error : "ok");

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_free(other);

    /* same issuer name and serial as our CA, another key */

    other = make_ca(other_key, "nginx-mdm test CA");

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, other, csr,
                      NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc, tid,
                      nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(ca, der, len, &msg) : rc;

    /*
     * A wrong RSA key gives OpenSSL's random content key (implicit
     * rejection): the CBC padding then fails, or, about once in 256 runs,
     * passes and the garbage fails as messageData.  Refused either way.
     */

    ok(rc == NGX_MDM_SCEP_REFUSED
       && ((msg.reason == NGX_MDM_SCEP_E_DECRYPT
            && msg.fail_info == NGX_MDM_SCEP_BAD_MESSAGE_CHECK)
           || (msg.reason == NGX_MDM_SCEP_E_MESSAGE_DATA
               && msg.fail_info == NGX_MDM_SCEP_BAD_REQUEST))
       && ERR_peek_error() == 0,
       "addressed to our name and serial, another key: refused (%s)",
       msg.error ? msg.error : "ok");

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    X509_REQ_free(csr);
    X509_free(other);
    EVP_PKEY_free(other_key);
}


static void
test_ra(ngx_mdm_scep_ca_t *ca, EVP_PKEY *device_key)
{
    int                   rc;
    char                  tid[41];
    X509                 *ra_cert, *signer, *cert;
    size_t                len, rep_len;
    PKCS7                *p7;
    X509_REQ             *csr;
    EVP_PKEY             *ra_key;
    const char           *err;
    unsigned char         nonce[16], *der, *rep_der;
    const unsigned char  *p;
    ngx_mdm_scep_ca_t     ra;
    ngx_mdm_scep_msg_t    msg, rmsg;
    ngx_mdm_scep_reply_t  rep;
    ngx_mdm_scep_issue_t  iss;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));

    /* an RA certificate issued by the CA: keyEncipherment for RSA keys */

    ra_key = rsa_key(2048);
    csr = ngx_mdm_scep_client_csr(ra_key, "SCEP RA", NULL, NULL);
    memset(&iss, 0, sizeof(iss));
    iss.serial.value = 2;
    iss.validity = YEAR;
    ra_cert = NULL;
    ngx_mdm_scep_issue(ca, csr, &iss, &ra_cert, &err);
    X509_REQ_free(csr);

    memset(&ra, 0, sizeof(ra));
    ra.cert = ca->cert;
    ra.key = ca->key;
    ra.ra_cert = ra_cert;
    ra.ra_key = ra_key;

    ok(ngx_mdm_scep_ca_init(&ra, &err) == NGX_MDM_SCEP_OK
       && ra.signer_cert == ra_cert,
       "RA configured: CA signs certificates, RA signs CertReps");

    signer = ngx_mdm_scep_client_signer(device_key, "MDM SCEP SIGNER", YEAR);
    csr = ngx_mdm_scep_client_csr(device_key, "device-ra", "x", NULL);

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ra_cert, csr,
                      NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc, tid,
                      nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(&ra, der, len, &msg) : rc;
    ok(rc == NGX_MDM_SCEP_OK, "RA: request encrypted to the RA opens");

    iss.serial.value = 3;
    cert = NULL;
    rc = msg.csr ? ngx_mdm_scep_issue(&ra, msg.csr, &iss, &cert, &err)
                 : NGX_MDM_SCEP_ERROR;

    ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
    rep.cert = cert;
    rep_der = NULL;
    rep_len = 0;
    rc = rc == NGX_MDM_SCEP_OK
         ? ngx_mdm_scep_certrep(&ra, &rep, &rep_der, &rep_len) : rc;

    ok(rc == NGX_MDM_SCEP_OK
       && ngx_mdm_scep_client_parse(rep_der, rep_len, ra_cert, signer,
                                    device_key, &rmsg) == NGX_MDM_SCEP_OK
       && has_cert(rmsg.certs, cert)
       && X509_check_issued(ca->cert, cert) == X509_V_OK,
       "RA: CertRep signed by the RA, certificate issued by the CA");
    ngx_mdm_scep_msg_free(&rmsg);

    rc = ngx_mdm_scep_client_parse(rep_der, rep_len, ca->cert, signer,
                                   device_key, &rmsg);
    ok(rc == NGX_MDM_SCEP_REFUSED
       && rmsg.reason == NGX_MDM_SCEP_E_SIGNER_CERT,
       "RA: the device refuses a CertRep not signed by the expected "
       "certificate");
    ngx_mdm_scep_msg_free(&rmsg);

    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);
    OPENSSL_free(rep_der);

    /* still opens envelopes addressed to the CA */

    rc = make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert,
                      csr, NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc,
                      tid, nonce, sizeof(nonce), &der, &len);
    rc = rc == NGX_MDM_SCEP_OK ? ngx_mdm_scep_parse(&ra, der, len, &msg) : rc;
    ok(rc == NGX_MDM_SCEP_OK, "RA: a request encrypted to the CA opens too");
    ngx_mdm_scep_msg_free(&msg);
    OPENSSL_free(der);

    /* GetCACert */

    rc = ngx_mdm_scep_ca_certs(&ra, &der, &len);
    p = der;
    p7 = rc == NGX_MDM_SCEP_OK ? d2i_PKCS7(NULL, &p, (long) len) : NULL;

    ok(p7 != NULL && p == der + len && PKCS7_type_is_signed(p7)
       && sk_X509_num(p7->d.sign->cert) == 2
       && X509_cmp(sk_X509_value(p7->d.sign->cert, 0), ca->cert) == 0
       && X509_cmp(sk_X509_value(p7->d.sign->cert, 1), ra_cert) == 0
       && sk_PKCS7_SIGNER_INFO_num(p7->d.sign->signer_info) == 0
       && p7->d.sign->contents->d.ptr == NULL,
       "GetCACert: degenerate certs-only SignedData with CA and RA");

    PKCS7_free(p7);
    OPENSSL_free(der);
    X509_REQ_free(csr);
    X509_free(cert);
    X509_free(signer);
    X509_free(ra_cert);
    EVP_PKEY_free(ra_key);
}


static void
test_vectors(ngx_mdm_scep_ca_t *ca, X509 *signer, EVP_PKEY *device_key)
{
    int                 rc;
    X509               *ra2, *mm_ca;
    size_t              i, len;
    unsigned char      *der;
    ngx_mdm_scep_msg_t  msg;

    /* Apple mdmclient PKCSReq sent to an NDES CA whose key is not public */

    der = read_file("scep/commandment_mdmclient-PKIOperation.der", &len);
    ok(der != NULL, "vector: commandment_mdmclient-PKIOperation.der read");

    if (der != NULL) {
        char  subj[128];

        rc = ngx_mdm_scep_parse(ca, der, len, &msg);

        ok(rc == NGX_MDM_SCEP_REFUSED
           && msg.reason == NGX_MDM_SCEP_E_RECIPIENT
           && msg.fail_info == NGX_MDM_SCEP_BAD_MESSAGE_CHECK,
           "vector: signature verifies, envelope is for another CA (%s)",
           msg.error ? msg.error : "ok");

        for (i = 0; i < msg.transaction_id_len; i++) {
            if (!strchr("0123456789ABCDEFabcdef", msg.transaction_id[i])) {
                break;
            }
        }

        ok(msg.message_type == NGX_MDM_SCEP_PKCS_REQ
           && msg.sender_nonce_len == 8
           && msg.transaction_id_len == 40 && i == 40
           && msg.digest_nid == NID_sha512
           && msg.cipher_nid == NID_des_ede3_cbc,
           "vector: messageType 19, 8-byte nonce, 40-hex transactionID %s, "
           "SHA-512, 3DES", msg.transaction_id);

        ok(msg.signer != NULL
           && ngx_mdm_scep_name_string(X509_get_subject_name(msg.signer),
                                       subj, sizeof(subj)) > 0
           && strcmp(subj, "C=AU,CN=MDM SCEP SIGNER") == 0
           && msg.signing_time == 1491445730,
           "vector: signer %s, signingTime", subj);

        ngx_mdm_scep_msg_free(&msg);
        free(der);
    }

    /* micromdm/scep CertRep: no senderNonce, SHA-1, signed by its CA */

    der = read_file("scep/micromdm-scep_CertRep.der", &len);
    mm_ca = read_cert("scep/micromdm-scep_testca_ca.pem");

    if (der != NULL && mm_ca != NULL) {
        rc = ngx_mdm_scep_client_parse(der, len, mm_ca, signer, device_key,
                                       &msg);
        ok(rc == NGX_MDM_SCEP_REFUSED
           && msg.reason == NGX_MDM_SCEP_E_RECIPIENT
           && msg.pki_status == NGX_MDM_SCEP_SUCCESS
           && msg.digest_nid == NID_sha1 && msg.sender_nonce_len == 0,
           "vector: micromdm CertRep verifies, SUCCESS, envelope for the "
           "device (%s)", msg.error ? msg.error : "ok");
        ngx_mdm_scep_msg_free(&msg);

    } else {
        ok(0, "vector: micromdm CertRep read");
    }

    /* NDES CertRep without the signer certificate embedded */

    free(der);
    der = read_file("scep/micromdm-scep_testca2_CertRep_"
                    "NoCertificatesForSigners.der", &len);
    ra2 = read_cert("scep/micromdm-scep_testca2_ca2.pem");

    if (der != NULL && ra2 != NULL) {
        rc = ngx_mdm_scep_client_parse(der, len, ra2, signer, device_key,
                                       &msg);
        ok(rc == NGX_MDM_SCEP_REFUSED
           && msg.reason == NGX_MDM_SCEP_E_RECIPIENT
           && msg.pki_status == NGX_MDM_SCEP_SUCCESS,
           "vector: NDES CertRep verifies with the RA given out of band");
        ngx_mdm_scep_msg_free(&msg);

        rc = ngx_mdm_scep_client_parse(der, len, mm_ca, signer, device_key,
                                       &msg);
        ok(rc == NGX_MDM_SCEP_REFUSED
           && msg.reason == NGX_MDM_SCEP_E_SIGNER_CERT,
           "vector: NDES CertRep with the wrong signer: refused");
        ngx_mdm_scep_msg_free(&msg);

        rc = ngx_mdm_scep_parse(ca, der, len, &msg);
        ok(rc == NGX_MDM_SCEP_REFUSED
           && msg.reason == NGX_MDM_SCEP_E_MESSAGE_TYPE,
           "vector: NDES CertRep sent to the server: FAILURE badRequest");
        ngx_mdm_scep_msg_free(&msg);

    } else {
        ok(0, "vector: NDES CertRep read");
    }

    free(der);
    X509_free(ra2);
    X509_free(mm_ca);
}


static void
test_helpers(void)
{
    char           buf[8], hex[16], dec[16], name[64];
    X509_NAME     *xn;
    ASN1_INTEGER  *ai;

    ai = ASN1_INTEGER_new();
    ASN1_INTEGER_set_uint64(ai, 0x010203ff);

    ok(ngx_mdm_scep_serial_hex(ai, buf, sizeof(buf)) == 0
       && ngx_mdm_scep_serial_dec(ai, buf, sizeof(buf)) == 0,
       "serial hex and decimal refuse a short buffer");

    ok(ngx_mdm_scep_serial_hex(ai, hex, sizeof(hex)) == 8
       && strcmp(hex, "010203ff") == 0
       && ngx_mdm_scep_serial_dec(ai, dec, sizeof(dec)) == 8
       && strcmp(dec, "16909311") == 0,
       "serial 010203ff / 16909311 (core's format: lowercase)");

    ASN1_INTEGER_free(ai);

    xn = X509_NAME_new();
    X509_NAME_add_entry_by_txt(xn, "O", MBSTRING_UTF8,
                               (const unsigned char *) "Acme, Inc", -1, -1, 0);
    X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "Ger\xc3\xa4t", -1, -1,
                               0);

    ok(ngx_mdm_scep_name_string(xn, name, sizeof(name)) > 0
       && strcmp(name, "CN=Ger\xc3\xa4t,O=Acme\\, Inc") == 0
       && ngx_mdm_scep_name_string(xn, name, 8) == 0,
       "name: RFC 2253, UTF-8 kept, short buffer refused (%s)", name);

    X509_NAME_free(xn);
}


static void
test_speed(ngx_mdm_scep_ca_t *ca, EVP_PKEY *device_key)
{
    int                   i, n, rc;
    char                  tid[41];
    X509                 *signer, *cert;
    double                secs;
    size_t                len, rep_len;
    X509_REQ             *csr;
    const char           *err;
    unsigned char         nonce[8], *der, *rep_der;
    struct timeval        t0, t1;
    ngx_mdm_scep_msg_t    msg;
    ngx_mdm_scep_reply_t  rep;
    ngx_mdm_scep_issue_t  iss;

    random_tid(tid);
    RAND_bytes(nonce, sizeof(nonce));
    signer = ngx_mdm_scep_client_signer(device_key, "MDM SCEP SIGNER", YEAR);
    csr = ngx_mdm_scep_client_csr(device_key, "device-1", "x", NULL);

    make_request(NGX_MDM_SCEP_PKCS_REQ, signer, device_key, ca->cert, csr,
                 NULL, NULL, NULL, NID_sha256, NID_aes_128_cbc, tid, nonce,
                 sizeof(nonce), &der, &len);

    memset(&iss, 0, sizeof(iss));
    iss.validity = YEAR;
    iss.backdate = 600;

    n = 200;
    rc = NGX_MDM_SCEP_OK;
    gettimeofday(&t0, NULL);

    for (i = 0; i < n && rc == NGX_MDM_SCEP_OK; i++) {
        rc = ngx_mdm_scep_parse(ca, der, len, &msg);

        iss.serial.value = 1000000 + i;
        cert = NULL;
        rc = rc == NGX_MDM_SCEP_OK
             ? ngx_mdm_scep_issue(ca, msg.csr, &iss, &cert, &err) : rc;

        ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
        rep.cert = cert;
        rc = rc == NGX_MDM_SCEP_OK
             ? ngx_mdm_scep_certrep(ca, &rep, &rep_der, &rep_len) : rc;

        if (rc == NGX_MDM_SCEP_OK) {
            OPENSSL_free(rep_der);
        }

        X509_free(cert);
        ngx_mdm_scep_msg_free(&msg);
    }

    gettimeofday(&t1, NULL);
    secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_usec - t0.tv_usec) / 1e6;

    ok(rc == NGX_MDM_SCEP_OK,
       "%d full PKCSReq exchanges (RSA-2048 CA): %.0f/s on one core", n,
       n / secs);

    OPENSSL_free(der);
    X509_REQ_free(csr);
    X509_free(signer);
}


int
main(void)
{
    int                 rc;
    X509               *ca_cert, *issued, *signer, *mm_cert;
    EVP_PKEY           *ca_key, *rsa_dev, *ec_dev, *mm_key;
    const char         *err;
    round_trip_t        t;
    ngx_mdm_scep_ca_t   ca, mm, bad;

    vectors = getenv("MDM_VECTORS");
    if (vectors == NULL) {
        vectors = "../shared/vectors";
    }

    ok(ngx_mdm_scep_init() == NGX_MDM_SCEP_OK, "init");

    ca_key = rsa_key(2048);
    ca_cert = make_ca(ca_key, "nginx-mdm test CA");
    rsa_dev = rsa_key(2048);
    ec_dev = ec_key("P-256");

    memset(&ca, 0, sizeof(ca));
    ca.cert = ca_cert;
    ca.key = ca_key;
    ok(ngx_mdm_scep_ca_init(&ca, &err) == NGX_MDM_SCEP_OK
       && ca.signer_cert == ca_cert && ca.key_id_len == 20,
       "CA (RSA-2048) initialised");

    memset(&bad, 0, sizeof(bad));
    bad.cert = ca_cert;
    bad.key = rsa_dev;
    err = "";
    rc = ngx_mdm_scep_ca_init(&bad, &err);
    ok(rc == NGX_MDM_SCEP_ERROR, "CA with the wrong key refused: %s", err);
    ERR_clear_error();

    memset(&t, 0, sizeof(t));
    t.label = "RSA-2048 device, SHA-256 + AES-128";
    t.ca = &ca;
    t.device_key = rsa_dev;
    t.digest_nid = NID_sha256;
    t.cipher_nid = NID_aes_128_cbc;
    t.reply_cipher_nid = NID_aes_128_cbc;
    t.serial = 1001;
    signer = NULL;
    issued = round_trip(&t, &signer);

    t.label = "EC P-256 device, SHA-1 + 3DES";
    t.device_key = ec_dev;
    t.digest_nid = NID_sha1;
    t.cipher_nid = NID_des_ede3_cbc;
    t.reply_cipher_nid = NID_des_ede3_cbc;
    t.serial = 1002;
    X509_free(round_trip(&t, NULL));

    t.label = "RSA-2048 device, SHA-512 + AES-256";
    t.device_key = rsa_dev;
    t.digest_nid = NID_sha512;
    t.cipher_nid = NID_aes_256_cbc;
    t.reply_cipher_nid = NID_aes_128_cbc;
    t.serial = 0xfedcba9876543210ULL;
    X509_free(round_trip(&t, NULL));

    /* the micromdm/scep test CA: RSA-4096, key encrypted with "" */

    mm_cert = read_cert("scep/micromdm-scep_testca_ca.pem");
    mm_key = read_key("scep/micromdm-scep_testca_ca.key.pem", "");

    memset(&mm, 0, sizeof(mm));
    mm.cert = mm_cert;
    mm.key = mm_key;
    ok(mm_cert != NULL && mm_key != NULL
       && EVP_PKEY_get_bits(mm_key) == 4096
       && ngx_mdm_scep_ca_init(&mm, &err) == NGX_MDM_SCEP_OK,
       "micromdm test CA (RSA-4096) and its key (empty passphrase) load");
    ERR_clear_error();

    if (mm_key != NULL) {
        t.label = "micromdm CA, RSA device, SHA-256 + 3DES";
        t.ca = &mm;
        t.digest_nid = NID_sha256;
        t.cipher_nid = NID_des_ede3_cbc;
        t.reply_cipher_nid = NID_des_ede3_cbc;
        t.serial = 77;
        /* that CA expired on 2026-05-29: check the chain, not the dates */
        t.verify_flags = X509_V_FLAG_NO_CHECK_TIME;
        X509_free(round_trip(&t, NULL));
    }

    if (issued != NULL) {
        test_renewal(&ca, issued, rsa_dev);
        test_get_cert_crl(&ca, issued, signer, rsa_dev);
    }

    test_helpers();

    test_failure_pending(&ca, signer, rsa_dev);
    test_csr_rsa(&ca, signer, rsa_dev);
    test_bad_csrs(&ca, signer, rsa_dev);
    test_hostile(&ca, signer, rsa_dev);
    test_other_ca(&ca, signer, rsa_dev);
    test_ra(&ca, rsa_dev);
    test_vectors(&ca, signer, rsa_dev);
    test_speed(&ca, rsa_dev);

    X509_free(issued);
    X509_free(signer);
    X509_free(ca_cert);
    X509_free(mm_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(mm_key);
    EVP_PKEY_free(rsa_dev);
    EVP_PKEY_free(ec_dev);

    printf("1..%d\n", test_n);

    return test_failed ? 1 : 0;
}
