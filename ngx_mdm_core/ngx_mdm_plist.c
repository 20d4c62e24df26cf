
/*
 * Property list parsing, typed access and JSON conversion; the rules are
 * in ngx_mdm_plist.h.
 */


#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ngx_mdm_plist.h"


#define NGX_MDM_PLIST_MAC_EPOCH   978307200   /* 2001-01-01T00:00:00Z */

#define ngx_mdm_plist_is_space(c)                                            \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')


typedef struct {
    const u_char               *start;
    const u_char               *pos;
    const u_char               *end;
    u_char                     *scratch;     /* decoded text */
    size_t                      top;         /* scratch held by open keys */
    ngx_mdm_plist_err_t        *err;
    unsigned                    failed;
} ngx_mdm_plist_xml_t;


typedef struct {
    const u_char               *name;
    size_t                      len;
    unsigned                    close:1;     /* </name> */
    unsigned                    empty:1;     /* <name/> */
    unsigned                    attrs:1;
} ngx_mdm_plist_tag_t;


typedef plist_t (*ngx_mdm_plist_xml_pt)(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);


typedef struct {
    const char                 *name;
    size_t                      len;
    ngx_mdm_plist_xml_pt        handler;
} ngx_mdm_plist_xml_elt_t;


typedef struct {
    const u_char               *buf;
    size_t                      table;       /* offset table offset */
    uint64_t                    count;       /* objects */
    unsigned                    offset_size;
    unsigned                    ref_size;
    size_t                      nodes;
    size_t                      max_nodes;
    size_t                      bytes;
    size_t                      max_bytes;
    u_char                     *scratch;
    ngx_mdm_plist_err_t        *err;
} ngx_mdm_plist_bin_t;


typedef struct {
    char                        path[128];
    size_t                      plen;
    ngx_mdm_plist_err_t        *err;
} ngx_mdm_plist_json_t;


typedef plist_t (*ngx_mdm_plist_tag_pt)(ngx_mdm_plist_json_t *ctx,
    const json_t *value, unsigned depth);


typedef struct {
    const char                 *name;
    ngx_mdm_plist_tag_pt        handler;
} ngx_mdm_plist_json_tag_t;


typedef struct {
    const char                 *request_type;
    const char                 *key;
    unsigned                    array;       /* an array of <data> */
} ngx_mdm_plist_data_key_t;


