
/*
 * SCEP (RFC 8894) messages and the small CA behind them: no nginx, only
 * byte buffers and OpenSSL objects.  Every function is safe on hostile
 * input.  DER buffers returned through "der, len" are OPENSSL_malloc()ed:
 * free them with OPENSSL_free().  Objects are owned by the caller unless a
 * comment says otherwise.
 *
 * Error queue: after NGX_MDM_SCEP_ERROR the OpenSSL error queue holds the
 * cause (log it with ngx_ssl_error(), which empties it); after MALFORMED and
 * REFUSED the queue is left empty.
 *
 * A PKIOperation, as the handler runs it:
 *
 *     rc = ngx_mdm_scep_parse(ca, body, len, &msg);
 *       MALFORMED: 400, ERROR: 500, msg.error for the log;
 *       REFUSED:   ngx_mdm_scep_reply_init(&rep, &msg, FAILURE);
 *       OK:        check msg.challenge or the signer's binding, then
 *                  ngx_mdm_scep_issue(ca, msg.csr, &issue, &cert, &err),
 *                  ngx_mdm_scep_reply_init(&rep, &msg, SUCCESS),
 *                  rep.cert = cert (or FAILURE, rep.fail_info = ...);
 *     ngx_mdm_scep_certrep(ca, &rep, &der, &len): 200, x-pki-message;
 *     ngx_mdm_scep_msg_free(&msg), X509_free(cert), OPENSSL_free(der).
 *
 * The attribute OIDs are created on first use: call ngx_mdm_scep_init()
 * once before forking workers (e.g. from init_module).
 */


#ifndef _NGX_MDM_SCEP_PKI_H_INCLUDED_
#define _NGX_MDM_SCEP_PKI_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <openssl/x509.h>


/* results, and what the SCEP handler answers for each */
#define NGX_MDM_SCEP_OK               0
#define NGX_MDM_SCEP_ERROR           -1  /* our failure: HTTP 500 */
#define NGX_MDM_SCEP_MALFORMED       -2  /* not a usable pkiMessage: 400 */
#define NGX_MDM_SCEP_REFUSED         -3  /* CertRep FAILURE, msg->fail_info */

/* messageType (RFC 8894 3.2.1.2) */
#define NGX_MDM_SCEP_CERT_REP         3
#define NGX_MDM_SCEP_RENEWAL_REQ     17
#define NGX_MDM_SCEP_UPDATE_REQ      18
#define NGX_MDM_SCEP_PKCS_REQ        19
#define NGX_MDM_SCEP_CERT_POLL       20
#define NGX_MDM_SCEP_GET_CERT        21
#define NGX_MDM_SCEP_GET_CRL         22

/* pkiStatus (3.2.1.3) */
#define NGX_MDM_SCEP_SUCCESS          0
#define NGX_MDM_SCEP_FAILURE          2
#define NGX_MDM_SCEP_PENDING          3

/* failInfo (3.2.1.4) */
#define NGX_MDM_SCEP_BAD_ALG          0
#define NGX_MDM_SCEP_BAD_MESSAGE_CHECK 1
#define NGX_MDM_SCEP_BAD_REQUEST      2
#define NGX_MDM_SCEP_BAD_TIME         3
#define NGX_MDM_SCEP_BAD_CERT_ID      4

#define NGX_MDM_SCEP_TRANSACTION_ID_MAX  128
#define NGX_MDM_SCEP_NONCE_MAX           64
#define NGX_MDM_SCEP_NONCE_LEN           16   /* the nonces we create */


