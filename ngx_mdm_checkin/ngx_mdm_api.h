
/*
 * nginx-mdm admin JSON API: what its files share.
 *
 * ngx_http_mdm_api_module.c   directives, access check, routing, bodies
 * ngx_mdm_api_json.c          response building, errors, ID lists
 * ngx_mdm_api_commands.c      enqueue, command status, cancel, results
 * ngx_mdm_api_enrollments.c   enrollments, their queues, push now
 * ngx_mdm_api_identity.c      SCEP challenges, certificate revocation
 * ngx_mdm_api_sql.h           every statement the API runs
 */


#ifndef _NGX_MDM_API_H_INCLUDED_
#define _NGX_MDM_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>
#include "ngx_mdm_core.h"


#define NGX_MDM_API_MAX_SEGMENTS   4
#define NGX_MDM_API_ID_MAX_LEN     1024
#define NGX_MDM_API_PAGE_DEFAULT   100
#define NGX_MDM_API_PAGE_MAX       10000
#define NGX_MDM_API_ERR_LEN        512
#define NGX_HTTP_MDM_MULTI_STATUS  207


typedef struct {
    ngx_flag_t                  enabled;        /* mdm_api here */
    ngx_http_complex_value_t   *auth;           /* NULL: "off" */
    time_t                      challenge_ttl;
    time_t                      challenge_max_ttl;
    ngx_uint_t                  max_ids;
    ngx_str_t                   file;           /* where mdm_api is */
    ngx_uint_t                  line;
} ngx_http_mdm_api_loc_conf_t;


typedef struct ngx_http_mdm_api_ctx_s  ngx_http_mdm_api_ctx_t;

typedef ngx_int_t (*ngx_http_mdm_api_handler_pt)(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);


/* one enrollment ID (or certificate serial) of a request, and its fate */
typedef struct ngx_mdm_api_id_s  ngx_mdm_api_id_t;

struct ngx_mdm_api_id_s {
    ngx_str_t                   id;
    const char                 *error;          /* NULL: done */
    ngx_mdm_api_id_t           *next;           /* hash chain */
};


/* a list of distinct IDs in request order, with a hash to find them */
typedef struct {
    ngx_array_t                 ids;            /* ngx_mdm_api_id_t */
    ngx_mdm_api_id_t          **hash;
    ngx_uint_t                  mask;
    ngx_uint_t                  failed;
    ngx_uint_t                  unknown;        /* failed as unknown */
    size_t                      literal_len;
} ngx_mdm_api_ids_t;


/* a response body under construction: a chain of large buffers */
typedef struct {
    ngx_pool_t                 *pool;
    ngx_chain_t                *first;
    ngx_chain_t               **last;
    ngx_buf_t                  *buf;
    size_t                      total;
    size_t                      chunk;
    unsigned                    failed:1;
} ngx_mdm_api_out_t;


struct ngx_http_mdm_api_ctx_s {
    ngx_http_mdm_api_loc_conf_t  *conf;
    ngx_str_t                     actor;        /* the mdm_api_auth value */
    ngx_str_t                     seg[NGX_MDM_API_MAX_SEGMENTS];
    ngx_uint_t                    nseg;
    ngx_http_mdm_api_handler_pt   handler;

    u_char                       *body;
    size_t                        body_len;
    json_t                       *json;         /* the parsed body */

    ngx_mdm_api_ids_t             ids;
    ngx_mdm_api_ids_t             serials;      /* decimal */
    ngx_str_t                     command_uuid;
    ngx_str_t                     request_type;
    ngx_str_t                     enrollment_id;
    ngx_uint_t                    total;
    unsigned                      push:1;
    unsigned                      raw:1;

    ngx_uint_t                    err_status;   /* ngx_mdm_api_bad() */
    size_t                        err_len;
    u_char                        err[NGX_MDM_API_ERR_LEN];
};


extern ngx_module_t  ngx_http_mdm_api_module;


/* ngx_http_mdm_api_module.c */
char *ngx_http_mdm_api_cstr(ngx_pool_t *pool, ngx_str_t *s);
ngx_int_t ngx_http_mdm_api_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);
ngx_int_t ngx_http_mdm_api_arg_flag(ngx_http_request_t *r, const char *name,
    ngx_uint_t *flag);
ngx_int_t ngx_http_mdm_api_page(ngx_http_request_t *r, ngx_int_t *limit,
    ngx_str_t *after);
void ngx_http_mdm_api_push_hint(ngx_http_request_t *r);
ngx_int_t ngx_http_mdm_api_db_error(ngx_http_request_t *r, PGresult *res,
    const char *what);
