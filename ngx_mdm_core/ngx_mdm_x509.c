
/*
 * nginx-mdm: X.509 helpers (see ngx_mdm_x509.h): loading, certificate
 * facts, client certificate forms, the verifier.  CMS is in
 * ngx_mdm_cms.c.
 */


#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_x509_int.h"


#define NGX_MDM_PEM_BEGIN    "-----BEGIN CERTIFICATE-----"
#define NGX_MDM_PEM_END      "-----END CERTIFICATE-----"


struct ngx_mdm_x509_verifier_s {
    X509_STORE                *store;
    X509_STORE_CTX            *ctx;
    unsigned                   flags;
};


typedef struct {
    time_t                     now;
    time_t                     grace;
    ngx_mdm_x509_rc_e          rc;
    int                        error;
    int                        depth;
    unsigned                   in_grace:1;
    unsigned                   failed:1;
} ngx_mdm_x509_verify_state_t;


typedef struct {
    const char                *passphrase;
    unsigned                   asked:1;
} ngx_mdm_x509_pass_t;


static int ngx_mdm_x509_pass_cb(char *buf, int size, int rwflag, void *data);
static BIO *ngx_mdm_x509_mem_bio(const char *pem, size_t len,
    const char *what);
static X509 *ngx_mdm_x509_read_cert(BIO *bio, const char *what);
static STACK_OF(X509) *ngx_mdm_x509_read_chain(BIO *bio, const char *what);
static EVP_PKEY *ngx_mdm_x509_read_key(BIO *bio, const char *passphrase,
    const char *what);
static int ngx_mdm_x509_time(const ASN1_TIME *at, time_t *t);
static void ngx_mdm_x509_hex(const unsigned char *in, size_t len, char *out);
static int ngx_mdm_x509_base64_value(unsigned c, unsigned flags);
static int ngx_mdm_x509_hex_value(unsigned c);
static int ngx_mdm_x509_percent_decode(const unsigned char *in, size_t len,
    unsigned char *out, size_t *out_len);
static const unsigned char *ngx_mdm_x509_find(const unsigned char *p,
    const unsigned char *last, const char *s);
static int ngx_mdm_x509_is_space(unsigned c);
static int ngx_mdm_x509_pem_decode(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len);
static int ngx_mdm_x509_rfc9440_decode(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len);
static ngx_mdm_x509_form_e ngx_mdm_x509_guess_form(const unsigned char *in,
    size_t len);
static X509 *ngx_mdm_x509_from_der(const unsigned char *der, size_t len);
static int ngx_mdm_x509_verify_cb(int ok, X509_STORE_CTX *ctx);


static char  ngx_mdm_x509_errstr[256];


static const char  *ngx_mdm_x509_rc_strs[] = {
    "ok",
    "ok, expired within the grace period",
    "untrusted certificate chain",
    "certificate expired",
    "certificate not yet valid",
    "malformed input",
    "bad signature",
    "no signer certificate",
    "no UID in subject",
    "UID is not a com.apple.mgmt. topic",
    "private key does not match certificate",
    "internal error"
};


/* errors */

const char *
ngx_mdm_x509_rc_str(ngx_mdm_x509_rc_e rc)
{
    if ((unsigned) rc
        >= sizeof(ngx_mdm_x509_rc_strs) / sizeof(ngx_mdm_x509_rc_strs[0]))
    {
        return "unknown result";
    }

    return ngx_mdm_x509_rc_strs[rc];
}


const char *
ngx_mdm_x509_error(void)
{
    return ngx_mdm_x509_errstr;
}


void
ngx_mdm_x509_free(void *p)
{
    OPENSSL_free(p);
}


void
ngx_mdm_x509_chain_free(STACK_OF(X509) *chain)
{
    if (chain != NULL) {
        sk_X509_pop_free(chain, X509_free);
    }
}


/*
 * Formats the reason, appends the newest OpenSSL error if any, and
 * empties the OpenSSL error queue so that nginx's next SSL call does not
 * see our leftovers.
 */

void
ngx_mdm_x509_set_error(const char *fmt, ...)
{
    int            n;
    size_t         len;
    va_list        args;
    const char    *lib, *reason;
    unsigned long  e;

    va_start(args, fmt);
    n = vsnprintf(ngx_mdm_x509_errstr, sizeof(ngx_mdm_x509_errstr), fmt,
                  args);
    va_end(args);

    len = (n < 0) ? 0 : (size_t) n;
    if (len >= sizeof(ngx_mdm_x509_errstr)) {
        len = sizeof(ngx_mdm_x509_errstr) - 1;
    }

    e = ERR_peek_last_error();

    if (e != 0) {
        lib = ERR_lib_error_string(e);
        reason = ERR_reason_error_string(e);

        snprintf(ngx_mdm_x509_errstr + len, sizeof(ngx_mdm_x509_errstr) - len,
                 " (%s: %s)", lib ? lib : "OpenSSL",
                 reason ? reason : "unknown error");
    }

    ERR_clear_error();
}


