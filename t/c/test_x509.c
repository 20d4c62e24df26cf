/* sources: ngx_mdm_core/ngx_mdm_x509.c ngx_mdm_core/ngx_mdm_cms.c */

/*
 * Unit tests of the X.509/CMS helpers: real Apple captures from the shared
 * vectors, and a PKI made here with OpenSSL (no files needed).  TAP.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_x509.h"


#define DAY  86400

#define APPLE_CHAIN  "enroll/zentral_Apple_iPhone_Device_CA_Fullchain.pem"
#define SCEP_CA      "scep/micromdm-scep_testca_ca.pem"
#define SCEP_CA_KEY  "scep/micromdm-scep_testca_ca.key.pem"
#define DEP_CERT     "dep/petarov_dep_token_recipient.crt.pem"
#define DEP_KEY      "dep/petarov_dep_token_recipient.key.pem"
#define NOT_PEM      "enroll/commandment_dep_profile.xml"
#define PROFILE      "enroll/nanomdm_enroll.mobileconfig.plist"

#define NANOMDM_PUSH_SHA256                                                   \
    "21a714ede1cb5ccc5606e8a184e7c730088cc14f81dcb26c2b507ba542a2ec88"
#define NANOMDM_PUSH_TOPIC                                                    \
    "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
#define MOCK_PUSH_TOPIC                                                       \
    "com.apple.mgmt.External.18a16429-886b-41f1-9c30-2bd04ae4fc37"


typedef struct {
    const char      *name;
    EVP_PKEY        *key;
    X509            *cert;
} pki_t;


static int          tests;
static int          failed;
static const char  *vectors;
static char         tmpdir[] = "/tmp/test_x509.XXXXXX";
static time_t       now;
static long         serial = 1;


static void
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (!cond) {
        failed++;
    }

    printf("%sok %d - ", cond ? "" : "not ", tests);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");

    if (!cond) {
        printf("#   last error: %s\n", ngx_mdm_x509_error());
    }

    fflush(stdout);
}


static void
is_rc(ngx_mdm_x509_rc_e got, ngx_mdm_x509_rc_e want, const char *what)
{
    ok(got == want, "%s: %s", what, ngx_mdm_x509_rc_str(want));

    if (got != want) {
        printf("#   got: %s\n", ngx_mdm_x509_rc_str(got));
    }
}


static unsigned char *
read_file(const char *dir, const char *name, size_t *len)
{
    FILE           *f;
    long            n;
    char            path[1024];
    unsigned char  *buf;

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    f = fopen(path, "rb");
    if (f == NULL) {
        printf("# cannot open %s\n", path);
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc((size_t) n + 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n) {
        free(buf);
        fclose(f);
        return NULL;
    }

    buf[n] = '\0';
    fclose(f);

    *len = (size_t) n;

    return buf;
}


static char *
vector_path(const char *name)
{
    static char  path[1024];

    snprintf(path, sizeof(path), "%s/%s", vectors, name);

    return path;
}


static X509 *
load_vector_cert(const char *name)
{
    return ngx_mdm_x509_load_cert(vector_path(name));
}


static int
write_file(const char *path, const void *data, size_t len)
{
    FILE  *f;

    f = fopen(path, "wb");
    if (f == NULL) {
        return -1;
    }

    if (fwrite(data, 1, len, f) != len) {
        fclose(f);
        return -1;
    }

    return fclose(f);
}


static char *
base64(const unsigned char *in, size_t len)
{
    char  *out;

    out = malloc(4 * ((len + 2) / 3) + 1);
    if (out != NULL) {
        EVP_EncodeBlock((unsigned char *) out, in, (int) len);
    }

    return out;
}


/* base64url without padding, in place */

static void
to_base64url(char *s)
{
    char  *p;

    for (p = s; *p; p++) {
        if (*p == '+') {
            *p = '-';

        } else if (*p == '/') {
            *p = '_';

        } else if (*p == '=') {
            *p = '\0';
            break;
        }
    }
}


static unsigned char *
cert_der(X509 *x, size_t *len)
{
    int             n;
    unsigned char  *der;

    der = NULL;
    n = i2d_X509(x, &der);
    *len = n > 0 ? (size_t) n : 0;

    return der;
}


static char *
cert_pem(X509 *x)
{
    BIO   *bio;
    char  *p, *pem;
    long   n;

    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    n = BIO_get_mem_data(bio, &p);

    pem = malloc((size_t) n + 1);
    memcpy(pem, p, (size_t) n);
    pem[n] = '\0';

    BIO_free(bio);

    return pem;
}


static int
same_cert(X509 *a, X509 *b)
{
    char  ha[NGX_MDM_X509_SHA256_HEX_LEN + 1];
    char  hb[NGX_MDM_X509_SHA256_HEX_LEN + 1];

    if (a == NULL || b == NULL
        || ngx_mdm_x509_sha256_hex(a, ha) != NGX_MDM_X509_OK
        || ngx_mdm_x509_sha256_hex(b, hb) != NGX_MDM_X509_OK)
    {
        return 0;
    }

    return strcmp(ha, hb) == 0;
}


/* a small PKI */

static EVP_PKEY *
gen_key(int rsa)
{
    if (rsa) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    }

    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}


static int
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX       ctx;
    X509_EXTENSION  *ext;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);

    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) {
        return -1;
    }

    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);

    return 0;
}


/*
 * A certificate for "key" named cn, valid [nb, na], signed by issuer
 * (self-signed when NULL); ca makes it a CA; eku, when not NULL, adds an
 * extendedKeyUsage; uid, when not NULL, a subject UID.
 */

static pki_t
make_cert(const char *cn, int rsa, pki_t *issuer, time_t nb, time_t na,
    int ca, const char *eku, const char *uid)
{
    pki_t       p;
    X509_NAME  *name;

    p.name = cn;
    p.key = gen_key(rsa);
    p.cert = X509_new();

    X509_set_version(p.cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(p.cert), serial++);

    ASN1_TIME_set(X509_getm_notBefore(p.cert), nb);
    ASN1_TIME_set(X509_getm_notAfter(p.cert), na);

    name = X509_get_subject_name(p.cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                               (const unsigned char *) "nginx-mdm tests",
                               -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *) cn, -1, -1, 0);

    if (uid) {
        X509_NAME_add_entry_by_NID(name, NID_userId, MBSTRING_UTF8,
                                   (const unsigned char *) uid, -1, -1, 0);
    }

    X509_set_issuer_name(p.cert, issuer ? X509_get_subject_name(issuer->cert)
                                        : name);
    X509_set_pubkey(p.cert, p.key);

    if (ca) {
        add_ext(p.cert, issuer ? issuer->cert : p.cert,
                NID_basic_constraints, "critical,CA:TRUE");
        add_ext(p.cert, issuer ? issuer->cert : p.cert,
                NID_key_usage, "critical,keyCertSign,cRLSign");

    } else {
        add_ext(p.cert, issuer ? issuer->cert : p.cert,
                NID_basic_constraints, "CA:FALSE");
        add_ext(p.cert, issuer ? issuer->cert : p.cert,
                NID_key_usage, "critical,digitalSignature,keyEncipherment");
    }

    add_ext(p.cert, issuer ? issuer->cert : p.cert,
            NID_subject_key_identifier, "hash");

    if (eku) {
        add_ext(p.cert, issuer ? issuer->cert : p.cert,
                NID_ext_key_usage, eku);
    }

    X509_sign(p.cert, issuer ? issuer->key : p.key, EVP_sha256());

    return p;
}


static void
pki_free(pki_t *p)
{
    X509_free(p->cert);
    EVP_PKEY_free(p->key);
}


static STACK_OF(X509) *
chain_of(X509 *a, X509 *b)
{
    STACK_OF(X509)  *sk;

    sk = sk_X509_new_null();

    X509_up_ref(a);
    sk_X509_push(sk, a);

    if (b) {
        X509_up_ref(b);
        sk_X509_push(sk, b);
    }

    return sk;
}


