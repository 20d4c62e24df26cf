
/*
 * Outbound HTTP(S) of the helper process (DESIGN.md §5): one libcurl multi
 * handle driven by nginx events.
 *
 * Only the helper process calls this (DESIGN.md §8).  A caller makes an
 * easy handle with a completion handler, sets its own options on it (URL,
 * headers, body, TLS) and starts it; the handler runs once per start, after
 * the transfer has left the multi handle, and may start the same handle
 * again with new options or destroy it.  Transfers to one host share a
 * connection: HTTP/2 streams are multiplexed (CURLPIPE_MULTIPLEX) and a new
 * transfer waits for an existing connection rather than opening another
 * (CURLOPT_PIPEWAIT); HTTP/1.1 transfers reuse kept-alive connections.
 */


#ifndef _NGX_MDM_CURL_H_INCLUDED_
#define _NGX_MDM_CURL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <curl/curl.h>


/*
 * rc is the transfer's result (CURLE_OK when an HTTP answer came, whatever
 * its status: read it with CURLINFO_RESPONSE_CODE).  On failure
 * ngx_mdm_curl_error(easy) says why in one line.
 */
typedef void (*ngx_mdm_curl_handler_pt)(CURL *easy, CURLcode rc, void *data);


/* the multi handle of this process; idempotent; NGX_ERROR without curl */
ngx_int_t ngx_mdm_curl_init(ngx_cycle_t *cycle);

/* for multi-wide options (CURLMOPT_MAX_CONCURRENT_STREAMS, ...) */
CURLM *ngx_mdm_curl_multi(void);

/*
 * A new easy handle (NOSIGNAL, PIPEWAIT, an error buffer), or NULL.  Its
 * CURLOPT_PRIVATE belongs to the glue: keep the caller's state in data.
 */
CURL *ngx_mdm_curl_create(ngx_mdm_curl_handler_pt handler, void *data);

/* NGX_OK, or NGX_ERROR (the handler will not be called) */
ngx_int_t ngx_mdm_curl_start(CURL *easy);

/* abort a started transfer; its handler is not called */
void ngx_mdm_curl_stop(CURL *easy);

/* stop if needed and free the handle */
void ngx_mdm_curl_destroy(CURL *easy);

/* why the last transfer of this handle failed */
const char *ngx_mdm_curl_error(CURL *easy, CURLcode rc);

/* transfers started and not yet completed */
ngx_uint_t ngx_mdm_curl_running(void);


#endif /* _NGX_MDM_CURL_H_INCLUDED_ */
