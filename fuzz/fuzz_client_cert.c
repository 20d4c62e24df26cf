/* sources: ngx_mdm_core/ngx_mdm_x509.c ngx_mdm_core/ngx_mdm_cms.c */

/*
 * Fuzz: bytes as a client certificate in every form nginx or a load
 * balancer hands over; whatever parses goes through the fact getters, the
 * APNs topic check and chain verification.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "ngx_mdm_x509.h"


static ngx_mdm_x509_verifier_t  *ngx_mdm_fuzz_apple;
static ngx_mdm_x509_verifier_t  *ngx_mdm_fuzz_timed;


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
        fprintf(stderr, "fuzz_client_cert: %s, no chain checks\n",
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
    X509                     *x;
    char                      buf[NGX_MDM_X509_SUBJECT_SIZE];
    char                      small[8];
    time_t                    t;
    unsigned char             md[NGX_MDM_X509_SHA256_LEN];
    ngx_mdm_x509_form_e       form;
    ngx_mdm_x509_verifier_t  *v;

    for (form = NGX_MDM_X509_FORM_AUTO; form <= NGX_MDM_X509_FORM_DER; form++)
    {
        x = ngx_mdm_x509_client_cert(data, size, form);
        if (x == NULL) {
            continue;
        }

        ngx_mdm_x509_sha256(x, md);
        ngx_mdm_x509_sha256_hex(x, buf);
        ngx_mdm_x509_serial_hex(x, buf, sizeof(buf));
        ngx_mdm_x509_serial_hex(x, small, sizeof(small));
        ngx_mdm_x509_not_before(x, &t);
        ngx_mdm_x509_not_after(x, &t);
        ngx_mdm_x509_subject(x, buf, sizeof(buf));
        ngx_mdm_x509_subject(x, small, sizeof(small));
        ngx_mdm_x509_subject_uid(x, buf, sizeof(buf));
        ngx_mdm_x509_apns_topic(x, buf, sizeof(buf));
        ngx_mdm_x509_apns_topic(x, small, sizeof(small));
        (void) ngx_mdm_x509_expires_in(x, 1700000000);

        v = (form & 1) ? ngx_mdm_fuzz_apple : ngx_mdm_fuzz_timed;

        if (v != NULL) {
            ngx_mdm_x509_verify(v, x, NULL, 1700000000, 86400);
        }

        X509_free(x);
    }

    return 0;
}
