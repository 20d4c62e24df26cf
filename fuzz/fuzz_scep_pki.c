/* sources: ngx_mdm_scep/ngx_mdm_scep_pki.c ngx_mdm_scep/ngx_mdm_scep_ca.c ngx_mdm_scep/ngx_mdm_scep_client.c */

/*
 * What a SCEP server and a device read from the network, by the first
 * input byte modulo 3: 0 a pkiMessage for the CA, 1 a CertRep for the
 * device, 2 a CSR, which is sent in a valid PKCSReq so that its hostile
 * contents reach the checks and the issuer behind the envelope.  Whatever
 * parses is answered (issue + CertRep) to fuzz the builders with hostile
 * transactionIDs, nonces, subjects, SANs and recipient certificates.
 *
 * The CA key below is fixed and TEST-ONLY, so that seeds made against it
 * open their envelopes; the certificates are rebuilt at start-up with the
 * same names and serials.  To regenerate the seeds:
 *   SCEP_FUZZ_SEEDS=fuzz/corpus/fuzz_scep_pki build/fuzz/fuzz_scep_pki
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ngx_mdm_scep_pki.h"


static const char  fuzz_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCVx7tw1uknVi/i\n"
    "C6bEbkAQZM1LZ4GU1qIqBSpyrEjuh2m5P+EWxJT4c886QGBH7Kbu4Tfh3EjMDKM4\n"
    "fyL/9HkOnshoDQ2Qhq19ajq7ItCkDDfBO97QD4zkKcnt2vqG7cjboS8IuEIgHzsH\n"
    "CnjTGSbF3j9Edxb3EDUjYvXVDPgl80U/AMShcj/u+JJQBAipAuTfb8um6yvZzUAB\n"
    "jYncqpEuP+16D5WV1SujSXNdJdCfJyRDSF7PqTLcWS19EGaIhps5wSqCgQR+jib6\n"
    "+Uuw/z9ZyLG5ooJbmU697uWV52t8ym5CPCq6zwpQIcaLDCHpARvZ3Y6PY2zlnu2i\n"
    "3z1fpDIJAgMBAAECggEABA5m151NBCPejm8arZV/cPzh3b8TBc5dkZNr57NzEtlM\n"
    "9izc3NUnDvwdP7/FkRJqH5cEKz7gI9KFyxO6WsHVU3LeYjRUSovd1UMpYwRZhSUl\n"
    "j2Xz2KD12P9UDiJ7iBLsI8ffh7YXEwVK1RvQqNrfWhrKONbxeBsSwqoSlpn60Grr\n"
    "C2w5OpHTm7b3//TU+xB3xHOib2za4SKFsngLel/x6+7xV70MOKiXIc1tDBagZ/De\n"
    "OOB5p9QrIBMKeuuB2Uh7dMyZfskqFU236lkToTpG1SqeM7AGY7QegNFhelY1SmUS\n"
    "C+fwTzem9b9KtmwGBZtbxt1TUPivI8XA4E0XYNKyGQKBgQDNXvgbjn4vvspTJ96L\n"
    "oV6yC11IxUZ2WOJJVK0uGY1SMiRShH0GW8Fv2uDXt4sGfVEwdm0ZM64SDWqFzDpU\n"
    "s6fzvpmF7f018GFs4akfUoB7YOy8nPbfzfhm9EzdSJgccGIwLKimTFv+IhoVWmDh\n"
    "tQkPu2PVzrFfU2cPFBcsWDy3LQKBgQC6tGk03xFFHjARG3pJMOCJ6YescAmVjl7J\n"
    "oD6gT6+nYhqzNp2yGlj/lzDVUPvEWlZ+ZwshaNmAyc/UAHU4+XuTXgKzBUM7E2JH\n"
    "tTZn5VkWH9W54cOjvw2bkQMJ23RV9QMwBj2wKVEBctHZSB8tyzJWLXYpaJbriXuw\n"
    "M3ukYZ1vzQKBgA6OTZ1+Yvk1V5e/OqnA3TpXTdxLhyv6Lsetxbx/uSF7RlHG7CmY\n"
    "NUSdSdRgQO1L0oZRzne7zvmek88542R/e0buWmlArfK1v+H8uITszwhvnTfdFC5W\n"
    "peV+KTiB3a4eVQc/ExD+VoLTne+ngTheIW9JA9FyneW4vpQ2A1J0SpFdAoGACHyY\n"
    "56lYHJ8xqiVompkZK8usuh7hoKW3E00wa5MTtfUUp57M7kKaVwvlUVz8BMHiep5u\n"
    "eBdPA7aotsdKjMtyXZGBZ+fOVYodBotrLK/VK9dInMlxXikaEj82NyV9lUas3Wr7\n"
    "NN276+fvOAQ6Ppek8xvf6iPx8ETwlWLRtPgm8uUCgYA0yKn0HVDCot0euyqx5J7w\n"
    "O1haE2TbwT2ZP9sxKJOmZoGyzTXOUE6ZDgtuJ/pP52Tn55YPx6fYaUcULvHzIt4Q\n"
    "vCG8XWIF10qbEQ7f5RQ85DjX4icLW4+8xhD5r9+KyyGccylxikUFket0OQigd8Qh\n"
    "22qEWswqfq12gQOrBQeJlg==\n"
    "-----END PRIVATE KEY-----\n";


static ngx_mdm_scep_ca_t   fuzz_ca;
static X509               *fuzz_device;
static EVP_PKEY           *fuzz_key;


static void
fuzz_die(const char *what)
{
    fprintf(stderr, "fuzz_scep_pki: %s\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}


static X509 *
fuzz_ca_cert(EVP_PKEY *key)
{
    X509            *x;
    X509V3_CTX       ctx;
    X509_EXTENSION  *ext;

    x = ngx_mdm_scep_client_signer(key, "fuzz SCEP CA", 10L * 365 * 86400);
    if (x == NULL) {
        return NULL;
    }

    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_nconf_nid(NULL, &ctx, NID_basic_constraints,
                               "critical,CA:TRUE");

    if (ext == NULL || !X509_add_ext(x, ext, -1)
        || X509_sign(x, key, EVP_sha256()) <= 0)
    {
        X509_EXTENSION_free(ext);
        X509_free(x);
        return NULL;
    }

    X509_EXTENSION_free(ext);

    return x;
}


static void
fuzz_write(const char *dir, const char *name, unsigned char mode,
    const unsigned char *der, size_t len)
{
    FILE  *f;
    char   path[1024];

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    f = fopen(path, "wb");
    if (f == NULL) {
        fuzz_die(path);
    }

    fputc(mode, f);
    fwrite(der, 1, len, f);
    fclose(f);
}


static void
fuzz_seeds(const char *dir)
{
    int                     i;
    FILE                   *f;
    char                    path[1024];
    long                    n;
    size_t                  len, rep_len;
    X509                   *cert;
    X509_REQ               *csr;
    const char             *err, *vectors;
    unsigned char           nonce[8], *der, *rep_der, *buf;
    ngx_mdm_scep_msg_t      msg;
    ngx_mdm_scep_reply_t    rep;
    ngx_mdm_scep_issue_t    iss;
    ngx_mdm_scep_request_t  req;

    static const struct {
        const char  *name;
        int          type;
        int          digest;
        int          cipher;
    } seeds[] = {
        { "pkcsreq_sha256_aes128.der", NGX_MDM_SCEP_PKCS_REQ, NID_sha256,
          NID_aes_128_cbc },
        { "getcrl_sha512_aes256.der", NGX_MDM_SCEP_GET_CRL, NID_sha512,
          NID_aes_256_cbc }
    };

    memset(nonce, 0x5a, sizeof(nonce));
    csr = ngx_mdm_scep_client_csr(fuzz_key, "device-1", "challenge",
                                  "DNS:device.example");

    for (i = 0; i < 2; i++) {
        memset(&req, 0, sizeof(req));
        req.message_type = seeds[i].type;
        req.transaction_id = "140BC832976B3D0300BE8F5C2E35CEDF66E73D7B";
        req.sender_nonce = nonce;
        req.sender_nonce_len = sizeof(nonce);
        req.digest_nid = seeds[i].digest;
        req.cipher_nid = seeds[i].cipher;
        req.signer = fuzz_device;
        req.signer_key = fuzz_key;
        req.recipient = fuzz_ca.cert;
        req.csr = csr;
        req.issuer = X509_get_subject_name(fuzz_ca.cert);
        req.serial = X509_get0_serialNumber(fuzz_ca.cert);

        if (ngx_mdm_scep_client_request(&req, &der, &len)
            != NGX_MDM_SCEP_OK)
        {
            fuzz_die("cannot build a seed request");
        }

        fuzz_write(dir, seeds[i].name, 0, der, len);

        if (i == 0) {
            /* the CertRep SUCCESS that answers it, for the device side */

            if (ngx_mdm_scep_parse(&fuzz_ca, der, len, &msg)
                != NGX_MDM_SCEP_OK)
            {
                fuzz_die(msg.error);
            }

            memset(&iss, 0, sizeof(iss));
            iss.serial.value = 4242;
            iss.validity = 365 * 86400;

            if (ngx_mdm_scep_issue(&fuzz_ca, msg.csr, &iss, &cert, &err)
                != NGX_MDM_SCEP_OK)
            {
                fuzz_die(err);
            }

            ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
            rep.cert = cert;

            if (ngx_mdm_scep_certrep(&fuzz_ca, &rep, &rep_der, &rep_len)
                != NGX_MDM_SCEP_OK)
            {
                fuzz_die("cannot build the seed CertRep");
            }

            fuzz_write(dir, "certrep_success.der", 1, rep_der, rep_len);

            OPENSSL_free(rep_der);
            X509_free(cert);
            ngx_mdm_scep_msg_free(&msg);
        }

        OPENSSL_free(der);
    }

    der = NULL;
    len = i2d_X509_REQ(csr, &der);
    fuzz_write(dir, "csr_rsa2048_san_challenge.der", 2, der, len);
    OPENSSL_free(der);
    X509_REQ_free(csr);

    /* the real Apple request (its envelope is for an NDES CA) */

    vectors = getenv("MDM_VECTORS");
    snprintf(path, sizeof(path), "%s/scep/commandment_mdmclient-"
             "PKIOperation.der", vectors ? vectors : "../shared/vectors");

    f = fopen(path, "rb");
    if (f == NULL) {
        fuzz_die(path);
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n);

    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        fuzz_die("cannot read the commandment vector");
    }

    fclose(f);
    fuzz_write(dir, "commandment_mdmclient_pkcsreq.der", 0, buf, n);
    free(buf);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    BIO         *bio;
    const char  *err, *seeds;

    bio = BIO_new_mem_buf(fuzz_key_pem, -1);
    fuzz_key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (fuzz_key == NULL) {
        fuzz_die("cannot load the fuzz key");
    }

    fuzz_ca.cert = fuzz_ca_cert(fuzz_key);
    fuzz_ca.key = fuzz_key;
    fuzz_device = ngx_mdm_scep_client_signer(fuzz_key, "MDM SCEP SIGNER",
                                             10L * 365 * 86400);

    if (fuzz_ca.cert == NULL || fuzz_device == NULL
        || ngx_mdm_scep_ca_init(&fuzz_ca, &err) != NGX_MDM_SCEP_OK)
    {
        fuzz_die("cannot set up the CA");
    }

    seeds = getenv("SCEP_FUZZ_SEEDS");

    if (seeds != NULL) {
        fuzz_seeds(seeds);
        exit(0);
    }

    return 0;
}


