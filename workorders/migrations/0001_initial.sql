-- 0001_initial: calls with their timelines and recordings, work orders with their audit trail,
-- and the per-day counters behind work-order numbers.
--
-- Every call belongs to exactly one work order: calls.work_order_id is NOT NULL (a join table
-- could not say "exactly one" without extra constraints). An order has one or more calls (the
-- first call, then repeat calls linked to it). Times are timestamptz; the writer converts the
-- epoch floats of telephony.model.FinishedCall.

CREATE TABLE work_orders (
    id            bigserial PRIMARY KEY,
    number        text NOT NULL UNIQUE
                  CONSTRAINT work_orders_number_format CHECK (number ~ '^12345-[0-9]{8}-[0-9]{6,}$'),
    caller_number text,
    caller_name   text,
    -- set by an agent: 咨询 consultation, 求助 help, 投诉 complaint, 举报 report, 建议 suggestion, 表扬 praise
    request_type  text CONSTRAINT work_orders_request_type_check
                  CHECK (request_type IN ('咨询', '求助', '投诉', '举报', '建议', '表扬')),
    category      text NOT NULL DEFAULT 'general',
    -- normal 一般, urgent 紧急, critical 特急
    urgency       text NOT NULL DEFAULT 'normal'
                  CONSTRAINT work_orders_urgency_check CHECK (urgency IN ('normal', 'urgent', 'critical')),
    -- callback_pending 待回拨 (missed call), intake 受理, dispatched 派单, signed 签收, handling 办理,
    -- replied 答复, returned 退单, revisit 回访, closed 办结, archived 归档.
    -- Open = anything but closed and archived.
    status        text NOT NULL
                  CONSTRAINT work_orders_status_check CHECK (status IN (
                      'callback_pending', 'intake', 'dispatched', 'signed', 'handling',
                      'replied', 'returned', 'revisit', 'closed', 'archived')),
    created_at    timestamptz NOT NULL DEFAULT now(),  -- intake time: the first call's start
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- the repeat-caller lookup: newest order of one number within the window
CREATE INDEX work_orders_caller_created_idx ON work_orders (caller_number, created_at);

-- audit trail: one row per change of an order
CREATE TABLE work_order_events (
    id            bigserial PRIMARY KEY,
    work_order_id bigint NOT NULL REFERENCES work_orders (id) ON DELETE CASCADE,
    at            timestamptz NOT NULL DEFAULT now(),
    kind          text NOT NULL,
    actor         text NOT NULL DEFAULT 'system',
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX work_order_events_order_idx ON work_order_events (work_order_id, at);

-- work-order numbers 12345-YYYYMMDD-NNNNNN: one row per day, `last` is the last number given
CREATE TABLE order_day_counters (
    day  date PRIMARY KEY,
    last integer NOT NULL CHECK (last > 0)
);

CREATE TABLE calls (
    id                bigserial PRIMARY KEY,
    node              text NOT NULL,
    linkedid          text NOT NULL,
    caller_number     text,
    caller_name       text,
    started_at        timestamptz NOT NULL,
    answered_at       timestamptz,
    ended_at          timestamptz NOT NULL,
    -- telephony.model.OUTCOMES
    outcome           text NOT NULL
                      CONSTRAINT calls_outcome_check
                      CHECK (outcome IN ('answered', 'abandoned', 'queue_timeout', 'ivr_hangup')),
    ivr_choice        text,
    queue             text,
    category          text,
    queue_position    integer,
    seat              text,
    seat_interface    text,
    hold_seconds      integer,
    talk_seconds      integer,
    hangup_cause      integer,
    hangup_cause_text text,
    variables         jsonb NOT NULL DEFAULT '{}',
    work_order_id     bigint NOT NULL REFERENCES work_orders (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT calls_node_linkedid_key UNIQUE (node, linkedid)
);
CREATE INDEX calls_work_order_idx ON calls (work_order_id);
CREATE INDEX calls_started_idx ON calls (started_at);

-- the call's timeline, in the tracker's order
CREATE TABLE call_events (
    call_id bigint NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    at      timestamptz NOT NULL,
    kind    text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE recordings (
    id               bigserial PRIMARY KEY,
    call_id          bigint NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    path             text NOT NULL,
    uniqueid         text,         -- channel that ran MixMonitor
    started_at       timestamptz,  -- MixMonitorStart
    bytes            bigint,
    duration_seconds numeric(12, 3),
    sha256           text,
    status           text NOT NULL
                     CONSTRAINT recordings_status_check CHECK (status IN ('ok', 'missing', 'short', 'corrupt')),
    checked_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recordings_call_path_key UNIQUE (call_id, path)
);