static ngx_mdm_x509_verifier_t *
verifier_of(X509 *a, X509 *b, unsigned flags)
{
    X509_STORE               *store;
    STACK_OF(X509)           *cas;
    ngx_mdm_x509_verifier_t  *v;

    cas = chain_of(a, b);
    store = ngx_mdm_x509_store_create(cas);
    ngx_mdm_x509_chain_free(cas);

    v = ngx_mdm_x509_verifier_create(store, flags);
    X509_STORE_free(store);

    return v;
}


/* replaces the first "max" occurrences of "from" */

static int
patch(unsigned char *p, size_t len, const unsigned char *from,
    const unsigned char *to, size_t n, int max)
{
    int     count;
    size_t  i;

    count = 0;

    for (i = 0; i + n <= len && count < max; i++) {
        if (memcmp(p + i, from, n) == 0) {
            memcpy(p + i, to, n);
            count++;
        }
    }

    return count;
}


/* a CMS made with OpenSSL directly, as a device would */

static unsigned char *
device_sign(pki_t *p, const void *data, size_t len, unsigned flags,
    size_t *out_len)
{
    int               n;
    BIO              *bio;
    unsigned char    *der;
    CMS_ContentInfo  *cms;

    bio = BIO_new_mem_buf(len ? data : "", (int) len);
    cms = CMS_sign(p->cert, p->key, NULL, bio, flags|CMS_BINARY);
    BIO_free(bio);

    if (cms == NULL) {
        return NULL;
    }

    der = NULL;
    n = i2d_CMS_ContentInfo(cms, &der);
    CMS_ContentInfo_free(cms);

    *out_len = n > 0 ? (size_t) n : 0;

    return der;
}


/* tests */

static void
test_facts(void)
{
    X509           *x;
    char            buf[NGX_MDM_X509_SUBJECT_SIZE];
    char            hex[NGX_MDM_X509_SHA256_HEX_LEN + 1];
    time_t          t;
    unsigned char   md[NGX_MDM_X509_SHA256_LEN];

    x = load_vector_cert("apns/nanomdm_push.pem");
    ok(x != NULL, "load apns/nanomdm_push.pem");

    if (x == NULL) {
        return;
    }

    is_rc(ngx_mdm_x509_sha256_hex(x, hex), NGX_MDM_X509_OK, "sha256 hex");
    ok(strcmp(hex, NANOMDM_PUSH_SHA256) == 0, "sha256 hex is %s", hex);

    is_rc(ngx_mdm_x509_sha256(x, md), NGX_MDM_X509_OK, "sha256 raw");
    ok(md[0] == 0x21 && md[31] == 0x88, "sha256 raw bytes match the hex");

    is_rc(ngx_mdm_x509_serial_hex(x, buf, sizeof(buf)), NGX_MDM_X509_OK,
          "serial");
    ok(strcmp(buf, "734df9c0bb2703fd") == 0, "serial is %s", buf);

    is_rc(ngx_mdm_x509_serial_hex(x, buf, 16), NGX_MDM_X509_ERROR,
          "serial into a small buffer");

    is_rc(ngx_mdm_x509_not_before(x, &t), NGX_MDM_X509_OK, "notBefore");
    ok(t == 1612979087, "notBefore is 2021-02-10T17:44:47Z (%ld)", (long) t);

    is_rc(ngx_mdm_x509_not_after(x, &t), NGX_MDM_X509_OK, "notAfter");
    ok(t == 1644515087, "notAfter is 2022-02-10T17:44:47Z (%ld)", (long) t);

    is_rc(ngx_mdm_x509_subject(x, buf, sizeof(buf)), NGX_MDM_X509_OK,
          "subject");
    ok(strcmp(buf, "C=US,CN=APSP:e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9,"
                   "UID=" NANOMDM_PUSH_TOPIC) == 0,
       "subject is %s", buf);

    is_rc(ngx_mdm_x509_subject(x, buf, 10), NGX_MDM_X509_ERROR,
          "subject into a small buffer");

    is_rc(ngx_mdm_x509_subject_uid(x, buf, sizeof(buf)), NGX_MDM_X509_OK,
          "subject UID");
    ok(strcmp(buf, NANOMDM_PUSH_TOPIC) == 0, "subject UID is %s", buf);

    X509_free(x);
}


static void
test_apns(void)
{
    X509    *x;
    char     topic[NGX_MDM_X509_UID_SIZE];
    time_t   t;

    x = load_vector_cert("apns/nanomdm_push.pem");

    is_rc(ngx_mdm_x509_apns_topic(x, topic, sizeof(topic)), NGX_MDM_X509_OK,
          "nanomdm_push.pem topic");
    ok(strcmp(topic, NANOMDM_PUSH_TOPIC) == 0, "topic is %s", topic);

    is_rc(ngx_mdm_x509_apns_topic(x, topic, 20), NGX_MDM_X509_ERROR,
          "topic into a small buffer");

    ok(ngx_mdm_x509_expires_in(x, now) < 0, "nanomdm_push.pem has expired");
    ok(ngx_mdm_x509_expires_in(x, 1644515087 - 100) == 100,
       "expires in 100 s, 100 s before notAfter");

    X509_free(x);

    x = load_vector_cert("apns/micromdm_mock_push_cert.pem");
    is_rc(ngx_mdm_x509_apns_topic(x, topic, sizeof(topic)), NGX_MDM_X509_OK,
          "mock push cert topic");
    ok(strcmp(topic, MOCK_PUSH_TOPIC) == 0, "mock topic is %s", topic);
    X509_free(x);

    x = load_vector_cert("apns/micromdm_mock_push_cert_no_uid.pem");
    is_rc(ngx_mdm_x509_apns_topic(x, topic, sizeof(topic)),
          NGX_MDM_X509_NO_UID, "mock push cert without UID");
    X509_free(x);

    x = load_vector_cert("apns/micromdm_mock_push_cert_wrong_uid_prefix.pem");
    is_rc(ngx_mdm_x509_apns_topic(x, topic, sizeof(topic)),
          NGX_MDM_X509_WRONG_PREFIX, "mock push cert with a wrong UID");
    ok(strstr(ngx_mdm_x509_error(), "wrong.prefix.") != NULL,
       "error names the UID: %s", ngx_mdm_x509_error());
    X509_free(x);

    t = 0;
    x = load_vector_cert("apns/micromdm_mock_push_cert.pem");
    ngx_mdm_x509_not_after(x, &t);
    ok(ngx_mdm_x509_expires_in(x, t) == 0, "expires in 0 s at notAfter");
    X509_free(x);
}


