
/*
 * Device request bodies of the MDM check-in protocol and the command loop,
 * parsed into one struct: no nginx headers, buffers in, results out.
 *
 * A check-in (Content-Type application/x-apple-aspen-mdm-checkin) has a
 * MessageType; a command report (PUT to ServerURL) has a Status instead.
 *
 * Memory: ngx_mdm_checkin_msg_parse() fills a caller-provided struct; its
 * strings and data point into msg->root (the parsed plist) or into
 * msg->id_buf, and are valid until ngx_mdm_checkin_msg_free(msg), which the
 * caller calls once after every parse, whatever it returned.  Nothing is
 * copied except a user-channel enrollment id.  msg->raw is the caller's
 * body, not copied: keep it alive to store the report as sent.
 *
 * Fields: a string or data field with data == NULL is absent; a present
 * empty one has len 0 and data != NULL.  Strings are NUL-terminated and
 * read-only (ngx_mdm_plist_str_t has the layout of ngx_str_t).  A boolean
 * field is NGX_MDM_CHECKIN_UNSET when absent.  On a check-in only check-in
 * keys are read; on a report only the report keys (identity, user keys,
 * CommandUUID, Status, RequestType, ErrorChain): the rest of a report is
 * command-specific, reach it through msg->root.
 *
 * Required keys, per Apple's check-in schema but lenient where real devices
 * omit "required" keys (PROTOCOL.md 3.1): every message and report needs
 * UDID or EnrollmentID; Authenticate and CheckOut need Topic; TokenUpdate
 * Topic, Token and PushMagic; UserAuthenticate UDID and UserID;
 * DeclarativeManagement Endpoint; GetToken TokenServiceType;
 * ReturnToService UDID; every report but Idle CommandUUID.  A required
 * string or data key must also be non-empty.  A present key of the wrong
 * plist type is an error even where it is optional.
 *
 * Enrollment ids, as NanoMDM forms them (PROTOCOL.md 3.3):
 *   UDID, no UserID                       UDID                    device
 *   UDID + UserID                         UDID:UserID             user
 *   UDID + UserID FFFFFFFF-...-FFFF       UDID:UserShortName      shared iPad
 *   no UDID, EnrollmentID                 EnrollmentID            user
 *                                                      enrollment (device)
 *   EnrollmentID + EnrollmentUserID       EnrollmentID:EnrollmentUserID
 *                                                      user enrollment
 * An empty string counts as absent.  msg->device_id is the id of the device
 * channel a user channel belongs to (the id itself on a device channel).
 * Each part is at most NGX_MDM_CHECKIN_ID_MAX bytes of printable text.
 */


#ifndef _NGX_MDM_CHECKIN_MSG_H_INCLUDED_
#define _NGX_MDM_CHECKIN_MSG_H_INCLUDED_


#include "ngx_mdm_plist.h"


#define NGX_MDM_CHECKIN_UNSET        -1
#define NGX_MDM_CHECKIN_ID_MAX       255
#define NGX_MDM_CHECKIN_ERR_LEN      256

#define NGX_MDM_CHECKIN_SHARED_IPAD_USER_ID                                  \
    "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"


/* what the caller expects, from the Content-Type */
#define NGX_MDM_CHECKIN_EXPECT_ANY      0    /* MessageType, else Status */
#define NGX_MDM_CHECKIN_EXPECT_CHECKIN  1    /* MessageType only */
#define NGX_MDM_CHECKIN_EXPECT_REPORT   2    /* Status only */


typedef enum {
    NGX_MDM_CHECKIN_OK = 0,
    NGX_MDM_CHECKIN_EMALFORMED,      /* not a plist, malformed, not a dict,
                                        identifier with control bytes */
    NGX_MDM_CHECKIN_ENOTYPE,         /* neither MessageType nor Status */
    NGX_MDM_CHECKIN_EUNKNOWN_TYPE,   /* MessageType not in the table */
    NGX_MDM_CHECKIN_EUNKNOWN_STATUS, /* Status not in the table */
    NGX_MDM_CHECKIN_EMISSING,        /* a required key absent or empty */
    NGX_MDM_CHECKIN_ETYPE,           /* a known key of another plist type */
    NGX_MDM_CHECKIN_EOVERSIZED,      /* body, nesting or id part too big */
    NGX_MDM_CHECKIN_ENOMEM
} ngx_mdm_checkin_rc_e;


typedef enum {
    NGX_MDM_CHECKIN_KIND_NONE = 0,
    NGX_MDM_CHECKIN_KIND_CHECKIN,
    NGX_MDM_CHECKIN_KIND_REPORT
} ngx_mdm_checkin_kind_e;


typedef enum {
    NGX_MDM_CHECKIN_UNKNOWN = 0,
    NGX_MDM_CHECKIN_AUTHENTICATE,
    NGX_MDM_CHECKIN_TOKEN_UPDATE,
    NGX_MDM_CHECKIN_CHECK_OUT,
    NGX_MDM_CHECKIN_SET_BOOTSTRAP_TOKEN,
    NGX_MDM_CHECKIN_GET_BOOTSTRAP_TOKEN,
    NGX_MDM_CHECKIN_USER_AUTHENTICATE,
    NGX_MDM_CHECKIN_DECLARATIVE_MANAGEMENT,
    NGX_MDM_CHECKIN_GET_TOKEN,
    NGX_MDM_CHECKIN_RETURN_TO_SERVICE      /* iOS 26 */
} ngx_mdm_checkin_type_e;


