
/*
 * nginx-mdm enrollment: the configuration.  Every file the directives
 * name is read here, in the master, so that nginx -t refuses a bad one
 * and a reload rotates them; the request side only reads the result.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_mdm_enroll_http.h"


#define NGX_HTTP_MDM_ENROLL_PASSWORD_MAX  4096


static char *ngx_http_mdm_enroll_check(ngx_conf_t *cf,
    ngx_http_mdm_enroll_loc_conf_t *conf);
static char *ngx_http_mdm_enroll_derive(ngx_conf_t *cf,
    ngx_http_mdm_enroll_loc_conf_t *conf);
static char *ngx_http_mdm_enroll_cstr(ngx_pool_t *pool, u_char *data,
    size_t len);
static ngx_mdm_x509_verifier_t *ngx_http_mdm_enroll_verifier(ngx_conf_t *cf,
    STACK_OF(X509) *cas, unsigned flags);
static void ngx_http_mdm_enroll_free_verifier(void *data);
static void ngx_http_mdm_enroll_free_chain(void *data);
static void ngx_http_mdm_enroll_free_key(void *data);


static ngx_conf_enum_t  ngx_http_mdm_enroll_modes[] = {
    { ngx_string("ade"), NGX_HTTP_MDM_ENROLL_ADE },
    { ngx_string("sso"), NGX_HTTP_MDM_ENROLL_SSO },
    { ngx_string("ota_profile"), NGX_HTTP_MDM_ENROLL_OTA_PROFILE },
    { ngx_string("ota"), NGX_HTTP_MDM_ENROLL_OTA },
    { ngx_null_string, 0 }
};


/*
 * Apple iPhone Device CA, alone: the issuer of device identities.  Never
 * Apple Root CA (ngx_mdm_x509.h): with no time and no EKU checks every
 * certificate Apple issues would pass.  Public certificate, from
 * ../shared/vectors/enroll/zentral_Apple_iPhone_Device_CA_Fullchain.pem.
 */

static const char  ngx_http_mdm_enroll_apple_device_ca[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDaTCCAlGgAwIBAgIBATANBgkqhkiG9w0BAQUFADB5MQswCQYDVQQGEwJVUzET\n"
    "MBEGA1UEChMKQXBwbGUgSW5jLjEmMCQGA1UECxMdQXBwbGUgQ2VydGlmaWNhdGlv\n"
    "biBBdXRob3JpdHkxLTArBgNVBAMTJEFwcGxlIGlQaG9uZSBDZXJ0aWZpY2F0aW9u\n"
    "IEF1dGhvcml0eTAeFw0wNzA0MTYyMjU0NDZaFw0xNDA0MTYyMjU0NDZaMFoxCzAJ\n"
    "BgNVBAYTAlVTMRMwEQYDVQQKEwpBcHBsZSBJbmMuMRUwEwYDVQQLEwxBcHBsZSBp\n"
    "UGhvbmUxHzAdBgNVBAMTFkFwcGxlIGlQaG9uZSBEZXZpY2UgQ0EwgZ8wDQYJKoZI\n"
    "hvcNAQEBBQADgY0AMIGJAoGBAPGUSsnquloYYK3Lok1NTlQZaRdZB2bLl+hmmkdf\n"
    "Rq5nerVKc1SxywT2vTa4DFU4ioSDMVJl+TPhl3ecK0wmsCU/6TKqewh0lOzBSzgd\n"
    "Z04IUpRai1mjXNeT9KD+VYW7TEaXXm6yd0UvZ1y8Cxi/WblshvcqdXbSGXH0KWO5\n"
    "JQuvAgMBAAGjgZ4wgZswDgYDVR0PAQH/BAQDAgGGMA8GA1UdEwEB/wQFMAMBAf8w\n"
    "HQYDVR0OBBYEFLL+ISNEhpVqedWBJo5zENinTI50MB8GA1UdIwQYMBaAFOc0Ki4i\n"
    "3jlga7SUzneDYS8xoHw1MDgGA1UdHwQxMC8wLaAroCmGJ2h0dHA6Ly93d3cuYXBw\n"
    "bGUuY29tL2FwcGxlY2EvaXBob25lLmNybDANBgkqhkiG9w0BAQUFAAOCAQEAd13P\n"
    "Z3pMViukVHe9WUg8Hum+0I/0kHKvjhwVd/IMwGlXyU7DhUYWdja2X/zqj7W24Aq5\n"
    "7dEKm3fqqxK5XCFVGY5HI0cRsdENyTP7lxSiiTRYj2mlPedheCn+k6T5y0U4Xr40\n"
    "FXwWb2nWqCF1AgIudhgvVbxlvqcxUm8Zz7yDeJ0JFovXQhyO5fLUHRLCQFssAbf8\n"
    "B4i8rYYsBUhYTspVJcxVpIIltkYpdIRSIARA49HNvKK4hzjzMS/OhKQpVKw+OCEZ\n"
    "xptCVeN2pjbdt9uzi175oVo/u6B2ArKAW17u6XEHIdDMOe7cb33peVI6TD15W4MI\n"
    "pyQPbp8orlXe+tA8JA==\n"
    "-----END CERTIFICATE-----\n";


static const char  *ngx_http_mdm_enroll_platforms[] = {
    "macos", "ios", "ipados", "tvos", "watchos", "visionos", NULL
};



void *
ngx_http_mdm_enroll_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_enroll_main_conf_t));
}


