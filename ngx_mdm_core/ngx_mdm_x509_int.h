
/*
 * nginx-mdm: private to ngx_mdm_x509.c and ngx_mdm_cms.c; callers use
 * ngx_mdm_x509.h.
 */


#ifndef _NGX_MDM_X509_INT_H_INCLUDED_
#define _NGX_MDM_X509_INT_H_INCLUDED_


#include <limits.h>

#include "ngx_mdm_x509.h"


#define NGX_MDM_B64_STD      0x01   /* "+" and "/" */
#define NGX_MDM_B64_URL      0x02   /* "-" and "_" */
#define NGX_MDM_B64_WS       0x04   /* skip SP, HTAB, CR, LF */

/* d2i_*() take a long, BIO_new_mem_buf() an int */
#define NGX_MDM_X509_LEN_MAX  ((size_t) INT_MAX)


/*
 * Formats the reason for ngx_mdm_x509_error() and empties the OpenSSL
 * error queue.
 */
void ngx_mdm_x509_set_error(const char *fmt, ...)
    __attribute__ ((format (printf, 1, 2)));

/* RFC 4648 base64 in the alphabets of flags (NGX_MDM_B64_*); 0 or -1 */
int ngx_mdm_x509_base64_decode(const unsigned char *in, size_t len,
    unsigned flags, unsigned char *out, size_t out_size, size_t *out_len);


#endif /* _NGX_MDM_X509_INT_H_INCLUDED_ */
