
/*
 * ngx_http_mdm_scep_module: the SCEP CA (RFC 8894), module-private.
 *
 *   ngx_http_mdm_scep_module.c  directives, the CA, the HTTP side of each
 *                               operation (GetCACaps, GetCACert, reading
 *                               a PKIOperation), the CRL location
 *   ngx_http_mdm_scep_pkiop.c   a PKIOperation from its parse to its
 *                               CertRep: policy, PostgreSQL, CRLs
 */


#ifndef _NGX_HTTP_MDM_SCEP_H_INCLUDED_
#define _NGX_HTTP_MDM_SCEP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/x509.h>
#include "ngx_mdm_core.h"
#include "ngx_mdm_scep_pki.h"


#define NGX_HTTP_MDM_SCEP_DIGEST_LEN   32          /* SHA-256 */
#define NGX_HTTP_MDM_SCEP_SERIAL_MAX   1024        /* mdm_scep_serial_block */


/* a CA as configured, shared by the locations that name the same files */
typedef struct {
    ngx_mdm_scep_ca_t                 pki;
    ngx_str_t                         ca_certs;        /* GetCACert body */
    ngx_str_t                         ca_certs_type;
    time_t                            not_after;       /* the CA's */

    /* this process's CRL, rebuilt after mdm_scep_crl_cache */
    X509_CRL                         *crl;
    u_char                           *crl_der;         /* OPENSSL_malloc */
    size_t                            crl_len;
    time_t                            crl_time;
} ngx_http_mdm_scep_ca_t;


typedef struct {
    X509                             *ca_cert;
    EVP_PKEY                         *ca_key;
    STACK_OF(X509)                   *ca_chain;
    X509                             *ra_cert;
    EVP_PKEY                         *ra_key;

    ngx_http_mdm_scep_ca_t           *ca;              /* postconfiguration */

    ngx_str_t                         challenge;       /* static, or empty */
    u_char                            challenge_digest[
                                          NGX_HTTP_MDM_SCEP_DIGEST_LEN];
    ngx_flag_t                        one_time;
    ngx_flag_t                        des;
    ngx_flag_t                        prepare;
    time_t                            validity;
    time_t                            renewal_grace;
    size_t                            max_body;
    time_t                            crl_validity;
    time_t                            crl_cache;
    ngx_uint_t                        serial_block;
} ngx_http_mdm_scep_loc_conf_t;


typedef struct {
    ngx_array_t                       locations;       /* of loc_conf_t * */
    ngx_array_t                       cas;             /* of ca_t * */
} ngx_http_mdm_scep_main_conf_t;


/* how a CRL reached the caller of ngx_http_mdm_scep_crl() */
typedef void (*ngx_http_mdm_scep_crl_pt)(ngx_http_request_t *r,
    ngx_int_t rc);


extern ngx_module_t  ngx_http_mdm_scep_module;


/* ngx_http_mdm_scep_module.c */
ngx_int_t ngx_http_mdm_scep_refuse(ngx_http_request_t *r, ngx_uint_t status,
    char *text);

/* ngx_http_mdm_scep_pkiop.c */
ngx_int_t ngx_http_mdm_scep_pkiop(ngx_http_request_t *r, u_char *der,
    size_t len);
ngx_int_t ngx_http_mdm_scep_crl(ngx_http_request_t *r,
    ngx_http_mdm_scep_crl_pt handler);
void ngx_http_mdm_scep_crl_free(ngx_http_mdm_scep_ca_t *ca);


#endif /* _NGX_HTTP_MDM_SCEP_H_INCLUDED_ */