static void
test_loading(void)
{
    int              n;
    BIO             *bio;
    X509            *x, *y;
    char             path[1100], *pem, *pem2;
    size_t           len;
    EVP_PKEY        *key;
    STACK_OF(X509)  *chain;
    pki_t            p;

    chain = ngx_mdm_x509_load_chain(vector_path(APPLE_CHAIN));
    n = chain ? sk_X509_num(chain) : 0;
    ok(n == 3, "Apple device CA full chain has 3 certificates (%d)", n);
    ngx_mdm_x509_chain_free(chain);

    x = ngx_mdm_x509_load_cert("/nonexistent/cert.pem");
    ok(x == NULL && strstr(ngx_mdm_x509_error(), "/nonexistent/cert.pem"),
       "missing file: %s", ngx_mdm_x509_error());

    chain = ngx_mdm_x509_load_chain(vector_path(NOT_PEM));
    ok(chain == NULL && strstr(ngx_mdm_x509_error(), "no PEM certificate"),
       "chain from a non-PEM file: %s", ngx_mdm_x509_error());

    x = ngx_mdm_x509_load_cert(vector_path(SCEP_CA));
    ok(x != NULL, "load SCEP test CA certificate");

    key = ngx_mdm_x509_load_key(vector_path(SCEP_CA_KEY), "");
    ok(key != NULL, "load SCEP test CA key with the empty passphrase");
    is_rc(ngx_mdm_x509_key_matches(x, key), NGX_MDM_X509_OK,
          "SCEP test CA key matches its certificate");
    EVP_PKEY_free(key);

    key = ngx_mdm_x509_load_key(vector_path(SCEP_CA_KEY), NULL);
    ok(key == NULL && strstr(ngx_mdm_x509_error(), "no passphrase"),
       "encrypted key without passphrase fails, no prompt: %s",
       ngx_mdm_x509_error());

    key = ngx_mdm_x509_load_key(vector_path(SCEP_CA_KEY), "wrong");
    ok(key == NULL && strstr(ngx_mdm_x509_error(), "wrong passphrase"),
       "wrong passphrase fails: %s", ngx_mdm_x509_error());

    key = ngx_mdm_x509_load_key(vector_path(DEP_KEY), NULL);
    ok(key != NULL, "load an unencrypted PKCS#1 RSA key");

    is_rc(ngx_mdm_x509_key_matches(x, key), NGX_MDM_X509_KEY_MISMATCH,
          "another key does not match");

    y = ngx_mdm_x509_load_cert(vector_path(DEP_CERT));
    is_rc(ngx_mdm_x509_key_matches(y, key), NGX_MDM_X509_OK,
          "the recipient key matches its certificate");

    X509_free(x);
    X509_free(y);
    EVP_PKEY_free(key);

    key = ngx_mdm_x509_load_key(vector_path("apns/nanomdm_push.pem"), NULL);
    ok(key == NULL && strstr(ngx_mdm_x509_error(), "no PEM private key"),
       "a certificate is not a key: %s", ngx_mdm_x509_error());

    /* an EC key encrypted with a passphrase, and a two-certificate chain */

    p = make_cert("ec", 0, NULL, now - DAY, now + DAY, 1, NULL, NULL);

    snprintf(path, sizeof(path), "%s/ec.key", tmpdir);
    bio = BIO_new_file(path, "w");
    PEM_write_bio_PrivateKey(bio, p.key, EVP_aes_256_cbc(), NULL, 0, NULL,
                             (void *) "s3cret");
    BIO_free(bio);

    key = ngx_mdm_x509_load_key(path, "s3cret");
    ok(key != NULL, "load an encrypted EC key");
    is_rc(ngx_mdm_x509_key_matches(p.cert, key), NGX_MDM_X509_OK,
          "EC key matches its certificate");
    EVP_PKEY_free(key);

    pem = cert_pem(p.cert);
    x = ngx_mdm_x509_load_cert(vector_path("apns/nanomdm_push.pem"));
    pem2 = cert_pem(x);

    len = strlen(pem) + strlen(pem2) + 1;
    {
        char  both[8192];

        snprintf(both, sizeof(both), "%s%s", pem, pem2);

        snprintf(path, sizeof(path), "%s/chain.pem", tmpdir);
        write_file(path, both, strlen(both));

        chain = ngx_mdm_x509_load_chain(path);
        ok(chain && sk_X509_num(chain) == 2
           && same_cert(sk_X509_value(chain, 0), p.cert)
           && same_cert(sk_X509_value(chain, 1), x),
           "chain file: two certificates in file order");
        ngx_mdm_x509_chain_free(chain);

        chain = ngx_mdm_x509_chain_from_pem(both, strlen(both));
        ok(chain && sk_X509_num(chain) == 2, "chain from memory");
        ngx_mdm_x509_chain_free(chain);

        /* the second certificate cut short */
        chain = ngx_mdm_x509_chain_from_pem(both, len - 100);
        ok(chain == NULL && strstr(ngx_mdm_x509_error(), "after #1"),
           "truncated chain fails: %s", ngx_mdm_x509_error());

        y = ngx_mdm_x509_cert_from_pem(both, strlen(both));
        ok(same_cert(y, p.cert), "certificate from memory: the first one");
        X509_free(y);
    }

    ok(ngx_mdm_x509_cert_from_pem("garbage", 7) == NULL,
       "certificate from garbage fails: %s", ngx_mdm_x509_error());
    ok(ngx_mdm_x509_cert_from_pem(NULL, 0) == NULL,
       "certificate from nothing fails");

    ok(ERR_peek_error() == 0, "OpenSSL error queue left empty");

    free(pem);
    free(pem2);
    X509_free(x);
    pki_free(&p);
}


/* "$ssl_client_escaped_cert": nginx's URI-component escaping */

static char *
escape_pem(const char *pem)
{
    char        *out, *o;
    const char  *p;

    out = malloc(strlen(pem) * 3 + 1);
    o = out;

    for (p = pem; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')
            || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
            || *p == '_' || *p == '~')
        {
            *o++ = *p;

        } else {
            o += sprintf(o, "%%%02X", (unsigned char) *p);
        }
    }

    *o = '\0';

    return out;
}


/* "$ssl_client_cert": every line after the first indented by a tab */

static char *
indent_pem(const char *pem)
{
    char        *out, *o;
    const char  *p;

    out = malloc(strlen(pem) * 2 + 1);
    o = out;

    for (p = pem; *p; p++) {
        *o++ = *p;

        if (*p == '\n' && p[1] != '\0') {
            *o++ = '\t';
        }
    }

    *o = '\0';

    return out;
}


static void
check_form(X509 *want, const void *in, size_t len, ngx_mdm_x509_form_e form,
    const char *what)
{
    X509  *x;

    x = ngx_mdm_x509_client_cert(in, len, form);
    ok(same_cert(x, want), "client cert %s", what);
    X509_free(x);

    x = ngx_mdm_x509_client_cert(in, len, NGX_MDM_X509_FORM_AUTO);
    ok(same_cert(x, want), "client cert %s, guessed", what);
    X509_free(x);
}


static void
check_bad_form(const char *in, ngx_mdm_x509_form_e form, const char *what)
{
    X509  *x;

    x = ngx_mdm_x509_client_cert((const unsigned char *) in, strlen(in), form);
    ok(x == NULL, "client cert refused: %s (%s)", what, ngx_mdm_x509_error());
    X509_free(x);
}