static void ngx_mdm_plist_error(ngx_mdm_plist_err_t *err,
    ngx_mdm_plist_rc_e rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t ngx_mdm_plist_utf8_char(const u_char *p, const u_char *end);
static size_t ngx_mdm_plist_xml_chars(const u_char *p, size_t len);
static int ngx_mdm_plist_cp_ok(uint32_t c);
static u_char *ngx_mdm_plist_utf8_put(u_char *d, uint32_t c);
static ssize_t ngx_mdm_plist_b64_decode(u_char *dst, const u_char *src,
    size_t len);
static size_t ngx_mdm_plist_b64_encode(u_char *dst, const u_char *src,
    size_t len);
static int64_t ngx_mdm_plist_days(int64_t y, unsigned m, unsigned d);
static int ngx_mdm_plist_date_parse(const u_char *p, size_t len,
    int rfc3339, int64_t *sec, int32_t *usec);
static double ngx_mdm_plist_floor(double d);
static size_t ngx_mdm_plist_date_format(char *buf, int64_t sec,
    int32_t usec);
static plist_t ngx_mdm_plist_new_date(int64_t sec, int32_t usec);
static void ngx_mdm_plist_date_get(plist_t node, int64_t *sec,
    int32_t *usec);
static uint64_t ngx_mdm_plist_be(const u_char *p, unsigned n);
static plist_t ngx_mdm_plist_new_integer(uint64_t bits, int is_unsigned);
static int ngx_mdm_plist_integer_parse(const u_char *p, size_t len,
    uint64_t *bits, int *is_unsigned);
static const u_char *ngx_mdm_plist_find(const u_char *p, const u_char *end,
    const char *s, size_t n);

static plist_t ngx_mdm_plist_parse_xml(const u_char *buf, size_t len,
    ngx_mdm_plist_err_t *err);
static int ngx_mdm_plist_xml_fail(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_rc_e rc, const char *what);
static int ngx_mdm_plist_xml_misc(ngx_mdm_plist_xml_t *x);
static int ngx_mdm_plist_xml_doctype(ngx_mdm_plist_xml_t *x);
static int ngx_mdm_plist_xml_tag(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag);
static int ngx_mdm_plist_xml_is(ngx_mdm_plist_tag_t *tag, const char *name);
static ssize_t ngx_mdm_plist_xml_text(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag);
static u_char *ngx_mdm_plist_xml_entity(ngx_mdm_plist_xml_t *x,
    const u_char **pp, u_char *d);
static plist_t ngx_mdm_plist_xml_value(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_dict(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_array(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_string(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_integer(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_real(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_date(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_data(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);
static plist_t ngx_mdm_plist_xml_bool(ngx_mdm_plist_xml_t *x,
    ngx_mdm_plist_tag_t *tag, unsigned depth);

static plist_t ngx_mdm_plist_parse_bin(const u_char *buf, size_t len,
    ngx_mdm_plist_err_t *err);
static plist_t ngx_mdm_plist_bin_object(ngx_mdm_plist_bin_t *b,
    uint64_t ref, unsigned depth);
static int ngx_mdm_plist_bin_count(ngx_mdm_plist_bin_t *b,
    const u_char **pp, unsigned info, uint64_t *count);
static const char *ngx_mdm_plist_bin_string(ngx_mdm_plist_bin_t *b,
    uint64_t ref);
static plist_t ngx_mdm_plist_bin_fail(ngx_mdm_plist_bin_t *b,
    ngx_mdm_plist_rc_e rc, const char *what);

static ngx_mdm_plist_rc_e ngx_mdm_plist_get(plist_t dict, const char *key,
    plist_type type, plist_t *node);
static json_t *ngx_mdm_plist_json_node(plist_t node, unsigned depth,
    ngx_mdm_plist_err_t *err);
static json_t *ngx_mdm_plist_json_tagged(const char *tag, json_t *value);

static plist_t ngx_mdm_plist_json_value(ngx_mdm_plist_json_t *ctx,
    const json_t *j, unsigned depth);
static plist_t ngx_mdm_plist_json_object(ngx_mdm_plist_json_t *ctx,
    const json_t *j, unsigned depth);
static plist_t ngx_mdm_plist_json_dict(ngx_mdm_plist_json_t *ctx,
    const json_t *j, unsigned depth, const char *request_type);
static plist_t ngx_mdm_plist_json_string(ngx_mdm_plist_json_t *ctx,
    const json_t *j);
static plist_t ngx_mdm_plist_json_bytes(ngx_mdm_plist_json_t *ctx,
    const json_t *j);
static plist_t ngx_mdm_plist_tag_data(ngx_mdm_plist_json_t *ctx,
    const json_t *value, unsigned depth);
static plist_t ngx_mdm_plist_tag_date(ngx_mdm_plist_json_t *ctx,
    const json_t *value, unsigned depth);
static plist_t ngx_mdm_plist_tag_integer(ngx_mdm_plist_json_t *ctx,
    const json_t *value, unsigned depth);
static plist_t ngx_mdm_plist_tag_real(ngx_mdm_plist_json_t *ctx,
    const json_t *value, unsigned depth);
static plist_t ngx_mdm_plist_tag_dict(ngx_mdm_plist_json_t *ctx,
    const json_t *value, unsigned depth);
static const ngx_mdm_plist_json_tag_t *ngx_mdm_plist_json_tag(
    const char *name);
static ngx_mdm_plist_rc_e ngx_mdm_plist_json_text(const char *s, size_t len,
    char **text);
static size_t ngx_mdm_plist_json_push(ngx_mdm_plist_json_t *ctx,
    const char *key, size_t index);
static plist_t ngx_mdm_plist_json_fail(ngx_mdm_plist_json_t *ctx,
    ngx_mdm_plist_rc_e rc, const char *what);


static const ngx_mdm_plist_xml_elt_t  ngx_mdm_plist_xml_elts[] = {
    { "dict", 4, ngx_mdm_plist_xml_dict },
    { "array", 5, ngx_mdm_plist_xml_array },
    { "string", 6, ngx_mdm_plist_xml_string },
    { "integer", 7, ngx_mdm_plist_xml_integer },
    { "true", 4, ngx_mdm_plist_xml_bool },
    { "false", 5, ngx_mdm_plist_xml_bool },
    { "data", 4, ngx_mdm_plist_xml_data },
    { "date", 4, ngx_mdm_plist_xml_date },
    { "real", 4, ngx_mdm_plist_xml_real },
    { NULL, 0, NULL }
};


static const ngx_mdm_plist_json_tag_t  ngx_mdm_plist_json_tags[] = {
    { "$data", ngx_mdm_plist_tag_data },
    { "$date", ngx_mdm_plist_tag_date },
    { "$integer", ngx_mdm_plist_tag_integer },
    { "$real", ngx_mdm_plist_tag_real },
    { "$dict", ngx_mdm_plist_tag_dict },
    { NULL, NULL }
};


/* command keys of type <data> in Apple's schema, mdm/commands/ */
static const ngx_mdm_plist_data_key_t  ngx_mdm_plist_data_keys[] = {
    { "InstallProfile", "Payload", 0 },
    { "InstallProvisioningProfile", "ProvisioningProfile", 0 },
    { "ClearPasscode", "UnlockToken", 0 },
    { "DeclarativeManagement", "Data", 0 },
    { "SetAutoAdminPassword", "passwordHash", 0 },
    { "RotateFileVaultKey", "NewCertificate", 0 },
    { "RotateFileVaultKey", "ReplyEncryptionCertificate", 0 },
    { "InstallEnterpriseApplication", "ManifestURLPinningCerts", 1 },
    { NULL, NULL, 0 }
};


static const char  *ngx_mdm_plist_rc_names[] = {
    "ok",
    "absent",
    "wrong type",
    "integer out of range",
    "malformed plist",
    "too big",
    "invalid value",
    "out of memory"
};


static const char  ngx_mdm_plist_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* errors and text helpers */

static void
ngx_mdm_plist_error(ngx_mdm_plist_err_t *err, ngx_mdm_plist_rc_e rc,
    const char *fmt, ...)
{
    va_list  args;

    if (err == NULL) {
        return;
    }

    err->rc = rc;

    va_start(args, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, args);
    va_end(args);
}


const char *
ngx_mdm_plist_strerror(ngx_mdm_plist_rc_e rc)
{
    if ((unsigned) rc >= sizeof(ngx_mdm_plist_rc_names) / sizeof(char *)) {
        return "unknown error";
    }

    return ngx_mdm_plist_rc_names[rc];
}


static int
ngx_mdm_plist_cp_ok(uint32_t c)
{
    /* the Char production of XML 1.0 */

    return c == '\t' || c == '\n' || c == '\r'
           || (c >= 0x20 && c <= 0xd7ff)
           || (c >= 0xe000 && c <= 0xfffd)
           || (c >= 0x10000 && c <= 0x10ffff);
}


/* length of a valid UTF-8 sequence at p encoding an XML Char, or 0 */

static size_t
ngx_mdm_plist_utf8_char(const u_char *p, const u_char *end)
{
    size_t    n, i;
    uint32_t  c;

    c = p[0];

    if (c < 0x80) {
        return ngx_mdm_plist_cp_ok(c) ? 1 : 0;
    }

    if (c < 0xc2) {
        return 0;
    }

    if (c < 0xe0) {
        n = 2;
        c &= 0x1f;

    } else if (c < 0xf0) {
        n = 3;
        c &= 0x0f;

    } else if (c < 0xf5) {
        n = 4;
        c &= 0x07;

    } else {
        return 0;
    }

    if ((size_t) (end - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        c = (c << 6) | (p[i] & 0x3f);
    }

    if ((n == 3 && c < 0x800) || (n == 4 && c < 0x10000)
        || !ngx_mdm_plist_cp_ok(c))
    {
        return 0;
    }

    return n;
}


/* offset of the first byte that is not UTF-8 of XML Chars, or len */

static size_t
ngx_mdm_plist_xml_chars(const u_char *p, size_t len)
{
    size_t         i, n;
    const u_char  *end;

    end = p + len;
    i = 0;

    while (i < len) {

        if (p[i] >= 0x20 && p[i] < 0x80) {
            i++;
            continue;
        }

        n = ngx_mdm_plist_utf8_char(p + i, end);
        if (n == 0) {
            return i;
        }

        i += n;
    }

    return len;
}


static u_char *
ngx_mdm_plist_utf8_put(u_char *d, uint32_t c)
{
    if (c < 0x80) {
        *d++ = (u_char) c;

    } else if (c < 0x800) {
        *d++ = (u_char) (0xc0 | (c >> 6));
        *d++ = (u_char) (0x80 | (c & 0x3f));

    } else if (c < 0x10000) {
        *d++ = (u_char) (0xe0 | (c >> 12));
        *d++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *d++ = (u_char) (0x80 | (c & 0x3f));

    } else {
        *d++ = (u_char) (0xf0 | (c >> 18));
        *d++ = (u_char) (0x80 | ((c >> 12) & 0x3f));
        *d++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *d++ = (u_char) (0x80 | (c & 0x3f));
    }

    return d;
}


static const u_char *
ngx_mdm_plist_find(const u_char *p, const u_char *end, const char *s,
    size_t n)
{
    while ((size_t) (end - p) >= n) {
        p = memchr(p, s[0], end - p - n + 1);
        if (p == NULL) {
            return NULL;
        }

        if (memcmp(p, s, n) == 0) {
            return p;
        }

        p++;
    }

    return NULL;
}


/*
 * Standard base64, whitespace ignored.  Padding, if any, must complete the
 * last quantum; '=' after a complete quantum is tolerated ("AAAA=").
 * Decoding in place (dst == src) is safe.  Returns the length or -1.
 */

static ssize_t
ngx_mdm_plist_b64_decode(u_char *dst, const u_char *src, size_t len)
{
    u_char    *d, c;
    size_t     i, n, pad;
    uint32_t   acc, v;

    d = dst;
    acc = 0;
    n = 0;
    pad = 0;

    for (i = 0; i < len; i++) {
        c = src[i];

        if (ngx_mdm_plist_is_space(c)) {
            continue;
        }

        if (c == '=') {
            pad++;
            continue;
        }

        if (pad) {
            return -1;
        }

        if (c >= 'A' && c <= 'Z') {
            v = c - 'A';

        } else if (c >= 'a' && c <= 'z') {
            v = c - 'a' + 26;

        } else if (c >= '0' && c <= '9') {
            v = c - '0' + 52;

        } else if (c == '+') {
            v = 62;

        } else if (c == '/') {
            v = 63;

        } else {
            return -1;
        }

        acc = (acc << 6) | v;

        if (++n % 4 == 0) {
            *d++ = (u_char) (acc >> 16);
            *d++ = (u_char) (acc >> 8);
            *d++ = (u_char) acc;
            acc = 0;
        }
    }

    switch (n % 4) {

    case 1:
        return -1;

    case 2:
        if (pad == 1) {
            return -1;
        }

        *d++ = (u_char) (acc >> 4);
        break;

    case 3:
        *d++ = (u_char) (acc >> 10);
        *d++ = (u_char) (acc >> 2);
        break;

    default:
        break;
    }

    return d - dst;
}


static size_t
ngx_mdm_plist_b64_encode(u_char *dst, const u_char *src, size_t len)
{
    u_char  *d;

    d = dst;

    while (len > 2) {
        *d++ = ngx_mdm_plist_b64[src[0] >> 2];
        *d++ = ngx_mdm_plist_b64[((src[0] & 0x03) << 4) | (src[1] >> 4)];
        *d++ = ngx_mdm_plist_b64[((src[1] & 0x0f) << 2) | (src[2] >> 6)];
        *d++ = ngx_mdm_plist_b64[src[2] & 0x3f];
        src += 3;
        len -= 3;
    }

    if (len) {
        *d++ = ngx_mdm_plist_b64[src[0] >> 2];

        if (len == 1) {
            *d++ = ngx_mdm_plist_b64[(src[0] & 0x03) << 4];
            *d++ = '=';

        } else {
            *d++ = ngx_mdm_plist_b64[((src[0] & 0x03) << 4) | (src[1] >> 4)];
            *d++ = ngx_mdm_plist_b64[(src[1] & 0x0f) << 2];
        }

        *d++ = '=';
    }

    return d - dst;
}


/* dates: days from 1970-01-01 in the proleptic Gregorian calendar */

static int64_t
ngx_mdm_plist_days(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}


static int
ngx_mdm_plist_digits(const u_char *p, size_t n, unsigned *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        *v = *v * 10 + (p[i] - '0');
    }

    return 0;
}


/*
 * "YYYY-MM-DDTHH:MM:SSZ" (Apple's XML form) or, with rfc3339, the RFC 3339
 * date-time: 't' or ' ' for 'T', a fraction, 'z' or a "+HH:MM" offset.
 * Gives seconds since 1970 and microseconds in [0, 1000000).
 */

static int
ngx_mdm_plist_date_parse(const u_char *p, size_t len, int rfc3339,
    int64_t *sec, int32_t *usec)
{
    size_t          i;
    int64_t         t;
    unsigned        y, mo, d, h, mi, s, oh, om, frac, scale, mdays;
    const u_char   *end;

    static const u_char  days[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    end = p + len;

    if (len < 20
        || ngx_mdm_plist_digits(p, 4, &y) || p[4] != '-'
        || ngx_mdm_plist_digits(p + 5, 2, &mo) || p[7] != '-'
        || ngx_mdm_plist_digits(p + 8, 2, &d)
        || ngx_mdm_plist_digits(p + 11, 2, &h) || p[13] != ':'
        || ngx_mdm_plist_digits(p + 14, 2, &mi) || p[16] != ':'
        || ngx_mdm_plist_digits(p + 17, 2, &s))
    {
        return -1;
    }

    if (!(p[10] == 'T' || (rfc3339 && (p[10] == 't' || p[10] == ' ')))) {
        return -1;
    }

    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) {
        return -1;
    }

    mdays = days[mo - 1];

    if (mo == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) {
        mdays = 29;
    }

    if (d > mdays) {
        return -1;
    }

    t = (ngx_mdm_plist_days(y, mo, d) * 24 + h) * 3600 + mi * 60 + s;
    frac = 0;
    p += 19;

    if (rfc3339 && p < end && *p == '.') {
        p++;
        scale = 100000;

        for (i = 0; p < end && *p >= '0' && *p <= '9'; i++, p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }

        if (i == 0) {
            return -1;
        }
    }

    if (p < end && (*p == 'Z' || (rfc3339 && *p == 'z'))) {
        p++;

    } else if (rfc3339 && end - p == 6 && (*p == '+' || *p == '-')
               && ngx_mdm_plist_digits(p + 1, 2, &oh) == 0 && p[3] == ':'
               && ngx_mdm_plist_digits(p + 4, 2, &om) == 0
               && oh <= 23 && om <= 59)
    {
        t += (*p == '+' ? -1 : 1) * (int64_t) (oh * 3600 + om * 60);
        p += 6;

    } else {
        return -1;
    }

    if (p != end) {
        return -1;
    }

    *sec = t;
    *usec = (int32_t) frac;

    return 0;
}


/* floor() of a finite double below 2^62, without libm */

static double
ngx_mdm_plist_floor(double d)
{
    int64_t  t;

    t = (int64_t) d;

    return (double) (t - ((double) t > d));
}


static size_t
ngx_mdm_plist_date_format(char *buf, int64_t sec, int32_t usec)
{
    int       n;
    int64_t   z, era, y;
    unsigned  doe, yoe, doy, mp, m, d, rem;

    /* the inverse of ngx_mdm_plist_days() */

    z = (sec >= 0 ? sec : sec - 86399) / 86400;
    rem = (unsigned) (sec - z * 86400);
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = (int64_t) yoe + era * 400 + (m <= 2);

    n = snprintf(buf, 40, "%04lld-%02u-%02uT%02u:%02u:%02u",
                 (long long) y, m, d, rem / 3600, rem / 60 % 60, rem % 60);

    if (usec) {
        n += snprintf(buf + n, 40 - n, ".%06d", (int) usec);
    }

    buf[n++] = 'Z';
    buf[n] = '\0';

    return n;
}


static plist_t
ngx_mdm_plist_new_date(int64_t sec, int32_t usec)
{
    sec -= NGX_MDM_PLIST_MAC_EPOCH;

    /* libplist 2.2 takes an int32 count of seconds from 2001 */

    if (sec < INT32_MIN || sec > INT32_MAX) {
        return NULL;
    }

    return plist_new_date((int32_t) sec, usec);
}


static void
ngx_mdm_plist_date_get(plist_t node, int64_t *sec, int32_t *usec)
{
    union { uint64_t u; double d; }  v;

    char      *bin;
    double     f;
    int32_t    s, u;
    int64_t    us;
    uint32_t   len;

    /*
     * libplist 2.2 reads a date back as the seconds truncated toward zero
     * and the magnitude of the fraction truncated to microseconds: -0.5
     * reads as +0.5 and x.000001 as x.000000.  Its binary writer puts out
     * the exact double: a one-object plist, the date at offset 8.
     */

    bin = NULL;
    len = 0;
    plist_to_bin(node, &bin, &len);

    if (bin != NULL && len >= 8 + 9 + 1 + 32 && (u_char) bin[8] == 0x33
        && (v.u = ngx_mdm_plist_be((u_char *) bin + 9, 8), isfinite(v.d)))
    {
        free(bin);

        f = ngx_mdm_plist_floor(v.d);
        us = (int64_t) ((v.d - f) * 1000000.0 + 0.5);

        *sec = (int64_t) f + (us == 1000000) + NGX_MDM_PLIST_MAC_EPOCH;
        *usec = (int32_t) (us % 1000000);
        return;
    }

    free(bin);

    plist_get_date_val(node, &s, &u);

    *sec = (int64_t) s + NGX_MDM_PLIST_MAC_EPOCH;
    *usec = u;
}


/* integers */

static plist_t
ngx_mdm_plist_new_integer(uint64_t bits, int is_unsigned)
{
    u_char    b[8 + 17 + 1 + 32];
    plist_t   node;
    unsigned  i;

    if (!is_unsigned || bits <= INT64_MAX) {
        return plist_new_uint(bits);
    }

    /*
     * libplist 2.2 marks an integer as unsigned only when it reads one:
     * hand it a one-object binary plist holding a 16-byte integer.
     */

    memset(b, 0, sizeof(b));
    memcpy(b, "bplist00", 8);
    b[8] = 0x14;

    for (i = 0; i < 8; i++) {
        b[17 + i] = (u_char) (bits >> (56 - 8 * i));
    }

    b[25] = 8;              /* offset table: object 0 at 8 */
    b[26 + 6] = 1;          /* offset size */
    b[26 + 7] = 1;          /* reference size */
    b[26 + 15] = 1;         /* one object, the top one */
    b[26 + 31] = 25;        /* offset table offset */

    node = NULL;
    plist_from_bin((const char *) b, sizeof(b), &node);

    return node;
}


/* decimal in [-2^63, 2^64-1], surrounding whitespace allowed */

static int
ngx_mdm_plist_integer_parse(const u_char *p, size_t len, uint64_t *bits,
    int *is_unsigned)
{
    int            neg;
    uint64_t       v;
    const u_char  *end;

    end = p + len;

    while (p < end && ngx_mdm_plist_is_space(*p)) {
        p++;
    }

    while (end > p && ngx_mdm_plist_is_space(end[-1])) {
        end--;
    }

    neg = 0;

    if (p < end && (*p == '-' || *p == '+')) {
        neg = (*p == '-');
        p++;
    }

    if (p == end) {
        return -1;
    }

    v = 0;

    for ( /* void */ ; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (v > (UINT64_MAX - (*p - '0')) / 10) {
            return -1;
        }

        v = v * 10 + (*p - '0');
    }

    if (neg) {
        if (v > (uint64_t) INT64_MAX + 1) {
            return -1;
        }

        *bits = 0 - v;
        *is_unsigned = 0;
        return 0;
    }

    *bits = v;
    *is_unsigned = (v > INT64_MAX);

    return 0;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_integer(plist_t node, uint64_t *bits, int *is_unsigned)
{
    uint64_t  v;
    plist_t   probe;

    if (node == NULL || plist_get_node_type(node) != PLIST_UINT) {
        return NGX_MDM_PLIST_WRONG_TYPE;
    }

    plist_get_uint_val(node, &v);

    *bits = v;
    *is_unsigned = 0;

    if (v > INT64_MAX) {

        /*
         * plist_new_uint() makes an integer that reads as signed; an
         * unsigned one (16 bytes in a binary plist) compares unequal.
         */

        probe = plist_new_uint(v);
        if (probe == NULL) {
            return NGX_MDM_PLIST_ENOMEM;
        }

        *is_unsigned = !plist_compare_node_value(node, probe);
        plist_free(probe);
    }

    return NGX_MDM_PLIST_OK;
}


/* parsing */

plist_t
ngx_mdm_plist_parse(const u_char *buf, size_t len, size_t max_size,
    ngx_mdm_plist_err_t *err)
{
    if (err) {
        err->rc = NGX_MDM_PLIST_OK;
        err->text[0] = '\0';
    }

    if (max_size == 0) {
        max_size = NGX_MDM_PLIST_DEFAULT_MAX;
    }

    if (len > max_size || len > UINT32_MAX / 2) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_ETOOBIG,
                            "plist of %zu bytes exceeds the limit of %zu",
                            len, max_size);
        return NULL;
    }

    if (buf == NULL || len == 0) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_EFORMAT, "empty body");
        return NULL;
    }

    if (len >= 8 && memcmp(buf, "bplist00", 8) == 0) {
        return ngx_mdm_plist_parse_bin(buf, len, err);
    }

    return ngx_mdm_plist_parse_xml(buf, len, err);
}


/* the XML reader */

static plist_t
ngx_mdm_plist_parse_xml(const u_char *buf, size_t len,
    ngx_mdm_plist_err_t *err)
{
    size_t               bad;
    plist_t              root;
    ngx_mdm_plist_tag_t  tag;
    ngx_mdm_plist_xml_t  x;

    x.start = buf;
    x.pos = buf;
    x.end = buf + len;
    x.top = 0;
    x.err = err;
    x.failed = 0;
    x.scratch = NULL;

    /* everything below may then take bytes as valid UTF-8 XML Chars */

    bad = ngx_mdm_plist_xml_chars(buf, len);
    if (bad != len) {
        x.pos = buf + bad;
        ngx_mdm_plist_xml_fail(&x, NGX_MDM_PLIST_EFORMAT,
                               "not UTF-8 or a character XML forbids");
        return NULL;
    }

    if (len >= 3 && buf[0] == 0xef && buf[1] == 0xbb && buf[2] == 0xbf) {
        x.pos += 3;
    }

    while (x.pos < x.end && ngx_mdm_plist_is_space(*x.pos)) {
        x.pos++;
    }

    if (x.pos == x.end || *x.pos != '<') {
        ngx_mdm_plist_xml_fail(&x, NGX_MDM_PLIST_EFORMAT,
                               "not a plist: no markup");
        return NULL;
    }

    /* decoded text never outgrows its markup: one buffer serves all */

    x.scratch = malloc(len + 2);
    if (x.scratch == NULL) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_ENOMEM, "out of memory");
        return NULL;
    }

    root = NULL;

    if (ngx_mdm_plist_xml_misc(&x) != 0) {
        goto failed;
    }

    if (x.end - x.pos >= 9 && memcmp(x.pos, "<!DOCTYPE", 9) == 0) {
        if (ngx_mdm_plist_xml_doctype(&x) != 0
            || ngx_mdm_plist_xml_misc(&x) != 0)
        {
            goto failed;
        }
    }

    if (ngx_mdm_plist_xml_tag(&x, &tag) != 0) {
        goto failed;
    }

    if (tag.close || !ngx_mdm_plist_xml_is(&tag, "plist")) {
        ngx_mdm_plist_xml_fail(&x, NGX_MDM_PLIST_EFORMAT,
                               "the root element is not <plist>");
        goto failed;
    }

    if (tag.empty) {
        ngx_mdm_plist_xml_fail(&x, NGX_MDM_PLIST_EFORMAT, "empty <plist/>");
        goto failed;
    }

    if (ngx_mdm_plist_xml_misc(&x) != 0
        || ngx_mdm_plist_xml_tag(&x, &tag) != 0)
    {
        goto failed;
    }

    root = ngx_mdm_plist_xml_value(&x, &tag, 1);
    if (root == NULL) {
        goto failed;
    }

    if (ngx_mdm_plist_xml_misc(&x) != 0
        || ngx_mdm_plist_xml_tag(&x, &tag) != 0)
    {
        goto failed;
    }

    if (!tag.close || !ngx_mdm_plist_xml_is(&tag, "plist")) {
        ngx_mdm_plist_xml_fail(&x, NGX_MDM_PLIST_EFORMAT,
                               "more than one value in <plist>");
        goto failed;
    }

    if (ngx_mdm_plist_xml_misc(&x) != 0) {
        goto failed;
    }

    if (x.pos != x.end) {
        ngx_mdm_plist_xml_fail(&x, NGX_MDM_PLIST_EFORMAT,
                               "trailing bytes after </plist>");
        goto failed;
    }

    free(x.scratch);

    return root;

failed:

    plist_free(root);
    free(x.scratch);

    return NULL;
}


static int
ngx_mdm_plist_xml_fail(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_rc_e rc,
    const char *what)
{
    /* the innermost failure is the precise one */

    if (!x->failed) {
        x->failed = 1;
        ngx_mdm_plist_error(x->err, rc, "XML plist, byte %zu: %s",
                            (size_t) (x->pos - x->start), what);
    }

    return -1;
}


/* whitespace, comments and processing instructions */

static int
ngx_mdm_plist_xml_misc(ngx_mdm_plist_xml_t *x)
{
    size_t         n;
    const u_char  *p, *q, *e;

    for ( ;; ) {
        while (x->pos < x->end && ngx_mdm_plist_is_space(*x->pos)) {
            x->pos++;
        }

        p = x->pos;
        n = x->end - p;

        if (n >= 4 && memcmp(p, "<!--", 4) == 0) {
            q = ngx_mdm_plist_find(p + 4, x->end, "-->", 3);
            if (q == NULL) {
                return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                              "unterminated comment");
            }

            x->pos = q + 3;
            continue;
        }

        if (n >= 2 && memcmp(p, "<?", 2) == 0) {
            q = ngx_mdm_plist_find(p + 2, x->end, "?>", 2);
            if (q == NULL) {
                return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                  "unterminated processing instruction");
            }

            /* the XML declaration may only name UTF-8 */

            if (q - p > 5 && memcmp(p, "<?xml", 5) == 0
                && ngx_mdm_plist_is_space(p[5]))
            {
                e = ngx_mdm_plist_find(p + 5, q, "encoding", 8);

                if (e != NULL) {
                    e += 8;

                    while (e < q && (ngx_mdm_plist_is_space(*e)
                                     || *e == '=' || *e == '"'
                                     || *e == '\''))
                    {
                        e++;
                    }

                    if (q - e < 6 || strncasecmp((char *) e, "utf-8", 5)
                        || (e[5] != '"' && e[5] != '\''))
                    {
                        return ngx_mdm_plist_xml_fail(x,
                                   NGX_MDM_PLIST_EFORMAT,
                                   "encoding other than UTF-8");
                    }
                }
            }

            x->pos = q + 2;
            continue;
        }

        return 0;
    }
}


static int
ngx_mdm_plist_xml_doctype(ngx_mdm_plist_xml_t *x)
{
    u_char         quote;
    const u_char  *p;

    p = x->pos + 9;
    quote = 0;

    if (p == x->end || !ngx_mdm_plist_is_space(*p)) {
        return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                      "bad DOCTYPE");
    }

    for ( /* void */ ; p < x->end; p++) {

        if (quote) {
            if (*p == quote) {
                quote = 0;
            }

            continue;
        }

        if (*p == '"' || *p == '\'') {
            quote = *p;

        } else if (*p == '[') {
            /* no entity or element declarations: nothing to expand */
            x->pos = p;
            return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                          "DOCTYPE internal subset");

        } else if (*p == '>') {
            x->pos = p + 1;
            return 0;
        }
    }

    return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                  "unterminated DOCTYPE");
}


