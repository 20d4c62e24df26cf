
/*
 * scep_client: a SCEP device and load generator over the library's client
 * side (ngx_mdm_scep/ngx_mdm_scep_client.c).  The bench uses "gen" and
 * "run"; t/10-scep*.t use "request" and "reply" to send what scepclient
 * cannot (GetCert, GetCRL, CertPoll, EC keys, broken messages).
 *
 *   scep_client request -type pkcsreq|renewal|getcert|getcrl|certpoll
 *       -to CERT [-key FILE] [-keytype rsa:2048|ec:P-256|ec:P-384]
 *       [-signer CERT] [-cn CN] [-challenge X] [-san "DNS:a,URI:b"]
 *       [-tid ID] [-serial N] [-issuer CERT] [-subject CN]
 *       [-digest sha256] [-cipher aes128|des3|des] [-inner raw:FILE]
 *       [-inner-type signed] [-signer-out FILE] -out FILE
 *   scep_client reply -in FILE -ca CERT -signer CERT -key FILE
 *       [-out CERT.pem] [-crl-out CRL.der]
 *       prints "status=S failInfo=F certs=N crls=N serial=HEX"
 *   scep_client gen -n N -to CERT -challenge X -dir DIR [-keys K]
 *   scep_client run -url http://127.0.0.1:PORT/path?query -c C
 *       [-dir DIR -n N] [-requests N] [-seconds S] [-interval MS]
 *       [-verify CA.pem] (PKIOperation: open every answer afterwards)
 *       SIGTERM: stop sending, print the figures of what was answered
 *
 * -key generates the key into FILE when it does not exist.  "run" posts
 * DIR/msg_NNNNNN.der (or GETs the URL when there is no -dir) over C
 * keep-alive connections and prints one line of figures.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_scep_pki_int.h"


#define MAX_ARGS  32


/* "run" stops sending on SIGTERM and prints what it measured */
static volatile sig_atomic_t  stop;


typedef struct {
    const char   *name[MAX_ARGS];
    const char   *value[MAX_ARGS];
    int           n;
} args_t;


typedef struct {
    unsigned char  *data;
    size_t          len;
} blob_t;


/* one keep-alive connection of "run" */
typedef struct {
    int             fd;
    long            msg;          /* index being answered, -1 idle */
    size_t          sent;
    char           *req;
    size_t          req_len;
    char           *resp;
    size_t          resp_len;
    size_t          resp_size;
    double          start;
    double          next_at;      /* -interval: not before then */
} conn_t;


static void on_term(int signo);
static const char *arg(args_t *a, const char *name, const char *def);
static void die(const char *fmt, const char *s);
static blob_t read_blob(const char *path);
static void write_blob(const char *path, const unsigned char *p, size_t len);
static X509 *read_cert(const char *path);
static EVP_PKEY *load_or_make_key(const char *path, const char *type);
static int digest_nid(const char *name);
static int cipher_nid(const char *name);
static int cmd_request(args_t *a);
static int cmd_reply(args_t *a);
static int cmd_gen(args_t *a);
static int cmd_run(args_t *a);
static int bad_request(args_t *a, const ngx_mdm_scep_request_t *req,
    unsigned char **der, size_t *len);
static double now_ms(void);
static int cmp_double(const void *a, const void *b);
static int cmp_u64(const void *a, const void *b);


int
main(int argc, char **argv)
{
    int     i;
    args_t  a;

    if (argc < 2) {
        fprintf(stderr, "usage: scep_client request|reply|gen|run ...\n");
        return 2;
    }

    memset(&a, 0, sizeof(args_t));

    for (i = 2; i + 1 < argc && a.n < MAX_ARGS; i += 2) {
        a.name[a.n] = argv[i];
        a.value[a.n] = argv[i + 1];
        a.n++;
    }

    if (ngx_mdm_scep_init() != NGX_MDM_SCEP_OK) {
        die("cannot create the SCEP OIDs%s", "");
    }

    if (strcmp(argv[1], "request") == 0) {
        return cmd_request(&a);
    }

    if (strcmp(argv[1], "reply") == 0) {
        return cmd_reply(&a);
    }

    if (strcmp(argv[1], "gen") == 0) {
        return cmd_gen(&a);
    }

    if (strcmp(argv[1], "run") == 0) {
        return cmd_run(&a);
    }

    fprintf(stderr, "unknown command %s\n", argv[1]);

    return 2;
}


