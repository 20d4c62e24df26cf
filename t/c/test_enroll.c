/* sources: ngx_mdm_core/ngx_mdm_plist.c ngx_mdm_core/ngx_mdm_plist_xml.c ngx_mdm_core/ngx_mdm_plist_bin.c ngx_mdm_core/ngx_mdm_plist_json.c ngx_mdm_core/ngx_mdm_x509.c ngx_mdm_core/ngx_mdm_cms.c ngx_mdm_checkin/ngx_mdm_enroll_info.c ngx_mdm_checkin/ngx_mdm_enroll_profile.c */

/*
 * ngx_mdm_enroll: the device attributes of the real OTA phase-2 capture
 * (verified against Apple iPhone Device CA alone) and of the real DEP
 * MachineInfo content, each failure class, the OS version comparisons,
 * the name-based UUIDs, and the profiles read back as plists.  Prints
 * TAP; run from the repository root (MDM_VECTORS overrides
 * ../shared/vectors).
 */


#define _GNU_SOURCE         /* memmem() */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_mdm_x509.h"
#include "ngx_mdm_enroll.h"
#include "tap.h"


static const char  *vectors;



static u_char *
slurp(const char *name, size_t *len)
{
    long     n;
    char     path[1024];
    FILE    *f;
    u_char  *buf;

    snprintf(path, sizeof(path), "%s/%s", vectors, name);

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc(n + 1);

    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        free(buf);
        fclose(f);
        return NULL;
    }

    fclose(f);
    buf[n] = '\0';
    *len = n;

    return buf;
}


static int
str_is(ngx_mdm_plist_str_t *s, const char *want)
{
    return s->data != NULL && s->len == strlen(want)
           && memcmp(s->data, want, s->len) == 0;
}


static const char *
dict_string(plist_t dict, const char *key)
{
    ngx_mdm_plist_str_t  s;

    if (ngx_mdm_plist_get_string(dict, key, &s) != NGX_MDM_PLIST_OK) {
        return "";
    }

    return (const char *) s.data;
}


static int64_t
dict_int(plist_t dict, const char *key)
{
    int64_t  v;

    if (ngx_mdm_plist_get_integer(dict, key, &v) != NGX_MDM_PLIST_OK) {
        return -1;
    }

    return v;
}


static int
dict_bool(plist_t dict, const char *key)
{
    int  v;

    if (ngx_mdm_plist_get_bool(dict, key, &v) != NGX_MDM_PLIST_OK) {
        return -1;
    }

    return v;
}


/* the real phase-2 capture: signed content -> attributes */

