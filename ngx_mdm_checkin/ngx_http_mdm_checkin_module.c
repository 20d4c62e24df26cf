
/*
 * ngx_http_mdm_checkin_module: the MDM check-in protocol and the command
 * loop (PROTOCOL.md §3, §4) on one location, ServerURL and CheckInURL
 * alike.
 *
 * A request: read the whole body (PUT), find and verify the device
 * certificate (ngx_mdm_checkin_identity.c), parse the plist
 * (ngx_mdm_checkin_msg.c), run the message's step as one database round
 * trip (ngx_mdm_checkin_store.c), answer, and tell Redis about it without
 * waiting (ngx_mdm_checkin_events.c).  Never 401: devices unenroll on it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_checkin_module.h"


static ngx_int_t ngx_http_mdm_checkin_handler(ngx_http_request_t *r);
static void ngx_http_mdm_checkin_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_checkin_read_body(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_checkin_parse(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx);
static void ngx_http_mdm_checkin_msg_cleanup(void *data);
static ngx_int_t ngx_http_mdm_checkin_user_authenticate(
    ngx_http_request_t *r, ngx_http_mdm_checkin_ctx_t *ctx);

static void *ngx_http_mdm_checkin_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_checkin_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_mdm_checkin_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_checkin_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_mdm_checkin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_checkin_ca(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_mdm_checkin_cleanup_cas(void *data);
static void ngx_http_mdm_checkin_cleanup_verifier(void *data);
static ngx_int_t ngx_http_mdm_checkin_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_mdm_checkin_init_process(ngx_cycle_t *cycle);


ngx_http_mdm_checkin_hook_pt  ngx_http_mdm_checkin_dm_hook;
ngx_http_mdm_checkin_hook_pt  ngx_http_mdm_checkin_get_token_hook;


static ngx_conf_enum_t  ngx_http_mdm_checkin_signatures[] = {
    { ngx_string("off"), NGX_HTTP_MDM_CHECKIN_SIGNATURE_OFF },
    { ngx_string("on"), NGX_HTTP_MDM_CHECKIN_SIGNATURE_ON },
    { ngx_string("require"), NGX_HTTP_MDM_CHECKIN_SIGNATURE_REQUIRE },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_mdm_checkin_user_authenticates[] = {
    { ngx_string("decline"), NGX_HTTP_MDM_CHECKIN_UA_DECLINE },
    { ngx_string("digest"), NGX_HTTP_MDM_CHECKIN_UA_DIGEST },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_mdm_checkin_commands[] = {

    { ngx_string("mdm_checkin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_checkin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_checkin_ca"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_checkin_ca,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_checkin_grace"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_loc_conf_t, grace),
      NULL },

    { ngx_string("mdm_checkin_signature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_loc_conf_t, signature),
      &ngx_http_mdm_checkin_signatures },

    { ngx_string("mdm_checkin_forwarded_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_loc_conf_t, forwarded_header),
      NULL },

    { ngx_string("mdm_checkin_trusted_proxy"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_checkin_trusted_proxy,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_checkin_user_authenticate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_loc_conf_t, user_authenticate),
      &ngx_http_mdm_checkin_user_authenticates },

    { ngx_string("mdm_checkin_events"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, events),
      NULL },

    { ngx_string("mdm_checkin_events_maxlen"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, events_maxlen),
      NULL },

    { ngx_string("mdm_checkin_last_seen_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, last_seen_interval),
      NULL },

    { ngx_string("mdm_checkin_delivery_flush"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, delivery_flush),
      NULL },

    { ngx_string("mdm_checkin_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, batch),
      NULL },

    { ngx_string("mdm_checkin_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, cache),
      NULL },

    { ngx_string("mdm_checkin_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, cache_ttl),
      NULL },

    { ngx_string("mdm_checkin_cache_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, cache_size),
      NULL },

    { ngx_string("mdm_checkin_prepare"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_checkin_main_conf_t, prepare),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mdm_checkin_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_mdm_checkin_postconfiguration, /* postconfiguration */

    ngx_http_mdm_checkin_create_main_conf, /* create main configuration */
    ngx_http_mdm_checkin_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_mdm_checkin_create_loc_conf,  /* create location configuration */
    ngx_http_mdm_checkin_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_mdm_checkin_module = {
    NGX_MODULE_V1,
    &ngx_http_mdm_checkin_module_ctx,      /* module context */
    ngx_http_mdm_checkin_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_mdm_checkin_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_mdm_checkin_content_type =
    ngx_string("application/x-apple-aspen-mdm-checkin");

static ngx_str_t  ngx_http_mdm_checkin_text = ngx_string("text/plain");
static ngx_str_t  ngx_http_mdm_checkin_xml =
    ngx_string("application/xml; charset=UTF-8");

static u_char  ngx_http_mdm_checkin_digest_challenge[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
    "<plist version=\"1.0\">\n"
    "<dict>\n"
    "\t<key>DigestChallenge</key>\n"
    "\t<string></string>\n"
    "</dict>\n"
    "</plist>\n";


static ngx_int_t
ngx_http_mdm_checkin_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_mdm_checkin_ctx_t  *ctx;

    /* devices PUT; NanoMDM and MicroMDM also take POST */
    if (!(r->method & (NGX_HTTP_PUT|NGX_HTTP_POST))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mdm_checkin_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->lcf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_checkin_module);
    ngx_http_set_ctx(r, ctx, ngx_http_mdm_checkin_module);

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_mdm_checkin_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_mdm_checkin_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_mdm_checkin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_mdm_checkin_module);

    rc = ngx_http_mdm_checkin_read_body(r, ctx);

    if (rc == NGX_OK) {
        rc = ngx_http_mdm_checkin_identity(r, ctx);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_mdm_checkin_parse(r, ctx);
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_mdm_checkin_refuse(r, rc,
                                                             ctx->reason));
        return;
    }

    if (ctx->msg.kind == NGX_MDM_CHECKIN_KIND_CHECKIN
        && ctx->msg.type == NGX_MDM_CHECKIN_USER_AUTHENTICATE
        && ctx->lcf->user_authenticate == NGX_HTTP_MDM_CHECKIN_UA_DECLINE)
    {
        rc = ngx_http_mdm_checkin_user_authenticate(r, ctx);

    } else {
        rc = ngx_http_mdm_checkin_run(r, ctx);
    }

    ngx_http_finalize_request(r, rc);
}


