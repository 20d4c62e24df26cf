
/*
 * ngx_http_mdm_apns_module: MDM pushes over APNs.
 *
 * The directives and the push certificates are read here, in the master,
 * at configuration time (so that a reload rotates them); a certificate
 * that is not an MDM push certificate fails nginx -t.  The pushes
 * themselves run in the helper process only (ngx_mdm_apns_push.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/pem.h>
#include <openssl/err.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_x509.h"
#include "ngx_mdm_apns.h"


#define NGX_MDM_APNS_SHM_SIZE  (8 * 4096)


static void *ngx_http_mdm_apns_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_apns_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_mdm_apns_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mdm_apns_certificate_key(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mdm_apns_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_apns_trusted(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_apns_expiration(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mdm_apns_backoff(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_apns_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_mdm_apns_pem(ngx_conf_t *cf, X509 *cert,
    EVP_PKEY *key, ngx_str_t *out);
static ngx_int_t ngx_http_mdm_apns_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_mdm_apns_shm_init(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_mdm_apns_status_handler(ngx_http_request_t *r);


static ngx_command_t  ngx_http_mdm_apns_commands[] = {

    { ngx_string("mdm_apns_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_apns_certificate,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_apns_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_apns_certificate_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_apns_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_apns_endpoint,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_apns_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_apns_trusted,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_apns_expiration"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_apns_expiration,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_apns_expiry_warning"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, expiry_warning),
      NULL },

    { ngx_string("mdm_apns_poll_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, poll_interval),
      NULL },

    { ngx_string("mdm_apns_sweep_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, sweep_interval),
      NULL },

    { ngx_string("mdm_apns_coalesce"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, coalesce),
      NULL },

    { ngx_string("mdm_apns_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, timeout),
      NULL },

    { ngx_string("mdm_apns_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_mdm_apns_backoff,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_apns_max_attempts"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, max_attempts),
      NULL },

    { ngx_string("mdm_apns_batch_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, batch_size),
      NULL },

    { ngx_string("mdm_apns_concurrency"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_apns_main_conf_t, concurrency),
      NULL },

    { ngx_string("mdm_apns_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_apns_status,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mdm_apns_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_mdm_apns_postconfiguration,   /* postconfiguration */

    ngx_http_mdm_apns_create_main_conf,    /* create main configuration */
    ngx_http_mdm_apns_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_mdm_apns_module = {
    NGX_MODULE_V1,
    &ngx_http_mdm_apns_module_ctx,         /* module context */
    ngx_http_mdm_apns_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_mdm_apns_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_apns_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->endpoint = { 0, NULL };
     *     amcf->trusted_pem = { 0, NULL };
     *     amcf->shm_zone = NULL;
     */

    if (ngx_array_init(&amcf->certs, cf->pool, 2,
                       sizeof(ngx_mdm_apns_cert_t))
        != NGX_OK)
    {
        return NULL;
    }

    amcf->expiration = NGX_CONF_UNSET;
    amcf->expiry_warning = NGX_CONF_UNSET;
    amcf->poll_interval = NGX_CONF_UNSET_MSEC;
    amcf->sweep_interval = NGX_CONF_UNSET_MSEC;
    amcf->coalesce = NGX_CONF_UNSET_MSEC;
    amcf->timeout = NGX_CONF_UNSET_MSEC;
    amcf->backoff_min = NGX_CONF_UNSET_MSEC;
    amcf->backoff_max = NGX_CONF_UNSET_MSEC;
    amcf->max_attempts = NGX_CONF_UNSET_UINT;
    amcf->batch_size = NGX_CONF_UNSET_UINT;
    amcf->concurrency = NGX_CONF_UNSET_UINT;

    return amcf;
}


