
/*
 * nginx-mdm: X.509 and CMS helpers.
 *
 * Pure C over OpenSSL: no nginx headers, buffers in, results out.  Every
 * input may be hostile; every function checks lengths, frees what it
 * allocated on every path and leaves the OpenSSL error queue empty.
 *
 * Failures carry a one-line reason in ngx_mdm_x509_error() (a static
 * buffer: one event loop per process, as nginx runs; not thread-safe).
 * Objects returned to the caller (X509 *, EVP_PKEY *, STACK_OF(X509) *,
 * X509_STORE *, signed DER) are the caller's: free them with X509_free(),
 * EVP_PKEY_free(), ngx_mdm_x509_chain_free(), X509_STORE_free() and
 * ngx_mdm_x509_free(), at once or through a pool cleanup.
 */


#ifndef _NGX_MDM_X509_H_INCLUDED_
#define _NGX_MDM_X509_H_INCLUDED_


#include <stddef.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/x509.h>


#define NGX_MDM_X509_SHA256_LEN      32
#define NGX_MDM_X509_SHA256_HEX_LEN  64         /* without the NUL */

/* buffer sizes, NUL included, that hold any sane value */
#define NGX_MDM_X509_SERIAL_HEX_SIZE 68         /* RFC 5280: 20 octets */
#define NGX_MDM_X509_SUBJECT_SIZE    1024
#define NGX_MDM_X509_UID_SIZE        256

/* a client certificate encoding larger than this is refused */
#define NGX_MDM_X509_CLIENT_CERT_MAX 65536

#define NGX_MDM_APNS_TOPIC_PREFIX    "com.apple.mgmt."


typedef enum {
    NGX_MDM_X509_OK = 0,
    NGX_MDM_X509_OK_IN_GRACE,       /* expired, but within the grace window */
    NGX_MDM_X509_UNTRUSTED,         /* no chain to the trust store */
    NGX_MDM_X509_EXPIRED,           /* expired beyond the grace window */
    NGX_MDM_X509_NOT_YET_VALID,
    NGX_MDM_X509_MALFORMED,         /* bad base64, PEM, DER or CMS shape */
    NGX_MDM_X509_BAD_SIGNATURE,     /* CMS signature does not verify */
    NGX_MDM_X509_NO_SIGNER,         /* signer certificate not in the CMS */
    NGX_MDM_X509_NO_UID,            /* subject has no UID attribute */
    NGX_MDM_X509_WRONG_PREFIX,      /* UID is not a com.apple.mgmt. topic */
    NGX_MDM_X509_KEY_MISMATCH,      /* private key is not the cert's */
    NGX_MDM_X509_ERROR              /* ours: memory, OpenSSL, small buffer */
} ngx_mdm_x509_rc_e;


/* how a client certificate reached us */
typedef enum {
    NGX_MDM_X509_FORM_AUTO = 0,     /* guess among the forms below */
    NGX_MDM_X509_FORM_PEM,          /* $ssl_client_raw_cert, $ssl_client_cert */
    NGX_MDM_X509_FORM_ESCAPED_PEM,  /* $ssl_client_escaped_cert (%XX) */
    NGX_MDM_X509_FORM_RFC9440,      /* Client-Cert: ":" base64(DER) ":" */
    NGX_MDM_X509_FORM_BASE64_DER,   /* base64 or base64url of the DER */
    NGX_MDM_X509_FORM_DER           /* the DER bytes themselves */
} ngx_mdm_x509_form_e;


/* verifier flags */
#define NGX_MDM_X509_NO_CHECK_TIME   0x01   /* ignore validity periods */
#define NGX_MDM_X509_ANY_PURPOSE     0x02   /* skip the clientAuth EKU check */

/* Apple's device identity chain: expired intermediates, any EKU */
#define NGX_MDM_X509_APPLE_DEVICE                                             \
    (NGX_MDM_X509_NO_CHECK_TIME|NGX_MDM_X509_ANY_PURPOSE)


typedef struct ngx_mdm_x509_verifier_s  ngx_mdm_x509_verifier_t;


/* errors */

const char *ngx_mdm_x509_rc_str(ngx_mdm_x509_rc_e rc);
const char *ngx_mdm_x509_error(void);
void ngx_mdm_x509_free(void *p);
void ngx_mdm_x509_chain_free(STACK_OF(X509) *chain);