static void
on_term(int signo)
{
    stop = 1;
}


static const char *
arg(args_t *a, const char *name, const char *def)
{
    int  i;

    for (i = 0; i < a->n; i++) {
        if (strcmp(a->name[i], name) == 0) {
            return a->value[i];
        }
    }

    return def;
}


static void
die(const char *fmt, const char *s)
{
    fprintf(stderr, "scep_client: ");
    fprintf(stderr, fmt, s);
    fprintf(stderr, "\n");
    ERR_print_errors_fp(stderr);
    exit(1);
}


static blob_t
read_blob(const char *path)
{
    FILE    *f;
    long     n;
    blob_t   b;

    f = fopen(path, "rb");
    if (f == NULL) {
        die("cannot open %s", path);
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    b.data = malloc(n + 1);
    b.len = n;

    if (b.data == NULL || fread(b.data, 1, n, f) != (size_t) n) {
        die("cannot read %s", path);
    }

    fclose(f);

    return b;
}


static void
write_blob(const char *path, const unsigned char *p, size_t len)
{
    FILE  *f;

    f = fopen(path, "wb");

    if (f == NULL || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
        die("cannot write %s", path);
    }
}


/* PEM or DER */

static X509 *
read_cert(const char *path)
{
    BIO                  *bio;
    X509                 *x;
    blob_t                b;
    const unsigned char  *p;

    b = read_blob(path);
    bio = BIO_new_mem_buf(b.data, (int) b.len);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (x == NULL) {
        ERR_clear_error();
        p = b.data;
        x = d2i_X509(NULL, &p, (long) b.len);
    }

    free(b.data);

    if (x == NULL) {
        die("no certificate in %s", path);
    }

    return x;
}


static EVP_PKEY *
load_or_make_key(const char *path, const char *type)
{
    FILE      *f;
    EVP_PKEY  *key;

    if (path != NULL) {
        f = fopen(path, "r");

        if (f != NULL) {
            key = PEM_read_PrivateKey(f, NULL, NULL, (void *) "");
            fclose(f);

            if (key == NULL) {
                die("no private key in %s", path);
            }

            return key;
        }
    }

    if (strncmp(type, "ec:", 3) == 0) {
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", type + 3);

    } else {
        key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA",
                                (size_t) atoi(strncmp(type, "rsa:", 4) == 0
                                              ? type + 4 : "2048"));
    }

    if (key == NULL) {
        die("cannot generate a %s key", type);
    }

    if (path != NULL) {
        f = fopen(path, "w");

        if (f == NULL
            || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
            || fclose(f) != 0)
        {
            die("cannot write %s", path);
        }
    }

    return key;
}


static int
digest_nid(const char *name)
{
    int  nid;

    nid = OBJ_sn2nid(name);

    return nid == NID_undef ? NID_sha256 : nid;
}


static int
cipher_nid(const char *name)
{
    if (strcmp(name, "des3") == 0) {
        return NID_des_ede3_cbc;
    }

    if (strcmp(name, "des") == 0) {
        /* single DES lives in OpenSSL 3's legacy provider */
        if (OSSL_PROVIDER_load(NULL, "default") == NULL
            || OSSL_PROVIDER_load(NULL, "legacy") == NULL)
        {
            die("no legacy provider for DES%s", "");
        }

        return NID_des_cbc;
    }

    if (strcmp(name, "aes256") == 0) {
        return NID_aes_256_cbc;
    }

    return NID_aes_128_cbc;
}


