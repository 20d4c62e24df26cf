/* sources: ngx_mdm_core/ngx_mdm_plist.c ngx_mdm_core/ngx_mdm_plist_xml.c ngx_mdm_core/ngx_mdm_plist_bin.c ngx_mdm_core/ngx_mdm_plist_json.c */

/*
 * ngx_mdm_plist: the XML and binary readers against every check-in and
 * command vector (and against libplist's own reader), strictness, limits,
 * getters, JSON <-> plist, command XML, truncations and garbage.
 * Prints TAP; run from the repository root (MDM_VECTORS overrides
 * ../shared/vectors).
 */


#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ngx_mdm_plist.h"
#include "tap.h"


static const char  *vectors;



static u_char *
slurp(const char *path, size_t *len)
{
    long     n;
    FILE    *f;
    u_char  *buf;

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
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* sorted file names of vectors/<sub> */

static char **
list_dir(const char *sub, size_t *n)
{
    DIR            *d;
    char            path[1024], **names;
    size_t          cap;
    struct dirent  *e;

    snprintf(path, sizeof(path), "%s/%s", vectors, sub);

    *n = 0;
    cap = 64;
    names = malloc(cap * sizeof(char *));

    d = opendir(path);
    if (d == NULL) {
        return names;
    }

    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }

        if (*n == cap) {
            cap *= 2;
            names = realloc(names, cap * sizeof(char *));
        }

        names[(*n)++] = strdup(e->d_name);
    }

    closedir(d);
    qsort(names, *n, sizeof(char *), cmp_names);

    return names;
}


static void
free_names(char **names, size_t n)
{
    while (n--) {
        free(names[n]);
    }

    free(names);
}


static u_char *
vector(const char *name, size_t *len)
{
    char  path[1024];

    snprintf(path, sizeof(path), "%s/%s", vectors, name);

    return slurp(path, len);
}


static char *
xml_of(plist_t p)
{
    char                 *xml;
    size_t                len;
    ngx_mdm_plist_err_t   err;

    if (p == NULL
        || ngx_mdm_plist_to_xml(p, &xml, &len, &err) != NGX_MDM_PLIST_OK)
    {
        return NULL;
    }

    return xml;
}


static int
same_plist(plist_t a, plist_t b)
{
    int    same;
    char  *x, *y;

    x = xml_of(a);
    y = xml_of(b);

    same = (x && y && strcmp(x, y) == 0);

    ngx_mdm_plist_xml_free(x);
    ngx_mdm_plist_xml_free(y);

    return same;
}


static plist_t
parse(const char *s, ngx_mdm_plist_rc_e *rc)
{
    plist_t              p;
    ngx_mdm_plist_err_t  err;

    p = ngx_mdm_plist_parse((const u_char *) s, strlen(s), 0, &err);
    *rc = p ? NGX_MDM_PLIST_OK : err.rc;

    return p;
}


/* binary plist bytes of p by libplist's writer */

static u_char *
to_bin(plist_t p, size_t *len)
{
    char      *bin;
    uint32_t   n;

    bin = NULL;      /* libplist 2.2 does nothing if *bin is set */
    n = 0;
    plist_to_bin(p, &bin, &n);
    *len = n;

    return (u_char *) bin;
}


static int
is_invalid_placeholder(const char *name)
{
    /* MANIFEST: real-anonymized (invalid placeholders), not base64 */

    return strcmp(name, "commandment_TokenUpdate_iOS-11.3.1.xml") == 0
           || strcmp(name, "commandment_CertificateList_iOS-11.3.1.xml") == 0;
}


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
test_vectors(const char *sub)
{
    int                   same, bad, bin_ok, json_ok;
    char                  path[1024], **names;
    json_t               *j;
    size_t                n, i, len, blen, k;
    u_char               *buf, *bin;
    plist_t               p, q, r;
    ngx_mdm_plist_err_t   err;

    names = list_dir(sub, &n);
    ok(n > 0, "%s: vectors found in %s/%s", sub, vectors, sub);

    for (i = 0; i < n; i++) {
        if (strstr(names[i], ".txt")) {
            continue;       /* expected-value sidecars */
        }

        snprintf(path, sizeof(path), "%s/%s", sub, names[i]);
        buf = vector(path, &len);

        if (!ok(buf != NULL, "%s: readable", path)) {
            continue;
        }

        p = ngx_mdm_plist_parse(buf, len, 0, &err);

        if (is_invalid_placeholder(names[i])) {
            ok(p == NULL && err.rc == NGX_MDM_PLIST_EFORMAT
               && strstr(err.text, "base64"),
               "%s: invalid base64 placeholder refused (%s)", path,
               err.text);
            plist_free(p);
            free(buf);
            continue;
        }

        if (!ok(p != NULL, "%s: parses %s", path, p ? "" : err.text)) {
            free(buf);
            continue;
        }

        /* libplist's own reader agrees on every valid vector */

        q = NULL;
        plist_from_xml((const char *) buf, len, &q);
        ok(same_plist(p, q), "%s: same tree as libplist's reader", path);
        plist_free(q);

        /* the binary form of the same plist gives the same tree */

        bin = to_bin(p, &blen);
        r = bin ? ngx_mdm_plist_parse(bin, blen, 0, &err) : NULL;
        bin_ok = same_plist(p, r);
        ok(bin_ok, "%s: binary form parses to the same tree", path);
        plist_free(r);

        /* plist -> JSON -> plist */

        j = ngx_mdm_plist_to_json(p, &err);
        r = j ? ngx_mdm_plist_from_json(j, &err) : NULL;
        json_ok = same_plist(p, r);
        ok(json_ok, "%s: JSON round trip", path);
        plist_free(r);
        json_decref(j);

        /* every truncation fails unless only whitespace was cut */

        bad = 0;

        for (k = 0; k < len; k++) {
            q = ngx_mdm_plist_parse(buf, k, 0, &err);
            same = (q != NULL);
            plist_free(q);

            if (same != only_space(buf + k, len - k)) {
                bad++;
            }
        }

        ok(bad == 0, "%s: all %zu truncations handled", path, len);

        bad = 0;

        for (k = 0; bin && k < blen; k++) {
            q = ngx_mdm_plist_parse(bin, k, 0, &err);
            bad += (q != NULL);
            plist_free(q);
        }

        ok(bin && bad == 0, "%s: all %zu binary truncations refused", path,
           blen);

        free(bin);
        plist_free(p);
        free(buf);
    }

    free_names(names, n);
}


typedef struct {
    const char          *xml;
    ngx_mdm_plist_rc_e   rc;
    const char          *what;
} xml_case_t;


