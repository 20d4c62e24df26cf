-- nginx-mdm schema 1: the core.
-- The helper process applies migrations in order, each in one transaction
-- under an advisory lock, and records them in mdm_schema_migrations.
-- No transaction control in these files.

-- One row per helper process that has run: lets any node see the others.
CREATE TABLE mdm_helpers (
    node          text        NOT NULL,
    pid           integer     NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node)
);
