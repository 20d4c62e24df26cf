
/*
 * nginx-mdm enrollment: the profiles as libplist nodes (PROTOCOL.md §2.1,
 * §2.5).  Key names are Apple's, spelled exactly as in the schema
 * [ADM mdm/profiles/TopLevel.yaml, com.apple.security.scep.yaml,
 * com.apple.mdm.yaml].
 */


#include <string.h>
#include "ngx_mdm_enroll.h"


static int ngx_mdm_enroll_set_string(plist_t dict, const char *key,
    const char *value);
static int ngx_mdm_enroll_set_int(plist_t dict, const char *key,
    int64_t value);
static int ngx_mdm_enroll_set_bool(plist_t dict, const char *key, int value);
static plist_t ngx_mdm_enroll_payload(const char *type,
    const char *identifier, const char *uuid, const char *display_name);
static plist_t ngx_mdm_enroll_scep_payload(const ngx_mdm_enroll_profile_t *p);
static plist_t ngx_mdm_enroll_mdm_payload(const ngx_mdm_enroll_profile_t *p);
static plist_t ngx_mdm_enroll_top(const char *type, const char *identifier,
    const char *uuid, const char *display_name, const char *description,
    const char *organization);


/* a NULL value leaves the key out; -1 on failure */

static int
ngx_mdm_enroll_set_string(plist_t dict, const char *key, const char *value)
{
    plist_t  node;

    if (value == NULL) {
        return 0;
    }

    node = plist_new_string(value);
    if (node == NULL) {
        return -1;
    }

    plist_dict_set_item(dict, key, node);

    return 0;
}


static int
ngx_mdm_enroll_set_int(plist_t dict, const char *key, int64_t value)
{
    plist_t  node;

    node = plist_new_uint((uint64_t) value);
    if (node == NULL) {
        return -1;
    }

    plist_dict_set_item(dict, key, node);

    return 0;
}


static int
ngx_mdm_enroll_set_bool(plist_t dict, const char *key, int value)
{
    plist_t  node;

    node = plist_new_bool(value ? 1 : 0);
    if (node == NULL) {
        return -1;
    }

    plist_dict_set_item(dict, key, node);

    return 0;
}


/* the keys every payload carries [ADM CommonPayloadKeys.yaml] */

static plist_t
ngx_mdm_enroll_payload(const char *type, const char *identifier,
    const char *uuid, const char *display_name)
{
    plist_t  dict;

    dict = plist_new_dict();
    if (dict == NULL) {
        return NULL;
    }

    if (ngx_mdm_enroll_set_string(dict, "PayloadType", type) != 0
        || ngx_mdm_enroll_set_string(dict, "PayloadIdentifier", identifier)
           != 0
        || ngx_mdm_enroll_set_string(dict, "PayloadUUID", uuid) != 0
        || ngx_mdm_enroll_set_int(dict, "PayloadVersion", 1) != 0
        || ngx_mdm_enroll_set_string(dict, "PayloadDisplayName",
                                     display_name) != 0)
    {
        plist_free(dict);
        return NULL;
    }

    return dict;
}


static plist_t
ngx_mdm_enroll_top(const char *type, const char *identifier,
    const char *uuid, const char *display_name, const char *description,
    const char *organization)
{
    plist_t  dict;

    dict = ngx_mdm_enroll_payload(type, identifier, uuid, display_name);
    if (dict == NULL) {
        return NULL;
    }

    if (ngx_mdm_enroll_set_string(dict, "PayloadDescription", description)
        != 0
        || ngx_mdm_enroll_set_string(dict, "PayloadOrganization",
                                     organization) != 0)
    {
        plist_free(dict);
        return NULL;
    }

    return dict;
}


/*
 * com.apple.security.scep: its keys sit in a nested PayloadContent dict;
 * Subject is an array of RDNs, each an array of [type, value] arrays.
 */

static plist_t
ngx_mdm_enroll_scep_payload(const ngx_mdm_enroll_profile_t *p)
{
    size_t   i;
    plist_t  payload, content, subject, rdn, pair, node;

    payload = ngx_mdm_enroll_payload("com.apple.security.scep",
                                     p->scep_identifier, p->scep_uuid,
                                     "SCEP");
    if (payload == NULL) {
        return NULL;
    }

    content = plist_new_dict();
    if (content == NULL) {
        goto failed;
    }

    plist_dict_set_item(payload, "PayloadContent", content);

    if (ngx_mdm_enroll_set_string(content, "URL", p->scep_url) != 0
        || ngx_mdm_enroll_set_string(content, "Name", p->scep_name) != 0
        || ngx_mdm_enroll_set_string(content, "Challenge", p->challenge) != 0
        || ngx_mdm_enroll_set_int(content, "Keysize", p->key_size) != 0
        || ngx_mdm_enroll_set_string(content, "Key Type", "RSA") != 0
        || ngx_mdm_enroll_set_int(content, "Key Usage", p->key_usage) != 0)
    {
        goto failed;
    }

    if (p->nsubject == 0) {
        return payload;
    }

    subject = plist_new_array();
    if (subject == NULL) {
        goto failed;
    }

    plist_dict_set_item(content, "Subject", subject);

    for (i = 0; i < p->nsubject; i++) {
        rdn = plist_new_array();
        pair = plist_new_array();

        if (rdn == NULL || pair == NULL) {
            plist_free(rdn);
            plist_free(pair);
            goto failed;
        }

        plist_array_append_item(subject, rdn);
        plist_array_append_item(rdn, pair);

        node = plist_new_string(p->subject[i].type);
        if (node == NULL) {
            goto failed;
        }

        plist_array_append_item(pair, node);

        node = plist_new_string(p->subject[i].value);
        if (node == NULL) {
            goto failed;
        }

        plist_array_append_item(pair, node);
    }

    return payload;

failed:

    plist_free(payload);

    return NULL;
}