/*
 * Loading, at configuration time.  NULL on failure, with the path and
 * the reason in ngx_mdm_x509_error().  A chain holds at least one
 * certificate, in file order.  A NULL passphrase never prompts: an
 * encrypted key then fails; "" is a valid (empty) passphrase.
 */

X509 *ngx_mdm_x509_load_cert(const char *path);
STACK_OF(X509) *ngx_mdm_x509_load_chain(const char *path);
EVP_PKEY *ngx_mdm_x509_load_key(const char *path, const char *passphrase);

X509 *ngx_mdm_x509_cert_from_pem(const char *pem, size_t len);
STACK_OF(X509) *ngx_mdm_x509_chain_from_pem(const char *pem, size_t len);
EVP_PKEY *ngx_mdm_x509_key_from_pem(const char *pem, size_t len,
    const char *passphrase);

/* NGX_MDM_X509_OK or NGX_MDM_X509_KEY_MISMATCH */
ngx_mdm_x509_rc_e ngx_mdm_x509_key_matches(X509 *cert, EVP_PKEY *key);

/* a store trusting each certificate of cas (CA or not: partial chains) */
X509_STORE *ngx_mdm_x509_store_create(STACK_OF(X509) *cas);


/*
 * Certificate facts.  Text results are NUL-terminated; a buffer too
 * small gives NGX_MDM_X509_ERROR.  Hex is lowercase.  The serial is the
 * hex of its magnitude octets ("-" first when negative).  The subject
 * is RFC 2253 text with UTF-8 kept.  The UID is the first subject
 * attribute 0.9.2342.19200300.100.1.1, as UTF-8: NGX_MDM_X509_NO_UID
 * when absent, NGX_MDM_X509_MALFORMED when not text.
 */

ngx_mdm_x509_rc_e ngx_mdm_x509_sha256(X509 *cert,
    unsigned char out[NGX_MDM_X509_SHA256_LEN]);
ngx_mdm_x509_rc_e ngx_mdm_x509_sha256_hex(X509 *cert,
    char out[NGX_MDM_X509_SHA256_HEX_LEN + 1]);
ngx_mdm_x509_rc_e ngx_mdm_x509_serial_hex(X509 *cert, char *out,
    size_t size);
ngx_mdm_x509_rc_e ngx_mdm_x509_not_before(X509 *cert, time_t *t);
ngx_mdm_x509_rc_e ngx_mdm_x509_not_after(X509 *cert, time_t *t);
ngx_mdm_x509_rc_e ngx_mdm_x509_subject(X509 *cert, char *out, size_t size);
ngx_mdm_x509_rc_e ngx_mdm_x509_subject_uid(X509 *cert, char *out,
    size_t size);


/*
 * A client certificate as nginx or a load balancer hands it over: a new
 * X509 to X509_free(), or NULL when malformed (or on memory failure), the
 * reason in ngx_mdm_x509_error().  Whitespace around the value, and
 * inside PEM and plain base64, is ignored; percent-escapes may be upper
 * or lower case; an RFC 9440 byte sequence may lack its "=" padding and
 * carry parameters (ignored); bytes after the DER are refused.  Inputs
 * over NGX_MDM_X509_CLIENT_CERT_MAX bytes are refused.
 */

X509 *ngx_mdm_x509_client_cert(const unsigned char *in, size_t len,
    ngx_mdm_x509_form_e form);


/*
 * Device certificate verification against a store built once at
 * configuration time.  A verifier keeps a reusable X509_STORE_CTX: one
 * per process, never used from two threads.  It takes its own reference
 * on the store.
 *
 * ngx_mdm_x509_verify(): "untrusted" (may be NULL) offers intermediates;
 * "now" is the current time (0: time(NULL)); "grace" is how many seconds
 * after notAfter an expired leaf is still accepted (0: none), giving
 * NGX_MDM_X509_OK_IN_GRACE.  An expired or not yet valid CA is
 * NGX_MDM_X509_UNTRUSTED.  Unless NGX_MDM_X509_ANY_PURPOSE, a leaf with
 * an extended key usage must list clientAuth (or anyExtendedKeyUsage).
 * With NGX_MDM_X509_NO_CHECK_TIME, "now" and "grace" are ignored.
 */

