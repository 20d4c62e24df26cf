-- nginx-mdm schema 5: the check-in and command protocol (ngx_mdm_checkin/).
--
-- Every device request is one round trip: one call of one function below.
-- Each verifies the device certificate's binding (DESIGN.md §6), does its
-- step and, for a command report, stores the result and picks the next
-- command, all in the caller's one implicit transaction.
--
-- Result codes (the first column of every function):
--   ok               done
--   revoked          the certificate is revoked (mdm_certificates.revoked_at)
--   unbound          the certificate is bound to no enrollment
--   mismatch         the certificate is bound to another enrollment, or its
--                    SCEP challenge was minted for another device
--   expired          the binding's not_after (plus the grace) has passed
--   unknown          no such enrollment (never Authenticated, or a user
--                    channel that sent no TokenUpdate yet)
--   unknown_command  (reports only) no such command in this enrollment's
--                    queue: nothing was stored, the next command is returned
-- Nothing is written unless the code is ok or unknown_command.
--
-- push_token_invalid_at (007_push.sql) is only named inside plpgsql bodies,
-- which are planned when they first run, not when this file is applied.
--
-- The hot path (ngx_mdm_checkin/README.md, "Check-in and commands",
-- "Performance"):
--
-- 1. Invalidation of the workers' "nothing queued" caches: every change
--    that can give an enrollment a pending command, or take a device
--    certificate's right away, is announced on the channel mdm_checkin
--    (NOTIFY is transactional: it reaches the listeners after the commit,
--    on every node).  The payload is the enrollment ids concerned, one a
--    line, or "*" for "drop everything" (revocations, bindings, and a list
--    too long for one notification).
--
-- 2. mdm_command_report: one lookup for the binding check instead of two;
--    an Idle that finds nothing to clear writes nothing (a read-only
--    transaction: no WAL, no flush), and what it does write (holds
--    cleared, expiries) commits without waiting for the WAL flush: losing
--    it in a crash loses nothing that matters (a hold is cleared again at
--    the next Idle, an expired command expires again).  A report carrying a
--    result (Acknowledged, Error, NotNow, ...) still commits synchronously,
--    whatever the server's settings say.
--
-- 3. Delivery bookkeeping (sent_at, sent_count) is not written by the
--    request that delivers the command: each worker notes its deliveries
--    and adds them to the UPDATE that stores the device's answer to the
--    command, or, for those still unanswered, writes them in batches
--    (mdm_queue_delivered, below, every mdm_checkin_delivery_flush).  A
--    command sent but never answered is still Queued and is sent again
--    whatever these columns say; a crash loses at most one interval of
--    counts.

-- held: the device answered NotNow in the current exchange; the command is
-- offered again from its next Idle on (PROTOCOL.md §4.3).
ALTER TABLE mdm_queue
    ADD COLUMN held         boolean     NOT NULL DEFAULT false,
    ADD COLUMN not_now_at   timestamptz,
    ADD COLUMN answered_at  timestamptz;

-- the Idle step clears holds: find them without reading the whole queue
CREATE INDEX mdm_queue_held ON mdm_queue (enrollment_id) WHERE held;

-- room on each page for the new version of a row that is updated (the
-- delivery bookkeeping is then a HOT update: no index entry written)
ALTER TABLE mdm_queue SET (fillfactor = 75);

-- The hot lookups are already indexed: mdm_cert_bindings (sha256) and
-- mdm_certificates (sha256) by their keys, the next command by
-- mdm_queue_pending (enrollment_id, priority DESC, queued_at).


-- Cache invalidation (1. above).
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


