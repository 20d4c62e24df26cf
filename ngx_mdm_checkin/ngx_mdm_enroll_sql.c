
/*
 * nginx-mdm enrollment: every statement the enrollment endpoints run, in
 * one place.  The tables are in ngx_mdm_core/sql/006_enroll.sql; the
 * challenges themselves are minted by the core (ngx_mdm_challenge.c).
 */


#include "ngx_mdm_enroll_sql.h"


/*
 * After a challenge is minted: the user and device it was minted for,
 * and the device record.  $1 challenge digest (hex), $2 user, $3 OTA
 * token id, $4 attributes (JSON), $5 source; $2..$4 may be NULL.
 */

const char  ngx_mdm_enroll_record_sql[] =
    "WITH c AS ("
    "  UPDATE mdm_challenges SET sso_user = $2::text,"
    "         enroll_token_id = $3::bigint, machine_info = $4::jsonb"
    "  WHERE digest = decode($1, 'hex') RETURNING id"
    "), dev AS ("
    "  INSERT INTO mdm_enroll_devices AS d (udid, serial_number, product,"
    "         version, os_version, imei, meid, language, source, sso_user,"
    "         machine_info)"
    "  SELECT i->>'UDID', i->>'SERIAL', nullif(i->>'PRODUCT', ''),"
    "         nullif(i->>'VERSION', ''), nullif(i->>'OS_VERSION', ''),"
    "         nullif(i->>'IMEI', ''), nullif(i->>'MEID', ''),"
    "         nullif(i->>'LANGUAGE', ''), $5::text, $2::text, i"
    "  FROM (SELECT $4::jsonb AS i) s WHERE i ? 'UDID'"
    "  ON CONFLICT (udid) DO UPDATE SET"
    "         serial_number = excluded.serial_number,"
    "         product = excluded.product, version = excluded.version,"
    "         os_version = excluded.os_version, imei = excluded.imei,"
    "         meid = excluded.meid, language = excluded.language,"
    "         source = excluded.source,"
    "         sso_user = coalesce(excluded.sso_user, d.sso_user),"
    "         machine_info = excluded.machine_info, last_seen_at = now()"
    "  RETURNING 1"
    ") "
    "SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM dev)";


/* OTA phase 1: $1 token digest (hex), $2 user or NULL, $3 expiry (unix) */

const char  ngx_mdm_enroll_token_insert_sql[] =
    "INSERT INTO mdm_enroll_tokens (digest, sso_user, expires_at) "
    "VALUES (decode($1, 'hex'), $2, to_timestamp($3::bigint))";


/*
 * OTA phase 2: the token is used once, atomically.  $1 token digest
 * (hex), $2 UDID, $3 serial number.  No row: unknown, used or expired.
 */

const char  ngx_mdm_enroll_token_use_sql[] =
    "UPDATE mdm_enroll_tokens SET used_at = now(), used_udid = $2,"
    "       used_serial = $3 "
    "WHERE digest = decode($1, 'hex') AND used_at IS NULL"
    "  AND expires_at > now() "
    "RETURNING id, coalesce(sso_user, '')";


/*
 * OTA phase 3: the throw-away identity that signed the request, as our
 * SCEP CA issued it against a phase-2 challenge.  $1 certificate SHA-256
 * (hex), $2 UDID of the request.  No row: we never issued it for OTA.
 */

const char  ngx_mdm_enroll_identity_sql[] =
    "SELECT coalesce(c.udid = $2, false), k.revoked_at IS NULL,"
    "       coalesce(c.sso_user, ''), coalesce(c.enroll_token_id::text, '') "
    "FROM mdm_certificates k JOIN mdm_challenges c ON c.id = k.challenge_id "
    "WHERE k.sha256 = decode($1, 'hex') AND c.purpose = 'ota_scep'";