/* the whole body in one piece: memory, or the temporary file nginx made */

static ngx_int_t
ngx_http_mdm_checkin_read_body(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    u_char       *p;
    size_t        len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        ctx->body = (u_char *) "";
        ctx->len = 0;
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        ctx->body = cl->buf->pos;
        ctx->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->body = p;
    ctx->len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm check-in: reading the body from \"%V\" "
                          "failed", &b->file->name);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p += n;
    }

    *p = '\0';

    return NGX_OK;
}


/*
 * The Content-Type tells a check-in from a command report, as in
 * NanoMDM; a body of the other kind fails with "no MessageType/Status".
 */

static ngx_int_t
ngx_http_mdm_checkin_parse(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    int                        expect;
    size_t                     max;
    ngx_str_t                 *type;
    ngx_pool_cleanup_t        *cln;
    ngx_mdm_checkin_rc_e       rc;
    ngx_http_core_loc_conf_t  *clcf;

    expect = NGX_MDM_CHECKIN_EXPECT_REPORT;
    type = r->headers_in.content_type ? &r->headers_in.content_type->value
                                      : NULL;

    if (type
        && type->len >= ngx_http_mdm_checkin_content_type.len
        && ngx_strncasecmp(type->data,
                           ngx_http_mdm_checkin_content_type.data,
                           ngx_http_mdm_checkin_content_type.len)
           == 0)
    {
        expect = NGX_MDM_CHECKIN_EXPECT_CHECKIN;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    max = clcf->client_max_body_size > 0
          ? (size_t) clcf->client_max_body_size : 0;

    rc = ngx_mdm_checkin_msg_parse(&ctx->msg, ctx->body, ctx->len, expect,
                                   max);

    cln->handler = ngx_http_mdm_checkin_msg_cleanup;
    cln->data = &ctx->msg;

    if (rc == NGX_MDM_CHECKIN_OK) {
        return NGX_OK;
    }

    if (rc == NGX_MDM_CHECKIN_ENOMEM) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm check-in: out of memory parsing %uz bytes",
                      ctx->len);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm check-in refused: %s: %s, %uz bytes, id \"%V\", "
                  "certificate %*s",
                  ngx_mdm_checkin_msg_strerror(rc), ctx->msg.err, ctx->len,
                  (ngx_str_t *) &ctx->msg.id, (size_t) 16,
                  ctx->identity.sha256_hex);

    ctx->reason = ctx->msg.err;

    return NGX_HTTP_BAD_REQUEST;
}