static void
test_capture(void)
{
    char                      *json;
    u_char                    *der, *content, *chain_pem, *serial;
    size_t                     len, clen, chain_len;
    X509_STORE                *store;
    STACK_OF(X509)            *chain, *devca;
    ngx_mdm_x509_rc_e          xrc;
    ngx_mdm_enroll_rc_e        rc;
    ngx_mdm_enroll_info_t      info;
    ngx_mdm_x509_verifier_t   *v;

    der = slurp("enroll/zentral_ota_payload_phase_2.der", &len);
    chain_pem = slurp("enroll/zentral_Apple_iPhone_Device_CA_Fullchain.pem",
                      &chain_len);

    if (!ok(der != NULL && chain_pem != NULL, "read the phase-2 capture "
            "and Apple's chain"))
    {
        return;
    }

    chain = ngx_mdm_x509_chain_from_pem((char *) chain_pem, chain_len);
    ok(chain != NULL && sk_X509_num(chain) == 3, "Apple's chain: 3 "
       "certificates");

    /* Apple iPhone Device CA alone, as the module trusts it */

    devca = sk_X509_new_null();
    sk_X509_push(devca, sk_X509_value(chain, 0));
    store = ngx_mdm_x509_store_create(devca);
    v = ngx_mdm_x509_verifier_create(store, NGX_MDM_X509_APPLE_DEVICE);
    X509_STORE_free(store);
    sk_X509_free(devca);

    content = malloc(len);
    xrc = ngx_mdm_cms_verify_attached(der, len, v, 0, content, len, &clen,
                                      NULL);
    ok(xrc == NGX_MDM_X509_OK, "the capture verifies against Apple iPhone "
       "Device CA alone (%s)", ngx_mdm_x509_error());

    rc = ngx_mdm_enroll_info_parse(content, clen, &info, NULL);
    ok(rc == NGX_MDM_ENROLL_OK, "its content parses as device attributes");
    ok(str_is(&info.udid, "78897E40-F532-5DE0-A7DC-56BAC5CEEB9C"), "UDID");
    ok(str_is(&info.serial, "ZDL2M9PTJ3"), "SERIAL");
    ok(str_is(&info.product, "VirtualMac2,1"), "PRODUCT");
    ok(str_is(&info.version, "22A380"), "VERSION");
    ok(info.os_version.data == NULL, "no OS_VERSION in an OTA body");
    ok(info.imei.data != NULL && info.imei.len == 0, "empty IMEI kept");
    ok(str_is(&info.challenge, "8gLEIttrT7qbLOZs3XzL5XPgNXCliGwRLtn2Lfe4GBs"
                               "a7g6MGm2sJjicKrLFal4D"), "CHALLENGE");
    ok(info.can_request_software_update == 0,
       "MDM_CAN_REQUEST_SOFTWARE_UPDATE absent: false");

    json = ngx_mdm_enroll_info_json(&info);
    ok(json != NULL && strstr(json, "\"UDID\":\"78897E40-") != NULL
       && strstr(json, "CHALLENGE") == NULL
       && strstr(json, "8gLEIttr") == NULL,
       "JSON for storage keeps the attributes and drops the token: %s",
       json ? json : "(null)");
    free(json);

    ok(ngx_mdm_enroll_platform(info.product.data, info.product.len) != NULL
       && strcmp(ngx_mdm_enroll_platform(info.product.data,
                                         info.product.len), "macos") == 0,
       "VirtualMac2,1 is macos");

    ngx_mdm_enroll_info_free(&info);
    ok(info.root == NULL, "freed");

    /* the serial number changed in the signed content: refused */

    serial = memmem(der, len, "ZDL2M9PTJ3", 10);
    if (serial) {
        serial[0] = 'X';
    }

    xrc = ngx_mdm_cms_verify_attached(der, len, v, 0, content, len, &clen,
                                      NULL);
    ok(serial != NULL && xrc == NGX_MDM_X509_BAD_SIGNATURE,
       "SERIAL changed in the content: %s", ngx_mdm_x509_rc_str(xrc));

    ngx_mdm_x509_verifier_free(v);
    ngx_mdm_x509_chain_free(chain);
    free(content);
    free(chain_pem);
    free(der);
}


/* the real MachineInfo content an iPad sent for its DEP profile */

static void
test_machine_info(void)
{
    u_char                 *xml;
    size_t                  len;
    ngx_mdm_enroll_rc_e     rc;
    ngx_mdm_enroll_info_t   info;

    xml = slurp("enroll/commandment_dep_profile.xml", &len);
    if (!ok(xml != NULL, "read enroll/commandment_dep_profile.xml")) {
        return;
    }

    rc = ngx_mdm_enroll_info_parse(xml, len, &info, NULL);
    ok(rc == NGX_MDM_ENROLL_OK, "MachineInfo parses");
    ok(str_is(&info.udid, "00000000000000000000000000000000"), "UDID");
    ok(str_is(&info.serial, "BLXLN1111111"), "SERIAL");
    ok(str_is(&info.language, "en-AU"), "LANGUAGE");
    ok(str_is(&info.version, "15A5278f"), "VERSION");
    ok(info.challenge.data == NULL, "no CHALLENGE");
    ok(strcmp(ngx_mdm_enroll_platform(info.product.data, info.product.len),
              "ipados") == 0, "iPad4,1 is ipados");

    ngx_mdm_enroll_info_free(&info);
    free(xml);
}


