
/*
 * Property list helpers over libplist 2.2 and jansson: no nginx headers,
 * buffers in, results out, safe on hostile input.
 *
 * Parsing.  ngx_mdm_plist_parse() accepts an XML plist (optional UTF-8 BOM
 * and whitespace, then "<?xml", "<!DOCTYPE", "<!--" or "<plist") or a
 * binary plist ("bplist00").  Both parsers are ours and build libplist
 * nodes through its public API: libplist 2.2's own readers accept trailing
 * garbage, unclosed documents, "<integer>abc</integer>" as 0 and broken
 * base64, and its binary reader recurses without a depth limit and expands
 * shared objects without bound (a 168-byte bplist becomes 2^25 nodes).
 * Dicts hold at most NGX_MDM_PLIST_MAX_KEYS keys: libplist 2.2 hashes
 * a dict into a fixed number of buckets, so inserting grows quadratically.
 * The XML reader is strict: well-formed UTF-8 XML of the Apple plist DTD,
 * no DOCTYPE internal subset, no encoding other than UTF-8, no duplicate
 * dict keys, decimal integers in [-2^63, 2^64-1], dates as
 * "YYYY-MM-DDTHH:MM:SSZ", base64 <data> whose padding, if any, completes
 * the last quantum ("AAAA=" is accepted, "Base64=" is not), nothing but
 * whitespace, comments and processing instructions after </plist>.
 * Line ends in text are normalised to LF as XML requires.  Both readers
 * limit nesting to NGX_MDM_PLIST_MAX_DEPTH and refuse strings with
 * characters XML cannot carry (NUL, C0 controls other than TAB, LF, CR).
 * The binary reader also refuses trailing bytes, sets, UIDs and null, and
 * bounds the expansion of shared objects to a multiple of the input size.
 *
 * libplist 2.2 limits that show through: a date is an int32 count of
 * seconds from 2001 plus microseconds, so only 1932-12-13T20:45:52Z ..
 * 2069-01-19T03:14:07Z exist and other dates are refused; integers are
 * 64-bit, with the sign known above INT64_MAX (ngx_mdm_plist_integer()).
 *
 * JSON <-> plist (admin API).  JSON strings, integers, reals, true/false,
 * arrays and objects map to <string>, <integer>, <real>, <true/>/<false/>,
 * <array> and <dict>; null is refused.  Other plist types are written as a
 * JSON object with exactly one member whose name is a tag:
 *
 *     {"$data": "<standard base64>"}      <data>
 *     {"$date": "<RFC 3339 date-time>"}    <date>; output is UTC, "Z",
 *                                          with ".ffffff" only if needed
 *     {"$integer": "<decimal>"}            <integer> outside the int64
 *                                          range (output only above
 *                                          INT64_MAX, e.g. 2^64-1)
 *     {"$real": "nan" | "+infinity" | "-infinity"}   non-finite <real>
 *     {"$dict": {...}}                     a literal <dict>: its members
 *                                          are not read as tags (output
 *                                          only for a dict that has a key
 *                                          named like a tag)
 *
 * A tag with other members beside it, or a tag of the wrong JSON type, is
 * an error.  Strings must not contain NUL or C0 controls other than TAB,
 * LF and CR; CR LF and CR become LF, as any XML reader on the device would
 * make them.  In ngx_mdm_plist_command_xml() a plain JSON string is also
 * taken as base64 <data> for the command keys that Apple's schema types as
 * <data> (InstallProfile Payload, InstallProvisioningProfile
 * ProvisioningProfile, ClearPasscode UnlockToken, DeclarativeManagement
 * Data, SetAutoAdminPassword passwordHash, RotateFileVaultKey
 * NewCertificate and ReplyEncryptionCertificate, the items of
 * InstallEnterpriseApplication ManifestURLPinningCerts); everywhere else
 * only {"$data": ...} makes <data>.
 *
 * Memory: every plist_t returned is owned by the caller (plist_free()),
 * every json_t is a new reference (json_decref()), XML output is freed with
 * ngx_mdm_plist_xml_free().  Strings and data returned by the getters point
 * into the node and live as long as it does; strings are NUL-terminated.
 */


#ifndef _NGX_MDM_PLIST_H_INCLUDED_
#define _NGX_MDM_PLIST_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <plist/plist.h>
#include <jansson.h>


#define NGX_MDM_PLIST_MAX_DEPTH      64
#define NGX_MDM_PLIST_MAX_KEYS       16384    /* per dict */
#define NGX_MDM_PLIST_DEFAULT_MAX    (4 * 1024 * 1024)
#define NGX_MDM_PLIST_ERR_LEN        256