static int
ngx_mdm_plist_xml_name_char(u_char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9')
           || c == '_' || c == ':' || c == '.' || c == '-';
}


/* a start tag (with attributes) or an end tag at x->pos */

static int
ngx_mdm_plist_xml_tag(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag)
{
    int            space;
    u_char         quote;
    const u_char  *p, *end, *name;

    p = x->pos;
    end = x->end;

    if (p == end || *p != '<') {
        return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                      p == end ? "unexpected end of input"
                                               : "text where an element "
                                                 "was expected");
    }

    p++;

    tag->close = 0;
    tag->empty = 0;
    tag->attrs = 0;

    if (p < end && *p == '/') {
        tag->close = 1;
        p++;
    }

    tag->name = p;

    while (p < end && ngx_mdm_plist_xml_name_char(*p)) {
        p++;
    }

    tag->len = p - tag->name;

    if (tag->len == 0) {
        return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                      "bad element name");
    }

    for ( ;; ) {
        space = 0;

        while (p < end && ngx_mdm_plist_is_space(*p)) {
            p++;
            space = 1;
        }

        if (p == end) {
            return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                          "unterminated tag");
        }

        if (*p == '>') {
            p++;
            break;
        }

        if (*p == '/' && !tag->close && p + 1 < end && p[1] == '>') {
            tag->empty = 1;
            p += 2;
            break;
        }

        if (tag->close || !space) {
            x->pos = p;
            return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                          "bad tag");
        }

        /* name = "value" */

        name = p;

        while (p < end && ngx_mdm_plist_xml_name_char(*p)) {
            p++;
        }

        if (p == name) {
            x->pos = p;
            return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                          "bad attribute");
        }

        while (p < end && ngx_mdm_plist_is_space(*p)) {
            p++;
        }

        if (p == end || *p++ != '=') {
            x->pos = p;
            return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                          "attribute without a value");
        }

        while (p < end && ngx_mdm_plist_is_space(*p)) {
            p++;
        }

        if (p == end || (*p != '"' && *p != '\'')) {
            x->pos = p;
            return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                          "unquoted attribute value");
        }

        quote = *p++;

        while (p < end && *p != quote && *p != '<') {
            p++;
        }

        if (p == end || *p != quote) {
            x->pos = p;
            return ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                          "bad attribute value");
        }

        p++;
        tag->attrs = 1;
    }

    x->pos = p;

    return 0;
}