static const xml_case_t  xml_cases[] = {
    { "", NGX_MDM_PLIST_EFORMAT, "empty body" },
    { "hello", NGX_MDM_PLIST_EFORMAT, "no markup" },
    { "<plist><true/></plist>", NGX_MDM_PLIST_OK, "minimal" },
    { "\xef\xbb\xbf \n<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
      "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
      "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">"
      "<plist version=\"1.0\"><true/></plist>",
      NGX_MDM_PLIST_OK, "BOM, whitespace, declaration, DOCTYPE" },
    { "<plist><true/></plist>x", NGX_MDM_PLIST_EFORMAT, "trailing garbage" },
    { "<plist><true/></plist>\n<!-- c -->\n<?pi x?>\n", NGX_MDM_PLIST_OK,
      "trailing comment and PI" },
    { "<plist><true/></plist><plist><true/></plist>", NGX_MDM_PLIST_EFORMAT,
      "two documents" },
    { "<plist><dict><key>a</key><true/></dict>", NGX_MDM_PLIST_EFORMAT,
      "no </plist>" },
    { "<plist><true/><false/></plist>", NGX_MDM_PLIST_EFORMAT,
      "two values in <plist>" },
    { "<plist/>", NGX_MDM_PLIST_EFORMAT, "empty <plist/>" },
    { "<plist></plist>", NGX_MDM_PLIST_EFORMAT, "no value" },
    { "<dict></dict>", NGX_MDM_PLIST_EFORMAT, "root is not <plist>" },
    { "<plist><integer>abc</integer></plist>", NGX_MDM_PLIST_EFORMAT,
      "<integer>abc</integer>" },
    { "<plist><integer></integer></plist>", NGX_MDM_PLIST_EFORMAT,
      "empty <integer>" },
    { "<plist><integer>0x10</integer></plist>", NGX_MDM_PLIST_EFORMAT,
      "hex <integer>" },
    { "<plist><integer> -12 </integer></plist>", NGX_MDM_PLIST_OK,
      "<integer> with whitespace" },
    { "<plist><integer>18446744073709551616</integer></plist>",
      NGX_MDM_PLIST_EFORMAT, "<integer> 2^64" },
    { "<plist><integer>-9223372036854775809</integer></plist>",
      NGX_MDM_PLIST_EFORMAT, "<integer> -2^63-1" },
    { "<plist><real>1.5e3</real></plist>", NGX_MDM_PLIST_OK, "<real>" },
    { "<plist><real>-.5</real></plist>", NGX_MDM_PLIST_OK, "<real> -.5" },
    { "<plist><real>nan</real></plist>", NGX_MDM_PLIST_OK, "<real> nan" },
    { "<plist><real>+infinity</real></plist>", NGX_MDM_PLIST_OK,
      "<real> +infinity" },
    { "<plist><real>0x1p3</real></plist>", NGX_MDM_PLIST_EFORMAT,
      "hex <real>" },
    { "<plist><real>1e</real></plist>", NGX_MDM_PLIST_EFORMAT,
      "<real> 1e" },
    { "<plist><real>.</real></plist>", NGX_MDM_PLIST_EFORMAT, "<real> ." },
    { "<plist><dict><key>a</key><key>b</key></dict></plist>",
      NGX_MDM_PLIST_EFORMAT, "<key> as a value" },
    { "<plist><dict><key>a</key></dict></plist>", NGX_MDM_PLIST_EFORMAT,
      "<key> without a value" },
    { "<plist><dict><true/></dict></plist>", NGX_MDM_PLIST_EFORMAT,
      "<dict> value without a key" },
    { "<plist><dict><key>a</key><true/><key>a</key><false/></dict></plist>",
      NGX_MDM_PLIST_EFORMAT, "duplicate key" },
    { "<plist><key>a</key></plist>", NGX_MDM_PLIST_EFORMAT,
      "<key> outside a dict" },
    { "<plist><foo/></plist>", NGX_MDM_PLIST_EFORMAT, "unknown element" },
    { "<plist><dict></array></plist>", NGX_MDM_PLIST_EFORMAT,
      "mismatched end tag" },
    { "<plist><string a=\"b\">x</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "attribute on a value" },
    { "<plist><string>a<b/></string></plist>", NGX_MDM_PLIST_EFORMAT,
      "element inside <string>" },
    { "<!DOCTYPE plist [<!ENTITY a \"b\">]><plist><true/></plist>",
      NGX_MDM_PLIST_EFORMAT, "DOCTYPE internal subset" },
    { "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><plist><true/></plist>",
      NGX_MDM_PLIST_EFORMAT, "encoding other than UTF-8" },
    { "<plist><string>\xff</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "invalid UTF-8" },
    { "<plist><string>\xc0\xaf</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "overlong UTF-8" },
    { "<plist><string>\xed\xa0\x80</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "UTF-8 surrogate" },
    { "<plist><string>\x01</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "control character" },
    { "<plist><string>&#0;</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "&#0;" },
    { "<plist><string>&#x110000;</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "character reference past U+10FFFF" },
    { "<plist><string>&#99999999999999999999;</string></plist>",
      NGX_MDM_PLIST_EFORMAT, "huge character reference" },
    { "<plist><string>&foo;</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "unknown entity" },
    { "<plist><string>&amp</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "unterminated entity" },
    { "<plist><string>x</plist>", NGX_MDM_PLIST_EFORMAT,
      "<string> closed by </plist>" },
    { "<plist><!-- x <plist><true/></plist>", NGX_MDM_PLIST_EFORMAT,
      "unterminated comment" },
    { "<plist><string><![CDATA[x</string></plist>", NGX_MDM_PLIST_EFORMAT,
      "unterminated CDATA" },
    { "<plist><true>x</true></plist>", NGX_MDM_PLIST_EFORMAT,
      "text in <true>" },
    { "<plist><true></true></plist>", NGX_MDM_PLIST_OK, "<true></true>" },
    { "<plist><data>Base64=</data></plist>", NGX_MDM_PLIST_EFORMAT,
      "incomplete base64 padding" },
    { "<plist><data>A</data></plist>", NGX_MDM_PLIST_EFORMAT,
      "base64 of one character" },
    { "<plist><data>QQ==QQ==</data></plist>", NGX_MDM_PLIST_EFORMAT,
      "base64 data after padding" },
    { "<plist><data>QQ</data></plist>", NGX_MDM_PLIST_OK,
      "unpadded base64" },
    { "<plist><date>2020-02-30T00:00:00Z</date></plist>",
      NGX_MDM_PLIST_EFORMAT, "February 30" },
    { "<plist><date>2020-02-29T23:59:59Z</date></plist>", NGX_MDM_PLIST_OK,
      "leap day" },
    { "<plist><date>2020-01-01T00:00:00.5Z</date></plist>",
      NGX_MDM_PLIST_EFORMAT, "fractional <date>" },
    { "<plist><date>2070-01-01T00:00:00Z</date></plist>",
      NGX_MDM_PLIST_EFORMAT, "<date> past libplist's range" },
    { "<plist><date>1932-12-13T20:45:52Z</date></plist>", NGX_MDM_PLIST_OK,
      "earliest <date>" },
    { "<plist><date>2069-01-19T03:14:07Z</date></plist>", NGX_MDM_PLIST_OK,
      "latest <date>" },
    { "bplist00", NGX_MDM_PLIST_EFORMAT, "bare bplist header" },
    { NULL, 0, NULL }
};


static void
test_xml_strict(void)
{
    plist_t              p;
    ngx_mdm_plist_rc_e   rc;
    const xml_case_t    *c;

    for (c = xml_cases; c->xml; c++) {
        p = parse(c->xml, &rc);
        ok(rc == c->rc, "XML %s: %s", c->what, ngx_mdm_plist_strerror(rc));
        plist_free(p);
    }
}


static void
test_xml_text(void)
{
    plist_t              p, d;
    ngx_mdm_plist_rc_e   rc;
    ngx_mdm_plist_str_t  s;

    p = parse("<plist><dict>"
              "<key>ent</key><string>&lt;&gt;&amp;&quot;&apos;&#65;&#x1F600;"
              "</string>"
              "<key>cdata</key><string><![CDATA[a<b&c]]></string>"
              "<key>comment</key><string>a<!-- x -->b</string>"
              "<key>crlf</key><string>a\r\nb\rc&#13;</string>"
              "<key>empty</key><string/>"
              "<key></key><string>empty key</string>"
              "<key>a&amp;b</key><data>  QUJD\n RA==  </data>"
              "<key>pad</key><data>AAAA=</data>"
              "</dict></plist>", &rc);

    ok(p != NULL, "XML text forms parse");

    ok(ngx_mdm_plist_get_string(p, "ent", &s) == NGX_MDM_PLIST_OK
       && s.len == 10 && memcmp(s.data, "<>&\"'A\xf0\x9f\x98\x80", 10) == 0,
       "entities and character references");
    ok(ngx_mdm_plist_get_string(p, "cdata", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "a<b&c") == 0, "CDATA section");
    ok(ngx_mdm_plist_get_string(p, "comment", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "ab") == 0, "comment inside text");
    ok(ngx_mdm_plist_get_string(p, "crlf", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "a\nb\nc\r") == 0,
       "CR LF and CR become LF, &#13; stays CR");
    ok(ngx_mdm_plist_get_string(p, "empty", &s) == NGX_MDM_PLIST_OK
       && s.len == 0 && s.data != NULL, "<string/> is present and empty");
    ok(ngx_mdm_plist_get_string(p, "", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "empty key") == 0, "empty key");
    ok(ngx_mdm_plist_get_data(p, "a&b", &s) == NGX_MDM_PLIST_OK
       && s.len == 4 && memcmp(s.data, "ABCD", 4) == 0,
       "base64 with whitespace, key with an entity");
    ok(ngx_mdm_plist_get_data(p, "pad", &s) == NGX_MDM_PLIST_OK
       && s.len == 3 && memcmp(s.data, "\0\0\0", 3) == 0,
       "\"AAAA=\" is 3 bytes (extra padding tolerated)");

    plist_free(p);

    /* nesting limit */

    {
        char    buf[2048];
        size_t  n, i;

        for (d = NULL, n = 0; n < 2; n++) {
            unsigned  depth = NGX_MDM_PLIST_MAX_DEPTH + (unsigned) n;
            size_t    o = 0;

            o += sprintf(buf + o, "<plist>");
            for (i = 0; i < depth; i++) {
                o += sprintf(buf + o, "<array>");
            }
            for (i = 0; i < depth; i++) {
                o += sprintf(buf + o, "</array>");
            }
            sprintf(buf + o, "</plist>");

            d = parse(buf, &rc);
            ok(n == 0 ? rc == NGX_MDM_PLIST_OK : rc == NGX_MDM_PLIST_ETOOBIG,
               "XML nesting %u: %s", depth, ngx_mdm_plist_strerror(rc));
            plist_free(d);
        }
    }

    /* keys per dict */

    {
        char    *big;
        size_t   o, i, n;
        json_t  *j;

        big = malloc(64 * (NGX_MDM_PLIST_MAX_KEYS + 2));

        for (n = NGX_MDM_PLIST_MAX_KEYS; n <= NGX_MDM_PLIST_MAX_KEYS + 1;
             n++)
        {
            o = sprintf(big, "<plist><dict>");
            for (i = 0; i < n; i++) {
                o += sprintf(big + o, "<key>%zu</key><true/>", i);
            }
            sprintf(big + o, "</dict></plist>");

            d = parse(big, &rc);
            ok(n == NGX_MDM_PLIST_MAX_KEYS ? rc == NGX_MDM_PLIST_OK
                                           : rc == NGX_MDM_PLIST_ETOOBIG,
               "XML dict of %zu keys: %s", n, ngx_mdm_plist_strerror(rc));

            if (d) {
                ngx_mdm_plist_err_t  e;
                json_t              *k;
                plist_t              q;

                /* one key more through JSON */

                k = ngx_mdm_plist_to_json(d, &e);
                json_object_set_new(k, "extra", json_true());
                q = ngx_mdm_plist_from_json(k, &e);
                ok(q == NULL && e.rc == NGX_MDM_PLIST_ETOOBIG,
                   "JSON object of %zu members: %s", n + 1, e.text);
                json_decref(k);
            }

            plist_free(d);
        }

        /* a binary dict claiming more keys than allowed */

        o = 0;
        memcpy(big, "bplist00", 8);
        o = 8;
        big[o++] = (char) 0xdf;             /* dict, count follows */
        big[o++] = 0x11;                    /* 2-byte integer */
        big[o++] = (char) ((NGX_MDM_PLIST_MAX_KEYS + 1) >> 8);
        big[o++] = (char) ((NGX_MDM_PLIST_MAX_KEYS + 1) & 0xff);

        for (i = 0; i < 2 * (NGX_MDM_PLIST_MAX_KEYS + 1); i++) {
            big[o++] = 1;                   /* references to object 1 */
        }

        {
            size_t  obj1 = o, table;

            big[o++] = 0x51;                /* "k" */
            big[o++] = 'k';
            table = o;
            big[o++] = 0;                   /* offsets, 4 bytes each */
            big[o++] = 0;
            big[o++] = 0;
            big[o++] = 8;
            big[o++] = (char) (obj1 >> 24);
            big[o++] = (char) (obj1 >> 16);
            big[o++] = (char) (obj1 >> 8);
            big[o++] = (char) obj1;
            memset(big + o, 0, 32);
            big[o + 6] = 4;
            big[o + 7] = 1;
            big[o + 15] = 2;
            big[o + 28] = (char) (table >> 24);
            big[o + 29] = (char) (table >> 16);
            big[o + 30] = (char) (table >> 8);
            big[o + 31] = (char) table;
            o += 32;
        }

        {
            ngx_mdm_plist_err_t  e;

            d = ngx_mdm_plist_parse((u_char *) big, o, 0, &e);
            ok(d == NULL && e.rc == NGX_MDM_PLIST_ETOOBIG,
               "binary dict of %d keys: %s", NGX_MDM_PLIST_MAX_KEYS + 1,
               e.text);
        }

        free(big);
        (void) j;
    }

    /* size limit */

    {
        ngx_mdm_plist_err_t  err;
        const char          *x = "<plist><string>0123456789</string></plist>";

        p = ngx_mdm_plist_parse((const u_char *) x, strlen(x), 20, &err);
        ok(p == NULL && err.rc == NGX_MDM_PLIST_ETOOBIG,
           "size limit: %s", err.text);
        p = ngx_mdm_plist_parse((const u_char *) x, strlen(x), strlen(x),
                                &err);
        ok(p != NULL, "size limit is inclusive");
        plist_free(p);
    }
}


static void
test_integers(void)
{
    int                  is_unsigned;
    json_t              *j, *v;
    plist_t              p;
    int64_t              i64;
    uint64_t             bits;
    ngx_mdm_plist_rc_e   rc;
    ngx_mdm_plist_err_t  err;

    p = parse("<plist><dict>"
              "<key>min</key><integer>-9223372036854775808</integer>"
              "<key>max</key><integer>9223372036854775807</integer>"
              "<key>umax</key><integer>18446744073709551615</integer>"
              "<key>neg</key><integer>-1</integer>"
              "<key>big</key><integer>23048830844</integer>"
              "</dict></plist>", &rc);

    ok(p != NULL, "integer edge values parse");

    ok(ngx_mdm_plist_get_integer(p, "min", &i64) == NGX_MDM_PLIST_OK
       && i64 == INT64_MIN, "INT64_MIN");
    ok(ngx_mdm_plist_get_integer(p, "max", &i64) == NGX_MDM_PLIST_OK
       && i64 == INT64_MAX, "INT64_MAX");
    ok(ngx_mdm_plist_get_integer(p, "neg", &i64) == NGX_MDM_PLIST_OK
       && i64 == -1, "-1");
    ok(ngx_mdm_plist_get_integer(p, "umax", &i64) == NGX_MDM_PLIST_ERANGE,
       "2^64-1 does not fit int64");
    ok(ngx_mdm_plist_integer(plist_dict_get_item(p, "umax"), &bits,
                             &is_unsigned) == NGX_MDM_PLIST_OK
       && bits == UINT64_MAX && is_unsigned, "2^64-1 reads unsigned");
    ok(ngx_mdm_plist_integer(plist_dict_get_item(p, "neg"), &bits,
                             &is_unsigned) == NGX_MDM_PLIST_OK
       && bits == UINT64_MAX && !is_unsigned, "-1 reads signed");

    j = ngx_mdm_plist_to_json(p, &err);

    ok(j && json_integer_value(json_object_get(j, "min")) == INT64_MIN
       && json_integer_value(json_object_get(j, "max")) == INT64_MAX
       && json_integer_value(json_object_get(j, "neg")) == -1
       && json_integer_value(json_object_get(j, "big")) == 23048830844LL,
       "signed 64-bit integers exact in JSON");

    v = json_object_get(json_object_get(j, "umax"), "$integer");
    ok(json_is_string(v)
       && strcmp(json_string_value(v), "18446744073709551615") == 0,
       "2^64-1 as {\"$integer\": \"18446744073709551615\"}");

    plist_free(p);

    p = ngx_mdm_plist_from_json(j, &err);
    ok(p && ngx_mdm_plist_integer(plist_dict_get_item(p, "umax"), &bits,
                                  &is_unsigned) == NGX_MDM_PLIST_OK
       && bits == UINT64_MAX && is_unsigned
       && ngx_mdm_plist_get_integer(p, "min", &i64) == NGX_MDM_PLIST_OK
       && i64 == INT64_MIN,
       "integers survive JSON -> plist");

    {
        char  *x = xml_of(p);

        ok(x && strstr(x, "<integer>18446744073709551615</integer>")
           && strstr(x, "<integer>-9223372036854775808</integer>")
           && strstr(x, "<integer>-1</integer>"),
           "XML output keeps signedness");
        ngx_mdm_plist_xml_free(x);
    }

    plist_free(p);
    json_decref(j);
}


static void
test_getters(void)
{
    int                  b;
    double               d;
    plist_t              p, n;
    int64_t              i;
    ngx_mdm_plist_rc_e   rc;
    ngx_mdm_plist_str_t  s;

    p = parse("<plist><dict>"
              "<key>s</key><string>str</string>"
              "<key>b</key><true/>"
              "<key>i</key><integer>42</integer>"
              "<key>r</key><real>0.25</real>"
              "<key>d</key><data>AQID</data>"
              "<key>e</key><data/>"
              "<key>dict</key><dict><key>x</key><string>y</string></dict>"
              "<key>arr</key><array><true/></array>"
              "</dict></plist>", &rc);

    ok(ngx_mdm_plist_get_string(p, "s", &s) == NGX_MDM_PLIST_OK
       && s.len == 3 && strcmp((char *) s.data, "str") == 0, "get string");
    ok(ngx_mdm_plist_get_bool(p, "b", &b) == NGX_MDM_PLIST_OK && b == 1,
       "get bool");
    ok(ngx_mdm_plist_get_integer(p, "i", &i) == NGX_MDM_PLIST_OK && i == 42,
       "get integer");
    ok(ngx_mdm_plist_get_real(p, "r", &d) == NGX_MDM_PLIST_OK && d == 0.25,
       "get real");
    ok(ngx_mdm_plist_get_data(p, "d", &s) == NGX_MDM_PLIST_OK && s.len == 3
       && memcmp(s.data, "\1\2\3", 3) == 0, "get data");
    ok(ngx_mdm_plist_get_data(p, "e", &s) == NGX_MDM_PLIST_OK && s.len == 0
       && s.data != NULL, "empty data is present");
    ok(ngx_mdm_plist_get_dict(p, "dict", &n) == NGX_MDM_PLIST_OK
       && ngx_mdm_plist_get_string(n, "x", &s) == NGX_MDM_PLIST_OK,
       "get dict");
    ok(ngx_mdm_plist_get_array(p, "arr", &n) == NGX_MDM_PLIST_OK
       && plist_array_get_size(n) == 1, "get array");

    ok(ngx_mdm_plist_get_string(p, "nope", &s) == NGX_MDM_PLIST_ABSENT
       && ngx_mdm_plist_get_bool(p, "nope", &b) == NGX_MDM_PLIST_ABSENT
       && ngx_mdm_plist_get_integer(p, "nope", &i) == NGX_MDM_PLIST_ABSENT
       && ngx_mdm_plist_get_data(p, "nope", &s) == NGX_MDM_PLIST_ABSENT
       && ngx_mdm_plist_get_dict(p, "nope", &n) == NGX_MDM_PLIST_ABSENT
       && ngx_mdm_plist_get_array(p, "nope", &n) == NGX_MDM_PLIST_ABSENT,
       "absent keys are ABSENT");

    ok(ngx_mdm_plist_get_string(p, "i", &s) == NGX_MDM_PLIST_WRONG_TYPE
       && ngx_mdm_plist_get_bool(p, "s", &b) == NGX_MDM_PLIST_WRONG_TYPE
       && ngx_mdm_plist_get_integer(p, "r", &i) == NGX_MDM_PLIST_WRONG_TYPE
       && ngx_mdm_plist_get_real(p, "i", &d) == NGX_MDM_PLIST_WRONG_TYPE
       && ngx_mdm_plist_get_data(p, "s", &s) == NGX_MDM_PLIST_WRONG_TYPE
       && ngx_mdm_plist_get_dict(p, "arr", &n) == NGX_MDM_PLIST_WRONG_TYPE
       && ngx_mdm_plist_get_array(p, "dict", &n) == NGX_MDM_PLIST_WRONG_TYPE,
       "present keys of another type are WRONG_TYPE");

    ok(ngx_mdm_plist_get_string(NULL, "s", &s) == NGX_MDM_PLIST_ABSENT
       && ngx_mdm_plist_get_string(plist_dict_get_item(p, "arr"), "s", &s)
          == NGX_MDM_PLIST_ABSENT,
       "NULL or non-dict container is ABSENT");

    plist_free(p);
}


static json_t *
jparse(const char *s)
{
    json_error_t  e;

    return json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
}


static void
test_json(void)
{
    char                 *x;
    json_t               *j, *k, *v;
    u_char               *buf;
    size_t                len;
    plist_t               p, q, n;
    ngx_mdm_plist_str_t   s;
    ngx_mdm_plist_err_t   err;

    j = jparse("{\"RequestType\": \"DeviceInformation\","
               " \"Queries\": [\"UDID\", \"SerialNumber\"],"
               " \"n\": 3, \"r\": 0.1, \"t\": true, \"f\": false,"
               " \"d\": {\"$data\": \"AAEC/w==\"},"
               " \"when\": {\"$date\": \"2024-05-02T19:33:31.25+02:00\"},"
               " \"old\": {\"$date\": \"2000-12-31T23:59:59.5Z\"},"
               " \"u\": \"\\u201cOSUpdateStatus\\u201d \\ud83d\\ude00\","
               " \"nan\": {\"$real\": \"nan\"},"
               " \"inf\": {\"$real\": \"-infinity\"},"
               " \"lit\": {\"$dict\": {\"$data\": \"not base64!\"}},"
               " \"nested\": {\"a\": [[{\"b\": []}], {}]}}");

    p = ngx_mdm_plist_from_json(j, &err);
    ok(p != NULL, "JSON -> plist %s", p ? "" : err.text);

    ok(ngx_mdm_plist_get_data(p, "d", &s) == NGX_MDM_PLIST_OK && s.len == 4
       && memcmp(s.data, "\0\1\2\377", 4) == 0, "{\"$data\"} is <data>");
    ok(ngx_mdm_plist_get_string(p, "u", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "\xe2\x80\x9cOSUpdateStatus\xe2\x80\x9d "
                                  "\xf0\x9f\x98\x80") == 0,
       "unicode string");
    ok(ngx_mdm_plist_get_dict(p, "lit", &n) == NGX_MDM_PLIST_OK
       && ngx_mdm_plist_get_string(n, "$data", &s) == NGX_MDM_PLIST_OK,
       "{\"$dict\"} makes a literal dict");

    x = xml_of(p);
    ok(x && strstr(x, "<date>2024-05-02T17:33:31Z</date>")
       && strstr(x, "<real>nan</real>") && strstr(x, "<true/>")
       && strstr(x, "<integer>3</integer>"),
       "XML of the converted plist");

    q = x ? ngx_mdm_plist_parse((u_char *) x, strlen(x), 0, &err) : NULL;
    ok(q && same_plist(p, q), "our reader takes libplist's XML output");
    plist_free(q);
    ngx_mdm_plist_xml_free(x);

    k = ngx_mdm_plist_to_json(p, &err);
    ok(k != NULL, "plist -> JSON");

    v = json_object_get(json_object_get(k, "when"), "$date");
    ok(v && strcmp(json_string_value(v), "2024-05-02T17:33:31.250000Z") == 0,
       "$date in UTC with microseconds: %s", json_string_value(v));
    v = json_object_get(json_object_get(k, "old"), "$date");
    ok(v && strcmp(json_string_value(v), "2000-12-31T23:59:59.500000Z") == 0,
       "$date before 2001 with a fraction: %s", json_string_value(v));
    v = json_object_get(json_object_get(k, "d"), "$data");
    ok(v && strcmp(json_string_value(v), "AAEC/w==") == 0, "$data base64");
    ok(json_equal(json_object_get(k, "u"), json_object_get(j, "u"))
       && json_equal(json_object_get(k, "Queries"),
                     json_object_get(j, "Queries"))
       && json_equal(json_object_get(k, "nested"),
                     json_object_get(j, "nested"))
       && json_equal(json_object_get(k, "lit"), json_object_get(j, "lit"))
       && json_equal(json_object_get(k, "nan"), json_object_get(j, "nan"))
       && json_real_value(json_object_get(k, "r")) == 0.1,
       "JSON -> plist -> JSON round trip");

    q = ngx_mdm_plist_from_json(k, &err);
    ok(same_plist(p, q), "and back to the same plist");

    plist_free(q);
    plist_free(p);
    json_decref(k);
    json_decref(j);

    /* the curly quotes of a real error report survive every conversion */

    buf = vector("commands/commandment_Errors_error_invalid_request_type.plist",
                 &len);
    p = buf ? ngx_mdm_plist_parse(buf, len, 0, &err) : NULL;
    k = ngx_mdm_plist_to_json(p, &err);
    v = json_object_get(json_array_get(json_object_get(k, "ErrorChain"), 0),
                        "LocalizedDescription");
    ok(v && strcmp(json_string_value(v), "\xe2\x80\x9cOSUpdateStatus\xe2\x80"
                   "\x9d is not a valid request type.") == 0,
       "curly quotes of commandment_Errors_error_invalid_request_type.plist "
       "in JSON");

    x = k ? json_dumps(k, 0) : NULL;
    j = x ? jparse(x) : NULL;
    q = j ? ngx_mdm_plist_from_json(j, &err) : NULL;
    ok(q && same_plist(p, q), "... and after JSON text -> plist");
    free(x);

    x = xml_of(q);
    ok(x && strstr(x, "\xe2\x80\x9cOSUpdateStatus\xe2\x80\x9d"),
       "... and in XML output");
    ngx_mdm_plist_xml_free(x);

    plist_free(p);
    plist_free(q);
    json_decref(j);
    json_decref(k);
    free(buf);

    /* data of a real certificate list */

    buf = vector("commands/nanocmd_certprof_certlist.plist", &len);
    p = buf ? ngx_mdm_plist_parse(buf, len, 0, &err) : NULL;
    n = plist_array_get_item(plist_dict_get_item(p, "CertificateList"), 0);
    k = ngx_mdm_plist_to_json(n, &err);
    v = json_object_get(json_object_get(k, "Data"), "$data");
    q = ngx_mdm_plist_from_json(k, &err);
    ok(v && ngx_mdm_plist_get_data(q, "Data", &s) == NGX_MDM_PLIST_OK
       && s.len > 700 && s.data[0] == 0x30 && s.data[1] == 0x82
       && same_plist(n, q), "certificate DER through $data");
    plist_free(q);
    plist_free(p);
    json_decref(k);
    free(buf);

    /* every microsecond survives, before and after 2001 */

    {
        int       bad, y;
        char      in[64];
        unsigned  us;

        bad = 0;

        for (y = 0; y < 2; y++) {
            for (us = 0; us < 1000000; us += 997) {
                snprintf(in, sizeof(in), "{\"$date\": \"%s.%06uZ\"}",
                         y ? "2023-03-04T05:06:07" : "1999-12-31T23:59:59", us);
                j = jparse(in);
                p = ngx_mdm_plist_from_json(j, &err);
                k = ngx_mdm_plist_to_json(p, &err);
                v = json_object_get(k, "$date");

                snprintf(in, sizeof(in), us ? "%s.%06uZ" : "%sZ",
                         y ? "2023-03-04T05:06:07" : "1999-12-31T23:59:59", us);

                bad += (v == NULL || strcmp(json_string_value(v), in) != 0);

                plist_free(p);
                json_decref(j);
                json_decref(k);
            }
        }

        ok(bad == 0, "microseconds of $date exact through libplist "
           "(%d wrong)", bad);
    }

    /* CR LF */

    j = jparse("\"a\\r\\nb\\rc\\n\"");
    p = ngx_mdm_plist_from_json(j, &err);
    x = xml_of(p);
    ok(x && strstr(x, "<string>a\nb\nc\n</string>"),
       "CR LF and CR become LF in JSON strings");
    ngx_mdm_plist_xml_free(x);
    plist_free(p);
    json_decref(j);

    /* a dict that looks like a tag is written as {"$dict": ...} */

    p = plist_new_dict();
    plist_dict_set_item(p, "$date", plist_new_string("not a date"));
    k = ngx_mdm_plist_to_json(p, &err);
    q = ngx_mdm_plist_from_json(k, &err);
    ok(json_object_get(k, "$dict") && same_plist(p, q),
       "tag-like dict escaped with $dict");
    plist_free(q);
    json_decref(k);

    plist_dict_set_item(p, "other", plist_new_bool(1));
    k = ngx_mdm_plist_to_json(p, &err);
    q = ngx_mdm_plist_from_json(k, &err);
    ok(json_object_get(k, "$dict") && same_plist(p, q),
       "dict with a tag-like key among others escaped with $dict");
    plist_free(p);
    plist_free(q);
    json_decref(k);
}


typedef struct {
    const char          *json;
    ngx_mdm_plist_rc_e   rc;
    const char          *what;
} json_case_t;


static const json_case_t  json_cases[] = {
    { "null", NGX_MDM_PLIST_EINVAL, "null" },
    { "{\"a\": [1, null]}", NGX_MDM_PLIST_EINVAL, "nested null" },
    { "{\"$data\": \"@@@@\"}", NGX_MDM_PLIST_EINVAL, "bad base64" },
    { "{\"$data\": \"QQ=\"}", NGX_MDM_PLIST_EINVAL, "bad base64 padding" },
    { "{\"$data\": 5}", NGX_MDM_PLIST_EINVAL, "$data of a number" },
    { "{\"$data\": \"QQ==\", \"x\": 1}", NGX_MDM_PLIST_EINVAL,
      "tag beside another member" },
    { "{\"$date\": \"yesterday\"}", NGX_MDM_PLIST_EINVAL, "bad $date" },
    { "{\"$date\": \"2024-13-01T00:00:00Z\"}", NGX_MDM_PLIST_EINVAL,
      "$date month 13" },
    { "{\"$date\": \"2024-01-01T00:00:00\"}", NGX_MDM_PLIST_EINVAL,
      "$date without a zone" },
    { "{\"$date\": \"2099-01-01T00:00:00Z\"}", NGX_MDM_PLIST_EINVAL,
      "$date past 2069" },
    { "{\"$integer\": \"1e3\"}", NGX_MDM_PLIST_EINVAL, "$integer 1e3" },
    { "{\"$integer\": \"18446744073709551616\"}", NGX_MDM_PLIST_EINVAL,
      "$integer 2^64" },
    { "{\"$real\": \"infinite\"}", NGX_MDM_PLIST_EINVAL, "$real word" },
    { "{\"$dict\": []}", NGX_MDM_PLIST_EINVAL, "$dict of an array" },
    { "\"a\\u0001b\"", NGX_MDM_PLIST_EINVAL, "control character" },
    { "\"a\\u0000b\"", NGX_MDM_PLIST_EINVAL, "NUL in a string" },
    { "\"\\uffff\"", NGX_MDM_PLIST_EINVAL, "U+FFFF" },
    { "{\"a\\u0001b\": 1}", NGX_MDM_PLIST_EINVAL,
      "control character in a key" },
    { "{\"a\\tb\\nc\": 1}", NGX_MDM_PLIST_OK, "TAB and LF in a key" },
    { "{\"a\\r\": 1, \"a\\n\": 2}", NGX_MDM_PLIST_EINVAL,
      "keys equal once CR is LF" },
    { "{\"$integer\": \"-9223372036854775808\"}", NGX_MDM_PLIST_OK,
      "$integer -2^63" },
    { "{\"$real\": 1.5}", NGX_MDM_PLIST_OK, "$real of a number" },
    { "{\"$foo\": 1}", NGX_MDM_PLIST_OK, "unknown $ key is a dict key" },
    { "[]", NGX_MDM_PLIST_OK, "empty array" },
    { NULL, 0, NULL }
};


static void
test_json_errors(void)
{
    char                 buf[1024];
    json_t              *j;
    size_t               i, o;
    plist_t              p;
    ngx_mdm_plist_err_t  err;
    const json_case_t   *c;

    for (c = json_cases; c->json; c++) {
        j = jparse(c->json);
        p = j ? ngx_mdm_plist_from_json(j, &err) : NULL;
        ok(j && (p ? NGX_MDM_PLIST_OK : err.rc) == c->rc, "JSON %s: %s",
           c->what, p ? "ok" : err.text);
        plist_free(p);
        json_decref(j);
    }

    j = jparse("{\"a\\nz\": {\"$x\": 1, \"b\": null}}");
    p = ngx_mdm_plist_from_json(j, &err);
    ok(p == NULL && strcmp(err.text, "a?z.b: null has no plist form") == 0,
       "error path is one line: %s", err.text);
    json_decref(j);

    j = jparse("{\"a\": {\"b\": [1, {\"$data\": \"!\"}]}}");
    p = ngx_mdm_plist_from_json(j, &err);
    ok(p == NULL && strncmp(err.text, "a.b[1].$data:", 13) == 0,
       "error names the path: %s", err.text);
    json_decref(j);

    for (o = 0; o < 2; o++) {
        size_t  depth = NGX_MDM_PLIST_MAX_DEPTH + o, n = 0;

        for (i = 0; i < depth; i++) {
            buf[n++] = '[';
        }

        for (i = 0; i < depth; i++) {
            buf[n++] = ']';
        }

        buf[n] = '\0';
        j = jparse(buf);
        p = ngx_mdm_plist_from_json(j, &err);
        ok(o == 0 ? p != NULL : (p == NULL && err.rc == NGX_MDM_PLIST_ETOOBIG),
           "JSON nesting %zu", depth);
        plist_free(p);
        json_decref(j);
    }

    ok(ngx_mdm_plist_from_json(NULL, &err) == NULL
       && err.rc == NGX_MDM_PLIST_EINVAL, "NULL JSON");
}


static void
test_command(const char *vec, const char *uuid, const char *json)
{
    int                  same;
    char                *xml;
    json_t              *j;
    u_char              *buf;
    size_t               len, xlen;
    plist_t              want, got;
    ngx_mdm_plist_rc_e   rc;
    ngx_mdm_plist_err_t  err;

    buf = vector(vec, &len);
    want = buf ? ngx_mdm_plist_parse(buf, len, 0, &err) : NULL;

    j = jparse(json);
    xml = NULL;
    rc = ngx_mdm_plist_command_xml(j, uuid, &xml, &xlen, &err);
    got = (rc == NGX_MDM_PLIST_OK)
          ? ngx_mdm_plist_parse((u_char *) xml, xlen, 0, &err) : NULL;

    same = (want && got && same_plist(want, got));
    ok(same && xml[xlen] == '\0', "command XML equals %s", vec);

    ngx_mdm_plist_xml_free(xml);
    plist_free(want);
    plist_free(got);
    json_decref(j);
    free(buf);
}


static void
test_commands(void)
{
    char                 *xml;
    json_t               *j;
    size_t                len, i;
    plist_t               p, c;
    ngx_mdm_plist_rc_e    rc;
    ngx_mdm_plist_str_t   s;
    ngx_mdm_plist_err_t   err;

    static const struct {
        const char  *json;
        const char  *uuid;
        const char  *what;
    } bad[] = {
        { "{\"Queries\": []}", "u", "no RequestType" },
        { "{\"RequestType\": \"\"}", "u", "empty RequestType" },
        { "{\"RequestType\": 5}", "u", "RequestType not a string" },
        { "[\"RequestType\"]", "u", "not an object" },
        { "{\"RequestType\": \"X\"}", "", "empty CommandUUID" },
        { "{\"RequestType\": \"X\"}", "a\nb", "CommandUUID with LF" },
        { "{\"RequestType\": \"X\", \"y\": null}", "u", "null member" },
        { "{\"RequestType\": \"InstallProfile\", \"Payload\": \"**\"}", "u",
          "Payload not base64" },
        { NULL, NULL, NULL }
    };

    test_command("commands/micromdm_command_DeviceInformation.plist",
                 "7564fecc-f1b5-4d2d-af17-986fdd68a252",
                 "{\"Queries\": [\"foo\", \"bar\"],"
                 " \"RequestType\": \"DeviceInformation\"}");

    test_command("commands/micromdm_command_InstallProfile.plist",
                 "7e761ec5-9e20-42d1-9072-3d5a611e3ac5",
                 "{\"Payload\": \"Zm9vYmFyYmF6\","
                 " \"RequestType\": \"InstallProfile\"}");

    test_command("commands/micromdm_command_InstallProfile.plist",
                 "7e761ec5-9e20-42d1-9072-3d5a611e3ac5",
                 "{\"Payload\": {\"$data\": \"Zm9vYmFyYmF6\"},"
                 " \"RequestType\": \"InstallProfile\"}");

    test_command("commands/micromdm_command_Settings_hostname_devicename.plist",
                 "19a68ea7-eb45-4ced-a7e6-5aa0b0eb71bc",
                 "{\"RequestType\": \"Settings\", \"Settings\": ["
                 "{\"DeviceName\": \"foo\", \"Item\": \"DeviceName\"},"
                 "{\"HostName\": \"foo-bar\", \"Item\": \"HostName\"}]}");

    test_command("commands/nanocmd_engine_secinfo.gen.plist", "ABCUUID",
                 "{\"RequestType\": \"SecurityInfo\"}");

    /* schema <data> keys take plain base64 strings, others stay strings */

    j = jparse("{\"RequestType\": \"InstallEnterpriseApplication\","
               " \"ManifestURLPinningCerts\":"
               " [\"AQI=\", {\"$data\": \"Aw==\"}],"
               " \"ManifestURL\": \"https://x/\"}");
    rc = ngx_mdm_plist_command_xml(j, "U1", &xml, &len, &err);
    p = (rc == NGX_MDM_PLIST_OK)
        ? ngx_mdm_plist_parse((u_char *) xml, len, 0, &err) : NULL;
    c = NULL;
    (void) ngx_mdm_plist_get_dict(p, "Command", &c);
    ok(c && plist_get_node_type(plist_array_get_item(
                plist_dict_get_item(c, "ManifestURLPinningCerts"), 0))
            == PLIST_DATA
       && plist_get_node_type(plist_array_get_item(
                plist_dict_get_item(c, "ManifestURLPinningCerts"), 1))
            == PLIST_DATA
       && ngx_mdm_plist_get_string(c, "ManifestURL", &s) == NGX_MDM_PLIST_OK
       && ngx_mdm_plist_get_string(p, "CommandUUID", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "U1") == 0,
       "array of schema <data> in InstallEnterpriseApplication");
    plist_free(p);
    ngx_mdm_plist_xml_free(rc == NGX_MDM_PLIST_OK ? xml : NULL);
    json_decref(j);

    j = jparse("{\"RequestType\": \"DeviceLock\", \"Payload\": \"QUJD\"}");
    rc = ngx_mdm_plist_command_xml(j, "U2", &xml, &len, &err);
    p = (rc == NGX_MDM_PLIST_OK)
        ? ngx_mdm_plist_parse((u_char *) xml, len, 0, &err) : NULL;
    (void) ngx_mdm_plist_get_dict(p, "Command", &c);
    ok(p && ngx_mdm_plist_get_string(c, "Payload", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "QUJD") == 0,
       "Payload of another RequestType stays a string");
    plist_free(p);
    ngx_mdm_plist_xml_free(rc == NGX_MDM_PLIST_OK ? xml : NULL);
    json_decref(j);

    for (i = 0; bad[i].json; i++) {
        j = jparse(bad[i].json);
        xml = NULL;
        rc = ngx_mdm_plist_command_xml(j, bad[i].uuid, &xml, &len, &err);
        ok(rc == NGX_MDM_PLIST_EINVAL && xml == NULL, "command %s: %s",
           bad[i].what, err.text);
        json_decref(j);
    }
}


/*
 * A bplist of n objects: object i is an array of k references to object
 * i + 1 (to itself with cycle), the last one an empty array.
 */

static u_char *
bplist_chain(unsigned n, unsigned k, unsigned ref, int cycle, size_t *len)
{
    u_char    *b, *t;
    size_t     off, table, *offs, i, j;
    unsigned   s;

    b = calloc(1, 64 + (size_t) n * (2 + k * 4 + 4));
    offs = malloc(n * sizeof(size_t));
    memcpy(b, "bplist00", 8);
    off = 8;

    for (i = 0; i < n; i++) {
        offs[i] = off;

        if (i + 1 == n) {
            b[off++] = 0xa0;
            continue;
        }

        b[off++] = 0xa0 | k;

        for (j = 0; j < k; j++) {
            for (s = 0; s < ref; s++) {
                b[off++] = (u_char) ((cycle ? i : i + 1)
                                     >> (8 * (ref - 1 - s)));
            }
        }
    }

    table = off;

    for (i = 0; i < n; i++) {
        for (s = 0; s < 4; s++) {
            b[off++] = (u_char) (offs[i] >> (8 * (3 - s)));
        }
    }

    t = b + off;
    t[6] = 4;
    t[7] = (u_char) ref;

    for (s = 0; s < 8; s++) {
        t[15 - s] = (u_char) ((uint64_t) n >> (8 * s));
        t[31 - s] = (u_char) ((uint64_t) table >> (8 * s));
    }

    free(offs);
    *len = off + 32;

    return b;
}


static void
test_binary(void)
{
    json_t               *j;
    u_char               *b, *bin;
    size_t                len, blen;
    clock_t               t0;
    plist_t               p, q;
    ngx_mdm_plist_str_t   s;
    ngx_mdm_plist_err_t   err;

    b = bplist_chain(10, 1, 1, 0, &len);
    p = ngx_mdm_plist_parse(b, len, 0, &err);
    ok(p != NULL, "hand-made bplist of nested arrays %s", p ? "" : err.text);
    plist_free(p);
    free(b);

    /* 2^25 nodes from 168 bytes in libplist's own reader */

    t0 = clock();
    b = bplist_chain(26, 2, 1, 0, &len);
    p = ngx_mdm_plist_parse(b, len, 0, &err);
    ok(p == NULL && err.rc == NGX_MDM_PLIST_ETOOBIG
       && clock() - t0 < CLOCKS_PER_SEC,
       "shared-object bomb of %zu bytes refused at once: %s", len, err.text);
    free(b);

    b = bplist_chain(100000, 1, 4, 0, &len);
    p = ngx_mdm_plist_parse(b, len, 0, &err);
    ok(p == NULL && err.rc == NGX_MDM_PLIST_ETOOBIG,
       "100000 nested arrays refused: %s", err.text);
    free(b);

    b = bplist_chain(2, 1, 1, 1, &len);
    p = ngx_mdm_plist_parse(b, len, 0, &err);
    ok(p == NULL && err.rc == NGX_MDM_PLIST_ETOOBIG,
       "cyclic reference refused: %s", err.text);
    free(b);

    /* a byte between the offset table and the trailer */

    b = bplist_chain(3, 1, 1, 0, &len);
    b = realloc(b, len + 1);
    memmove(b + len - 31, b + len - 32, 32);
    b[len - 32] = 0;
    p = ngx_mdm_plist_parse(b, len + 1, 0, &err);
    ok(p == NULL && err.rc == NGX_MDM_PLIST_EFORMAT,
       "bytes after the offset table refused: %s", err.text);
    free(b);

    /* libplist writes these through its own binary writer */

    j = jparse("{\"u\": \"\\u201cx\\u201d \\ud83d\\ude00\", \"a\": \"ascii\","
               " \"big\": {\"$integer\": \"18446744073709551615\"},"
               " \"neg\": -5, \"r\": 2.5, \"d\": {\"$data\": \"AAEC\"},"
               " \"t\": {\"$date\": \"1999-01-01T00:00:00Z\"},"
               " \"e\": [], \"o\": {}, \"b\": false}");
    p = ngx_mdm_plist_from_json(j, &err);
    bin = to_bin(p, &blen);
    q = bin ? ngx_mdm_plist_parse(bin, blen, 0, &err) : NULL;
    ok(q && same_plist(p, q), "UTF-16, 128-bit integer, date, data from "
       "libplist's binary writer");
    ok(ngx_mdm_plist_get_string(q, "u", &s) == NGX_MDM_PLIST_OK
       && strcmp((char *) s.data, "\xe2\x80\x9cx\xe2\x80\x9d "
                                  "\xf0\x9f\x98\x80") == 0,
       "UTF-16 string with a surrogate pair");
    plist_free(q);

    /* break the surrogate pair: the high half followed by 'x' */

    {
        u_char  *h;

        h = bin;
        while (h && h + 1 < bin + blen && !(h[0] == 0xd8 && h[1] == 0x3d)) {
            h++;
        }

        if (h && h + 3 < bin + blen) {
            h[2] = 0x00;
            h[3] = 'x';
        }

        q = bin ? ngx_mdm_plist_parse(bin, blen, 0, &err) : NULL;
        ok(q == NULL && err.rc == NGX_MDM_PLIST_EFORMAT,
           "lone surrogate refused: %s", err.text);
    }

    free(bin);
    plist_free(p);
    json_decref(j);
}


static uint64_t  rnd_state = 0x9e3779b97f4a7c15ULL;

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
    char                 **names;
    u_char                 buf[600], *v, *m;
    size_t                 n, i, k, len, parsed;
    plist_t                p;
    ngx_mdm_plist_err_t    err;

    static const char  *prefix[] = {
        "", "bplist00", "<plist>", "<?xml version=\"1.0\"?><plist><dict>",
        "<plist><array><data>"
    };

    parsed = 0;

    for (i = 0; i < 20000; i++) {
        len = rnd() % sizeof(buf);
        n = strlen(prefix[i % 5]);
        memcpy(buf, prefix[i % 5], n);

        for (k = n; k < len; k++) {
            buf[k] = (i & 1) ? (u_char) rnd() : "<>/&;#x\"=ad! \n"[rnd() % 15];
        }

        p = ngx_mdm_plist_parse(buf, len < n ? n : len, 0, &err);
        parsed += (p != NULL);
        plist_free(p);
    }

    ok(1, "20000 random bodies, %zu accidentally valid", parsed);

    /* random byte flips of real vectors */

    names = list_dir("commands", &n);
    parsed = 0;

    for (i = 0; i < n; i++) {
        char  path[1024];

        snprintf(path, sizeof(path), "commands/%s", names[i]);
        v = vector(path, &len);
        if (v == NULL || len == 0) {
            free(v);
            continue;
        }

        m = malloc(len);

        for (k = 0; k < 300; k++) {
            memcpy(m, v, len);
            m[rnd() % len] = (u_char) rnd();
            m[rnd() % len] = (u_char) rnd();

            p = ngx_mdm_plist_parse(m, len, 0, &err);
            parsed += (p != NULL);
            plist_free(p);
        }

        free(m);
        free(v);
    }

    ok(1, "%zu mutated command vectors, %zu still valid", n * 300, parsed);
    free_names(names, n);
}


static void
test_misc(void)
{
    ok(strcmp(ngx_mdm_plist_strerror(NGX_MDM_PLIST_EFORMAT),
              "malformed plist") == 0
       && strcmp(ngx_mdm_plist_strerror((ngx_mdm_plist_rc_e) 99),
                 "unknown error") == 0, "strerror");
}


int
main(void)
{
    vectors = getenv("MDM_VECTORS");

    if (vectors == NULL) {
        vectors = "../shared/vectors";
    }

    test_vectors("checkin");
    test_vectors("commands");
    test_xml_strict();
    test_xml_text();
    test_integers();
    test_getters();
    test_json();
    test_json_errors();
    test_commands();
    test_binary();
    test_garbage();
    test_misc();

    printf("1..%d\n", tap_n);

    return tap_failed ? 1 : 0;
}