/* com.apple.mdm: its keys sit directly in the payload */

static plist_t
ngx_mdm_enroll_mdm_payload(const ngx_mdm_enroll_profile_t *p)
{
    size_t   i;
    plist_t  payload, caps, node;

    payload = ngx_mdm_enroll_payload("com.apple.mdm", p->mdm_identifier,
                                     p->mdm_uuid, "Device Management");
    if (payload == NULL) {
        return NULL;
    }

    if (ngx_mdm_enroll_set_string(payload, "ServerURL", p->server_url) != 0
        || ngx_mdm_enroll_set_string(payload, "CheckInURL", p->checkin_url)
           != 0
        || ngx_mdm_enroll_set_string(payload, "Topic", p->topic) != 0
        || ngx_mdm_enroll_set_string(payload, "IdentityCertificateUUID",
                                     p->scep_uuid) != 0
        || ngx_mdm_enroll_set_int(payload, "AccessRights", p->access_rights)
           != 0
        || ngx_mdm_enroll_set_bool(payload, "SignMessage", p->sign_message)
           != 0
        || ngx_mdm_enroll_set_bool(payload, "CheckOutWhenRemoved",
                                   p->check_out_when_removed) != 0)
    {
        goto failed;
    }

    if (p->ncapabilities == 0) {
        return payload;
    }

    caps = plist_new_array();
    if (caps == NULL) {
        goto failed;
    }

    plist_dict_set_item(payload, "ServerCapabilities", caps);

    for (i = 0; i < p->ncapabilities; i++) {
        node = plist_new_string(p->capabilities[i]);
        if (node == NULL) {
            goto failed;
        }

        plist_array_append_item(caps, node);
    }

    return payload;

failed:

    plist_free(payload);

    return NULL;
}


plist_t
ngx_mdm_enroll_profile(const ngx_mdm_enroll_profile_t *p)
{
    plist_t  root, content, scep, mdm;

    root = ngx_mdm_enroll_top("Configuration", p->identifier, p->uuid,
                              p->display_name, p->description,
                              p->organization);
    if (root == NULL) {
        return NULL;
    }

    content = plist_new_array();
    if (content == NULL) {
        goto failed;
    }

    plist_dict_set_item(root, "PayloadContent", content);

    scep = ngx_mdm_enroll_scep_payload(p);
    if (scep == NULL) {
        goto failed;
    }

    plist_array_append_item(content, scep);

    if (p->server_url == NULL) {
        return root;
    }

    mdm = ngx_mdm_enroll_mdm_payload(p);
    if (mdm == NULL) {
        goto failed;
    }

    plist_array_append_item(content, mdm);

    return root;

failed:

    plist_free(root);

    return NULL;
}


/*
 * The Profile Service payload is the profile itself: PayloadType
 * "Profile Service" at the top, PayloadContent a dict of URL,
 * DeviceAttributes and Challenge [MM mdm/enroll/service.go; ZT
 * contrib/mdm/payloads.py].
 */

plist_t
ngx_mdm_enroll_service_profile(const ngx_mdm_enroll_service_t *s)
{
    size_t   i;
    plist_t  root, content, attrs, node;

    root = ngx_mdm_enroll_top("Profile Service", s->identifier, s->uuid,
                              s->display_name, s->description,
                              s->organization);
    if (root == NULL) {
        return NULL;
    }

    content = plist_new_dict();
    if (content == NULL) {
        goto failed;
    }

    plist_dict_set_item(root, "PayloadContent", content);

    if (ngx_mdm_enroll_set_string(content, "URL", s->url) != 0
        || ngx_mdm_enroll_set_string(content, "Challenge", s->challenge) != 0)
    {
        goto failed;
    }

    attrs = plist_new_array();
    if (attrs == NULL) {
        goto failed;
    }

    plist_dict_set_item(content, "DeviceAttributes", attrs);

    for (i = 0; i < s->nattributes; i++) {
        node = plist_new_string(s->attributes[i]);
        if (node == NULL) {
            goto failed;
        }

        plist_array_append_item(attrs, node);
    }

    return root;

failed:

    plist_free(root);

    return NULL;
}