#define PLIST_HEAD                                                            \
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                            \
    "<plist version=\"1.0\"><dict>"
#define PLIST_TAIL  "</dict></plist>\n"


static void
test_failures(void)
{
    size_t                  i;
    char                    err[NGX_MDM_ENROLL_ERR_LEN];
    ngx_mdm_enroll_rc_e     rc;
    ngx_mdm_enroll_info_t   info;

    static const struct {
        const char            *doc;
        ngx_mdm_enroll_rc_e    rc;
        const char            *what;
    }  cases[] = {
        { "", NGX_MDM_ENROLL_EFORMAT, "empty" },
        { "garbage", NGX_MDM_ENROLL_EFORMAT, "not a plist" },
        { "<?xml version=\"1.0\"?><plist version=\"1.0\"><array/></plist>",
          NGX_MDM_ENROLL_EFORMAT, "an array" },
        { PLIST_HEAD "<key>UDID</key><string>ABC</string>",
          NGX_MDM_ENROLL_EFORMAT, "truncated" },
        { PLIST_HEAD "<key>SERIAL</key><string>S1</string>" PLIST_TAIL,
          NGX_MDM_ENROLL_EMISSING, "no UDID" },
        { PLIST_HEAD "<key>UDID</key><string>U1</string>" PLIST_TAIL,
          NGX_MDM_ENROLL_EMISSING, "no SERIAL" },
        { PLIST_HEAD "<key>UDID</key><string></string>"
          "<key>SERIAL</key><string>S1</string>" PLIST_TAIL,
          NGX_MDM_ENROLL_EMISSING, "empty UDID" },
        { PLIST_HEAD "<key>UDID</key><integer>1</integer>"
          "<key>SERIAL</key><string>S1</string>" PLIST_TAIL,
          NGX_MDM_ENROLL_EINVAL, "UDID not a string" },
        { PLIST_HEAD "<key>UDID</key><string>U1'; DROP</string>"
          "<key>SERIAL</key><string>S1</string>" PLIST_TAIL,
          NGX_MDM_ENROLL_EINVAL, "UDID with other characters" },
        { PLIST_HEAD "<key>UDID</key><string>U1</string>"
          "<key>SERIAL</key><string>S/1</string>" PLIST_TAIL,
          NGX_MDM_ENROLL_EINVAL, "SERIAL with a slash" },
        { PLIST_HEAD "<key>UDID</key><string>U1</string>"
          "<key>SERIAL</key><string>S1</string>"
          "<key>PRODUCT</key><true/>" PLIST_TAIL,
          NGX_MDM_ENROLL_EINVAL, "PRODUCT not a string" },
        { PLIST_HEAD "<key>UDID</key><string>U1</string>"
          "<key>SERIAL</key><string>S1</string>"
          "<key>MDM_CAN_REQUEST_SOFTWARE_UPDATE</key><true/>"
          "<key>OS_VERSION</key><string>17.1</string>" PLIST_TAIL,
          NGX_MDM_ENROLL_OK, "minimal with OS_VERSION" }
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rc = ngx_mdm_enroll_info_parse((const u_char *) cases[i].doc,
                                       strlen(cases[i].doc), &info, err);
        ok(rc == cases[i].rc && (rc == NGX_MDM_ENROLL_OK) == (info.root
                                                             != NULL),
           "%s: rc %d (%s)", cases[i].what, (int) rc, err);

        if (rc == NGX_MDM_ENROLL_OK) {
            ok(info.can_request_software_update == 1
               && str_is(&info.os_version, "17.1"),
               "MDM_CAN_REQUEST_SOFTWARE_UPDATE and OS_VERSION read");
        }

        ngx_mdm_enroll_info_free(&info);
    }

    /* a UDID of 65 characters */

    {
        char  doc[512];

        snprintf(doc, sizeof(doc), PLIST_HEAD "<key>UDID</key><string>%0*d"
                 "</string><key>SERIAL</key><string>S</string>" PLIST_TAIL,
                 65, 0);
        rc = ngx_mdm_enroll_info_parse((u_char *) doc, strlen(doc), &info,
                                       err);
        ok(rc == NGX_MDM_ENROLL_EINVAL, "UDID of 65 characters: %s", err);
        ngx_mdm_enroll_info_free(&info);
    }
}


