
/*
 * nginx-mdm admin API: commands.
 *
 *   POST   commands                         enqueue to many enrollments
 *   GET    commands/<uuid>                  status and results, paged
 *   DELETE commands/<uuid>                  cancel what is still pending
 *   GET    commands/<uuid>/results/<id>     the device's report, raw
 *
 * A command is stored as the exact plist devices receive,
 * {CommandUUID, Command: {RequestType, ...}} (PROTOCOL.md §4.2), made from
 * JSON by ngx_mdm_plist_command_xml() or rebuilt from a raw plist.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/rand.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_plist.h"
#include "ngx_mdm_api.h"
#include "ngx_mdm_api_sql.h"


#define NGX_HTTP_MDM_API_UUID_LEN       36
#define NGX_HTTP_MDM_API_COMMAND_PAGE   1000


typedef struct {
    char                    *xml;
    size_t                   xml_len;
    char                    *priority;
    char                    *expires_at;
} ngx_http_mdm_api_enqueue_t;


static ngx_int_t ngx_http_mdm_api_enqueue_json(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, ngx_http_mdm_api_enqueue_t *e);
static ngx_int_t ngx_http_mdm_api_enqueue_raw(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, ngx_http_mdm_api_enqueue_t *e);
static ngx_int_t ngx_http_mdm_api_query_ids(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_api_plist_command(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, u_char *data, size_t len, const char *given,
    ngx_http_mdm_api_enqueue_t *e);
static ngx_int_t ngx_http_mdm_api_command_uuid(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, const char *given);
static ngx_uint_t ngx_http_mdm_api_rfc3339(const u_char *s, size_t len);
static void ngx_http_mdm_api_enqueued(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc);
static void ngx_http_mdm_api_command_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_api_out_result(ngx_mdm_api_out_t *out,
    PGresult *res, int row, int col, ngx_uint_t raw);
static void ngx_http_mdm_api_command_cancelled(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);
static void ngx_http_mdm_api_result_done(ngx_http_request_t *r,
    PGresult *res, ngx_int_t rc);


static ngx_str_t  ngx_http_mdm_api_plist_type =
    ngx_string("application/x-apple-plist");


ngx_int_t
ngx_http_mdm_api_enqueue(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_str_t                   *type;
    int                          lengths[8];
    u_char                      *count;
    const char                  *values[8];
    ngx_mdm_pg_args_t            args;
    ngx_http_mdm_api_enqueue_t   e;

    static const int  formats[8] = { 0, 0, 0, 1, 0, 0, 0, 0 };

    ngx_memzero(&e, sizeof(ngx_http_mdm_api_enqueue_t));
    e.priority = "0";
    ctx->push = 1;

    type = r->headers_in.content_type ? &r->headers_in.content_type->value
                                      : NULL;

    if (type && type->len >= ngx_http_mdm_api_plist_type.len
        && ngx_strncasecmp(type->data, ngx_http_mdm_api_plist_type.data,
                           ngx_http_mdm_api_plist_type.len) == 0)
    {
        rc = ngx_http_mdm_api_enqueue_raw(r, ctx, &e);

    } else {
        rc = ngx_http_mdm_api_enqueue_json(r, ctx, &e);
    }

    if (rc != NGX_OK) {
        ngx_mdm_plist_xml_free(e.xml);
        return ngx_mdm_api_fail(r, ctx);
    }

    values[0] = ngx_mdm_api_ids_literal(&ctx->ids, r->pool);
    values[1] = (char *) ctx->command_uuid.data;
    values[2] = (char *) ctx->request_type.data;
    values[3] = e.xml;
    values[4] = e.priority;
    values[5] = e.expires_at;
    values[6] = ctx->push ? "t" : "f";

    count = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);

    if (values[0] == NULL || count == NULL) {
        ngx_mdm_plist_xml_free(e.xml);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(count, "%ui", ctx->ids.ids.nelts) = '\0';
    values[7] = (char *) count;

    ngx_memzero(lengths, sizeof(lengths));
    lengths[3] = (int) e.xml_len;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_API_SQL_ENQUEUE;
    args.nparams = 8;
    args.values = values;
    args.lengths = lengths;
    args.formats = formats;

    /* the pool copies the parameters: the XML can go at once */
    rc = ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_api_enqueued);

    ngx_mdm_plist_xml_free(e.xml);

    return rc;
}