static void
ngx_http_mdm_checkin_msg_cleanup(void *data)
{
    ngx_mdm_checkin_msg_t  *msg = data;

    ngx_mdm_checkin_msg_free(msg);
}


/* decline management of a user channel: 410 [NM service/nanomdm/ua.go] */

static ngx_int_t
ngx_http_mdm_checkin_user_authenticate(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm check-in: UserAuthenticate of \"%V\" declined",
                  (ngx_str_t *) &ctx->msg.id);

    ngx_http_mdm_checkin_event(r, ctx, "checkin", NULL, 0);

    return ngx_http_mdm_checkin_refuse(r, 410,
                                       "user channel declined");
}


/*
 * Answers, called by the steps (ngx_mdm_checkin_store.c) once the
 * database has spoken.
 */

ngx_int_t
ngx_http_mdm_checkin_refuse(ngx_http_request_t *r, ngx_int_t status,
    const char *reason)
{
    u_char  *p;
    size_t   len;

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        return ngx_http_mdm_unavailable(r);
    }

    if (reason == NULL) {
        switch (status) {
        case NGX_HTTP_BAD_REQUEST:
            reason = "bad request";
            break;
        case NGX_HTTP_NOT_ALLOWED:
            return status;
        default:
            reason = "internal error";
        }
    }

    len = ngx_strlen(reason);

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, reason, len);
    p[len++] = '\n';

    return ngx_http_mdm_send(r, status, &ngx_http_mdm_checkin_text, p, len);
}


/* 200 with a plist (copied: the PGresult goes away) or an empty body */

ngx_int_t
ngx_http_mdm_checkin_answer(ngx_http_request_t *r, const u_char *body,
    size_t len)
{
    u_char  *p;

    static ngx_str_t  binary = ngx_string("application/octet-stream");

    if (len == 0) {
        return ngx_http_mdm_send(r, NGX_HTTP_OK, NULL, NULL, 0);
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, body, len);

    return ngx_http_mdm_send(r, NGX_HTTP_OK,
                             (p[0] == '<' || p[0] == 0xef)
                             ? &ngx_http_mdm_checkin_xml : &binary,
                             p, len);
}


/* {BootstrapToken: <data>} */

ngx_int_t
ngx_http_mdm_checkin_answer_bootstrap_token(ngx_http_request_t *r,
    const u_char *token, size_t len)
{
    u_char     *p, *body;
    ngx_str_t   src, dst;

    static const char  head[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
        "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
        "<plist version=\"1.0\">\n"
        "<dict>\n"
        "\t<key>BootstrapToken</key>\n"
        "\t<data>";
    static const char  tail[] = "</data>\n</dict>\n</plist>\n";

    if (len == 0) {
        return ngx_http_mdm_send(r, NGX_HTTP_OK, NULL, NULL, 0);
    }

    body = ngx_pnalloc(r->pool, sizeof(head) - 1
                                + ngx_base64_encoded_length(len)
                                + sizeof(tail) - 1);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, head, sizeof(head) - 1);

    src.data = (u_char *) token;
    src.len = len;
    dst.data = p;
    ngx_encode_base64(&dst, &src);

    p = ngx_cpymem(p + dst.len, tail, sizeof(tail) - 1);

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &ngx_http_mdm_checkin_xml,
                             body, p - body);
}


/* UserAuthenticate under "mdm_checkin_user_authenticate digest" */