static int
cmd_request(args_t *a)
{
    int                      i, type, rc;
    FILE                    *f;
    char                     tid[41];
    size_t                   len;
    X509                    *to, *signer, *issuer;
    EVP_PKEY                *key;
    X509_REQ                *csr;
    X509_NAME               *subject;
    const char              *t, *out, *signer_out;
    ASN1_INTEGER            *serial;
    unsigned char            nonce[16], *der;
    ngx_mdm_scep_request_t   req;

    static const struct {
        const char  *name;
        int          type;
    } types[] = {
        { "pkcsreq", NGX_MDM_SCEP_PKCS_REQ },
        { "renewal", NGX_MDM_SCEP_RENEWAL_REQ },
        { "certpoll", NGX_MDM_SCEP_CERT_POLL },
        { "getcert", NGX_MDM_SCEP_GET_CERT },
        { "getcrl", NGX_MDM_SCEP_GET_CRL },
        { NULL, 0 }
    };

    t = arg(a, "-type", "pkcsreq");
    type = 0;

    for (i = 0; types[i].name; i++) {
        if (strcmp(types[i].name, t) == 0) {
            type = types[i].type;
        }
    }

    out = arg(a, "-out", NULL);

    if (type == 0 || arg(a, "-to", NULL) == NULL || out == NULL) {
        die("request needs -type, -to and -out%s", "");
    }

    to = read_cert(arg(a, "-to", NULL));
    key = load_or_make_key(arg(a, "-key", NULL),
                           arg(a, "-keytype", "rsa:2048"));

    signer = arg(a, "-signer", NULL)
             ? read_cert(arg(a, "-signer", NULL))
             : ngx_mdm_scep_client_signer(key, "SCEP SIGNER", 3600);

    if (signer == NULL) {
        die("no signer%s", "");
    }

    signer_out = arg(a, "-signer-out", NULL);

    if (signer_out != NULL) {
        f = fopen(signer_out, "w");
        if (f == NULL || !PEM_write_X509(f, signer) || fclose(f) != 0) {
            die("cannot write %s", signer_out);
        }
    }

    memset(&req, 0, sizeof(ngx_mdm_scep_request_t));

    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        die("RAND_bytes%s", "");
    }

    snprintf(tid, sizeof(tid), "%02X%02X%02X%02X%02X%02X%02X%02X"
             "%02X%02X%02X%02X%02X%02X%02X%02X",
             nonce[0], nonce[1], nonce[2], nonce[3], nonce[4], nonce[5],
             nonce[6], nonce[7], nonce[8], nonce[9], nonce[10], nonce[11],
             nonce[12], nonce[13], nonce[14], nonce[15]);

    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        die("RAND_bytes%s", "");
    }

    req.message_type = type;
    req.transaction_id = arg(a, "-tid", tid);
    req.sender_nonce = nonce;
    req.sender_nonce_len = sizeof(nonce);
    req.digest_nid = digest_nid(arg(a, "-digest", "sha256"));
    req.cipher_nid = cipher_nid(arg(a, "-cipher", "aes128"));
    req.signer = signer;
    req.signer_key = key;
    req.recipient = to;

    csr = NULL;
    serial = NULL;
    subject = NULL;

    if (type == NGX_MDM_SCEP_PKCS_REQ || type == NGX_MDM_SCEP_RENEWAL_REQ) {
        csr = ngx_mdm_scep_client_csr(key, arg(a, "-cn", "scep-device"),
                                      arg(a, "-challenge", NULL),
                                      arg(a, "-san", NULL));
        if (csr == NULL) {
            die("cannot make the CSR%s", "");
        }

        req.csr = csr;

    } else {
        issuer = read_cert(arg(a, "-issuer", arg(a, "-to", NULL)));
        req.issuer = X509_get_subject_name(issuer);

        serial = ASN1_INTEGER_new();
        if (serial == NULL
            || !ASN1_INTEGER_set_uint64(serial,
                          strtoull(arg(a, "-serial", "1"), NULL, 0)))
        {
            die("bad -serial%s", "");
        }

        req.serial = serial;

        subject = X509_NAME_new();
        if (subject == NULL
            || !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                         (const unsigned char *) arg(a, "-subject",
                                                     "scep-device"),
                         -1, -1, 0))
        {
            die("bad -subject%s", "");
        }

        req.subject = subject;
    }

    if (arg(a, "-inner", NULL) || arg(a, "-inner-type", NULL)) {
        rc = bad_request(a, &req, &der, &len);

    } else {
        rc = ngx_mdm_scep_client_request(&req, &der, &len);
    }

    if (rc != NGX_MDM_SCEP_OK) {
        die("cannot build the request%s", "");
    }

    write_blob(out, der, len);
    printf("transactionID=%s\n", req.transaction_id);

    return 0;
}


