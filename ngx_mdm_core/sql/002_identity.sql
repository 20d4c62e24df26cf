-- nginx-mdm schema 2: device identities.
-- Certificates our SCEP CA issued, the one-time challenges that allow an
-- issue, and the bindings of certificates to enrollments (DESIGN.md §6).

-- Serial numbers unique across the cluster.
CREATE SEQUENCE mdm_certificate_serial START 4096;

CREATE TABLE mdm_challenges (
    id             bigserial   PRIMARY KEY,
    -- SHA-256 of the challenge: the secret itself is never stored
    digest         bytea       NOT NULL UNIQUE,
    purpose        text        NOT NULL,          -- enroll, ota, api, ...
    udid           text,                          -- bound device, if any
    serial_number  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);

CREATE TABLE mdm_certificates (
    serial         bigint      PRIMARY KEY,
    sha256         bytea       NOT NULL UNIQUE,
    subject        text        NOT NULL,
    not_before     timestamptz NOT NULL,
    not_after      timestamptz NOT NULL,
    der            bytea       NOT NULL,
    source         text        NOT NULL,          -- challenge, static, renewal
    challenge_id   bigint      REFERENCES mdm_challenges (id),
    renewed_from   bigint      REFERENCES mdm_certificates (serial),
    issued_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revocation_reason integer
);

CREATE INDEX mdm_certificates_revoked ON mdm_certificates (revoked_at)
    WHERE revoked_at IS NOT NULL;

-- A device certificate bound to an enrollment (the device channel's id).
-- Several per enrollment, each valid until its not_after.
CREATE TABLE mdm_cert_bindings (
    sha256         bytea       PRIMARY KEY,
    enrollment_id  text        NOT NULL,
    not_after      timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mdm_cert_bindings_enrollment
    ON mdm_cert_bindings (enrollment_id);