char *
ngx_http_mdm_enroll_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mdm_enroll_main_conf_t  *emcf = conf;

    size_t           len;
    STACK_OF(X509)  *cas;

    len = sizeof(ngx_http_mdm_enroll_apple_device_ca) - 1;

    cas = ngx_mdm_x509_chain_from_pem(ngx_http_mdm_enroll_apple_device_ca,
                                      len);
    if (cas == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mdm enroll: Apple iPhone Device CA: %s",
                           ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    emcf->apple = ngx_http_mdm_enroll_verifier(cf, cas,
                                               NGX_MDM_X509_APPLE_DEVICE);

    ngx_mdm_x509_chain_free(cas);

    return emcf->apple ? NGX_CONF_OK : NGX_CONF_ERROR;
}


void *
ngx_http_mdm_enroll_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_enroll_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_enroll_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->mode = NGX_HTTP_MDM_ENROLL_OFF;
     *     conf->identifier = { 0, NULL };
     *     conf->display_name = { 0, NULL };
     *     conf->description = { 0, NULL };
     *     conf->organization = { 0, NULL };
     *     conf->scep_url = { 0, NULL };
     *     conf->scep_name = { 0, NULL };
     *     conf->server_url = { 0, NULL };
     *     conf->checkin_url = { 0, NULL };
     *     conf->topic = { 0, NULL };
     *     conf->ota_url = { 0, NULL };
     *     conf->user = NULL;
     *     conf->uuid = ... (derived in merge)
     */

    conf->subject = NGX_CONF_UNSET_PTR;
    conf->key_size = NGX_CONF_UNSET;
    conf->access_rights = NGX_CONF_UNSET;
    conf->sign_message = NGX_CONF_UNSET;
    conf->check_out_when_removed = NGX_CONF_UNSET;
    conf->capabilities = NGX_CONF_UNSET_PTR;
    conf->challenge_ttl = NGX_CONF_UNSET;
    conf->sign_cert = NGX_CONF_UNSET_PTR;
    conf->sign_chain = NGX_CONF_UNSET_PTR;
    conf->sign_key = NGX_CONF_UNSET_PTR;
    conf->apple = NGX_CONF_UNSET_PTR;
    conf->scep_ca = NGX_CONF_UNSET_PTR;
    conf->min_os = NGX_CONF_UNSET_PTR;
    conf->ota_token_ttl = NGX_CONF_UNSET;

    return conf;
}