ngx_int_t
ngx_http_mdm_checkin_answer_digest(ngx_http_request_t *r,
    ngx_http_mdm_checkin_ctx_t *ctx)
{
    if (ctx->msg.digest_response.len) {
        /* the second message: the user channel may enroll */
        return ngx_http_mdm_send(r, NGX_HTTP_OK, NULL, NULL, 0);
    }

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &ngx_http_mdm_checkin_xml,
                             ngx_http_mdm_checkin_digest_challenge,
                             sizeof(ngx_http_mdm_checkin_digest_challenge)
                             - 1);
}


/* configuration */

static void *
ngx_http_mdm_checkin_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_checkin_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    mcf->events = NGX_CONF_UNSET;
    mcf->events_maxlen = NGX_CONF_UNSET_UINT;
    mcf->last_seen_interval = NGX_CONF_UNSET_MSEC;
    mcf->delivery_flush = NGX_CONF_UNSET_MSEC;
    mcf->batch = NGX_CONF_UNSET_UINT;
    mcf->cache = NGX_CONF_UNSET;
    mcf->cache_ttl = NGX_CONF_UNSET_MSEC;
    mcf->cache_size = NGX_CONF_UNSET_UINT;
    mcf->prepare = NGX_CONF_UNSET;

    return mcf;
}


static char *
ngx_http_mdm_checkin_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mdm_checkin_main_conf_t  *mcf = conf;

    ngx_conf_init_value(mcf->events, 1);
    ngx_conf_init_uint_value(mcf->events_maxlen, 100000);
    ngx_conf_init_msec_value(mcf->last_seen_interval, 10000);
    ngx_conf_init_msec_value(mcf->delivery_flush, 100);
    ngx_conf_init_uint_value(mcf->batch, 1);
    ngx_conf_init_value(mcf->cache, 1);
    ngx_conf_init_msec_value(mcf->cache_ttl, 60000);
    ngx_conf_init_uint_value(mcf->cache_size, 100000);
    ngx_conf_init_value(mcf->prepare, 1);

    if (mcf->cache_size == 0 || mcf->cache_size > 10000000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_checkin_cache_size\" must be between 1 "
                           "and 10000000");
        return NGX_CONF_ERROR;
    }

    if (mcf->cache_ttl < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_checkin_cache_ttl\" must be 1s or more");
        return NGX_CONF_ERROR;
    }

    if (mcf->batch > 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_checkin_batch\" must be between 0 "
                           "and 1024");
        return NGX_CONF_ERROR;
    }

    if (mcf->delivery_flush == 0 || mcf->delivery_flush > 60000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_checkin_delivery_flush\" must be "
                           "between 1ms and 60s");
        return NGX_CONF_ERROR;
    }

    if (mcf->last_seen_interval == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_checkin_last_seen_interval\" must be "
                           "more than 0");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_mdm_checkin_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_checkin_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_checkin_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lcf->cas = NULL;
     *     lcf->verifier = NULL;
     *     lcf->forwarded_header = { 0, NULL };
     */

    lcf->enable = NGX_CONF_UNSET;
    lcf->grace = NGX_CONF_UNSET;
    lcf->signature = NGX_CONF_UNSET_UINT;
    lcf->trusted_proxies = NGX_CONF_UNSET_PTR;
    lcf->user_authenticate = NGX_CONF_UNSET_UINT;

    return lcf;
}