/* what every result promises the SCEP handler */

static void
fuzz_check(int rc, const ngx_mdm_scep_msg_t *msg)
{
    switch (rc) {

    case NGX_MDM_SCEP_OK:
        break;

    case NGX_MDM_SCEP_MALFORMED:
        if (msg->error == NULL || ERR_peek_error() != 0) {
            fuzz_die("MALFORMED without text, or error queue not empty");
        }

        break;

    case NGX_MDM_SCEP_REFUSED:
        if (msg->error == NULL || ERR_peek_error() != 0
            || msg->fail_info < NGX_MDM_SCEP_BAD_ALG
            || msg->fail_info > NGX_MDM_SCEP_BAD_CERT_ID
            || msg->transaction_id_len == 0
            || msg->transaction_id_len != strlen(msg->transaction_id)
            || msg->sender_nonce_len == 0)
        {
            fuzz_die("REFUSED without what a CertRep FAILURE needs");
        }

        break;

    default:
        fuzz_die("unexpected result");
    }
}


static void
fuzz_facts(const ngx_mdm_scep_msg_t *msg)
{
    char  buf[256];

    ngx_mdm_scep_serial_hex(msg->serial, buf, sizeof(buf));
    ngx_mdm_scep_serial_dec(msg->serial, buf, sizeof(buf));

    if (msg->issuer != NULL) {
        ngx_mdm_scep_name_string(msg->issuer, buf, sizeof(buf));
    }

    if (msg->subject != NULL) {
        ngx_mdm_scep_name_string(msg->subject, buf, sizeof(buf));
    }

    if (msg->signer != NULL) {
        ngx_mdm_scep_name_string(X509_get_subject_name(msg->signer), buf,
                                 sizeof(buf));
    }

    ERR_clear_error();
}