/* why a message was not accepted: msg->reason, with msg->error as text */
typedef enum {
    NGX_MDM_SCEP_E_NONE = 0,
    NGX_MDM_SCEP_E_DER,               /* not DER, truncated, trailing bytes */
    NGX_MDM_SCEP_E_NOT_SIGNED,        /* not a CMS SignedData */
    NGX_MDM_SCEP_E_SIGNER_INFO,       /* not exactly one SignerInfo */
    NGX_MDM_SCEP_E_TRANSACTION_ID,    /* transactionID missing or bad */
    NGX_MDM_SCEP_E_NONCE,             /* senderNonce missing or bad */
    NGX_MDM_SCEP_E_MESSAGE_TYPE,      /* messageType missing or unknown */
    NGX_MDM_SCEP_E_STATUS,            /* CertRep pkiStatus/failInfo bad */
    NGX_MDM_SCEP_E_DIGEST,            /* digest algorithm not accepted */
    NGX_MDM_SCEP_E_SIGNER_CERT,       /* signer certificate not found */
    NGX_MDM_SCEP_E_SIGNATURE,         /* outer signature does not verify */
    NGX_MDM_SCEP_E_RENEWAL_SIGNER,    /* renewal not signed by our cert */
    NGX_MDM_SCEP_E_NO_CONTENT,        /* no pkcsPKIEnvelope */
    NGX_MDM_SCEP_E_ENVELOPE,          /* not an EnvelopedData of data */
    NGX_MDM_SCEP_E_CIPHER,            /* content cipher not accepted */
    NGX_MDM_SCEP_E_RECIPIENT,         /* envelope is for another CA */
    NGX_MDM_SCEP_E_DECRYPT,           /* envelope is ours, cannot open */
    NGX_MDM_SCEP_E_MESSAGE_DATA,      /* messageData does not parse */
    NGX_MDM_SCEP_E_CSR_SIGNATURE,     /* CSR self-signature is bad */
    NGX_MDM_SCEP_E_KEY_TYPE,          /* CSR key neither RSA nor P-256/384 */
    NGX_MDM_SCEP_E_KEY_SIZE,          /* RSA key below 2048 or above 8192 */
    NGX_MDM_SCEP_E_CHALLENGE,         /* challengePassword is malformed */
    NGX_MDM_SCEP_E_INTERNAL           /* our failure (memory) */
} ngx_mdm_scep_reason_e;


/*
 * The CA.  The caller loads the objects once (configuration time), fills
 * the first five fields and calls ngx_mdm_scep_ca_init(); the struct must
 * then outlive every call that uses it.  With an RA, the RA key opens
 * request envelopes (the CA key too, as a fallback) and the RA signs
 * CertReps; the CA always signs certificates and CRLs.  Envelopes use RSA
 * key transport, so the key that opens them must be RSA.
 */
typedef struct {
    X509                     *cert;
    EVP_PKEY                 *key;
    X509                     *ra_cert;          /* optional */
    EVP_PKEY                 *ra_key;           /* optional */
    STACK_OF(X509)           *chain;            /* optional, for GetCACert */

    /* set by ngx_mdm_scep_ca_init() */
    X509                     *signer_cert;
    EVP_PKEY                 *signer_key;
    unsigned char             key_id[EVP_MAX_MD_SIZE];  /* for AKI */
    size_t                    key_id_len;
} ngx_mdm_scep_ca_t;


/*
 * A parsed pkiMessage: a request (ngx_mdm_scep_parse) or a CertRep
 * (ngx_mdm_scep_client_parse).  Owned objects are released by
 * ngx_mdm_scep_msg_free(), on every result.
 */
typedef struct {
    ngx_mdm_scep_reason_e     reason;
    const char               *error;            /* static text; NULL if OK */
    int                       fail_info;        /* when REFUSED, or CertRep */

    int                       message_type;
    int                       pki_status;       /* CertRep only, else -1 */
    char                      transaction_id[NGX_MDM_SCEP_TRANSACTION_ID_MAX
                                             + 1];
    size_t                    transaction_id_len;
    unsigned char             sender_nonce[NGX_MDM_SCEP_NONCE_MAX];
    size_t                    sender_nonce_len;
    unsigned char             recipient_nonce[NGX_MDM_SCEP_NONCE_MAX];
    size_t                    recipient_nonce_len;
    time_t                    signing_time;     /* 0 when absent */
    int                       digest_nid;       /* outer digest */
    int                       cipher_nid;       /* envelope cipher */

    X509                     *signer;           /* owned */
    unsigned                  signer_from_ca:1; /* issued by ca->cert */

    X509_REQ                 *csr;              /* 17, 18, 19; owned */
    char                     *challenge;        /* UTF-8, NUL-terminated */
    size_t                    challenge_len;

    X509_NAME                *issuer;           /* 20, 21, 22; owned */
    X509_NAME                *subject;          /* 20; owned */
    ASN1_INTEGER             *serial;           /* 21, 22; owned */

    STACK_OF(X509)           *certs;            /* CertRep SUCCESS; owned */
    STACK_OF(X509_CRL)       *crls;             /* CertRep SUCCESS; owned */
} ngx_mdm_scep_msg_t;