/*
 * {"enrollment_ids": [...], "command": {"RequestType": ...} or
 *  "command_plist": "<?xml ...", "command_uuid": ..., "push": true,
 *  "priority": 0, "expires_at": "RFC 3339"}
 */

static ngx_int_t
ngx_http_mdm_api_enqueue_json(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, ngx_http_mdm_api_enqueue_t *e)
{
    json_t                *v, *command;
    json_int_t             priority;
    const char            *given;
    ngx_mdm_plist_rc_e     prc;
    ngx_mdm_plist_err_t    err;

    if (ngx_mdm_api_parse_body(r, ctx, 0) != NGX_OK
        || ngx_mdm_api_ids_from_json(r, ctx, "enrollment_ids", 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    v = json_object_get(ctx->json, "push");
    if (v) {
        if (!json_is_boolean(v)) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"push\" must be true or false");
        }

        ctx->push = json_is_true(v);
    }

    v = json_object_get(ctx->json, "priority");
    if (v) {
        priority = json_integer_value(v);

        if (!json_is_integer(v) || priority < -2147483647
            || priority > 2147483647)
        {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"priority\" must be a 32-bit integer");
        }

        e->priority = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
        if (e->priority == NULL) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "out of memory");
        }

        *ngx_sprintf((u_char *) e->priority, "%L", (int64_t) priority) = '\0';
    }

    v = json_object_get(ctx->json, "expires_at");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)
            || !ngx_http_mdm_api_rfc3339((u_char *) json_string_value(v),
                                         json_string_length(v)))
        {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"expires_at\" must be an RFC 3339 "
                                   "date-time string");
        }

        e->expires_at = (char *) json_string_value(v);
    }

    given = NULL;

    v = json_object_get(ctx->json, "command_uuid");
    if (v) {
        if (!json_is_string(v)) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"command_uuid\" must be a string");
        }

        given = json_string_value(v);
    }

    command = json_object_get(ctx->json, "command");
    v = json_object_get(ctx->json, "command_plist");

    if (command == NULL && json_is_string(v)) {
        return ngx_http_mdm_api_plist_command(r, ctx,
                                              (u_char *) json_string_value(v),
                                              json_string_length(v), given,
                                              e);
    }

    v = json_object_get(command, "RequestType");

    if (!json_is_object(command) || !json_is_string(v)
        || json_string_length(v) == 0)
    {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"command\" must be an object with a "
                               "non-empty string \"RequestType\"");
    }

    if (ngx_http_mdm_api_command_uuid(r, ctx, given) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->request_type.data = (u_char *) json_string_value(v);
    ctx->request_type.len = json_string_length(v);

    prc = ngx_mdm_plist_command_xml(command,
                                    (char *) ctx->command_uuid.data,
                                    &e->xml, &e->xml_len, &err);

    if (prc == NGX_MDM_PLIST_ENOMEM) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "out of memory");
    }

    if (prc != NGX_MDM_PLIST_OK) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST, "command: %s",
                               err.text);
    }

    return NGX_OK;
}


/*
 * Content-Type: application/x-apple-plist, the plist as the body, the IDs
 * and options in the query: ?enrollment_id=a&enrollment_id=b (or
 * enrollment_ids=a,b), push, priority, expires_at.
 */

