
/*
 * nginx-mdm admin API: JSON in and out.
 *
 * Responses are written straight into a chain of large buffers (a reply
 * for 100,000 enrollments is a few megabytes and must not be copied or
 * built as a jansson tree); request bodies are parsed with jansson.  ID
 * lists keep request order, drop repeats, and become one PostgreSQL array
 * literal.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_api.h"


#define NGX_MDM_API_CHUNK_MIN  4096
#define NGX_MDM_API_CHUNK_MAX  (1024 * 1024)


static void ngx_mdm_api_json_cleanup(void *data);
static size_t ngx_mdm_api_escaped_len(const u_char *data, size_t len);
static u_char *ngx_mdm_api_escape(u_char *p, const u_char *data,
    size_t len);


static ngx_str_t  ngx_mdm_api_json_type = ngx_string("application/json");


ngx_int_t
ngx_mdm_api_out_init(ngx_mdm_api_out_t *out, ngx_pool_t *pool, size_t hint)
{
    ngx_memzero(out, sizeof(ngx_mdm_api_out_t));

    out->pool = pool;
    out->last = &out->first;
    out->chunk = ngx_min(ngx_max(hint, NGX_MDM_API_CHUNK_MIN),
                         NGX_MDM_API_CHUNK_MAX);

    return NGX_OK;
}


u_char *
ngx_mdm_api_out_reserve(ngx_mdm_api_out_t *out, size_t len)
{
    size_t        size;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (out->failed) {
        return NULL;
    }

    if (out->buf && (size_t) (out->buf->end - out->buf->last) >= len) {
        return out->buf->last;
    }

    size = ngx_max(out->chunk, len);

    b = ngx_create_temp_buf(out->pool, size);
    cl = ngx_alloc_chain_link(out->pool);
    if (b == NULL || cl == NULL) {
        out->failed = 1;
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;
    *out->last = cl;
    out->last = &cl->next;
    out->buf = b;

    /* later buffers grow: few links for a big reply, little waste */
    out->chunk = ngx_min(out->chunk * 2, NGX_MDM_API_CHUNK_MAX);

    return b->last;
}


void
ngx_mdm_api_out_raw(ngx_mdm_api_out_t *out, const void *data, size_t len)
{
    u_char  *p;

    p = ngx_mdm_api_out_reserve(out, len);
    if (p == NULL) {
        return;
    }

    out->buf->last = ngx_cpymem(p, data, len);
    out->total += len;
}


void
ngx_mdm_api_out_str(ngx_mdm_api_out_t *out, const u_char *data, size_t len)
{
    u_char  *p, *last;
    size_t   n;

    n = ngx_mdm_api_escaped_len(data, len) + 2;

    p = ngx_mdm_api_out_reserve(out, n);
    if (p == NULL) {
        return;
    }

    *p++ = '"';
    last = ngx_mdm_api_escape(p, data, len);
    *last++ = '"';

    out->buf->last = last;
    out->total += n;
}


void
ngx_mdm_api_out_cstr(ngx_mdm_api_out_t *out, const char *s)
{
    if (s == NULL) {
        ngx_mdm_api_out_lit(out, "null");
        return;
    }

    ngx_mdm_api_out_str(out, (const u_char *) s, ngx_strlen(s));
}


void
ngx_mdm_api_out_base64(ngx_mdm_api_out_t *out, const u_char *data,
    size_t len)
{
    u_char     *p;
    size_t      n;
    ngx_str_t   src, dst;

    n = ngx_base64_encoded_length(len) + 2;

    p = ngx_mdm_api_out_reserve(out, n);
    if (p == NULL) {
        return;
    }

    src.data = (u_char *) data;
    src.len = len;
    dst.data = p + 1;

    ngx_encode_base64(&dst, &src);

    p[0] = '"';
    p[dst.len + 1] = '"';

    out->buf->last = p + dst.len + 2;
    out->total += dst.len + 2;
}


