/* sources: ngx_mdm_core/ngx_mdm_plist.c ngx_mdm_core/ngx_mdm_plist_xml.c ngx_mdm_core/ngx_mdm_plist_bin.c ngx_mdm_core/ngx_mdm_plist_json.c ngx_mdm_checkin/ngx_mdm_checkin_msg.c */

/*
 * ngx_mdm_checkin_msg: every check-in and command vector with its expected
 * values (nanomdm sidecars included), XML and binary forms alike,
 * enrollment ids of every channel kind, each failure class, every message
 * type, truncations, garbage and throughput.  Prints TAP; run from the
 * repository root (MDM_VECTORS overrides ../shared/vectors).
 */


#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ngx_mdm_checkin_msg.h"
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


/* the struct's fields by plist key, for checks and comparisons */

#define S  1
#define B  2
#define O  3

static const struct {
    const char  *key;
    size_t       off;
    int          type;
} fields[] = {
    { "UDID", offsetof(ngx_mdm_checkin_msg_t, udid), S },
    { "EnrollmentID", offsetof(ngx_mdm_checkin_msg_t, enrollment_id), S },
    { "EnrollmentUserID",
      offsetof(ngx_mdm_checkin_msg_t, enrollment_user_id), S },
    { "UserID", offsetof(ngx_mdm_checkin_msg_t, user_id), S },
    { "UserShortName", offsetof(ngx_mdm_checkin_msg_t, user_short_name), S },
    { "UserLongName", offsetof(ngx_mdm_checkin_msg_t, user_long_name), S },
    { "Topic", offsetof(ngx_mdm_checkin_msg_t, topic), S },
    { "SerialNumber", offsetof(ngx_mdm_checkin_msg_t, serial_number), S },
    { "Model", offsetof(ngx_mdm_checkin_msg_t, model), S },
    { "ModelName", offsetof(ngx_mdm_checkin_msg_t, model_name), S },
    { "ProductName", offsetof(ngx_mdm_checkin_msg_t, product_name), S },
    { "OSVersion", offsetof(ngx_mdm_checkin_msg_t, os_version), S },
    { "BuildVersion", offsetof(ngx_mdm_checkin_msg_t, build_version), S },
    { "DeviceName", offsetof(ngx_mdm_checkin_msg_t, device_name), S },
    { "IMEI", offsetof(ngx_mdm_checkin_msg_t, imei), S },
    { "MEID", offsetof(ngx_mdm_checkin_msg_t, meid), S },
    { "Token", offsetof(ngx_mdm_checkin_msg_t, token), S },
    { "PushMagic", offsetof(ngx_mdm_checkin_msg_t, push_magic), S },
    { "UnlockToken", offsetof(ngx_mdm_checkin_msg_t, unlock_token), S },
    { "BootstrapToken", offsetof(ngx_mdm_checkin_msg_t, bootstrap_token), S },
    { "Endpoint", offsetof(ngx_mdm_checkin_msg_t, endpoint), S },
    { "Data", offsetof(ngx_mdm_checkin_msg_t, data), S },
    { "TokenServiceType",
      offsetof(ngx_mdm_checkin_msg_t, token_service_type), S },
    { "DigestResponse", offsetof(ngx_mdm_checkin_msg_t, digest_response), S },
    { "CommandUUID", offsetof(ngx_mdm_checkin_msg_t, command_uuid), S },
    { "RequestType", offsetof(ngx_mdm_checkin_msg_t, request_type), S },
    { "MessageType", offsetof(ngx_mdm_checkin_msg_t, message_type), S },
    { "Status", offsetof(ngx_mdm_checkin_msg_t, status_name), S },
    { "id", offsetof(ngx_mdm_checkin_msg_t, id), S },
    { "device_id", offsetof(ngx_mdm_checkin_msg_t, device_id), S },
    { "NotOnConsole", offsetof(ngx_mdm_checkin_msg_t, not_on_console), B },
    { "AwaitingConfiguration",
      offsetof(ngx_mdm_checkin_msg_t, awaiting_configuration), B },
    { "TokenParameters",
      offsetof(ngx_mdm_checkin_msg_t, token_parameters), O },
    { "ErrorChain", offsetof(ngx_mdm_checkin_msg_t, error_chain), O },
    { NULL, 0, 0 }
};


static int
field(const char *key)
{
    int  i;

    for (i = 0; fields[i].key; i++) {
        if (strcmp(fields[i].key, key) == 0) {
            return i;
        }
    }

    return -1;
}


#define FSTR(m, i)  ((ngx_mdm_plist_str_t *) ((u_char *) (m) + fields[i].off))
#define FINT(m, i)  ((int *) ((u_char *) (m) + fields[i].off))
#define FOBJ(m, i)  ((plist_t *) ((u_char *) (m) + fields[i].off))


/*
 * "Key=value|Key#len|Key!|Key?" : equal, of length, absent, present and
 * empty; booleans compare with 0, 1 or -1 (absent).
 */

static int
check(const ngx_mdm_checkin_msg_t *m, const char *spec, char *why,
    size_t size)
{
    int                   i, bad;
    char                  buf[512], *item, *save, *op, *val;
    ngx_mdm_plist_str_t  *s;

    snprintf(buf, sizeof(buf), "%s", spec);
    bad = 0;
    why[0] = '\0';

    for (item = strtok_r(buf, "|", &save); item;
         item = strtok_r(NULL, "|", &save))
    {
        op = strpbrk(item, "=#!?");
        if (op == NULL) {
            continue;
        }

        val = op + 1;
        *op = '\0';
        i = field(item);

        if (i < 0) {
            snprintf(why, size, "no field %s", item);
            return 0;
        }

        op = (char *) spec + (op - buf);       /* the operator again */

        switch (fields[i].type) {

        case S:
            s = FSTR(m, i);

            if (*op == '=') {
                bad = s->data == NULL || s->len != strlen(val)
                      || memcmp(s->data, val, s->len) != 0;

            } else if (*op == '#') {
                bad = s->data == NULL || s->len != (size_t) atoi(val);

            } else if (*op == '!') {
                bad = s->data != NULL;

            } else {
                bad = s->data == NULL || s->len != 0;
            }

            break;

        case B:
            bad = (*op == '!') ? *FINT(m, i) != NGX_MDM_CHECKIN_UNSET
                               : *FINT(m, i) != atoi(val);
            break;

        default:
            bad = (*op == '!') ? *FOBJ(m, i) != NULL : *FOBJ(m, i) == NULL;
            break;
        }

        if (bad) {
            snprintf(why, size, "%s%c%s", item, *op, val);
            return 0;
        }
    }

    return 1;
}