static void
test_versions(void)
{
    size_t  i;

    static const struct {
        const char  *a;
        const char  *b;
        int          want;
    }  cases[] = {
        { "17.0", "17.0", 0 },
        { "17", "17.0.0", 0 },
        { "16.7.2", "17.0", -1 },
        { "17.1", "17.0.9", 1 },
        { "14.10", "14.9", 1 },
        { "10.15.7", "11", -1 },
        { "", "17", -2 },
        { "17.", "17", -2 },
        { ".17", "17", -2 },
        { "17..1", "17", -2 },
        { "17.0b", "17", -2 },
        { "1234567890", "1", -2 },
        { "1.2.3.4.5.6.7.8", "1", 1 },
        { "1.2.3.4.5.6.7.8.9", "1", -2 }
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ok(ngx_mdm_enroll_version_cmp((u_char *) cases[i].a,
                                      strlen(cases[i].a),
                                      (u_char *) cases[i].b,
                                      strlen(cases[i].b))
           == cases[i].want, "version \"%s\" vs \"%s\": %d", cases[i].a,
           cases[i].b, cases[i].want);
    }

    ok(ngx_mdm_enroll_platform((u_char *) "iPhone15,2", 10) != NULL
       && strcmp(ngx_mdm_enroll_platform((u_char *) "iPhone15,2", 10), "ios")
          == 0, "iPhone15,2 is ios");
    ok(ngx_mdm_enroll_platform((u_char *) "MacBookPro18,1", 14) != NULL
       && strcmp(ngx_mdm_enroll_platform((u_char *) "MacBookPro18,1", 14),
                 "macos") == 0, "MacBookPro18,1 is macos");
    ok(ngx_mdm_enroll_platform((u_char *) "Macmini9,1", 10) != NULL
       && strcmp(ngx_mdm_enroll_platform((u_char *) "Macmini9,1", 10),
                 "macos") == 0, "Macmini9,1 is macos");
    ok(ngx_mdm_enroll_platform((u_char *) "Mac", 3) == NULL,
       "\"Mac\" alone is no product");
    ok(ngx_mdm_enroll_platform((u_char *) "Toaster1,1", 10) == NULL,
       "unknown product: no platform");
}


static void
test_uuids(void)
{
    char  a[NGX_MDM_ENROLL_UUID_LEN + 1], b[NGX_MDM_ENROLL_UUID_LEN + 1],
          c[NGX_MDM_ENROLL_UUID_LEN + 1];

    ngx_mdm_enroll_uuid("https://mdm.example.org/mdm", "profile", a);
    ngx_mdm_enroll_uuid("https://mdm.example.org/mdm", "profile", b);
    ngx_mdm_enroll_uuid("https://mdm.example.org/mdm", "scep", c);

    ok(strlen(a) == 36 && a[8] == '-' && a[13] == '-' && a[18] == '-'
       && a[23] == '-', "UUID shape: %s", a);
    ok(a[14] == '5' && strchr("89AB", a[19]) != NULL,
       "version 5, RFC 4122 variant");
    ok(strcmp(a, b) == 0, "same server and role: same UUID");
    ok(strcmp(a, c) != 0, "another role: another UUID");

    ngx_mdm_enroll_uuid("https://other.example.org/mdm", "profile", b);
    ok(strcmp(a, b) != 0, "another server: another UUID");
}