static int
ngx_mdm_plist_xml_is(ngx_mdm_plist_tag_t *tag, const char *name)
{
    size_t  n;

    n = strlen(name);

    return tag->len == n && memcmp(tag->name, name, n) == 0;
}


/*
 * The character data of an element up to its end tag, decoded into the
 * scratch buffer at x->top and NUL-terminated: entities, character
 * references, CDATA sections, comments; CR LF and CR become LF.
 */

static ssize_t
ngx_mdm_plist_xml_text(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag)
{
    u_char               *d, *start;
    const u_char         *p, *q, *end;
    ngx_mdm_plist_tag_t   etag;

    start = x->scratch + x->top;
    d = start;

    if (tag->empty) {
        *d = '\0';
        return 0;
    }

    p = x->pos;
    end = x->end;

    for ( ;; ) {

        while (p < end && *p != '<' && *p != '&' && *p != '\r') {
            *d++ = *p++;
        }

        if (p == end) {
            x->pos = p;
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                   "unterminated element");
            return -1;
        }

        if (*p == '\r') {
            *d++ = '\n';
            p++;

            if (p < end && *p == '\n') {
                p++;
            }

            continue;
        }

        if (*p == '&') {
            x->pos = p;

            d = ngx_mdm_plist_xml_entity(x, &p, d);
            if (d == NULL) {
                return -1;
            }

            continue;
        }

        if (end - p >= 9 && memcmp(p, "<![CDATA[", 9) == 0) {
            q = ngx_mdm_plist_find(p + 9, end, "]]>", 3);
            if (q == NULL) {
                x->pos = p;
                ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                       "unterminated CDATA section");
                return -1;
            }

            for (p += 9; p < q; p++) {
                if (*p != '\r') {
                    *d++ = *p;

                } else if (p + 1 == q || p[1] != '\n') {
                    *d++ = '\n';
                }
            }

            p = q + 3;
            continue;
        }

        if ((end - p >= 4 && memcmp(p, "<!--", 4) == 0)
            || (end - p >= 2 && memcmp(p, "<?", 2) == 0))
        {
            x->pos = p;

            if (ngx_mdm_plist_xml_misc(x) != 0) {
                return -1;
            }

            p = x->pos;
            continue;
        }

        x->pos = p;

        if (ngx_mdm_plist_xml_tag(x, &etag) != 0) {
            return -1;
        }

        if (!etag.close || etag.len != tag->len
            || memcmp(etag.name, tag->name, tag->len) != 0)
        {
            x->pos = p;
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                   "element inside a text element");
            return -1;
        }

        break;
    }

    *d = '\0';

    return d - start;
}


static u_char *
ngx_mdm_plist_xml_entity(ngx_mdm_plist_xml_t *x, const u_char **pp,
    u_char *d)
{
    size_t         n;
    uint32_t       c, v;
    const u_char  *p, *semi, *q;

    p = *pp + 1;
    n = x->end - p;

    semi = memchr(p, ';', n < 16 ? n : 16);
    if (semi == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT, "bad entity");
        return NULL;
    }

    n = semi - p;

    if (n == 2 && memcmp(p, "lt", 2) == 0) {
        *d++ = '<';

    } else if (n == 2 && memcmp(p, "gt", 2) == 0) {
        *d++ = '>';

    } else if (n == 3 && memcmp(p, "amp", 3) == 0) {
        *d++ = '&';

    } else if (n == 4 && memcmp(p, "quot", 4) == 0) {
        *d++ = '"';

    } else if (n == 4 && memcmp(p, "apos", 4) == 0) {
        *d++ = '\'';

    } else if (n >= 2 && p[0] == '#') {
        c = 0;
        q = p + 1;

        if (*q == 'x') {
            q++;
        }

        if (q == semi) {
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                   "bad character reference");
            return NULL;
        }

        for ( /* void */ ; q < semi; q++) {

            if (*q >= '0' && *q <= '9') {
                v = *q - '0';

            } else if (p[1] == 'x' && (*q | 0x20) >= 'a'
                       && (*q | 0x20) <= 'f')
            {
                v = (*q | 0x20) - 'a' + 10;

            } else {
                v = 16;
            }

            if (v >= (p[1] == 'x' ? 16u : 10u)) {
                ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                       "bad character reference");
                return NULL;
            }

            c = c * (p[1] == 'x' ? 16 : 10) + v;

            if (c > 0x10ffff) {
                break;
            }
        }

        if (!ngx_mdm_plist_cp_ok(c)) {
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                   "character reference to a character "
                                   "XML forbids");
            return NULL;
        }

        d = ngx_mdm_plist_utf8_put(d, c);

    } else {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT, "unknown entity");
        return NULL;
    }

    *pp = semi + 1;

    return d;
}


static plist_t
ngx_mdm_plist_xml_value(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    const ngx_mdm_plist_xml_elt_t  *elt;

    if (tag->close) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                               "end tag where a value was expected");
        return NULL;
    }

    if (depth > NGX_MDM_PLIST_MAX_DEPTH) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ETOOBIG,
                               "nested deeper than the limit");
        return NULL;
    }

    for (elt = ngx_mdm_plist_xml_elts; elt->name; elt++) {

        if (elt->len == tag->len
            && memcmp(elt->name, tag->name, tag->len) == 0)
        {
            if (tag->attrs) {
                ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                       "attribute on a value element");
                return NULL;
            }

            return elt->handler(x, tag, depth);
        }
    }

    ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                           ngx_mdm_plist_xml_is(tag, "key")
                           ? "<key> outside a <dict> key position"
                           : "unknown element");
    return NULL;
}


static plist_t
ngx_mdm_plist_xml_dict(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    size_t               top, n;
    ssize_t              len;
    plist_t              dict, value;
    const u_char        *at;
    ngx_mdm_plist_tag_t  t;

    dict = plist_new_dict();
    if (dict == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ENOMEM, "out of memory");
        return NULL;
    }

    if (tag->empty) {
        return dict;
    }

    for ( ;; ) {
        if (ngx_mdm_plist_xml_misc(x) != 0) {
            goto failed;
        }

        at = x->pos;

        if (ngx_mdm_plist_xml_tag(x, &t) != 0) {
            goto failed;
        }

        if (t.close) {
            if (!ngx_mdm_plist_xml_is(&t, "dict")) {
                x->pos = at;
                ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                       "mismatched end tag in <dict>");
                goto failed;
            }

            return dict;
        }

        if (!ngx_mdm_plist_xml_is(&t, "key") || t.attrs) {
            x->pos = at;
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                   "<dict> entry without a <key>");
            goto failed;
        }

        if (plist_dict_get_size(dict) >= NGX_MDM_PLIST_MAX_KEYS) {
            x->pos = at;
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ETOOBIG,
                                   "<dict> with too many keys");
            goto failed;
        }

        /* the key stays in scratch, below x->top, until it is set */

        top = x->top;

        len = ngx_mdm_plist_xml_text(x, &t);
        if (len < 0) {
            goto failed;
        }

        x->top = top + len + 1;

        if (ngx_mdm_plist_xml_misc(x) != 0
            || ngx_mdm_plist_xml_tag(x, &t) != 0)
        {
            x->top = top;
            goto failed;
        }

        value = ngx_mdm_plist_xml_value(x, &t, depth + 1);

        x->top = top;

        if (value == NULL) {
            goto failed;
        }

        n = plist_dict_get_size(dict);

        plist_dict_set_item(dict, (char *) x->scratch + top, value);

        if (plist_dict_get_size(dict) == n) {
            x->pos = at;
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                   "duplicate key in <dict>");
            goto failed;
        }
    }

failed:

    plist_free(dict);

    return NULL;
}


