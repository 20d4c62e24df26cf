
/*
 * Property list parsing entry, typed access and the helpers that the XML
 * (ngx_mdm_plist_xml.c), binary (ngx_mdm_plist_bin.c) and JSON
 * (ngx_mdm_plist_json.c) halves share; the rules are in ngx_mdm_plist.h.
 */


#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_mdm_plist_int.h"


#define NGX_MDM_PLIST_MAC_EPOCH   978307200   /* 2001-01-01T00:00:00Z */


static size_t ngx_mdm_plist_utf8_char(const u_char *p, const u_char *end);
static int64_t ngx_mdm_plist_days(int64_t y, unsigned m, unsigned d);
static ngx_mdm_plist_rc_e ngx_mdm_plist_get(plist_t dict, const char *key,
    plist_type type, plist_t *node);


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

void
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


int
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

size_t
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


u_char *
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


/*
 * Standard base64, whitespace ignored.  Padding, if any, must complete the
 * last quantum; '=' after a complete quantum is tolerated ("AAAA=").
 * Decoding in place (dst == src) is safe.  Returns the length or -1.
 */

ssize_t
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


size_t
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

int
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

double
ngx_mdm_plist_floor(double d)
{
    int64_t  t;

    t = (int64_t) d;

    return (double) (t - ((double) t > d));
}


size_t
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


plist_t
ngx_mdm_plist_new_date(int64_t sec, int32_t usec)
{
    sec -= NGX_MDM_PLIST_MAC_EPOCH;

    /* libplist 2.2 takes an int32 count of seconds from 2001 */

    if (sec < INT32_MIN || sec > INT32_MAX) {
        return NULL;
    }

    return plist_new_date((int32_t) sec, usec);
}


void
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

plist_t
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

int
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


/* big-endian unsigned integers: binary plists and dates */

uint64_t
ngx_mdm_plist_be(const u_char *p, unsigned n)
{
    uint64_t  v;

    v = 0;

    while (n--) {
        v = (v << 8) | *p++;
    }

    return v;
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