static char *
ngx_http_mdm_apns_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf = conf;

    ngx_uint_t            i;
    ngx_mdm_apns_cert_t  *cert;

    if (amcf->endpoint.data == NULL) {
        ngx_str_set(&amcf->endpoint, NGX_MDM_APNS_PRODUCTION);
    }

    ngx_conf_init_value(amcf->expiration, NGX_MDM_APNS_EXPIRATION_OFF);
    ngx_conf_init_value(amcf->expiry_warning, 30 * 86400);
    ngx_conf_init_msec_value(amcf->poll_interval, 1000);
    ngx_conf_init_msec_value(amcf->sweep_interval, 0);
    ngx_conf_init_msec_value(amcf->coalesce, 5000);
    ngx_conf_init_msec_value(amcf->timeout, 10000);
    ngx_conf_init_msec_value(amcf->backoff_min, 1000);
    ngx_conf_init_msec_value(amcf->backoff_max, 600000);
    ngx_conf_init_uint_value(amcf->max_attempts, 10);
    ngx_conf_init_uint_value(amcf->batch_size, 1000);
    ngx_conf_init_uint_value(amcf->concurrency, 100);

    if (amcf->poll_interval == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_poll_interval\" must be more than 0");
        return NGX_CONF_ERROR;
    }

    if (amcf->batch_size == 0 || amcf->batch_size > 100000
        || amcf->concurrency == 0 || amcf->concurrency > 10000
        || amcf->max_attempts == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_batch_size\" (1 to 100000), "
                           "\"mdm_apns_concurrency\" (1 to 10000) and "
                           "\"mdm_apns_max_attempts\" must be positive");
        return NGX_CONF_ERROR;
    }

    cert = amcf->certs.elts;

    for (i = 0; i < amcf->certs.nelts; i++) {

        if (cert[i].key_pem.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"mdm_apns_certificate\" \"%V\" (line %ui) "
                               "has no \"mdm_apns_certificate_key\" after it",
                               &cert[i].cert_file, cert[i].line);
            return NGX_CONF_ERROR;
        }

        if (cert[i].not_after <= ngx_time()) {
            ngx_log_error(NGX_LOG_ERR, cf->log, 0,
                          "mdm push certificate \"%V\" for topic \"%V\" "
                          "has expired: APNs will refuse it",
                          &cert[i].cert_file, &cert[i].topic);

        } else if (cert[i].not_after - ngx_time() < amcf->expiry_warning) {
            ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                          "mdm push certificate \"%V\" for topic \"%V\" "
                          "expires in %T days: renew it with the same topic",
                          &cert[i].cert_file, &cert[i].topic,
                          (cert[i].not_after - ngx_time()) / 86400);
        }
    }

    return NGX_CONF_OK;
}


/*
 * mdm_apns_certificate: a push certificate, topic from the subject UID,
 * which must start with "com.apple.mgmt.".  It is kept in memory as PEM
 * and handed to libcurl as a blob: the helper never reads a file.
 */

