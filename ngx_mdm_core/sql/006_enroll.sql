-- nginx-mdm schema 6: enrollment (README.md, "Enrollment").
--
-- What the enrollment endpoints learn and hand out: the one-time tokens of
-- over-the-air enrollment, the user and the device a SCEP challenge was
-- minted for, and a record per device that showed a signed MachineInfo.
-- Secrets (tokens, challenges) are stored as their SHA-256 only.

-- One-time OTA enrollment tokens: the Challenge of a phase-1 Profile
-- Service profile, which the device sends back as CHALLENGE in phase 2.
-- Phase 2 consumes the token (used_at) and records the device it was
-- used for; a token is never accepted twice.
CREATE TABLE mdm_enroll_tokens (
    id             bigserial   PRIMARY KEY,
    digest         bytea       NOT NULL UNIQUE,
    sso_user       text,                          -- who downloaded phase 1
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    used_udid      text,
    used_serial    text
);

CREATE INDEX mdm_enroll_tokens_expires ON mdm_enroll_tokens (expires_at);

-- The enrollment a challenge was minted for.  purpose (002) takes, from
-- the enrollment endpoints:
--   ade       the ADE url (MachineInfo verified)
--   sso       the authenticated (SSO) endpoint
--   ota_scep  OTA phase 2: the throw-away identity of phase 3
--   ota       OTA phase 3: the MDM identity
-- sso_user is the authenticated user (SSO, or the user who downloaded the
-- OTA phase-1 profile): the admin API joins an enrollment to it through
-- mdm_cert_bindings -> mdm_certificates.challenge_id -> mdm_challenges.
-- machine_info is the device's signed attributes as JSON (CHALLENGE left
-- out).
ALTER TABLE mdm_challenges
    ADD COLUMN sso_user         text,
    ADD COLUMN enroll_token_id  bigint REFERENCES mdm_enroll_tokens (id),
    ADD COLUMN machine_info     jsonb;

CREATE INDEX mdm_challenges_udid ON mdm_challenges (udid)
    WHERE udid IS NOT NULL;

-- A device as its last verified MachineInfo (ADE, SSO) or OTA attributes
-- described it, before it enrolled.
CREATE TABLE mdm_enroll_devices (
    udid             text        PRIMARY KEY,
    serial_number    text,
    product          text,
    version          text,                       -- build, e.g. 22A380
    os_version       text,
    imei             text,
    meid             text,
    language         text,
    source           text        NOT NULL,       -- ade, sso, ota
    sso_user         text,
    machine_info     jsonb       NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mdm_enroll_devices_serial ON mdm_enroll_devices (serial_number);