static plist_t
ngx_mdm_plist_xml_array(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    plist_t              array, value;
    const u_char        *at;
    ngx_mdm_plist_tag_t  t;

    array = plist_new_array();
    if (array == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ENOMEM, "out of memory");
        return NULL;
    }

    if (tag->empty) {
        return array;
    }

    for ( ;; ) {
        if (ngx_mdm_plist_xml_misc(x) != 0) {
            goto failed;
        }

        at = x->pos;

        if (ngx_mdm_plist_xml_tag(x, &t) != 0) {
            goto failed;
        }

        if (t.close) {
            if (!ngx_mdm_plist_xml_is(&t, "array")) {
                x->pos = at;
                ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                       "mismatched end tag in <array>");
                goto failed;
            }

            return array;
        }

        value = ngx_mdm_plist_xml_value(x, &t, depth + 1);
        if (value == NULL) {
            goto failed;
        }

        plist_array_append_item(array, value);
    }

failed:

    plist_free(array);

    return NULL;
}


static plist_t
ngx_mdm_plist_xml_string(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    plist_t  node;

    if (ngx_mdm_plist_xml_text(x, tag) < 0) {
        return NULL;
    }

    node = plist_new_string((char *) x->scratch + x->top);
    if (node == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ENOMEM, "out of memory");
    }

    return node;
}


static plist_t
ngx_mdm_plist_xml_integer(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    int            is_unsigned;
    ssize_t        len;
    plist_t        node;
    uint64_t       bits;
    const u_char  *at;

    at = x->pos;

    len = ngx_mdm_plist_xml_text(x, tag);
    if (len < 0) {
        return NULL;
    }

    if (ngx_mdm_plist_integer_parse(x->scratch + x->top, len, &bits,
                                    &is_unsigned)
        != 0)
    {
        x->pos = at;
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                               "bad or out of range <integer>");
        return NULL;
    }

    node = ngx_mdm_plist_new_integer(bits, is_unsigned);
    if (node == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ENOMEM, "out of memory");
    }

    return node;
}


static plist_t
ngx_mdm_plist_xml_real(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    char          *s, *e, *p, *q;
    double         v;
    size_t         digits;
    ssize_t        len;
    plist_t        node;
    const u_char  *at;

    at = x->pos;

    len = ngx_mdm_plist_xml_text(x, tag);
    if (len < 0) {
        return NULL;
    }

    s = (char *) x->scratch + x->top;
    e = s + len;

    while (s < e && ngx_mdm_plist_is_space(*s)) {
        s++;
    }

    while (e > s && ngx_mdm_plist_is_space(e[-1])) {
        e--;
    }

    *e = '\0';
    p = s + (*s == '+' || *s == '-');

    if (strcasecmp(p, "nan") == 0) {
        v = NAN;

    } else if (strcasecmp(p, "infinity") == 0 || strcasecmp(p, "inf") == 0) {
        v = (*s == '-') ? -INFINITY : INFINITY;

    } else {

        /* plain decimal only: strtod() would also take hex and "infinite" */

        digits = 0;

        while (*p >= '0' && *p <= '9') {
            p++;
            digits++;
        }

        if (*p == '.') {
            p++;

            while (*p >= '0' && *p <= '9') {
                p++;
                digits++;
            }
        }

        if (digits && (*p == 'e' || *p == 'E')) {
            p++;
            p += (*p == '+' || *p == '-');

            if (*p < '0' || *p > '9') {
                digits = 0;
            }

            while (*p >= '0' && *p <= '9') {
                p++;
            }
        }

        v = 0;
        q = NULL;

        if (digits) {
            v = strtod(s, &q);
        }

        if (digits == 0 || p != e || q != e) {
            x->pos = at;
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT, "bad <real>");
            return NULL;
        }
    }

    node = plist_new_real(v);
    if (node == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ENOMEM, "out of memory");
    }

    return node;
}


static plist_t
ngx_mdm_plist_xml_date(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    u_char        *s, *e;
    int32_t        usec;
    int64_t        sec;
    ssize_t        len;
    plist_t        node;
    const u_char  *at;

    at = x->pos;

    len = ngx_mdm_plist_xml_text(x, tag);
    if (len < 0) {
        return NULL;
    }

    s = x->scratch + x->top;
    e = s + len;

    while (s < e && ngx_mdm_plist_is_space(*s)) {
        s++;
    }

    while (e > s && ngx_mdm_plist_is_space(e[-1])) {
        e--;
    }

    node = NULL;

    if (ngx_mdm_plist_date_parse(s, e - s, 0, &sec, &usec) == 0) {
        node = ngx_mdm_plist_new_date(sec, usec);
    }

    if (node == NULL) {
        x->pos = at;
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                               "bad <date> or one outside 1932..2069");
    }

    return node;
}


static plist_t
ngx_mdm_plist_xml_data(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    u_char        *s;
    ssize_t        len;
    plist_t        node;
    const u_char  *at;

    at = x->pos;

    len = ngx_mdm_plist_xml_text(x, tag);
    if (len < 0) {
        return NULL;
    }

    s = x->scratch + x->top;

    len = ngx_mdm_plist_b64_decode(s, s, len);
    if (len < 0) {
        x->pos = at;
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                               "<data> is not base64");
        return NULL;
    }

    node = plist_new_data((char *) s, len);
    if (node == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ENOMEM, "out of memory");
    }

    return node;
}


static plist_t
ngx_mdm_plist_xml_bool(ngx_mdm_plist_xml_t *x, ngx_mdm_plist_tag_t *tag,
    unsigned depth)
{
    plist_t              node;
    ngx_mdm_plist_tag_t  t;

    /* <true/>, or <true></true> as Go encoders write it */

    if (!tag->empty) {
        if (ngx_mdm_plist_xml_misc(x) != 0
            || ngx_mdm_plist_xml_tag(x, &t) != 0)
        {
            return NULL;
        }

        if (!t.close || t.len != tag->len
            || memcmp(t.name, tag->name, t.len) != 0)
        {
            ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_EFORMAT,
                                   "content in <true> or <false>");
            return NULL;
        }
    }

    node = plist_new_bool(tag->len == 4);
    if (node == NULL) {
        ngx_mdm_plist_xml_fail(x, NGX_MDM_PLIST_ENOMEM, "out of memory");
    }

    return node;
}


/* the binary reader */

static uint64_t
ngx_mdm_plist_be(const u_char *p, unsigned n)
{
    uint64_t  v;

    v = 0;

    while (n--) {
        v = (v << 8) | *p++;
    }

    return v;
}


static plist_t
ngx_mdm_plist_parse_bin(const u_char *buf, size_t len,
    ngx_mdm_plist_err_t *err)
{
    plist_t              root;
    uint64_t             top, table;
    const u_char        *t;
    ngx_mdm_plist_bin_t  b;

    b.buf = buf;
    b.err = err;
    b.scratch = NULL;

    if (len < 8 + 1 + 1 + 32) {
        return ngx_mdm_plist_bin_fail(&b, NGX_MDM_PLIST_EFORMAT, "truncated");
    }

    t = buf + len - 32;

    b.offset_size = t[6];
    b.ref_size = t[7];
    b.count = ngx_mdm_plist_be(t + 8, 8);
    top = ngx_mdm_plist_be(t + 16, 8);
    table = ngx_mdm_plist_be(t + 24, 8);

    if (b.offset_size < 1 || b.offset_size > 8
        || b.ref_size < 1 || b.ref_size > 8
        || b.count == 0 || top >= b.count
        || table < 9 || table > len - 32
        || b.count > (len - 32 - table) / b.offset_size
        || table + b.count * b.offset_size != len - 32)
    {
        /* the offset table must end where the trailer starts */

        return ngx_mdm_plist_bin_fail(&b, NGX_MDM_PLIST_EFORMAT,
                                      "bad trailer or trailing bytes");
    }

    b.table = table;

    /*
     * Shared objects are copied for every reference: bound the copies by
     * the input size (a tree without shared containers stays well below).
     */

    b.nodes = 0;
    b.max_nodes = len + 64;
    b.bytes = 0;
    b.max_bytes = 16 * len + 65536;

    /* a UTF-16 string of n bytes takes at most 3n/2 bytes of UTF-8 */

    b.scratch = malloc(len + len / 2 + 16);
    if (b.scratch == NULL) {
        return ngx_mdm_plist_bin_fail(&b, NGX_MDM_PLIST_ENOMEM,
                                      "out of memory");
    }

    root = ngx_mdm_plist_bin_object(&b, top, 1);

    free(b.scratch);

    return root;
}


static plist_t
ngx_mdm_plist_bin_fail(ngx_mdm_plist_bin_t *b, ngx_mdm_plist_rc_e rc,
    const char *what)
{
    if (b->err && b->err->rc == NGX_MDM_PLIST_OK) {
        ngx_mdm_plist_error(b->err, rc, "binary plist: %s", what);
    }

    return NULL;
}


static int
ngx_mdm_plist_bin_count(ngx_mdm_plist_bin_t *b, const u_char **pp,
    unsigned info, uint64_t *count)
{
    unsigned       n;
    const u_char  *p, *end;

    if (info != 0x0f) {
        *count = info;
        return 0;
    }

    /* a larger count follows as an integer object */

    p = *pp;
    end = b->buf + b->table;

    if (p == end || (*p & 0xf0) != 0x10 || (*p & 0x0f) > 3) {
        ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT, "bad count");
        return -1;
    }

    n = 1u << (*p & 0x0f);
    p++;

    if ((size_t) (end - p) < n) {
        ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT, "truncated count");
        return -1;
    }

    *count = ngx_mdm_plist_be(p, n);
    *pp = p + n;

    return 0;
}


