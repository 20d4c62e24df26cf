-- nginx-mdm schema 3: enrollments and the command queue.

-- One row per channel: a device channel (id = UDID or EnrollmentID) and
-- its user channels (id = "<device id>:<UserID>" and the like, PROTOCOL.md
-- §3.3), each with its own push token and queue.
CREATE TABLE mdm_enrollments (
    id                      text        PRIMARY KEY,
    device_id               text        NOT NULL,   -- the device channel's id
    channel                 text        NOT NULL,   -- device | user
    enrollment_type         text        NOT NULL,   -- Device, User, User Enrollment, ...
    udid                    text,
    enrollment_user_id      text,
    user_id                 text,
    user_short_name         text,
    user_long_name          text,
    serial_number           text,
    model                   text,
    model_name              text,
    product_name            text,
    os_version              text,
    build_version           text,
    device_name             text,
    imei                    text,
    meid                    text,
    topic                   text,
    push_token              bytea,
    push_magic              text,
    unlock_token            bytea,
    awaiting_configuration  boolean     NOT NULL DEFAULT false,
    token_update_tally      integer     NOT NULL DEFAULT 0,
    enabled                 boolean     NOT NULL DEFAULT false,
    bootstrap_token         bytea,
    bootstrap_token_at      timestamptz,
    authenticated_at        timestamptz,
    token_updated_at        timestamptz,
    checked_out_at          timestamptz,
    last_seen_at            timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mdm_enrollments_device ON mdm_enrollments (device_id);
CREATE INDEX mdm_enrollments_serial ON mdm_enrollments (serial_number);

-- A command as enqueued: the exact plist bytes devices receive.
CREATE TABLE mdm_commands (
    command_uuid            text        PRIMARY KEY,
    request_type            text        NOT NULL,
    command                 bytea       NOT NULL,
    priority                integer     NOT NULL DEFAULT 0,
    expires_at              timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now()
);

-- A command's delivery to one enrollment, and the device's answer.
-- status: Queued, Acknowledged, Error, CommandFormatError, NotNow, Expired,
-- Cancelled.  Queued and NotNow are pending.
CREATE TABLE mdm_queue (
    enrollment_id           text        NOT NULL
                            REFERENCES mdm_enrollments (id) ON DELETE CASCADE,
    command_uuid            text        NOT NULL
                            REFERENCES mdm_commands (command_uuid)
                            ON DELETE CASCADE,
    status                  text        NOT NULL DEFAULT 'Queued',
    priority                integer     NOT NULL DEFAULT 0,
    queued_at               timestamptz NOT NULL DEFAULT now(),
    sent_at                 timestamptz,
    sent_count              integer     NOT NULL DEFAULT 0,
    not_now_tally           integer     NOT NULL DEFAULT 0,
    result                  bytea,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (enrollment_id, command_uuid)
);

-- the hot query: the next pending command of one enrollment
CREATE INDEX mdm_queue_pending ON mdm_queue
    (enrollment_id, priority DESC, queued_at)
    WHERE status IN ('Queued', 'NotNow');

CREATE INDEX mdm_queue_command ON mdm_queue (command_uuid);
