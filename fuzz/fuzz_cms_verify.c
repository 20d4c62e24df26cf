/* sources: ngx_mdm_core/ngx_mdm_x509.c ngx_mdm_core/ngx_mdm_cms.c */

/*
 * Fuzz: bytes as an Mdm-Signature (DER and base64) over a fixed body, and
 * as an attached-content CMS (DER and base64) verified against Apple's
 * device CA chain without time checks and against a time-checking store.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "ngx_mdm_x509.h"


/* the body signed by the seed fuzz/corpus/fuzz_cms_verify/mdm_signature* */
static const char  ngx_mdm_fuzz_body[] =
    "<plist><dict><key>MessageType</key><string>Authenticate</string>"
    "</dict></plist>\n";

/* 2022-11-01: the OTA seed's signer is valid then */
#define NGX_MDM_FUZZ_NOW  1667260800

static ngx_mdm_x509_verifier_t  *ngx_mdm_fuzz_apple;
static ngx_mdm_x509_verifier_t  *ngx_mdm_fuzz_timed;


static void
ngx_mdm_fuzz_facts(X509 *x)
{
    char    buf[NGX_MDM_X509_SUBJECT_SIZE];
    time_t  t;

    ngx_mdm_x509_sha256_hex(x, buf);
    ngx_mdm_x509_serial_hex(x, buf, sizeof(buf));
    ngx_mdm_x509_subject(x, buf, sizeof(buf));
    ngx_mdm_x509_subject_uid(x, buf, sizeof(buf));
    ngx_mdm_x509_not_before(x, &t);
    ngx_mdm_x509_not_after(x, &t);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char             path[1024];
    const char      *dir;
    X509_STORE      *store;
    STACK_OF(X509)  *chain;

    dir = getenv("MDM_VECTORS");
    if (dir == NULL || dir[0] == '\0') {
        dir = "../shared/vectors";
    }

    snprintf(path, sizeof(path),
             "%s/enroll/zentral_Apple_iPhone_Device_CA_Fullchain.pem", dir);

    chain = ngx_mdm_x509_load_chain(path);
    if (chain == NULL) {
        fprintf(stderr, "fuzz_cms_verify: %s, chain checks will fail\n",
                ngx_mdm_x509_error());
        return 0;
    }

    store = ngx_mdm_x509_store_create(chain);
    ngx_mdm_x509_chain_free(chain);

    ngx_mdm_fuzz_apple = ngx_mdm_x509_verifier_create(store,
                                                  NGX_MDM_X509_APPLE_DEVICE);
    ngx_mdm_fuzz_timed = ngx_mdm_x509_verifier_create(store, 0);

    X509_STORE_free(store);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                       i;
    X509                     *signer;
    size_t                    clen;
    unsigned char            *content;
    ngx_mdm_x509_rc_e         rc;
    ngx_mdm_x509_verifier_t  *v;

    signer = NULL;
    rc = ngx_mdm_cms_verify_detached(data, size,
                                     (const unsigned char *) ngx_mdm_fuzz_body,
                                     sizeof(ngx_mdm_fuzz_body) - 1, &signer);
    if (rc == NGX_MDM_X509_OK) {
        ngx_mdm_fuzz_facts(signer);
        ngx_mdm_x509_verify(ngx_mdm_fuzz_timed, signer, NULL,
                            NGX_MDM_FUZZ_NOW, 86400);
        X509_free(signer);
    }

    signer = NULL;
    rc = ngx_mdm_cms_verify_mdm_signature((const char *) data, size,
                                     (const unsigned char *) ngx_mdm_fuzz_body,
                                     sizeof(ngx_mdm_fuzz_body) - 1, &signer);
    if (rc == NGX_MDM_X509_OK) {
        X509_free(signer);
    }

    content = malloc(size ? size : 1);
    if (content == NULL) {
        return 0;
    }

    for (i = 0; i < 2; i++) {
        v = i ? ngx_mdm_fuzz_timed : ngx_mdm_fuzz_apple;

        if (v == NULL) {
            continue;
        }

        signer = NULL;
        clen = 0;
        rc = ngx_mdm_cms_verify_attached(data, size, v, NGX_MDM_FUZZ_NOW,
                                         content, size, &clen, &signer);
        if (rc == NGX_MDM_X509_OK) {
            if (clen > size) {
                abort();
            }

            ngx_mdm_fuzz_facts(signer);
            X509_free(signer);
        }
    }

    v = (size & 1) ? ngx_mdm_fuzz_timed : ngx_mdm_fuzz_apple;

    if (v != NULL) {
        signer = NULL;
        clen = 0;
        rc = ngx_mdm_cms_verify_attached_base64((const char *) data, size, v,
                                                NGX_MDM_FUZZ_NOW, content,
                                                size, &clen, &signer);
        if (rc == NGX_MDM_X509_OK) {
            if (clen > size) {
                abort();
            }

            X509_free(signer);
        }
    }

    free(content);

    return 0;
}