static plist_t
ngx_mdm_plist_bin_object(ngx_mdm_plist_bin_t *b, uint64_t ref,
    unsigned depth)
{
    union { uint32_t u; float f; }   f32;
    union { uint64_t u; double d; }  f64;

    double         d;
    plist_t        node, item;
    int32_t        usec;
    uint64_t       off, count, i, r, kr, v;
    unsigned       type, info, n;
    const char    *key;
    const u_char  *p, *end;

    if (depth > NGX_MDM_PLIST_MAX_DEPTH) {
        return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_ETOOBIG,
                                      "nested deeper than the limit "
                                      "or cyclic");
    }

    if (++b->nodes > b->max_nodes) {
        return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_ETOOBIG,
                                      "shared objects expand too much");
    }

    off = ngx_mdm_plist_be(b->buf + b->table + ref * b->offset_size,
                           b->offset_size);

    if (off < 8 || off >= b->table) {
        return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                      "object offset out of range");
    }

    p = b->buf + off;
    end = b->buf + b->table;
    type = *p >> 4;
    info = *p & 0x0f;
    p++;

    switch (type) {

    case 0x0:
        if (info != 0x08 && info != 0x09) {
            break;
        }

        node = plist_new_bool(info == 0x09);
        goto done;

    case 0x1:
        if (info > 4 || (size_t) (end - p) < (1u << info)) {
            break;
        }

        if (info == 4) {

            /* 128-bit: only the unsigned 64-bit range is written */

            if (ngx_mdm_plist_be(p, 8) != 0) {
                break;
            }

            node = ngx_mdm_plist_new_integer(ngx_mdm_plist_be(p + 8, 8), 1);
            goto done;
        }

        /* 1, 2 and 4 bytes are unsigned, 8 bytes are two's complement */

        node = plist_new_uint(ngx_mdm_plist_be(p, 1u << info));
        goto done;

    case 0x2:
        if (info == 2 && end - p >= 4) {
            f32.u = (uint32_t) ngx_mdm_plist_be(p, 4);
            node = plist_new_real(f32.f);
            goto done;
        }

        if (info == 3 && end - p >= 8) {
            f64.u = ngx_mdm_plist_be(p, 8);
            node = plist_new_real(f64.d);
            goto done;
        }

        break;

    case 0x3:
        if (info != 3 || end - p < 8) {
            break;
        }

        f64.u = ngx_mdm_plist_be(p, 8);
        d = f64.d;

        if (!(d >= (double) INT32_MIN && d < (double) INT32_MAX + 1.0)) {
            return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                          "date outside 1932..2069");
        }

        usec = (int32_t) ((d - ngx_mdm_plist_floor(d)) * 1000000.0);

        if (usec > 999999) {
            usec = 999999;
        }

        node = plist_new_date((int32_t) ngx_mdm_plist_floor(d), usec);
        goto done;

    case 0x4:
        if (ngx_mdm_plist_bin_count(b, &p, info, &count) != 0) {
            return NULL;
        }

        if (count > (uint64_t) (end - p)) {
            return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                          "object runs past its end");
        }

        b->bytes += count;

        if (b->bytes > b->max_bytes) {
            return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_ETOOBIG,
                                          "shared objects expand too much");
        }

        node = plist_new_data((const char *) p, count);
        goto done;

    case 0x5:
    case 0x6:
        key = ngx_mdm_plist_bin_string(b, ref);
        if (key == NULL) {
            return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                          "bad string");
        }

        node = plist_new_string(key);
        goto done;

    case 0xa:
    case 0xd:
        if (ngx_mdm_plist_bin_count(b, &p, info, &count) != 0) {
            return NULL;
        }

        n = (type == 0xd) ? 2 : 1;

        if (count > (uint64_t) (end - p) / b->ref_size / n) {
            return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                          "object runs past its end");
        }

        if (type == 0xd && count > NGX_MDM_PLIST_MAX_KEYS) {
            return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_ETOOBIG,
                                          "dict with too many keys");
        }

        node = (type == 0xd) ? plist_new_dict() : plist_new_array();
        if (node == NULL) {
            goto done;
        }

        for (i = 0; i < count; i++) {
            r = ngx_mdm_plist_be(p + (i + (n - 1) * count) * b->ref_size,
                                 b->ref_size);

            if (r >= b->count) {
                plist_free(node);
                return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                              "reference out of range");
            }

            item = ngx_mdm_plist_bin_object(b, r, depth + 1);
            if (item == NULL) {
                plist_free(node);
                return NULL;
            }

            if (type == 0xa) {
                plist_array_append_item(node, item);
                continue;
            }

            /* the key is read after the value: both use the scratch */

            kr = ngx_mdm_plist_be(p + i * b->ref_size, b->ref_size);

            key = (kr < b->count && ++b->nodes <= b->max_nodes)
                  ? ngx_mdm_plist_bin_string(b, kr) : NULL;

            if (key == NULL) {
                plist_free(item);
                plist_free(node);
                return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                              "bad dict key");
            }

            v = plist_dict_get_size(node);

            plist_dict_set_item(node, key, item);

            if (plist_dict_get_size(node) == v) {
                plist_free(node);
                return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                              "duplicate dict key");
            }
        }

        goto done;

    default:
        break;
    }

    return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                  "bad or unsupported object");

done:

    if (node == NULL) {
        return ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_ENOMEM,
                                      "out of memory");
    }

    return node;
}


/* an ASCII or UTF-16 string object as UTF-8 in the scratch buffer */

static const char *
ngx_mdm_plist_bin_string(ngx_mdm_plist_bin_t *b, uint64_t ref)
{
    u_char        *d;
    uint32_t       c, lo;
    uint64_t       off, count, i;
    unsigned       type;
    const u_char  *p, *end;

    off = ngx_mdm_plist_be(b->buf + b->table + ref * b->offset_size,
                           b->offset_size);

    if (off < 8 || off >= b->table) {
        return NULL;
    }

    p = b->buf + off;
    end = b->buf + b->table;
    type = *p >> 4;

    if (type != 0x5 && type != 0x6) {
        return NULL;
    }

    p++;

    if (ngx_mdm_plist_bin_count(b, &p, p[-1] & 0x0f, &count) != 0
        || count > (uint64_t) (end - p) / (type == 0x6 ? 2 : 1))
    {
        return NULL;
    }

    b->bytes += count * (type == 0x6 ? 2 : 1);

    if (b->bytes > b->max_bytes) {
        ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_ETOOBIG,
                               "shared objects expand too much");
        return NULL;
    }

    d = b->scratch;

    if (type == 0x5) {
        if (ngx_mdm_plist_xml_chars(p, count) != count) {
            ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                   "string with bad UTF-8 or a control "
                                   "character");
            return NULL;
        }

        memcpy(d, p, count);
        d[count] = '\0';

        return (char *) d;
    }

    for (i = 0; i < count; i++) {
        c = (p[2 * i] << 8) | p[2 * i + 1];

        if (c >= 0xd800 && c <= 0xdbff && i + 1 < count) {
            lo = (p[2 * i + 2] << 8) | p[2 * i + 3];

            if (lo >= 0xdc00 && lo <= 0xdfff) {
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                i++;
            }
        }

        if (!ngx_mdm_plist_cp_ok(c)) {
            ngx_mdm_plist_bin_fail(b, NGX_MDM_PLIST_EFORMAT,
                                   "string with a bad surrogate or a "
                                   "control character");
            return NULL;
        }

        d = ngx_mdm_plist_utf8_put(d, c);
    }

    *d = '\0';

    return (char *) b->scratch;
}


/* typed getters */