static void
test_client_cert(void)
{
    X509           *x;
    char           *pem, *esc, *ind, *b64, *sf, *p;
    size_t          len;
    unsigned char  *der, *der2;

    x = load_vector_cert("enroll/micromdm_appleca_signed.pem");
    if (x == NULL) {
        ok(0, "load enroll/micromdm_appleca_signed.pem");
        return;
    }

    pem = cert_pem(x);
    esc = escape_pem(pem);
    ind = indent_pem(pem);
    der = cert_der(x, &len);
    b64 = base64(der, len);

    sf = malloc(strlen(b64) + 16);
    sprintf(sf, ":%s:", b64);

    check_form(x, pem, strlen(pem), NGX_MDM_X509_FORM_PEM,
               "$ssl_client_raw_cert");
    check_form(x, esc, strlen(esc), NGX_MDM_X509_FORM_ESCAPED_PEM,
               "$ssl_client_escaped_cert");
    check_form(x, ind, strlen(ind), NGX_MDM_X509_FORM_PEM,
               "$ssl_client_cert (tab-indented)");
    check_form(x, sf, strlen(sf), NGX_MDM_X509_FORM_RFC9440,
               "RFC 9440 Client-Cert");
    check_form(x, b64, strlen(b64), NGX_MDM_X509_FORM_BASE64_DER,
               "base64 DER");
    check_form(x, der, len, NGX_MDM_X509_FORM_DER, "DER");

    /* a proxy that joins the PEM lines with spaces */
    {
        char  *joined;

        joined = strdup(pem);
        for (p = joined; *p; p++) {
            if (*p == '\n') {
                *p = ' ';
            }
        }

        check_form(x, joined, strlen(joined), NGX_MDM_X509_FORM_PEM,
                   "PEM with lines joined by spaces");
        free(joined);
    }

    /* lowercase escapes */
    for (p = esc; *p; p++) {
        if (p[0] == '%' && p[1] == '0' && p[2] == 'A') {
            p[2] = 'a';
        }
    }
    check_form(x, esc, strlen(esc), NGX_MDM_X509_FORM_ESCAPED_PEM,
               "escaped with lowercase hex");

    sprintf(sf, "  :%s:;by=proxy  ", b64);
    check_form(x, sf, strlen(sf), NGX_MDM_X509_FORM_RFC9440,
               "RFC 9440 with whitespace and parameters");

    p = strchr(b64, '=');
    if (p) {
        sprintf(sf, ":%.*s:", (int) (p - b64), b64);
        check_form(x, sf, strlen(sf), NGX_MDM_X509_FORM_RFC9440,
                   "RFC 9440 without padding");

    } else {
        ok(1, "# skip: DER length is a multiple of 3");
        ok(1, "# skip: DER length is a multiple of 3");
    }

    to_base64url(b64);
    check_form(x, b64, strlen(b64), NGX_MDM_X509_FORM_BASE64_DER,
               "base64url DER without padding");

    /* URL-safe characters are not allowed in an RFC 8941 byte sequence */
    sprintf(sf, ":%s:", b64);
    if (strpbrk(b64, "-_")) {
        check_bad_form(sf, NGX_MDM_X509_FORM_RFC9440,
                       "base64url inside RFC 9440");

    } else {
        ok(1, "# skip: base64 has no + or /");
    }

    check_bad_form("", NGX_MDM_X509_FORM_AUTO, "empty");
    check_bad_form("   ", NGX_MDM_X509_FORM_PEM, "whitespace only");
    check_bad_form("::", NGX_MDM_X509_FORM_RFC9440, "empty byte sequence");
    check_bad_form(":MIIB", NGX_MDM_X509_FORM_RFC9440, "no closing colon");
    check_bad_form(":AAAA:", NGX_MDM_X509_FORM_RFC9440, "not a certificate");
    check_bad_form(":A:", NGX_MDM_X509_FORM_RFC9440, "one base64 character");
    check_bad_form(":AA=A:", NGX_MDM_X509_FORM_RFC9440, "data after padding");
    check_bad_form("-----BEGIN CERTIFICATE-----\nMIIB\n",
                   NGX_MDM_X509_FORM_PEM, "PEM without END");
    check_bad_form("-----BEGIN%20CERTIFICATE-----%ZZ",
                   NGX_MDM_X509_FORM_ESCAPED_PEM, "bad percent escape");
    check_bad_form("-----BEGIN%20CERTIFICATE-----%0", NGX_MDM_X509_FORM_AUTO,
                   "truncated percent escape");
    check_bad_form("not base64 at all!", NGX_MDM_X509_FORM_BASE64_DER,
                   "garbage base64");

    /* text after the PEM block, bytes after the DER */

    p = malloc(strlen(pem) + 16);
    sprintf(p, "%sjunk", pem);
    check_bad_form(p, NGX_MDM_X509_FORM_PEM, "text after END");
    free(p);

    der2 = malloc(len + 1);
    memcpy(der2, der, len);
    der2[len] = 0;
    X509_free(x);
    x = ngx_mdm_x509_client_cert(der2, len + 1, NGX_MDM_X509_FORM_DER);
    ok(x == NULL, "client cert refused: a byte after the DER (%s)",
       ngx_mdm_x509_error());
    free(der2);

    p = malloc(NGX_MDM_X509_CLIENT_CERT_MAX + 2);
    memset(p, 'A', NGX_MDM_X509_CLIENT_CERT_MAX + 1);
    p[NGX_MDM_X509_CLIENT_CERT_MAX + 1] = '\0';
    check_bad_form(p, NGX_MDM_X509_FORM_BASE64_DER, "too large");
    free(p);

    X509_free(x);
    free(pem);
    free(esc);
    free(ind);
    free(b64);
    free(sf);
    OPENSSL_free(der);
}


