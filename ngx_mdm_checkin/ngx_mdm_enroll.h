
/*
 * nginx-mdm enrollment: the device's signed attributes and the profiles.
 *
 * Pure C over libplist and jansson (no nginx headers), so that the unit
 * tests and the fuzz target link it alone.
 *
 * Device attributes: the content of a CMS body the device signed, i.e.
 * the ADE MachineInfo (POST body or x-apple-aspen-deviceinfo) and the OTA
 * phase 2 and 3 bodies, a plist dict with UDID, SERIAL, PRODUCT, VERSION,
 * OS_VERSION, IMEI, MEID, LANGUAGE, MDM_CAN_REQUEST_SOFTWARE_UPDATE and,
 * in OTA, CHALLENGE (PROTOCOL.md §2.3, §2.5).  The caller verifies the
 * signature first; the parser still treats every byte as hostile.
 *
 * Profiles: built as libplist nodes from the configuration and the
 * challenge of the request, never from text templates.
 */


#ifndef _NGX_MDM_ENROLL_H_INCLUDED_
#define _NGX_MDM_ENROLL_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include "ngx_mdm_plist.h"


#define NGX_MDM_ENROLL_INFO_MAX      (64 * 1024)  /* plist bytes */
#define NGX_MDM_ENROLL_ID_MAX        64           /* UDID, SERIAL */
#define NGX_MDM_ENROLL_VALUE_MAX     256          /* other strings */
#define NGX_MDM_ENROLL_UUID_LEN      36
#define NGX_MDM_ENROLL_ERR_LEN       128

/* com.apple.mdm ServerCapabilities (PROTOCOL.md §2.1) */
#define NGX_MDM_ENROLL_CAP_PER_USER  "com.apple.mdm.per-user-connections"
#define NGX_MDM_ENROLL_CAP_BOOTSTRAP "com.apple.mdm.bootstraptoken"
#define NGX_MDM_ENROLL_CAP_TOKEN     "com.apple.mdm.token"

/* AccessRights: every documented bit */
#define NGX_MDM_ENROLL_ACCESS_ALL    8191


typedef enum {
    NGX_MDM_ENROLL_OK = 0,
    NGX_MDM_ENROLL_EFORMAT,      /* not a plist dict */
    NGX_MDM_ENROLL_EMISSING,     /* UDID or SERIAL absent or empty */
    NGX_MDM_ENROLL_EINVAL,       /* a value of the wrong type or shape */
    NGX_MDM_ENROLL_ENOMEM
} ngx_mdm_enroll_rc_e;


/*
 * Strings point into root and live as long as it does; an absent key is
 * { 0, NULL }.  UDID and SERIAL are 1..64 of [A-Za-z0-9-]; the others
 * at most 256 bytes.
 */
typedef struct {
    plist_t                     root;
    ngx_mdm_plist_str_t         udid;
    ngx_mdm_plist_str_t         serial;
    ngx_mdm_plist_str_t         product;
    ngx_mdm_plist_str_t         version;        /* build, e.g. 22A380 */
    ngx_mdm_plist_str_t         os_version;     /* e.g. 17.0 */
    ngx_mdm_plist_str_t         imei;
    ngx_mdm_plist_str_t         meid;
    ngx_mdm_plist_str_t         language;
    ngx_mdm_plist_str_t         challenge;      /* OTA: the token */
    int                         can_request_software_update;
} ngx_mdm_enroll_info_t;


/*
 * Parses the signed content.  On failure info->root is NULL and err (if
 * not NULL, NGX_MDM_ENROLL_ERR_LEN bytes) says why in one line; it never
 * quotes a value.
 */
ngx_mdm_enroll_rc_e ngx_mdm_enroll_info_parse(const u_char *buf, size_t len,
    ngx_mdm_enroll_info_t *info, char *err);
void ngx_mdm_enroll_info_free(ngx_mdm_enroll_info_t *info);

/*
 * The attributes as compact JSON for storage, CHALLENGE left out: free()
 * it.  NULL on failure.
 */
char *ngx_mdm_enroll_info_json(const ngx_mdm_enroll_info_t *info);

/* "macos", "ios", "ipados", "tvos", "watchos", "visionos" or NULL */
const char *ngx_mdm_enroll_platform(const u_char *product, size_t len);

/*
 * Compares dotted decimal versions ("17", "16.7.2"): -1, 0 or 1; missing
 * parts count as 0.  -2 when either is not a dotted decimal version.
 */
int ngx_mdm_enroll_version_cmp(const u_char *a, size_t alen,
    const u_char *b, size_t blen);


/* RFC 4122 name-based (SHA-1, version 5) UUID of "seed" and "role" */
void ngx_mdm_enroll_uuid(const char *seed, const char *role,
    char out[NGX_MDM_ENROLL_UUID_LEN + 1]);


/* one relative distinguished name of the SCEP Subject */
typedef struct {
    const char                 *type;     /* "CN", "O", "2.5.4.5", ... */
    const char                 *value;
} ngx_mdm_enroll_rdn_t;


/*
 * A Configuration profile with a SCEP payload and, if server_url is set,
 * an MDM payload whose IdentityCertificateUUID is the SCEP payload's
 * PayloadUUID.  NULL strings leave their optional key out.
 */
typedef struct {
    const char                 *identifier;
    const char                 *uuid;
    const char                 *display_name;
    const char                 *description;
    const char                 *organization;

    const char                 *scep_identifier;
    const char                 *scep_uuid;
    const char                 *scep_url;
    const char                 *scep_name;
    const ngx_mdm_enroll_rdn_t *subject;
    size_t                      nsubject;
    const char                 *challenge;
    int64_t                     key_size;
    int64_t                     key_usage;

    const char                 *mdm_identifier;
    const char                 *mdm_uuid;
    const char                 *server_url;
    const char                 *checkin_url;
    const char                 *topic;
    int64_t                     access_rights;
    int                         sign_message;
    int                         check_out_when_removed;
    const char *const          *capabilities;
    size_t                      ncapabilities;
} ngx_mdm_enroll_profile_t;

/*
 * The phase-1 Profile Service profile of OTA enrollment: the device posts
 * the attributes named in "attributes", with the Challenge, to url.
 */
typedef struct {
    const char                 *identifier;
    const char                 *uuid;
    const char                 *display_name;
    const char                 *description;
    const char                 *organization;
    const char                 *url;
    const char                 *challenge;
    const char *const          *attributes;
    size_t                      nattributes;
} ngx_mdm_enroll_service_t;

/* NULL when out of memory; plist_free() the result */
plist_t ngx_mdm_enroll_profile(const ngx_mdm_enroll_profile_t *p);
plist_t ngx_mdm_enroll_service_profile(const ngx_mdm_enroll_service_t *s);


#endif /* _NGX_MDM_ENROLL_H_INCLUDED_ */
