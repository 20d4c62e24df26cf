/* sources: ngx_mdm_core/ngx_mdm_plist.c ngx_mdm_core/ngx_mdm_plist_xml.c ngx_mdm_core/ngx_mdm_plist_bin.c ngx_mdm_core/ngx_mdm_plist_json.c ngx_mdm_checkin/ngx_mdm_enroll_info.c */

/*
 * Signed device attributes (ADE MachineInfo, OTA phase 2 and 3 content)
 * -> ngx_mdm_enroll_info_parse(), then what the module does with them:
 * the JSON for storage, the platform of PRODUCT, the OS version against
 * a minimum.  Aborts when an invariant breaks: UDID and SERIAL of a
 * parsed body are 1..64 of [A-Za-z0-9-], the stored JSON is valid JSON
 * without CHALLENGE, a version compares equal to itself.  The input is
 * also taken as two versions split at the first NUL.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_mdm_enroll.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void
fuzz_id(const ngx_mdm_plist_str_t *s)
{
    size_t  i;
    u_char  c;

    if (s->len == 0 || s->len > NGX_MDM_ENROLL_ID_MAX || s->data == NULL) {
        abort();
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')
              || (c >= 'a' && c <= 'z') || c == '-'))
        {
            abort();
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                     cmp;
    char                   *json, err[NGX_MDM_ENROLL_ERR_LEN];
    json_t                 *j;
    const uint8_t          *nul;
    json_error_t            jerr;
    ngx_mdm_enroll_info_t   info;

    if (ngx_mdm_enroll_info_parse(data, size, &info, err)
        == NGX_MDM_ENROLL_OK)
    {
        fuzz_id(&info.udid);
        fuzz_id(&info.serial);

        json = ngx_mdm_enroll_info_json(&info);

        if (json != NULL) {
            j = json_loads(json, 0, &jerr);

            if (j == NULL || json_object_get(j, "CHALLENGE") != NULL
                || json_object_get(j, "UDID") == NULL)
            {
                abort();
            }

            json_decref(j);
            free(json);
        }

        if (info.product.len) {
            (void) ngx_mdm_enroll_platform(info.product.data,
                                           info.product.len);
        }

        if (info.os_version.len) {
            cmp = ngx_mdm_enroll_version_cmp(info.os_version.data,
                                             info.os_version.len,
                                             info.os_version.data,
                                             info.os_version.len);
            if (cmp != 0 && cmp != -2) {
                abort();
            }
        }

        ngx_mdm_enroll_info_free(&info);

    } else if (info.root != NULL) {
        abort();
    }

    nul = memchr(data, '\0', size);

    if (nul != NULL) {
        cmp = ngx_mdm_enroll_version_cmp(data, nul - data, nul + 1,
                                         size - (nul - data) - 1);
        if (cmp < -2 || cmp > 1) {
            abort();
        }
    }

    (void) ngx_mdm_enroll_platform(data, size);

    return 0;
}
