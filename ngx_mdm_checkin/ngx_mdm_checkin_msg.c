
/*
 * Check-in messages and command reports: the protocol's message types,
 * statuses and keys are the tables below; see ngx_mdm_checkin_msg.h.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ngx_mdm_checkin_msg.h"


#define NGX_MDM_CHECKIN_STRING    1
#define NGX_MDM_CHECKIN_DATA      2
#define NGX_MDM_CHECKIN_BOOL      3
#define NGX_MDM_CHECKIN_DICT      4
#define NGX_MDM_CHECKIN_ARRAY     5

#define NGX_MDM_CHECKIN_IN        0x01    /* read on check-ins */
#define NGX_MDM_CHECKIN_REP       0x02    /* read on reports */
#define NGX_MDM_CHECKIN_BOTH      0x03
#define NGX_MDM_CHECKIN_IDPART    0x04    /* part of an enrollment id */


enum {
    NGX_MDM_CHECKIN_F_UDID = 0,
    NGX_MDM_CHECKIN_F_ENROLLMENT_ID,
    NGX_MDM_CHECKIN_F_ENROLLMENT_USER_ID,
    NGX_MDM_CHECKIN_F_USER_ID,
    NGX_MDM_CHECKIN_F_USER_SHORT_NAME,
    NGX_MDM_CHECKIN_F_USER_LONG_NAME,
    NGX_MDM_CHECKIN_F_TOPIC,
    NGX_MDM_CHECKIN_F_SERIAL_NUMBER,
    NGX_MDM_CHECKIN_F_MODEL,
    NGX_MDM_CHECKIN_F_MODEL_NAME,
    NGX_MDM_CHECKIN_F_PRODUCT_NAME,
    NGX_MDM_CHECKIN_F_OS_VERSION,
    NGX_MDM_CHECKIN_F_BUILD_VERSION,
    NGX_MDM_CHECKIN_F_DEVICE_NAME,
    NGX_MDM_CHECKIN_F_IMEI,
    NGX_MDM_CHECKIN_F_MEID,
    NGX_MDM_CHECKIN_F_TOKEN,
    NGX_MDM_CHECKIN_F_PUSH_MAGIC,
    NGX_MDM_CHECKIN_F_UNLOCK_TOKEN,
    NGX_MDM_CHECKIN_F_BOOTSTRAP_TOKEN,
    NGX_MDM_CHECKIN_F_ENDPOINT,
    NGX_MDM_CHECKIN_F_DATA,
    NGX_MDM_CHECKIN_F_TOKEN_SERVICE_TYPE,
    NGX_MDM_CHECKIN_F_DIGEST_RESPONSE,
    NGX_MDM_CHECKIN_F_TOKEN_PARAMETERS,
    NGX_MDM_CHECKIN_F_NOT_ON_CONSOLE,
    NGX_MDM_CHECKIN_F_AWAITING_CONFIGURATION,
    NGX_MDM_CHECKIN_F_COMMAND_UUID,
    NGX_MDM_CHECKIN_F_REQUEST_TYPE,
    NGX_MDM_CHECKIN_F_ERROR_CHAIN,
    NGX_MDM_CHECKIN_F_LAST
};

#define F(name)  ((uint64_t) 1 << NGX_MDM_CHECKIN_F_##name)


typedef struct {
    const char                 *key;
    unsigned                    type;
    unsigned                    flags;
    size_t                      offset;
} ngx_mdm_checkin_field_t;


typedef struct {
    const char                 *name;
    ngx_mdm_checkin_type_e      type;
    uint64_t                    required;
} ngx_mdm_checkin_type_t;


typedef struct {
    const char                 *name;
    ngx_mdm_checkin_status_e    status;
    uint64_t                    required;
} ngx_mdm_checkin_status_t;


