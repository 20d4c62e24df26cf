
/*
 * The XML plist reader (strict, see ngx_mdm_plist.h) and the XML output
 * glue over libplist.
 */


#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ngx_mdm_plist_int.h"


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


static const u_char *ngx_mdm_plist_find(const u_char *p, const u_char *end,
    const char *s, size_t n);

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


/* the XML reader */

plist_t
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


void
ngx_mdm_plist_xml_free(char *xml)
{
    free(xml);
}