typedef enum {
    NGX_MDM_CHECKIN_STATUS_NONE = 0,
    NGX_MDM_CHECKIN_STATUS_IDLE,
    NGX_MDM_CHECKIN_STATUS_ACKNOWLEDGED,
    NGX_MDM_CHECKIN_STATUS_ERROR,
    NGX_MDM_CHECKIN_STATUS_COMMAND_FORMAT_ERROR,
    NGX_MDM_CHECKIN_STATUS_NOT_NOW
} ngx_mdm_checkin_status_e;


/* NanoMDM's EnrollType values */
typedef enum {
    NGX_MDM_ENROLL_NONE = 0,
    NGX_MDM_ENROLL_DEVICE,
    NGX_MDM_ENROLL_USER,
    NGX_MDM_ENROLL_USER_ENROLLMENT_DEVICE,
    NGX_MDM_ENROLL_USER_ENROLLMENT,
    NGX_MDM_ENROLL_SHARED_IPAD
} ngx_mdm_enroll_type_e;


typedef struct {
    ngx_mdm_checkin_kind_e     kind;
    ngx_mdm_checkin_type_e     type;
    ngx_mdm_checkin_status_e   status;

    ngx_mdm_plist_str_t        message_type;    /* as sent */
    ngx_mdm_plist_str_t        status_name;     /* as sent */

    /* identity, both kinds */
    ngx_mdm_plist_str_t        udid;
    ngx_mdm_plist_str_t        enrollment_id;
    ngx_mdm_plist_str_t        enrollment_user_id;
    ngx_mdm_plist_str_t        user_id;
    ngx_mdm_plist_str_t        user_short_name;
    ngx_mdm_plist_str_t        user_long_name;

    /* check-in */
    ngx_mdm_plist_str_t        topic;
    ngx_mdm_plist_str_t        serial_number;
    ngx_mdm_plist_str_t        model;
    ngx_mdm_plist_str_t        model_name;
    ngx_mdm_plist_str_t        product_name;
    ngx_mdm_plist_str_t        os_version;
    ngx_mdm_plist_str_t        build_version;
    ngx_mdm_plist_str_t        device_name;
    ngx_mdm_plist_str_t        imei;
    ngx_mdm_plist_str_t        meid;
    ngx_mdm_plist_str_t        token;             /* data */
    ngx_mdm_plist_str_t        push_magic;
    ngx_mdm_plist_str_t        unlock_token;      /* data */
    ngx_mdm_plist_str_t        bootstrap_token;   /* data */
    ngx_mdm_plist_str_t        endpoint;
    ngx_mdm_plist_str_t        data;              /* data */
    ngx_mdm_plist_str_t        token_service_type;
    ngx_mdm_plist_str_t        digest_response;
    plist_t                    token_parameters;  /* dict or NULL */
    int                        not_on_console;
    int                        awaiting_configuration;

    /* report */
    ngx_mdm_plist_str_t        command_uuid;
    ngx_mdm_plist_str_t        request_type;      /* echoed by macOS */
    plist_t                    error_chain;       /* array or NULL */

    /* derived */
    ngx_mdm_enroll_type_e      enroll_type;
    unsigned                   user_channel;
    ngx_mdm_plist_str_t        id;                /* enrollment id */
    ngx_mdm_plist_str_t        device_id;         /* its device channel */

    plist_t                    root;
    const u_char              *raw;
    size_t                     raw_len;

    char                       err[NGX_MDM_CHECKIN_ERR_LEN];
    u_char                     id_buf[2 * NGX_MDM_CHECKIN_ID_MAX + 2];
} ngx_mdm_checkin_msg_t;


/*
 * Parses body.  expect is NGX_MDM_CHECKIN_EXPECT_*; max_size 0 means
 * NGX_MDM_PLIST_DEFAULT_MAX.  On failure msg->err holds one log line that
 * never quotes a token, PushMagic or digest; fields parsed before the
 * failure stay readable (e.g. the UDID of an unknown MessageType).
 */
ngx_mdm_checkin_rc_e ngx_mdm_checkin_msg_parse(ngx_mdm_checkin_msg_t *msg,
    const u_char *body, size_t len, int expect, size_t max_size);

void ngx_mdm_checkin_msg_free(ngx_mdm_checkin_msg_t *msg);

/*
 * The raw bytes of a DeclarativeManagement check-in's Data (the status
 * report JSON, already base64-decoded by the plist reader).  0 and the
 * bytes, or -1 if msg is no DeclarativeManagement check-in or has no Data.
 */
int ngx_mdm_checkin_msg_dm_data(const ngx_mdm_checkin_msg_t *msg,
    const u_char **data, size_t *len);

/*
 * Entry i of a report's ErrorChain: 0 and its ErrorCode (0 if absent),
 * ErrorDomain and LocalizedDescription (empty if absent); -1 past the end.
 */
int ngx_mdm_checkin_msg_error(const ngx_mdm_checkin_msg_t *msg, size_t i,
    int64_t *code, ngx_mdm_plist_str_t *domain,
    ngx_mdm_plist_str_t *description);

/* "malformed", "no message type", ... for a log line or a metric */
const char *ngx_mdm_checkin_msg_strerror(ngx_mdm_checkin_rc_e rc);

/* "Authenticate", ... ("unknown"); "Idle", ...; "Device", "User", ... */
const char *ngx_mdm_checkin_msg_type_name(ngx_mdm_checkin_type_e type);
const char *ngx_mdm_checkin_msg_status_name(ngx_mdm_checkin_status_e st);
const char *ngx_mdm_checkin_msg_enroll_type_name(ngx_mdm_enroll_type_e et);


#endif /* _NGX_MDM_CHECKIN_MSG_H_INCLUDED_ */