/*
 * A request whose envelope is wrong on purpose: -inner raw:FILE puts
 * FILE's bytes where the messageData goes, -inner-type signed labels the
 * encrypted content as signedData instead of data.
 */

static int
bad_request(args_t *a, const ngx_mdm_scep_request_t *req,
    unsigned char **der, size_t *len)
{
    int                    n, rc;
    BIO                   *in;
    blob_t                 data;
    size_t                 env_len;
    const char            *inner;
    unsigned char         *env, *csr;
    STACK_OF(X509)        *to;
    CMS_ContentInfo       *cms;
    ngx_mdm_scep_attrs_t   attrs;

    inner = arg(a, "-inner", NULL);

    if (inner != NULL && strncmp(inner, "raw:", 4) == 0) {
        data = read_blob(inner + 4);

    } else {
        csr = NULL;
        n = i2d_X509_REQ(req->csr, &csr);
        if (n <= 0) {
            die("no CSR for -inner-type%s", "");
        }

        data.data = csr;
        data.len = n;
    }

    env = NULL;
    env_len = 0;

    if (arg(a, "-inner-type", NULL) == NULL) {
        if (ngx_mdm_scep_envelope(req->recipient, req->cipher_nid, data.data,
                                  data.len, &env, &env_len)
            != NGX_MDM_SCEP_OK)
        {
            die("cannot envelope%s", "");
        }

    } else {
        to = sk_X509_new_null();
        in = BIO_new_mem_buf(data.data, (int) data.len);

        if (to == NULL || in == NULL || !sk_X509_push(to, req->recipient)) {
            die("out of memory%s", "");
        }

        cms = CMS_encrypt(to, in, EVP_get_cipherbynid(req->cipher_nid),
                          CMS_BINARY | CMS_PARTIAL);

        if (cms == NULL
            || !CMS_set1_eContentType(cms, OBJ_nid2obj(NID_pkcs7_signed))
            || CMS_final(cms, in, NULL, CMS_BINARY) != 1)
        {
            die("cannot envelope%s", "");
        }

        n = i2d_CMS_ContentInfo(cms, &env);
        if (n <= 0) {
            die("cannot encode%s", "");
        }

        env_len = n;
        CMS_ContentInfo_free(cms);
        BIO_free(in);
        sk_X509_free(to);
    }

    memset(&attrs, 0, sizeof(ngx_mdm_scep_attrs_t));

    attrs.message_type = req->message_type;
    attrs.pki_status = -1;
    attrs.fail_info = -1;
    attrs.transaction_id = req->transaction_id;
    attrs.transaction_id_len = strlen(req->transaction_id);
    attrs.sender_nonce = req->sender_nonce;
    attrs.sender_nonce_len = req->sender_nonce_len;

    rc = ngx_mdm_scep_sign(req->signer, req->signer_key, req->digest_nid,
                           &attrs, env, env_len, NULL, der, len);

    OPENSSL_free(env);

    return rc;
}