static void
fuzz_server(const uint8_t *data, size_t size)
{
    int                    rc;
    X509                  *cert;
    size_t                 len;
    const char            *err;
    unsigned char         *der;
    ngx_mdm_scep_msg_t     msg;
    ngx_mdm_scep_reply_t   rep;
    ngx_mdm_scep_issue_t   iss;

    rc = ngx_mdm_scep_parse(&fuzz_ca, data, size, &msg);
    fuzz_check(rc, &msg);
    fuzz_facts(&msg);

    cert = NULL;
    der = NULL;

    if (rc == NGX_MDM_SCEP_OK && msg.csr != NULL) {
        memset(&iss, 0, sizeof(iss));
        iss.serial.value = 1;
        iss.validity = 86400;
        iss.backdate = 600;

        if (ngx_mdm_scep_issue(&fuzz_ca, msg.csr, &iss, &cert, &err)
            == NGX_MDM_SCEP_OK)
        {
            ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_SUCCESS);
            rep.cert = cert;

        } else {
            ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_FAILURE);
        }

    } else if (rc == NGX_MDM_SCEP_OK) {
        ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_PENDING);

    } else if (rc == NGX_MDM_SCEP_REFUSED) {
        ngx_mdm_scep_reply_init(&rep, &msg, NGX_MDM_SCEP_FAILURE);
        rep.fail_info_text = msg.error;

    } else {
        ngx_mdm_scep_msg_free(&msg);
        return;
    }

    if (ngx_mdm_scep_certrep(&fuzz_ca, &rep, &der, &len) == NGX_MDM_SCEP_OK) {
        OPENSSL_free(der);

    } else if (rep.status != NGX_MDM_SCEP_SUCCESS) {
        /* only the envelope to a hostile signer key may fail */
        fuzz_die("cannot build a FAILURE or PENDING CertRep");
    }

    ERR_clear_error();
    X509_free(cert);
    ngx_mdm_scep_msg_free(&msg);
}