static ngx_int_t
ngx_http_mdm_api_enqueue_raw(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, ngx_http_mdm_api_enqueue_t *e)
{
    ngx_int_t   n;
    ngx_str_t   v;
    ngx_uint_t  flag;

    if (ngx_mdm_api_read_body(r, ctx) != NGX_OK
        || ngx_http_mdm_api_query_ids(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    switch (ngx_http_mdm_api_arg_flag(r, "push", &flag)) {
    case NGX_OK:
        ctx->push = flag;
        break;
    case NGX_ERROR:
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "\"push\" must be true or false");
    }

    if (ngx_http_mdm_api_arg(r, "priority", &v) == NGX_OK) {
        n = ngx_atoi(v.data[0] == '-' ? v.data + 1 : v.data,
                     v.data[0] == '-' ? v.len - 1 : v.len);

        if (n == NGX_ERROR || n > 2147483647) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"priority\" must be a 32-bit integer");
        }

        e->priority = (char *) v.data;
    }

    if (ngx_http_mdm_api_arg(r, "expires_at", &v) == NGX_OK) {
        if (!ngx_http_mdm_api_rfc3339(v.data, v.len)) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "\"expires_at\" must be an RFC 3339 "
                                   "date-time");
        }

        e->expires_at = (char *) v.data;
    }

    if (ctx->body_len == 0) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "the command plist is missing from the body");
    }

    return ngx_http_mdm_api_plist_command(r, ctx, ctx->body, ctx->body_len,
                                          NULL, e);
}


static ngx_int_t
ngx_http_mdm_api_query_ids(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx)
{
    u_char      *p, *end, *amp, *eq, *s, *comma, *dst;
    ngx_str_t    name, value;
    ngx_uint_t   n, list;

    p = r->args.data;
    end = p + r->args.len;

    /* an upper bound of the count: every separator may start an ID */
    n = 1;
    for (s = p; s < end; s++) {
        n += (*s == '&' || *s == ',' || *s == '%');
    }

    if (n > ctx->conf->max_ids) {
        n = ctx->conf->max_ids;
    }

    if (ngx_mdm_api_ids_init(&ctx->ids, r->pool, n) != NGX_OK) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "out of memory");
    }

    for ( /* void */ ; p < end; p = amp + 1) {
        amp = ngx_strlchr(p, end, '&');
        if (amp == NULL) {
            amp = end;
        }

        eq = ngx_strlchr(p, amp, '=');
        if (eq == NULL) {
            continue;
        }

        name.data = p;
        name.len = eq - p;

        if (name.len == sizeof("enrollment_id") - 1
            && ngx_strncmp(p, "enrollment_id", name.len) == 0)
        {
            list = 0;

        } else if (name.len == sizeof("enrollment_ids") - 1
                   && ngx_strncmp(p, "enrollment_ids", name.len) == 0)
        {
            list = 1;

        } else {
            continue;
        }

        value.data = eq + 1;
        value.len = amp - value.data;

        dst = ngx_pnalloc(r->pool, value.len + 1);
        if (dst == NULL) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "out of memory");
        }

        s = dst;
        ngx_unescape_uri(&dst, &value.data, value.len, 0);
        value.data = s;
        value.len = dst - s;

        while (value.len) {
            comma = list ? ngx_strlchr(value.data, value.data + value.len,
                                       ',')
                         : NULL;
            n = comma ? (ngx_uint_t) (comma - value.data) : value.len;

            if (n == 0 || n > NGX_MDM_API_ID_MAX_LEN) {
                return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                       "an enrollment ID in the query is "
                                       "empty or longer than %d bytes",
                                       NGX_MDM_API_ID_MAX_LEN);
            }

            if (ngx_mdm_api_ids_add(&ctx->ids, value.data, n) == NGX_ERROR) {
                return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                       "more than mdm_api_max_ids (%ui) "
                                       "enrollment IDs",
                                       ctx->conf->max_ids);
            }

            value.data += comma ? n + 1 : n;
            value.len -= comma ? n + 1 : n;
        }
    }

    if (ctx->ids.ids.nelts == 0) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                               "no enrollment IDs: give them in the query, "
                               "?enrollment_id=A&enrollment_id=B");
    }

    return NGX_OK;
}


/*
 * A command given as a plist: the whole {CommandUUID, Command} or just the
 * Command dict.  Rebuilt with exactly those two keys as XML.  The plist's
 * CommandUUID, else the one given, else a new one.
 */