/* loading */

static int
ngx_mdm_x509_pass_cb(char *buf, int size, int rwflag, void *data)
{
    size_t                len;
    ngx_mdm_x509_pass_t  *pw;

    pw = data;
    pw->asked = 1;

    /* never fall back to a terminal prompt */

    if (pw->passphrase == NULL || size <= 0) {
        return -1;
    }

    len = strlen(pw->passphrase);
    if (len > (size_t) size) {
        return -1;
    }

    memcpy(buf, pw->passphrase, len);

    return (int) len;
}


static BIO *
ngx_mdm_x509_mem_bio(const char *pem, size_t len, const char *what)
{
    BIO  *bio;

    if (pem == NULL || len == 0 || len > NGX_MDM_X509_LEN_MAX) {
        ngx_mdm_x509_set_error("%s: empty or too large", what);
        return NULL;
    }

    bio = BIO_new_mem_buf(pem, (int) len);
    if (bio == NULL) {
        ngx_mdm_x509_set_error("%s: BIO_new_mem_buf() failed", what);
    }

    return bio;
}


static X509 *
ngx_mdm_x509_read_cert(BIO *bio, const char *what)
{
    X509                 *x;
    ngx_mdm_x509_pass_t   pw;

    pw.passphrase = NULL;
    pw.asked = 0;

    x = PEM_read_bio_X509(bio, NULL, ngx_mdm_x509_pass_cb, &pw);
    if (x == NULL) {
        ngx_mdm_x509_set_error("%s: no PEM certificate", what);
        return NULL;
    }

    ERR_clear_error();

    return x;
}


static STACK_OF(X509) *
ngx_mdm_x509_read_chain(BIO *bio, const char *what)
{
    X509                 *x;
    unsigned long         e;
    STACK_OF(X509)       *chain;
    ngx_mdm_x509_pass_t   pw;

    pw.passphrase = NULL;
    pw.asked = 0;

    chain = sk_X509_new_null();
    if (chain == NULL) {
        ngx_mdm_x509_set_error("%s: sk_X509_new_null() failed", what);
        return NULL;
    }

    for ( ;; ) {
        x = PEM_read_bio_X509(bio, NULL, ngx_mdm_x509_pass_cb, &pw);
        if (x == NULL) {
            break;
        }

        if (!sk_X509_push(chain, x)) {
            X509_free(x);
            ngx_mdm_x509_set_error("%s: sk_X509_push() failed", what);
            goto failed;
        }
    }

    /* the end of the input shows as "no start line" */

    e = ERR_peek_last_error();

    if (sk_X509_num(chain) > 0
        && ERR_GET_LIB(e) == ERR_LIB_PEM
        && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
    {
        ERR_clear_error();
        return chain;
    }

    if (sk_X509_num(chain) == 0) {
        ngx_mdm_x509_set_error("%s: no PEM certificate", what);

    } else {
        ngx_mdm_x509_set_error("%s: bad PEM certificate after #%d", what,
                               sk_X509_num(chain));
    }

failed:

    sk_X509_pop_free(chain, X509_free);

    return NULL;
}


static EVP_PKEY *
ngx_mdm_x509_read_key(BIO *bio, const char *passphrase, const char *what)
{
    EVP_PKEY             *key;
    ngx_mdm_x509_pass_t   pw;

    pw.passphrase = passphrase;
    pw.asked = 0;

    key = PEM_read_bio_PrivateKey(bio, NULL, ngx_mdm_x509_pass_cb, &pw);

    if (key == NULL) {
        if (pw.asked && passphrase == NULL) {
            ngx_mdm_x509_set_error("%s: private key is encrypted and no "
                                   "passphrase is configured", what);

        } else if (pw.asked) {
            ngx_mdm_x509_set_error("%s: cannot decrypt private key, "
                                   "wrong passphrase?", what);

        } else {
            ngx_mdm_x509_set_error("%s: no PEM private key", what);
        }

        return NULL;
    }

    ERR_clear_error();

    return key;
}


X509 *
ngx_mdm_x509_load_cert(const char *path)
{
    BIO   *bio;
    X509  *x;

    bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ngx_mdm_x509_set_error("cannot open \"%s\"", path);
        return NULL;
    }

    x = ngx_mdm_x509_read_cert(bio, path);

    BIO_free(bio);

    return x;
}


