/* sources: ngx_mdm_core/ngx_mdm_plist.c ngx_mdm_core/ngx_mdm_plist_xml.c ngx_mdm_core/ngx_mdm_plist_bin.c ngx_mdm_core/ngx_mdm_plist_json.c */

/*
 * Bytes as JSON -> plist -> XML -> plist -> JSON -> plist, and as a
 * command; the same bytes as a plist -> JSON -> plist.  Aborts when an
 * invariant breaks: whatever from_json() accepts has an XML form that our
 * reader takes and that survives JSON and binary round trips unchanged.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_mdm_plist.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static char *
fuzz_xml(plist_t p)
{
    char                 *xml;
    size_t                len;
    ngx_mdm_plist_err_t   err;

    if (ngx_mdm_plist_to_xml(p, &xml, &len, &err) != NGX_MDM_PLIST_OK
        || strlen(xml) != len)
    {
        abort();
    }

    return xml;
}


static plist_t
fuzz_parse(const void *buf, size_t len)
{
    plist_t              p;
    ngx_mdm_plist_err_t  err;

    p = ngx_mdm_plist_parse(buf, len, SIZE_MAX, &err);
    if (p == NULL) {
        abort();
    }

    return p;
}


static void
fuzz_from_json(const json_t *j)
{
    char                 *x1, *x2, *x3, *cmd, *bin;
    json_t               *j2;
    size_t                len;
    plist_t               p, p2, p3, pb;
    uint32_t              blen;
    ngx_mdm_plist_err_t   err;

    p = ngx_mdm_plist_from_json(j, &err);

    if (p == NULL) {
        if (err.rc == NGX_MDM_PLIST_OK || err.text[0] == '\0') {
            abort();
        }

    } else {
        x1 = fuzz_xml(p);
        p2 = fuzz_parse(x1, strlen(x1));

        j2 = ngx_mdm_plist_to_json(p2, &err);
        if (j2 == NULL) {
            abort();
        }

        p3 = ngx_mdm_plist_from_json(j2, &err);
        if (p3 == NULL) {
            abort();
        }

        x3 = fuzz_xml(p3);

        if (strcmp(x1, x3) != 0) {
            abort();
        }

        /* libplist's binary writer, our binary reader */

        bin = NULL;
        blen = 0;
        plist_to_bin(p2, &bin, &blen);

        if (bin) {
            pb = fuzz_parse(bin, blen);
            x2 = fuzz_xml(pb);

            if (strcmp(x1, x2) != 0) {
                abort();
            }

            ngx_mdm_plist_xml_free(x2);
            plist_free(pb);
            free(bin);
        }

        ngx_mdm_plist_xml_free(x1);
        ngx_mdm_plist_xml_free(x3);
        json_decref(j2);
        plist_free(p);
        plist_free(p2);
        plist_free(p3);
    }

    if (ngx_mdm_plist_command_xml(j, "fuzz-uuid", &cmd, &len, &err)
        == NGX_MDM_PLIST_OK)
    {
        p = fuzz_parse(cmd, len);
        plist_free(p);
        ngx_mdm_plist_xml_free(cmd);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t               *j;
    plist_t               p, q;
    json_error_t          je;
    ngx_mdm_plist_err_t   err;

    j = json_loadb((const char *) data, size,
                   JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);

    if (j) {
        fuzz_from_json(j);
        json_decref(j);
    }

    p = ngx_mdm_plist_parse(data, size, 0, &err);

    if (p) {
        j = ngx_mdm_plist_to_json(p, &err);
        if (j == NULL) {
            abort();
        }

        q = ngx_mdm_plist_from_json(j, &err);
        if (q == NULL) {
            abort();
        }

        fuzz_from_json(j);

        json_decref(j);
        plist_free(q);
        plist_free(p);
    }

    return 0;
}