static ngx_int_t
ngx_http_mdm_api_plist_command(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, u_char *data, size_t len, const char *given,
    ngx_http_mdm_api_enqueue_t *e)
{
    plist_t               root, cmd, out, item;
    ngx_int_t             rc;
    ngx_mdm_plist_rc_e    prc;
    ngx_mdm_plist_str_t   rt, uuid;
    ngx_mdm_plist_err_t   err;

    root = ngx_mdm_plist_parse(data, len, 0, &err);
    if (root == NULL) {
        return ngx_mdm_api_bad(ctx, err.rc == NGX_MDM_PLIST_ENOMEM
                                    ? NGX_HTTP_INTERNAL_SERVER_ERROR
                                    : NGX_HTTP_BAD_REQUEST,
                               "invalid plist: %s", err.text);
    }

    out = NULL;
    uuid.len = 0;
    uuid.data = NULL;

    prc = ngx_mdm_plist_get_dict(root, "Command", &cmd);

    if (prc == NGX_MDM_PLIST_ABSENT
        && plist_get_node_type(root) == PLIST_DICT
        && ngx_mdm_plist_get_string(root, "RequestType", &rt)
           != NGX_MDM_PLIST_ABSENT)
    {
        /* the Command dict alone */
        cmd = root;

    } else if (prc != NGX_MDM_PLIST_OK) {
        rc = ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                             "the plist must be a dict with a \"Command\" "
                             "dict, or the Command dict itself");
        goto done;

    } else {
        prc = ngx_mdm_plist_get_string(root, "CommandUUID", &uuid);

        if (prc == NGX_MDM_PLIST_WRONG_TYPE) {
            rc = ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                 "CommandUUID must be a string");
            goto done;
        }

        if (prc == NGX_MDM_PLIST_OK && given
            && ngx_strcmp(given, uuid.data) != 0)
        {
            rc = ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                 "\"command_uuid\" differs from the "
                                 "plist's CommandUUID");
            goto done;
        }
    }

    if (uuid.data == NULL) {
        uuid.data = (u_char *) given;
    }

    if (ngx_mdm_plist_get_string(cmd, "RequestType", &rt)
        != NGX_MDM_PLIST_OK
        || rt.len == 0)
    {
        rc = ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                             "Command.RequestType must be a non-empty "
                             "string");
        goto done;
    }

    if (ngx_http_mdm_api_command_uuid(r, ctx, (char *) uuid.data)
        != NGX_OK)
    {
        rc = NGX_ERROR;
        goto done;
    }

    ctx->request_type.len = rt.len;
    ctx->request_type.data = (u_char *) ngx_http_mdm_api_cstr(r->pool,
                                                 (ngx_str_t *) &rt);
    out = plist_new_dict();
    item = plist_new_string((char *) ctx->command_uuid.data);

    if (ctx->request_type.data == NULL || out == NULL || item == NULL) {
        plist_free(item);
        rc = ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                             "out of memory");
        goto done;
    }

    plist_dict_set_item(out, "CommandUUID", item);
    plist_dict_set_item(out, "Command", plist_copy(cmd));

    prc = ngx_mdm_plist_to_xml(out, &e->xml, &e->xml_len, &err);

    rc = (prc == NGX_MDM_PLIST_OK)
         ? NGX_OK
         : ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST, "command: %s",
                           err.text);

done:

    plist_free(out);
    plist_free(root);

    return rc;
}


/*
 * ctx->command_uuid: the one given (1..255 bytes, no control character),
 * else a new random (version 4) UUID in Apple's upper-case form.
 */

static ngx_int_t
ngx_http_mdm_api_command_uuid(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, const char *given)
{
    u_char      *p;
    size_t       len, i;
    ngx_uint_t   k;
    u_char       raw[16];

    static u_char  hex[] = "0123456789ABCDEF";

    if (given) {
        len = ngx_strlen(given);

        for (i = 0; i < len; i++) {
            if ((u_char) given[i] < 0x20 || given[i] == 0x7f) {
                break;
            }
        }

        if (len == 0 || len > 255 || i < len) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_BAD_REQUEST,
                                   "the command UUID must be 1 to 255 bytes "
                                   "without control characters");
        }

        /* given may live in a plist that is freed before the query */
        ctx->command_uuid.data = (u_char *) given;
        ctx->command_uuid.len = len;
        ctx->command_uuid.data = (u_char *) ngx_http_mdm_api_cstr(r->pool,
                                                     &ctx->command_uuid);
        if (ctx->command_uuid.data == NULL) {
            return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "out of memory");
        }

        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_MDM_API_UUID_LEN + 1);
    if (p == NULL || RAND_bytes(raw, sizeof(raw)) != 1) {
        return ngx_mdm_api_bad(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                               "cannot make a command UUID");
    }

    raw[6] = (raw[6] & 0x0f) | 0x40;
    raw[8] = (raw[8] & 0x3f) | 0x80;

    ctx->command_uuid.data = p;

    for (k = 0; k < sizeof(raw); k++) {
        if (k == 4 || k == 6 || k == 8 || k == 10) {
            *p++ = '-';
        }

        *p++ = hex[raw[k] >> 4];
        *p++ = hex[raw[k] & 0xf];
    }

    *p = '\0';
    ctx->command_uuid.len = NGX_HTTP_MDM_API_UUID_LEN;

    return NGX_OK;
}