typedef enum {
    NGX_MDM_PLIST_OK = 0,
    NGX_MDM_PLIST_ABSENT,        /* getter: no such key */
    NGX_MDM_PLIST_WRONG_TYPE,    /* getter: the key holds another type */
    NGX_MDM_PLIST_ERANGE,        /* getter: integer outside int64 */
    NGX_MDM_PLIST_EFORMAT,       /* not a plist, malformed, trailing bytes */
    NGX_MDM_PLIST_ETOOBIG,       /* size, depth or expansion limit */
    NGX_MDM_PLIST_EINVAL,        /* a value with no plist or JSON form */
    NGX_MDM_PLIST_ENOMEM
} ngx_mdm_plist_rc_e;


/* layout of ngx_str_t; data is read-only */
typedef struct {
    size_t                len;
    u_char               *data;
} ngx_mdm_plist_str_t;


/* text: one line for a log, names the byte offset or the JSON path */
typedef struct {
    ngx_mdm_plist_rc_e    rc;
    char                  text[NGX_MDM_PLIST_ERR_LEN];
} ngx_mdm_plist_err_t;


/*
 * Parses an XML or binary plist of any root type.  max_size 0 means
 * NGX_MDM_PLIST_DEFAULT_MAX.  Returns NULL and fills err (if not NULL) on
 * failure: EFORMAT, ETOOBIG (size, depth, expansion) or ENOMEM.
 */
plist_t ngx_mdm_plist_parse(const u_char *buf, size_t len, size_t max_size,
    ngx_mdm_plist_err_t *err);

/*
 * Typed getters on a dict.  OK fills *out; ABSENT if dict is NULL, not a
 * dict, or has no such key; WRONG_TYPE if the key holds another type,
 * *out untouched.  A present <data/> of length 0 has a non-NULL data.
 */
ngx_mdm_plist_rc_e ngx_mdm_plist_get_string(plist_t dict, const char *key,
    ngx_mdm_plist_str_t *out);
ngx_mdm_plist_rc_e ngx_mdm_plist_get_data(plist_t dict, const char *key,
    ngx_mdm_plist_str_t *out);
ngx_mdm_plist_rc_e ngx_mdm_plist_get_bool(plist_t dict, const char *key,
    int *out);
/* ERANGE for an unsigned value above INT64_MAX */
ngx_mdm_plist_rc_e ngx_mdm_plist_get_integer(plist_t dict, const char *key,
    int64_t *out);
ngx_mdm_plist_rc_e ngx_mdm_plist_get_real(plist_t dict, const char *key,
    double *out);
ngx_mdm_plist_rc_e ngx_mdm_plist_get_dict(plist_t dict, const char *key,
    plist_t *out);
ngx_mdm_plist_rc_e ngx_mdm_plist_get_array(plist_t dict, const char *key,
    plist_t *out);

/*
 * An integer node's 64 bits and whether they read as unsigned above
 * INT64_MAX (*is_unsigned 1) or as a signed int64 (0).  WRONG_TYPE if the
 * node is not an integer.
 */
ngx_mdm_plist_rc_e ngx_mdm_plist_integer(plist_t node, uint64_t *bits,
    int *is_unsigned);

/* plist -> JSON; NULL and err (EINVAL, ETOOBIG, ENOMEM) on failure */
json_t *ngx_mdm_plist_to_json(plist_t node, ngx_mdm_plist_err_t *err);

/* JSON -> plist; NULL and err (EINVAL, ETOOBIG, ENOMEM) on failure */
plist_t ngx_mdm_plist_from_json(const json_t *json, ngx_mdm_plist_err_t *err);

/*
 * XML plist bytes of a node (<?xml ...?>, DOCTYPE, <plist version="1.0">).
 * *xml is NUL-terminated, *len excludes the NUL.
 */
ngx_mdm_plist_rc_e ngx_mdm_plist_to_xml(plist_t node, char **xml,
    size_t *len, ngx_mdm_plist_err_t *err);

/*
 * The command plist {CommandUUID: command_uuid, Command: {...}} as XML
 * bytes.  command is a JSON object with a non-empty string RequestType;
 * command_uuid is 1..255 bytes without control characters.  EINVAL with
 * the JSON path in err->text when the command has no plist form.
 */
ngx_mdm_plist_rc_e ngx_mdm_plist_command_xml(const json_t *command,
    const char *command_uuid, char **xml, size_t *len,
    ngx_mdm_plist_err_t *err);

void ngx_mdm_plist_xml_free(char *xml);

/* "ok", "absent", "wrong type", ... */
const char *ngx_mdm_plist_strerror(ngx_mdm_plist_rc_e rc);


#endif /* _NGX_MDM_PLIST_H_INCLUDED_ */