/* what a CertRep says; ngx_mdm_scep_reply_init() fills it from a request */
typedef struct {
    int                       status;           /* NGX_MDM_SCEP_SUCCESS... */
    int                       fail_info;        /* FAILURE */
    const char               *fail_info_text;   /* FAILURE, optional UTF-8 */
    const char               *transaction_id;
    size_t                    transaction_id_len;
    const unsigned char      *recipient_nonce;  /* the request senderNonce */
    size_t                    recipient_nonce_len;
    int                       digest_nid;       /* 0: SHA-256 */
    int                       cipher_nid;       /* request's; 0: AES */
    X509                     *recipient;        /* request signer: SUCCESS */
    X509                     *cert;             /* SUCCESS: issued or found */
    X509_CRL                 *crl;              /* SUCCESS: GetCRL */
} ngx_mdm_scep_reply_t;


/* a serial number: big-endian magnitude bytes, or "value" when data NULL */
typedef struct {
    const unsigned char      *data;
    size_t                    len;
    uint64_t                  value;
} ngx_mdm_scep_serial_t;


typedef struct {
    ngx_mdm_scep_serial_t     serial;
    time_t                    now;              /* 0: time(NULL) */
    time_t                    validity;         /* seconds after now */
    time_t                    backdate;         /* notBefore = now - it */
} ngx_mdm_scep_issue_t;


typedef struct {
    ngx_mdm_scep_serial_t     serial;
    time_t                    revoked;
    int                       reason;           /* CRLReason; <= 0: none */
} ngx_mdm_scep_revoked_t;


/* a request built by the client side (tests, fuzzing, benchmarks) */
typedef struct {
    int                       message_type;
    const char               *transaction_id;
    const unsigned char      *sender_nonce;
    size_t                    sender_nonce_len;
    int                       digest_nid;       /* NID_sha1, NID_sha256... */
    int                       cipher_nid;       /* NID_aes_128_cbc... */
    X509                     *signer;
    EVP_PKEY                 *signer_key;
    X509                     *recipient;        /* CA or RA certificate */
    X509_REQ                 *csr;              /* 17, 18, 19 */
    X509_NAME                *issuer;           /* 20, 21, 22 */
    X509_NAME                *subject;          /* 20 */
    const ASN1_INTEGER       *serial;           /* 21, 22 */
} ngx_mdm_scep_request_t;


/* optional: creates the attribute OIDs now instead of on first use */
int ngx_mdm_scep_init(void);

/* checks that keys match certificates and precomputes; OK or ERROR */
int ngx_mdm_scep_ca_init(ngx_mdm_scep_ca_t *ca, const char **err);

/*
 * Parses and checks a request: outer signature (against the certificate
 * in the message, without chain or time checks), attributes, envelope
 * (3DES, AES-128/192/256-CBC; DES only with the legacy provider), and
 * messageData; a CSR must carry a valid self-signature and an RSA
 * 2048..8192 or EC P-256/P-384 key.  17 and 18 must be signed by a
 * certificate issued by ca->cert (the caller still checks its binding and
 * validity times).  The challenge comes from the CSR, or else from the
 * outer signed attributes as Apple also sends it.
 *   OK         everything above holds;
 *   MALFORMED  no CertRep can be built (no transactionID or senderNonce);
 *   REFUSED    answer FAILURE with msg->fail_info; transaction_id and
 *              sender_nonce are set, signer may be NULL;
 *   ERROR      out of memory.
 * signing_time is reported, not judged: badTime is the caller's policy.
 * An RSA CSR is read without OpenSSL 3.0's key decoders (they cost as
 * much as a tenth of a PKCSReq): msg->csr is then rebuilt from its fields,
 * its key a legacy RSA one (a DER CSR encodes back to the same bytes).
 */
int ngx_mdm_scep_parse(const ngx_mdm_scep_ca_t *ca, const unsigned char *der,
    size_t len, ngx_mdm_scep_msg_t *msg);
void ngx_mdm_scep_msg_free(ngx_mdm_scep_msg_t *msg);
const char *ngx_mdm_scep_type_name(int message_type);

/* the CSR checks done by ngx_mdm_scep_parse(): OK or REFUSED + reason */
int ngx_mdm_scep_csr_check(X509_REQ *csr, ngx_mdm_scep_reason_e *reason);