static char *
ngx_http_mdm_apns_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf = conf;

    X509                 *x509;
    ngx_str_t            *value, file;
    ngx_uint_t            i;
    ngx_mdm_apns_cert_t  *cert, *other;
    ngx_mdm_x509_rc_e     rc;
    char                  topic[NGX_MDM_X509_UID_SIZE];

    value = cf->args->elts;
    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    x509 = ngx_mdm_x509_load_cert((char *) file.data);
    if (x509 == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_certificate\" cannot load \"%V\": %s",
                           &file, ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    rc = ngx_mdm_x509_apns_topic(x509, topic, sizeof(topic));

    if (rc != NGX_MDM_X509_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_certificate\" \"%V\" is not an MDM "
                           "push certificate: %s; use the certificate "
                           "from identity.apple.com", &file,
                           ngx_mdm_x509_error());
        X509_free(x509);
        return NGX_CONF_ERROR;
    }

    cert = ngx_array_push(&amcf->certs);
    if (cert == NULL) {
        X509_free(x509);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(cert, sizeof(ngx_mdm_apns_cert_t));

    cert->cert_file = file;
    cert->line = cf->conf_file->line;

    if (ngx_mdm_x509_not_after(x509, &cert->not_after) != NGX_MDM_X509_OK
        || ngx_http_mdm_apns_pem(cf, x509, NULL, &cert->cert_pem) != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_certificate\" cannot use \"%V\"",
                           &file);
        X509_free(x509);
        return NGX_CONF_ERROR;
    }

    X509_free(x509);

    cert->topic.len = ngx_strlen(topic);
    cert->topic.data = ngx_pnalloc(cf->pool, cert->topic.len);
    if (cert->topic.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(cert->topic.data, topic, cert->topic.len);

    other = amcf->certs.elts;

    for (i = 0; i + 1 < amcf->certs.nelts; i++) {
        if (other[i].topic.len == cert->topic.len
            && ngx_strncmp(other[i].topic.data, cert->topic.data,
                           cert->topic.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"mdm_apns_certificate\" \"%V\" has the "
                               "topic \"%V\" of \"%V\": one certificate "
                               "per topic", &file, &cert->topic,
                               &other[i].cert_file);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* mdm_apns_certificate_key: the key of the certificate just before it */

static char *
ngx_http_mdm_apns_certificate_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf = conf;

    X509                 *x509;
    EVP_PKEY             *key;
    ngx_str_t            *value, file;
    ngx_int_t             rc;
    ngx_mdm_apns_cert_t  *cert;

    value = cf->args->elts;

    cert = amcf->certs.elts;

    if (amcf->certs.nelts == 0 || cert[amcf->certs.nelts - 1].key_pem.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_certificate_key\" must follow its "
                           "\"mdm_apns_certificate\"");
        return NGX_CONF_ERROR;
    }

    cert = &cert[amcf->certs.nelts - 1];

    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    key = ngx_mdm_x509_load_key((char *) file.data, NULL);
    if (key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_certificate_key\" cannot load \"%V\" "
                           "(an unencrypted key is needed): %s",
                           &file, ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    x509 = ngx_mdm_x509_cert_from_pem((char *) cert->cert_pem.data,
                                      cert->cert_pem.len);
    if (x509 == NULL) {
        EVP_PKEY_free(key);
        return NGX_CONF_ERROR;
    }

    if (ngx_mdm_x509_key_matches(x509, key) != NGX_MDM_X509_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_certificate_key\" \"%V\" is not the "
                           "key of \"%V\"", &file, &cert->cert_file);
        X509_free(x509);
        EVP_PKEY_free(key);
        return NGX_CONF_ERROR;
    }

    rc = ngx_http_mdm_apns_pem(cf, NULL, key, &cert->key_pem);

    X509_free(x509);
    EVP_PKEY_free(key);

    return rc == NGX_OK ? NGX_CONF_OK : NGX_CONF_ERROR;
}


/* mdm_apns_endpoint production | sandbox | https://host[:port] */

static char *
ngx_http_mdm_apns_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf = conf;

    ngx_str_t  *value, url;

    if (amcf->endpoint.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    url = value[1];

    if (url.len == 10 && ngx_strncmp(url.data, "production", 10) == 0) {
        ngx_str_set(&amcf->endpoint, NGX_MDM_APNS_PRODUCTION);
        return NGX_CONF_OK;
    }

    if (url.len == 7 && ngx_strncmp(url.data, "sandbox", 7) == 0) {
        ngx_str_set(&amcf->endpoint, NGX_MDM_APNS_SANDBOX);
        return NGX_CONF_OK;
    }

    while (url.len && url.data[url.len - 1] == '/') {
        url.len--;
    }

    if (url.len <= 8 || ngx_strncasecmp(url.data, (u_char *) "https://", 8)
                        != 0
        || ngx_strlchr(url.data + 8, url.data + url.len, '/'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"mdm_apns_endpoint\" \"%V\", use "
                           "production, sandbox or https://host[:port]",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    amcf->endpoint = url;

    return NGX_CONF_OK;
}


/* mdm_apns_trusted_certificate: CAs for the endpoint (default: system's) */

static char *
ngx_http_mdm_apns_trusted(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf = conf;

    u_char          *p;
    size_t           len;
    ngx_str_t       *value, file, *pem;
    ngx_uint_t       i, n;
    ngx_array_t      pems;
    STACK_OF(X509)  *chain;

    if (amcf->trusted_pem.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    chain = ngx_mdm_x509_load_chain((char *) file.data);
    if (chain == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_trusted_certificate\" cannot load "
                           "\"%V\": %s", &file, ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    n = sk_X509_num(chain);

    if (ngx_array_init(&pems, cf->temp_pool, n, sizeof(ngx_str_t))
        != NGX_OK)
    {
        ngx_mdm_x509_chain_free(chain);
        return NGX_CONF_ERROR;
    }

    len = 0;

    for (i = 0; i < n; i++) {
        pem = ngx_array_push(&pems);
        if (pem == NULL
            || ngx_http_mdm_apns_pem(cf, sk_X509_value(chain, i), NULL, pem)
               != NGX_OK)
        {
            ngx_mdm_x509_chain_free(chain);
            return NGX_CONF_ERROR;
        }

        len += pem->len;
    }

    ngx_mdm_x509_chain_free(chain);

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    amcf->trusted_pem.data = p;
    amcf->trusted_pem.len = len;

    pem = pems.elts;

    for (i = 0; i < pems.nelts; i++) {
        p = ngx_cpymem(p, pem[i].data, pem[i].len);
    }

    return NGX_CONF_OK;
}


/* mdm_apns_expiration off | time: apns-expiration = now + time */

static char *
ngx_http_mdm_apns_expiration(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf = conf;

    ngx_str_t  *value;

    if (amcf->expiration != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        amcf->expiration = NGX_MDM_APNS_EXPIRATION_OFF;
        return NGX_CONF_OK;
    }

    amcf->expiration = ngx_parse_time(&value[1], 1);

    if (amcf->expiration == (time_t) NGX_ERROR
        || amcf->expiration > 30 * 86400)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"mdm_apns_expiration\" \"%V\", use off "
                           "or a time up to 30d", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* mdm_apns_backoff min max: retry delays, doubling from min up to max */

static char *
ngx_http_mdm_apns_backoff(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_apns_main_conf_t  *amcf = conf;

    ngx_str_t  *value;

    if (amcf->backoff_min != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    amcf->backoff_min = ngx_parse_time(&value[1], 0);
    amcf->backoff_max = ngx_parse_time(&value[2], 0);

    if (amcf->backoff_min == (ngx_msec_t) NGX_ERROR
        || amcf->backoff_max == (ngx_msec_t) NGX_ERROR
        || amcf->backoff_min == 0
        || amcf->backoff_min > amcf->backoff_max)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"mdm_apns_backoff\" \"%V %V\", use "
                           "min max with 0 < min <= max", &value[1],
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_apns_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mdm_apns_status_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_mdm_apns_pem(ngx_conf_t *cf, X509 *cert, EVP_PKEY *key,
    ngx_str_t *out)
{
    int    ok;
    BIO   *bio;
    char  *data;
    long   len;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    ok = cert ? PEM_write_bio_X509(bio, cert)
              : PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);

    len = BIO_get_mem_data(bio, &data);

    if (!ok || len <= 0) {
        BIO_free(bio);
        ERR_clear_error();
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(cf->pool, len);
    if (out->data == NULL) {
        BIO_free(bio);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, data, len);
    out->len = len;

    /* the key's PEM must not linger in freed memory */
    OPENSSL_cleanse(data, len);
    BIO_free(bio);

    return NGX_OK;
}


/*
 * APNs is on when a push certificate is configured: counters in shared
 * memory, and the push task in the helper process once the schema is
 * ready.
 */

static ngx_int_t
ngx_http_mdm_apns_postconfiguration(ngx_conf_t *cf)
{
    ngx_str_t                       name;
    ngx_http_mdm_core_main_conf_t  *cmcf;
    ngx_http_mdm_apns_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_mdm_apns_module);

    if (amcf->certs.nelts == 0) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_module);

    if (cmcf->pg_conninfo.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_apns_certificate\" needs \"mdm_postgres\"");
        return NGX_ERROR;
    }

    ngx_str_set(&name, "mdm_apns");
    amcf->shm_zone = ngx_shared_memory_add(cf, &name, NGX_MDM_APNS_SHM_SIZE,
                                           &ngx_http_mdm_apns_module);
    if (amcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    amcf->shm_zone->init = ngx_http_mdm_apns_shm_init;
    amcf->shm_zone->data = amcf;

    return ngx_mdm_helper_register(cf, ngx_mdm_apns_helper_init);
}


static ngx_int_t
ngx_http_mdm_apns_shm_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t     *shpool;
    ngx_mdm_apns_shm_t  *shm;

    if (data) {
        /* reload: the counters go on */
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    shm = ngx_slab_calloc(shpool, sizeof(ngx_mdm_apns_shm_t));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    shpool->data = shm;
    shm_zone->data = shm;

    return NGX_OK;
}


ngx_mdm_apns_shm_t *
ngx_mdm_apns_shm(ngx_http_mdm_apns_main_conf_t *amcf)
{
    if (amcf == NULL || amcf->shm_zone == NULL) {
        return NULL;
    }

    return amcf->shm_zone->data;
}


/*
 * mdm_apns_status: this node's push counters and certificates as JSON.
 * "certificate_error" is true from a 403 (a certificate APNs refuses) until
 * the next successful push.
 */

static ngx_int_t
ngx_http_mdm_apns_status_handler(ngx_http_request_t *r)
{
    u_char                         *body, *p;
    size_t                          len;
    ngx_int_t                       rc;
    ngx_uint_t                      i;
    ngx_mdm_apns_shm_t             *shm;
    ngx_mdm_apns_cert_t            *cert;
    ngx_http_mdm_apns_main_conf_t  *amcf;

    static ngx_str_t  type = ngx_string("application/json");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_mdm_apns_module);
    shm = ngx_mdm_apns_shm(amcf);

    len = 512 + 6 * amcf->endpoint.len;
    cert = amcf->certs.elts;

    for (i = 0; i < amcf->certs.nelts; i++) {
        len += 96 + 6 * cert[i].topic.len;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"enabled\": %s, \"endpoint\": \"",
                    amcf->certs.nelts ? "true" : "false");
    p = (u_char *) ngx_escape_json(p, amcf->endpoint.data,
                                   amcf->endpoint.len);
    p = ngx_sprintf(p, "\", \"certificates\": [");

    for (i = 0; i < amcf->certs.nelts; i++) {
        p = ngx_sprintf(p, "%s{\"topic\": \"", i ? ", " : "");
        p = (u_char *) ngx_escape_json(p, cert[i].topic.data,
                                       cert[i].topic.len);
        p = ngx_sprintf(p, "\", \"expires_in_s\": %T}",
                        cert[i].not_after - ngx_time());
    }

    if (shm == NULL) {
        p = ngx_sprintf(p, "], \"counters\": {}}\n");

    } else {
        p = ngx_sprintf(p, "], \"certificate_error\": %s, "
                        "\"certificate_error_at\": %uA, "
                        "\"last_sent_at\": %uA, "
                        "\"helper_pid\": %uA, \"in_flight\": %uA, "
                        "\"counters\": {\"claimed\": %uA, \"sent\": %uA, "
                        "\"failed\": %uA, \"retried\": %uA, "
                        "\"invalid_tokens\": %uA, "
                        "\"certificate_errors\": %uA, "
                        "\"connections\": %uA}}\n",
                        shm->certificate_error ? "true" : "false",
                        shm->certificate_error_at, shm->last_sent_at,
                        shm->helper_pid, shm->in_flight, shm->claimed,
                        shm->sent, shm->failed, shm->retried,
                        shm->invalid_tokens, shm->certificate_errors,
                        shm->connections);
    }

    return ngx_http_mdm_send(r, NGX_HTTP_OK, &type, body, p - body);
}