static void ngx_mdm_checkin_msg_fail(ngx_mdm_checkin_msg_t *msg,
    const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ngx_mdm_checkin_rc_e ngx_mdm_checkin_msg_fields(
    ngx_mdm_checkin_msg_t *msg, unsigned scope, uint64_t *filled);
static ngx_mdm_checkin_rc_e ngx_mdm_checkin_msg_id(
    ngx_mdm_checkin_msg_t *msg);
static void ngx_mdm_checkin_msg_quote(char *dst, size_t size,
    const ngx_mdm_plist_str_t *s);


static const ngx_mdm_checkin_field_t  ngx_mdm_checkin_fields[] = {

    [NGX_MDM_CHECKIN_F_UDID] =
        { "UDID", NGX_MDM_CHECKIN_STRING,
          NGX_MDM_CHECKIN_BOTH | NGX_MDM_CHECKIN_IDPART,
          offsetof(ngx_mdm_checkin_msg_t, udid) },

    [NGX_MDM_CHECKIN_F_ENROLLMENT_ID] =
        { "EnrollmentID", NGX_MDM_CHECKIN_STRING,
          NGX_MDM_CHECKIN_BOTH | NGX_MDM_CHECKIN_IDPART,
          offsetof(ngx_mdm_checkin_msg_t, enrollment_id) },

    [NGX_MDM_CHECKIN_F_ENROLLMENT_USER_ID] =
        { "EnrollmentUserID", NGX_MDM_CHECKIN_STRING,
          NGX_MDM_CHECKIN_BOTH | NGX_MDM_CHECKIN_IDPART,
          offsetof(ngx_mdm_checkin_msg_t, enrollment_user_id) },

    [NGX_MDM_CHECKIN_F_USER_ID] =
        { "UserID", NGX_MDM_CHECKIN_STRING,
          NGX_MDM_CHECKIN_BOTH | NGX_MDM_CHECKIN_IDPART,
          offsetof(ngx_mdm_checkin_msg_t, user_id) },

    [NGX_MDM_CHECKIN_F_USER_SHORT_NAME] =
        { "UserShortName", NGX_MDM_CHECKIN_STRING,
          NGX_MDM_CHECKIN_BOTH | NGX_MDM_CHECKIN_IDPART,
          offsetof(ngx_mdm_checkin_msg_t, user_short_name) },

    [NGX_MDM_CHECKIN_F_USER_LONG_NAME] =
        { "UserLongName", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_BOTH,
          offsetof(ngx_mdm_checkin_msg_t, user_long_name) },

    [NGX_MDM_CHECKIN_F_TOPIC] =
        { "Topic", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, topic) },

    [NGX_MDM_CHECKIN_F_SERIAL_NUMBER] =
        { "SerialNumber", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, serial_number) },

    [NGX_MDM_CHECKIN_F_MODEL] =
        { "Model", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, model) },

    [NGX_MDM_CHECKIN_F_MODEL_NAME] =
        { "ModelName", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, model_name) },

    [NGX_MDM_CHECKIN_F_PRODUCT_NAME] =
        { "ProductName", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, product_name) },

    [NGX_MDM_CHECKIN_F_OS_VERSION] =
        { "OSVersion", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, os_version) },

    [NGX_MDM_CHECKIN_F_BUILD_VERSION] =
        { "BuildVersion", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, build_version) },

    [NGX_MDM_CHECKIN_F_DEVICE_NAME] =
        { "DeviceName", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, device_name) },

    [NGX_MDM_CHECKIN_F_IMEI] =
        { "IMEI", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, imei) },

    [NGX_MDM_CHECKIN_F_MEID] =
        { "MEID", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, meid) },

    [NGX_MDM_CHECKIN_F_TOKEN] =
        { "Token", NGX_MDM_CHECKIN_DATA, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, token) },

    [NGX_MDM_CHECKIN_F_PUSH_MAGIC] =
        { "PushMagic", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, push_magic) },

    [NGX_MDM_CHECKIN_F_UNLOCK_TOKEN] =
        { "UnlockToken", NGX_MDM_CHECKIN_DATA, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, unlock_token) },

    [NGX_MDM_CHECKIN_F_BOOTSTRAP_TOKEN] =
        { "BootstrapToken", NGX_MDM_CHECKIN_DATA, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, bootstrap_token) },

    [NGX_MDM_CHECKIN_F_ENDPOINT] =
        { "Endpoint", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, endpoint) },

    [NGX_MDM_CHECKIN_F_DATA] =
        { "Data", NGX_MDM_CHECKIN_DATA, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, data) },

    [NGX_MDM_CHECKIN_F_TOKEN_SERVICE_TYPE] =
        { "TokenServiceType", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, token_service_type) },

    [NGX_MDM_CHECKIN_F_DIGEST_RESPONSE] =
        { "DigestResponse", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, digest_response) },

    [NGX_MDM_CHECKIN_F_TOKEN_PARAMETERS] =
        { "TokenParameters", NGX_MDM_CHECKIN_DICT, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, token_parameters) },

    [NGX_MDM_CHECKIN_F_NOT_ON_CONSOLE] =
        { "NotOnConsole", NGX_MDM_CHECKIN_BOOL, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, not_on_console) },

    [NGX_MDM_CHECKIN_F_AWAITING_CONFIGURATION] =
        { "AwaitingConfiguration", NGX_MDM_CHECKIN_BOOL, NGX_MDM_CHECKIN_IN,
          offsetof(ngx_mdm_checkin_msg_t, awaiting_configuration) },

    [NGX_MDM_CHECKIN_F_COMMAND_UUID] =
        { "CommandUUID", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_REP,
          offsetof(ngx_mdm_checkin_msg_t, command_uuid) },

    [NGX_MDM_CHECKIN_F_REQUEST_TYPE] =
        { "RequestType", NGX_MDM_CHECKIN_STRING, NGX_MDM_CHECKIN_REP,
          offsetof(ngx_mdm_checkin_msg_t, request_type) },

    [NGX_MDM_CHECKIN_F_ERROR_CHAIN] =
        { "ErrorChain", NGX_MDM_CHECKIN_ARRAY, NGX_MDM_CHECKIN_REP,
          offsetof(ngx_mdm_checkin_msg_t, error_chain) },
};