static int
same_msg(const ngx_mdm_checkin_msg_t *a, const ngx_mdm_checkin_msg_t *b)
{
    int                   i;
    ngx_mdm_plist_str_t  *x, *y;

    if (a->kind != b->kind || a->type != b->type || a->status != b->status
        || a->enroll_type != b->enroll_type
        || a->user_channel != b->user_channel)
    {
        return 0;
    }

    for (i = 0; fields[i].key; i++) {
        switch (fields[i].type) {

        case S:
            x = FSTR(a, i);
            y = FSTR(b, i);

            if ((x->data == NULL) != (y->data == NULL) || x->len != y->len
                || (x->len && memcmp(x->data, y->data, x->len) != 0))
            {
                return 0;
            }

            break;

        case B:
            if (*FINT(a, i) != *FINT(b, i)) {
                return 0;
            }

            break;

        default:
            if ((*FOBJ(a, i) == NULL) != (*FOBJ(b, i) == NULL)) {
                return 0;
            }

            break;
        }
    }

    return 1;
}


typedef struct {
    const char                *file;
    ngx_mdm_checkin_rc_e       rc;
    int                        what;     /* type or status */
    const char                *expect;
} vec_t;


#define UDID0  "00000000-1111-2222-3333-444455556666"
#define UDID1  "1c111c111c111c111c111c111c111c111c111c11"
#define NANO   "66ADE930-5FDF-5EC4-8429-15640684C489"

static const vec_t  checkins[] = {
    { "commandment_Authenticate_10.11.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_AUTHENTICATE,
      "id=" UDID0 "|device_id=" UDID0 "|UDID=" UDID0
      "|Topic=com.apple.mgmt.test." UDID0 "|SerialNumber=C00000000004"
      "|Model=iMac15,1|ModelName=iMac|ProductName=iMac15,1"
      "|OSVersion=10.11.6|BuildVersion=15G1004|DeviceName=micromdm-test"
      "|UserID!|Token!|AwaitingConfiguration!" },
    { "commandment_Authenticate_IOS-11.3.1.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_AUTHENTICATE,
      "id=" UDID1 "|OSVersion=11.3.1|BuildVersion=15E302"
      "|ProductName=iPad4,1|SerialNumber=XXXXXXXXXXXX|DeviceName!|Model!"
      "|Topic=com.apple.mgmt.XServer.1c111c11-1c11-1c11-1c11-1c111c111c11" },
    { "commandment_Authenticate_IOS-9.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_AUTHENTICATE,
      "id=1111111111111111111111111111111111111111|OSVersion=9.3.2"
      "|BuildVersion=13F69|Topic=io.micromdm.topic." UDID0 },
    { "commandment_CheckOut_10.11.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_CHECK_OUT,
      "id=" UDID0 "|Topic=com.apple.mgmt.test." UDID0 },
    { "commandment_TokenUpdate_10.11.x-user.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_TOKEN_UPDATE,
      "id=" UDID0 ":" UDID0 "|device_id=" UDID0 "|UserID=" UDID0
      "|UserShortName=admin|UserLongName=Administrator|NotOnConsole=0"
      "|PushMagic=" UDID0 "|Token#3|AwaitingConfiguration!" },
    { "commandment_TokenUpdate_10.11.x.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_TOKEN_UPDATE,
      "id=" UDID0 "|Token=apple|PushMagic=" UDID0
      "|AwaitingConfiguration=0|NotOnConsole!|UnlockToken!" },
    { "commandment_TokenUpdate_10.12.2.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_TOKEN_UPDATE,
      "id=E3568F17-92ED-450A-8904-C3BF4CB7E9A5"
      "|Token=00201052-A2D0-403D-B857-72F913F5BCCE\n"
      "|PushMagic=B81B1FEC-09C6-4EC2-871C-E521EC971B38"
      "|Topic=com.apple.mgmt.commandment.dev" },
    /* MANIFEST: "Base64=" placeholder, not base64 */
    { "commandment_TokenUpdate_iOS-11.3.1.xml", NGX_MDM_CHECKIN_EMALFORMED,
      0, "" },
    { "micromdm_CheckOut.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_CHECK_OUT,
      "id=FA01680E-98CA-5557-8F59-7716ECFEE964|SerialNumber?|IMEI?|Token#0"
      "|UnlockToken#0|AwaitingConfiguration=0"
      "|Topic=com.apple.mgmt.XServer.8b4034c3-8cd9-4121-9999-cd2ddbf9a5b1" },
    { "micromdm_TokenUpdate.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_TOKEN_UPDATE,
      "id=FA01680E-98CA-5557-8F59-7716ECFEE964|Token#32|UnlockToken?"
      "|PushMagic=5002D9F7-2FCC-45D0-BDFD-5CB0597F18B5|BuildVersion?" },
    { "nanomdm_Authenticate.1.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_AUTHENTICATE,
      "id=663b07bb783e9ade1dae4fbb92ea12afc0ce5b69|SerialNumber=F5JM992LF193"
      "|ProductName=iPad2,5|OSVersion=9.3.5|BuildVersion=13G36"
      "|Topic=com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9" },
    { "nanomdm_Authenticate.2.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_AUTHENTICATE,
      "id=" NANO "|DeviceName=Fruit|Model=iMac14,2|ModelName=iMac"
      "|SerialNumber=C02MT66KFLHH" },
    { "nanomdm_TokenUpdate.2.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_TOKEN_UPDATE,
      "id=" NANO "|Token#32|PushMagic=888CEB39-BFFA-40F6-89FA-B60752EB63C2"
      "|AwaitingConfiguration=0|UnlockToken!" },
    { NULL, 0, 0, NULL }
};


#define CMD  NGX_MDM_CHECKIN_ENOTYPE    /* server-generated, no Status */