/*
 * The shape of an RFC 3339 date-time, 2030-01-01T00:00:00.5+01:00; whether
 * the date exists is PostgreSQL's to say (400 "invalid value").
 */

static ngx_uint_t
ngx_http_mdm_api_rfc3339(const u_char *s, size_t len)
{
    const u_char  *p, *end, *f;

    /* 0 a digit, anything else itself */
    static const u_char  form[] = "0000-00-00T00:00:00";

    end = s + len;
    p = s;

    for (f = form; *f; f++, p++) {
        if (p == end) {
            return 0;
        }

        if (*f == '0' ? (*p < '0' || *p > '9')
                      : (*f == 'T' ? (*p | 0x20) != 't' : *p != *f))
        {
            return 0;
        }
    }

    if (p < end && *p == '.') {
        for (p++, f = p; p < end && *p >= '0' && *p <= '9'; p++) {
            /* void */
        }

        if (p == f) {
            return 0;
        }
    }

    if (p + 1 == end && (*p | 0x20) == 'z') {
        return 1;
    }

    return end - p == 6 && (*p == '+' || *p == '-')
           && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9'
           && p[3] == ':'
           && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9';
}


/*
 * {"command_uuid": ..., "request_type": ..., "queued": N, "pushed": M,
 *  "enrollments": {"<id>": {"queued": true}, ...}}: 200 all queued,
 * 207 some unknown, 404 none (and nothing was written).
 */

static void
ngx_http_mdm_api_enqueued(ngx_http_request_t *r, PGresult *res, ngx_int_t rc)
{
    int                      i, n;
    ngx_int_t                queued, pushed;
    ngx_uint_t               status;
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res,
                                      "a command with this command_uuid "
                                      "exists already"));
        return;
    }

    n = PQntuples(res);
    if (n < 1) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    queued = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                      PQgetlength(res, 0, 0));
    pushed = ngx_atoi((u_char *) PQgetvalue(res, 0, 1),
                      PQgetlength(res, 0, 1));

    for (i = 0; i < n; i++) {
        if (!PQgetisnull(res, i, 2)) {
            ngx_mdm_api_ids_fail(&ctx->ids, (u_char *) PQgetvalue(res, i, 2),
                                 PQgetlength(res, i, 2),
                                 "unknown enrollment", 1);
        }
    }

    status = ngx_mdm_api_ids_status(&ctx->ids);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm api: %V enqueued %V %V for %i of %ui enrollments, "
                  "%i pushes", &ctx->actor, &ctx->request_type,
                  &ctx->command_uuid, queued, ctx->ids.ids.nelts, pushed);

    if (pushed > 0) {
        ngx_http_mdm_api_push_hint(r);
    }

    ngx_mdm_api_out_init(&out, r->pool,
                         ctx->ids.literal_len + 20 * ctx->ids.ids.nelts);

    ngx_mdm_api_out_lit(&out, "{\"command_uuid\": ");
    ngx_mdm_api_out_str(&out, ctx->command_uuid.data, ctx->command_uuid.len);
    ngx_mdm_api_out_lit(&out, ", \"request_type\": ");
    ngx_mdm_api_out_str(&out, ctx->request_type.data, ctx->request_type.len);

    if (status == NGX_HTTP_NOT_FOUND) {
        ngx_mdm_api_out_lit(&out, ", \"error\": \"unknown enrollments\"");
    }

    ngx_mdm_api_out_lit(&out, ", \"queued\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 0);
    ngx_mdm_api_out_lit(&out, ", \"pushed\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 1);
    ngx_mdm_api_out_lit(&out, ", \"enrollments\": ");
    ngx_mdm_api_out_ids(&out, &ctx->ids, "queued");
    ngx_mdm_api_out_lit(&out, "}");

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, status, &out));
}