static void
fuzz_csr(const uint8_t *data, size_t size)
{
    size_t                  len;
    X509_REQ               *csr;
    unsigned char          *der, nonce[16];
    const unsigned char    *p;
    ngx_mdm_scep_request_t  req;

    p = data;
    csr = d2i_X509_REQ(NULL, &p, (long) size);

    if (csr == NULL) {
        ERR_clear_error();
        return;
    }

    memset(nonce, 0xa5, sizeof(nonce));
    memset(&req, 0, sizeof(req));
    req.message_type = NGX_MDM_SCEP_PKCS_REQ;
    req.transaction_id = "fuzz";
    req.sender_nonce = nonce;
    req.sender_nonce_len = sizeof(nonce);
    req.digest_nid = NID_sha256;
    req.cipher_nid = NID_aes_128_cbc;
    req.signer = fuzz_device;
    req.signer_key = fuzz_key;
    req.recipient = fuzz_ca.cert;
    req.csr = csr;

    if (ngx_mdm_scep_client_request(&req, &der, &len) == NGX_MDM_SCEP_OK) {
        fuzz_server(der, len);
        OPENSSL_free(der);
    }

    ERR_clear_error();
    X509_REQ_free(csr);
}


static void
fuzz_device_side(const uint8_t *data, size_t size)
{
    int                 rc;
    ngx_mdm_scep_msg_t  msg;

    rc = ngx_mdm_scep_client_parse(data, size, fuzz_ca.signer_cert,
                                   fuzz_device, fuzz_key, &msg);

    if (rc == NGX_MDM_SCEP_ERROR) {
        fuzz_die("client parse: internal error");
    }

    if (rc != NGX_MDM_SCEP_OK && ERR_peek_error() != 0) {
        fuzz_die("client parse: error queue not empty");
    }

    fuzz_facts(&msg);
    ngx_mdm_scep_msg_free(&msg);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }

    switch (data[0] % 3) {
    case 0:
        fuzz_server(data + 1, size - 1);
        break;
    case 1:
        fuzz_device_side(data + 1, size - 1);
        break;
    default:
        fuzz_csr(data + 1, size - 1);
    }

    return 0;
}