/* [ADM mdm/checkin/], relaxed where real devices omit keys */
static const ngx_mdm_checkin_type_t  ngx_mdm_checkin_types[] = {
    { "Authenticate", NGX_MDM_CHECKIN_AUTHENTICATE, F(TOPIC) },
    { "TokenUpdate", NGX_MDM_CHECKIN_TOKEN_UPDATE,
      F(TOPIC) | F(TOKEN) | F(PUSH_MAGIC) },
    { "CheckOut", NGX_MDM_CHECKIN_CHECK_OUT, F(TOPIC) },
    { "SetBootstrapToken", NGX_MDM_CHECKIN_SET_BOOTSTRAP_TOKEN, 0 },
    { "GetBootstrapToken", NGX_MDM_CHECKIN_GET_BOOTSTRAP_TOKEN, 0 },
    { "UserAuthenticate", NGX_MDM_CHECKIN_USER_AUTHENTICATE,
      F(UDID) | F(USER_ID) },
    { "DeclarativeManagement", NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT,
      F(ENDPOINT) },
    { "GetToken", NGX_MDM_CHECKIN_GET_TOKEN, F(TOKEN_SERVICE_TYPE) },
    { "ReturnToService", NGX_MDM_CHECKIN_RETURN_TO_SERVICE, F(UDID) },
    { NULL, NGX_MDM_CHECKIN_UNKNOWN, 0 }
};


/* [NM mdm/command.go; PROTOCOL.md 4.1] */
static const ngx_mdm_checkin_status_t  ngx_mdm_checkin_statuses[] = {
    { "Idle", NGX_MDM_CHECKIN_STATUS_IDLE, 0 },
    { "Acknowledged", NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
      F(COMMAND_UUID) },
    { "Error", NGX_MDM_CHECKIN_STATUS_ERROR, F(COMMAND_UUID) },
    { "CommandFormatError", NGX_MDM_CHECKIN_STATUS_COMMAND_FORMAT_ERROR,
      F(COMMAND_UUID) },
    { "NotNow", NGX_MDM_CHECKIN_STATUS_NOT_NOW, F(COMMAND_UUID) },
    { NULL, NGX_MDM_CHECKIN_STATUS_NONE, 0 }
};


static const char  *ngx_mdm_checkin_enroll_types[] = {
    "none",
    "Device",
    "User",
    "User Enrollment (Device)",
    "User Enrollment",
    "Shared iPad"
};


static const char  *ngx_mdm_checkin_rc_names[] = {
    "ok",
    "malformed",
    "no message type",
    "unknown message type",
    "unknown status",
    "missing field",
    "wrong type",
    "oversized",
    "out of memory"
};


