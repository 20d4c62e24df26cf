-- nginx-mdm schema 9: the check-in hot path (ngx_mdm_checkin/
-- README.md, "Check-in and commands", "Performance").
--
-- 1. Invalidation of the workers' "nothing queued" caches: every change
--    that can give an enrollment a pending command, or take a device
--    certificate's right away, is announced on the channel mdm_checkin
--    (NOTIFY is transactional: it reaches the listeners after the commit,
--    on every node).  The payload is the enrollment ids concerned, one a
--    line, or "*" for "drop everything" (revocations, bindings, and a list
--    too long for one notification).
--
-- 2. mdm_command_report: one lookup for the binding check instead of two,
--    and the delivery bookkeeping of an Idle (sent_at, sent_count, holds
--    cleared, expiries) committed without waiting for the WAL flush: losing
--    it in a crash loses nothing that matters (the command is still Queued
--    and is sent again, a hold is cleared again at the next Idle).  A
--    report carrying a result (Acknowledged, Error, NotNow, ...) still
--    commits synchronously, whatever the server's settings say.


CREATE FUNCTION mdm_checkin_notify(p_ids text)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('mdm_checkin',
                     CASE WHEN p_ids IS NULL OR length(p_ids) > 7000
                          THEN '*' ELSE p_ids END)
$$;


-- new commands: one notification per statement, whatever its size
CREATE FUNCTION mdm_queue_notify_insert()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_ids  text;
BEGIN
    SELECT string_agg(DISTINCT enrollment_id, E'\n') INTO v_ids
    FROM mdm_queue_new
    WHERE status IN ('Queued', 'NotNow');

    IF FOUND AND v_ids IS NOT NULL THEN
        PERFORM mdm_checkin_notify(v_ids);
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER mdm_queue_notify_insert
    AFTER INSERT ON mdm_queue
    REFERENCING NEW TABLE AS mdm_queue_new
    FOR EACH STATEMENT EXECUTE FUNCTION mdm_queue_notify_insert();


-- a row that becomes pending again (re-queued, NotNow, a hold cleared);
-- delivery bookkeeping and results on pending rows do not fire
CREATE FUNCTION mdm_queue_notify_update()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mdm_checkin', NEW.enrollment_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER mdm_queue_notify_update
    AFTER UPDATE ON mdm_queue
    FOR EACH ROW
    WHEN (NEW.status IN ('Queued', 'NotNow')
          AND (OLD.status IS DISTINCT FROM NEW.status
               OR (OLD.held AND NOT NEW.held)
               OR OLD.enrollment_id IS DISTINCT FROM NEW.enrollment_id))
    EXECUTE FUNCTION mdm_queue_notify_update();


-- enrollments that go away
CREATE FUNCTION mdm_enrollments_notify_delete()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_ids  text;
BEGIN
    SELECT string_agg(id, E'\n') INTO v_ids FROM mdm_enrollments_old;

    IF v_ids IS NOT NULL THEN
        PERFORM mdm_checkin_notify(v_ids);
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER mdm_enrollments_notify_delete
    AFTER DELETE ON mdm_enrollments
    REFERENCING OLD TABLE AS mdm_enrollments_old
    FOR EACH STATEMENT EXECUTE FUNCTION mdm_enrollments_notify_delete();


-- revocations, and bindings that change or go: rare, drop everything
CREATE FUNCTION mdm_checkin_notify_all()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mdm_checkin', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER mdm_certificates_notify
    AFTER UPDATE OF revoked_at OR DELETE ON mdm_certificates
    FOR EACH STATEMENT EXECUTE FUNCTION mdm_checkin_notify_all();

CREATE TRIGGER mdm_cert_bindings_notify
    AFTER UPDATE OR DELETE OR TRUNCATE ON mdm_cert_bindings
    FOR EACH STATEMENT EXECUTE FUNCTION mdm_checkin_notify_all();


-- The binding check in one statement (plpgsql: its plan is cached per
-- session): revoked first, then the binding.
CREATE OR REPLACE FUNCTION mdm_checkin_auth(p_sha256 bytea,
    p_device_id text, p_grace integer)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_code  text;
BEGIN
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM mdm_certificates
                     WHERE sha256 = p_sha256 AND revoked_at IS NOT NULL)
            THEN 'revoked'
        WHEN b.enrollment_id IS NULL THEN 'unbound'
        WHEN b.enrollment_id <> p_device_id THEN 'mismatch'
        WHEN b.not_after + make_interval(secs => p_grace) < now()
            THEN 'expired'
        ELSE 'ok'
    END INTO v_code
    FROM (SELECT 1) AS one
    LEFT JOIN mdm_cert_bindings b ON b.sha256 = p_sha256;

    RETURN v_code;
