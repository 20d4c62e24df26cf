-- nginx-mdm schema 4: the SCEP CA (README.md, "SCEP CA").
--
-- A PKIOperation that issues a certificate costs one round trip: the worker
-- signs the certificate with a serial it reserved earlier from
-- mdm_certificate_serial (002), then one call of mdm_scep_record() consumes
-- the one-time challenge or checks the renewed certificate, records the new
-- certificate and, for a renewal, binds it to the enrollment of the old one.
-- A refusal writes nothing (the signed certificate is thrown away).

-- The SCEP transaction a certificate was issued in: a request sent again
-- after a lost answer (same transactionID) gets the same certificate, and
-- CertPoll finds it.
ALTER TABLE mdm_certificates ADD COLUMN transaction_id text;

CREATE INDEX mdm_certificates_transaction ON mdm_certificates (transaction_id)
    WHERE transaction_id IS NOT NULL;
CREATE INDEX mdm_certificates_challenge ON mdm_certificates (challenge_id)
    WHERE challenge_id IS NOT NULL;
CREATE INDEX mdm_certificates_renewed_from
    ON mdm_certificates (renewed_from) WHERE renewed_from IS NOT NULL;

-- cRLNumber (RFC 5280 5.2.3): increases with every CRL any node signs.
CREATE SEQUENCE mdm_scep_crl_number;


-- Result codes (o_code):
--   ok                 recorded
--   replay             the same transaction was answered before: o_der is
--                      the certificate issued then, nothing was written
--   challenge_unknown  no such one-time challenge
--   challenge_used     consumed already, by another transaction
--   challenge_expired  past its expires_at
--   renewal_unknown    the certificate that signed a RenewalReq is not ours
--   renewal_revoked    ... or it is revoked
-- p_source is 'static', 'challenge' (p_challenge: the SHA-256 of the
-- challenge) or 'renewal' (p_renewed_from: the SHA-256 of the old
-- certificate).  Times are unix seconds.
CREATE FUNCTION mdm_scep_record(p_serial bigint, p_sha256 bytea,
    p_subject text, p_not_before bigint, p_not_after bigint, p_der bytea,
    p_source text, p_challenge bytea, p_renewed_from bytea,
    p_transaction_id text)
RETURNS TABLE (o_code text, o_der bytea)
LANGUAGE plpgsql AS $$
DECLARE
    v_challenge_id  bigint;
    v_used_at       timestamptz;
    v_old_serial    bigint;
    v_revoked_at    timestamptz;
    v_der           bytea;
BEGIN
    IF p_source = 'challenge' THEN
        -- atomic: a concurrent use of the same challenge waits for this
        -- row and then finds it used
        UPDATE mdm_challenges SET used_at = now()
        WHERE digest = p_challenge AND used_at IS NULL AND expires_at > now()
        RETURNING id INTO v_challenge_id;

        IF NOT FOUND THEN
            SELECT id, used_at INTO v_challenge_id, v_used_at
            FROM mdm_challenges WHERE digest = p_challenge;

            IF NOT FOUND THEN
                RETURN QUERY SELECT 'challenge_unknown'::text, NULL::bytea;
                RETURN;
            END IF;

            IF v_used_at IS NULL THEN
                RETURN QUERY SELECT 'challenge_expired'::text, NULL::bytea;
                RETURN;
            END IF;

            SELECT der INTO v_der FROM mdm_certificates
            WHERE challenge_id = v_challenge_id
              AND transaction_id = p_transaction_id
            ORDER BY issued_at DESC LIMIT 1;

            IF FOUND THEN
                RETURN QUERY SELECT 'replay'::text, v_der;
            ELSE
                RETURN QUERY SELECT 'challenge_used'::text, NULL::bytea;
            END IF;

            RETURN;
        END IF;

    ELSIF p_source = 'renewal' THEN
        SELECT serial, revoked_at INTO v_old_serial, v_revoked_at
        FROM mdm_certificates WHERE sha256 = p_renewed_from;

        IF NOT FOUND THEN
            RETURN QUERY SELECT 'renewal_unknown'::text, NULL::bytea;
            RETURN;
        END IF;

        IF v_revoked_at IS NOT NULL THEN
            RETURN QUERY SELECT 'renewal_revoked'::text, NULL::bytea;
            RETURN;
        END IF;

        SELECT der INTO v_der FROM mdm_certificates
        WHERE renewed_from = v_old_serial
          AND transaction_id = p_transaction_id
        ORDER BY issued_at DESC LIMIT 1;

        IF FOUND THEN
            RETURN QUERY SELECT 'replay'::text, v_der;
            RETURN;
        END IF;
    END IF;

    INSERT INTO mdm_certificates (serial, sha256, subject, not_before,
        not_after, der, source, challenge_id, renewed_from, transaction_id)
    VALUES (p_serial, p_sha256, p_subject, to_timestamp(p_not_before),
        to_timestamp(p_not_after), p_der, p_source, v_challenge_id,
        v_old_serial, p_transaction_id);

    -- DESIGN.md §6: the renewed identity serves the same enrollment at once
    IF p_source = 'renewal' THEN
        INSERT INTO mdm_cert_bindings (sha256, enrollment_id, not_after)
        SELECT p_sha256, b.enrollment_id, to_timestamp(p_not_after)
        FROM mdm_cert_bindings b WHERE b.sha256 = p_renewed_from
        ON CONFLICT (sha256) DO NOTHING;
    END IF;

    RETURN QUERY SELECT 'ok'::text, NULL::bytea;
END
$$;