/*
 * GET commands/<uuid>?limit=&after=&enrollment_id=&raw=1
 */

ngx_int_t
ngx_http_mdm_api_command(ngx_http_request_t *r, ngx_http_mdm_api_ctx_t *ctx)
{
    u_char             *limit;
    ngx_int_t           n;
    ngx_str_t           after, only;
    ngx_uint_t          raw;
    const char         *values[4];
    ngx_mdm_pg_args_t   args;

    n = NGX_HTTP_MDM_API_COMMAND_PAGE;

    if (ngx_http_mdm_api_page(r, &n, &after) != NGX_OK) {
        return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                 "\"limit\" must be 1 to %d",
                                 NGX_MDM_API_PAGE_MAX);
    }

    raw = 0;
    if (ngx_http_mdm_api_arg_flag(r, "raw", &raw) == NGX_ERROR) {
        return ngx_mdm_api_error(r, NGX_HTTP_BAD_REQUEST,
                                 "\"raw\" must be 1 or 0");
    }

    if (ngx_http_mdm_api_arg(r, "enrollment_id", &only) != NGX_OK) {
        only.data = NULL;
    }

    ctx->raw = raw;
    ctx->total = n;
    ctx->command_uuid = ctx->seg[1];

    limit = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1);
    values[0] = ngx_http_mdm_api_cstr(r->pool, &ctx->seg[1]);

    if (limit == NULL || values[0] == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_sprintf(limit, "%i", n) = '\0';

    values[1] = (char *) after.data;
    values[2] = (char *) limit;
    values[3] = (char *) only.data;

    ngx_memzero(&args, sizeof(ngx_mdm_pg_args_t));
    args.sql = NGX_MDM_API_SQL_COMMAND;
    args.nparams = 4;
    args.values = values;
    args.result_format = 1;

    return ngx_http_mdm_pg_query(r, &args, ngx_http_mdm_api_command_done);
}


static void
ngx_http_mdm_api_command_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    int                      i, n, rows;
    ngx_mdm_api_out_t        out;
    ngx_http_mdm_api_ctx_t  *ctx;

    /* columns 5 to 11, then the result */
    static const ngx_mdm_api_field_t  fields[] = {
        { "enrollment_id", 1 }, { "status", 1 },
        { "queued_at", 1 }, { "sent_at", 1 },
        { "sent_count", 0 }, { "not_now_tally", 0 },
        { "updated_at", 1 }
    };

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    n = PQntuples(res);

    if (n == 0) {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND,
                                      "unknown command: %V",
                                      &ctx->command_uuid));
        return;
    }

    ngx_mdm_api_out_init(&out, r->pool, 512 + (size_t) n * 512);

    ngx_mdm_api_out_lit(&out, "{\"command_uuid\": ");
    ngx_mdm_api_out_str(&out, ctx->command_uuid.data, ctx->command_uuid.len);
    ngx_mdm_api_out_lit(&out, ", \"request_type\": ");
    ngx_mdm_api_out_pg_str(&out, res, 0, 0);
    ngx_mdm_api_out_lit(&out, ", \"created_at\": ");
    ngx_mdm_api_out_pg_str(&out, res, 0, 1);
    ngx_mdm_api_out_lit(&out, ", \"expires_at\": ");
    ngx_mdm_api_out_pg_str(&out, res, 0, 2);
    ngx_mdm_api_out_lit(&out, ", \"priority\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 3);
    ngx_mdm_api_out_lit(&out, ", \"counts\": ");
    ngx_mdm_api_out_pg(&out, res, 0, 4);
    ngx_mdm_api_out_lit(&out, ", \"enrollments\": [");

    rows = 0;

    for (i = 0; i < n; i++) {
        if (PQgetisnull(res, i, 5)) {
            continue;
        }

        if (rows++) {
            ngx_mdm_api_out_lit(&out, ", ");
        }

        ngx_mdm_api_out_lit(&out, "{");
        ngx_mdm_api_out_fields(&out, res, i, 5, fields,
                               sizeof(fields) / sizeof(fields[0]));
        ngx_http_mdm_api_out_result(&out, res, i, 12, ctx->raw);
        ngx_mdm_api_out_lit(&out, "}");
    }

    ngx_mdm_api_out_page_end(&out, res,
                             rows > 0 && (ngx_uint_t) rows == ctx->total, 5);

    ngx_http_finalize_request(r, ngx_mdm_api_send(r, NGX_HTTP_OK, &out));
}