static const char  *ngx_mdm_checkin_plist_types[] = {
    "", "<string>", "<data>", "<true/> or <false/>", "<dict>", "<array>"
};


ngx_mdm_checkin_rc_e
ngx_mdm_checkin_msg_parse(ngx_mdm_checkin_msg_t *msg, const u_char *body,
    size_t len, int expect, size_t max_size)
{
    char                             quoted[80];
    uint64_t                         required, filled, missing;
    const char                      *name;
    unsigned                         i;
    ngx_mdm_plist_rc_e               mt, st;
    ngx_mdm_plist_err_t              perr;
    ngx_mdm_checkin_rc_e             rc, frc;
    const ngx_mdm_checkin_type_t    *t;
    const ngx_mdm_checkin_status_t  *s;

    memset(msg, 0, offsetof(ngx_mdm_checkin_msg_t, err));
    msg->err[0] = '\0';
    msg->not_on_console = NGX_MDM_CHECKIN_UNSET;
    msg->awaiting_configuration = NGX_MDM_CHECKIN_UNSET;
    msg->raw = body;
    msg->raw_len = len;

    msg->root = ngx_mdm_plist_parse(body, len, max_size, &perr);

    if (msg->root == NULL) {
        ngx_mdm_checkin_msg_fail(msg, "%s", perr.text);

        switch (perr.rc) {
        case NGX_MDM_PLIST_ETOOBIG:
            return NGX_MDM_CHECKIN_EOVERSIZED;
        case NGX_MDM_PLIST_ENOMEM:
            return NGX_MDM_CHECKIN_ENOMEM;
        default:
            return NGX_MDM_CHECKIN_EMALFORMED;
        }
    }

    if (plist_get_node_type(msg->root) != PLIST_DICT) {
        ngx_mdm_checkin_msg_fail(msg, "plist root is not a <dict>");
        return NGX_MDM_CHECKIN_EMALFORMED;
    }

    /* a check-in or a report */

    mt = NGX_MDM_PLIST_ABSENT;
    st = NGX_MDM_PLIST_ABSENT;

    if (expect != NGX_MDM_CHECKIN_EXPECT_REPORT) {
        mt = ngx_mdm_plist_get_string(msg->root, "MessageType",
                                      &msg->message_type);
    }

    if (expect != NGX_MDM_CHECKIN_EXPECT_CHECKIN && mt == NGX_MDM_PLIST_ABSENT)
    {
        st = ngx_mdm_plist_get_string(msg->root, "Status", &msg->status_name);
    }

    if (mt == NGX_MDM_PLIST_WRONG_TYPE || st == NGX_MDM_PLIST_WRONG_TYPE) {
        ngx_mdm_checkin_msg_fail(msg, "%s is not a <string>",
                                 mt == NGX_MDM_PLIST_WRONG_TYPE
                                 ? "MessageType" : "Status");
        return NGX_MDM_CHECKIN_ETYPE;
    }

    if (mt == NGX_MDM_PLIST_OK) {
        msg->kind = NGX_MDM_CHECKIN_KIND_CHECKIN;

    } else if (st == NGX_MDM_PLIST_OK) {
        msg->kind = NGX_MDM_CHECKIN_KIND_REPORT;

    } else {
        ngx_mdm_checkin_msg_fail(msg, "no %s key",
                       expect == NGX_MDM_CHECKIN_EXPECT_CHECKIN
                       ? "MessageType"
                       : expect == NGX_MDM_CHECKIN_EXPECT_REPORT
                         ? "Status" : "MessageType or Status");
        return NGX_MDM_CHECKIN_ENOTYPE;
    }

    /* every known key, so that even a refused message can be logged */

    frc = ngx_mdm_checkin_msg_fields(msg,
                                     msg->kind == NGX_MDM_CHECKIN_KIND_CHECKIN
                                     ? NGX_MDM_CHECKIN_IN
                                     : NGX_MDM_CHECKIN_REP,
                                     &filled);

    if (msg->kind == NGX_MDM_CHECKIN_KIND_CHECKIN) {

        for (t = ngx_mdm_checkin_types; t->name; t++) {
            if (strlen(t->name) == msg->message_type.len
                && memcmp(t->name, msg->message_type.data,
                          msg->message_type.len)
                   == 0)
            {
                break;
            }
        }

        msg->type = t->type;
        required = t->required;
        name = t->name;

        if (t->name == NULL) {
            if (frc == NGX_MDM_CHECKIN_OK) {
                (void) ngx_mdm_checkin_msg_id(msg);
            }

            ngx_mdm_checkin_msg_quote(quoted, sizeof(quoted),
                                      &msg->message_type);
            ngx_mdm_checkin_msg_fail(msg, "unknown MessageType %s", quoted);
            return NGX_MDM_CHECKIN_EUNKNOWN_TYPE;
        }

    } else {

        for (s = ngx_mdm_checkin_statuses; s->name; s++) {
            if (strlen(s->name) == msg->status_name.len
                && memcmp(s->name, msg->status_name.data,
                          msg->status_name.len)
                   == 0)
            {
                break;
            }
        }

        msg->status = s->status;
        required = s->required;
        name = s->name;

        if (s->name == NULL) {
            if (frc == NGX_MDM_CHECKIN_OK) {
                (void) ngx_mdm_checkin_msg_id(msg);
            }

            ngx_mdm_checkin_msg_quote(quoted, sizeof(quoted),
                                      &msg->status_name);
            ngx_mdm_checkin_msg_fail(msg, "unknown Status %s", quoted);
            return NGX_MDM_CHECKIN_EUNKNOWN_STATUS;
        }
    }

    if (frc != NGX_MDM_CHECKIN_OK) {
        return frc;
    }

    missing = required & ~filled;

    if (missing) {
        for (i = 0; !(missing & ((uint64_t) 1 << i)); i++) {
            /* void */
        }

        ngx_mdm_checkin_msg_fail(msg, "%s %s without %s", name,
                                 msg->kind == NGX_MDM_CHECKIN_KIND_CHECKIN
                                 ? "check-in" : "report",
                                 ngx_mdm_checkin_fields[i].key);
        return NGX_MDM_CHECKIN_EMISSING;
    }

    rc = ngx_mdm_checkin_msg_id(msg);
    if (rc != NGX_MDM_CHECKIN_OK) {
        return rc;
    }

    return NGX_MDM_CHECKIN_OK;
}


