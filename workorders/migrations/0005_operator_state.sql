-- 0005_operator_state: where each operator is, as the service intends it (queues/operators.py),
-- and the history of every change of an operator's state.
--
-- Postgres holds the intended state; Asterisk (app_queue membership and pauses) holds a copy that
-- the service reconciles after every AMI login. One row per operator that has ever logged in;
-- 'offline' rows keep no seat.

CREATE TABLE operator_sessions (
    operator_id   bigint PRIMARY KEY REFERENCES operators (id) ON DELETE CASCADE,
    -- the Asterisk node (settings node id) whose app_queue holds the seat; NULL while offline
    node          text,
    -- the seat's app_queue Interface (PJSIP/8001); NULL while offline
    seat          text,
    status        text NOT NULL
                  CONSTRAINT operator_sessions_status_check
                  CHECK (status IN ('offline', 'available', 'paused', 'ringing', 'on_call', 'wrap_up')),
    -- why paused (paused only)
    reason        text,
    -- a pause asked during a ring, a call or wrap-up, applied when it ends
    pending_pause text,
    wrap_up_until timestamptz,
    since         timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operator_sessions_seat_check CHECK ((status = 'offline') = (seat IS NULL AND node IS NULL)),
    CONSTRAINT operator_sessions_reason_check CHECK ((status = 'paused') = (reason IS NOT NULL)),
    CONSTRAINT operator_sessions_wrap_up_check CHECK ((status = 'wrap_up') = (wrap_up_until IS NOT NULL)),
    CONSTRAINT operator_sessions_pending_check
        CHECK (pending_pause IS NULL OR status IN ('ringing', 'on_call', 'wrap_up'))
);
-- one operator per seat of a node
CREATE UNIQUE INDEX operator_sessions_seat_key ON operator_sessions (node, lower(seat)) WHERE seat IS NOT NULL;

CREATE TABLE operator_state_history (
    id          bigserial PRIMARY KEY,
    operator_id bigint NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    node        text NOT NULL,
    seat        text,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    -- what caused it: "login", "pause: lunch", "AgentCalled", "no answer", "wrap-up over"...
    reason      text NOT NULL,
    -- who: the API user's login, or 'asterisk' / 'service' for events and timers
    actor       text NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX operator_state_history_operator_idx ON operator_state_history (operator_id, at);
CREATE INDEX operator_state_history_at_idx ON operator_state_history (at);