static void
test_verify(void)
{
    int                       i, n;
    X509                     *apple;
    double                    us;
    pki_t                     ca, other, root, inter, expired_ca;
    pki_t                     valid, grace, beyond, future, foreign, email;
    pki_t                     client, under_inter, under_expired;
    STACK_OF(X509)           *untrusted;
    struct timeval            t0, t1;
    ngx_mdm_x509_rc_e         rc;
    ngx_mdm_x509_verifier_t  *v, *vo, *vr, *va, *vat;

    ca = make_cert("SCEP CA", 0, NULL, now - 10 * DAY, now + 3650 * DAY, 1,
                   NULL, NULL);
    other = make_cert("Other CA", 0, NULL, now - 10 * DAY, now + 3650 * DAY,
                      1, NULL, NULL);
    root = make_cert("Root CA", 0, NULL, now - 10 * DAY, now + 3650 * DAY, 1,
                     NULL, NULL);
    inter = make_cert("Intermediate CA", 0, &root, now - 10 * DAY,
                      now + 3650 * DAY, 1, NULL, NULL);
    expired_ca = make_cert("Expired CA", 0, NULL, now - 100 * DAY,
                           now - 50 * DAY, 1, NULL, NULL);

    valid = make_cert("valid", 0, &ca, now - DAY, now + 365 * DAY, 0, NULL,
                      NULL);
    grace = make_cert("in grace", 0, &ca, now - 365 * DAY, now - 3600, 0,
                      NULL, NULL);
    beyond = make_cert("beyond grace", 0, &ca, now - 365 * DAY,
                       now - 10 * DAY, 0, NULL, NULL);
    future = make_cert("not yet valid", 0, &ca, now + DAY, now + 365 * DAY,
                       0, NULL, NULL);
    foreign = make_cert("foreign", 0, &other, now - DAY, now + 365 * DAY, 0,
                        NULL, NULL);
    email = make_cert("email only", 0, &ca, now - DAY, now + 365 * DAY, 0,
                      "emailProtection", NULL);
    client = make_cert("client auth", 0, &ca, now - DAY, now + 365 * DAY, 0,
                       "clientAuth,emailProtection", NULL);
    under_inter = make_cert("under intermediate", 0, &inter, now - DAY,
                            now + 365 * DAY, 0, NULL, NULL);
    under_expired = make_cert("under expired CA", 0, &expired_ca,
                              now - 60 * DAY, now + 365 * DAY, 0, NULL, NULL);

    v = verifier_of(ca.cert, NULL, 0);
    vo = verifier_of(other.cert, NULL, 0);
    vr = verifier_of(root.cert, NULL, 0);
    ok(v && vo && vr, "verifiers over generated CAs");

    is_rc(ngx_mdm_x509_verify(v, valid.cert, NULL, now, 0), NGX_MDM_X509_OK,
          "valid device certificate");
    is_rc(ngx_mdm_x509_verify(v, grace.cert, NULL, now, DAY),
          NGX_MDM_X509_OK_IN_GRACE, "expired an hour ago, grace one day");
    is_rc(ngx_mdm_x509_verify(v, grace.cert, NULL, now, 0),
          NGX_MDM_X509_EXPIRED, "expired an hour ago, no grace");
    is_rc(ngx_mdm_x509_verify(v, beyond.cert, NULL, now, DAY),
          NGX_MDM_X509_EXPIRED, "expired ten days ago, grace one day");
    is_rc(ngx_mdm_x509_verify(v, future.cert, NULL, now, DAY),
          NGX_MDM_X509_NOT_YET_VALID, "not yet valid");
    is_rc(ngx_mdm_x509_verify(v, foreign.cert, NULL, now, DAY),
          NGX_MDM_X509_UNTRUSTED, "issued by another CA");
    is_rc(ngx_mdm_x509_verify(vo, foreign.cert, NULL, now, 0),
          NGX_MDM_X509_OK, "... which that CA's verifier accepts");
    is_rc(ngx_mdm_x509_verify(v, email.cert, NULL, now, 0),
          NGX_MDM_X509_UNTRUSTED, "EKU without clientAuth");
    is_rc(ngx_mdm_x509_verify(v, client.cert, NULL, now, 0),
          NGX_MDM_X509_OK, "EKU with clientAuth");
    is_rc(ngx_mdm_x509_verify(v, valid.cert, NULL, now + 400 * DAY,
                              10 * DAY),
          NGX_MDM_X509_EXPIRED, "the verification time is the caller's");
    is_rc(ngx_mdm_x509_verify(v, valid.cert, NULL, now + 400 * DAY,
                              100 * DAY),
          NGX_MDM_X509_OK_IN_GRACE, "... and so is the grace");
    is_rc(ngx_mdm_x509_verify(v, NULL, NULL, now, 0), NGX_MDM_X509_MALFORMED,
          "no certificate");

    untrusted = chain_of(inter.cert, NULL);
    is_rc(ngx_mdm_x509_verify(vr, under_inter.cert, untrusted, now, 0),
          NGX_MDM_X509_OK, "intermediate given as untrusted");
    is_rc(ngx_mdm_x509_verify(vr, under_inter.cert, NULL, now, 0),
          NGX_MDM_X509_UNTRUSTED, "intermediate missing");
    ngx_mdm_x509_chain_free(untrusted);

    ngx_mdm_x509_verifier_free(vr);
    vr = verifier_of(inter.cert, NULL, 0);
    is_rc(ngx_mdm_x509_verify(vr, under_inter.cert, NULL, now, 0),
          NGX_MDM_X509_OK, "an intermediate as the only anchor");
    ngx_mdm_x509_verifier_free(vr);

    vr = verifier_of(expired_ca.cert, NULL, 0);
    rc = ngx_mdm_x509_verify(vr, under_expired.cert, NULL, now, 365 * DAY);
    is_rc(rc, NGX_MDM_X509_UNTRUSTED, "expired CA, however long the grace");
    ngx_mdm_x509_verifier_free(vr);

    /* a store with the same CA twice */
    vr = verifier_of(ca.cert, ca.cert, 0);
    is_rc(ngx_mdm_x509_verify(vr, valid.cert, NULL, now, 0), NGX_MDM_X509_OK,
          "store with a duplicate CA");
    ngx_mdm_x509_verifier_free(vr);

    /* Apple's identity chain: expired intermediates */

    apple = load_vector_cert("enroll/micromdm_appleca_signed.pem");
    {
        STACK_OF(X509)  *chain;
        X509_STORE      *store;

        chain = ngx_mdm_x509_load_chain(vector_path(APPLE_CHAIN));
        store = ngx_mdm_x509_store_create(chain);
        va = ngx_mdm_x509_verifier_create(store, NGX_MDM_X509_APPLE_DEVICE);
        vat = ngx_mdm_x509_verifier_create(store, 0);
        X509_STORE_free(store);
        ngx_mdm_x509_chain_free(chain);
    }

    is_rc(ngx_mdm_x509_verify(va, apple, NULL, now, 0), NGX_MDM_X509_OK,
          "micromdm_appleca_signed.pem chains to Apple, no time checks");
    rc = ngx_mdm_x509_verify(vat, apple, NULL, now, 0);
    ok(rc != NGX_MDM_X509_OK && rc != NGX_MDM_X509_OK_IN_GRACE,
       "... and fails with time checks: %s (%s)", ngx_mdm_x509_rc_str(rc),
       ngx_mdm_x509_error());
    is_rc(ngx_mdm_x509_verify(v, apple, NULL, now, 0), NGX_MDM_X509_UNTRUSTED,
          "Apple device certificate against our SCEP CA");
    is_rc(ngx_mdm_x509_verify(va, valid.cert, NULL, now, 0),
          NGX_MDM_X509_UNTRUSTED, "our device certificate against Apple");

    /*
     * Why the Apple store holds the device CA and not the root: any
     * certificate in the store is an anchor, and with no time or EKU
     * checks, a root would accept whatever any of its CAs issued.
     */

    {
        pki_t                     aroot, devca, wwdr, dev, developer;
        ngx_mdm_x509_verifier_t  *vroot, *vdev;

        aroot = make_cert("Apple-like Root", 0, NULL, now - DAY,
                          now + 3650 * DAY, 1, NULL, NULL);
        devca = make_cert("Device CA", 0, &aroot, now - DAY,
                          now + 3650 * DAY, 1, NULL, NULL);
        wwdr = make_cert("Developer CA", 0, &aroot, now - DAY,
                         now + 3650 * DAY, 1, NULL, NULL);
        dev = make_cert("device identity", 0, &devca, now - DAY,
                        now + 365 * DAY, 0, NULL, NULL);
        developer = make_cert("a developer", 0, &wwdr, now - DAY,
                              now + 365 * DAY, 0, "codeSigning", NULL);

        vroot = verifier_of(aroot.cert, devca.cert,
                            NGX_MDM_X509_APPLE_DEVICE);
        vdev = verifier_of(devca.cert, NULL, NGX_MDM_X509_APPLE_DEVICE);

        untrusted = chain_of(wwdr.cert, devca.cert);

        is_rc(ngx_mdm_x509_verify(vdev, dev.cert, untrusted, now, 0),
              NGX_MDM_X509_OK, "device identity under the device CA");
        is_rc(ngx_mdm_x509_verify(vdev, developer.cert, untrusted, now, 0),
              NGX_MDM_X509_UNTRUSTED,
              "another CA's certificate, device CA as the anchor");
        is_rc(ngx_mdm_x509_verify(vroot, developer.cert, untrusted, now, 0),
              NGX_MDM_X509_OK,
              "... is accepted once the root is in the store");

        ngx_mdm_x509_chain_free(untrusted);
        ngx_mdm_x509_verifier_free(vroot);
        ngx_mdm_x509_verifier_free(vdev);
        pki_free(&aroot);
        pki_free(&devca);
        pki_free(&wwdr);
        pki_free(&dev);
        pki_free(&developer);
    }

    /* speed: the per-request cost with a reused X509_STORE_CTX */

    n = 2000;
    gettimeofday(&t0, NULL);

    for (i = 0; i < n; i++) {
        if (ngx_mdm_x509_verify(v, valid.cert, NULL, now, 0)
            != NGX_MDM_X509_OK)
        {
            break;
        }
    }

    gettimeofday(&t1, NULL);

    us = ((t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_usec - t0.tv_usec)) / n;
    ok(i == n, "%d verifications in a row", n);
    printf("# %.1f us per device certificate verification (P-256)\n", us);

    ok(ERR_peek_error() == 0, "OpenSSL error queue left empty");

    X509_free(apple);
    ngx_mdm_x509_verifier_free(v);
    ngx_mdm_x509_verifier_free(vo);
    ngx_mdm_x509_verifier_free(va);
    ngx_mdm_x509_verifier_free(vat);

    pki_free(&ca);
    pki_free(&other);
    pki_free(&root);
    pki_free(&inter);
    pki_free(&expired_ca);
    pki_free(&valid);
    pki_free(&grace);
    pki_free(&beyond);
    pki_free(&future);
    pki_free(&foreign);
    pki_free(&email);
    pki_free(&client);
    pki_free(&under_inter);
    pki_free(&under_expired);
}


