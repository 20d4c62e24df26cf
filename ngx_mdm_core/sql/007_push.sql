-- nginx-mdm schema 7: APNs push requests (README.md, "APNs push").
--
-- PostgreSQL is the truth: a push is wanted while a row for the enrollment
-- is in mdm_push_requests.  Writers (admin API, check-in) call
-- mdm_push_request() and then PUBLISH mdm:push "" on Redis as a hint; the
-- helper processes claim due rows, push them and delete them.

-- What the last push to a channel gave.  push_token_invalid_at: APNs called
-- the token dead (400 BadDeviceToken, 410 Unregistered, ...): no push until
-- a TokenUpdate stores a token and clears it.
ALTER TABLE mdm_enrollments
    ADD COLUMN last_push_at           timestamptz,
    ADD COLUMN last_push_id           text,     -- apns-id of the last 200
    ADD COLUMN last_push_error        text,     -- reason; NULL after a 200
    ADD COLUMN push_token_invalid_at  timestamptz;

-- One row per enrollment that wants a push: requests for one enrollment
-- coalesce into one push.
--   requests    bumped by every request; a push whose row was requested
--               again while in flight leaves the row for one more push
--   not_before  when the row is due: now for a new request, the end of the
--               coalescing window or of a retry back-off, or, while claimed,
--               the end of the claim's lease (a helper that died loses it)
--   claimed_by  the helper that pushes it now (node/pid/nonce), or NULL
CREATE TABLE mdm_push_requests (
    enrollment_id   text        PRIMARY KEY
                    REFERENCES mdm_enrollments (id) ON DELETE CASCADE,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    requests        integer     NOT NULL DEFAULT 1,
    not_before      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    claimed_by      text,
    last_error      text
);

CREATE INDEX mdm_push_requests_due ON mdm_push_requests (not_before);

-- The writers' side of the contract: ask for a push to these channels.
-- Channels that cannot be pushed (disabled, no token, token invalid,
-- unknown) are skipped; returns how many will be pushed.
CREATE FUNCTION mdm_push_request(ids text[]) RETURNS integer
LANGUAGE sql AS $$
    WITH wanted AS (
        INSERT INTO mdm_push_requests AS p (enrollment_id)
        SELECT e.id FROM mdm_enrollments e
        WHERE e.id = ANY (ids)
          AND e.enabled
          AND e.push_token IS NOT NULL
          AND e.push_token_invalid_at IS NULL
        ON CONFLICT (enrollment_id) DO UPDATE
        SET requests = p.requests + 1, requested_at = now()
        RETURNING 1
    )
    SELECT count(*)::integer FROM wanted
$$;