ngx_mdm_x509_verifier_t *ngx_mdm_x509_verifier_create(X509_STORE *store,
    unsigned flags);
void ngx_mdm_x509_verifier_free(ngx_mdm_x509_verifier_t *v);
ngx_mdm_x509_rc_e ngx_mdm_x509_verify(ngx_mdm_x509_verifier_t *v,
    X509 *cert, STACK_OF(X509) *untrusted, time_t now, time_t grace);


/*
 * Mdm-Signature: a detached CMS SignedData (DER, or its standard or
 * URL-safe base64 as the header carries it) over the exact HTTP body.
 * Checks the one signer's signature only, not its chain: the caller then
 * runs ngx_mdm_x509_verify() on *signer.  Gives NGX_MDM_X509_OK and a
 * referenced *signer (X509_free() it), NGX_MDM_X509_MALFORMED,
 * NGX_MDM_X509_NO_SIGNER or NGX_MDM_X509_BAD_SIGNATURE.
 */

ngx_mdm_x509_rc_e ngx_mdm_cms_verify_detached(const unsigned char *der,
    size_t der_len, const unsigned char *body, size_t body_len,
    X509 **signer);
ngx_mdm_x509_rc_e ngx_mdm_cms_verify_mdm_signature(const char *b64,
    size_t b64_len, const unsigned char *body, size_t body_len,
    X509 **signer);


/*
 * Attached-content CMS SignedData with one signer: OTA phase 2 and ADE
 * MachineInfo (verifier over Apple's CAs with NGX_MDM_X509_APPLE_DEVICE)
 * and OTA phase 3 (verifier over our SCEP CA, times checked, no grace).
 * Checks the signature, then the signer's chain through "v" with the
 * CMS certificates as intermediates.  On NGX_MDM_X509_OK the content is
 * copied to "content" (may be NULL; content_size >= der_len, or >=
 * b64_len for the base64 form, always suffices), its length stored in
 * *content_len, and *signer (may be NULL) holds a reference.  Other
 * results: MALFORMED, NO_SIGNER, BAD_SIGNATURE, and from the chain
 * UNTRUSTED, EXPIRED, NOT_YET_VALID.
 *
 * The base64 form (x-apple-aspen-deviceinfo) takes the standard or the
 * URL-safe alphabet, padded or not.
 *
 * Every certificate in a store is an anchor.  Build Apple's store from
 * "Apple iPhone Device CA" alone (the first certificate of the full
 * chain): with Apple Root CA in it, and no time or EKU checks, any
 * certificate Apple issues under any of its CAs (a developer's, say)
 * would pass as a device identity.
 */

ngx_mdm_x509_rc_e ngx_mdm_cms_verify_attached(const unsigned char *der,
    size_t der_len, ngx_mdm_x509_verifier_t *v, time_t now,
    unsigned char *content, size_t content_size, size_t *content_len,
    X509 **signer);
ngx_mdm_x509_rc_e ngx_mdm_cms_verify_attached_base64(const char *b64,
    size_t b64_len, ngx_mdm_x509_verifier_t *v, time_t now,
    unsigned char *content, size_t content_size, size_t *content_len,
    X509 **signer);


/*
 * Signs "data" as attached-content CMS SignedData (SHA-256) with cert and
 * key, adding the chain certificates (may be NULL; the signer's own copy
 * is skipped).  Returns DER to free with ngx_mdm_x509_free(), or NULL.
 */

unsigned char *ngx_mdm_cms_sign(const unsigned char *data, size_t len,
    X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain, size_t *out_len);


/*
 * APNs push certificate: the topic is the subject UID, which must start
 * with "com.apple.mgmt.".  Gives NGX_MDM_X509_OK, NO_UID, WRONG_PREFIX,
 * MALFORMED or ERROR (buffer too small).
 */

ngx_mdm_x509_rc_e ngx_mdm_x509_apns_topic(X509 *cert, char *topic,
    size_t size);

/* notAfter - now: negative once expired; -1 if notAfter is unreadable */
time_t ngx_mdm_x509_expires_in(X509 *cert, time_t now);


#endif /* _NGX_MDM_X509_H_INCLUDED_ */