char *
ngx_http_mdm_enroll_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_mdm_enroll_loc_conf_t *prev = parent;
    ngx_http_mdm_enroll_loc_conf_t *conf = child;

    char                             **cap;
    ngx_http_mdm_enroll_main_conf_t   *emcf;

    emcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_mdm_enroll_module);

    ngx_conf_merge_str_value(conf->identifier, prev->identifier,
                             "org.nginx-mdm.enrollment");
    ngx_conf_merge_str_value(conf->display_name, prev->display_name,
                             "MDM Enrollment");
    ngx_conf_merge_str_value(conf->description, prev->description, "");
    ngx_conf_merge_str_value(conf->organization, prev->organization, "");
    ngx_conf_merge_str_value(conf->scep_url, prev->scep_url, "");
    ngx_conf_merge_str_value(conf->scep_name, prev->scep_name, "");
    ngx_conf_merge_ptr_value(conf->subject, prev->subject, NULL);
    ngx_conf_merge_value(conf->key_size, prev->key_size, 2048);
    ngx_conf_merge_str_value(conf->server_url, prev->server_url, "");
    ngx_conf_merge_str_value(conf->checkin_url, prev->checkin_url, "");
    ngx_conf_merge_str_value(conf->topic, prev->topic, "");
    ngx_conf_merge_value(conf->access_rights, prev->access_rights,
                         NGX_MDM_ENROLL_ACCESS_ALL);
    ngx_conf_merge_value(conf->sign_message, prev->sign_message, 0);
    ngx_conf_merge_value(conf->check_out_when_removed,
                         prev->check_out_when_removed, 1);
    ngx_conf_merge_ptr_value(conf->capabilities, prev->capabilities, NULL);
    ngx_conf_merge_sec_value(conf->challenge_ttl, prev->challenge_ttl, 3600);
    ngx_conf_merge_ptr_value(conf->sign_cert, prev->sign_cert, NULL);
    ngx_conf_merge_ptr_value(conf->sign_chain, prev->sign_chain, NULL);
    ngx_conf_merge_ptr_value(conf->sign_key, prev->sign_key, NULL);
    ngx_conf_merge_ptr_value(conf->apple, prev->apple, emcf->apple);
    ngx_conf_merge_ptr_value(conf->scep_ca, prev->scep_ca, NULL);
    ngx_conf_merge_ptr_value(conf->min_os, prev->min_os, NULL);
    ngx_conf_merge_str_value(conf->ota_url, prev->ota_url, "");
    ngx_conf_merge_sec_value(conf->ota_token_ttl, prev->ota_token_ttl, 3600);

    if (conf->user == NULL) {
        conf->user = prev->user;
    }

    if (conf->mode == NGX_HTTP_MDM_ENROLL_OFF) {
        return NGX_CONF_OK;
    }

    if (conf->capabilities == NULL) {
        conf->capabilities = ngx_array_create(cf->pool, 2, sizeof(char *));
        cap = conf->capabilities ? ngx_array_push_n(conf->capabilities, 2)
                                 : NULL;
        if (cap == NULL) {
            return NGX_CONF_ERROR;
        }

        cap[0] = NGX_MDM_ENROLL_CAP_PER_USER;
        cap[1] = NGX_MDM_ENROLL_CAP_BOOTSTRAP;
    }

    if (ngx_http_mdm_enroll_check(cf, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_mdm_enroll_derive(cf, conf);
}


/* what each kind of location cannot do without */

static char *
ngx_http_mdm_enroll_check(ngx_conf_t *cf, ngx_http_mdm_enroll_loc_conf_t *conf)
{
    const char  *missing;

    missing = NULL;

    if (conf->sign_cert == NULL) {
        missing = "mdm_enroll_signing_certificate";

    } else if (conf->sign_key == NULL) {
        missing = "mdm_enroll_signing_certificate_key";

    } else if (conf->mode == NGX_HTTP_MDM_ENROLL_OTA_PROFILE) {
        if (conf->ota_url.len == 0) {
            missing = "mdm_enroll_ota_url";
        }

    } else if (conf->scep_url.len == 0) {
        missing = "mdm_enroll_scep_url";

    } else if (conf->server_url.len == 0) {
        missing = "mdm_enroll_server_url";

    } else if (conf->topic.len == 0) {
        missing = "mdm_enroll_topic\" or \"mdm_enroll_push_certificate";

    } else if (conf->mode == NGX_HTTP_MDM_ENROLL_SSO && conf->user == NULL) {
        missing = "mdm_enroll_user";

    } else if (conf->mode == NGX_HTTP_MDM_ENROLL_OTA
               && conf->scep_ca == NULL)
    {
        missing = "mdm_enroll_scep_ca";
    }

    if (missing) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"mdm_enroll\" in %V:%ui needs \"%s\"",
                      &conf->mode_file, conf->mode_line, missing);
        return NGX_CONF_ERROR;
    }

    if (ngx_mdm_x509_key_matches(conf->sign_cert, conf->sign_key)
        != NGX_MDM_X509_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"mdm_enroll\" in %V:%ui: the signing key does not "
                      "match the signing certificate",
                      &conf->mode_file, conf->mode_line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Identifiers and UUIDs that stay the same for a server, so that a
 * profile installed again replaces the one before it.
 */

static char *
ngx_http_mdm_enroll_derive(ngx_conf_t *cf,
    ngx_http_mdm_enroll_loc_conf_t *conf)
{
    size_t       len;
    u_char      *seed, *ota_seed;
    ngx_uint_t   i;

    static struct {
        size_t      offset;
        const char *suffix;
    }  ids[] = {
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, scep_identifier),
          ".scep" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, mdm_identifier),
          ".mdm" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, service_identifier),
          ".ota" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, ota_identifier),
          ".ota-identity" },
        { offsetof(ngx_http_mdm_enroll_loc_conf_t, ota_scep_identifier),
          ".ota-identity.scep" }
    };

    len = conf->identifier.len + sizeof("|") + conf->server_url.len;
    seed = ngx_pnalloc(cf->pool, len);
    if (seed == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(seed, "%V|%V%Z", &conf->identifier, &conf->server_url);

    len = conf->identifier.len + sizeof("|") + conf->ota_url.len;
    ota_seed = ngx_pnalloc(cf->pool, len);
    if (ota_seed == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(ota_seed, "%V|%V%Z", &conf->identifier, &conf->ota_url);

    ngx_mdm_enroll_uuid((char *) seed, "profile", conf->uuid);
    ngx_mdm_enroll_uuid((char *) seed, "scep", conf->scep_uuid);
    ngx_mdm_enroll_uuid((char *) seed, "mdm", conf->mdm_uuid);
    ngx_mdm_enroll_uuid((char *) seed, "ota-identity", conf->ota_uuid);
    ngx_mdm_enroll_uuid((char *) seed, "ota-identity-scep",
                        conf->ota_scep_uuid);
    ngx_mdm_enroll_uuid((char *) ota_seed, "ota-service",
                        conf->service_uuid);

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        len = conf->identifier.len + ngx_strlen(ids[i].suffix) + 1;

        seed = ngx_pnalloc(cf->pool, len);
        if (seed == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(seed, "%V%s%Z", &conf->identifier, ids[i].suffix);

        *(char **) ((char *) conf + ids[i].offset) = (char *) seed;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_mdm_enroll(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    if (elcf->mode != NGX_HTTP_MDM_ENROLL_OFF) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; ngx_http_mdm_enroll_modes[i].name.len; i++) {
        if (ngx_strcmp(value[1].data, ngx_http_mdm_enroll_modes[i].name.data)
            == 0)
        {
            break;
        }
    }

    if (ngx_http_mdm_enroll_modes[i].name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", use \"ade\", \"sso\", "
                           "\"ota_profile\" or \"ota\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    elcf->mode = ngx_http_mdm_enroll_modes[i].value;
    elcf->mode_file.len = cf->conf_file->file.name.len;
    elcf->mode_file.data = ngx_pstrdup(cf->pool, &cf->conf_file->file.name);
    if (elcf->mode_file.data == NULL) {
        return NGX_CONF_ERROR;
    }

    elcf->mode_line = cf->conf_file->line;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mdm_enroll_handler;

    return NGX_CONF_OK;
}


/* text that goes into a profile: no control characters */

char *
ngx_http_mdm_enroll_text(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t   *field, *value;
    ngx_uint_t   i;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] < 0x20 || value[1].data[i] == 0x7f) {
            return "must not contain control characters";
        }
    }

    if (value[1].len == 0 && cmd->offset
        == offsetof(ngx_http_mdm_enroll_loc_conf_t, identifier))
    {
        return "must not be empty";
    }

    *field = value[1];

    return NGX_CONF_OK;
}