void
ngx_mdm_api_out_json(ngx_mdm_api_out_t *out, json_t *json)
{
    u_char  *p;
    size_t   n;

    if (json == NULL) {
        ngx_mdm_api_out_lit(out, "null");
        return;
    }

    n = json_dumpb(json, NULL, 0, JSON_ENCODE_ANY);
    if (n == 0) {
        out->failed = 1;
        return;
    }

    p = ngx_mdm_api_out_reserve(out, n);
    if (p == NULL) {
        return;
    }

    if (json_dumpb(json, (char *) p, n, JSON_ENCODE_ANY) != n) {
        out->failed = 1;
        return;
    }

    out->buf->last = p + n;
    out->total += n;
}


/* a column that holds JSON text already */

void
ngx_mdm_api_out_pg(ngx_mdm_api_out_t *out, PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        ngx_mdm_api_out_lit(out, "null");
        return;
    }

    ngx_mdm_api_out_raw(out, PQgetvalue(res, row, col),
                        PQgetlength(res, row, col));
}


void
ngx_mdm_api_out_pg_str(ngx_mdm_api_out_t *out, PGresult *res, int row,
    int col)
{
    if (PQgetisnull(res, row, col)) {
        ngx_mdm_api_out_lit(out, "null");
        return;
    }

    ngx_mdm_api_out_str(out, (u_char *) PQgetvalue(res, row, col),
                        PQgetlength(res, row, col));
}


void
ngx_mdm_api_out_fields(ngx_mdm_api_out_t *out, PGresult *res, int row,
    int col, const ngx_mdm_api_field_t *fields, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++, col++) {
        if (i) {
            ngx_mdm_api_out_lit(out, ", ");
        }

        ngx_mdm_api_out_cstr(out, fields[i].key);
        ngx_mdm_api_out_lit(out, ": ");

        if (fields[i].string) {
            ngx_mdm_api_out_pg_str(out, res, row, col);

        } else {
            ngx_mdm_api_out_pg(out, res, row, col);
        }
    }
}


ngx_uint_t
ngx_mdm_api_pg_bool(PGresult *res, int row, int col)
{
    char  *v;

    if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) == 0) {
        return 0;
    }

    v = PQgetvalue(res, row, col);

    /* text "t", or binary 1 */
    return v[0] == 't' || v[0] == 1;
}


ngx_int_t
ngx_mdm_api_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_mdm_api_out_t *out)
{
    ngx_int_t  rc;

    if (out->failed || out->first == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm api: could not build the response");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_mdm_api_out_lit(out, "\n");

    r->headers_out.status = status;
    r->headers_out.content_length_n = out->total;
    r->headers_out.content_type = ngx_mdm_api_json_type;
    r->headers_out.content_type_len = ngx_mdm_api_json_type.len;

    if (status == NGX_HTTP_MDM_MULTI_STATUS) {
        /* nginx's status line table stops at 206 */
        ngx_str_set(&r->headers_out.status_line, "207 Multi-Status");
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out->buf->last_buf = (r == r->main) ? 1 : 0;
    out->buf->last_in_chain = 1;

    return ngx_http_output_filter(r, out->first);
}


/*
 * Errors: {"error": "..."}.  A client's fault is logged at info, ours at
 * error; the message never carries a secret.
 */

static ngx_int_t
ngx_mdm_api_send_error(ngx_http_request_t *r, ngx_uint_t status,
    u_char *msg, size_t len)
{
    ngx_uint_t         level;
    ngx_mdm_api_out_t  out;

    level = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) ? NGX_LOG_ERR
                                                       : NGX_LOG_INFO;

    ngx_log_error(level, r->connection->log, 0, "mdm api: %ui %*s",
                  status, len, msg);

    if (r->header_sent) {
        return NGX_ERROR;
    }

    ngx_mdm_api_out_init(&out, r->pool, len + 32);
    ngx_mdm_api_out_lit(&out, "{\"error\": ");
    ngx_mdm_api_out_str(&out, msg, len);
    ngx_mdm_api_out_lit(&out, "}");

    return ngx_mdm_api_send(r, status, &out);
}


ngx_int_t
ngx_mdm_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    msg[NGX_MDM_API_ERR_LEN];

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    return ngx_mdm_api_send_error(r, status, msg, p - msg);
}