/*
 * Reads the table's keys of this kind; a key of the wrong type or an
 * unusable id part is left unset and its error returned after the rest.
 */

static ngx_mdm_checkin_rc_e
ngx_mdm_checkin_msg_fields(ngx_mdm_checkin_msg_t *msg, unsigned scope,
    uint64_t *filled)
{
    int                             *flag;
    size_t                           j;
    unsigned                         i;
    plist_t                         *node;
    ngx_mdm_plist_rc_e               prc;
    ngx_mdm_plist_str_t             *str, v;
    ngx_mdm_checkin_rc_e             rc;
    const ngx_mdm_checkin_field_t   *f;

    rc = NGX_MDM_CHECKIN_OK;
    *filled = 0;

    for (i = 0; i < NGX_MDM_CHECKIN_F_LAST; i++) {
        f = &ngx_mdm_checkin_fields[i];

        if (!(f->flags & scope)) {
            continue;
        }

        switch (f->type) {

        case NGX_MDM_CHECKIN_STRING:
        case NGX_MDM_CHECKIN_DATA:
            prc = (f->type == NGX_MDM_CHECKIN_STRING)
                  ? ngx_mdm_plist_get_string(msg->root, f->key, &v)
                  : ngx_mdm_plist_get_data(msg->root, f->key, &v);

            if (prc != NGX_MDM_PLIST_OK) {
                break;
            }

            if (f->flags & NGX_MDM_CHECKIN_IDPART) {

                if (v.len > NGX_MDM_CHECKIN_ID_MAX) {
                    if (rc == NGX_MDM_CHECKIN_OK) {
                        ngx_mdm_checkin_msg_fail(msg,
                                      "%s longer than %d bytes", f->key,
                                      NGX_MDM_CHECKIN_ID_MAX);
                        rc = NGX_MDM_CHECKIN_EOVERSIZED;
                    }

                    continue;
                }

                /* ids go to logs and keys: printable text only */

                for (j = 0; j < v.len; j++) {
                    if (v.data[j] < 0x20 || v.data[j] == 0x7f) {
                        break;
                    }
                }

                if (j != v.len) {
                    if (rc == NGX_MDM_CHECKIN_OK) {
                        ngx_mdm_checkin_msg_fail(msg,
                                      "%s with a control character",
                                      f->key);
                        rc = NGX_MDM_CHECKIN_EMALFORMED;
                    }

                    continue;
                }
            }

            str = (ngx_mdm_plist_str_t *) ((u_char *) msg + f->offset);
            *str = v;

            if (v.len) {
                *filled |= (uint64_t) 1 << i;
            }

            continue;

        case NGX_MDM_CHECKIN_BOOL:
            flag = (int *) ((u_char *) msg + f->offset);
            prc = ngx_mdm_plist_get_bool(msg->root, f->key, flag);

            if (prc == NGX_MDM_PLIST_OK) {
                *filled |= (uint64_t) 1 << i;
            }

            break;

        default: /* NGX_MDM_CHECKIN_DICT, NGX_MDM_CHECKIN_ARRAY */
            node = (plist_t *) ((u_char *) msg + f->offset);
            prc = (f->type == NGX_MDM_CHECKIN_DICT)
                  ? ngx_mdm_plist_get_dict(msg->root, f->key, node)
                  : ngx_mdm_plist_get_array(msg->root, f->key, node);

            if (prc == NGX_MDM_PLIST_OK) {
                *filled |= (uint64_t) 1 << i;
            }

            break;
        }

        if (prc == NGX_MDM_PLIST_WRONG_TYPE && rc == NGX_MDM_CHECKIN_OK) {
            ngx_mdm_checkin_msg_fail(msg, "%s is not a %s", f->key,
                                     ngx_mdm_checkin_plist_types[f->type]);
            rc = NGX_MDM_CHECKIN_ETYPE;
        }
    }

    return rc;
}