ngx_int_t ngx_http_mdm_api_cancelled(ngx_http_request_t *r, PGresult *res,
    ngx_int_t rc, const char *what, const char *key, ngx_str_t *id);
ngx_int_t ngx_http_mdm_api_query_path(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, const char *sql, ngx_uint_t two,
    int result_format, ngx_http_mdm_pg_handler_pt handler);

/* ngx_mdm_api_json.c: responses */
ngx_int_t ngx_mdm_api_out_init(ngx_mdm_api_out_t *out, ngx_pool_t *pool,
    size_t hint);
u_char *ngx_mdm_api_out_reserve(ngx_mdm_api_out_t *out, size_t len);
void ngx_mdm_api_out_raw(ngx_mdm_api_out_t *out, const void *data,
    size_t len);
void ngx_mdm_api_out_str(ngx_mdm_api_out_t *out, const u_char *data,
    size_t len);
void ngx_mdm_api_out_cstr(ngx_mdm_api_out_t *out, const char *s);
void ngx_mdm_api_out_base64(ngx_mdm_api_out_t *out, const u_char *data,
    size_t len);
void ngx_mdm_api_out_json(ngx_mdm_api_out_t *out, json_t *json);
void ngx_mdm_api_out_pg(ngx_mdm_api_out_t *out, PGresult *res, int row,
    int col);
void ngx_mdm_api_out_pg_str(ngx_mdm_api_out_t *out, PGresult *res, int row,
    int col);
void ngx_mdm_api_out_page_end(ngx_mdm_api_out_t *out, PGresult *res,
    ngx_uint_t full, int col);

/* a row's columns from col on, as "key": value pairs joined by ", " */
typedef struct {
    const char                *key;
    ngx_uint_t                 string;   /* a JSON string, else as is */
} ngx_mdm_api_field_t;

void ngx_mdm_api_out_fields(ngx_mdm_api_out_t *out, PGresult *res, int row,
    int col, const ngx_mdm_api_field_t *fields, ngx_uint_t n);

#define ngx_mdm_api_out_lit(out, s)                                          \
    ngx_mdm_api_out_raw(out, s, sizeof(s) - 1)

ngx_int_t ngx_mdm_api_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_mdm_api_out_t *out);
ngx_int_t ngx_mdm_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...);
ngx_int_t ngx_mdm_api_bad(ngx_http_mdm_api_ctx_t *ctx, ngx_uint_t status,
    const char *fmt, ...);
ngx_int_t ngx_mdm_api_fail(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_uint_t ngx_mdm_api_pg_bool(PGresult *res, int row, int col);

/* ngx_mdm_api_json.c: request bodies and ID lists */
ngx_int_t ngx_mdm_api_read_body(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_mdm_api_parse_body(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, ngx_uint_t optional);
ngx_int_t ngx_mdm_api_ids_init(ngx_mdm_api_ids_t *ids, ngx_pool_t *pool,
    ngx_uint_t n);
ngx_int_t ngx_mdm_api_ids_add(ngx_mdm_api_ids_t *ids, u_char *data,
    size_t len);
ngx_int_t ngx_mdm_api_ids_from_json(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx, const char *key, ngx_uint_t required);
ngx_mdm_api_id_t *ngx_mdm_api_ids_find(ngx_mdm_api_ids_t *ids,
    u_char *data, size_t len);
void ngx_mdm_api_ids_fail(ngx_mdm_api_ids_t *ids, u_char *data, size_t len,
    const char *error, ngx_uint_t unknown);
char *ngx_mdm_api_ids_literal(ngx_mdm_api_ids_t *ids, ngx_pool_t *pool);
ngx_uint_t ngx_mdm_api_ids_status(ngx_mdm_api_ids_t *ids);
void ngx_mdm_api_out_ids(ngx_mdm_api_out_t *out, ngx_mdm_api_ids_t *ids,
    const char *key);

/* ngx_mdm_api_commands.c */
ngx_int_t ngx_http_mdm_api_enqueue(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_command(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_command_cancel(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_command_result(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);

/* ngx_mdm_api_enrollments.c */
ngx_int_t ngx_http_mdm_api_enrollments(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_enrollment(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_queue(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_queue_clear(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_queue_cancel(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_push(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);

/* ngx_mdm_api_identity.c */
ngx_int_t ngx_http_mdm_api_challenge(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);
ngx_int_t ngx_http_mdm_api_revoke(ngx_http_request_t *r,
    ngx_http_mdm_api_ctx_t *ctx);


#endif /* _NGX_MDM_API_H_INCLUDED_ */