ngx_int_t
ngx_mdm_api_bad(ngx_http_mdm_api_ctx_t *ctx, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(ctx->err, ctx->err + sizeof(ctx->err), fmt, args);
    va_end(args);

    ctx->err_len = p - ctx->err;
    ctx->err_status = status;

    return NGX_ERROR;
}


ngx_int_t
ngx_mdm_api_fail(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    if (ctx->err_status == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_mdm_api_send_error(r, ctx->err_status, ctx->err,
                                  ctx->err_len);
}


/*
 * The request body as one piece of memory: as it is when nginx kept it in
 * one buffer, else copied from its buffers and its temporary file.
 */

ngx_int_t
ngx_mdm_api_read_body(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    u_char       *p;
    off_t         size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ctx->body = NULL;
    ctx->body_len = 0;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        ctx->body = cl->buf->pos;
        ctx->body_len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    size = 0;
    for ( /* void */ ; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, (size_t) size + 1);
    if (p == NULL) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "out of memory");
    }

    ctx->body = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, (size_t) (b->file_last
                                                    - b->file_pos),
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "cannot read the request body "
                                       "from its temporary file");
            }
            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    ctx->body_len = p - ctx->body;

    return NGX_OK;
}


/*
 * The body as a JSON object in ctx->json.  NGX_DECLINED: no body and
 * optional.  Bad JSON or another type: 400.
 */

ngx_int_t
ngx_mdm_api_parse_body(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx,
    ngx_uint_t optional)
{
    json_t              *json;
    json_error_t         jerr;
    ngx_pool_cleanup_t  *cln;

    if (ngx_mdm_api_read_body(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->body_len == 0) {
        if (optional) {
            return NGX_DECLINED;
        }

        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "a JSON object is required in the body");
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "out of memory");
    }

    json = json_loadb((char *) ctx->body, ctx->body_len,
                      JSON_REJECT_DUPLICATES, &jerr);
    if (json == NULL) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "invalid JSON: %s (line %d, column %d)",
                               jerr.text, jerr.line, jerr.column);
    }

    cln->handler = ngx_mdm_api_json_cleanup;
    cln->data = json;
    ctx->json = json;

    if (!json_is_object(json)) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "the body must be a JSON object");
    }

    return NGX_OK;
}


static void
ngx_mdm_api_json_cleanup(void *data)
{
    json_decref(data);
}


/* ID lists */

