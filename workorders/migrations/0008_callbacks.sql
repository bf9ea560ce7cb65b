-- 0008_callbacks: missed-call callbacks (漏接电话回拨): one task per caller number to call back,
-- and every attempt made on it.
--
-- The call writer (workorders/store.py) opens or refreshes a task in the transaction that stores a
-- missed call (abandoned, queue_timeout, dropped, an IVR hang-up after the configured time, or the
-- IVR's callback offer accepted), so a task exists exactly once per call, like the call row. A
-- number has at most one open (pending or dialing) task: a second missed call refreshes it
-- (last_call_id, missed_calls) instead of adding one. An answered call of the number cancels its
-- pending tasks. The callback desk (queues/callbacks.py) dials due pending tasks when a seat is
-- free (the seat first, then the citizen through hotline-callback) and writes each attempt's
-- outcome here with a work_order_events row, in one transaction.

CREATE TABLE callback_tasks (
    id                bigserial PRIMARY KEY,
    -- the Asterisk node (settings node id) of the latest missed call; that node's desk dials it
    node              text NOT NULL CONSTRAINT callback_tasks_node_check CHECK (length(node) BETWEEN 1 AND 64),
    work_order_id     bigint NOT NULL REFERENCES work_orders (id),
    -- the missed call that opened the task, and the latest one that refreshed it
    call_id           bigint NOT NULL REFERENCES calls (id),
    last_call_id      bigint NOT NULL REFERENCES calls (id),
    missed_calls      integer NOT NULL DEFAULT 1 CONSTRAINT callback_tasks_missed_calls_check CHECK (missed_calls >= 1),
    -- the number dialled: digits only, as the hotline-callback dialplan accepts it
    number            text NOT NULL CONSTRAINT callback_tasks_number_check CHECK (number ~ '^[0-9]{3,20}$'),
    -- why: abandoned in a queue, queue_timeout, dropped (Asterisk restarted under the call),
    -- ivr_hangup (after the configured time in the IVR), requested (the IVR's callback offer)
    reason            text NOT NULL
                      CONSTRAINT callback_tasks_reason_check
                      CHECK (reason IN ('abandoned', 'queue_timeout', 'dropped', 'ivr_hangup', 'requested')),
    status            text NOT NULL DEFAULT 'pending'
                      CONSTRAINT callback_tasks_status_check
                      CHECK (status IN ('pending', 'dialing', 'connected', 'failed', 'cancelled')),
    -- why the task ended as it did (failed, cancelled), free text for people
    status_reason     text CONSTRAINT callback_tasks_status_reason_check CHECK (length(status_reason) <= 200),
    -- dials of the citizen made (a seat that did not answer does not count: seat_failures)
    attempts          integer NOT NULL DEFAULT 0 CONSTRAINT callback_tasks_attempts_check CHECK (attempts >= 0),
    max_attempts      integer NOT NULL CONSTRAINT callback_tasks_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 20),
    seat_failures     integer NOT NULL DEFAULT 0 CONSTRAINT callback_tasks_seat_failures_check CHECK (seat_failures >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- the end of the first and of the latest missed call (the call's own clock)
    missed_at         timestamptz NOT NULL,
    last_missed_at    timestamptz NOT NULL,
    -- the attempt in progress while dialing (set with it; kept after as the last attempt)
    current_attempt_id bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT callback_tasks_attempts_bound_check CHECK (attempts <= max_attempts),
    CONSTRAINT callback_tasks_dialing_check CHECK (status <> 'dialing' OR current_attempt_id IS NOT NULL),
    CONSTRAINT callback_tasks_ended_reason_check
        CHECK (status NOT IN ('failed', 'cancelled') OR status_reason IS NOT NULL)
);
-- at most one open task per number: a new missed call refreshes it
CREATE UNIQUE INDEX callback_tasks_open_number_key ON callback_tasks (number) WHERE status IN ('pending', 'dialing');
-- the desk's pick of the next due task
CREATE INDEX callback_tasks_due_idx ON callback_tasks (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX callback_tasks_order_idx ON callback_tasks (work_order_id);
CREATE INDEX callback_tasks_status_idx ON callback_tasks (status, created_at);

CREATE TABLE callback_attempts (
    id          bigserial PRIMARY KEY,
    task_id     bigint NOT NULL REFERENCES callback_tasks (id) ON DELETE CASCADE,
    attempt_no  integer NOT NULL CONSTRAINT callback_attempts_attempt_no_check CHECK (attempt_no >= 1),
    started_at  timestamptz NOT NULL,
    -- when the outcome was known (no answer, busy, failed...) or, connected, when the call ended
    ended_at    timestamptz,
    seat        text NOT NULL CONSTRAINT callback_attempts_seat_check CHECK (length(seat) BETWEEN 1 AND 200),
    -- the Originate's ActionID (its OriginateResponse carries the same one)
    action_id   text,
    -- NULL while in progress. connected, no_answer, busy, failed: the citizen's leg (DIALSTATUS,
    -- or the channel's hang-up cause); seat_failed: the seat did not answer the Originate (or it
    -- was refused), not counted against the citizen; lost: no outcome came in time (AMI link lost,
    -- service restart), counted
    outcome     text CONSTRAINT callback_attempts_outcome_check
                CHECK (outcome IN ('connected', 'no_answer', 'busy', 'failed', 'seat_failed', 'lost')),
    detail      jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT callback_attempts_task_no_key UNIQUE (task_id, attempt_no),
    CONSTRAINT callback_attempts_ended_check CHECK (ended_at IS NULL OR ended_at >= started_at)
);
-- seats busy with a callback: attempts not ended yet
CREATE INDEX callback_attempts_open_idx ON callback_attempts (seat) WHERE ended_at IS NULL;

-- the writer's "did this number get through after the missed call?" look-up
CREATE INDEX calls_caller_ended_idx ON calls (caller_number, ended_at);

ALTER TABLE callback_tasks ADD CONSTRAINT callback_tasks_current_attempt_fkey
    FOREIGN KEY (current_attempt_id) REFERENCES callback_attempts (id);
