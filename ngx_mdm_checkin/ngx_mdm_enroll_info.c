
/*
 * nginx-mdm enrollment: the device's signed attributes (MachineInfo, OTA
 * phase 2 and 3 bodies), the OS version gate's comparisons, and the
 * name-based UUIDs of the profiles (see ngx_mdm_enroll.h).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include "ngx_mdm_enroll.h"


#define NGX_MDM_ENROLL_VERSION_PARTS  8


typedef struct {
    const char                *key;
    size_t                     offset;
    unsigned                   id:1;       /* UDID, SERIAL: strict shape */
    unsigned                   required:1;
} ngx_mdm_enroll_key_t;


typedef struct {
    const char                *prefix;
    const char                *platform;
} ngx_mdm_enroll_product_t;


static int ngx_mdm_enroll_id_ok(const ngx_mdm_plist_str_t *s);
static int ngx_mdm_enroll_version(const u_char *p, size_t len,
    uint64_t *parts);


/* MachineInfo keys [ADM other/machineinfo.yaml], OTA attributes */

static const ngx_mdm_enroll_key_t  ngx_mdm_enroll_keys[] = {
    { "UDID", offsetof(ngx_mdm_enroll_info_t, udid), 1, 1 },
    { "SERIAL", offsetof(ngx_mdm_enroll_info_t, serial), 1, 1 },
    { "PRODUCT", offsetof(ngx_mdm_enroll_info_t, product), 0, 0 },
    { "VERSION", offsetof(ngx_mdm_enroll_info_t, version), 0, 0 },
    { "OS_VERSION", offsetof(ngx_mdm_enroll_info_t, os_version), 0, 0 },
    { "IMEI", offsetof(ngx_mdm_enroll_info_t, imei), 0, 0 },
    { "MEID", offsetof(ngx_mdm_enroll_info_t, meid), 0, 0 },
    { "LANGUAGE", offsetof(ngx_mdm_enroll_info_t, language), 0, 0 },
    { "CHALLENGE", offsetof(ngx_mdm_enroll_info_t, challenge), 0, 0 },
    { NULL, 0, 0, 0 }
};


/*
 * PRODUCT is a family name, optional letters, then numbers: "iPhone15,2",
 * "MacBookPro18,1", "Macmini9,1", "VirtualMac2,1", "iPad13,4".
 */

static const ngx_mdm_enroll_product_t  ngx_mdm_enroll_products[] = {
    { "iPhone", "ios" },
    { "iPod", "ios" },
    { "iPad", "ipados" },
    { "VirtualMac", "macos" },
    { "iMac", "macos" },
    { "Mac", "macos" },
    { "AppleTV", "tvos" },
    { "Watch", "watchos" },
    { "RealityDevice", "visionos" },
    { NULL, NULL }
};


ngx_mdm_enroll_rc_e
ngx_mdm_enroll_info_parse(const u_char *buf, size_t len,
    ngx_mdm_enroll_info_t *info, char *err)
{
    int                          b;
    plist_t                      root;
    ngx_mdm_plist_err_t          perr;
    ngx_mdm_plist_str_t         *s;
    ngx_mdm_plist_rc_e           rc;
    const ngx_mdm_enroll_key_t  *k;

    memset(info, 0, sizeof(ngx_mdm_enroll_info_t));

    if (err) {
        err[0] = '\0';
    }

    root = ngx_mdm_plist_parse(buf, len, NGX_MDM_ENROLL_INFO_MAX, &perr);

    if (root == NULL) {
        if (err) {
            snprintf(err, NGX_MDM_ENROLL_ERR_LEN, "not a plist: %.100s",
                     perr.text);
        }

        return perr.rc == NGX_MDM_PLIST_ENOMEM ? NGX_MDM_ENROLL_ENOMEM
                                               : NGX_MDM_ENROLL_EFORMAT;
    }

    if (plist_get_node_type(root) != PLIST_DICT) {
        plist_free(root);

        if (err) {
            snprintf(err, NGX_MDM_ENROLL_ERR_LEN, "plist is not a dict");
        }

        return NGX_MDM_ENROLL_EFORMAT;
    }

    for (k = ngx_mdm_enroll_keys; k->key; k++) {
        s = (ngx_mdm_plist_str_t *) ((char *) info + k->offset);

        rc = ngx_mdm_plist_get_string(root, k->key, s);

        if (rc == NGX_MDM_PLIST_ABSENT || (rc == NGX_MDM_PLIST_OK
                                           && s->len == 0 && k->id))
        {
            s->len = 0;
            s->data = NULL;

            if (k->required) {
                if (err) {
                    snprintf(err, NGX_MDM_ENROLL_ERR_LEN,
                             "%s is missing or empty", k->key);
                }

                plist_free(root);
                return NGX_MDM_ENROLL_EMISSING;
            }

            continue;
        }

        if (rc != NGX_MDM_PLIST_OK
            || (k->id && !ngx_mdm_enroll_id_ok(s))
            || s->len > NGX_MDM_ENROLL_VALUE_MAX)
        {
            if (err) {
                snprintf(err, NGX_MDM_ENROLL_ERR_LEN, "%s is %s", k->key,
                         rc != NGX_MDM_PLIST_OK ? "not a string"
                                                : "malformed");
            }

            plist_free(root);
            memset(info, 0, sizeof(ngx_mdm_enroll_info_t));
            return NGX_MDM_ENROLL_EINVAL;
        }
    }

    /* optional, false when absent or of another type */

    if (ngx_mdm_plist_get_bool(root, "MDM_CAN_REQUEST_SOFTWARE_UPDATE", &b)
        == NGX_MDM_PLIST_OK)
    {
        info->can_request_software_update = b;
    }

    info->root = root;

    return NGX_MDM_ENROLL_OK;
}