/* ServerURL and CheckInURL must be https [ADM com.apple.mdm.yaml] */

char *
ngx_http_mdm_enroll_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t   *field, *value;
    ngx_uint_t   https, i;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    https = (cmd->offset
             == offsetof(ngx_http_mdm_enroll_loc_conf_t, server_url)
             || cmd->offset
                == offsetof(ngx_http_mdm_enroll_loc_conf_t, checkin_url));

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= 0x20 || value[1].data[i] >= 0x7f) {
            return "must be a URL without spaces or control characters";
        }
    }

    if (!(value[1].len > 8
          && ngx_strncasecmp(value[1].data, (u_char *) "https://", 8) == 0)
        && !(!https && value[1].len > 7
             && ngx_strncasecmp(value[1].data, (u_char *) "http://", 7) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be an %s URL, not \"%V\"",
                           &cmd->name, https ? "https://" : "http(s)://",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    *field = value[1];

    return NGX_CONF_OK;
}


/*
 * "/O=Example Inc./CN=MDM Identity": each part TYPE=VALUE, TYPE a short
 * name (CN, O, OU, C, ST, L) or a dotted OID, as the SCEP payload's
 * Subject takes them [ADM com.apple.security.scep.yaml].
 */

char *
ngx_http_mdm_enroll_subject(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    u_char                *p, *last, *part, *eq, *s;
    ngx_str_t             *value;
    ngx_mdm_enroll_rdn_t  *rdn;

    if (elcf->subject != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    elcf->subject = ngx_array_create(cf->pool, 4,
                                     sizeof(ngx_mdm_enroll_rdn_t));
    if (elcf->subject == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value[1].data;
    last = p + value[1].len;

    if (p == last || *p != '/') {
        goto invalid;
    }

    while (p < last) {
        part = ++p;

        while (p < last && *p != '/') {
            if (*p < 0x20 || *p == 0x7f) {
                goto invalid;
            }

            p++;
        }

        eq = ngx_strlchr(part, p, '=');
        if (eq == NULL || eq == part || eq + 1 == p) {
            goto invalid;
        }

        for (s = part; s < eq; s++) {
            if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'Z')
                  || (*s >= 'a' && *s <= 'z') || *s == '.'))
            {
                goto invalid;
            }
        }

        rdn = ngx_array_push(elcf->subject);
        if (rdn == NULL) {
            return NGX_CONF_ERROR;
        }

        rdn->type = ngx_http_mdm_enroll_cstr(cf->pool, part, eq - part);
        rdn->value = ngx_http_mdm_enroll_cstr(cf->pool, eq + 1, p - eq - 1);

        if (rdn->type == NULL || rdn->value == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid subject \"%V\", use "
                       "\"/O=Example Inc./CN=MDM Identity\"", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_mdm_enroll_cstr(ngx_pool_t *pool, u_char *data, size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, data, len);
    p[len] = '\0';

    return (char *) p;
}


char *
ngx_http_mdm_enroll_topic(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (elcf->topic.data) {
        return "is duplicate, or set with mdm_enroll_push_certificate";
    }

    value = cf->args->elts;

    if (value[1].len <= sizeof(NGX_MDM_APNS_TOPIC_PREFIX) - 1
        || ngx_strncmp(value[1].data, NGX_MDM_APNS_TOPIC_PREFIX,
                       sizeof(NGX_MDM_APNS_TOPIC_PREFIX) - 1) != 0)
    {
        return "must start with \"" NGX_MDM_APNS_TOPIC_PREFIX "\"";
    }

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= 0x20 || value[1].data[i] >= 0x7f) {
            return "must not contain spaces or control characters";
        }
    }

    elcf->topic = value[1];

    return NGX_CONF_OK;
}


