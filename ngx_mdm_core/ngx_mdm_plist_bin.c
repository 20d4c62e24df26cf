
/*
 * The binary plist reader ("bplist00"): depth, expansion and key limits
 * as ngx_mdm_plist.h describes.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_mdm_plist_int.h"


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


static plist_t ngx_mdm_plist_bin_object(ngx_mdm_plist_bin_t *b,
    uint64_t ref, unsigned depth);
static int ngx_mdm_plist_bin_count(ngx_mdm_plist_bin_t *b,
    const u_char **pp, unsigned info, uint64_t *count);
static const char *ngx_mdm_plist_bin_string(ngx_mdm_plist_bin_t *b,
    uint64_t ref);
static plist_t ngx_mdm_plist_bin_fail(ngx_mdm_plist_bin_t *b,
    ngx_mdm_plist_rc_e rc, const char *what);


/* the binary reader */

plist_t
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