static const vec_t  reports[] = {
    { "commandment_AvailableOSUpdates_10.12.5.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "RequestType=AvailableOSUpdates" },
    { "commandment_AvailableOSUpdates_iOS-11.3.1.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "id=" UDID1 "|CommandUUID=8fb53ef6-5fcd-46c2-bf05-ee502406f240"
      "|RequestType!|ErrorChain!" },
    /* MANIFEST: "Base64=" placeholder, not base64 */
    { "commandment_CertificateList_iOS-11.3.1.xml",
      NGX_MDM_CHECKIN_EMALFORMED, 0, "" },
    { "commandment_DeviceInformation_10.11.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "id=" UDID0 },
    { "commandment_DeviceInformation_iOS-11.3.1.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "CommandUUID=3ab89975-490b-4f33-80c7-0982069272ba" },
    { "commandment_DeviceLock_iOS-11.3.1.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "CommandUUID=b6c8627f-bf4a-4ef4-8f40-d8673cd568c9" },
    { "commandment_Errors_10.12.5-invalid-command.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ERROR,
      "RequestType=RemoveProfile|ErrorChain?|id=" UDID0 },
    { "commandment_Errors_error_invalid_request_type.plist",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ERROR, "ErrorChain?" },
    { "commandment_Errors_iOS-11.3.1-AvailableOSUpdatesFailure.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ERROR,
      "CommandUUID=93289d88-c8da-4732-9a7e-33dd51851b6e|ErrorChain?" },
    { "commandment_Errors_iOS-11.3.1-CommandFormatError.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_COMMAND_FORMAT_ERROR,
      "CommandUUID=52aab5d2-6a61-4fe8-b685-44f8b56972d0|ErrorChain!" },
    { "commandment_InstallApplication_iOS-11.3.1-alreadyprompting.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ERROR, "ErrorChain?" },
    { "commandment_InstallApplication_iOS-12.1-prompting.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "CommandUUID=7a9df3db-d661-4c1c-aa0e-56d69c8718a5" },
    /* an app manifest, neither a check-in nor a report */
    { "commandment_InstallApplication_manifest_munkitools-3.1.0.3430.plist",
      NGX_MDM_CHECKIN_ENOTYPE, 0, "" },
    { "commandment_InstalledApplicationList_10.11.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "RequestType=InstalledApplicationList" },
    { "commandment_InstalledApplicationList_iOS-11.3.1.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "id=" UDID1 },
    { "commandment_ManagedApplicationList_iOS-11.3.1-Failed.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "commandment_ManagedApplicationList_iOS-12.1-Installing.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "commandment_ManagedApplicationList_iOS-12.1-Managed.xml",
      NGX_MDM_CHECKIN_OK, NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "commandment_ProfileList_10.11.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "commandment_SecurityInfo_10.11.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "RequestType=SecurityInfo" },
    { "commandment_SecurityInfo_IOS-9.x.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "id=1111111111111111111111111111111111111111" },
    { "commandment_SecurityInfo_macOS-10.13.1.xml", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "micromdm_command_DeviceInformation.plist", CMD, 0, "" },
    { "micromdm_command_InstallProfile.plist", CMD, 0, "" },
    { "micromdm_command_Settings_hostname_devicename.plist", CMD, 0, "" },
    { "nanocmd_certprof_certlist.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "nanocmd_certprof_resp-ack.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "CommandUUID=D053EE3A-EE0E-4E82-87D2-BB3624186694"
      "|id=6362F867-FFF2-4EA6-905C-3C796DF4EF68" },
    { "nanocmd_engine_devinfo.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "CommandUUID=DevInfo001|id=UDID001" },
    { "nanocmd_engine_secinfo.gen.plist", CMD, 0, "" },
    { "nanocmd_inventory_secinfo.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "nanomdm_DeviceInformation.1.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "id=" NANO "|RequestType=DeviceInformation"
      "|CommandUUID=76eda240-5488-4989-8339-f2ae160113c4" },
    { "zentral_certificate_list.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "zentral_installed_application_list.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "id=9353BC9A-5CF9-4C9E-9AD4-8D1E41D5FE3E" },
    { "zentral_managed_application_list.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED, "" },
    { "zentral_security_info_ios.plist", NGX_MDM_CHECKIN_OK,
      NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      "id=cb48a725986c8b4e23b6ca68e5b6941d073c990f" },
    { NULL, 0, 0, NULL }
};


static int
only_space(const u_char *p, size_t n)
{
    while (n--) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            return 0;
        }

        p++;
    }

    return 1;
}


static void
test_vector_set(const char *sub, const vec_t *set, int expect)
{
    int                    found, good, bad;
    char                   name[1024], why[256], *bin;
    DIR                   *d;
    size_t                 len, k;
    u_char                *body;
    uint32_t               blen;
    const vec_t           *v;
    struct dirent         *e;
    ngx_mdm_checkin_rc_e   rc;
    ngx_mdm_checkin_msg_t  m, b;

    memset(&b, 0, sizeof(b));

    /* every file of the directory has an expectation */

    snprintf(name, sizeof(name), "%s/%s", vectors, sub);
    d = opendir(name);
    ok(d != NULL, "%s: vector directory %s", sub, name);

    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".txt")) {
            continue;
        }

        for (found = 0, v = set; v->file; v++) {
            found |= (strcmp(v->file, e->d_name) == 0);
        }

        ok(found, "%s/%s has an expectation", sub, e->d_name);
    }

    if (d) {
        closedir(d);
    }

    for (v = set; v->file; v++) {
        snprintf(name, sizeof(name), "%s/%s", sub, v->file);
        body = slurp(name, &len);

        if (!ok(body != NULL, "%s: readable", name)) {
            continue;
        }

        rc = ngx_mdm_checkin_msg_parse(&m, body, len, expect, 0);

        good = (rc == v->rc);

        if (good && rc == NGX_MDM_CHECKIN_OK) {
            good = (expect == NGX_MDM_CHECKIN_EXPECT_CHECKIN)
                   ? (m.kind == NGX_MDM_CHECKIN_KIND_CHECKIN
                      && (int) m.type == v->what)
                   : (m.kind == NGX_MDM_CHECKIN_KIND_REPORT
                      && (int) m.status == v->what);
        }

        ok(good, "%s: %s%s%s", name, ngx_mdm_checkin_msg_strerror(rc),
           rc ? ": " : "", m.err);

        if (rc == NGX_MDM_CHECKIN_OK) {
            ok(check(&m, v->expect, why, sizeof(why)), "%s: fields %s",
               name, why);
            ok(m.raw == body && m.raw_len == len, "%s: raw body kept", name);

            /* the same message as a binary plist */

            bin = NULL;
            blen = 0;
            plist_to_bin(m.root, &bin, &blen);

            rc = bin ? ngx_mdm_checkin_msg_parse(&b, (u_char *) bin, blen,
                                                 expect, 0)
                     : NGX_MDM_CHECKIN_ENOMEM;

            ok(rc == NGX_MDM_CHECKIN_OK && same_msg(&m, &b),
               "%s: binary form gives the same message", name);

            ngx_mdm_checkin_msg_free(&b);
            free(bin);

            /* with no expectation the kind is found from the keys */

            rc = ngx_mdm_checkin_msg_parse(&b, body, len,
                                           NGX_MDM_CHECKIN_EXPECT_ANY, 0);
            ok(rc == NGX_MDM_CHECKIN_OK && same_msg(&m, &b),
               "%s: same without an expected kind", name);
            ngx_mdm_checkin_msg_free(&b);

            rc = ngx_mdm_checkin_msg_parse(&b, body, len,
                           expect == NGX_MDM_CHECKIN_EXPECT_CHECKIN
                           ? NGX_MDM_CHECKIN_EXPECT_REPORT
                           : NGX_MDM_CHECKIN_EXPECT_CHECKIN, 0);
            ok(rc == NGX_MDM_CHECKIN_ENOTYPE,
               "%s: refused as the other kind: %s", name, b.err);
            ngx_mdm_checkin_msg_free(&b);
        }

        ngx_mdm_checkin_msg_free(&m);

        /* every truncation: no crash, no success unless whitespace cut */

        bad = 0;

        for (k = 0; k < len; k++) {
            rc = ngx_mdm_checkin_msg_parse(&m, body, k, expect, 0);

            if (rc == NGX_MDM_CHECKIN_OK && !only_space(body + k, len - k)) {
                bad++;
            }

            ngx_mdm_checkin_msg_free(&m);
        }

        ok(bad == 0, "%s: %zu truncations handled", name, len);

        free(body);
    }
}


/* nanomdm sidecars: the device's values, carried over from Authenticate */

static void
test_sidecars(void)
{
    int                    i, n;
    char                   key[64], val[256], line[512], why[256];
    char                   path[1024], spec[512];
    FILE                  *f;
    size_t                 len, blen;
    u_char                *body, *b;
    ngx_mdm_checkin_msg_t  a, m;

    static const struct {
        const char  *sidecar;
        const char  *plist;
        int          expect;
    } cases[] = {
        { "checkin/nanomdm_TokenUpdate.2.txt",
          "checkin/nanomdm_TokenUpdate.2.plist",
          NGX_MDM_CHECKIN_EXPECT_CHECKIN },
        { "commands/nanomdm_DeviceInformation.1.txt",
          "commands/nanomdm_DeviceInformation.1.plist",
          NGX_MDM_CHECKIN_EXPECT_REPORT },
        { NULL, NULL, 0 }
    };

    body = slurp("checkin/nanomdm_Authenticate.2.plist", &len);
    ok(body && ngx_mdm_checkin_msg_parse(&a, body, len,
                                         NGX_MDM_CHECKIN_EXPECT_CHECKIN, 0)
               == NGX_MDM_CHECKIN_OK,
       "nanomdm_Authenticate.2.plist, the device the sidecars describe");

    for (i = 0; cases[i].sidecar; i++) {
        snprintf(path, sizeof(path), "%s/%s", vectors, cases[i].sidecar);
        f = fopen(path, "r");
        spec[0] = '\0';
        n = 0;

        while (f && fgets(line, sizeof(line), f)) {
            if (sscanf(line, "%63[^\t]\t%255[^\n]", key, val) == 2) {
                snprintf(spec + strlen(spec), sizeof(spec) - strlen(spec),
                         "%s%s=%s", n++ ? "|" : "", key, val);
            }
        }

        if (f) {
            fclose(f);
        }

        ok(n == 3 && check(&a, spec, why, sizeof(why)),
           "%s: %s on the Authenticate %s", cases[i].sidecar, spec, why);

        b = slurp(cases[i].plist, &blen);
        ok(b && ngx_mdm_checkin_msg_parse(&m, b, blen, cases[i].expect, 0)
                == NGX_MDM_CHECKIN_OK
           && m.id.len == a.id.len
           && memcmp(m.id.data, a.id.data, a.id.len) == 0,
           "%s: same enrollment as the Authenticate", cases[i].plist);
        ngx_mdm_checkin_msg_free(&m);
        free(b);
    }

    ngx_mdm_checkin_msg_free(&a);
    free(body);
}


static void
test_error_chain(void)
{
    size_t                 len;
    u_char                *body;
    int64_t                code;
    ngx_mdm_plist_str_t    dom, desc;
    ngx_mdm_checkin_msg_t  m;

    body = slurp("commands/"
                 "commandment_Errors_iOS-11.3.1-AvailableOSUpdatesFailure.xml",
                 &len);
    ok(body && ngx_mdm_checkin_msg_parse(&m, body, len,
                                         NGX_MDM_CHECKIN_EXPECT_REPORT, 0)
               == NGX_MDM_CHECKIN_OK, "ErrorChain report parses");

    ok(ngx_mdm_checkin_msg_error(&m, 0, &code, &dom, &desc) == 0
       && code == 2213 && strcmp((char *) dom.data, "DeviceManagement.error")
                          == 0
       && strcmp((char *) desc.data, "No update available.") == 0,
       "ErrorChain[0]");
    ok(ngx_mdm_checkin_msg_error(&m, 1, &code, &dom, &desc) == 0
       && code == 3
       && strcmp((char *) dom.data,
                 "com.apple.softwareupdateservices.errors") == 0,
       "ErrorChain[1]");
    ok(ngx_mdm_checkin_msg_error(&m, 2, &code, &dom, &desc) == -1,
       "ErrorChain ends");

    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = slurp("commands/nanocmd_certprof_resp-ack.plist", &len);
    ngx_mdm_checkin_msg_parse(&m, body, len, NGX_MDM_CHECKIN_EXPECT_REPORT, 0);
    ok(ngx_mdm_checkin_msg_error(&m, 0, &code, &dom, &desc) == -1,
       "no ErrorChain");
    ngx_mdm_checkin_msg_free(&m);
    free(body);
}


/* an XML plist dict: "Key", "s:str" | "d:base64" | "t" | "f" | "x:xml" */

static char *
mk(const char *first, ...)
{
    char        *buf, *v;
    size_t       n;
    va_list      args;
    const char  *k;

    buf = malloc(1 << 20);
    n = sprintf(buf, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<plist version=\"1.0\">\n<dict>\n");

    va_start(args, first);

    for (k = first; k; k = va_arg(args, const char *)) {
        v = va_arg(args, char *);
        n += sprintf(buf + n, "\t<key>%s</key>\n\t", k);

        switch (v[0]) {
        case 's':
            n += sprintf(buf + n, "<string>%s</string>\n", v + 2);
            break;
        case 'd':
            n += sprintf(buf + n, "<data>%s</data>\n", v + 2);
            break;
        case 't':
            n += sprintf(buf + n, "<true/>\n");
            break;
        case 'f':
            n += sprintf(buf + n, "<false/>\n");
            break;
        default:
            n += sprintf(buf + n, "%s\n", v + 2);
            break;
        }
    }

    va_end(args);

    sprintf(buf + n, "</dict>\n</plist>\n");

    return buf;
}


static ngx_mdm_checkin_rc_e
run(ngx_mdm_checkin_msg_t *m, char *body, int expect)
{
    ngx_mdm_checkin_rc_e  rc;

    rc = ngx_mdm_checkin_msg_parse(m, (u_char *) body, strlen(body), expect,
                                   0);

    return rc;
}


#define SHARED  NGX_MDM_CHECKIN_SHARED_IPAD_USER_ID
#define TU      "MessageType", "s:TokenUpdate", "Topic", "s:com.apple.mgmt.x", \
                "Token", "d:AAEC", "PushMagic", "s:magic-value-42"

static void
test_enrollment_ids(void)
{
    int                    i;
    char                   why[256], *body;
    char                   u[300], e[300], eu[300], id[300], sn[300];
    ngx_mdm_checkin_rc_e   rc;
    ngx_mdm_checkin_msg_t  m;

    static const struct {
        const char             *what;
        const char             *udid, *eid, *euid, *uid, *short_name;
        ngx_mdm_checkin_rc_e    rc;
        ngx_mdm_enroll_type_e   type;
        const char             *expect;
    } cases[] = {
        { "device channel", "D1", NULL, NULL, NULL, NULL, NGX_MDM_CHECKIN_OK,
          NGX_MDM_ENROLL_DEVICE, "id=D1|device_id=D1" },
        { "macOS user channel", "D1", NULL, NULL, "U1", "bob",
          NGX_MDM_CHECKIN_OK, NGX_MDM_ENROLL_USER,
          "id=D1:U1|device_id=D1" },
        { "Shared iPad user", "D1", NULL, NULL, SHARED, "kim@example.edu",
          NGX_MDM_CHECKIN_OK, NGX_MDM_ENROLL_SHARED_IPAD,
          "id=D1:kim@example.edu|device_id=D1" },
        { "Shared iPad user without UserShortName", "D1", NULL, NULL, SHARED,
          NULL, NGX_MDM_CHECKIN_EMISSING, NGX_MDM_ENROLL_NONE, "" },
        { "Shared iPad UserID compared exactly (as NanoMDM)", "D1", NULL,
          NULL, "ffffffff-ffff-ffff-ffff-ffffffffffff", "kim",
          NGX_MDM_CHECKIN_OK, NGX_MDM_ENROLL_USER,
          "id=D1:ffffffff-ffff-ffff-ffff-ffffffffffff" },
        { "User Enrollment, device channel", NULL, "E1", NULL, NULL, NULL,
          NGX_MDM_CHECKIN_OK, NGX_MDM_ENROLL_USER_ENROLLMENT_DEVICE,
          "id=E1|device_id=E1" },
        { "User Enrollment, user channel", NULL, "E1", "EU1", NULL, NULL,
          NGX_MDM_CHECKIN_OK, NGX_MDM_ENROLL_USER_ENROLLMENT,
          "id=E1:EU1|device_id=E1" },
        { "UDID wins over EnrollmentID", "D1", "E1", "EU1", NULL, NULL,
          NGX_MDM_CHECKIN_OK, NGX_MDM_ENROLL_DEVICE, "id=D1" },
        { "empty UDID counts as absent", "", "E1", NULL, NULL, NULL,
          NGX_MDM_CHECKIN_OK, NGX_MDM_ENROLL_USER_ENROLLMENT_DEVICE,
          "id=E1" },
        { "no identity", NULL, NULL, NULL, NULL, NULL,
          NGX_MDM_CHECKIN_EMISSING, NGX_MDM_ENROLL_NONE, "" },
        { "EnrollmentUserID alone", NULL, NULL, "EU1", NULL, NULL,
          NGX_MDM_CHECKIN_EMISSING, NGX_MDM_ENROLL_NONE, "" },
        { NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL }
    };

    for (i = 0; cases[i].what; i++) {
        snprintf(u, sizeof(u), "s:%s", cases[i].udid ? cases[i].udid : "");
        snprintf(e, sizeof(e), "s:%s", cases[i].eid ? cases[i].eid : "");
        snprintf(eu, sizeof(eu), "s:%s", cases[i].euid ? cases[i].euid : "");
        snprintf(id, sizeof(id), "s:%s", cases[i].uid ? cases[i].uid : "");
        snprintf(sn, sizeof(sn), "s:%s",
                 cases[i].short_name ? cases[i].short_name : "");

        body = mk(TU,
                  cases[i].udid ? "UDID" : "X1", u,
                  cases[i].eid ? "EnrollmentID" : "X2", e,
                  cases[i].euid ? "EnrollmentUserID" : "X3", eu,
                  cases[i].uid ? "UserID" : "X4", id,
                  cases[i].short_name ? "UserShortName" : "X5", sn,
                  NULL);

        rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);

        ok(rc == cases[i].rc && m.enroll_type == cases[i].type
           && (rc != NGX_MDM_CHECKIN_OK
               || (check(&m, cases[i].expect, why, sizeof(why))
                   && m.user_channel == (strchr(m.id.data ? (char *) m.id.data
                                                          : "", ':') != NULL)
                   && m.id.data[m.id.len] == '\0')),
           "enrollment id, %s: %s %s %s", cases[i].what,
           ngx_mdm_checkin_msg_strerror(rc),
           m.id.data ? (char *) m.id.data : "", m.err);

        ngx_mdm_checkin_msg_free(&m);
        free(body);
    }

    ok(strcmp(ngx_mdm_checkin_msg_enroll_type_name(NGX_MDM_ENROLL_SHARED_IPAD),
              "Shared iPad") == 0
       && strcmp(ngx_mdm_checkin_msg_enroll_type_name(
                     NGX_MDM_ENROLL_USER_ENROLLMENT_DEVICE),
                 "User Enrollment (Device)") == 0,
       "enroll type names");
}


static char *
b64(const u_char *src, size_t len)
{
    char        *out, *d;
    size_t       i;
    uint32_t     v;
    const char  *t =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    out = malloc(len / 3 * 4 + 8);
    d = out;

    for (i = 0; i + 2 < len; i += 3) {
        v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];
        *d++ = t[v >> 18];
        *d++ = t[(v >> 12) & 63];
        *d++ = t[(v >> 6) & 63];
        *d++ = t[v & 63];
    }

    if (len - i == 1) {
        v = src[i] << 16;
        *d++ = t[v >> 18];
        *d++ = t[(v >> 12) & 63];
        *d++ = '=';
        *d++ = '=';

    } else if (len - i == 2) {
        v = (src[i] << 16) | (src[i + 1] << 8);
        *d++ = t[v >> 18];
        *d++ = t[(v >> 12) & 63];
        *d++ = t[(v >> 6) & 63];
        *d++ = '=';
    }

    *d = '\0';

    return out;
}


static void
test_message_types(void)
{
    char                   why[256], *body, *data, *dd;
    json_t                *j;
    size_t                 len, dlen;
    u_char                *status;
    const u_char          *p;
    json_error_t           je;
    ngx_mdm_checkin_rc_e   rc;
    ngx_mdm_checkin_msg_t  m;

#define ID  "UDID", "s:D1"

    body = mk(ID, "MessageType", "s:SetBootstrapToken",
              "BootstrapToken", "d:Ym9vdHN0cmFw", "AwaitingConfiguration", "t",
              NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_OK
       && m.type == NGX_MDM_CHECKIN_SET_BOOTSTRAP_TOKEN
       && check(&m, "BootstrapToken=bootstrap|AwaitingConfiguration=1",
                why, sizeof(why)),
       "SetBootstrapToken %s %s", m.err, why);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:SetBootstrapToken", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN) == NGX_MDM_CHECKIN_OK
       && m.bootstrap_token.data == NULL,
       "SetBootstrapToken without a token (delete)");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:GetBootstrapToken",
              "AwaitingConfiguration", "f", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN) == NGX_MDM_CHECKIN_OK
       && m.type == NGX_MDM_CHECKIN_GET_BOOTSTRAP_TOKEN
       && m.awaiting_configuration == 0, "GetBootstrapToken");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:UserAuthenticate", "UserID", "s:U1",
              NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN) == NGX_MDM_CHECKIN_OK
       && m.type == NGX_MDM_CHECKIN_USER_AUTHENTICATE
       && m.digest_response.data == NULL
       && check(&m, "id=D1:U1", why, sizeof(why)),
       "UserAuthenticate, first message");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:UserAuthenticate", "UserID", "s:U1",
              "DigestResponse", "s:digest", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN) == NGX_MDM_CHECKIN_OK
       && check(&m, "DigestResponse=digest", why, sizeof(why)),
       "UserAuthenticate, second message");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:UserAuthenticate", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN)
       == NGX_MDM_CHECKIN_EMISSING && strstr(m.err, "UserID"),
       "UserAuthenticate without UserID: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    /* a real DDM status report as the Data of a check-in */

    status = slurp("ddm/kmfddm_status.1st.json", &len);
    data = status ? b64(status, len) : NULL;
    dd = malloc(len * 2 + 16);
    sprintf(dd, "d:%s", data ? data : "");

    body = mk("EnrollmentID", "s:E1", "MessageType",
              "s:DeclarativeManagement", "Endpoint", "s:status", "Data", dd,
              NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_OK
       && m.type == NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT
       && check(&m, "Endpoint=status|id=E1", why, sizeof(why))
       && ngx_mdm_checkin_msg_dm_data(&m, &p, &dlen) == 0
       && dlen == len && memcmp(p, status, len) == 0,
       "DeclarativeManagement: Data is the status report's bytes");

    j = (rc == NGX_MDM_CHECKIN_OK) ? json_loadb((const char *) p, dlen, 0, &je)
                                   : NULL;
    ok(json_object_get(j, "StatusItems") != NULL,
       "... and decodes as the DDM status JSON");
    json_decref(j);
    ngx_mdm_checkin_msg_free(&m);
    free(body);
    free(dd);
    free(data);
    free(status);

    body = mk(ID, "MessageType", "s:DeclarativeManagement",
              "Endpoint", "s:declaration/configuration/abc", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN) == NGX_MDM_CHECKIN_OK
       && ngx_mdm_checkin_msg_dm_data(&m, &p, &dlen) == -1,
       "DeclarativeManagement without Data");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:DeclarativeManagement", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN)
       == NGX_MDM_CHECKIN_EMISSING && strstr(m.err, "Endpoint"),
       "DeclarativeManagement without Endpoint: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:GetToken",
              "TokenServiceType", "s:com.apple.watch.pairing",
              "TokenParameters", "x:<dict><key>PhoneUDID</key>"
              "<string>P</string></dict>", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN) == NGX_MDM_CHECKIN_OK
       && m.type == NGX_MDM_CHECKIN_GET_TOKEN
       && check(&m, "TokenServiceType=com.apple.watch.pairing"
                    "|TokenParameters?", why, sizeof(why)),
       "GetToken with TokenParameters");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk(ID, "MessageType", "s:ReturnToService", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN) == NGX_MDM_CHECKIN_OK
       && m.type == NGX_MDM_CHECKIN_RETURN_TO_SERVICE, "ReturnToService");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "Status", "s:Idle", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT) == NGX_MDM_CHECKIN_OK
       && m.status == NGX_MDM_CHECKIN_STATUS_IDLE
       && m.command_uuid.data == NULL, "Idle report without CommandUUID");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "Status", "s:NotNow", "CommandUUID", "s:C1",
              NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT) == NGX_MDM_CHECKIN_OK
       && m.status == NGX_MDM_CHECKIN_STATUS_NOT_NOW, "NotNow report");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("EnrollmentID", "s:E1", "EnrollmentUserID", "s:EU",
              "Status", "s:Acknowledged", "CommandUUID", "s:C1", NULL);
    ok(run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT) == NGX_MDM_CHECKIN_OK
       && check(&m, "id=E1:EU|device_id=E1", why, sizeof(why)),
       "User Enrollment user-channel report");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    ok(strcmp(ngx_mdm_checkin_msg_type_name(NGX_MDM_CHECKIN_GET_TOKEN),
              "GetToken") == 0
       && strcmp(ngx_mdm_checkin_msg_type_name(NGX_MDM_CHECKIN_UNKNOWN),
                 "unknown") == 0
       && strcmp(ngx_mdm_checkin_msg_status_name(
                     NGX_MDM_CHECKIN_STATUS_COMMAND_FORMAT_ERROR),
                 "CommandFormatError") == 0,
       "type and status names");
