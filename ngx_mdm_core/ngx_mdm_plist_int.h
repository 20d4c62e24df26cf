
/*
 * Private to ngx_mdm_plist*.c: what the parsing entry, the XML and binary
 * readers and the JSON conversion share.  Callers use ngx_mdm_plist.h.
 */


#ifndef _NGX_MDM_PLIST_INT_H_INCLUDED_
#define _NGX_MDM_PLIST_INT_H_INCLUDED_


#include "ngx_mdm_plist.h"


#define ngx_mdm_plist_is_space(c)                                            \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')


/* ngx_mdm_plist.c: errors, text, base64, dates, integers */

void ngx_mdm_plist_error(ngx_mdm_plist_err_t *err,
    ngx_mdm_plist_rc_e rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
size_t ngx_mdm_plist_xml_chars(const u_char *p, size_t len);
int ngx_mdm_plist_cp_ok(uint32_t c);
u_char *ngx_mdm_plist_utf8_put(u_char *d, uint32_t c);
ssize_t ngx_mdm_plist_b64_decode(u_char *dst, const u_char *src,
    size_t len);
size_t ngx_mdm_plist_b64_encode(u_char *dst, const u_char *src,
    size_t len);
int ngx_mdm_plist_date_parse(const u_char *p, size_t len,
    int rfc3339, int64_t *sec, int32_t *usec);
double ngx_mdm_plist_floor(double d);
size_t ngx_mdm_plist_date_format(char *buf, int64_t sec,
    int32_t usec);
plist_t ngx_mdm_plist_new_date(int64_t sec, int32_t usec);
void ngx_mdm_plist_date_get(plist_t node, int64_t *sec,
    int32_t *usec);
uint64_t ngx_mdm_plist_be(const u_char *p, unsigned n);
plist_t ngx_mdm_plist_new_integer(uint64_t bits, int is_unsigned);
int ngx_mdm_plist_integer_parse(const u_char *p, size_t len,
    uint64_t *bits, int *is_unsigned);

/* ngx_mdm_plist_xml.c */

plist_t ngx_mdm_plist_parse_xml(const u_char *buf, size_t len,
    ngx_mdm_plist_err_t *err);

/* ngx_mdm_plist_bin.c */

plist_t ngx_mdm_plist_parse_bin(const u_char *buf, size_t len,
    ngx_mdm_plist_err_t *err);


#endif /* _NGX_MDM_PLIST_INT_H_INCLUDED_ */
