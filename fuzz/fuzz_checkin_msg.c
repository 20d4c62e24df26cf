/* sources: ngx_mdm_core/ngx_mdm_plist.c ngx_mdm_core/ngx_mdm_plist_xml.c ngx_mdm_core/ngx_mdm_plist_bin.c ngx_mdm_core/ngx_mdm_plist_json.c ngx_mdm_checkin/ngx_mdm_checkin_msg.c */

/*
 * A device request body -> ngx_mdm_checkin_msg_parse() under each
 * expectation, then the parsed plist through XML and JSON and back.
 * Aborts when an invariant breaks: a parsed plist always has an XML and a
 * JSON form, our reader takes libplist's XML output, and conversions are
 * stable after one round (CR and date fractions are normalised once).
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_mdm_checkin_msg.h"


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
fuzz_reparse(const char *xml)
{
    plist_t              p;
    ngx_mdm_plist_err_t  err;

    p = ngx_mdm_plist_parse((const u_char *) xml, strlen(xml), SIZE_MAX,
                            &err);
    if (p == NULL) {
        abort();
    }

    return p;
}


static plist_t
fuzz_json_round(plist_t p)
{
    json_t               *j;
    plist_t               q;
    ngx_mdm_plist_err_t   err;

    j = ngx_mdm_plist_to_json(p, &err);
    if (j == NULL) {
        abort();
    }

    q = ngx_mdm_plist_from_json(j, &err);
    if (q == NULL) {
        abort();
    }

    json_decref(j);

    return q;
}


static void
fuzz_conversions(plist_t root)
{
    char     *x1, *x2, *x3, *x4;
    plist_t   p1, p2, q1, q2;

    x1 = fuzz_xml(root);
    p1 = fuzz_reparse(x1);
    x2 = fuzz_xml(p1);
    p2 = fuzz_reparse(x2);
    x3 = fuzz_xml(p2);

    if (strcmp(x2, x3) != 0) {
        abort();
    }

    q1 = fuzz_json_round(p1);
    q2 = fuzz_json_round(q1);
    ngx_mdm_plist_xml_free(x3);
    x3 = fuzz_xml(q1);
    x4 = fuzz_xml(q2);

    if (strcmp(x3, x4) != 0) {
        abort();
    }

    ngx_mdm_plist_xml_free(x1);
    ngx_mdm_plist_xml_free(x2);
    ngx_mdm_plist_xml_free(x3);
    ngx_mdm_plist_xml_free(x4);
    plist_free(p1);
    plist_free(p2);
    plist_free(q1);
    plist_free(q2);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                    expect;
    size_t                 n, i;
    int64_t                code;
    const u_char          *dm;
    ngx_mdm_plist_str_t    dom, desc;
    ngx_mdm_checkin_rc_e   rc;
    ngx_mdm_checkin_msg_t  m;

    for (expect = 0; expect < 3; expect++) {
        rc = ngx_mdm_checkin_msg_parse(&m, data, size, expect, 0);

        if (memchr(m.err, '\0', sizeof(m.err)) == NULL
            || (rc != NGX_MDM_CHECKIN_OK && m.err[0] == '\0'))
        {
            abort();
        }

        if (rc == NGX_MDM_CHECKIN_OK) {
            if (m.id.data == NULL || m.id.len == 0
                || m.id.data[m.id.len] != '\0'
                || m.device_id.len > m.id.len
                || memcmp(m.device_id.data, m.id.data, m.device_id.len) != 0
                || m.user_channel != (m.id.len != m.device_id.len)
                || m.enroll_type == NGX_MDM_ENROLL_NONE
                || m.kind == NGX_MDM_CHECKIN_KIND_NONE
                || (m.kind == NGX_MDM_CHECKIN_KIND_CHECKIN
                    && m.type == NGX_MDM_CHECKIN_UNKNOWN)
                || (m.kind == NGX_MDM_CHECKIN_KIND_REPORT
                    && m.status == NGX_MDM_CHECKIN_STATUS_NONE))
            {
                abort();
            }

            (void) ngx_mdm_checkin_msg_dm_data(&m, &dm, &n);

            for (i = 0;
                 ngx_mdm_checkin_msg_error(&m, i, &code, &dom, &desc) == 0;
                 i++)
            {
                if (dom.data == NULL || desc.data == NULL) {
                    abort();
                }
            }
        }

        if (expect == 0 && m.root) {
            fuzz_conversions(m.root);
        }

        ngx_mdm_checkin_msg_free(&m);
    }

    return 0;
}