static void
test_mdm_signature(void)
{
    int                          n;
    X509                        *signer;
    char                        *b64;
    pki_t                        ca, dev, rsa;
    size_t                       len;
    unsigned char               *der, *der2;
    ngx_mdm_x509_rc_e            rc;
    ngx_mdm_x509_verifier_t     *v;
    static const unsigned char   sha256_oid[] =
        { 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01 };
    static const unsigned char   unknown_oid[] =
        { 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x7f };
    static const char            body[] =
        "<?xml version=\"1.0\"?><plist><dict><key>MessageType</key>"
        "<string>Authenticate</string></dict></plist>\n";

    ca = make_cert("SCEP CA", 0, NULL, now - 10 * DAY, now + 3650 * DAY, 1,
                   NULL, NULL);
    dev = make_cert("device", 0, &ca, now - DAY, now + 365 * DAY, 0,
                    "clientAuth", NULL);
    rsa = make_cert("device rsa", 1, &ca, now - DAY, now + 365 * DAY, 0,
                    NULL, NULL);
    v = verifier_of(ca.cert, NULL, 0);

    der = device_sign(&dev, body, sizeof(body) - 1, CMS_DETACHED, &len);
    b64 = base64(der, len);

    signer = NULL;
    rc = ngx_mdm_cms_verify_mdm_signature(b64, strlen(b64),
                                          (const unsigned char *) body,
                                          sizeof(body) - 1, &signer);
    is_rc(rc, NGX_MDM_X509_OK, "Mdm-Signature over the body");
    ok(same_cert(signer, dev.cert), "the signer is the device certificate");
    is_rc(ngx_mdm_x509_verify(v, signer, NULL, now, 0), NGX_MDM_X509_OK,
          "the signer chains to the SCEP CA");
    X509_free(signer);

    signer = NULL;
    rc = ngx_mdm_cms_verify_mdm_signature(b64, strlen(b64),
                                          (const unsigned char *) body,
                                          sizeof(body) - 2, &signer);
    is_rc(rc, NGX_MDM_X509_BAD_SIGNATURE, "a body one byte shorter");
    ok(signer == NULL, "no signer on failure");

    {
        char  changed[sizeof(body)];

        memcpy(changed, body, sizeof(body));
        changed[60] ^= 0x01;

        rc = ngx_mdm_cms_verify_mdm_signature(b64, strlen(b64),
                                              (unsigned char *) changed,
                                              sizeof(body) - 1, NULL);
        is_rc(rc, NGX_MDM_X509_BAD_SIGNATURE, "a body with one bit changed");
    }

    rc = ngx_mdm_cms_verify_detached(der, len, (const unsigned char *) body,
                                     sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_OK, "the same as DER");

    to_base64url(b64);
    rc = ngx_mdm_cms_verify_mdm_signature(b64, strlen(b64),
                                          (const unsigned char *) body,
                                          sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_OK, "the same as base64url without padding");

    free(b64);
    OPENSSL_free(der);

    /* an RSA device key, an empty body */

    der = device_sign(&rsa, "", 0, CMS_DETACHED, &len);
    rc = ngx_mdm_cms_verify_detached(der, len, NULL, 0, &signer);
    is_rc(rc, NGX_MDM_X509_OK, "RSA signature over an empty body");
    ok(same_cert(signer, rsa.cert), "the RSA signer");
    X509_free(signer);

    rc = ngx_mdm_cms_verify_detached(der, len, (const unsigned char *) "x", 1,
                                     NULL);
    is_rc(rc, NGX_MDM_X509_BAD_SIGNATURE, "... not over \"x\"");
    OPENSSL_free(der);

    /* malformed */

    rc = ngx_mdm_cms_verify_mdm_signature("!!not base64!!", 14,
                                          (const unsigned char *) body,
                                          sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "garbage base64");

    rc = ngx_mdm_cms_verify_mdm_signature("", 0, (const unsigned char *) body,
                                          sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "empty header");

    rc = ngx_mdm_cms_verify_mdm_signature("aGVsbG8gd29ybGQ=", 16,
                                          (const unsigned char *) body,
                                          sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "base64 of text, not DER");

    rc = ngx_mdm_cms_verify_mdm_signature("MAA=", 4,
                                          (const unsigned char *) body,
                                          sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "an empty SEQUENCE");

    /* attached content is not a detached signature */

    der = device_sign(&dev, body, sizeof(body) - 1, 0, &len);
    rc = ngx_mdm_cms_verify_detached(der, len, (const unsigned char *) body,
                                     sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "attached CMS as Mdm-Signature");

    /* trailing bytes, truncation */

    der2 = malloc(len + 1);
    memcpy(der2, der, len);
    der2[len] = 0;
    rc = ngx_mdm_cms_verify_detached(der2, len + 1,
                                     (const unsigned char *) body,
                                     sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "a byte after the CMS");
    rc = ngx_mdm_cms_verify_detached(der2, len / 2,
                                     (const unsigned char *) body,
                                     sizeof(body) - 1, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "truncated CMS");
    free(der2);
    OPENSSL_free(der);

    /*
     * An unknown digest in digestAlgorithms only: OpenSSL 3.0's
     * CMS_verify() leaked a BIO here (found by fuzz_cms_verify).
     */

    der = device_sign(&dev, body, sizeof(body) - 1, CMS_DETACHED, &len);
    n = patch(der, len, sha256_oid, unknown_oid, sizeof(sha256_oid), 1);
    rc = ngx_mdm_cms_verify_detached(der, len, (const unsigned char *) body,
                                     sizeof(body) - 1, NULL);
    ok(n == 1, "SHA-256 OID replaced in digestAlgorithms");
    is_rc(rc, NGX_MDM_X509_BAD_SIGNATURE,
          "an unknown algorithm in digestAlgorithms");
    OPENSSL_free(der);

    /* and in the signerInfo too */

    der = device_sign(&dev, body, sizeof(body) - 1, CMS_DETACHED, &len);
    n = patch(der, len, sha256_oid, unknown_oid, sizeof(sha256_oid), 2);
    rc = ngx_mdm_cms_verify_detached(der, len, (const unsigned char *) body,
                                     sizeof(body) - 1, NULL);
    ok(n == 2, "SHA-256 OID replaced in the signerInfo too");
    is_rc(rc, NGX_MDM_X509_BAD_SIGNATURE, "an unknown digest algorithm");
    OPENSSL_free(der);

    /* no certificates in the CMS */

    der = device_sign(&dev, body, sizeof(body) - 1, CMS_DETACHED|CMS_NOCERTS,
                      &len);
    rc = ngx_mdm_cms_verify_detached(der, len, (const unsigned char *) body,
                                     sizeof(body) - 1, &signer);
    is_rc(rc, NGX_MDM_X509_NO_SIGNER, "CMS without the signer certificate");
    OPENSSL_free(der);

    /* another certificate in place of the signer's: same issuer/serial */

    {
        BIO              *bio;
        pki_t             twin;
        CMS_ContentInfo  *cms;
        int               n;

        bio = BIO_new_mem_buf(body, sizeof(body) - 1);
        cms = CMS_sign(dev.cert, dev.key, NULL, bio,
                       CMS_DETACHED|CMS_BINARY|CMS_NOCERTS);
        BIO_free(bio);

        serial--;
        twin = make_cert("twin", 0, &ca, now - DAY, now + 365 * DAY, 0,
                         NULL, NULL);
        ASN1_INTEGER_set(X509_get_serialNumber(twin.cert),
                         ASN1_INTEGER_get(X509_get0_serialNumber(dev.cert)));
        X509_sign(twin.cert, ca.key, EVP_sha256());
        CMS_add1_cert(cms, twin.cert);

        der = NULL;
        n = i2d_CMS_ContentInfo(cms, &der);
        CMS_ContentInfo_free(cms);

        rc = ngx_mdm_cms_verify_detached(der, (size_t) n,
                                         (const unsigned char *) body,
                                         sizeof(body) - 1, NULL);
        is_rc(rc, NGX_MDM_X509_BAD_SIGNATURE,
              "a certificate with the signer's issuer and serial, other key");

        OPENSSL_free(der);
        pki_free(&twin);
    }

    /* two signers */

    {
        BIO              *bio;
        CMS_ContentInfo  *cms;
        int               n;

        bio = BIO_new_mem_buf(body, sizeof(body) - 1);
        cms = CMS_sign(NULL, NULL, NULL, NULL,
                       CMS_DETACHED|CMS_BINARY|CMS_PARTIAL);
        CMS_add1_signer(cms, dev.cert, dev.key, EVP_sha256(), 0);
        CMS_add1_signer(cms, rsa.cert, rsa.key, EVP_sha256(), 0);
        CMS_final(cms, bio, NULL, CMS_DETACHED|CMS_BINARY);
        BIO_free(bio);

        der = NULL;
        n = i2d_CMS_ContentInfo(cms, &der);
        CMS_ContentInfo_free(cms);

        rc = ngx_mdm_cms_verify_detached(der, (size_t) n,
                                         (const unsigned char *) body,
                                         sizeof(body) - 1, NULL);
        is_rc(rc, NGX_MDM_X509_MALFORMED, "two signers");
        OPENSSL_free(der);
    }

    ok(ERR_peek_error() == 0, "OpenSSL error queue left empty");

    ngx_mdm_x509_verifier_free(v);
    pki_free(&ca);
    pki_free(&dev);
    pki_free(&rsa);
}


