-- The dashboard's "locks now" (migration 4; docs/dashboard.md). Every
-- serving host replaces its own rows about once a second, in one statement:
-- what its jobs hold and wait for. UNLOGGED: no WAL for data that is
-- rewritten every second and worthless after a crash (a crash empties it,
-- and live hosts fill it again within a second). Readers take only the
-- rows of hosts whose heartbeat is recent, so a host that died without
-- cleaning up stops counting within seconds.

CREATE UNLOGGED TABLE pinlock.lock_hosts (
    host      text PRIMARY KEY,
    heartbeat timestamptz NOT NULL
);

CREATE UNLOGGED TABLE pinlock.lock_activity (
    host   text NOT NULL,
    job_id bigint NOT NULL,
    worker text NOT NULL,
    entity uuid NOT NULL,
    key    bigint NOT NULL,
    mode   text NOT NULL CHECK (mode IN ('exclusive', 'shared')),
    state  text NOT NULL CHECK (state IN ('held', 'waiting')),
    -- The grant, or the start of the wait, on the database's clock.
    since  timestamptz NOT NULL
);
CREATE INDEX lock_activity_host ON pinlock.lock_activity (host);
ALTER TABLE pinlock.lock_activity SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 1);
ALTER TABLE pinlock.lock_hosts SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 1);
