-- nginx-mdm schema 8: the admin API (ngx_mdm_checkin/README.api.md).
-- Functions only: how the API shows times and enrollments.

-- RFC 3339 in UTC with microseconds, whatever the session's TimeZone.
CREATE FUNCTION mdm_api_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- An enrollment (one channel) as the API shows it.  Tokens and PushMagic
-- are secrets: only whether they are present.
CREATE FUNCTION mdm_api_enrollment(e mdm_enrollments) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'enrollment_id', e.id,
        'device_id', e.device_id,
        'channel', e.channel,
        'enrollment_type', e.enrollment_type,
        'udid', e.udid,
        'enrollment_user_id', e.enrollment_user_id,
        'user_id', e.user_id,
        'user_short_name', e.user_short_name,
        'user_long_name', e.user_long_name,
        'serial_number', e.serial_number,
        'model', e.model,
        'model_name', e.model_name,
        'product_name', e.product_name,
        'os_version', e.os_version,
        'build_version', e.build_version,
        'device_name', e.device_name,
        'imei', e.imei,
        'meid', e.meid,
        'topic', e.topic,
        'enabled', e.enabled,
        'awaiting_configuration', e.awaiting_configuration,
        'push_token', e.push_token IS NOT NULL,
        'push_token_updated_at', mdm_api_time(e.token_updated_at),
        'push_token_invalid_at', mdm_api_time(e.push_token_invalid_at),
        'token_update_tally', e.token_update_tally,
        'last_push_at', mdm_api_time(e.last_push_at),
        'last_push_error', e.last_push_error,
        'unlock_token', e.unlock_token IS NOT NULL,
        'bootstrap_token', e.bootstrap_token IS NOT NULL,
        'bootstrap_token_at', mdm_api_time(e.bootstrap_token_at),
        'authenticated_at', mdm_api_time(e.authenticated_at),
        'checked_out_at', mdm_api_time(e.checked_out_at),
        'last_seen_at', mdm_api_time(e.last_seen_at),
        'created_at', mdm_api_time(e.created_at),
        'updated_at', mdm_api_time(e.updated_at),
        'queue_depth', (SELECT count(*) FROM mdm_queue q
                        WHERE q.enrollment_id = e.id
                          AND q.status IN ('Queued', 'NotNow')))
$$;

-- A command's deliveries page by enrollment ID (GET commands/<uuid>): the
-- index on command_uuid alone (003) becomes (command_uuid, enrollment_id),
-- which serves every query the old one did at about the same write cost.
DROP INDEX mdm_queue_command;
CREATE INDEX mdm_queue_command ON mdm_queue (command_uuid, enrollment_id);
