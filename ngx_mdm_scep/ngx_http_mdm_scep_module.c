
/*
 * ngx_http_mdm_scep_module: the SCEP CA that issues device identities
 * (RFC 8894), at the URL enrollment profiles name.
 *
 * The CA, RA and chain are read here at configuration time, in the
 * master, so that nginx -t checks them and a reload rotates them.  This
 * file answers GetCACaps and GetCACert and reads a PKIOperation (POST
 * body, or GET "message"); ngx_http_mdm_scep_pkiop.c runs it.  The
 * mdm_scep_crl location serves the CRL as DER.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_x509.h"
#include "ngx_mdm_scep_pki.h"
#include "ngx_http_mdm_scep.h"


typedef ngx_int_t (*ngx_http_mdm_scep_op_pt)(ngx_http_request_t *r,
    ngx_http_mdm_scep_loc_conf_t *lcf);


/* the operations (RFC 8894 4), by the "operation" query argument */
typedef struct {
    ngx_str_t                         name;
    ngx_uint_t                        methods;
    ngx_http_mdm_scep_op_pt           handler;
} ngx_http_mdm_scep_op_t;


static void *ngx_http_mdm_scep_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_mdm_scep_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_scep_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_mdm_scep(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_scep_cert(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_scep_chain(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_scep_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_scep_challenge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_scep_serial_block(ngx_conf_t *cf, void *post,
    void *data);
static void ngx_http_mdm_scep_free_cert(void *data);
static void ngx_http_mdm_scep_free_chain(void *data);
static void ngx_http_mdm_scep_free_key(void *data);
static void ngx_http_mdm_scep_free_ca(void *data);
static ngx_int_t ngx_http_mdm_scep_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_mdm_scep_legacy(ngx_conf_t *cf);
static ngx_http_mdm_scep_ca_t *ngx_http_mdm_scep_ca(ngx_conf_t *cf,
    ngx_http_mdm_scep_main_conf_t *smcf, ngx_http_mdm_scep_loc_conf_t *lcf);
static ngx_int_t ngx_http_mdm_scep_init_module(ngx_cycle_t *cycle);

static ngx_int_t ngx_http_mdm_scep_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_scep_arg(ngx_http_request_t *r, char *name,
    size_t len, ngx_str_t *value);
static ngx_int_t ngx_http_mdm_scep_get_ca_caps(ngx_http_request_t *r,
    ngx_http_mdm_scep_loc_conf_t *lcf);
static ngx_int_t ngx_http_mdm_scep_get_ca_cert(ngx_http_request_t *r,
    ngx_http_mdm_scep_loc_conf_t *lcf);
static ngx_int_t ngx_http_mdm_scep_pki_operation(ngx_http_request_t *r,
    ngx_http_mdm_scep_loc_conf_t *lcf);
static void ngx_http_mdm_scep_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_scep_read_body(ngx_http_request_t *r,
    u_char **body, size_t *len);
static ngx_int_t ngx_http_mdm_scep_get_message(ngx_http_request_t *r,
    ngx_str_t *message);
static ngx_int_t ngx_http_mdm_scep_crl_handler(ngx_http_request_t *r);
static void ngx_http_mdm_scep_crl_done(ngx_http_request_t *r, ngx_int_t rc);
static ngx_int_t ngx_http_mdm_scep_crl_send(ngx_http_request_t *r);


static ngx_conf_num_bounds_t  ngx_http_mdm_scep_serial_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_HTTP_MDM_SCEP_SERIAL_MAX
};

static ngx_conf_post_t  ngx_http_mdm_scep_serial_post = {
    ngx_http_mdm_scep_serial_block
};


static ngx_command_t  ngx_http_mdm_scep_commands[] = {

    { ngx_string("mdm_scep"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_scep,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_scep_crl"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_scep,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_scep_ca_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_scep_cert,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, ca_cert),
      NULL },

    { ngx_string("mdm_scep_ca_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_mdm_scep_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, ca_key),
      NULL },

    { ngx_string("mdm_scep_ca_chain"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_scep_chain,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, ca_chain),
      NULL },

    { ngx_string("mdm_scep_ra_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_scep_cert,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, ra_cert),
      NULL },

    { ngx_string("mdm_scep_ra_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_mdm_scep_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, ra_key),
      NULL },

    { ngx_string("mdm_scep_challenge"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_scep_challenge,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_scep_one_time_challenges"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, one_time),
      NULL },

    { ngx_string("mdm_scep_des"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, des),
      NULL },

    { ngx_string("mdm_scep_prepare"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, prepare),
      NULL },

    { ngx_string("mdm_scep_validity"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, validity),
      NULL },

    { ngx_string("mdm_scep_renewal_grace"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, renewal_grace),
      NULL },

    { ngx_string("mdm_scep_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, max_body),
      NULL },

    { ngx_string("mdm_scep_crl_validity"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, crl_validity),
      NULL },

    { ngx_string("mdm_scep_crl_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, crl_cache),
      NULL },

    { ngx_string("mdm_scep_serial_block"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_scep_loc_conf_t, serial_block),
      &ngx_http_mdm_scep_serial_post },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mdm_scep_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_mdm_scep_postconfiguration,   /* postconfiguration */

    ngx_http_mdm_scep_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_mdm_scep_create_loc_conf,     /* create location configuration */
    ngx_http_mdm_scep_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_mdm_scep_module = {
    NGX_MODULE_V1,
    &ngx_http_mdm_scep_module_ctx,         /* module context */
    ngx_http_mdm_scep_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_mdm_scep_init_module,         /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * What we support, and only that (RFC 8894 3.5.2): AES and SHA-256 are
 * what SCEPStandard implies; DES3, SHA-1 and SHA-512 are what older Apple
 * clients use, and Apple wants one SHA keyword [micromdm/scep#23].
 */
static u_char  ngx_http_mdm_scep_caps[] =
    "AES\n"
    "DES3\n"
    "POSTPKIOperation\n"
    "Renewal\n"
    "SCEPStandard\n"
    "SHA-1\n"
    "SHA-256\n"
    "SHA-512\n";


static ngx_http_mdm_scep_op_t  ngx_http_mdm_scep_ops[] = {
    { ngx_string("GetCACaps"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_http_mdm_scep_get_ca_caps },
    { ngx_string("GetCACert"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_http_mdm_scep_get_ca_cert },
    { ngx_string("PKIOperation"), NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST,
      ngx_http_mdm_scep_pki_operation },
    { ngx_null_string, 0, NULL }
};


/* configuration */

static void *
ngx_http_mdm_scep_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_scep_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_scep_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&smcf->locations, cf->pool, 4,
                       sizeof(ngx_http_mdm_scep_loc_conf_t *))
        != NGX_OK
        || ngx_array_init(&smcf->cas, cf->pool, 2,
                          sizeof(ngx_http_mdm_scep_ca_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return smcf;
}


static void *
ngx_http_mdm_scep_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_scep_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_scep_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lcf->ca = NULL;
     *     lcf->challenge = { 0, NULL };
     */

    lcf->ca_cert = NGX_CONF_UNSET_PTR;
    lcf->ca_key = NGX_CONF_UNSET_PTR;
    lcf->ca_chain = NGX_CONF_UNSET_PTR;
    lcf->ra_cert = NGX_CONF_UNSET_PTR;
    lcf->ra_key = NGX_CONF_UNSET_PTR;
    lcf->one_time = NGX_CONF_UNSET;
    lcf->des = NGX_CONF_UNSET;
    lcf->prepare = NGX_CONF_UNSET;
    lcf->validity = NGX_CONF_UNSET;
    lcf->renewal_grace = NGX_CONF_UNSET;
    lcf->max_body = NGX_CONF_UNSET_SIZE;
    lcf->crl_validity = NGX_CONF_UNSET;
    lcf->crl_cache = NGX_CONF_UNSET;
    lcf->serial_block = NGX_CONF_UNSET_UINT;

    return lcf;
}


static char *
ngx_http_mdm_scep_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_mdm_scep_loc_conf_t  *prev = parent;
    ngx_http_mdm_scep_loc_conf_t  *conf = child;

    ngx_conf_merge_ptr_value(conf->ca_cert, prev->ca_cert, NULL);
    ngx_conf_merge_ptr_value(conf->ca_key, prev->ca_key, NULL);
    ngx_conf_merge_ptr_value(conf->ca_chain, prev->ca_chain, NULL);
    ngx_conf_merge_ptr_value(conf->ra_cert, prev->ra_cert, NULL);
    ngx_conf_merge_ptr_value(conf->ra_key, prev->ra_key, NULL);

    if (conf->challenge.data == NULL) {
        conf->challenge = prev->challenge;
        ngx_memcpy(conf->challenge_digest, prev->challenge_digest,
                   NGX_HTTP_MDM_SCEP_DIGEST_LEN);
    }

    ngx_conf_merge_value(conf->one_time, prev->one_time, 1);
    ngx_conf_merge_value(conf->des, prev->des, 0);
    ngx_conf_merge_value(conf->prepare, prev->prepare, 1);
    ngx_conf_merge_sec_value(conf->validity, prev->validity, 365 * 86400);
    ngx_conf_merge_sec_value(conf->renewal_grace, prev->renewal_grace, 0);
    ngx_conf_merge_size_value(conf->max_body, prev->max_body, 64 * 1024);
    ngx_conf_merge_sec_value(conf->crl_validity, prev->crl_validity, 86400);
    ngx_conf_merge_sec_value(conf->crl_cache, prev->crl_cache, 60);
    ngx_conf_merge_uint_value(conf->serial_block, prev->serial_block, 32);

    return NGX_CONF_OK;
}


/* mdm_scep and mdm_scep_crl: the handlers of a location */

static char *
ngx_http_mdm_scep(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_scep_loc_conf_t  *lcf = conf;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_mdm_scep_loc_conf_t   **loc;
    ngx_http_mdm_scep_main_conf_t   *smcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler != NULL) {
        return "is duplicate, or the location has another handler";
    }

    clcf->handler = (cmd->name.len == sizeof("mdm_scep") - 1)
                    ? ngx_http_mdm_scep_handler
                    : ngx_http_mdm_scep_crl_handler;

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_mdm_scep_module);

    loc = ngx_array_push(&smcf->locations);
    if (loc == NULL) {
        return NGX_CONF_ERROR;
    }

    *loc = lcf;

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_scep_cert(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    X509                **field;
    ngx_str_t            *value;
    ngx_pool_cleanup_t   *cln;

    field = (X509 **) ((u_char *) conf + cmd->offset);

    if (*field != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    *field = ngx_mdm_x509_load_cert((char *) value[1].data);

    if (*field == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s",
                           &cmd->name, ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_mdm_scep_free_cert;
    cln->data = *field;

    if (ngx_mdm_x509_expires_in(*field, ngx_time()) < 0) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "%V: \"%V\" has expired", &cmd->name, &value[1]);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_scep_chain(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_scep_loc_conf_t  *lcf = conf;

    ngx_str_t           *value;
    ngx_pool_cleanup_t  *cln;

    if (lcf->ca_chain != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* "off": none here, whatever a level above says */
    if (ngx_strcmp(value[1].data, "off") == 0) {
        lcf->ca_chain = NULL;
        return NGX_CONF_OK;
    }

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    lcf->ca_chain = ngx_mdm_x509_load_chain((char *) value[1].data);

    if (lcf->ca_chain == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s",
                           &cmd->name, ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_mdm_scep_free_chain;
    cln->data = lcf->ca_chain;

    return NGX_CONF_OK;
}


/* "mdm_scep_ca_key file [passphrase_file]", as ssl_password_file */

static char *
ngx_http_mdm_scep_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char               *p, *last;
    ssize_t               n;
    EVP_PKEY            **field;
    ngx_fd_t              fd;
    ngx_str_t            *value;
    ngx_pool_cleanup_t   *cln;
    u_char                pass[1024];

    field = (EVP_PKEY **) ((u_char *) conf + cmd->offset);

    if (*field != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    p = NULL;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 3) {
        if (ngx_conf_full_name(cf->cycle, &value[2], 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        fd = ngx_open_file(value[2].data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
        if (fd == NGX_INVALID_FILE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "%V: cannot open passphrase file \"%V\"",
                               &cmd->name, &value[2]);
            return NGX_CONF_ERROR;
        }

        n = ngx_read_fd(fd, pass, sizeof(pass) - 1);
        (void) ngx_close_file(fd);

        if (n < 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "%V: cannot read passphrase file \"%V\"",
                               &cmd->name, &value[2]);
            return NGX_CONF_ERROR;
        }

        /* the first line */
        last = ngx_strlchr(pass, pass + n, LF);
        last = last ? last : pass + n;

        if (last > pass && last[-1] == CR) {
            last--;
        }

        *last = '\0';
        p = pass;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    *field = ngx_mdm_x509_load_key((char *) value[1].data, (char *) p);

    ngx_explicit_memzero(pass, sizeof(pass));

    if (*field == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s",
                           &cmd->name, ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_mdm_scep_free_key;
    cln->data = *field;

    return NGX_CONF_OK;
}


/* the static challenge: only its digest is compared, in constant time */

static char *
ngx_http_mdm_scep_challenge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_scep_loc_conf_t  *lcf = conf;

    ngx_str_t  *value;

    if (lcf->challenge.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "takes a non-empty challenge";
    }

    lcf->challenge = value[1];

    if (EVP_Digest(value[1].data, value[1].len, lcf->challenge_digest, NULL,
                   EVP_sha256(), NULL)
        != 1)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_scep_serial_block(ngx_conf_t *cf, void *post, void *data)
{
    return ngx_conf_check_num_bounds(cf, &ngx_http_mdm_scep_serial_bounds,
                                     data);
}


static void
ngx_http_mdm_scep_free_cert(void *data)
{
    X509_free(data);
}


static void
ngx_http_mdm_scep_free_chain(void *data)
{
    ngx_mdm_x509_chain_free(data);
}


static void
ngx_http_mdm_scep_free_key(void *data)
{
    EVP_PKEY_free(data);
}


static void
ngx_http_mdm_scep_free_ca(void *data)
{
    ngx_http_mdm_scep_ca_t  *ca = data;

    ngx_http_mdm_scep_crl_free(ca);
}


/*
 * After every merge: each location with mdm_scep or mdm_scep_crl gets its
 * CA, built once for all the locations that name the same files.
 */

static ngx_int_t
ngx_http_mdm_scep_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_http_mdm_core_main_conf_t   *cmcf;
    ngx_http_mdm_scep_loc_conf_t   **loc;
    ngx_http_mdm_scep_main_conf_t   *smcf;

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_mdm_scep_module);

    if (smcf->locations.nelts == 0) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_module);

    if (cmcf->pg_conninfo.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mdm_scep needs mdm_postgres: every issued "
                           "certificate is recorded there");
        return NGX_ERROR;
    }

    loc = smcf->locations.elts;

    for (i = 0; i < smcf->locations.nelts; i++) {
        loc[i]->ca = ngx_http_mdm_scep_ca(cf, smcf, loc[i]);
        if (loc[i]->ca == NULL) {
            return NGX_ERROR;
        }

        if (loc[i]->validity <= 0 || loc[i]->crl_validity <= 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "mdm_scep_validity and mdm_scep_crl_validity "
                               "must be positive");
            return NGX_ERROR;
        }

        if (loc[i]->des && ngx_http_mdm_scep_legacy(cf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * mdm_scep_des: OpenSSL 3 keeps single DES in its legacy provider.  Once
 * one provider is loaded by hand the default one is not loaded by itself
 * any more, so both are; they stay loaded for the life of the process.
 */

static ngx_int_t
ngx_http_mdm_scep_legacy(ngx_conf_t *cf)
{
    static ngx_uint_t  loaded;

    if (loaded) {
        return NGX_OK;
    }

    if (OSSL_PROVIDER_load(NULL, "default") == NULL
        || OSSL_PROVIDER_load(NULL, "legacy") == NULL)
    {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "mdm_scep_des: cannot load OpenSSL's legacy provider");
        return NGX_ERROR;
    }

    loaded = 1;

    return NGX_OK;
}


static ngx_http_mdm_scep_ca_t *
ngx_http_mdm_scep_ca(ngx_conf_t *cf, ngx_http_mdm_scep_main_conf_t *smcf,
    ngx_http_mdm_scep_loc_conf_t *lcf)
{
    int                       n;
    u_char                   *p;
    size_t                    len;
    ngx_uint_t                i;
    const char               *err;
    unsigned char            *der;
    ngx_pool_cleanup_t       *cln;
    ngx_http_mdm_scep_ca_t   *ca, **cas;

    if (lcf->ca_cert == NULL || lcf->ca_key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mdm_scep needs mdm_scep_ca_certificate and "
                           "mdm_scep_ca_key in its location or above");
        return NULL;
    }

    cas = smcf->cas.elts;

    for (i = 0; i < smcf->cas.nelts; i++) {
        ca = cas[i];

        if (ca->pki.cert == lcf->ca_cert && ca->pki.key == lcf->ca_key
            && ca->pki.chain == lcf->ca_chain
            && ca->pki.ra_cert == lcf->ra_cert
            && ca->pki.ra_key == lcf->ra_key)
        {
            return ca;
        }
    }

    ca = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_scep_ca_t));
    cln = ngx_pool_cleanup_add(cf->pool, 0);
    cas = ngx_array_push(&smcf->cas);
    if (ca == NULL || cln == NULL || cas == NULL) {
        return NULL;
    }

    *cas = ca;
    cln->handler = ngx_http_mdm_scep_free_ca;
    cln->data = ca;

    ca->pki.cert = lcf->ca_cert;
    ca->pki.key = lcf->ca_key;
    ca->pki.chain = lcf->ca_chain;
    ca->pki.ra_cert = lcf->ra_cert;
    ca->pki.ra_key = lcf->ra_key;

    if (ngx_mdm_scep_ca_init(&ca->pki, &err) != NGX_MDM_SCEP_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mdm_scep_ca_certificate, mdm_scep_ca_key, "
                           "mdm_scep_ra_*: %s", err);
        ERR_clear_error();
        return NULL;
    }

    if (ngx_mdm_x509_not_after(ca->pki.cert, &ca->not_after)
        != NGX_MDM_X509_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mdm_scep_ca_certificate: unreadable notAfter");
        return NULL;
    }

    /* GetCACert: the CA alone as DER, or CA, RA and chain as PKCS#7 */

    der = NULL;

    if (ca->pki.ra_cert == NULL && ca->pki.chain == NULL) {
        n = i2d_X509(ca->pki.cert, &der);
        len = n > 0 ? (size_t) n : 0;
        ngx_str_set(&ca->ca_certs_type, "application/x-x509-ca-cert");

    } else {
        if (ngx_mdm_scep_ca_certs(&ca->pki, &der, &len) != NGX_MDM_SCEP_OK) {
            len = 0;
        }

        ngx_str_set(&ca->ca_certs_type, "application/x-x509-ca-ra-cert");
    }

    p = len ? ngx_pnalloc(cf->pool, len) : NULL;

    if (p == NULL) {
        OPENSSL_free(der);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mdm_scep: cannot encode the GetCACert answer");
        return NULL;
    }

    ngx_memcpy(p, der, len);
    OPENSSL_free(der);

    ca->ca_certs.data = p;
    ca->ca_certs.len = len;

    return ca;
}


static ngx_int_t
ngx_http_mdm_scep_init_module(ngx_cycle_t *cycle)
{
    /* the attribute OIDs, once, before the workers fork */

    if (ngx_mdm_scep_init() != NGX_MDM_SCEP_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "mdm scep: cannot create the SCEP attribute OIDs");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a request */

static ngx_int_t
ngx_http_mdm_scep_handler(ngx_http_request_t *r)
{
    ngx_str_t                      op;
    ngx_http_mdm_scep_op_t        *o;
    ngx_http_mdm_scep_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_scep_module);

    if (ngx_http_mdm_scep_arg(r, "operation", sizeof("operation") - 1, &op)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: no operation in the query");
        return ngx_http_mdm_scep_refuse(r, NGX_HTTP_BAD_REQUEST,
                                        "missing operation\n");
    }

    for (o = ngx_http_mdm_scep_ops; o->handler; o++) {
        if (o->name.len == op.len
            && ngx_strncasecmp(o->name.data, op.data, op.len) == 0)
        {
            break;
        }
    }

    if (o->handler == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: unknown operation \"%V\"", &op);
        return ngx_http_mdm_scep_refuse(r, NGX_HTTP_BAD_REQUEST,
                                        "unknown operation\n");
    }

    if (!(r->method & o->methods)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: method not allowed for %V", &o->name);
        (void) ngx_http_discard_request_body(r);
        return NGX_HTTP_NOT_ALLOWED;
    }

    return o->handler(r, lcf);
}


/*
 * A query argument.  Apple appends "?operation=..." to the profile's URL
 * even when it has a query already, so "?" separates arguments too.
 * The value is returned as sent (still escaped); an empty one is absent.
 */

static ngx_int_t
ngx_http_mdm_scep_arg(ngx_http_request_t *r, char *name, size_t len,
    ngx_str_t *value)
{
    u_char  *p, *last, *end;

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        end = p;

        while (end < last && *end != '&' && *end != '?') {
            end++;
        }

        if ((size_t) (end - p) > len && p[len] == '='
            && ngx_strncasecmp(p, (u_char *) name, len) == 0)
        {
            value->data = p + len + 1;
            value->len = end - value->data;

            return value->len ? NGX_OK : NGX_DECLINED;
        }

        p = end + 1;
    }

    return NGX_DECLINED;
}


/*
 * A transport-level refusal, logged by the caller: a short text/plain
 * body, the text given or the status's own.
 */

ngx_int_t
ngx_http_mdm_scep_refuse(ngx_http_request_t *r, ngx_uint_t status,
    char *text)
{
    ngx_int_t  rc;

    static ngx_str_t  type = ngx_string("text/plain");

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (text == NULL) {
        text = (status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE)
               ? "pkiMessage too large\n" : "bad SCEP request\n";
    }

    return ngx_http_mdm_send(r, status, &type, (u_char *) text,
                             ngx_strlen(text));
}


static ngx_int_t
ngx_http_mdm_scep_get_ca_caps(ngx_http_request_t *r,
    ngx_http_mdm_scep_loc_conf_t *lcf)
{
    ngx_int_t  rc;

    static ngx_str_t  type = ngx_string("text/plain");

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &type, ngx_http_mdm_scep_caps,
                             sizeof(ngx_http_mdm_scep_caps) - 1);
}


static ngx_int_t
ngx_http_mdm_scep_get_ca_cert(ngx_http_request_t *r,
    ngx_http_mdm_scep_loc_conf_t *lcf)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &lcf->ca->ca_certs_type,
                             lcf->ca->ca_certs.data, lcf->ca->ca_certs.len);
}


static ngx_int_t
ngx_http_mdm_scep_pki_operation(ngx_http_request_t *r,
    ngx_http_mdm_scep_loc_conf_t *lcf)
{
    ngx_int_t  rc;
    ngx_str_t  message;

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        rc = ngx_http_mdm_scep_get_message(r, &message);
        if (rc != NGX_OK) {
            return ngx_http_mdm_scep_refuse(r, rc, NULL);
        }

        return ngx_http_mdm_scep_pkiop(r, message.data, message.len);
    }

    if (r->headers_in.content_length_n > (off_t) lcf->max_body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: PKIOperation body of %O bytes is over "
                      "mdm_scep_max_body", r->headers_in.content_length_n);
        return ngx_http_mdm_scep_refuse(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        NULL);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_mdm_scep_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_mdm_scep_body_handler(ngx_http_request_t *r)
{
    u_char     *body;
    size_t      len;
    ngx_int_t   rc;

    rc = ngx_http_mdm_scep_read_body(r, &body, &len);

    if (rc == NGX_OK) {
        rc = ngx_http_mdm_scep_pkiop(r, body, len);

    } else if (rc != NGX_HTTP_INTERNAL_SERVER_ERROR) {
        rc = ngx_http_mdm_scep_refuse(r, rc, NULL);
    }

    ngx_http_finalize_request(r, rc);
}


/* the whole body in one piece: memory, or the temporary file nginx made */

static ngx_int_t
ngx_http_mdm_scep_read_body(ngx_http_request_t *r, u_char **body,
    size_t *len)
{
    u_char                        *p;
    size_t                         size;
    ssize_t                        n;
    ngx_buf_t                     *b;
    ngx_chain_t                   *cl;
    ngx_http_mdm_scep_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_scep_module);

    size = 0;

    if (r->request_body != NULL) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            b = cl->buf;
            size += b->in_file ? (size_t) (b->file_last - b->file_pos)
                               : (size_t) (b->last - b->pos);
        }
    }

    if (size == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: PKIOperation without a body");
        return NGX_HTTP_BAD_REQUEST;
    }

    /* a chunked body has no Content-Length to check first */
    if (size > lcf->max_body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: PKIOperation body of %uz bytes is over "
                      "mdm_scep_max_body", size);
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        *body = cl->buf->pos;
        *len = size;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *body = p;
    *len = size;

    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "mdm scep: reading the body from \"%V\" failed",
                          &b->file->name);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p += n;
    }

    return NGX_OK;
}


/*
 * GET: "message" is the base64 of the pkiMessage, URL-escaped or not.
 * macOS leaves "+" and "/" bare [smallstep/certificates#1570], so "+"
 * is never a space; a space that a proxy made of one is taken back.
 */

static ngx_int_t
ngx_http_mdm_scep_get_message(ngx_http_request_t *r, ngx_str_t *message)
{
    u_char                        *p, *q, *last;
    ngx_str_t                      arg, b64;
    ngx_http_mdm_scep_loc_conf_t  *lcf;

    if (ngx_http_mdm_scep_arg(r, "message", sizeof("message") - 1, &arg)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: PKIOperation by GET without a message");
        return NGX_HTTP_BAD_REQUEST;
    }

    b64.data = ngx_pnalloc(r->pool, arg.len);
    message->data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(arg.len));
    if (b64.data == NULL || message->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = arg.data;
    q = b64.data;
    ngx_unescape_uri(&q, &p, arg.len, 0);

    last = q;
    q = b64.data;

    for (p = b64.data; p < last; p++) {
        switch (*p) {
        case ' ':
            *q++ = '+';
            break;
        case CR:
        case LF:
            break;
        default:
            *q++ = *p;
        }
    }

    b64.len = q - b64.data;

    if (b64.len == 0
        || (ngx_decode_base64(message, &b64) != NGX_OK
            && ngx_decode_base64url(message, &b64) != NGX_OK))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: PKIOperation message is not base64");
        return NGX_HTTP_BAD_REQUEST;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_scep_module);

    if (message->len > lcf->max_body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm scep: PKIOperation message of %uz bytes is over "
                      "mdm_scep_max_body", message->len);
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    return NGX_OK;
}


/* mdm_scep_crl: the CRL as DER, for relying parties that download it */

static ngx_int_t
ngx_http_mdm_scep_crl_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_mdm_scep_crl(r, ngx_http_mdm_scep_crl_done);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_mdm_scep_crl_send(r);
}


static void
ngx_http_mdm_scep_crl_done(ngx_http_request_t *r, ngx_int_t rc)
{
    if (rc == NGX_OK) {
        rc = ngx_http_mdm_scep_crl_send(r);
    }

    ngx_http_finalize_request(r, rc);
}


/* a copy: a later request of this process may replace the cached CRL */

static ngx_int_t
ngx_http_mdm_scep_crl_send(ngx_http_request_t *r)
{
    u_char                        *p;
    ngx_http_mdm_scep_loc_conf_t  *lcf;

    static ngx_str_t  type = ngx_string("application/pkix-crl");

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mdm_scep_module);

    p = ngx_pnalloc(r->pool, lcf->ca->crl_len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, lcf->ca->crl_der, lcf->ca->crl_len);

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &type, p, lcf->ca->crl_len);
}