-- The binding check shared by every step: the certificate (lowercase SHA-256
-- of its DER) must be unrevoked and bound to the device channel device_id.
-- One statement (plpgsql: its plan is cached per session): revoked first,
-- then the binding.
CREATE FUNCTION mdm_checkin_auth(p_sha256 bytea,
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


-- Authenticate and TokenUpdate set last_seen_at themselves (they write the
-- row anyway): the worker sends them no last_seen through Redis.
--
-- Authenticate (device channel only): bind the certificate, store the
-- device, disable the enrollment and its user channels until their next
-- TokenUpdate, and cancel what was still queued for them (a re-enrolled
-- device starts afresh; NanoMDM does the same).
CREATE FUNCTION mdm_checkin_authenticate(p_sha256 bytea,
    p_not_after timestamptz, p_grace integer, p_id text,
    p_enrollment_type text, p_udid text, p_topic text,
    p_serial_number text, p_model text, p_model_name text,
    p_product_name text, p_os_version text, p_build_version text,
    p_device_name text, p_imei text, p_meid text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_bound      text;
    v_challenge  text;
BEGIN
    PERFORM 1 FROM mdm_certificates
    WHERE sha256 = p_sha256 AND revoked_at IS NOT NULL;

    IF FOUND THEN
        RETURN 'revoked';
    END IF;

    -- a certificate issued for a challenge minted for one device serves
    -- that device only
    IF p_udid IS NOT NULL THEN
        SELECT ch.udid INTO v_challenge
        FROM mdm_certificates c JOIN mdm_challenges ch ON ch.id = c.challenge_id
        WHERE c.sha256 = p_sha256;

        IF v_challenge IS NOT NULL AND v_challenge <> p_udid THEN
            RETURN 'mismatch';
        END IF;
    END IF;

    -- first, so that a refusal writes nothing; waits for a concurrent
    -- Authenticate with the same certificate
    INSERT INTO mdm_cert_bindings (sha256, enrollment_id, not_after)
    VALUES (p_sha256, p_id, p_not_after)
    ON CONFLICT (sha256) DO NOTHING;

    SELECT enrollment_id INTO v_bound
    FROM mdm_cert_bindings WHERE sha256 = p_sha256;

    IF v_bound <> p_id THEN
        RETURN 'mismatch';
    END IF;

    INSERT INTO mdm_enrollments AS e (id, device_id, channel,
        enrollment_type, udid, topic, serial_number, model, model_name,
        product_name, os_version, build_version, device_name, imei, meid,
        enabled, authenticated_at, last_seen_at)
    VALUES (p_id, p_id, 'device', p_enrollment_type, p_udid, p_topic,
        p_serial_number, p_model, p_model_name, p_product_name,
        p_os_version, p_build_version, p_device_name, p_imei, p_meid,
        false, now(), now())
    ON CONFLICT (id) DO UPDATE SET
        enrollment_type = EXCLUDED.enrollment_type,
        udid = coalesce(EXCLUDED.udid, e.udid),
        topic = EXCLUDED.topic,
        serial_number = coalesce(EXCLUDED.serial_number, e.serial_number),
        model = coalesce(EXCLUDED.model, e.model),
        model_name = coalesce(EXCLUDED.model_name, e.model_name),
        product_name = coalesce(EXCLUDED.product_name, e.product_name),
        os_version = coalesce(EXCLUDED.os_version, e.os_version),
        build_version = coalesce(EXCLUDED.build_version, e.build_version),
        device_name = coalesce(EXCLUDED.device_name, e.device_name),
        imei = coalesce(EXCLUDED.imei, e.imei),
        meid = coalesce(EXCLUDED.meid, e.meid),
        enabled = false,
        authenticated_at = now(),
        checked_out_at = NULL,
        last_seen_at = now(),
        updated_at = now();

    UPDATE mdm_enrollments SET enabled = false, updated_at = now()
    WHERE device_id = p_id AND id <> p_id AND enabled;

    UPDATE mdm_queue SET status = 'Cancelled', held = false,
        updated_at = now()
    WHERE enrollment_id IN (SELECT id FROM mdm_enrollments
                            WHERE device_id = p_id)
      AND status IN ('Queued', 'NotNow');

    RETURN 'ok';
END
$$;


-- TokenUpdate, both channels: store the push token, PushMagic, topic,
-- UnlockToken and AwaitingConfiguration, enable pushes and count the
-- update.  A user channel is created by its first TokenUpdate.  Returns the
-- code and the new token_update_tally (1: this channel is new or was
-- re-enrolled) as text.
CREATE FUNCTION mdm_checkin_token_update(p_sha256 bytea, p_grace integer,
    p_id text, p_device_id text, p_enrollment_type text, p_udid text,
    p_enrollment_user_id text, p_user_id text, p_user_short_name text,
    p_user_long_name text, p_topic text, p_push_token bytea,
    p_push_magic text, p_unlock_token bytea,
    p_awaiting_configuration boolean)
RETURNS TABLE (o_code text, o_token_update_tally text)
LANGUAGE plpgsql AS $$
DECLARE
    v_code   text;
    v_tally  integer;
BEGIN
    v_code := mdm_checkin_auth(p_sha256, p_device_id, p_grace);

    IF v_code <> 'ok' THEN
        RETURN QUERY SELECT v_code, NULL::text;
        RETURN;
    END IF;

    IF p_id = p_device_id THEN
        UPDATE mdm_enrollments SET
            topic = p_topic,
            push_token = p_push_token,
            push_magic = p_push_magic,
            unlock_token = coalesce(p_unlock_token, unlock_token),
            awaiting_configuration = coalesce(p_awaiting_configuration,
                                              false),
            enabled = true,
            token_update_tally = token_update_tally + 1,
            token_updated_at = now(),
            push_token_invalid_at = NULL,
            last_seen_at = now(),
            updated_at = now()
        WHERE id = p_id
        RETURNING token_update_tally INTO v_tally;

        IF NOT FOUND THEN
            RETURN QUERY SELECT 'unknown'::text, NULL::text;
            RETURN;
        END IF;

    ELSE
        PERFORM 1 FROM mdm_enrollments WHERE id = p_device_id;

        IF NOT FOUND THEN
            RETURN QUERY SELECT 'unknown'::text, NULL::text;
            RETURN;
        END IF;

        INSERT INTO mdm_enrollments AS e (id, device_id, channel,
            enrollment_type, udid, enrollment_user_id, user_id,
            user_short_name, user_long_name, topic, push_token, push_magic,
            unlock_token, awaiting_configuration, token_update_tally,
            enabled, token_updated_at, last_seen_at)
        VALUES (p_id, p_device_id, 'user', p_enrollment_type, p_udid,
            p_enrollment_user_id, p_user_id, p_user_short_name,
            p_user_long_name, p_topic, p_push_token, p_push_magic,
            p_unlock_token, coalesce(p_awaiting_configuration, false), 1,
            true, now(), now())
        ON CONFLICT (id) DO UPDATE SET
            enrollment_type = EXCLUDED.enrollment_type,
            user_short_name = coalesce(EXCLUDED.user_short_name,
                                       e.user_short_name),
            user_long_name = coalesce(EXCLUDED.user_long_name,
                                      e.user_long_name),
            topic = EXCLUDED.topic,
            push_token = EXCLUDED.push_token,
            push_magic = EXCLUDED.push_magic,
            unlock_token = coalesce(EXCLUDED.unlock_token, e.unlock_token),
            awaiting_configuration = EXCLUDED.awaiting_configuration,
            enabled = true,
            token_update_tally = e.token_update_tally + 1,
            token_updated_at = now(),
            checked_out_at = NULL,
            push_token_invalid_at = NULL,
            last_seen_at = now(),
            updated_at = now()
        RETURNING e.token_update_tally INTO v_tally;
    END IF;

    RETURN QUERY SELECT 'ok'::text, v_tally::text;
END
$$;


-- CheckOut: disable the channel, and on the device channel its user
-- channels too.  The queue is kept (a new Authenticate cancels it).
CREATE FUNCTION mdm_checkin_check_out(p_sha256 bytea, p_grace integer,
    p_id text, p_device_id text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_code  text;
BEGIN
    v_code := mdm_checkin_auth(p_sha256, p_device_id, p_grace);

    IF v_code <> 'ok' THEN
        RETURN v_code;
    END IF;

    UPDATE mdm_enrollments SET enabled = false, checked_out_at = now(),
        updated_at = now()
    WHERE id = p_id OR device_id = p_id;

    IF NOT FOUND THEN
        RETURN 'unknown';
    END IF;

    RETURN 'ok';
END
$$;


-- SetBootstrapToken: an absent or empty token deletes the stored one.
CREATE FUNCTION mdm_checkin_set_bootstrap_token(p_sha256 bytea,
    p_grace integer, p_id text, p_device_id text, p_token bytea,
    p_awaiting_configuration boolean)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_code  text;
BEGIN
    v_code := mdm_checkin_auth(p_sha256, p_device_id, p_grace);

    IF v_code <> 'ok' THEN
        RETURN v_code;
    END IF;

    UPDATE mdm_enrollments SET
        bootstrap_token = nullif(p_token, ''::bytea),
        bootstrap_token_at = now(),
        awaiting_configuration = coalesce(p_awaiting_configuration,
                                          awaiting_configuration),
        updated_at = now()
    WHERE id = p_id;

    IF NOT FOUND THEN
        RETURN 'unknown';
    END IF;

    RETURN 'ok';
END
$$;


-- GetBootstrapToken: the code and the stored token (NULL when none).
CREATE FUNCTION mdm_checkin_get_bootstrap_token(p_sha256 bytea,
    p_grace integer, p_id text, p_device_id text)
RETURNS TABLE (o_code text, o_bootstrap_token bytea)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_code   text;
    v_token  bytea;
BEGIN
    v_code := mdm_checkin_auth(p_sha256, p_device_id, p_grace);

    IF v_code <> 'ok' THEN
        RETURN QUERY SELECT v_code, NULL::bytea;
        RETURN;
    END IF;

    SELECT bootstrap_token INTO v_token FROM mdm_enrollments WHERE id = p_id;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::bytea;
        RETURN;
    END IF;

    RETURN QUERY SELECT 'ok'::text, v_token;
END
$$;


-- The binding check alone, for the steps that store nothing here
-- (UserAuthenticate, DeclarativeManagement, GetToken): p_id must exist.
CREATE FUNCTION mdm_checkin_verify(p_sha256 bytea, p_grace integer,
    p_id text, p_device_id text)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_code  text;
BEGIN
    v_code := mdm_checkin_auth(p_sha256, p_device_id, p_grace);

    IF v_code <> 'ok' THEN
        RETURN v_code;
    END IF;

    PERFORM 1 FROM mdm_enrollments WHERE id = p_id;

    IF NOT FOUND THEN
        RETURN 'unknown';
    END IF;

    RETURN 'ok';
END
$$;


-- A command report (PUT to ServerURL), the hot path:
--   Idle          clear the holds of the previous exchange
--   NotNow        keep the command pending, count it, hold it for the rest
--                 of this exchange (a command already settled stays so)
--   Acknowledged, Error, CommandFormatError
--                 store the status and the device's whole plist
-- then return the next command: pending (Queued or NotNow), not held, by
-- priority, then age, then command_uuid (the admin API's order); a command
-- sent but never answered is still Queued and is sent again.  Expired
-- commands met on the way become Expired and their UUIDs come back in
-- o_expired, one a line.  o_command is the command's bytes as enqueued;
-- its delivery is counted later, by the worker (3. above): p_sent and
-- p_sent_at (unix time) are the deliveries of p_command_uuid the worker
-- noted and not written yet, added here with the answer (NULL: none).
-- The binding check, the enrollment lookup and the next-command lookup
-- are one statement, and an Idle's writes commit asynchronously (2.
-- above).
CREATE FUNCTION mdm_command_report(p_sha256 bytea,
    p_grace integer, p_id text, p_device_id text, p_status text,
    p_command_uuid text, p_result bytea, p_sent integer,
    p_sent_at double precision,
    OUT o_code text, OUT o_command_uuid text, OUT o_request_type text,
    OUT o_command bytea, OUT o_expired text)
LANGUAGE plpgsql AS $$
DECLARE
    v_holds    boolean;
    v_expires  timestamptz;
BEGIN
    -- mdm_checkin_auth(), the enrollment, whether it has holds, and the
    -- command that comes next, in one statement: the report's own command
    -- is left out (whatever it becomes, it is not sent again in this
    -- exchange), and so are held ones, except at an Idle, which releases
    -- them.  Common paths: an Idle is this statement alone, a result is
    -- this and its UPDATE.
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
    END,
    p_status = 'Idle'
        AND EXISTS (SELECT 1 FROM mdm_queue h
                    WHERE h.enrollment_id = p_id AND h.held),
    n.command_uuid, n.request_type, n.command, n.expires_at
    INTO o_code, v_holds, o_command_uuid, o_request_type, o_command,
         v_expires
    FROM (SELECT 1) AS one
    LEFT JOIN mdm_cert_bindings b ON b.sha256 = p_sha256
    LEFT JOIN LATERAL (
        SELECT q.command_uuid, c.request_type, c.command, c.expires_at
        FROM mdm_queue q
        JOIN mdm_commands c ON c.command_uuid = q.command_uuid
        WHERE q.enrollment_id = p_id
          AND q.status IN ('Queued', 'NotNow')
          AND (p_status = 'Idle' OR NOT q.held)
          AND (p_command_uuid IS NULL OR q.command_uuid <> p_command_uuid)
        ORDER BY q.priority DESC, q.queued_at, q.command_uuid
        LIMIT 1
    ) AS n ON true;

    IF o_code <> 'ok' THEN
        o_command_uuid := NULL;
        o_request_type := NULL;
        o_command := NULL;
        RETURN;
    END IF;

    IF p_status = 'Idle' THEN
        IF v_holds THEN
            -- nothing here is a device's answer: no need to wait for the
            -- flush
            SET LOCAL synchronous_commit TO off;

            UPDATE mdm_queue SET held = false
            WHERE enrollment_id = p_id AND held;
        END IF;

    ELSIF p_status = 'NotNow' THEN
        UPDATE mdm_queue SET
            status = 'NotNow',
            held = true,
            not_now_tally = not_now_tally + 1,
            not_now_at = now(),
            result = p_result,
            sent_count = sent_count + coalesce(p_sent, 0),
            sent_at = greatest(sent_at, to_timestamp(p_sent_at)),
            updated_at = now()
        WHERE enrollment_id = p_id AND command_uuid = p_command_uuid
          AND status IN ('Queued', 'NotNow');

        IF NOT FOUND THEN
            PERFORM 1 FROM mdm_queue
            WHERE enrollment_id = p_id AND command_uuid = p_command_uuid;

            IF NOT FOUND THEN
                o_code := 'unknown_command';

            ELSIF p_sent IS NOT NULL THEN
                -- a NotNow for a settled command: still count the delivery
                UPDATE mdm_queue SET
                    sent_count = sent_count + p_sent,
                    sent_at = greatest(sent_at, to_timestamp(p_sent_at))
                WHERE enrollment_id = p_id
                  AND command_uuid = p_command_uuid;
            END IF;
        END IF;

    ELSE
        UPDATE mdm_queue SET
            status = p_status,
            held = false,
            result = p_result,
            answered_at = now(),
            sent_count = sent_count + coalesce(p_sent, 0),
            sent_at = greatest(sent_at, to_timestamp(p_sent_at)),
            updated_at = now()
        WHERE enrollment_id = p_id AND command_uuid = p_command_uuid;

        IF NOT FOUND THEN
            o_code := 'unknown_command';
        END IF;
    END IF;

    IF v_expires IS NULL OR v_expires > now() THEN
        RETURN;
    END IF;

    -- the next command has expired: expire it, and every other one met on
    -- the way to one that has not
    IF p_status = 'Idle' THEN
        SET LOCAL synchronous_commit TO off;
    END IF;

    LOOP
        IF v_expires IS NOT NULL AND v_expires <= now() THEN
            UPDATE mdm_queue SET status = 'Expired', updated_at = now()
            WHERE enrollment_id = p_id AND command_uuid = o_command_uuid;

            o_expired := concat_ws(E'\n', o_expired, o_command_uuid);

        ELSE
            RETURN;
        END IF;

        SELECT q.command_uuid, c.request_type, c.command, c.expires_at
        INTO o_command_uuid, o_request_type, o_command, v_expires
        FROM mdm_queue q
        JOIN mdm_commands c ON c.command_uuid = q.command_uuid
        WHERE q.enrollment_id = p_id
          AND q.status IN ('Queued', 'NotNow')
          AND NOT q.held
          AND (p_command_uuid IS NULL OR q.command_uuid <> p_command_uuid)
        ORDER BY q.priority DESC, q.queued_at, q.command_uuid
        LIMIT 1;

        IF NOT FOUND THEN
            o_command_uuid := NULL;
            o_request_type := NULL;
            o_command := NULL;
            RETURN;
        END IF;
    END LOOP;
END
$$;


-- last_seen write-behind (the helper, from Redis): one line per enrollment,
-- "<unix time>\t<enrollment id>" (ids hold no control characters).  Only
-- moves last_seen_at forward; returns the rows updated.
CREATE FUNCTION mdm_checkin_last_seen(p_batch text)
RETURNS integer
LANGUAGE sql AS $$
    WITH seen AS (
        SELECT split_part(l, E'\t', 2) AS id,
               max(to_timestamp(split_part(l, E'\t', 1)::double precision))
                   AS at
        FROM unnest(string_to_array(p_batch, E'\n')) AS l
        WHERE l LIKE '%' || E'\t' || '%'
        GROUP BY 1
    ), done AS (
        UPDATE mdm_enrollments e SET last_seen_at = s.at
        FROM seen s
        WHERE e.id = s.id
          AND (e.last_seen_at IS NULL OR e.last_seen_at < s.at)
        RETURNING 1
    )
    SELECT count(*)::integer FROM done
$$;


-- Delivery bookkeeping (3. above), from the workers: one line per delivery,
-- "<unix time>\t<enrollment id>\t<command uuid>[\t<count>]" (neither id
-- holds a tab or a line feed; the workers skip any that would).  Adds the
-- deliveries to sent_count and moves sent_at forward; settled rows are
-- still counted, rows gone are not.  Never waits for a row lock: a row
-- locked by a transaction under way (its device's answer being stored)
-- is skipped and comes back in the result, in the same format, for the
-- worker's next batch; NULL when every row was written.
--
-- A batch is a few hundred rows of a queue that may hold millions, often
-- with no statistics yet: each row is found by its primary key (the
-- planner would otherwise read and hash the whole queue, 10 to 30 ms for
-- a bench's queue against 1 ms of probes).
CREATE FUNCTION mdm_queue_delivered(p_batch text)
RETURNS text
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    v_left  text;
BEGIN
    SET LOCAL synchronous_commit TO off;

    EXECUTE $q$
        WITH d AS (
            SELECT split_part(l, E'\t', 2) AS id,
                   split_part(l, E'\t', 3) AS uuid,
                   sum(coalesce(nullif(split_part(l, E'\t', 4), '')::integer,
                                1))::integer AS n,
                   max(to_timestamp(split_part(l, E'\t', 1)::float8)) AS at
            FROM unnest(string_to_array($1, E'\n')) AS l
            WHERE l LIKE '%' || E'\t' || '%' || E'\t' || '%'
            GROUP BY 1, 2
        ), locked AS (
            SELECT q.enrollment_id, q.command_uuid, d.n, d.at
            FROM d JOIN mdm_queue q
                ON q.enrollment_id = d.id AND q.command_uuid = d.uuid
            FOR UPDATE OF q SKIP LOCKED
        ), done AS (
            UPDATE mdm_queue q SET
                sent_count = q.sent_count + k.n,
                sent_at = greatest(q.sent_at, k.at)
            FROM locked k
            WHERE q.enrollment_id = k.enrollment_id
              AND q.command_uuid = k.command_uuid
            RETURNING q.enrollment_id, q.command_uuid
        )
        SELECT string_agg(concat_ws(E'\t', extract(epoch FROM d.at),
                                    d.id, d.uuid, d.n), E'\n')
        FROM d
        WHERE NOT EXISTS (SELECT 1 FROM done
                          WHERE done.enrollment_id = d.id
                            AND done.command_uuid = d.uuid)
          AND EXISTS (SELECT 1 FROM mdm_queue q
                      WHERE q.enrollment_id = d.id
                        AND q.command_uuid = d.uuid)
    $q$ INTO v_left USING p_batch;

    RETURN v_left;
END
$$;