static ngx_mdm_plist_rc_e
ngx_mdm_plist_get(plist_t dict, const char *key, plist_type type,
    plist_t *node)
{
    plist_t  n;

    if (dict == NULL || plist_get_node_type(dict) != PLIST_DICT) {
        return NGX_MDM_PLIST_ABSENT;
    }

    n = plist_dict_get_item(dict, key);
    if (n == NULL) {
        return NGX_MDM_PLIST_ABSENT;
    }

    if (plist_get_node_type(n) != type) {
        return NGX_MDM_PLIST_WRONG_TYPE;
    }

    *node = n;

    return NGX_MDM_PLIST_OK;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_get_string(plist_t dict, const char *key,
    ngx_mdm_plist_str_t *out)
{
    plist_t             node;
    uint64_t            len;
    const char         *s;
    ngx_mdm_plist_rc_e  rc;

    rc = ngx_mdm_plist_get(dict, key, PLIST_STRING, &node);
    if (rc != NGX_MDM_PLIST_OK) {
        return rc;
    }

    len = 0;
    s = plist_get_string_ptr(node, &len);

    out->data = (u_char *) (s ? s : "");
    out->len = s ? len : 0;

    return NGX_MDM_PLIST_OK;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_get_data(plist_t dict, const char *key,
    ngx_mdm_plist_str_t *out)
{
    plist_t             node;
    uint64_t            len;
    const char         *s;
    ngx_mdm_plist_rc_e  rc;

    rc = ngx_mdm_plist_get(dict, key, PLIST_DATA, &node);
    if (rc != NGX_MDM_PLIST_OK) {
        return rc;
    }

    len = 0;
    s = plist_get_data_ptr(node, &len);

    out->data = (u_char *) ((s && len) ? s : "");
    out->len = s ? len : 0;

    return NGX_MDM_PLIST_OK;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_get_bool(plist_t dict, const char *key, int *out)
{
    uint8_t             v;
    plist_t             node;
    ngx_mdm_plist_rc_e  rc;

    rc = ngx_mdm_plist_get(dict, key, PLIST_BOOLEAN, &node);
    if (rc != NGX_MDM_PLIST_OK) {
        return rc;
    }

    v = 0;
    plist_get_bool_val(node, &v);
    *out = (v != 0);

    return NGX_MDM_PLIST_OK;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_get_integer(plist_t dict, const char *key, int64_t *out)
{
    int                 is_unsigned;
    plist_t             node;
    uint64_t            bits;
    ngx_mdm_plist_rc_e  rc;

    rc = ngx_mdm_plist_get(dict, key, PLIST_UINT, &node);
    if (rc != NGX_MDM_PLIST_OK) {
        return rc;
    }

    rc = ngx_mdm_plist_integer(node, &bits, &is_unsigned);
    if (rc != NGX_MDM_PLIST_OK) {
        return rc;
    }

    if (is_unsigned) {
        return NGX_MDM_PLIST_ERANGE;
    }

    *out = (int64_t) bits;

    return NGX_MDM_PLIST_OK;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_get_real(plist_t dict, const char *key, double *out)
{
    plist_t             node;
    ngx_mdm_plist_rc_e  rc;

    rc = ngx_mdm_plist_get(dict, key, PLIST_REAL, &node);
    if (rc != NGX_MDM_PLIST_OK) {
        return rc;
    }

    plist_get_real_val(node, out);

    return NGX_MDM_PLIST_OK;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_get_dict(plist_t dict, const char *key, plist_t *out)
{
    return ngx_mdm_plist_get(dict, key, PLIST_DICT, out);
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_get_array(plist_t dict, const char *key, plist_t *out)
{
    return ngx_mdm_plist_get(dict, key, PLIST_ARRAY, out);
}


/* plist -> JSON */

json_t *
ngx_mdm_plist_to_json(plist_t node, ngx_mdm_plist_err_t *err)
{
    if (err) {
        err->rc = NGX_MDM_PLIST_OK;
        err->text[0] = '\0';
    }

    if (node == NULL) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_EINVAL, "no plist");
        return NULL;
    }

    return ngx_mdm_plist_json_node(node, 1, err);
}


static json_t *
ngx_mdm_plist_json_tagged(const char *tag, json_t *value)
{
    json_t  *obj;

    if (value == NULL) {
        return NULL;
    }

    obj = json_object();

    if (obj == NULL || json_object_set_new(obj, tag, value) != 0) {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


static json_t *
ngx_mdm_plist_json_node(plist_t node, unsigned depth,
    ngx_mdm_plist_err_t *err)
{
    int                   is_unsigned, tagged;
    char                  buf[48], *key;
    json_t               *j, *child;
    double                d;
    u_char               *b64;
    int32_t               usec;
    int64_t               sec;
    plist_t               item;
    uint8_t               bv;
    uint64_t              len, bits;
    const char           *s;
    plist_dict_iter       dit;
    plist_array_iter      ait;

    if (depth > NGX_MDM_PLIST_MAX_DEPTH) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_ETOOBIG,
                            "plist nested deeper than %d",
                            NGX_MDM_PLIST_MAX_DEPTH);
        return NULL;
    }

    j = NULL;

    switch (plist_get_node_type(node)) {

    case PLIST_BOOLEAN:
        bv = 0;
        plist_get_bool_val(node, &bv);
        j = json_boolean(bv);
        break;

    case PLIST_UINT:
        if (ngx_mdm_plist_integer(node, &bits, &is_unsigned)
            != NGX_MDM_PLIST_OK)
        {
            break;
        }

        if (is_unsigned) {
            snprintf(buf, sizeof(buf), "%llu", (unsigned long long) bits);
            j = ngx_mdm_plist_json_tagged("$integer", json_string(buf));

        } else {
            j = json_integer((json_int_t) (int64_t) bits);
        }

        break;

    case PLIST_REAL:
        d = 0;
        plist_get_real_val(node, &d);

        if (isfinite(d)) {
            j = json_real(d);

        } else {
            j = ngx_mdm_plist_json_tagged("$real",
                    json_string(isnan(d) ? "nan"
                                : (d > 0 ? "+infinity" : "-infinity")));
        }

        break;

    case PLIST_STRING:
        len = 0;
        s = plist_get_string_ptr(node, &len);

        j = json_stringn(s ? s : "", s ? len : 0);
        if (j == NULL) {
            ngx_mdm_plist_error(err, NGX_MDM_PLIST_EINVAL,
                                "plist string is not UTF-8");
            return NULL;
        }

        break;

    case PLIST_DATA:
        len = 0;
        s = plist_get_data_ptr(node, &len);

        b64 = malloc((len + 2) / 3 * 4 + 1);
        if (b64 == NULL) {
            break;
        }

        len = s ? ngx_mdm_plist_b64_encode(b64, (const u_char *) s, len)
                : 0;

        j = ngx_mdm_plist_json_tagged("$data",
                                      json_stringn((char *) b64, len));
        free(b64);
        break;

    case PLIST_DATE:
        ngx_mdm_plist_date_get(node, &sec, &usec);
        ngx_mdm_plist_date_format(buf, sec, usec);
        j = ngx_mdm_plist_json_tagged("$date", json_string(buf));
        break;

    case PLIST_ARRAY:
        j = json_array();
        if (j == NULL) {
            break;
        }

        ait = NULL;
        plist_array_new_iter(node, &ait);
        if (ait == NULL) {
            json_decref(j);
            j = NULL;
            break;
        }

        for ( ;; ) {
            item = NULL;
            plist_array_next_item(node, ait, &item);
            if (item == NULL) {
                break;
            }

            child = ngx_mdm_plist_json_node(item, depth + 1, err);

            if (child == NULL || json_array_append_new(j, child) != 0) {
                free(ait);
                json_decref(j);
                return NULL;
            }
        }

        free(ait);
        break;

    case PLIST_DICT:
        j = json_object();
        if (j == NULL) {
            break;
        }

        tagged = 0;

        dit = NULL;
        plist_dict_new_iter(node, &dit);
        if (dit == NULL) {
            json_decref(j);
            j = NULL;
            break;
        }

        for ( ;; ) {
            key = NULL;
            item = NULL;
            plist_dict_next_item(node, dit, &key, &item);
            if (item == NULL) {
                free(key);
                break;
            }

            child = ngx_mdm_plist_json_node(item, depth + 1, err);

            tagged |= (ngx_mdm_plist_json_tag(key) != NULL);

            if (child == NULL || key == NULL
                || json_object_set_new(j, key, child) != 0)
            {
                if (child && key) {
                    ngx_mdm_plist_error(err, NGX_MDM_PLIST_EINVAL,
                                        "plist key is not UTF-8");
                }

                free(key);
                free(dit);
                json_decref(j);
                return NULL;
            }

            free(key);
        }

        free(dit);

        /* a dict with a key named like a tag is marked literal */

        if (tagged) {
            j = ngx_mdm_plist_json_tagged("$dict", j);
        }

        break;

    default:
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_EINVAL,
                            "plist node of type %d has no JSON form",
                            (int) plist_get_node_type(node));
        return NULL;
    }

    if (j == NULL && (err == NULL || err->rc == NGX_MDM_PLIST_OK)) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_ENOMEM, "out of memory");
    }

    return j;
}


/* JSON -> plist */

plist_t
ngx_mdm_plist_from_json(const json_t *json, ngx_mdm_plist_err_t *err)
{
    ngx_mdm_plist_json_t  ctx;

    if (err) {
        err->rc = NGX_MDM_PLIST_OK;
        err->text[0] = '\0';
    }

    ctx.path[0] = '\0';
    ctx.plen = 0;
    ctx.err = err;

    if (json == NULL) {
        return ngx_mdm_plist_json_fail(&ctx, NGX_MDM_PLIST_EINVAL, "no JSON");
    }

    return ngx_mdm_plist_json_value(&ctx, json, 1);
}


static plist_t
ngx_mdm_plist_json_fail(ngx_mdm_plist_json_t *ctx, ngx_mdm_plist_rc_e rc,
    const char *what)
{
    if (ctx->err && ctx->err->rc == NGX_MDM_PLIST_OK) {
        ngx_mdm_plist_error(ctx->err, rc, "%s: %s",
                            ctx->plen ? ctx->path : "(top)", what);
    }

    return NULL;
}


/* appends ".key" or "[index]" to the error path; returns the old length */

static size_t
ngx_mdm_plist_json_push(ngx_mdm_plist_json_t *ctx, const char *key,
    size_t index)
{
    int     n;
    size_t  old, room;

    old = ctx->plen;
    room = sizeof(ctx->path) - old;

    if (key) {
        n = snprintf(ctx->path + old, room, "%s%.40s", old ? "." : "", key);

    } else {
        n = snprintf(ctx->path + old, room, "[%zu]", index);
    }

    if (n > 0) {
        ctx->plen = ((size_t) n < room) ? old + n : sizeof(ctx->path) - 1;
    }

    /* the path goes into a one-line error */

    for (n = (int) old; (size_t) n < ctx->plen; n++) {
        if ((u_char) ctx->path[n] < 0x20 || ctx->path[n] == 0x7f) {
            ctx->path[n] = '?';
        }
    }

    return old;
}


static plist_t
ngx_mdm_plist_json_value(ngx_mdm_plist_json_t *ctx, const json_t *j,
    unsigned depth)
{
    size_t   i, old;
    plist_t  node, item;
    json_t  *v;

    if (depth > NGX_MDM_PLIST_MAX_DEPTH) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ETOOBIG,
                                       "nested deeper than the limit");
    }

    switch (json_typeof(j)) {

    case JSON_OBJECT:
        return ngx_mdm_plist_json_object(ctx, j, depth);

    case JSON_ARRAY:
        node = plist_new_array();
        if (node == NULL) {
            break;
        }

        json_array_foreach(j, i, v) {
            old = ngx_mdm_plist_json_push(ctx, NULL, i);

            item = ngx_mdm_plist_json_value(ctx, v, depth + 1);
            if (item == NULL) {
                plist_free(node);
                return NULL;
            }

            ctx->path[ctx->plen = old] = '\0';
            plist_array_append_item(node, item);
        }

        return node;

    case JSON_STRING:
        return ngx_mdm_plist_json_string(ctx, j);

    case JSON_INTEGER:
        node = plist_new_uint((uint64_t) json_integer_value(j));
        break;

    case JSON_REAL:
        node = plist_new_real(json_real_value(j));
        break;

    case JSON_TRUE:
    case JSON_FALSE:
        node = plist_new_bool(json_is_true(j));
        break;

    default:
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "null has no plist form");
    }

    if (node == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                       "out of memory");
    }

    return node;
}


static const ngx_mdm_plist_json_tag_t *
ngx_mdm_plist_json_tag(const char *name)
{
    const ngx_mdm_plist_json_tag_t  *tag;

    if (name == NULL || name[0] != '$') {
        return NULL;
    }

    for (tag = ngx_mdm_plist_json_tags; tag->name; tag++) {
        if (strcmp(tag->name, name) == 0) {
            return tag;
        }
    }

    return NULL;
}


static plist_t
ngx_mdm_plist_json_object(ngx_mdm_plist_json_t *ctx, const json_t *j,
    unsigned depth)
{
    void                            *it;
    size_t                           old;
    plist_t                          node;
    const char                      *key;
    const ngx_mdm_plist_json_tag_t  *tag;

    for (it = json_object_iter((json_t *) j); it;
         it = json_object_iter_next((json_t *) j, it))
    {
        key = json_object_iter_key(it);
        tag = ngx_mdm_plist_json_tag(key);

        if (tag == NULL) {
            continue;
        }

        old = ngx_mdm_plist_json_push(ctx, key, 0);

        if (json_object_size(j) != 1) {
            return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                           "a type tag must be the only "
                                           "member of its object");
        }

        node = tag->handler(ctx, json_object_iter_value(it), depth);

        ctx->path[ctx->plen = old] = '\0';

        return node;
    }

    return ngx_mdm_plist_json_dict(ctx, j, depth, NULL);
}


/*
 * A dict from the members of a JSON object.  With request_type, string
 * members that the command's schema types as <data> are read as base64.
 */