/*
 * Signs a certificate for the CSR: subject and subjectAltName copied
 * (SAN critical when the subject is empty), keyUsage digitalSignature
 * (+ keyEncipherment for RSA keys) critical, extendedKeyUsage clientAuth,
 * basicConstraints CA:FALSE, SKI, AKI, SHA-256.  REFUSED (answer
 * badRequest) when the CSR cannot make a certificate; ERROR on a bad
 * serial or validity from the caller, or out of memory.
 */
int ngx_mdm_scep_issue(const ngx_mdm_scep_ca_t *ca, X509_REQ *csr,
    const ngx_mdm_scep_issue_t *issue, X509 **cert, const char **err);

/*
 * CertRep.  The digest mirrors the request (SHA-1/224/256/384/512); the
 * envelope cipher is AES-128-CBC when the request used AES, else 3DES or
 * DES as the request did.  SUCCESS carries "cert" (also first in the outer
 * certificates) and/or "crl" in a degenerate SignedData enveloped to
 * "recipient"; FAILURE and PENDING carry no content.
 */
void ngx_mdm_scep_reply_init(ngx_mdm_scep_reply_t *rep,
    const ngx_mdm_scep_msg_t *msg, int status);
int ngx_mdm_scep_certrep(const ngx_mdm_scep_ca_t *ca,
    const ngx_mdm_scep_reply_t *rep, unsigned char **der, size_t *len);

/* GetCACert: degenerate SignedData with CA, RA and chain certificates */
int ngx_mdm_scep_ca_certs(const ngx_mdm_scep_ca_t *ca, unsigned char **der,
    size_t *len);

/*
 * A v2 CRL signed by the CA (SHA-256), with AKI and cRLNumber; an entry's
 * reasonCode when its reason is 1..10 (RFC 5280 5.3.1: unspecified is
 * left out).
 */
X509_CRL *ngx_mdm_scep_crl(const ngx_mdm_scep_ca_t *ca,
    const ngx_mdm_scep_revoked_t *revoked, size_t n, time_t this_update,
    time_t next_update, uint64_t crl_number);

/*
 * Serials and names as GetCert and CertPoll carry them, in the formats of
 * ngx_mdm_x509_*() in core, which gives the same facts of a whole
 * certificate (SHA-256, notBefore/notAfter, serial, subject) and loads
 * PEM keys with a passphrase: lowercase hex of the serial's magnitude
 * ("-" first when negative), decimal, RFC 2253 names with UTF-8 kept.
 * They return the length, or 0 when the buffer is too small.
 */
size_t ngx_mdm_scep_serial_hex(const ASN1_INTEGER *serial, char *buf,
    size_t size);
size_t ngx_mdm_scep_serial_dec(const ASN1_INTEGER *serial, char *buf,
    size_t size);
size_t ngx_mdm_scep_name_string(const X509_NAME *name, char *buf,
    size_t size);

/*
 * The client side, what a device does (tests, fuzzing, benchmarks):
 * a self-signed signer like Apple's "MDM SCEP SIGNER"; a CSR whose "san"
 * is in OpenSSL configuration syntax ("DNS:a.example,URI:urn:x"); a
 * request; and reading a CertRep, whose signature must verify with
 * "ca_signer" (the CA or RA certificate, embedded or not) and whose
 * SUCCESS envelope opens with "cert" and "key" (the request signer).
 * A CertRep without senderNonce is accepted, as micromdm/scep sends none.
 * On OK, msg->pki_status, msg->fail_info, msg->certs and msg->crls tell.
 */
X509 *ngx_mdm_scep_client_signer(EVP_PKEY *key, const char *cn,
    time_t validity);
X509_REQ *ngx_mdm_scep_client_csr(EVP_PKEY *key, const char *cn,
    const char *challenge, const char *san);
int ngx_mdm_scep_client_request(const ngx_mdm_scep_request_t *req,
    unsigned char **der, size_t *len);
int ngx_mdm_scep_client_parse(const unsigned char *der, size_t len,
    X509 *ca_signer, X509 *cert, EVP_PKEY *key, ngx_mdm_scep_msg_t *msg);


#endif /* _NGX_MDM_SCEP_PKI_H_INCLUDED_ */