static void
test_profiles(void)
{
    char                      *xml;
    size_t                     xml_len;
    plist_t                    root, again, content, scep, mdm, sc, subj,
                               rdn, caps;
    ngx_mdm_plist_err_t        err;
    ngx_mdm_enroll_profile_t   p;
    ngx_mdm_enroll_service_t   s;

    static const ngx_mdm_enroll_rdn_t  subject[] = {
        { "O", "Example & <Co>" }, { "CN", "MDM Identity" }
    };
    static const char  *capabilities[] = {
        NGX_MDM_ENROLL_CAP_PER_USER, NGX_MDM_ENROLL_CAP_BOOTSTRAP
    };
    static const char  *attributes[] = { "UDID", "SERIAL" };

    memset(&p, 0, sizeof(p));
    p.identifier = "org.example.enroll";
    p.uuid = "11111111-1111-5111-8111-111111111111";
    p.display_name = "Example MDM";
    p.organization = "Example & Co";
    p.scep_identifier = "org.example.enroll.scep";
    p.scep_uuid = "22222222-2222-5222-8222-222222222222";
    p.scep_url = "https://mdm.example.org/mdm/apple/scep";
    p.subject = subject;
    p.nsubject = 2;
    p.challenge = "0123456789abcdef";
    p.key_size = 2048;
    p.key_usage = 5;
    p.mdm_identifier = "org.example.enroll.mdm";
    p.mdm_uuid = "33333333-3333-5333-8333-333333333333";
    p.server_url = "https://mdm.example.org/mdm/apple/mdm";
    p.topic = "com.apple.mgmt.External.e0bd1eac";
    p.access_rights = 8191;
    p.sign_message = 0;
    p.check_out_when_removed = 1;
    p.capabilities = capabilities;
    p.ncapabilities = 2;

    root = ngx_mdm_enroll_profile(&p);
    ok(root != NULL, "enrollment profile built");

    ok(ngx_mdm_plist_to_xml(root, &xml, &xml_len, &err) == NGX_MDM_PLIST_OK,
       "written as XML");
    plist_free(root);

    again = ngx_mdm_plist_parse((u_char *) xml, xml_len, 0, &err);
    ok(again != NULL, "read back by the strict reader: %s", err.text);
    ok(strstr(xml, "Example &amp; &lt;Co&gt;") != NULL,
       "markup in a value is escaped");
    ngx_mdm_plist_xml_free(xml);

    if (again == NULL) {
        return;
    }

    ok(strcmp(dict_string(again, "PayloadType"), "Configuration") == 0
       && dict_int(again, "PayloadVersion") == 1
       && strcmp(dict_string(again, "PayloadIdentifier"),
                 "org.example.enroll") == 0
       && strcmp(dict_string(again, "PayloadOrganization"),
                 "Example & Co") == 0
       && ngx_mdm_plist_get_string(again, "PayloadDescription", NULL)
          == NGX_MDM_PLIST_ABSENT,
       "top level: Configuration, version 1, identifier, organization, "
       "no description");

    content = NULL;
    ngx_mdm_plist_get_array(again, "PayloadContent", &content);
    ok(content != NULL && plist_array_get_size(content) == 2,
       "two payloads");

    scep = plist_array_get_item(content, 0);
    mdm = plist_array_get_item(content, 1);
    sc = NULL;
    ngx_mdm_plist_get_dict(scep, "PayloadContent", &sc);

    ok(strcmp(dict_string(scep, "PayloadType"), "com.apple.security.scep")
       == 0 && sc != NULL
       && strcmp(dict_string(sc, "URL"),
                 "https://mdm.example.org/mdm/apple/scep") == 0
       && strcmp(dict_string(sc, "Challenge"), "0123456789abcdef") == 0
       && dict_int(sc, "Keysize") == 2048
       && strcmp(dict_string(sc, "Key Type"), "RSA") == 0
       && dict_int(sc, "Key Usage") == 5
       && ngx_mdm_plist_get_string(sc, "Name", NULL)
          == NGX_MDM_PLIST_ABSENT,
       "SCEP payload: nested PayloadContent with URL, Challenge, Keysize "
       "2048, Key Type RSA, Key Usage 5");

    subj = NULL;
    ngx_mdm_plist_get_array(sc, "Subject", &subj);
    rdn = subj ? plist_array_get_item(subj, 1) : NULL;
    rdn = rdn ? plist_array_get_item(rdn, 0) : NULL;

    ok(subj != NULL && plist_array_get_size(subj) == 2 && rdn != NULL
       && plist_array_get_size(rdn) == 2,
       "Subject: an array of RDNs, each an array of [type, value]");

    ok(strcmp(dict_string(mdm, "PayloadType"), "com.apple.mdm") == 0
       && strcmp(dict_string(mdm, "IdentityCertificateUUID"),
                 dict_string(scep, "PayloadUUID")) == 0
       && strcmp(dict_string(mdm, "Topic"),
                 "com.apple.mgmt.External.e0bd1eac") == 0
       && strcmp(dict_string(mdm, "ServerURL"),
                 "https://mdm.example.org/mdm/apple/mdm") == 0
       && ngx_mdm_plist_get_string(mdm, "CheckInURL", NULL)
          == NGX_MDM_PLIST_ABSENT
       && dict_int(mdm, "AccessRights") == 8191
       && dict_bool(mdm, "SignMessage") == 0
       && dict_bool(mdm, "CheckOutWhenRemoved") == 1,
       "MDM payload: keys at its top, IdentityCertificateUUID is the SCEP "
       "payload's UUID");

    caps = NULL;
    ngx_mdm_plist_get_array(mdm, "ServerCapabilities", &caps);
    ok(caps != NULL && plist_array_get_size(caps) == 2,
       "ServerCapabilities: per-user connections, bootstrap token");

    plist_free(again);

    /* the OTA phase-2 answer: SCEP alone */

    p.server_url = NULL;
    root = ngx_mdm_enroll_profile(&p);
    content = NULL;
    ngx_mdm_plist_get_array(root, "PayloadContent", &content);
    ok(content != NULL && plist_array_get_size(content) == 1,
       "without a ServerURL: the SCEP payload alone");
    plist_free(root);

    /* the phase-1 Profile Service profile */

    memset(&s, 0, sizeof(s));
    s.identifier = "org.example.enroll.ota";
    s.uuid = "44444444-4444-5444-8444-444444444444";
    s.display_name = "Example MDM";
    s.url = "https://mdm.example.org/api/latest/fleet/ota_enrollment";
    s.challenge = "tok";
    s.attributes = attributes;
    s.nattributes = 2;

    root = ngx_mdm_enroll_service_profile(&s);
    sc = NULL;
    ngx_mdm_plist_get_dict(root, "PayloadContent", &sc);
    caps = NULL;
    ngx_mdm_plist_get_array(sc, "DeviceAttributes", &caps);

    ok(root != NULL
       && strcmp(dict_string(root, "PayloadType"), "Profile Service") == 0
       && sc != NULL && strcmp(dict_string(sc, "Challenge"), "tok") == 0
       && strcmp(dict_string(sc, "URL"), s.url) == 0
       && caps != NULL && plist_array_get_size(caps) == 2,
       "Profile Service: PayloadContent dict of URL, DeviceAttributes, "
       "Challenge");

    plist_free(root);
}


int
main(void)
{
    vectors = getenv("MDM_VECTORS");

    if (vectors == NULL) {
        vectors = "../shared/vectors";
    }

    test_capture();
    test_machine_info();
    test_failures();
    test_versions();
    test_uuids();
    test_profiles();

    printf("1..%d\n", tap_n);

    return tap_failed ? 1 : 0;
}