static int
cmd_reply(args_t *a)
{
    int                  rc, i;
    FILE                *f;
    char                 hex[80];
    blob_t               b;
    X509                *ca, *signer, *x;
    EVP_PKEY            *key;
    const char          *out;
    unsigned char       *der;
    ngx_mdm_scep_msg_t   msg;

    if (arg(a, "-in", NULL) == NULL || arg(a, "-ca", NULL) == NULL
        || arg(a, "-signer", NULL) == NULL || arg(a, "-key", NULL) == NULL)
    {
        die("reply needs -in, -ca, -signer and -key%s", "");
    }

    b = read_blob(arg(a, "-in", NULL));
    ca = read_cert(arg(a, "-ca", NULL));
    signer = read_cert(arg(a, "-signer", NULL));
    key = load_or_make_key(arg(a, "-key", NULL), "rsa:2048");

    rc = ngx_mdm_scep_client_parse(b.data, b.len, ca, signer, key, &msg);

    if (rc != NGX_MDM_SCEP_OK) {
        printf("error=%d reason=\"%s\"\n", rc, msg.error ? msg.error : "");
        return 1;
    }

    hex[0] = '\0';
    x = NULL;

    if (msg.certs != NULL) {
        /* the issued certificate: the one that is not a CA */
        for (i = 0; i < sk_X509_num(msg.certs); i++) {
            if (!X509_check_ca(sk_X509_value(msg.certs, i))) {
                x = sk_X509_value(msg.certs, i);
                break;
            }
        }

        if (x != NULL) {
            ngx_mdm_scep_serial_hex(X509_get0_serialNumber(x), hex,
                                    sizeof(hex));
        }
    }

    printf("status=%d failInfo=%d certs=%d crls=%d serial=%s "
           "transactionID=%s\n",
           msg.pki_status, msg.fail_info,
           msg.certs ? sk_X509_num(msg.certs) : 0,
           msg.crls ? sk_X509_CRL_num(msg.crls) : 0, hex,
           msg.transaction_id);

    out = arg(a, "-out", NULL);

    if (out != NULL && x != NULL) {
        f = fopen(out, "w");
        if (f == NULL || !PEM_write_X509(f, x) || fclose(f) != 0) {
            die("cannot write %s", out);
        }
    }

    out = arg(a, "-crl-out", NULL);

    if (out != NULL && msg.crls != NULL && sk_X509_CRL_num(msg.crls) > 0) {
        der = NULL;
        rc = i2d_X509_CRL(sk_X509_CRL_value(msg.crls, 0), &der);
        if (rc <= 0) {
            die("cannot encode the CRL%s", "");
        }

        write_blob(out, der, rc);
        OPENSSL_free(der);
    }

    ngx_mdm_scep_msg_free(&msg);

    return 0;
}


/*
 * N distinct PKCSReq messages (own transactionID, nonces and CN) over K
 * device keys: RSA key generation would take longer than the bench.
 */

static int
cmd_gen(args_t *a)
{
    int                      n, k, i;
    FILE                    *f;
    char                     path[1024], cn[64], tid[64];
    size_t                   len;
    X509                    *to, **signers;
    EVP_PKEY               **keys;
    X509_REQ                *csr;
    const char              *dir;
    unsigned char            nonce[16], *der;
    ngx_mdm_scep_request_t   req;

    n = atoi(arg(a, "-n", "1000"));
    k = atoi(arg(a, "-keys", "16"));
    dir = arg(a, "-dir", NULL);

    if (dir == NULL || arg(a, "-to", NULL) == NULL || n < 1 || k < 1) {
        die("gen needs -n, -to and -dir%s", "");
    }

    to = read_cert(arg(a, "-to", NULL));
    keys = calloc(k, sizeof(EVP_PKEY *));
    signers = calloc(k, sizeof(X509 *));

    if (keys == NULL || signers == NULL) {
        die("out of memory%s", "");
    }

    for (i = 0; i < k; i++) {
        snprintf(path, sizeof(path), "%s/key_%d.pem", dir, i);
        keys[i] = load_or_make_key(path, arg(a, "-keytype", "rsa:2048"));

        snprintf(path, sizeof(path), "%s/signer_%d.pem", dir, i);
        signers[i] = ngx_mdm_scep_client_signer(keys[i], "SCEP SIGNER",
                                                86400);
        f = fopen(path, "w");

        if (signers[i] == NULL || f == NULL
            || !PEM_write_X509(f, signers[i]) || fclose(f) != 0)
        {
            die("cannot write %s", path);
        }
    }

    for (i = 0; i < n; i++) {
        if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
            die("RAND_bytes%s", "");
        }

        snprintf(cn, sizeof(cn), "bench-device-%06d", i);
        snprintf(tid, sizeof(tid), "bench-%06d-%02x%02x%02x%02x", i,
                 nonce[0], nonce[1], nonce[2], nonce[3]);

        csr = ngx_mdm_scep_client_csr(keys[i % k], cn,
                                      arg(a, "-challenge", NULL), NULL);
        if (csr == NULL) {
            die("cannot make a CSR%s", "");
        }

        memset(&req, 0, sizeof(ngx_mdm_scep_request_t));
        req.message_type = NGX_MDM_SCEP_PKCS_REQ;
        req.transaction_id = tid;
        req.sender_nonce = nonce;
        req.sender_nonce_len = sizeof(nonce);
        req.digest_nid = NID_sha256;
        req.cipher_nid = NID_aes_128_cbc;
        req.signer = signers[i % k];
        req.signer_key = keys[i % k];
        req.recipient = to;
        req.csr = csr;

        if (ngx_mdm_scep_client_request(&req, &der, &len)
            != NGX_MDM_SCEP_OK)
        {
            die("cannot build a request%s", "");
        }

        snprintf(path, sizeof(path), "%s/msg_%06d.der", dir, i);
        write_blob(path, der, len);

        OPENSSL_free(der);
        X509_REQ_free(csr);
    }

    printf("%d messages over %d keys in %s\n", n, k, dir);

    return 0;
}