static char *
ngx_http_mdm_checkin_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_mdm_checkin_loc_conf_t  *prev = parent;
    ngx_http_mdm_checkin_loc_conf_t  *conf = child;

    X509_STORE          *store;
    ngx_pool_cleanup_t  *cln;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_sec_value(conf->grace, prev->grace, 0);
    ngx_conf_merge_uint_value(conf->signature, prev->signature,
                              NGX_HTTP_MDM_CHECKIN_SIGNATURE_OFF);
    ngx_conf_merge_str_value(conf->forwarded_header,
                             prev->forwarded_header, "");
    ngx_conf_merge_ptr_value(conf->trusted_proxies, prev->trusted_proxies,
                             NULL);
    ngx_conf_merge_uint_value(conf->user_authenticate,
                              prev->user_authenticate,
                              NGX_HTTP_MDM_CHECKIN_UA_DECLINE);

    if (conf->cas == NULL) {
        conf->cas = prev->cas;
        conf->verifier = prev->verifier;
    }

    if (conf->cas && conf->verifier == NULL) {
        store = ngx_mdm_x509_store_create(conf->cas);
        if (store == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "mdm_checkin_ca: %s", ngx_mdm_x509_error());
            return NGX_CONF_ERROR;
        }

        conf->verifier = ngx_mdm_x509_verifier_create(store, 0);
        X509_STORE_free(store);

        if (conf->verifier == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "mdm_checkin_ca: %s", ngx_mdm_x509_error());
            return NGX_CONF_ERROR;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            ngx_mdm_x509_verifier_free(conf->verifier);
            return NGX_CONF_ERROR;
        }

        cln->handler = ngx_http_mdm_checkin_cleanup_verifier;
        cln->data = conf->verifier;

        if (prev->cas == conf->cas) {
            prev->verifier = conf->verifier;
        }
    }

    if (conf->enable && conf->verifier == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_checkin\" needs the SCEP CA that issues "
                           "device identities: add \"mdm_checkin_ca "
                           "/path/ca.pem;\"");
        return NGX_CONF_ERROR;
    }

    if (conf->enable && conf->forwarded_header.len
        && conf->trusted_proxies == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_checkin_forwarded_header\" needs "
                           "\"mdm_checkin_trusted_proxy\": a forwarded "
                           "certificate is taken only from the load "
                           "balancers listed there");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_checkin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_checkin_loc_conf_t  *lcf = conf;

    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    if (lcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    lcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mdm_checkin_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_mdm_checkin_module);
    mcf->used = 1;

    return NGX_CONF_OK;
}


/* mdm_checkin_ca file.pem: every certificate in it is trusted */

static char *
ngx_http_mdm_checkin_ca(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_checkin_loc_conf_t  *lcf = conf;

    X509                *x;
    ngx_str_t           *value;
    ngx_pool_cleanup_t  *cln;
    STACK_OF(X509)      *chain;

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    chain = ngx_mdm_x509_load_chain((char *) value[1].data);
    if (chain == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": %s", &value[1],
                           ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    if (lcf->cas == NULL) {
        lcf->cas = sk_X509_new_null();
        cln = ngx_pool_cleanup_add(cf->pool, 0);

        if (lcf->cas == NULL || cln == NULL) {
            ngx_mdm_x509_chain_free(chain);
            return NGX_CONF_ERROR;
        }

        cln->handler = ngx_http_mdm_checkin_cleanup_cas;
        cln->data = lcf->cas;
    }

    while ((x = sk_X509_shift(chain)) != NULL) {
        if (!sk_X509_push(lcf->cas, x)) {
            X509_free(x);
            ngx_mdm_x509_chain_free(chain);
            return NGX_CONF_ERROR;
        }
    }

    ngx_mdm_x509_chain_free(chain);

    return NGX_CONF_OK;
}


static void
ngx_http_mdm_checkin_cleanup_cas(void *data)
{
    ngx_mdm_x509_chain_free(data);
}


static void
ngx_http_mdm_checkin_cleanup_verifier(void *data)
{
    ngx_mdm_x509_verifier_free(data);
}


/* the helper flushes last_seen from Redis to PostgreSQL */

static ngx_int_t
ngx_http_mdm_checkin_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_mdm_checkin_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_mdm_checkin_module);

    if (!mcf->used) {
        return NGX_OK;
    }

    return ngx_mdm_helper_register(cf, ngx_mdm_checkin_last_seen_init);
}


/* the worker's caches: verified certificates, and Idle answers */

static ngx_int_t
ngx_http_mdm_checkin_init_process(ngx_cycle_t *cycle)
{
    if (ngx_mdm_checkin_batch_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_mdm_checkin_delivery_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_mdm_checkin_identity_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_mdm_checkin_cache_init_process(cycle);
}
