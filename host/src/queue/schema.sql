-- The job queue (migration 3). Designed in docs/decisions/job-queue.md:
-- claim with FOR UPDATE SKIP LOCKED in batches, a lease per running job that
-- its host renews, rescue of expired leases by any host, retries with
-- exponential backoff and jitter, an optional unique key, and
-- pinlock.enqueue() for producers' own transactions.

CREATE TABLE pinlock.workers (name text PRIMARY KEY, seen_at timestamptz NOT NULL DEFAULT now());

CREATE TABLE pinlock.jobs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker              text NOT NULL,
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    input               jsonb NOT NULL,
    run_at              timestamptz NOT NULL DEFAULT now(),
    attempt             int NOT NULL DEFAULT 0,
    max_attempts        int NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    unique_key          text,
    host                text,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    output              bytea,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    -- host: the host running the job, or the last one that ran it.
    CHECK (CASE WHEN state = 'running' THEN host IS NOT NULL AND lease_expires_at IS NOT NULL
                ELSE lease_expires_at IS NULL END),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE INDEX jobs_queued ON pinlock.jobs (worker, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_running ON pinlock.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON pinlock.jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_key ON pinlock.jobs (worker, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running', 'succeeded');
ALTER TABLE pinlock.jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 1);

CREATE FUNCTION pinlock.enqueue(
    worker text, input jsonb,
    run_at timestamptz DEFAULT now(), max_attempts int DEFAULT 5,
    unique_key text DEFAULT NULL, notify boolean DEFAULT true,
    OUT id bigint, OUT duplicate boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pinlock.workers w WHERE w.name = enqueue.worker) THEN
        RAISE EXCEPTION 'pinlock: unknown worker "%"', enqueue.worker USING ERRCODE = '22023';
    END IF;
    FOR i IN 1..3 LOOP
        INSERT INTO pinlock.jobs (worker, input, run_at, max_attempts, unique_key)
        VALUES (enqueue.worker, enqueue.input, coalesce(enqueue.run_at, now()),
                enqueue.max_attempts, enqueue.unique_key)
        ON CONFLICT (worker, unique_key)
            WHERE unique_key IS NOT NULL AND state IN ('queued', 'running', 'succeeded')
            DO NOTHING
        RETURNING jobs.id INTO enqueue.id;
        IF FOUND THEN
            enqueue.duplicate := false;
            IF enqueue.notify AND coalesce(enqueue.run_at, now()) <= now() THEN
                PERFORM pg_notify('pinlock_jobs', 'queued ' || enqueue.worker);
            END IF;
            RETURN;
        END IF;
        SELECT j.id INTO enqueue.id FROM pinlock.jobs j
         WHERE j.worker = enqueue.worker AND j.unique_key = enqueue.unique_key
           AND j.state IN ('queued', 'running', 'succeeded');
        IF FOUND THEN enqueue.duplicate := true; RETURN; END IF;
    END LOOP;
    RAISE EXCEPTION 'pinlock: unique key "%" keeps changing state', enqueue.unique_key USING ERRCODE = '40001';
END $$;

CREATE FUNCTION pinlock.cancel(job_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text; h text;
BEGIN
    UPDATE pinlock.jobs
       SET state = CASE state WHEN 'queued' THEN 'cancelled' ELSE state END,
           finished_at = CASE state WHEN 'queued' THEN now() END,
           cancel_requested_at = CASE state WHEN 'running' THEN coalesce(cancel_requested_at, now()) END
     WHERE id = job_id AND state IN ('queued', 'running')
    RETURNING state, host INTO s, h;
    IF s = 'running' THEN
        PERFORM pg_notify('pinlock_jobs', 'cancel ' || h || ' ' || job_id);
        RETURN 'cancelling';
    END IF;
    RETURN coalesce(s, (SELECT state FROM pinlock.jobs WHERE id = job_id));
END $$;