static void
test_ota(void)
{
    X509                     *signer;
    char                     *b64, subject[NGX_MDM_X509_SUBJECT_SIZE];
    pki_t                     ca;
    size_t                    len, clen, i;
    unsigned char            *der, *content, *p;
    X509_STORE               *store;
    STACK_OF(X509)           *chain;
    ngx_mdm_x509_rc_e         rc;
    ngx_mdm_x509_verifier_t  *va, *vo;

    der = read_file(vectors, "enroll/zentral_ota_payload_phase_2.der", &len);
    ok(der != NULL, "read enroll/zentral_ota_payload_phase_2.der");

    if (der == NULL) {
        return;
    }

    chain = ngx_mdm_x509_load_chain(vector_path(APPLE_CHAIN));
    store = ngx_mdm_x509_store_create(chain);
    va = ngx_mdm_x509_verifier_create(store, NGX_MDM_X509_APPLE_DEVICE);
    X509_STORE_free(store);
    ngx_mdm_x509_chain_free(chain);

    content = malloc(len + 1);
    signer = NULL;
    clen = 0;

    rc = ngx_mdm_cms_verify_attached(der, len, va, now, content, len, &clen,
                                     &signer);
    is_rc(rc, NGX_MDM_X509_OK, "OTA phase 2 verifies against Apple's chain");

    content[clen] = '\0';
    ok(clen > 0 && clen < len, "content of %zu bytes", clen);
    ok(strstr((char *) content, "<key>UDID</key>\n\t<string>"
                                "78897E40-F532-5DE0-A7DC-56BAC5CEEB9C")
       != NULL, "content has the UDID");
    ok(strstr((char *) content, "<key>SERIAL</key>\n\t<string>ZDL2M9PTJ3")
       != NULL, "content has the SERIAL");
    ok(strncmp((char *) content, "<?xml", 5) == 0, "content is an XML plist");

    subject[0] = '\0';
    ngx_mdm_x509_subject(signer, subject, sizeof(subject));
    ok(strncmp(subject, "CN=0B5938EB-", 12) == 0, "signer is %s", subject);
    X509_free(signer);

    rc = ngx_mdm_cms_verify_attached(der, len, va, now, NULL, 0, NULL, NULL);
    is_rc(rc, NGX_MDM_X509_OK, "without asking for the content");

    rc = ngx_mdm_cms_verify_attached(der, len, va, now, content, clen - 1,
                                     &clen, NULL);
    is_rc(rc, NGX_MDM_X509_ERROR, "content buffer one byte short");

    /* x-apple-aspen-deviceinfo: standard and URL-safe base64 */

    b64 = base64(der, len);
    rc = ngx_mdm_cms_verify_attached_base64(b64, strlen(b64), va, now,
                                            content, len, &clen, NULL);
    is_rc(rc, NGX_MDM_X509_OK, "base64 header form");

    to_base64url(b64);
    rc = ngx_mdm_cms_verify_attached_base64(b64, strlen(b64), va, now,
                                            content, len, &clen, NULL);
    is_rc(rc, NGX_MDM_X509_OK, "URL-safe base64 header form");

    b64[10] = '*';
    rc = ngx_mdm_cms_verify_attached_base64(b64, strlen(b64), va, now,
                                            content, len, &clen, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "bad base64 header");
    free(b64);

    /* one bit flipped in the content */

    p = NULL;
    for (i = 0; i + 10 <= len; i++) {
        if (memcmp(der + i, "ZDL2M9PTJ3", 10) == 0) {
            p = der + i;
            break;
        }
    }

    ok(p != NULL, "the SERIAL is in the DER");

    if (p) {
        p[3] ^= 0x04;
        rc = ngx_mdm_cms_verify_attached(der, len, va, now, content, len,
                                         &clen, NULL);
        is_rc(rc, NGX_MDM_X509_BAD_SIGNATURE, "one bit flipped in the content");
        p[3] ^= 0x04;
    }

    /* Apple iPhone Device CA alone as the anchor is enough */

    chain = ngx_mdm_x509_load_chain(vector_path(APPLE_CHAIN));
    while (chain && sk_X509_num(chain) > 1) {
        X509_free(sk_X509_pop(chain));
    }

    vo = verifier_of(sk_X509_value(chain, 0), NULL,
                     NGX_MDM_X509_APPLE_DEVICE);
    rc = ngx_mdm_cms_verify_attached(der, len, vo, now, content, len, &clen,
                                     NULL);
    is_rc(rc, NGX_MDM_X509_OK, "OTA phase 2 against Apple iPhone Device CA "
                               "alone");
    ngx_mdm_x509_verifier_free(vo);
    ngx_mdm_x509_chain_free(chain);

    /* a different trust store */

    ca = make_cert("SCEP CA", 0, NULL, now - DAY, now + DAY, 1, NULL, NULL);
    vo = verifier_of(ca.cert, NULL, NGX_MDM_X509_APPLE_DEVICE);

    rc = ngx_mdm_cms_verify_attached(der, len, vo, now, content, len, &clen,
                                     NULL);
    is_rc(rc, NGX_MDM_X509_UNTRUSTED, "verified against another trust store");
    ngx_mdm_x509_verifier_free(vo);

    /* a CMS signature is not a certificate chain check of its own */

    rc = ngx_mdm_cms_verify_detached(der, len, content, clen, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "attached OTA body as detached");

    rc = ngx_mdm_cms_verify_attached(der, len - 1, va, now, content, len,
                                     &clen, NULL);
    is_rc(rc, NGX_MDM_X509_MALFORMED, "truncated OTA body");

    rc = ngx_mdm_cms_verify_attached(der, len, NULL, now, content, len,
                                     &clen, NULL);
    is_rc(rc, NGX_MDM_X509_ERROR, "no verifier");

    ok(ERR_peek_error() == 0, "OpenSSL error queue left empty");

    ngx_mdm_x509_verifier_free(va);
    pki_free(&ca);
    free(content);
    free(der);
}


static void
test_ota_phase3(void)
{
    X509                     *signer;
    pki_t                     ca, other, dev, old, alien;
    size_t                    len, clen;
    unsigned char            *der, content[4096];
    ngx_mdm_x509_rc_e         rc;
    ngx_mdm_x509_verifier_t  *v;
    static const char         attrs[] =
        "<plist><dict><key>UDID</key><string>78897E40</string></dict>"
        "</plist>";

    ca = make_cert("SCEP CA", 0, NULL, now - 10 * DAY, now + 3650 * DAY, 1,
                   NULL, NULL);
    other = make_cert("Other CA", 0, NULL, now - 10 * DAY, now + 3650 * DAY,
                      1, NULL, NULL);
    dev = make_cert("new SCEP identity", 1, &ca, now - 60, now + 365 * DAY,
                    0, NULL, NULL);
    old = make_cert("expired identity", 0, &ca, now - 365 * DAY, now - 60, 0,
                    NULL, NULL);
    alien = make_cert("foreign identity", 0, &other, now - 60,
                      now + 365 * DAY, 0, NULL, NULL);

    v = verifier_of(ca.cert, NULL, 0);

    der = ngx_mdm_cms_sign((const unsigned char *) attrs, sizeof(attrs) - 1,
                           dev.cert, dev.key, NULL, &len);
    rc = ngx_mdm_cms_verify_attached(der, len, v, now, content,
                                     sizeof(content), &clen, &signer);
    is_rc(rc, NGX_MDM_X509_OK, "OTA phase 3: signed by our SCEP identity");
    ok(clen == sizeof(attrs) - 1 && memcmp(content, attrs, clen) == 0,
       "phase 3 content");
    ok(same_cert(signer, dev.cert), "phase 3 signer");
    X509_free(signer);
    ngx_mdm_x509_free(der);

    der = ngx_mdm_cms_sign((const unsigned char *) attrs, sizeof(attrs) - 1,
                           old.cert, old.key, NULL, &len);
    rc = ngx_mdm_cms_verify_attached(der, len, v, now, content,
                                     sizeof(content), &clen, NULL);
    is_rc(rc, NGX_MDM_X509_EXPIRED, "phase 3 with an expired identity");
    ngx_mdm_x509_free(der);

    der = ngx_mdm_cms_sign((const unsigned char *) attrs, sizeof(attrs) - 1,
                           alien.cert, alien.key, NULL, &len);
    rc = ngx_mdm_cms_verify_attached(der, len, v, now, content,
                                     sizeof(content), &clen, NULL);
    is_rc(rc, NGX_MDM_X509_UNTRUSTED, "phase 3 signed under another CA");
    ngx_mdm_x509_free(der);

    ngx_mdm_x509_verifier_free(v);
    pki_free(&ca);
    pki_free(&other);
    pki_free(&dev);
    pki_free(&old);
    pki_free(&alien);
}