ngx_int_t
ngx_mdm_api_ids_init(ngx_mdm_api_ids_t *ids, ngx_pool_t *pool, ngx_uint_t n)
{
    ngx_uint_t  size;

    ngx_memzero(ids, sizeof(ngx_mdm_api_ids_t));

    /* exactly n: the hash points into the array, which must not move */
    if (ngx_array_init(&ids->ids, pool, ngx_max(n, 1),
                       sizeof(ngx_mdm_api_id_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (size = 16; size < 2 * n; size <<= 1) { /* void */ }

    ids->hash = ngx_pcalloc(pool, size * sizeof(ngx_mdm_api_id_t *));
    if (ids->hash == NULL) {
        return NGX_ERROR;
    }

    ids->mask = size - 1;
    ids->literal_len = 2;    /* { } */

    return NGX_OK;
}


/* NGX_OK added, NGX_DECLINED a repeat, NGX_ERROR full */

ngx_int_t
ngx_mdm_api_ids_add(ngx_mdm_api_ids_t *ids, u_char *data, size_t len)
{
    ngx_uint_t         key;
    ngx_mdm_api_id_t  *id;

    key = ngx_hash_key(data, len) & ids->mask;

    for (id = ids->hash[key]; id; id = id->next) {
        if (id->id.len == len && ngx_memcmp(id->id.data, data, len) == 0) {
            return NGX_DECLINED;
        }
    }

    if (ids->ids.nelts == ids->ids.nalloc) {
        return NGX_ERROR;
    }

    id = ngx_array_push(&ids->ids);

    id->id.data = data;
    id->id.len = len;
    id->error = NULL;
    id->next = ids->hash[key];
    ids->hash[key] = id;

    /* "...", with \ before " and \ */
    ids->literal_len += len + 3;

    while (len--) {
        if (*data == '"' || *data == '\\') {
            ids->literal_len++;
        }
        data++;
    }

    return NGX_OK;
}


/*
 * ctx->ids from the array of strings ctx->json[key].  NGX_DECLINED when
 * absent and not required.
 */

ngx_int_t
ngx_mdm_api_ids_from_json(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx,
    const char *key, ngx_uint_t required)
{
    size_t   i, n, len;
    json_t  *list, *item;

    list = json_object_get(ctx->json, key);

    if (list == NULL) {
        if (!required) {
            return NGX_DECLINED;
        }

        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"%s\" is required", key);
    }

    if (!json_is_array(list)) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"%s\" must be an array of strings", key);
    }

    n = json_array_size(list);

    if (n == 0) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"%s\" is empty", key);
    }

    if (n > ctx->conf->max_ids) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"%s\" has %uz IDs, more than "
                               "mdm_api_max_ids (%ui)",
                               key, n, ctx->conf->max_ids);
    }

    if (ngx_mdm_api_ids_init(&ctx->ids, r->pool, n) != NGX_OK) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "out of memory");
    }

    for (i = 0; i < n; i++) {
        item = json_array_get(list, i);
        len = json_string_length(item);

        if (!json_is_string(item) || len == 0
            || len > NGX_MDM_API_ID_MAX_LEN)
        {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"%s\"[%uz] is not a string of 1 to %d "
                                   "bytes", key, i, NGX_MDM_API_ID_MAX_LEN);
        }

        (void) ngx_mdm_api_ids_add(&ctx->ids,
                                   (u_char *) json_string_value(item), len);
    }

    return NGX_OK;
}


ngx_mdm_api_id_t *
ngx_mdm_api_ids_find(ngx_mdm_api_ids_t *ids, u_char *data, size_t len)
{
    ngx_mdm_api_id_t  *id;

    for (id = ids->hash[ngx_hash_key(data, len) & ids->mask];
         id;
         id = id->next)
    {
        if (id->id.len == len && ngx_memcmp(id->id.data, data, len) == 0) {
            return id;
        }
    }

    return NULL;
}


void
ngx_mdm_api_ids_fail(ngx_mdm_api_ids_t *ids, u_char *data, size_t len,
    const char *error, ngx_uint_t unknown)
{
    ngx_mdm_api_id_t  *id;

    id = ngx_mdm_api_ids_find(ids, data, len);

    if (id && id->error == NULL) {
        id->error = error;
        ids->failed++;
        ids->unknown += unknown ? 1 : 0;
    }
}


/* {"a","b\"c"}: a PostgreSQL array literal, every element quoted */

char *
ngx_mdm_api_ids_literal(ngx_mdm_api_ids_t *ids, ngx_pool_t *pool)
{
    u_char            *lit, *p, *s, *end;
    ngx_uint_t         i;
    ngx_mdm_api_id_t  *id;

    lit = ngx_pnalloc(pool, ids->literal_len + 1);
    if (lit == NULL) {
        return NULL;
    }

    p = lit;
    *p++ = '{';

    id = ids->ids.elts;

    for (i = 0; i < ids->ids.nelts; i++) {
        if (i) {
            *p++ = ',';
        }

        *p++ = '"';

        for (s = id[i].id.data, end = s + id[i].id.len; s < end; s++) {
            if (*s == '"' || *s == '\\') {
                *p++ = '\\';
            }
            *p++ = *s;
        }

        *p++ = '"';
    }

    *p++ = '}';
    *p = '\0';

    return (char *) lit;
}