STACK_OF(X509) *
ngx_mdm_x509_load_chain(const char *path)
{
    BIO             *bio;
    STACK_OF(X509)  *chain;

    bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ngx_mdm_x509_set_error("cannot open \"%s\"", path);
        return NULL;
    }

    chain = ngx_mdm_x509_read_chain(bio, path);

    BIO_free(bio);

    return chain;
}


EVP_PKEY *
ngx_mdm_x509_load_key(const char *path, const char *passphrase)
{
    BIO       *bio;
    EVP_PKEY  *key;

    bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ngx_mdm_x509_set_error("cannot open \"%s\"", path);
        return NULL;
    }

    key = ngx_mdm_x509_read_key(bio, passphrase, path);

    BIO_free(bio);

    return key;
}


X509 *
ngx_mdm_x509_cert_from_pem(const char *pem, size_t len)
{
    BIO   *bio;
    X509  *x;

    bio = ngx_mdm_x509_mem_bio(pem, len, "certificate");
    if (bio == NULL) {
        return NULL;
    }

    x = ngx_mdm_x509_read_cert(bio, "certificate");

    BIO_free(bio);

    return x;
}


STACK_OF(X509) *
ngx_mdm_x509_chain_from_pem(const char *pem, size_t len)
{
    BIO             *bio;
    STACK_OF(X509)  *chain;

    bio = ngx_mdm_x509_mem_bio(pem, len, "certificate chain");
    if (bio == NULL) {
        return NULL;
    }

    chain = ngx_mdm_x509_read_chain(bio, "certificate chain");

    BIO_free(bio);

    return chain;
}


