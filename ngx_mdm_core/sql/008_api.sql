-- nginx-mdm schema 8: the admin API (README.md, "Admin JSON API").
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

-- The queue's references, checked once per statement instead of once per
-- row.  One command to 100,000 enrollments is one INSERT of 100,000 queue
-- rows; the two foreign keys of 003 ran 200,000 row triggers for it (each
-- an SPI query and a row lock), about 1.6 s of CPU here against 0.2 s for
-- the set-based check below.  What stays the same: an insert that names a
-- missing enrollment or command fails with foreign_key_violation (23503),
-- deleting an enrollment or a command deletes its queue rows, and a key
-- that queue rows use cannot change.  What differs: no KEY SHARE lock on
-- the parents, so an enrollment deleted while a command is being queued
-- for it can leave queue rows behind (nothing deletes enrollments today;
-- such rows are never delivered).
ALTER TABLE mdm_queue
    DROP CONSTRAINT mdm_queue_enrollment_id_fkey,
    DROP CONSTRAINT mdm_queue_command_uuid_fkey;

CREATE FUNCTION mdm_queue_check_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_missing  text;
BEGIN
    SELECT n.enrollment_id INTO v_missing FROM mdm_queue_new n
    WHERE NOT EXISTS (SELECT 1 FROM mdm_enrollments e
                      WHERE e.id = n.enrollment_id)
    LIMIT 1;

    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('mdm_queue: no enrollment %L', v_missing);
    END IF;

    -- one command for many rows: look each up once, by its key (a join
    -- here may be planned as a scan of all of mdm_commands)
    FOR v_missing IN SELECT DISTINCT command_uuid FROM mdm_queue_new LOOP
        PERFORM 1 FROM mdm_commands WHERE command_uuid = v_missing;

        IF NOT FOUND THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('mdm_queue: no command %L', v_missing);
        END IF;
    END LOOP;

    RETURN NULL;
END
$$;

CREATE TRIGGER mdm_queue_check_refs AFTER INSERT ON mdm_queue
    REFERENCING NEW TABLE AS mdm_queue_new
    FOR EACH STATEMENT EXECUTE FUNCTION mdm_queue_check_refs();

-- a queue row keeps its keys (fires only for an UPDATE that sets them)
CREATE FUNCTION mdm_queue_keys_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE foreign_key_violation USING
        MESSAGE = 'mdm_queue: enrollment_id and command_uuid do not change';
END
$$;

CREATE TRIGGER mdm_queue_keys_fixed
    BEFORE UPDATE OF enrollment_id, command_uuid ON mdm_queue
    FOR EACH ROW
    WHEN (OLD.enrollment_id IS DISTINCT FROM NEW.enrollment_id
          OR OLD.command_uuid IS DISTINCT FROM NEW.command_uuid)
    EXECUTE FUNCTION mdm_queue_keys_fixed();

-- ON DELETE CASCADE, per statement
CREATE FUNCTION mdm_queue_cascade() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'mdm_enrollments' THEN
        DELETE FROM mdm_queue q USING mdm_parent_old o
        WHERE q.enrollment_id = o.id;
    ELSE
        DELETE FROM mdm_queue q USING mdm_parent_old o
        WHERE q.command_uuid = o.command_uuid;
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER mdm_queue_cascade AFTER DELETE ON mdm_enrollments
    REFERENCING OLD TABLE AS mdm_parent_old
    FOR EACH STATEMENT EXECUTE FUNCTION mdm_queue_cascade();

CREATE TRIGGER mdm_queue_cascade AFTER DELETE ON mdm_commands
    REFERENCING OLD TABLE AS mdm_parent_old
    FOR EACH STATEMENT EXECUTE FUNCTION mdm_queue_cascade();

-- ON UPDATE NO ACTION: a key in use by queue rows does not change
CREATE FUNCTION mdm_queue_parent_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'mdm_enrollments' THEN
        PERFORM 1 FROM mdm_queue WHERE enrollment_id = OLD.id LIMIT 1;
    ELSE
        PERFORM 1 FROM mdm_queue WHERE command_uuid = OLD.command_uuid
        LIMIT 1;
    END IF;

    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%s: the key is still used by mdm_queue',
                             TG_TABLE_NAME);
    END IF;

    RETURN NEW;
END
$$;

CREATE TRIGGER mdm_queue_parent_key BEFORE UPDATE OF id ON mdm_enrollments
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION mdm_queue_parent_key();

CREATE TRIGGER mdm_queue_parent_key
    BEFORE UPDATE OF command_uuid ON mdm_commands
    FOR EACH ROW WHEN (OLD.command_uuid IS DISTINCT FROM NEW.command_uuid)
    EXECUTE FUNCTION mdm_queue_parent_key();