/*
 * "result": the device's report as JSON (ngx_mdm_plist.h conventions),
 * and with ?raw=1 "result_raw": its bytes in base64.
 */

static void
ngx_http_mdm_api_out_result(ngx_mdm_api_out_t *out, PGresult *res, int row,
    int col, ngx_uint_t raw)
{
    u_char               *data;
    size_t                len;
    json_t               *json;
    plist_t               plist;
    ngx_mdm_plist_err_t   err;

    ngx_mdm_api_out_lit(out, ", \"result\": ");

    if (PQgetisnull(res, row, col)) {
        ngx_mdm_api_out_lit(out, "null");
        return;
    }

    data = (u_char *) PQgetvalue(res, row, col);
    len = PQgetlength(res, row, col);

    json = NULL;
    plist = ngx_mdm_plist_parse(data, len, ngx_max(len, 1), &err);

    if (plist) {
        json = ngx_mdm_plist_to_json(plist, &err);
        plist_free(plist);
    }

    if (json) {
        ngx_mdm_api_out_json(out, json);
        json_decref(json);

    } else {
        ngx_mdm_api_out_lit(out, "null, \"result_error\": ");
        ngx_mdm_api_out_cstr(out, err.text);
    }

    if (raw) {
        ngx_mdm_api_out_lit(out, ", \"result_raw\": ");
        ngx_mdm_api_out_base64(out, data, len);
    }
}


/* DELETE commands/<uuid>: {"command_uuid": ..., "cancelled": N} */

ngx_int_t
ngx_http_mdm_api_command_cancel(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx)
{
    ctx->command_uuid = ctx->seg[1];

    return ngx_http_mdm_api_query_path(r, ctx, NGX_MDM_API_SQL_COMMAND_CANCEL,
                                       0, 0,
                                       ngx_http_mdm_api_command_cancelled);
}


static void
ngx_http_mdm_api_command_cancelled(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    ngx_http_finalize_request(r, ngx_http_mdm_api_cancelled(r, res, rc,
                                     "command", "command_uuid",
                                     &ctx->command_uuid));
}


/* GET commands/<uuid>/results/<enrollment id>: the report's own bytes */

ngx_int_t
ngx_http_mdm_api_command_result(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx)
{
    ctx->command_uuid = ctx->seg[1];
    ctx->enrollment_id = ctx->seg[3];

    return ngx_http_mdm_api_query_path(r, ctx, NGX_MDM_API_SQL_RESULT,
                                       1, 1, ngx_http_mdm_api_result_done);
}


static void
ngx_http_mdm_api_result_done(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc)
{
    u_char                  *body;
    size_t                   len;
    ngx_http_mdm_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_api_module);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_api_db_error(r, res, NULL));
        return;
    }

    if (PQntuples(res) == 0) {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND,
                                      "command %V was not queued for "
                                      "enrollment %V", &ctx->command_uuid,
                                      &ctx->enrollment_id));
        return;
    }

    if (PQgetisnull(res, 0, 0)) {
        ngx_http_finalize_request(r, ngx_mdm_api_error(r, NGX_HTTP_NOT_FOUND,
                                      "no result yet: the command is %s",
                                      PQgetvalue(res, 0, 1)));
        return;
    }

    /* the response outlives the result */
    len = PQgetlength(res, 0, 0);
    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(body, PQgetvalue(res, 0, 0), len);

    ngx_http_finalize_request(r, ngx_http_mdm_send(r, NGX_HTTP_OK,
                                  &ngx_http_mdm_api_plist_type, body, len));
}