static plist_t
ngx_mdm_plist_json_dict(ngx_mdm_plist_json_t *ctx, const json_t *j,
    unsigned depth, const char *request_type)
{
    char                            *text;
    void                            *it;
    size_t                           old, eold, i, n;
    plist_t                          dict, item, elt;
    json_t                          *v, *e;
    const char                      *key;
    ngx_mdm_plist_rc_e               rc;
    const ngx_mdm_plist_data_key_t  *dk;

    if (json_object_size(j) > NGX_MDM_PLIST_MAX_KEYS) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ETOOBIG,
                                       "object with too many members");
    }

    dict = plist_new_dict();
    if (dict == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                       "out of memory");
    }

    for (it = json_object_iter((json_t *) j); it;
         it = json_object_iter_next((json_t *) j, it))
    {
        key = json_object_iter_key(it);
        v = json_object_iter_value(it);

        old = ngx_mdm_plist_json_push(ctx, key, 0);

        rc = ngx_mdm_plist_json_text(key, json_object_iter_key_len(it),
                                     &text);
        if (rc != NGX_MDM_PLIST_OK) {
            plist_free(dict);
            return ngx_mdm_plist_json_fail(ctx, rc,
                                           rc == NGX_MDM_PLIST_ENOMEM
                                           ? "out of memory"
                                           : "key with a character XML "
                                             "cannot carry");
        }

        dk = NULL;

        if (request_type) {
            for (dk = ngx_mdm_plist_data_keys; dk->key; dk++) {
                if (strcmp(dk->request_type, request_type) == 0
                    && strcmp(dk->key, key) == 0)
                {
                    break;
                }
            }

            if (dk->key == NULL) {
                dk = NULL;
            }
        }

        if (dk && !dk->array && json_is_string(v)) {
            item = ngx_mdm_plist_json_bytes(ctx, v);

        } else if (dk && dk->array && json_is_array(v)) {
            item = plist_new_array();

            json_array_foreach(v, i, e) {
                if (item == NULL) {
                    break;
                }

                eold = ngx_mdm_plist_json_push(ctx, NULL, i);

                elt = json_is_string(e)
                      ? ngx_mdm_plist_json_bytes(ctx, e)
                      : ngx_mdm_plist_json_value(ctx, e, depth + 2);

                if (elt == NULL) {
                    plist_free(item);
                    item = NULL;
                    break;
                }

                ctx->path[ctx->plen = eold] = '\0';
                plist_array_append_item(item, elt);
            }

        } else {
            item = ngx_mdm_plist_json_value(ctx, v, depth + 1);
        }

        if (item == NULL) {
            if (text != key) {
                free(text);
            }

            plist_free(dict);
            return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                           "out of memory");
        }

        ctx->path[ctx->plen = old] = '\0';

        /* "a\r" and "a\n" are one key once CR is LF */

        n = plist_dict_get_size(dict);
        plist_dict_set_item(dict, text, item);

        if (text != key) {
            free(text);
        }

        if (plist_dict_get_size(dict) == n) {
            plist_free(dict);
            return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                           "two keys the same once CR "
                                           "becomes LF");
        }
    }

    return dict;
}


/*
 * A JSON string or key as plist text: no NUL or other character XML cannot
 * carry; CR LF and CR become LF, as an XML reader on the device would make
 * them.  *text is s itself, or a copy to free when s had a CR.
 */

static ngx_mdm_plist_rc_e
ngx_mdm_plist_json_text(const char *s, size_t len, char **text)
{
    char    *d;
    size_t   i;

    if (strlen(s) != len
        || ngx_mdm_plist_xml_chars((const u_char *) s, len) != len)
    {
        return NGX_MDM_PLIST_EINVAL;
    }

    if (memchr(s, '\r', len) == NULL) {
        *text = (char *) s;
        return NGX_MDM_PLIST_OK;
    }

    *text = malloc(len + 1);
    if (*text == NULL) {
        return NGX_MDM_PLIST_ENOMEM;
    }

    d = *text;

    for (i = 0; i < len; i++) {
        if (s[i] != '\r') {
            *d++ = s[i];

        } else if (i + 1 == len || s[i + 1] != '\n') {
            *d++ = '\n';
        }
    }

    *d = '\0';

    return NGX_MDM_PLIST_OK;
}


static plist_t
ngx_mdm_plist_json_string(ngx_mdm_plist_json_t *ctx, const json_t *j)
{
    char                *text;
    plist_t              node;
    const char          *s;
    ngx_mdm_plist_rc_e   rc;

    s = json_string_value(j);

    rc = ngx_mdm_plist_json_text(s, json_string_length(j), &text);
    if (rc != NGX_MDM_PLIST_OK) {
        return ngx_mdm_plist_json_fail(ctx, rc,
                                       rc == NGX_MDM_PLIST_ENOMEM
                                       ? "out of memory"
                                       : "string with a character XML "
                                         "cannot carry");
    }

    node = plist_new_string(text);

    if (text != s) {
        free(text);
    }

    if (node == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                       "out of memory");
    }

    return node;
}


/* a JSON string of base64 as <data> */

static plist_t
ngx_mdm_plist_json_bytes(ngx_mdm_plist_json_t *ctx, const json_t *j)
{
    u_char   *buf;
    size_t    len;
    ssize_t   n;
    plist_t   node;

    len = json_string_length(j);

    buf = malloc(len / 4 * 3 + 4);
    if (buf == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                       "out of memory");
    }

    n = ngx_mdm_plist_b64_decode(buf, (const u_char *) json_string_value(j),
                                 len);
    if (n < 0) {
        free(buf);
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "data is not standard base64");
    }

    node = plist_new_data((char *) buf, n);
    free(buf);

    if (node == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                       "out of memory");
    }

    return node;
}


static plist_t
ngx_mdm_plist_tag_data(ngx_mdm_plist_json_t *ctx, const json_t *value,
    unsigned depth)
{
    if (!json_is_string(value)) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "\"$data\" takes a base64 string");
    }

    return ngx_mdm_plist_json_bytes(ctx, value);
}


static plist_t
ngx_mdm_plist_tag_date(ngx_mdm_plist_json_t *ctx, const json_t *value,
    unsigned depth)
{
    int32_t   usec;
    int64_t   sec;
    plist_t   node;

    if (!json_is_string(value)
        || ngx_mdm_plist_date_parse((const u_char *) json_string_value(value),
                                    json_string_length(value), 1,
                                    &sec, &usec)
           != 0)
    {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "\"$date\" takes an RFC 3339 "
                                       "date-time");
    }

    node = ngx_mdm_plist_new_date(sec, usec);
    if (node == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "date outside 1932..2069");
    }

    return node;
}


static plist_t
ngx_mdm_plist_tag_integer(ngx_mdm_plist_json_t *ctx, const json_t *value,
    unsigned depth)
{
    int        is_unsigned;
    plist_t    node;
    uint64_t   bits;

    if (json_is_integer(value)) {
        bits = (uint64_t) json_integer_value(value);
        is_unsigned = 0;

    } else if (!json_is_string(value)
               || ngx_mdm_plist_integer_parse(
                      (const u_char *) json_string_value(value),
                      json_string_length(value), &bits, &is_unsigned)
                  != 0)
    {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "\"$integer\" takes a decimal in "
                                       "[-2^63, 2^64-1]");
    }

    node = ngx_mdm_plist_new_integer(bits, is_unsigned);
    if (node == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                       "out of memory");
    }

    return node;
}


static plist_t
ngx_mdm_plist_tag_real(ngx_mdm_plist_json_t *ctx, const json_t *value,
    unsigned depth)
{
    double       d;
    plist_t      node;
    const char  *s;

    s = json_string_value(value);

    if (json_is_number(value)) {
        d = json_number_value(value);

    } else if (s && strcmp(s, "nan") == 0) {
        d = NAN;

    } else if (s && strcmp(s, "+infinity") == 0) {
        d = INFINITY;

    } else if (s && strcmp(s, "-infinity") == 0) {
        d = -INFINITY;

    } else {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "\"$real\" takes a number, \"nan\", "
                                       "\"+infinity\" or \"-infinity\"");
    }

    node = plist_new_real(d);
    if (node == NULL) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_ENOMEM,
                                       "out of memory");
    }

    return node;
}


static plist_t
ngx_mdm_plist_tag_dict(ngx_mdm_plist_json_t *ctx, const json_t *value,
    unsigned depth)
{
    if (!json_is_object(value)) {
        return ngx_mdm_plist_json_fail(ctx, NGX_MDM_PLIST_EINVAL,
                                       "\"$dict\" takes an object");
    }

    return ngx_mdm_plist_json_dict(ctx, value, depth, NULL);
}


/* XML output */

ngx_mdm_plist_rc_e
ngx_mdm_plist_to_xml(plist_t node, char **xml, size_t *len,
    ngx_mdm_plist_err_t *err)
{
    char      *out;
    uint32_t   n;

    if (err) {
        err->rc = NGX_MDM_PLIST_OK;
        err->text[0] = '\0';
    }

    if (node == NULL) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_EINVAL, "no plist");
        return NGX_MDM_PLIST_EINVAL;
    }

    out = NULL;
    n = 0;

    plist_to_xml(node, &out, &n);

    if (out == NULL) {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_ENOMEM,
                            "libplist could not write XML");
        return NGX_MDM_PLIST_ENOMEM;
    }

    *xml = out;
    *len = n;

    return NGX_MDM_PLIST_OK;
}


ngx_mdm_plist_rc_e
ngx_mdm_plist_command_xml(const json_t *command, const char *command_uuid,
    char **xml, size_t *len, ngx_mdm_plist_err_t *err)
{
    size_t                 n, i;
    plist_t                root, cmd, node;
    json_t                *rt;
    ngx_mdm_plist_rc_e     rc;
    ngx_mdm_plist_json_t   ctx;

    if (err) {
        err->rc = NGX_MDM_PLIST_OK;
        err->text[0] = '\0';
    }

    n = command_uuid ? strlen(command_uuid) : 0;

    for (i = 0; i < n; i++) {
        if ((u_char) command_uuid[i] < 0x20 || command_uuid[i] == 0x7f) {
            break;
        }
    }

    if (n == 0 || n > 255 || i != n
        || ngx_mdm_plist_xml_chars((const u_char *) command_uuid, n) != n)
    {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_EINVAL,
                            "CommandUUID must be 1..255 bytes of UTF-8 "
                            "without control characters");
        return NGX_MDM_PLIST_EINVAL;
    }

    rt = json_object_get(command, "RequestType");

    if (!json_is_object(command) || !json_is_string(rt)
        || json_string_length(rt) == 0)
    {
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_EINVAL,
                            "Command: not an object with a non-empty "
                            "string RequestType");
        return NGX_MDM_PLIST_EINVAL;
    }

    ctx.err = err;
    ctx.plen = 0;
    ngx_mdm_plist_json_push(&ctx, "Command", 0);

    cmd = ngx_mdm_plist_json_dict(&ctx, command, 2, json_string_value(rt));
    if (cmd == NULL) {
        return err ? err->rc : NGX_MDM_PLIST_EINVAL;
    }

    root = plist_new_dict();
    node = plist_new_string(command_uuid);

    if (root == NULL || node == NULL) {
        plist_free(cmd);
        plist_free(root);
        plist_free(node);
        ngx_mdm_plist_error(err, NGX_MDM_PLIST_ENOMEM, "out of memory");
        return NGX_MDM_PLIST_ENOMEM;
    }

    plist_dict_set_item(root, "Command", cmd);
    plist_dict_set_item(root, "CommandUUID", node);

    rc = ngx_mdm_plist_to_xml(root, xml, len, err);

    plist_free(root);

    return rc;
}


void
ngx_mdm_plist_xml_free(char *xml)
{
    free(xml);
}