EVP_PKEY *
ngx_mdm_x509_key_from_pem(const char *pem, size_t len, const char *passphrase)
{
    BIO       *bio;
    EVP_PKEY  *key;

    bio = ngx_mdm_x509_mem_bio(pem, len, "private key");
    if (bio == NULL) {
        return NULL;
    }

    key = ngx_mdm_x509_read_key(bio, passphrase, "private key");

    BIO_free(bio);

    return key;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_key_matches(X509 *cert, EVP_PKEY *key)
{
    if (cert == NULL || key == NULL) {
        ngx_mdm_x509_set_error("no certificate or no key");
        return NGX_MDM_X509_ERROR;
    }

    if (X509_check_private_key(cert, key) != 1) {
        ngx_mdm_x509_set_error("private key does not match certificate");
        return NGX_MDM_X509_KEY_MISMATCH;
    }

    return NGX_MDM_X509_OK;
}


X509_STORE *
ngx_mdm_x509_store_create(STACK_OF(X509) *cas)
{
    int            i;
    X509_STORE    *store;
    unsigned long  e;

    if (cas == NULL || sk_X509_num(cas) == 0) {
        ngx_mdm_x509_set_error("no trusted certificate");
        return NULL;
    }

    store = X509_STORE_new();
    if (store == NULL) {
        ngx_mdm_x509_set_error("X509_STORE_new() failed");
        return NULL;
    }

    for (i = 0; i < sk_X509_num(cas); i++) {

        if (X509_STORE_add_cert(store, sk_X509_value(cas, i)) == 1) {
            continue;
        }

        /* a duplicate in the list is harmless */

        e = ERR_peek_last_error();

        if (ERR_GET_LIB(e) == ERR_LIB_X509
            && ERR_GET_REASON(e) == X509_R_CERT_ALREADY_IN_HASH_TABLE)
        {
            ERR_clear_error();
            continue;
        }

        ngx_mdm_x509_set_error("X509_STORE_add_cert() failed");
        X509_STORE_free(store);
        return NULL;
    }

    return store;
}


/* facts */

static int
ngx_mdm_x509_time(const ASN1_TIME *at, time_t *t)
{
    long       y, m, era, yoe, doy, doe, days;
    struct tm  tm;

    if (at == NULL || ASN1_TIME_to_tm(at, &tm) != 1) {
        return -1;
    }

    /* days since 1970-01-01 in the proleptic Gregorian calendar */

    y = (long) tm.tm_year + 1900;
    m = (long) tm.tm_mon + 1;

    if (m <= 2) {
        y--;
    }

    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + tm.tm_mday - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = era * 146097 + doe - 719468;

    *t = (time_t) days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60
         + tm.tm_sec;

    return 0;
}


static void
ngx_mdm_x509_hex(const unsigned char *in, size_t len, char *out)
{
    size_t             i;
    static const char  hex[] = "0123456789abcdef";

    for (i = 0; i < len; i++) {
        *out++ = hex[in[i] >> 4];
        *out++ = hex[in[i] & 0x0f];
    }

    *out = '\0';
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_sha256(X509 *cert, unsigned char out[NGX_MDM_X509_SHA256_LEN])
{
    unsigned int  n;

    if (cert == NULL) {
        ngx_mdm_x509_set_error("no certificate");
        return NGX_MDM_X509_ERROR;
    }

    n = 0;

    if (X509_digest(cert, EVP_sha256(), out, &n) != 1
        || n != NGX_MDM_X509_SHA256_LEN)
    {
        ngx_mdm_x509_set_error("X509_digest() failed");
        return NGX_MDM_X509_ERROR;
    }

    return NGX_MDM_X509_OK;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_sha256_hex(X509 *cert, char out[NGX_MDM_X509_SHA256_HEX_LEN + 1])
{
    unsigned char      md[NGX_MDM_X509_SHA256_LEN];
    ngx_mdm_x509_rc_e  rc;

    rc = ngx_mdm_x509_sha256(cert, md);
    if (rc != NGX_MDM_X509_OK) {
        return rc;
    }

    ngx_mdm_x509_hex(md, sizeof(md), out);

    return NGX_MDM_X509_OK;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_serial_hex(X509 *cert, char *out, size_t size)
{
    int                    len, neg;
    const unsigned char   *data;
    const ASN1_INTEGER    *serial;
    static unsigned char   zero;

    if (cert == NULL || out == NULL) {
        ngx_mdm_x509_set_error("no certificate");
        return NGX_MDM_X509_ERROR;
    }

    serial = X509_get0_serialNumber(cert);
    len = ASN1_STRING_length(serial);
    data = ASN1_STRING_get0_data(serial);
    neg = (ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER);

    if (len <= 0 || data == NULL) {
        data = &zero;
        len = 1;
    }

    if ((size_t) neg + (size_t) len * 2 + 1 > size) {
        ngx_mdm_x509_set_error("serial number of %d octets is too long", len);
        return NGX_MDM_X509_ERROR;
    }

    if (neg) {
        *out++ = '-';
    }

    ngx_mdm_x509_hex(data, (size_t) len, out);

    return NGX_MDM_X509_OK;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_not_before(X509 *cert, time_t *t)
{
    if (cert == NULL || ngx_mdm_x509_time(X509_get0_notBefore(cert), t) != 0)
    {
        ngx_mdm_x509_set_error("unreadable notBefore");
        return NGX_MDM_X509_MALFORMED;
    }

    return NGX_MDM_X509_OK;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_not_after(X509 *cert, time_t *t)
{
    if (cert == NULL || ngx_mdm_x509_time(X509_get0_notAfter(cert), t) != 0)
    {
        ngx_mdm_x509_set_error("unreadable notAfter");
        return NGX_MDM_X509_MALFORMED;
    }

    return NGX_MDM_X509_OK;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_subject(X509 *cert, char *out, size_t size)
{
    BIO                *bio;
    long                n;
    char               *p;
    ngx_mdm_x509_rc_e   rc;

    if (cert == NULL || out == NULL || size == 0) {
        ngx_mdm_x509_set_error("no certificate");
        return NGX_MDM_X509_ERROR;
    }

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        ngx_mdm_x509_set_error("BIO_new() failed");
        return NGX_MDM_X509_ERROR;
    }

    rc = NGX_MDM_X509_OK;

    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB)
        < 0)
    {
        ngx_mdm_x509_set_error("unprintable subject");
        rc = NGX_MDM_X509_MALFORMED;
        goto done;
    }

    n = BIO_get_mem_data(bio, &p);

    if (n < 0 || (size_t) n >= size) {
        ngx_mdm_x509_set_error("subject of %ld bytes is too long", n);
        rc = NGX_MDM_X509_ERROR;
        goto done;
    }

    if (n > 0) {
        memcpy(out, p, (size_t) n);
    }

    out[n] = '\0';

done:

    BIO_free(bio);

    return rc;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_subject_uid(X509 *cert, char *out, size_t size)
{
    int                 i, n;
    X509_NAME          *name;
    ASN1_STRING        *value;
    unsigned char      *utf8;
    X509_NAME_ENTRY    *entry;

    if (cert == NULL || out == NULL || size == 0) {
        ngx_mdm_x509_set_error("no certificate");
        return NGX_MDM_X509_ERROR;
    }

    name = X509_get_subject_name(cert);

    i = X509_NAME_get_index_by_NID(name, NID_userId, -1);
    if (i < 0) {
        ngx_mdm_x509_set_error("no UID attribute in subject");
        return NGX_MDM_X509_NO_UID;
    }

    entry = X509_NAME_get_entry(name, i);
    value = X509_NAME_ENTRY_get_data(entry);

    utf8 = NULL;
    n = ASN1_STRING_to_UTF8(&utf8, value);

    if (n < 0 || utf8 == NULL) {
        ngx_mdm_x509_set_error("UID attribute is not text");
        return NGX_MDM_X509_MALFORMED;
    }

    if (memchr(utf8, '\0', (size_t) n) != NULL) {
        OPENSSL_free(utf8);
        ngx_mdm_x509_set_error("UID attribute holds a NUL");
        return NGX_MDM_X509_MALFORMED;
    }

    if ((size_t) n >= size) {
        OPENSSL_free(utf8);
        ngx_mdm_x509_set_error("UID of %d bytes is too long", n);
        return NGX_MDM_X509_ERROR;
    }

    memcpy(out, utf8, (size_t) n);
    out[n] = '\0';

    OPENSSL_free(utf8);

    return NGX_MDM_X509_OK;
}


/* client certificates */

static int
ngx_mdm_x509_base64_value(unsigned c, unsigned flags)
{
    if (c >= 'A' && c <= 'Z') {
        return (int) (c - 'A');
    }

    if (c >= 'a' && c <= 'z') {
        return (int) (c - 'a') + 26;
    }

    if (c >= '0' && c <= '9') {
        return (int) (c - '0') + 52;
    }

    if (flags & NGX_MDM_B64_STD) {
        if (c == '+') {
            return 62;
        }

        if (c == '/') {
            return 63;
        }
    }

    if (flags & NGX_MDM_B64_URL) {
        if (c == '-') {
            return 62;
        }

        if (c == '_') {
            return 63;
        }
    }

    return -1;
}


/*
 * RFC 4648 base64, padding optional (RFC 8941 asks parsers not to insist
 * on it), nothing but padding (and whitespace if allowed) after padding.
 */

int
ngx_mdm_x509_base64_decode(const unsigned char *in, size_t len,
    unsigned flags, unsigned char *out, size_t out_size, size_t *out_len)
{
    int       v;
    size_t    i, n, pad;
    unsigned  c, k;
    uint32_t  acc;

    n = 0;
    pad = 0;
    acc = 0;
    k = 0;

    for (i = 0; i < len; i++) {
        c = in[i];

        if ((flags & NGX_MDM_B64_WS)
            && (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
        {
            continue;
        }

        if (c == '=') {
            pad++;
            continue;
        }

        if (pad) {
            return -1;
        }

        v = ngx_mdm_x509_base64_value(c, flags);
        if (v < 0) {
            return -1;
        }

        acc = (acc << 6) | (uint32_t) v;

        if (++k < 4) {
            continue;
        }

        if (out_size - n < 3) {
            return -1;
        }

        out[n++] = (unsigned char) (acc >> 16);
        out[n++] = (unsigned char) (acc >> 8);
        out[n++] = (unsigned char) acc;

        acc = 0;
        k = 0;
    }

    switch (k) {

    case 0:
        if (pad != 0) {
            return -1;
        }
        break;

    case 2:
        if ((pad != 0 && pad != 2) || out_size - n < 1) {
            return -1;
        }

        out[n++] = (unsigned char) (acc >> 4);
        break;

    case 3:
        if ((pad != 0 && pad != 1) || out_size - n < 2) {
            return -1;
        }

        out[n++] = (unsigned char) (acc >> 10);
        out[n++] = (unsigned char) (acc >> 2);
        break;

    default: /* 1 */
        return -1;
    }

    *out_len = n;

    return 0;
}


static int
ngx_mdm_x509_hex_value(unsigned c)
{
    if (c >= '0' && c <= '9') {
        return (int) (c - '0');
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return (int) (c - 'a') + 10;
    }

    return -1;
}


/* "%XX" only: "+" stays "+", as in base64 */

static int
ngx_mdm_x509_percent_decode(const unsigned char *in, size_t len,
    unsigned char *out, size_t *out_len)
{
    int     hi, lo;
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {

        if (in[i] != '%') {
            out[n++] = in[i];
            continue;
        }

        if (len - i < 3) {
            return -1;
        }

        hi = ngx_mdm_x509_hex_value(in[i + 1]);
        lo = ngx_mdm_x509_hex_value(in[i + 2]);

        if (hi < 0 || lo < 0) {
            return -1;
        }

        out[n++] = (unsigned char) (hi << 4 | lo);
        i += 2;
    }

    *out_len = n;

    return 0;
}


static const unsigned char *
ngx_mdm_x509_find(const unsigned char *p, const unsigned char *last,
    const char *s)
{
    size_t  n;

    n = strlen(s);

    while ((size_t) (last - p) >= n) {
        if (memcmp(p, s, n) == 0) {
            return p;
        }

        p++;
    }

    return NULL;
}


static int
ngx_mdm_x509_is_space(unsigned c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}


/*
 * One "CERTIFICATE" PEM block and nothing else but whitespace; lines may
 * be indented (nginx's $ssl_client_cert) or joined by spaces.
 */

static int
ngx_mdm_x509_pem_decode(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len)
{
    const unsigned char  *p, *b64, *end, *last;

    last = in + len;

    if (ngx_mdm_x509_find(in, last, NGX_MDM_PEM_BEGIN) != in) {
        return -1;
    }

    b64 = in + sizeof(NGX_MDM_PEM_BEGIN) - 1;

    end = ngx_mdm_x509_find(b64, last, NGX_MDM_PEM_END);
    if (end == NULL) {
        return -1;
    }

    for (p = end + sizeof(NGX_MDM_PEM_END) - 1; p < last; p++) {
        if (!ngx_mdm_x509_is_space(*p)) {
            return -1;
        }
    }

    return ngx_mdm_x509_base64_decode(b64, (size_t) (end - b64),
                                      NGX_MDM_B64_STD|NGX_MDM_B64_WS,
                                      out, out_size, out_len);
}


/*
 * RFC 9440 Client-Cert: an RFC 8941 Item holding a Byte Sequence,
 * ":" base64 ":", possibly with parameters, which we ignore.
 */

static int
ngx_mdm_x509_rfc9440_decode(const unsigned char *in, size_t len,
    unsigned char *out, size_t out_size, size_t *out_len)
{
    const unsigned char  *p, *last;

    last = in + len;

    if (len < 2 || in[0] != ':') {
        return -1;
    }

    for (p = in + 1; p < last && *p != ':'; p++) {
        /* void */
    }

    if (p == last) {
        return -1;
    }

    if (p + 1 != last && p[1] != ';') {
        return -1;
    }

    return ngx_mdm_x509_base64_decode(in + 1, (size_t) (p - in - 1),
                                      NGX_MDM_B64_STD, out, out_size,
                                      out_len);
}


static ngx_mdm_x509_form_e
ngx_mdm_x509_guess_form(const unsigned char *in, size_t len)
{
    if (in[0] == ':') {
        return NGX_MDM_X509_FORM_RFC9440;
    }

    if (in[0] == '-' || in[0] == '%') {
        return memchr(in, '%', len) ? NGX_MDM_X509_FORM_ESCAPED_PEM
                                    : NGX_MDM_X509_FORM_PEM;
    }

    /* a DER SEQUENCE: "0" then a length octet no base64 text holds */

    if (len > 1 && in[0] == 0x30 && (in[1] & 0x80)) {
        return NGX_MDM_X509_FORM_DER;
    }

    return NGX_MDM_X509_FORM_BASE64_DER;
}


static X509 *
ngx_mdm_x509_from_der(const unsigned char *der, size_t len)
{
    X509                 *x;
    const unsigned char  *p;

    if (len == 0 || len > NGX_MDM_X509_LEN_MAX) {
        ngx_mdm_x509_set_error("empty or too large certificate");
        return NULL;
    }

    p = der;

    x = d2i_X509(NULL, &p, (long) len);
    if (x == NULL) {
        ngx_mdm_x509_set_error("not a DER certificate");
        return NULL;
    }

    if (p != der + len) {
        X509_free(x);
        ngx_mdm_x509_set_error("%zu bytes after the certificate",
                               (size_t) (der + len - p));
        return NULL;
    }

    return x;
}


X509 *
ngx_mdm_x509_client_cert(const unsigned char *in, size_t len,
    ngx_mdm_x509_form_e form)
{
    int             rc;
    X509           *x;
    size_t          n, m;
    unsigned char  *buf, *der;

    if (in == NULL) {
        len = 0;
    }

    if (form != NGX_MDM_X509_FORM_DER) {
        while (len && ngx_mdm_x509_is_space(in[0])) {
            in++;
            len--;
        }

        while (len && ngx_mdm_x509_is_space(in[len - 1])) {
            len--;
        }
    }

    if (len == 0) {
        ngx_mdm_x509_set_error("empty client certificate");
        return NULL;
    }

    if (len > NGX_MDM_X509_CLIENT_CERT_MAX) {
        ngx_mdm_x509_set_error("client certificate of %zu bytes is too large",
                               len);
        return NULL;
    }

    if (form == NGX_MDM_X509_FORM_AUTO) {
        form = ngx_mdm_x509_guess_form(in, len);
    }

    if (form == NGX_MDM_X509_FORM_DER) {
        return ngx_mdm_x509_from_der(in, len);
    }

    /* a percent-decoded copy and the DER, each no longer than the input */

    buf = malloc(2 * len);
    if (buf == NULL) {
        ngx_mdm_x509_set_error("malloc() failed");
        return NULL;
    }

    der = buf + len;
    n = 0;
    m = 0;

    switch (form) {

    case NGX_MDM_X509_FORM_PEM:
        rc = ngx_mdm_x509_pem_decode(in, len, der, len, &n);
        break;

    case NGX_MDM_X509_FORM_ESCAPED_PEM:
        rc = ngx_mdm_x509_percent_decode(in, len, buf, &m);
        if (rc == 0) {
            rc = ngx_mdm_x509_pem_decode(buf, m, der, len, &n);
        }
        break;

    case NGX_MDM_X509_FORM_RFC9440:
        rc = ngx_mdm_x509_rfc9440_decode(in, len, der, len, &n);
        break;

    case NGX_MDM_X509_FORM_BASE64_DER:
        rc = ngx_mdm_x509_base64_decode(in, len,
                                        NGX_MDM_B64_STD|NGX_MDM_B64_URL
                                        |NGX_MDM_B64_WS,
                                        der, len, &n);
        break;

    default:
        rc = -1;
        break;
    }

    if (rc != 0) {
        free(buf);
        ngx_mdm_x509_set_error("client certificate: bad encoding");
        return NULL;
    }

    x = ngx_mdm_x509_from_der(der, n);

    free(buf);

    return x;
}


/* verification */

ngx_mdm_x509_verifier_t *
ngx_mdm_x509_verifier_create(X509_STORE *store, unsigned flags)
{
    ngx_mdm_x509_verifier_t  *v;

    if (store == NULL) {
        ngx_mdm_x509_set_error("no trust store");
        return NULL;
    }

    v = calloc(1, sizeof(ngx_mdm_x509_verifier_t));
    if (v == NULL) {
        ngx_mdm_x509_set_error("calloc() failed");
        return NULL;
    }

    v->ctx = X509_STORE_CTX_new();
    if (v->ctx == NULL) {
        free(v);
        ngx_mdm_x509_set_error("X509_STORE_CTX_new() failed");
        return NULL;
    }

    if (X509_STORE_up_ref(store) != 1) {
        X509_STORE_CTX_free(v->ctx);
        free(v);
        ngx_mdm_x509_set_error("X509_STORE_up_ref() failed");
        return NULL;
    }

    v->store = store;
    v->flags = flags;

    return v;
}


void
ngx_mdm_x509_verifier_free(ngx_mdm_x509_verifier_t *v)
{
    if (v == NULL) {
        return;
    }

    X509_STORE_CTX_free(v->ctx);
    X509_STORE_free(v->store);
    free(v);
}


/*
 * Classifies the first failure; lets an expired leaf through while
 * within the grace window.
 */

static int
ngx_mdm_x509_verify_cb(int ok, X509_STORE_CTX *ctx)
{
    int                           error, depth;
    time_t                        not_after;
    ngx_mdm_x509_verify_state_t  *st;

    if (ok) {
        return 1;
    }

    st = X509_STORE_CTX_get_app_data(ctx);
    if (st == NULL) {
        return 0;
    }

    error = X509_STORE_CTX_get_error(ctx);
    depth = X509_STORE_CTX_get_error_depth(ctx);

    if (depth == 0 && error == X509_V_ERR_CERT_HAS_EXPIRED) {

        if (st->grace > 0
            && ngx_mdm_x509_time(
                   X509_get0_notAfter(X509_STORE_CTX_get_current_cert(ctx)),
                   &not_after)
               == 0
            && st->now - not_after <= st->grace)
        {
            st->in_grace = 1;
            return 1;
        }

        st->rc = NGX_MDM_X509_EXPIRED;

    } else if (depth == 0 && error == X509_V_ERR_CERT_NOT_YET_VALID) {
        st->rc = NGX_MDM_X509_NOT_YET_VALID;

    } else {
        st->rc = NGX_MDM_X509_UNTRUSTED;
    }

    if (!st->failed) {
        st->failed = 1;
        st->error = error;
        st->depth = depth;
    }

    return 0;
}


ngx_mdm_x509_rc_e
ngx_mdm_x509_verify(ngx_mdm_x509_verifier_t *v, X509 *cert,
    STACK_OF(X509) *untrusted, time_t now, time_t grace)
{
    int                          n, error;
    uint32_t                     xku;
    unsigned long                flags;
    ngx_mdm_x509_verify_state_t  st;

    if (v == NULL) {
        ngx_mdm_x509_set_error("no verifier");
        return NGX_MDM_X509_ERROR;
    }

    if (cert == NULL) {
        ngx_mdm_x509_set_error("no certificate");
        return NGX_MDM_X509_MALFORMED;
    }

    memset(&st, 0, sizeof(st));
    st.now = now ? now : time(NULL);
    st.grace = grace > 0 ? grace : 0;
    st.rc = NGX_MDM_X509_UNTRUSTED;

    if (X509_STORE_CTX_init(v->ctx, v->store, cert, untrusted) != 1) {
        ngx_mdm_x509_set_error("X509_STORE_CTX_init() failed");
        return NGX_MDM_X509_ERROR;
    }

    /* every certificate in the store is an anchor, CA or not */

    flags = X509_V_FLAG_PARTIAL_CHAIN;

    if (v->flags & NGX_MDM_X509_NO_CHECK_TIME) {
        flags |= X509_V_FLAG_NO_CHECK_TIME;

    } else {
        X509_STORE_CTX_set_time(v->ctx, 0, st.now);
    }

    X509_STORE_CTX_set_flags(v->ctx, flags);
    X509_STORE_CTX_set_verify_cb(v->ctx, ngx_mdm_x509_verify_cb);

    if (X509_STORE_CTX_set_app_data(v->ctx, &st) != 1) {
        X509_STORE_CTX_cleanup(v->ctx);
        ngx_mdm_x509_set_error("X509_STORE_CTX_set_app_data() failed");
        return NGX_MDM_X509_ERROR;
    }

    n = X509_verify_cert(v->ctx);
    error = X509_STORE_CTX_get_error(v->ctx);

    X509_STORE_CTX_cleanup(v->ctx);

    if (n != 1) {
        if (!st.failed) {
            /* failed without telling the callback: ours, not the cert's */
            ngx_mdm_x509_set_error("X509_verify_cert() failed: %s",
                                   X509_verify_cert_error_string(error));
            return NGX_MDM_X509_ERROR;
        }

        ngx_mdm_x509_set_error("%s at depth %d",
                               X509_verify_cert_error_string(st.error),
                               st.depth);
        return st.rc;
    }

    if (!(v->flags & NGX_MDM_X509_ANY_PURPOSE)) {

        /* UINT32_MAX: no extendedKeyUsage, any use allowed */

        xku = X509_get_extended_key_usage(cert);

        if (xku != UINT32_MAX && !(xku & (XKU_SSL_CLIENT|XKU_ANYEKU))) {
            ngx_mdm_x509_set_error("extended key usage lacks clientAuth");
            return NGX_MDM_X509_UNTRUSTED;
        }
    }

    ERR_clear_error();

    return st.in_grace ? NGX_MDM_X509_OK_IN_GRACE : NGX_MDM_X509_OK;
}


/* APNs */

ngx_mdm_x509_rc_e
ngx_mdm_x509_apns_topic(X509 *cert, char *topic, size_t size)
{
    ngx_mdm_x509_rc_e  rc;

    rc = ngx_mdm_x509_subject_uid(cert, topic, size);
    if (rc != NGX_MDM_X509_OK) {
        return rc;
    }

    if (strncmp(topic, NGX_MDM_APNS_TOPIC_PREFIX,
                sizeof(NGX_MDM_APNS_TOPIC_PREFIX) - 1)
        != 0)
    {
        ngx_mdm_x509_set_error("push certificate UID \"%.64s\" does not start "
                               "with \"" NGX_MDM_APNS_TOPIC_PREFIX "\"",
                               topic);
        return NGX_MDM_X509_WRONG_PREFIX;
    }

    return NGX_MDM_X509_OK;
}


time_t
ngx_mdm_x509_expires_in(X509 *cert, time_t now)
{
    time_t  not_after;

    if (ngx_mdm_x509_not_after(cert, &not_after) != NGX_MDM_X509_OK) {
        return -1;
    }

    return not_after - now;
}
