
/*
 * SCEP message library, private: what its three files share.  Callers
 * include ngx_mdm_scep_pki.h only.
 *
 *   ngx_mdm_scep_pki.c     reading pkiMessages: parse, attributes,
 *                          envelopes, CSR checks
 *   ngx_mdm_scep_ca.c      what the CA makes: certificates, CertReps,
 *                          GetCACert, CRLs
 *   ngx_mdm_scep_client.c  what a device does (tests, fuzzing, benches)
 */


#ifndef _NGX_MDM_SCEP_PKI_INT_H_INCLUDED_
#define _NGX_MDM_SCEP_PKI_INT_H_INCLUDED_


#include <openssl/asn1t.h>
#include <openssl/cms.h>

#include "ngx_mdm_scep_pki.h"


typedef enum {
    NGX_MDM_SCEP_DATA_NONE = 0,
    NGX_MDM_SCEP_DATA_CSR,
    NGX_MDM_SCEP_DATA_ISSUER_AND_SERIAL,
    NGX_MDM_SCEP_DATA_ISSUER_AND_SUBJECT
} ngx_mdm_scep_data_e;


typedef struct {
    int                       type;
    ngx_mdm_scep_data_e       data;
    unsigned                  renewal:1;
    const char               *name;
} ngx_mdm_scep_type_t;


typedef struct {
    int                       rc;
    int                       fail_info;
    const char               *text;
} ngx_mdm_scep_reason_t;


typedef struct {
    int                       nid;
    int                       reply_nid;
} ngx_mdm_scep_cipher_t;


/* IssuerAndSubject (RFC 8894 3.3.3), the messageData of CertPoll */
typedef struct {
    X509_NAME                *issuer;
    X509_NAME                *subject;
} ngx_mdm_scep_ias_t;


/* the signed attributes of a pkiMessage we build */
typedef struct {
    int                       message_type;
    int                       pki_status;       /* -1: none */
    int                       fail_info;        /* -1: none */
    const char               *fail_info_text;
    const char               *transaction_id;
    size_t                    transaction_id_len;
    const unsigned char      *sender_nonce;
    size_t                    sender_nonce_len;
    const unsigned char      *recipient_nonce;
    size_t                    recipient_nonce_len;
} ngx_mdm_scep_attrs_t;


enum {
    NGX_MDM_SCEP_OID_MESSAGE_TYPE = 0,
    NGX_MDM_SCEP_OID_PKI_STATUS,
    NGX_MDM_SCEP_OID_FAIL_INFO,
    NGX_MDM_SCEP_OID_SENDER_NONCE,
    NGX_MDM_SCEP_OID_RECIPIENT_NONCE,
    NGX_MDM_SCEP_OID_TRANSACTION_ID,
    NGX_MDM_SCEP_OID_FAIL_INFO_TEXT,
    NGX_MDM_SCEP_OID_N
};


DECLARE_ASN1_ITEM(ngx_mdm_scep_ias)

/* the protocol's tables (ngx_mdm_scep_pki.c) */
extern ASN1_OBJECT                  *ngx_mdm_scep_oid[NGX_MDM_SCEP_OID_N];
extern const int                     ngx_mdm_scep_digests[];
extern const ngx_mdm_scep_cipher_t   ngx_mdm_scep_ciphers[];
extern const ngx_mdm_scep_reason_t   ngx_mdm_scep_reasons[];


/* ngx_mdm_scep_pki.c */
void ngx_mdm_scep_msg_init(ngx_mdm_scep_msg_t *msg);
int ngx_mdm_scep_fail(ngx_mdm_scep_msg_t *msg,
    ngx_mdm_scep_reason_e reason);
const ngx_mdm_scep_type_t *ngx_mdm_scep_type(int type);
int ngx_mdm_scep_outer(ngx_mdm_scep_msg_t *msg, const unsigned char *der,
    size_t len, X509 *expect, CMS_ContentInfo **out);
int ngx_mdm_scep_der_enter(const unsigned char **p,
    const unsigned char *end, int tag, int cls, long *len);
int ngx_mdm_scep_der_skip(const unsigned char **p,
    const unsigned char *end, int tag, int cls);
int ngx_mdm_scep_open(ngx_mdm_scep_msg_t *msg,
    const ASN1_OCTET_STRING *content, X509 **certs, EVP_PKEY **keys, int n,
    BIO **out);
ngx_mdm_scep_reason_e ngx_mdm_scep_key_check(EVP_PKEY *pk);

/* ngx_mdm_scep_ca.c */
int ngx_mdm_scep_sign(X509 *signer, EVP_PKEY *key, int digest_nid,
    const ngx_mdm_scep_attrs_t *a, const unsigned char *content,
    size_t content_len, X509 *cert, unsigned char **der, size_t *len);
int ngx_mdm_scep_envelope(X509 *recipient, int cipher_nid,
    const unsigned char *data, size_t len, unsigned char **der,
    size_t *der_len);


#endif /* _NGX_MDM_SCEP_PKI_INT_H_INCLUDED_ */