END
$$;


-- As in 005_checkin.sql, with the binding check and the enrollment lookup
-- in one statement, and the Idle's bookkeeping committed asynchronously.
CREATE OR REPLACE FUNCTION mdm_command_report(p_sha256 bytea,
    p_grace integer, p_id text, p_device_id text, p_status text,
    p_command_uuid text, p_result bytea)
RETURNS TABLE (o_code text, o_command_uuid text, o_request_type text,
               o_command bytea, o_expired text)
LANGUAGE plpgsql AS $$
DECLARE
    v_code     text;
    v_expired  text;
    v_next     record;
BEGIN
    -- mdm_checkin_auth() and the enrollment, in one statement
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM mdm_certificates
                     WHERE sha256 = p_sha256 AND revoked_at IS NOT NULL)
            THEN 'revoked'
        WHEN b.enrollment_id IS NULL THEN 'unbound'
        WHEN b.enrollment_id <> p_device_id THEN 'mismatch'
        WHEN b.not_after + make_interval(secs => p_grace) < now()
            THEN 'expired'
        WHEN NOT EXISTS (SELECT 1 FROM mdm_enrollments WHERE id = p_id)
            THEN 'unknown'
        ELSE 'ok'
    END INTO v_code
    FROM (SELECT 1) AS one
    LEFT JOIN mdm_cert_bindings b ON b.sha256 = p_sha256;

    IF v_code <> 'ok' THEN
        RETURN QUERY SELECT v_code, NULL::text, NULL::text, NULL::bytea,
                            NULL::text;
        RETURN;
    END IF;

    IF p_status = 'Idle' THEN
        -- nothing here is a device's answer: no need to wait for the flush
        PERFORM set_config('synchronous_commit', 'off', true);

        UPDATE mdm_queue SET held = false
        WHERE enrollment_id = p_id AND held;

    ELSIF p_status = 'NotNow' THEN
        UPDATE mdm_queue SET
            status = 'NotNow',
            held = true,
            not_now_tally = not_now_tally + 1,
            not_now_at = now(),
            result = p_result,
            updated_at = now()
        WHERE enrollment_id = p_id AND command_uuid = p_command_uuid
          AND status IN ('Queued', 'NotNow');

        IF NOT FOUND THEN
            PERFORM 1 FROM mdm_queue
            WHERE enrollment_id = p_id AND command_uuid = p_command_uuid;

            IF NOT FOUND THEN
                v_code := 'unknown_command';
            END IF;
        END IF;

    ELSE
        UPDATE mdm_queue SET
            status = p_status,
            held = false,
            result = p_result,
            answered_at = now(),
            updated_at = now()
        WHERE enrollment_id = p_id AND command_uuid = p_command_uuid;

        IF NOT FOUND THEN
            v_code := 'unknown_command';
        END IF;
    END IF;

    LOOP
        SELECT q.command_uuid, c.request_type, c.command, c.expires_at
        INTO v_next
        FROM mdm_queue q
        JOIN mdm_commands c ON c.command_uuid = q.command_uuid
        WHERE q.enrollment_id = p_id
          AND q.status IN ('Queued', 'NotNow')
          AND NOT q.held
        ORDER BY q.priority DESC, q.queued_at, q.command_uuid
        LIMIT 1;

        EXIT WHEN NOT FOUND;

        IF v_next.expires_at IS NOT NULL AND v_next.expires_at <= now() THEN
            UPDATE mdm_queue SET status = 'Expired', updated_at = now()
            WHERE enrollment_id = p_id
              AND command_uuid = v_next.command_uuid;

            v_expired := concat_ws(E'\n', v_expired, v_next.command_uuid);
            CONTINUE;
        END IF;

        UPDATE mdm_queue SET sent_at = now(), sent_count = sent_count + 1,
            updated_at = now()
        WHERE enrollment_id = p_id AND command_uuid = v_next.command_uuid;

        RETURN QUERY SELECT v_code, v_next.command_uuid,
                            v_next.request_type, v_next.command, v_expired;
        RETURN;
    END LOOP;

    RETURN QUERY SELECT v_code, NULL::text, NULL::text, NULL::bytea,
                        v_expired;
END
$$;
