
/*
 * plist <-> JSON for the admin API, and the command plist built from
 * JSON (ngx_mdm_plist_command_xml()); the mapping is in ngx_mdm_plist.h.
 */


#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_mdm_plist_int.h"


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


/* the command plist */

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