static void
test_sign(void)
{
    int                       ret;
    BIO                      *in, *out;
    char                     *data, cmd[4096];
    char                      der_path[1100], ca_path[1100], out_path[1100];
    pki_t                     root, inter, signer;
    size_t                    len, dlen, olen;
    X509_ALGOR               *dig;
    X509_STORE               *store;
    unsigned char            *der, *got, *mem;
    CMS_SignerInfo           *si;
    STACK_OF(X509)           *chain, *certs;
    CMS_ContentInfo          *cms;
    const unsigned char      *p;
    ngx_mdm_x509_verifier_t  *v;

    data = (char *) read_file(vectors, PROFILE, &dlen);
    ok(data != NULL, "read the enrollment profile");

    if (data == NULL) {
        return;
    }

    root = make_cert("Root CA", 1, NULL, now - DAY, now + 3650 * DAY, 1, NULL,
                     NULL);
    inter = make_cert("SCEP CA", 1, &root, now - DAY, now + 3650 * DAY, 1,
                      NULL, NULL);
    signer = make_cert("profile signer", 1, &inter, now - DAY,
                       now + 365 * DAY, 0, NULL, NULL);

    /* the signer's own copy in the chain is skipped */
    chain = chain_of(signer.cert, inter.cert);

    der = ngx_mdm_cms_sign((unsigned char *) data, dlen, signer.cert,
                           signer.key, chain, &len);
    ok(der != NULL && len > dlen, "profile signed: %zu bytes", len);
    ngx_mdm_x509_chain_free(chain);

    if (der == NULL) {
        goto done;
    }

    p = der;
    cms = d2i_CMS_ContentInfo(NULL, &p, (long) len);
    ok(cms != NULL && CMS_is_detached(cms) == 0, "attached content");

    si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
    dig = NULL;
    CMS_SignerInfo_get0_algs(si, NULL, NULL, &dig, NULL);
    ok(dig && OBJ_obj2nid(dig->algorithm) == NID_sha256, "digest is SHA-256");

    certs = CMS_get1_certs(cms);
    ok(certs && sk_X509_num(certs) == 2, "signer and intermediate included");
    ngx_mdm_x509_chain_free(certs);

    store = X509_STORE_new();
    X509_STORE_add_cert(store, root.cert);
    out = BIO_new(BIO_s_mem());
    ret = CMS_verify(cms, NULL, store, NULL, out, CMS_BINARY);
    ok(ret == 1, "CMS_verify() accepts the profile against the root");
    olen = (size_t) BIO_get_mem_data(out, &mem);
    ok(olen == dlen && memcmp(mem, data, dlen) == 0,
       "CMS_verify() gives the exact profile bytes");
    BIO_free(out);
    X509_STORE_free(store);
    CMS_ContentInfo_free(cms);
    ERR_clear_error();

    got = malloc(len);
    v = verifier_of(root.cert, NULL, 0);
    is_rc(ngx_mdm_cms_verify_attached(der, len, v, now, got, len, &olen, NULL),
          NGX_MDM_X509_OK, "our own attached verification agrees");
    ok(olen == dlen && memcmp(got, data, dlen) == 0, "same content");
    ngx_mdm_x509_verifier_free(v);
    free(got);

    /* openssl cms -verify, as an admin would check a profile */

    snprintf(der_path, sizeof(der_path), "%s/profile.der", tmpdir);
    snprintf(ca_path, sizeof(ca_path), "%s/root.pem", tmpdir);
    snprintf(out_path, sizeof(out_path), "%s/profile.out", tmpdir);

    write_file(der_path, der, len);

    in = BIO_new_file(ca_path, "w");
    PEM_write_bio_X509(in, root.cert);
    BIO_free(in);

    if (system("openssl version > /dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd),
                 "openssl cms -verify -binary -inform DER -in %s -CAfile %s "
                 "-out %s 2>/dev/null", der_path, ca_path, out_path);
        ret = system(cmd);
        ok(ret == 0, "openssl cms -verify accepts the profile");

        got = read_file(tmpdir, "profile.out", &olen);
        ok(got && olen == dlen && memcmp(got, data, dlen) == 0,
           "openssl cms -verify gives the exact profile bytes");
        free(got);

    } else {
        ok(1, "# skip: no openssl binary");
        ok(1, "# skip: no openssl binary");
    }

    ngx_mdm_x509_free(der);

    /* the real SCEP test CA (RSA 4096, encrypted with "") as the signer */

    {
        X509      *x;
        EVP_PKEY  *key;

        x = load_vector_cert(SCEP_CA);
        key = ngx_mdm_x509_load_key(vector_path(SCEP_CA_KEY), "");

        der = ngx_mdm_cms_sign((unsigned char *) data, dlen, x, key, NULL,
                               &len);
        ok(der != NULL, "signed with the SCEP test CA");

        p = der;
        cms = der ? d2i_CMS_ContentInfo(NULL, &p, (long) len) : NULL;
        store = X509_STORE_new();
        X509_STORE_add_cert(store, x);
        X509_STORE_set_flags(store, X509_V_FLAG_NO_CHECK_TIME);

        /* its keyUsage is keyCertSign only: "-purpose any" */
        X509_STORE_set_purpose(store, X509_PURPOSE_ANY);

        ret = cms ? CMS_verify(cms, NULL, store, NULL, NULL, CMS_BINARY) : 0;
        ok(ret == 1, "CMS_verify() accepts it (expired test CA, any purpose)");
        X509_STORE_free(store);
        CMS_ContentInfo_free(cms);
        ERR_clear_error();

        ngx_mdm_x509_free(der);
        X509_free(x);
        EVP_PKEY_free(key);
    }

    /* empty data; a key that is not the certificate's */

    der = ngx_mdm_cms_sign(NULL, 0, signer.cert, signer.key, NULL, &len);
    ok(der != NULL, "sign empty data");
    ngx_mdm_x509_free(der);

    der = ngx_mdm_cms_sign((unsigned char *) data, dlen, signer.cert,
                           root.key, NULL, &len);
    ok(der == NULL, "sign with a mismatched key fails: %s",
       ngx_mdm_x509_error());

    ok(ERR_peek_error() == 0, "OpenSSL error queue left empty");

done:

    pki_free(&root);
    pki_free(&inter);
    pki_free(&signer);
    free(data);
}


static void
test_strings(void)
{
    int  i, all;

    all = 1;

    for (i = NGX_MDM_X509_OK; i <= NGX_MDM_X509_ERROR; i++) {
        if (strcmp(ngx_mdm_x509_rc_str((ngx_mdm_x509_rc_e) i),
                   "unknown result") == 0)
        {
            all = 0;
        }
    }

    ok(all, "every result has a name");
    ok(strcmp(ngx_mdm_x509_rc_str((ngx_mdm_x509_rc_e) 99), "unknown result")
       == 0, "an unknown result is named so");
}


static void
cleanup(void)
{
    char  cmd[256];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);

    if (system(cmd) != 0) {
        printf("# cannot remove %s\n", tmpdir);
    }
}


int
main(void)
{
    vectors = getenv("MDM_VECTORS");
    if (vectors == NULL || vectors[0] == '\0') {
        vectors = "../shared/vectors";
    }

    if (mkdtemp(tmpdir) == NULL) {
        printf("Bail out! mkdtemp() failed\n");
        return 1;
    }

    now = time(NULL);

    test_facts();
    test_apns();
    test_loading();
    test_client_cert();
    test_verify();
    test_mdm_signature();
    test_ota();
    test_ota_phase3();
    test_sign();
    test_strings();

    cleanup();

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