void
ngx_mdm_enroll_info_free(ngx_mdm_enroll_info_t *info)
{
    if (info->root) {
        plist_free(info->root);
    }

    memset(info, 0, sizeof(ngx_mdm_enroll_info_t));
}


static int
ngx_mdm_enroll_id_ok(const ngx_mdm_plist_str_t *s)
{
    size_t  i;
    u_char  c;

    if (s->len == 0 || s->len > NGX_MDM_ENROLL_ID_MAX) {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')
              || (c >= 'a' && c <= 'z') || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


char *
ngx_mdm_enroll_info_json(const ngx_mdm_enroll_info_t *info)
{
    char                 *out;
    json_t               *json;
    ngx_mdm_plist_err_t   perr;

    if (info->root == NULL) {
        return NULL;
    }

    json = ngx_mdm_plist_to_json(info->root, &perr);
    if (json == NULL) {
        return NULL;
    }

    /* the OTA token is a secret: never stored as it is */

    (void) json_object_del(json, "CHALLENGE");

    out = json_dumps(json, JSON_COMPACT|JSON_SORT_KEYS);

    json_decref(json);

    return out;
}


const char *
ngx_mdm_enroll_platform(const u_char *product, size_t len)
{
    size_t                           n;
    const ngx_mdm_enroll_product_t  *p;

    for (p = ngx_mdm_enroll_products; p->prefix; p++) {
        n = strlen(p->prefix);

        if (len <= n || memcmp(product, p->prefix, n) != 0) {
            continue;
        }

        while (n < len && ((product[n] >= 'A' && product[n] <= 'Z')
                           || (product[n] >= 'a' && product[n] <= 'z')))
        {
            n++;
        }

        if (n < len && product[n] >= '0' && product[n] <= '9') {
            return p->platform;
        }
    }

    return NULL;
}


/*
 * "17.0.1" into its parts: at most NGX_MDM_ENROLL_VERSION_PARTS numbers
 * of at most 9 digits, separated by single dots.  -1 when malformed.
 */

static int
ngx_mdm_enroll_version(const u_char *p, size_t len, uint64_t *parts)
{
    int            n;
    size_t         digits;
    const u_char  *last;

    last = p + len;

    for (n = 0; n < NGX_MDM_ENROLL_VERSION_PARTS; n++) {
        parts[n] = 0;

        for (digits = 0; p < last && *p >= '0' && *p <= '9'; p++) {
            if (++digits > 9) {
                return -1;
            }

            parts[n] = parts[n] * 10 + (uint64_t) (*p - '0');
        }

        if (digits == 0) {
            return -1;
        }

        if (p == last) {
            return n + 1;
        }

        if (*p++ != '.') {
            return -1;
        }
    }

    return -1;
}


int
ngx_mdm_enroll_version_cmp(const u_char *a, size_t alen, const u_char *b,
    size_t blen)
{
    int       i, na, nb;
    uint64_t  x, y, pa[NGX_MDM_ENROLL_VERSION_PARTS],
              pb[NGX_MDM_ENROLL_VERSION_PARTS];

    na = ngx_mdm_enroll_version(a, alen, pa);
    nb = ngx_mdm_enroll_version(b, blen, pb);

    if (na < 0 || nb < 0) {
        return -2;
    }

    for (i = 0; i < na || i < nb; i++) {
        x = i < na ? pa[i] : 0;
        y = i < nb ? pb[i] : 0;

        if (x != y) {
            return x < y ? -1 : 1;
        }
    }

    return 0;
}


/*
 * RFC 4122 §4.3, SHA-1, in the URL namespace: the same server URL and
 * role always give the same UUID, so that a profile installed again
 * replaces the one before it.
 */

void
ngx_mdm_enroll_uuid(const char *seed, const char *role,
    char out[NGX_MDM_ENROLL_UUID_LEN + 1])
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;
    EVP_MD_CTX   *ctx;

    static const u_char  ns_url[16] = {
        0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
        0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8
    };

    memset(md, 0, sizeof(md));
    mdlen = 0;

    ctx = EVP_MD_CTX_new();

    if (ctx == NULL
        || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1
        || EVP_DigestUpdate(ctx, ns_url, sizeof(ns_url)) != 1
        || EVP_DigestUpdate(ctx, seed, strlen(seed)) != 1
        || EVP_DigestUpdate(ctx, "#", 1) != 1
        || EVP_DigestUpdate(ctx, role, strlen(role)) != 1
        || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
    {
        /* cannot happen with the default provider; stays a valid UUID */
        memset(md, 0, sizeof(md));
    }

    EVP_MD_CTX_free(ctx);

    md[6] = (md[6] & 0x0f) | 0x50;
    md[8] = (md[8] & 0x3f) | 0x80;

    snprintf(out, NGX_MDM_ENROLL_UUID_LEN + 1,
             "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-"
             "%02X%02X%02X%02X%02X%02X",
             md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7],
             md[8], md[9], md[10], md[11], md[12], md[13], md[14], md[15]);
}