/* [NM mdm/type.go Resolved, service/nanomdm/service.go normalize] */

static ngx_mdm_checkin_rc_e
ngx_mdm_checkin_msg_id(ngx_mdm_checkin_msg_t *msg)
{
    u_char               *p;
    ngx_mdm_plist_str_t  *dev, *user;

    user = NULL;

    if (msg->udid.len) {
        dev = &msg->udid;
        msg->enroll_type = NGX_MDM_ENROLL_DEVICE;

        if (msg->user_id.len) {

            if (msg->user_id.len
                    == sizeof(NGX_MDM_CHECKIN_SHARED_IPAD_USER_ID) - 1
                && memcmp(msg->user_id.data,
                          NGX_MDM_CHECKIN_SHARED_IPAD_USER_ID,
                          msg->user_id.len)
                   == 0)
            {
                /* every Shared iPad user has this UserID */

                msg->enroll_type = NGX_MDM_ENROLL_SHARED_IPAD;
                user = &msg->user_short_name;

                if (user->len == 0) {
                    msg->enroll_type = NGX_MDM_ENROLL_NONE;
                    ngx_mdm_checkin_msg_fail(msg, "Shared iPad user channel "
                                             "without UserShortName");
                    return NGX_MDM_CHECKIN_EMISSING;
                }

            } else {
                msg->enroll_type = NGX_MDM_ENROLL_USER;
                user = &msg->user_id;
            }
        }

    } else if (msg->enrollment_id.len) {
        dev = &msg->enrollment_id;
        msg->enroll_type = NGX_MDM_ENROLL_USER_ENROLLMENT_DEVICE;

        if (msg->enrollment_user_id.len) {
            msg->enroll_type = NGX_MDM_ENROLL_USER_ENROLLMENT;
            user = &msg->enrollment_user_id;
        }

    } else {
        ngx_mdm_checkin_msg_fail(msg, "neither UDID nor EnrollmentID");
        return NGX_MDM_CHECKIN_EMISSING;
    }

    msg->device_id = *dev;

    if (user == NULL) {
        msg->id = *dev;
        return NGX_MDM_CHECKIN_OK;
    }

    /* both parts are at most NGX_MDM_CHECKIN_ID_MAX bytes */

    p = msg->id_buf;
    p = (u_char *) memcpy(p, dev->data, dev->len) + dev->len;
    *p++ = ':';
    p = (u_char *) memcpy(p, user->data, user->len) + user->len;
    *p = '\0';

    msg->id.data = msg->id_buf;
    msg->id.len = p - msg->id_buf;
    msg->user_channel = 1;

    return NGX_MDM_CHECKIN_OK;
}