/* the topic is the push certificate's UID, as APNs knows it */

char *
ngx_http_mdm_enroll_push_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    char        topic[NGX_MDM_X509_UID_SIZE];
    X509       *cert;
    ngx_str_t  *value, path;

    if (elcf->topic.data) {
        return "is duplicate, or set with mdm_enroll_topic";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cert = ngx_mdm_x509_load_cert((char *) path.data);
    if (cert == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    if (ngx_mdm_x509_apns_topic(cert, topic, sizeof(topic))
        != NGX_MDM_X509_OK)
    {
        X509_free(cert);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"%V\" is not an MDM push "
                           "certificate: %s", &cmd->name, &path,
                           ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    X509_free(cert);

    elcf->topic.len = ngx_strlen(topic);
    elcf->topic.data = ngx_pnalloc(cf->pool, elcf->topic.len + 1);
    if (elcf->topic.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(elcf->topic.data, topic, elcf->topic.len + 1);

    return NGX_CONF_OK;
}


char *
ngx_http_mdm_enroll_capabilities(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    char        **cap;
    ngx_str_t    *value;
    ngx_uint_t    i;

    if (elcf->capabilities != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    elcf->capabilities = ngx_array_create(cf->pool, cf->args->nelts,
                                          sizeof(char *));
    if (elcf->capabilities == NULL) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "none") == 0) {
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strcmp(value[i].data, NGX_MDM_ENROLL_CAP_PER_USER) != 0
            && ngx_strcmp(value[i].data, NGX_MDM_ENROLL_CAP_BOOTSTRAP) != 0
            && ngx_strcmp(value[i].data, NGX_MDM_ENROLL_CAP_TOKEN) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown server capability \"%V\", use "
                               "\"" NGX_MDM_ENROLL_CAP_PER_USER "\", "
                               "\"" NGX_MDM_ENROLL_CAP_BOOTSTRAP "\", "
                               "\"" NGX_MDM_ENROLL_CAP_TOKEN "\" or "
                               "\"none\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        cap = ngx_array_push(elcf->capabilities);
        if (cap == NULL) {
            return NGX_CONF_ERROR;
        }

        *cap = (char *) value[i].data;
    }

    return NGX_CONF_OK;
}


/* the signer's certificate first, then its chain, sent in every profile */

char *
ngx_http_mdm_enroll_signing_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t           *value, path;
    STACK_OF(X509)      *chain;
    ngx_pool_cleanup_t  *cln;

    if (elcf->sign_cert != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    chain = ngx_mdm_x509_load_chain((char *) path.data);
    if (chain == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_mdm_enroll_free_chain;
    cln->data = chain;

    elcf->sign_chain = chain;
    elcf->sign_cert = sk_X509_value(chain, 0);

    return NGX_CONF_OK;
}


/*
 * mdm_enroll_signing_certificate_key FILE [PASSWORD_FILE]: the first line
 * of PASSWORD_FILE decrypts the key (an empty line: an empty passphrase,
 * as the SCEP test CA's).
 */

char *
ngx_http_mdm_enroll_signing_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    u_char              *p, *last, pw[NGX_HTTP_MDM_ENROLL_PASSWORD_MAX];
    ssize_t              n;
    EVP_PKEY            *key;
    ngx_str_t           *value, path, pw_path;
    ngx_file_t           file;
    ngx_pool_cleanup_t  *cln;

    if (elcf->sign_key != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    p = NULL;

    if (cf->args->nelts == 3) {
        pw_path = value[2];

        if (ngx_conf_full_name(cf->cycle, &pw_path, 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&file, sizeof(ngx_file_t));
        file.name = pw_path;
        file.log = cf->log;

        file.fd = ngx_open_file(pw_path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN,
                                0);
        if (file.fd == NGX_INVALID_FILE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               ngx_open_file_n " \"%V\" failed", &pw_path);
            return NGX_CONF_ERROR;
        }

        n = ngx_read_file(&file, pw, sizeof(pw) - 1, 0);

        if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                          ngx_close_file_n " \"%V\" failed", &pw_path);
        }

        if (n == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        last = pw + n;
        *last = '\0';

        for (p = pw; p < last && *p != CR && *p != LF; p++) {
            /* void */
        }

        *p = '\0';
        p = pw;
    }

    key = ngx_mdm_x509_load_key((char *) path.data, (char *) p);

    ngx_explicit_memzero(pw, sizeof(pw));

    if (key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_mdm_enroll_free_key;
    cln->data = key;

    elcf->sign_key = key;

    return NGX_CONF_OK;
}


/*
 * mdm_enroll_apple_device_ca: exactly one certificate, the issuer of
 * device identities (see the warning in ngx_mdm_x509.h); a file holding
 * a chain would make every certificate in it an anchor.
 * mdm_enroll_scep_ca: our SCEP CA(s), times checked.
 */

char *
ngx_http_mdm_enroll_ca(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t                 *value, path;
    ngx_uint_t                 apple;
    STACK_OF(X509)            *cas;
    ngx_mdm_x509_verifier_t  **field;

    field = (ngx_mdm_x509_verifier_t **) (p + cmd->offset);

    if (*field != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    apple = (cmd->offset == offsetof(ngx_http_mdm_enroll_loc_conf_t, apple));

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cas = ngx_mdm_x509_load_chain((char *) path.data);
    if (cas == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NGX_CONF_ERROR;
    }

    if (apple && sk_X509_num(cas) != 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" holds %d certificates: give the device "
                           "CA alone (\"Apple iPhone Device CA\"), never "
                           "Apple Root CA or a full chain", &path,
                           sk_X509_num(cas));
        ngx_mdm_x509_chain_free(cas);
        return NGX_CONF_ERROR;
    }

    *field = ngx_http_mdm_enroll_verifier(cf, cas,
                                          apple ? NGX_MDM_X509_APPLE_DEVICE
                                                : 0);

    ngx_mdm_x509_chain_free(cas);

    return *field ? NGX_CONF_OK : NGX_CONF_ERROR;
}


static ngx_mdm_x509_verifier_t *
ngx_http_mdm_enroll_verifier(ngx_conf_t *cf, STACK_OF(X509) *cas,
    unsigned flags)
{
    X509_STORE               *store;
    ngx_pool_cleanup_t       *cln;
    ngx_mdm_x509_verifier_t  *v;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    store = ngx_mdm_x509_store_create(cas);
    if (store == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NULL;
    }

    v = ngx_mdm_x509_verifier_create(store, flags);

    X509_STORE_free(store);

    if (v == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", ngx_mdm_x509_error());
        return NULL;
    }

    cln->handler = ngx_http_mdm_enroll_free_verifier;
    cln->data = v;

    return v;
}


static void
ngx_http_mdm_enroll_free_verifier(void *data)
{
    ngx_mdm_x509_verifier_free(data);
}


static void
ngx_http_mdm_enroll_free_chain(void *data)
{
    ngx_mdm_x509_chain_free(data);
}


static void
ngx_http_mdm_enroll_free_key(void *data)
{
    EVP_PKEY_free(data);
}


/* mdm_enroll_min_os_version PLATFORM VERSION [BUILD] */

char *
ngx_http_mdm_enroll_min_os(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_enroll_loc_conf_t *elcf = conf;

    ngx_str_t                     *value;
    ngx_uint_t                     i;
    ngx_http_mdm_enroll_min_os_t  *min;

    value = cf->args->elts;

    if (elcf->min_os == NGX_CONF_UNSET_PTR) {
        elcf->min_os = ngx_array_create(cf->pool, 3,
                                        sizeof(ngx_http_mdm_enroll_min_os_t));
        if (elcf->min_os == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; ngx_http_mdm_enroll_platforms[i]; i++) {
        if (ngx_strcmp(value[1].data, ngx_http_mdm_enroll_platforms[i]) == 0)
        {
            break;
        }
    }

    if (ngx_http_mdm_enroll_platforms[i] == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown platform \"%V\", use \"macos\", \"ios\", "
                           "\"ipados\", \"tvos\", \"watchos\" or "
                           "\"visionos\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    min = elcf->min_os->elts;

    for (i = 0; i < elcf->min_os->nelts; i++) {
        if (ngx_strcmp(min[i].platform.data, value[1].data) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate platform \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_mdm_enroll_version_cmp(value[2].data, value[2].len,
                                   value[2].data, value[2].len) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid version \"%V\", use e.g. \"17.0\"",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    min = ngx_array_push(elcf->min_os);
    if (min == NULL) {
        return NGX_CONF_ERROR;
    }

    min->platform = value[1];
    min->version = value[2];
    ngx_str_null(&min->build);

    if (cf->args->nelts == 4) {
        for (i = 0; i < value[3].len; i++) {
            if (!((value[3].data[i] >= '0' && value[3].data[i] <= '9')
                  || (value[3].data[i] >= 'A' && value[3].data[i] <= 'Z')
                  || (value[3].data[i] >= 'a' && value[3].data[i] <= 'z')))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid build \"%V\", use e.g. "
                                   "\"21A329\"", &value[3]);
                return NGX_CONF_ERROR;
            }
        }

        min->build = value[3];
    }

    return NGX_CONF_OK;
}


/* Apple: "Never 0; 2 needs 1; 128 needs 64" [ADM com.apple.mdm.yaml] */

char *
ngx_http_mdm_enroll_check_access_rights(ngx_conf_t *cf, void *post,
    void *data)
{
    ngx_int_t  *np = data;

    if (*np < 1 || *np > NGX_MDM_ENROLL_ACCESS_ALL) {
        return "must be between 1 and 8191";
    }

    if ((*np & 2) && !(*np & 1)) {
        return "must include 1 (inspect profiles) with 2";
    }

    if ((*np & 128) && !(*np & 64)) {
        return "must include 64 (inspect provisioning profiles) with 128";
    }

    return NGX_CONF_OK;
}


char *
ngx_http_mdm_enroll_check_key_size(ngx_conf_t *cf, void *post, void *data)
{
    ngx_int_t  *np = data;

    if (*np != 1024 && *np != 2048 && *np != 4096) {
        return "must be 1024, 2048 or 4096";
    }

    return NGX_CONF_OK;
}