/* 200 all done, 404 all unknown, 207 else */

ngx_uint_t
ngx_mdm_api_ids_status(ngx_mdm_api_ids_t *ids)
{
    if (ids->failed == 0) {
        return NGX_HTTP_OK;
    }

    if (ids->unknown == ids->ids.nelts) {
        return NGX_HTTP_NOT_FOUND;
    }

    return NGX_HTTP_MDM_MULTI_STATUS;
}


/* {"<id>": {"<key>": true}, "<id>": {"<key>": false, "error": "..."}} */

void
ngx_mdm_api_out_ids(ngx_mdm_api_out_t *out, ngx_mdm_api_ids_t *ids,
    const char *key)
{
    size_t             klen;
    ngx_uint_t         i;
    ngx_mdm_api_id_t  *id;

    klen = ngx_strlen(key);
    id = ids->ids.elts;

    ngx_mdm_api_out_lit(out, "{");

    for (i = 0; i < ids->ids.nelts; i++) {
        if (i) {
            ngx_mdm_api_out_lit(out, ", ");
        }

        ngx_mdm_api_out_str(out, id[i].id.data, id[i].id.len);
        ngx_mdm_api_out_lit(out, ": {\"");
        ngx_mdm_api_out_raw(out, key, klen);

        if (id[i].error == NULL) {
            ngx_mdm_api_out_lit(out, "\": true}");
            continue;
        }

        ngx_mdm_api_out_lit(out, "\": false, \"error\": ");
        ngx_mdm_api_out_cstr(out, id[i].error);
        ngx_mdm_api_out_lit(out, "}");
    }

    ngx_mdm_api_out_lit(out, "}");
}


/* JSON string escaping (RFC 8259 §7): quote, backslash, C0 controls */

static size_t
ngx_mdm_api_escaped_len(const u_char *data, size_t len)
{
    size_t  n;

    n = len;

    while (len--) {
        if (*data == '"' || *data == '\\') {
            n++;

        } else if (*data < 0x20) {
            n += (*data == '\n' || *data == '\r' || *data == '\t'
                  || *data == '\b' || *data == '\f') ? 1 : 5;
        }

        data++;
    }

    return n;
}


static u_char *
ngx_mdm_api_escape(u_char *p, const u_char *data, size_t len)
{
    u_char  c;

    static u_char  hex[] = "0123456789abcdef";

    while (len--) {
        c = *data++;

        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = c;
            continue;
        }

        *p++ = '\\';

        switch (c) {
        case '"':
        case '\\':
            *p++ = c;
            break;
        case '\n':
            *p++ = 'n';
            break;
        case '\r':
            *p++ = 'r';
            break;
        case '\t':
            *p++ = 't';
            break;
        case '\b':
            *p++ = 'b';
            break;
        case '\f':
            *p++ = 'f';
            break;
        default:
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        }
    }

    return p;
}


/*
 * The end of a paged list: "next" is the cursor of the last row when the
 * page is full (there may be more), else null.
 */

void
ngx_mdm_api_out_page_end(ngx_mdm_api_out_t *out, PGresult *res,
    ngx_uint_t full, int col)
{
    ngx_mdm_api_out_lit(out, "], \"next\": ");

    if (full) {
        ngx_mdm_api_out_pg_str(out, res, PQntuples(res) - 1, col);

    } else {
        ngx_mdm_api_out_lit(out, "null");
    }

    ngx_mdm_api_out_lit(out, "}");
}
