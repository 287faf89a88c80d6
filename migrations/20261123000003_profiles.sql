-- User profiles (seed 002), the health of every pipeline, and the runs behind it.

-- The original TargetService's `users` table, done right. The data columns hold the
-- newest accepted change of the profile (or, while none was ever accepted, the newest one
-- received, for display). Only accepted profiles hold their email and mobile: a profile
-- whose change conflicted or failed validation never takes them from another. The unique
-- checks are deferred to the commit so one batch can move an email from one profile to
-- another in any row order.
CREATE TABLE user_profiles (
    id              UUID PRIMARY KEY,
    name            VARCHAR(255) NOT NULL,
    email           VARCHAR(255) NOT NULL,
    mobile          VARCHAR(20) NOT NULL,
    status          VARCHAR(50) NOT NULL,
    last_updated_at TIMESTAMPTZ NOT NULL,
    accepted        BOOLEAN NOT NULL,
    sync_status     VARCHAR(50) NOT NULL DEFAULT 'synced'
        CHECK (sync_status IN ('synced', 'skipped', 'failed_validation', 'conflict')),
    sync_message    TEXT NOT NULL,
    -- When the last outcome was recorded.
    synced_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT user_profiles_email_unique
        EXCLUDE USING btree (email WITH =) WHERE (accepted) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT user_profiles_mobile_unique
        EXCLUDE USING btree (mobile WITH =) WHERE (accepted) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX user_profiles_sync_status_idx ON user_profiles (sync_status, id);
CREATE INDEX user_profiles_status_idx ON user_profiles (status, id);

-- Every run of a pipeline that works in runs (the profile sync, accounts ingests): when,
-- whether it succeeded, what it counted and why it failed.
CREATE TABLE pipeline_runs (
    id          BIGSERIAL PRIMARY KEY,
    pipeline    TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    ok          BOOLEAN NOT NULL,
    counts      JSONB NOT NULL DEFAULT '{}',
    error       TEXT
);
CREATE INDEX pipeline_runs_pipeline_idx ON pipeline_runs (pipeline, id DESC);

-- Every profile the sync received, with its outcome and the change as received, so a
-- profile that conflicted or failed validation is never lost.
CREATE TABLE profile_sync_outcomes (
    run_id     BIGINT NOT NULL REFERENCES pipeline_runs (id),
    position   INTEGER NOT NULL,
    profile_id UUID NOT NULL,
    outcome    TEXT NOT NULL,
    message    TEXT NOT NULL,
    received   JSONB NOT NULL,
    PRIMARY KEY (run_id, position)
);
CREATE INDEX profile_sync_outcomes_profile_idx ON profile_sync_outcomes (profile_id, run_id);

-- One row per pipeline, written by the workers that run it (a heartbeat every few
-- seconds), read by every gateway for `syncStatus`.
CREATE TABLE pipeline_status (
    pipeline        TEXT PRIMARY KEY,
    heartbeat_at    TIMESTAMPTZ NOT NULL,
    -- A clean stop (SIGTERM); NULL while running.
    stopped_at      TIMESTAMPTZ,
    last_run_at     TIMESTAMPTZ,
    last_success_at TIMESTAMPTZ,
    last_error      TEXT,
    last_error_at   TIMESTAMPTZ,
    errors_total    BIGINT NOT NULL DEFAULT 0,
    -- How far behind the pipeline is, in `lag_unit`.
    lag             DOUBLE PRECISION,
    lag_unit        TEXT CHECK (lag_unit IN ('events', 'seconds')),
    -- Messages a consumer dead-lettered.
    dead_lettered   BIGINT NOT NULL DEFAULT 0
);

-- Customers matching across sources by email.
CREATE INDEX customers_emails_idx ON customers USING GIN (emails);