#undef ID
}


static void
test_failures(void)
{
    char                   *body, big[600];
    size_t                  i;
    ngx_mdm_checkin_rc_e    rc;
    ngx_mdm_checkin_msg_t   m;

    /* not a plist */

    body = strdup("GET / HTTP/1.1\r\n\r\n");
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_ANY);
    ok(rc == NGX_MDM_CHECKIN_EMALFORMED, "not a plist: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = strdup("");
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_ANY);
    ok(rc == NGX_MDM_CHECKIN_EMALFORMED, "empty body: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = strdup("<plist><array><string>x</string></array></plist>");
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_ANY);
    ok(rc == NGX_MDM_CHECKIN_EMALFORMED, "root not a dict: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = strdup("<plist><dict><key>MessageType</key>"
                  "<string>Authenticate</string></dict></plist>trailing");
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_ANY);
    ok(rc == NGX_MDM_CHECKIN_EMALFORMED, "trailing garbage: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    /* neither MessageType nor Status */

    body = mk("UDID", "s:D1", "Topic", "s:t", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_ANY);
    ok(rc == NGX_MDM_CHECKIN_ENOTYPE, "no MessageType or Status: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    /* unknown MessageType: refused, but its UDID can be logged */

    body = mk("UDID", "s:D1", "MessageType", "s:Frob&#10;\"nicate\"", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EUNKNOWN_TYPE
       && m.type == NGX_MDM_CHECKIN_UNKNOWN
       && strcmp(m.err, "unknown MessageType \"Frob\\x0a\\x22nicate\\x22\"")
          == 0
       && m.udid.len == 2 && m.id.len == 2,
       "unknown MessageType, quoted for a log line: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    for (i = 0; i < sizeof(big) - 1; i++) {
        big[i] = 'A' + i % 26;
    }

    big[0] = 's';
    big[1] = ':';
    big[sizeof(big) - 1] = '\0';

    body = mk("UDID", "s:D1", "MessageType", big, NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EUNKNOWN_TYPE && strlen(m.err) < 100
       && strstr(m.err, "...\""),
       "a long unknown MessageType is cut: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "Status", "s:Done", "CommandUUID", "s:C", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT);
    ok(rc == NGX_MDM_CHECKIN_EUNKNOWN_STATUS
       && strcmp(m.err, "unknown Status \"Done\"") == 0,
       "unknown Status: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    /* missing required keys; the message never quotes a secret */

    body = mk("UDID", "s:D1", "MessageType", "s:TokenUpdate",
              "Topic", "s:t", "PushMagic", "s:magic-value-42", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EMISSING
       && strcmp(m.err, "TokenUpdate check-in without Token") == 0
       && strstr(m.err, "magic-value") == NULL,
       "TokenUpdate without Token: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "MessageType", "s:TokenUpdate",
              "Topic", "s:t", "Token", "d:AAEC", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EMISSING && strstr(m.err, "PushMagic"),
       "TokenUpdate without PushMagic: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "MessageType", "s:TokenUpdate",
              "Topic", "s:t", "Token", "d:", "PushMagic", "s:m", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EMISSING && strstr(m.err, "Token"),
       "TokenUpdate with an empty Token: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "MessageType", "s:Authenticate",
              "Topic", "s:", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EMISSING && strstr(m.err, "Topic"),
       "Authenticate with an empty Topic: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("MessageType", "s:Authenticate", "Topic", "s:t", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EMISSING && strstr(m.err, "UDID"),
       "Authenticate without UDID or EnrollmentID: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "Status", "s:Acknowledged", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT);
    ok(rc == NGX_MDM_CHECKIN_EMISSING
       && strcmp(m.err, "Acknowledged report without CommandUUID") == 0,
       "Acknowledged without CommandUUID: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    /* wrong types */

    body = mk("UDID", "s:D1", "MessageType", "s:TokenUpdate", "Topic", "s:t",
              "Token", "s:AAEC", "PushMagic", "s:m", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_ETYPE
       && strcmp(m.err, "Token is not a <data>") == 0,
       "Token as a string: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "MessageType", "x:<integer>1</integer>", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_ANY);
    ok(rc == NGX_MDM_CHECKIN_ETYPE && strstr(m.err, "MessageType"),
       "MessageType as an integer: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "Status", "x:<true/>", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT);
    ok(rc == NGX_MDM_CHECKIN_ETYPE && strstr(m.err, "Status"),
       "Status as a bool: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "MessageType", "s:GetBootstrapToken",
              "AwaitingConfiguration", "s:yes", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_ETYPE && strstr(m.err, "AwaitingConfiguration"),
       "AwaitingConfiguration as a string: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "x:<array/>", "MessageType", "s:Authenticate",
              "Topic", "s:t", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_ETYPE && strstr(m.err, "UDID"),
       "UDID as an array: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    body = mk("UDID", "s:D1", "Status", "s:Error", "CommandUUID", "s:C",
              "ErrorChain", "x:<dict/>", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT);
    ok(rc == NGX_MDM_CHECKIN_ETYPE && strstr(m.err, "ErrorChain"),
       "ErrorChain as a dict: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    /* report-only keys are not read on check-ins, and the other way */

    body = mk("UDID", "s:D1", "Status", "s:Acknowledged", "CommandUUID",
              "s:C", "Token", "x:<integer>5</integer>", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_REPORT);
    ok(rc == NGX_MDM_CHECKIN_OK && m.token.data == NULL,
       "a report's result keys are its own (Token as an integer)");
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    /* oversized */

    body = mk("UDID", "s:D1", "MessageType", "s:Authenticate",
              "Topic", "s:t", NULL);
    rc = ngx_mdm_checkin_msg_parse(&m, (u_char *) body, strlen(body),
                                   NGX_MDM_CHECKIN_EXPECT_CHECKIN, 64);
    ok(rc == NGX_MDM_CHECKIN_EOVERSIZED, "body over the limit: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    memset(big, 'u', sizeof(big));
    big[0] = 's';
    big[1] = ':';
    big[2 + NGX_MDM_CHECKIN_ID_MAX + 1] = '\0';
    body = mk("UDID", big, "MessageType", "s:Authenticate", "Topic", "s:t",
              NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EOVERSIZED && strstr(m.err, "UDID"),
       "UDID over %d bytes: %s", NGX_MDM_CHECKIN_ID_MAX, m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    big[2 + NGX_MDM_CHECKIN_ID_MAX] = '\0';
    body = mk("UDID", "s:D1", "UserID", big, "MessageType", "s:TokenUpdate",
              "Topic", "s:t", "Token", "d:AA==", "PushMagic", "s:m", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_OK && m.id.len == 3 + NGX_MDM_CHECKIN_ID_MAX,
       "UserID of exactly %d bytes", NGX_MDM_CHECKIN_ID_MAX);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    {
        char  deep[2048];
        int   n = 0, k;

        n += sprintf(deep + n, "<plist><dict><key>UDID</key><string>D"
                               "</string><key>x</key>");
        for (k = 0; k < 70; k++) {
            n += sprintf(deep + n, "<array>");
        }
        for (k = 0; k < 70; k++) {
            n += sprintf(deep + n, "</array>");
        }
        sprintf(deep + n, "</dict></plist>");

        rc = run(&m, deep, NGX_MDM_CHECKIN_EXPECT_ANY);
        ok(rc == NGX_MDM_CHECKIN_EOVERSIZED, "nesting too deep: %s", m.err);
        ngx_mdm_checkin_msg_free(&m);
    }

    /* control characters in ids */

    body = mk("UDID", "s:D1&#9;x", "MessageType", "s:Authenticate",
              "Topic", "s:t", NULL);
    rc = run(&m, body, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    ok(rc == NGX_MDM_CHECKIN_EMALFORMED && strstr(m.err, "UDID"),
       "UDID with a TAB: %s", m.err);
    ngx_mdm_checkin_msg_free(&m);
    free(body);

    ok(strcmp(ngx_mdm_checkin_msg_strerror(NGX_MDM_CHECKIN_EMISSING),
              "missing field") == 0
       && strcmp(ngx_mdm_checkin_msg_strerror((ngx_mdm_checkin_rc_e) 77),
                 "unknown error") == 0, "strerror");

    /* free is idempotent and safe after any result */

    ngx_mdm_checkin_msg_free(&m);
    ngx_mdm_checkin_msg_free(&m);
    ok(m.root == NULL, "free twice");
}


static uint64_t  rnd_state = 0x2545f4914f6cdd1dULL;

static uint64_t
rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;

    return rnd_state;
}


static void
test_garbage(void)
{
    size_t                 i, k, len, n;
    u_char                 buf[512], *v, *mut;
    ngx_mdm_checkin_msg_t  m;

    for (i = 0; i < 20000; i++) {
        len = rnd() % sizeof(buf);

        for (k = 0; k < len; k++) {
            buf[k] = (u_char) rnd();
        }

        if (i % 3 == 1 && len > 8) {
            memcpy(buf, "bplist00", 8);
        }

        (void) ngx_mdm_checkin_msg_parse(&m, buf, len, (int) (i % 3), 0);
        ngx_mdm_checkin_msg_free(&m);
    }

    ok(1, "20000 random bodies");

    v = slurp("checkin/commandment_TokenUpdate_10.11.x-user.plist", &len);
    mut = v ? malloc(len) : NULL;
    n = 0;

    for (i = 0; mut && i < 20000; i++) {
        memcpy(mut, v, len);

        for (k = 0; k < 1 + i % 4; k++) {
            mut[rnd() % len] = (u_char) rnd();
        }

        n += (ngx_mdm_checkin_msg_parse(&m, mut, len, 0, 0)
              == NGX_MDM_CHECKIN_OK);
        ngx_mdm_checkin_msg_free(&m);
    }

    ok(mut != NULL, "20000 mutated TokenUpdates, %zu still valid", n);
    free(mut);
    free(v);
}


static void
test_throughput(void)
{
    double                 secs, rate;
    size_t                 len, i, n;
    clock_t                t0;
    u_char                *body;
    ngx_mdm_checkin_msg_t  m;

    body = slurp("checkin/nanomdm_TokenUpdate.2.plist", &len);
    if (body == NULL) {
        ok(0, "throughput vector");
        return;
    }

    n = 50000;
    t0 = clock();

    for (i = 0; i < n; i++) {
        (void) ngx_mdm_checkin_msg_parse(&m, body, len,
                                         NGX_MDM_CHECKIN_EXPECT_CHECKIN, 0);
        ngx_mdm_checkin_msg_free(&m);
    }

    secs = (double) (clock() - t0) / CLOCKS_PER_SEC;
    rate = n / (secs > 0 ? secs : 1e-9);

    ok(rate > 10000, "TokenUpdate parse rate on one core: %.0f/s "
       "(%.1f us each)", rate, 1e6 * secs / n);

    free(body);
}


int
main(void)
{
    vectors = getenv("MDM_VECTORS");

    if (vectors == NULL) {
        vectors = "../shared/vectors";
    }

    test_vector_set("checkin", checkins, NGX_MDM_CHECKIN_EXPECT_CHECKIN);
    test_vector_set("commands", reports, NGX_MDM_CHECKIN_EXPECT_REPORT);
    test_sidecars();
    test_error_chain();
    test_enrollment_ids();
    test_message_types();
    test_failures();
    test_garbage();
    test_throughput();

    printf("1..%d\n", tap_n);

    return tap_failed ? 1 : 0;
}