static double
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


static int
cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return (x > y) - (x < y);
}


/*
 * The load: C connections, each sending its next request when the last
 * answer is complete (closed loop).  Answers need a Content-Length, as
 * nginx sends for these.
 */

static int
cmd_run(args_t *a)
{
    int                   c, i, j, ep, n, total, ok, failed, status, dup;
    int                   port, nev, k, keys, done, opened, eof;
    char                  host[64], path[2048], file[1024], *p, *q, *e;
    char                  head[4096];
    long                  next;
    double                t0, t1, *lat, seconds, limit, interval, cpu, cpu0;
    size_t                hlen, clen;
    ssize_t               r;
    blob_t               *bodies, *answers;
    conn_t               *conns, *cn;
    int                  *statuses;
    uint64_t             *serials;
    const char           *url, *dir, *verify;
    struct sockaddr_in    sin;
    struct rusage         ru;
    struct epoll_event    ev, evs[256];

    url = arg(a, "-url", NULL);
    c = atoi(arg(a, "-c", "1"));
    dir = arg(a, "-dir", NULL);
    verify = arg(a, "-verify", NULL);
    limit = atof(arg(a, "-seconds", "0")) * 1000;
    interval = atof(arg(a, "-interval", "0"));

    if (url == NULL || c < 1
        || sscanf(url, "http://%63[^:]:%d%2047s", host, &port, path) != 3)
    {
        die("run needs -url http://HOST:PORT/path and -c%s", "");
    }

    n = atoi(arg(a, "-n", "0"));
    total = dir ? n : atoi(arg(a, "-requests", "10000"));

    if (total < 1) {
        die("nothing to send%s", "");
    }

    bodies = calloc(total, sizeof(blob_t));
    answers = calloc(total, sizeof(blob_t));
    lat = calloc(total, sizeof(double));
    statuses = calloc(total, sizeof(int));
    conns = calloc(c, sizeof(conn_t));

    if (!bodies || !answers || !lat || !statuses || !conns) {
        die("out of memory%s", "");
    }

    if (dir) {
        for (i = 0; i < total; i++) {
            snprintf(file, sizeof(file), "%s/msg_%06d.der", dir, i);
            bodies[i] = read_blob(file);
        }
    }

    getrusage(RUSAGE_SELF, &ru);
    cpu0 = ru.ru_utime.tv_sec * 1000.0 + ru.ru_utime.tv_usec / 1000.0
           + ru.ru_stime.tv_sec * 1000.0 + ru.ru_stime.tv_usec / 1000.0;

    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);

    ep = epoll_create1(0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    inet_pton(AF_INET, host, &sin.sin_addr);

    next = 0;
    done = 0;
    opened = 0;
    t0 = now_ms();

    for (i = 0; i < c; i++) {
        cn = &conns[i];
        cn->fd = -1;
        cn->msg = -1;
        cn->req = malloc(8192 + (dir ? 65536 : 0));
        cn->resp_size = 65536;
        cn->resp = malloc(cn->resp_size);
    }

    while (done < total) {

        /* idle connections take the next request */

        for (i = 0; i < c; i++) {
            cn = &conns[i];

            if (cn->msg >= 0 || next >= total || stop
                || (limit > 0 && now_ms() - t0 > limit)
                || (interval > 0 && now_ms() < cn->next_at))
            {
                continue;
            }

            if (cn->fd < 0) {
                cn->fd = socket(AF_INET, SOCK_STREAM, 0);
                k = 1;
                setsockopt(cn->fd, IPPROTO_TCP, TCP_NODELAY, &k, sizeof(k));

                if (connect(cn->fd, (struct sockaddr *) &sin, sizeof(sin))
                    != 0)
                {
                    die("cannot connect to %s", url);
                }

                fcntl(cn->fd, F_SETFL, O_NONBLOCK);
                ev.events = EPOLLIN;
                ev.data.u32 = i;
                epoll_ctl(ep, EPOLL_CTL_ADD, cn->fd, &ev);
                opened++;
            }

            cn->msg = next++;
            cn->sent = 0;
            cn->resp_len = 0;

            if (dir) {
                hlen = snprintf(cn->req, 8192,
                                "POST %s HTTP/1.1\r\nHost: %s\r\n"
                                "Content-Type: application/x-pki-message\r\n"
                                "Content-Length: %zu\r\n\r\n",
                                path, host, bodies[cn->msg].len);
                memcpy(cn->req + hlen, bodies[cn->msg].data,
                       bodies[cn->msg].len);
                cn->req_len = hlen + bodies[cn->msg].len;

            } else {
                cn->req_len = snprintf(cn->req, 8192,
                                       "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                                       path, host);
            }

            cn->start = now_ms();
            cn->next_at = cn->start + interval;

            while (cn->sent < cn->req_len) {
                r = write(cn->fd, cn->req + cn->sent,
                          cn->req_len - cn->sent);

                if (r < 0 && errno == EAGAIN) {
                    continue;   /* small requests: a short spin */
                }

                if (r <= 0) {
                    die("write failed: %s", strerror(errno));
                }

                cn->sent += r;
            }
        }

        if ((stop || (limit > 0 && now_ms() - t0 > limit)) && next < total) {
            total = next;
        }

        if (done >= total) {
            break;
        }

        nev = epoll_wait(ep, evs, 256, interval > 0 ? 1 : 10000);

        if (nev < 0 && errno == EINTR) {
            continue;
        }

        if (nev == 0 && interval > 0) {
            continue;
        }

        if (nev <= 0) {
            die("no answer for 10 s%s", "");
        }

        for (j = 0; j < nev; j++) {
            cn = &conns[evs[j].data.u32];
            eof = 0;

            for ( ;; ) {
                if (cn->resp_len == cn->resp_size) {
                    cn->resp_size *= 2;
                    cn->resp = realloc(cn->resp, cn->resp_size);
                }

                r = read(cn->fd, cn->resp + cn->resp_len,
                         cn->resp_size - cn->resp_len);

                if (r < 0 && errno == EAGAIN) {
                    break;
                }

                if (r == 0) {
                    eof = 1;
                    break;
                }

                if (r < 0) {
                    die("connection failed: %s", strerror(errno));
                }

                cn->resp_len += r;
            }

            /* complete? */

            e = memmem(cn->resp, cn->resp_len, "\r\n\r\n", 4);

            if (eof && (e == NULL || cn->msg < 0)) {
                if (cn->msg >= 0) {
                    die("connection closed by the server%s", "");
                }

                epoll_ctl(ep, EPOLL_CTL_DEL, cn->fd, NULL);
                close(cn->fd);
                cn->fd = -1;
                continue;
            }

            if (e == NULL || cn->msg < 0) {
                continue;
            }

            hlen = e + 4 - cn->resp;
            memcpy(head, cn->resp, hlen < sizeof(head) ? hlen : 0);
            head[hlen < sizeof(head) ? hlen : 0] = '\0';

            p = strcasestr(head, "\r\nContent-Length:");
            if (p == NULL) {
                die("an answer without Content-Length%s", "");
            }

            clen = strtoul(p + 17, NULL, 10);

            if (cn->resp_len < hlen + clen) {
                continue;
            }

            status = atoi(head + 9);
            lat[done] = now_ms() - cn->start;
            statuses[cn->msg] = status;

            answers[cn->msg].data = malloc(clen ? clen : 1);
            answers[cn->msg].len = clen;
            memcpy(answers[cn->msg].data, cn->resp + hlen, clen);

            q = cn->resp + hlen + clen;
            if (q != cn->resp + cn->resp_len) {
                die("more bytes than one answer%s", "");
            }

            cn->msg = -1;
            cn->resp_len = 0;
            done++;

            /* keepalive_requests reached: the next request reconnects */
            if (eof || strcasestr(head, "\r\nConnection: close") != NULL) {
                epoll_ctl(ep, EPOLL_CTL_DEL, cn->fd, NULL);
                close(cn->fd);
                cn->fd = -1;
            }
        }
    }

    t1 = now_ms();
    seconds = (t1 - t0) / 1000;

    /* this process's CPU for the run alone, before any verification */
    getrusage(RUSAGE_SELF, &ru);
    cpu = ru.ru_utime.tv_sec * 1000.0 + ru.ru_utime.tv_usec / 1000.0
          + ru.ru_stime.tv_sec * 1000.0 + ru.ru_stime.tv_usec / 1000.0
          - cpu0;

    ok = 0;
    failed = 0;

    for (i = 0; i < total; i++) {
        if (statuses[i] == 200) {
            ok++;

        } else {
            failed++;
        }
    }

    qsort(lat, total, sizeof(double), cmp_double);

    printf("requests=%d ok=%d failed=%d concurrency=%d connections=%d "
           "seconds=%.3f rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f "
           "cpu_ms=%.0f",
           total, ok, failed, c, opened, seconds, total / seconds,
           lat[total / 2], lat[(int) (total * 0.99)], lat[total - 1], cpu);

    /* PKIOperation: open every answer as the device would, count serials */

    if (dir && verify) {
        X509                *ca, **signers;
        EVP_PKEY           **pkeys;
        ngx_mdm_scep_msg_t   msg;

        ca = read_cert(verify);
        keys = atoi(arg(a, "-keys", "16"));
        signers = calloc(keys, sizeof(X509 *));
        pkeys = calloc(keys, sizeof(EVP_PKEY *));
        serials = calloc(total, sizeof(uint64_t));

        for (k = 0; k < keys; k++) {
            snprintf(file, sizeof(file), "%s/signer_%d.pem", dir, k);
            signers[k] = read_cert(file);
            snprintf(file, sizeof(file), "%s/key_%d.pem", dir, k);
            pkeys[k] = load_or_make_key(file, "rsa:2048");
        }

        j = 0;

        for (i = 0; i < total; i++) {
            if (statuses[i] != 200
                || ngx_mdm_scep_client_parse(answers[i].data, answers[i].len,
                                             ca, signers[i % keys],
                                             pkeys[i % keys], &msg)
                   != NGX_MDM_SCEP_OK)
            {
                continue;
            }

            if (msg.pki_status == NGX_MDM_SCEP_SUCCESS && msg.certs
                && sk_X509_num(msg.certs) > 0
                && ASN1_INTEGER_get_uint64(&serials[j],
                       X509_get0_serialNumber(sk_X509_value(msg.certs, 0)))
                   == 1)
            {
                j++;
            }

            ngx_mdm_scep_msg_free(&msg);
        }

        qsort(serials, j, sizeof(uint64_t), cmp_u64);

        for (i = 1, dup = 0; i < j; i++) {
            if (serials[i] == serials[i - 1]) {
                dup++;
            }
        }

        printf(" issued=%d duplicate_serials=%d", j, dup);
    }

    printf("\n");

    return 0;
}