void
ngx_mdm_checkin_msg_free(ngx_mdm_checkin_msg_t *msg)
{
    if (msg->root) {
        plist_free(msg->root);
    }

    memset(msg, 0, offsetof(ngx_mdm_checkin_msg_t, err));
    msg->not_on_console = NGX_MDM_CHECKIN_UNSET;
    msg->awaiting_configuration = NGX_MDM_CHECKIN_UNSET;
}


int
ngx_mdm_checkin_msg_dm_data(const ngx_mdm_checkin_msg_t *msg,
    const u_char **data, size_t *len)
{
    if (msg->kind != NGX_MDM_CHECKIN_KIND_CHECKIN
        || msg->type != NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT
        || msg->data.data == NULL)
    {
        return -1;
    }

    *data = msg->data.data;
    *len = msg->data.len;

    return 0;
}


int
ngx_mdm_checkin_msg_error(const ngx_mdm_checkin_msg_t *msg, size_t i,
    int64_t *code, ngx_mdm_plist_str_t *domain,
    ngx_mdm_plist_str_t *description)
{
    plist_t  entry;

    if (msg->error_chain == NULL
        || i >= plist_array_get_size(msg->error_chain))
    {
        return -1;
    }

    entry = plist_array_get_item(msg->error_chain, (uint32_t) i);

    *code = 0;
    domain->len = 0;
    domain->data = (u_char *) "";
    description->len = 0;
    description->data = (u_char *) "";

    (void) ngx_mdm_plist_get_integer(entry, "ErrorCode", code);
    (void) ngx_mdm_plist_get_string(entry, "ErrorDomain", domain);
    (void) ngx_mdm_plist_get_string(entry, "LocalizedDescription",
                                    description);

    return 0;
}


static void
ngx_mdm_checkin_msg_fail(ngx_mdm_checkin_msg_t *msg, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(msg->err, sizeof(msg->err), fmt, args);
    va_end(args);
}


/* a device-sent value for a log line: quoted, printable, cut short */

static void
ngx_mdm_checkin_msg_quote(char *dst, size_t size, const ngx_mdm_plist_str_t *s)
{
    u_char  c;
    size_t  i, n;

    n = 0;
    dst[n++] = '"';

    for (i = 0; i < s->len && n + 8 < size; i++) {
        c = s->data[i];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            dst[n++] = c;

        } else {
            n += snprintf(dst + n, size - n, "\\x%02x", c);
        }
    }

    if (i < s->len) {
        dst[n++] = '.';
        dst[n++] = '.';
        dst[n++] = '.';
    }

    dst[n++] = '"';
    dst[n] = '\0';
}


const char *
ngx_mdm_checkin_msg_strerror(ngx_mdm_checkin_rc_e rc)
{
    if ((unsigned) rc >= sizeof(ngx_mdm_checkin_rc_names) / sizeof(char *)) {
        return "unknown error";
    }

    return ngx_mdm_checkin_rc_names[rc];
}


const char *
ngx_mdm_checkin_msg_type_name(ngx_mdm_checkin_type_e type)
{
    const ngx_mdm_checkin_type_t  *t;

    for (t = ngx_mdm_checkin_types; t->name; t++) {
        if (t->type == type) {
            return t->name;
        }
    }

    return "unknown";
}


const char *
ngx_mdm_checkin_msg_status_name(ngx_mdm_checkin_status_e st)
{
    const ngx_mdm_checkin_status_t  *s;

    for (s = ngx_mdm_checkin_statuses; s->name; s++) {
        if (s->status == st) {
            return s->name;
        }
    }

    return "unknown";
}


const char *
ngx_mdm_checkin_msg_enroll_type_name(ngx_mdm_enroll_type_e et)
{
    if ((unsigned) et >= sizeof(ngx_mdm_checkin_enroll_types)
                         / sizeof(char *))
    {
        return "unknown";
    }

    return ngx_mdm_checkin_enroll_types[et];
}
