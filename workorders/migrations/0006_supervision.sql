-- 0006_supervision: every supervisor listen / whisper / barge on a seat (queues/supervision.py).
--
-- A row is written before any AMI action is sent ('requested'), then given its result: 'queued'
-- (the Originate of the supervisor's phone into ChanSpy was accepted; action_id is its ActionID,
-- the OriginateResponse event carries the same one), 'no_call' (the seat had no live channel, no
-- Originate sent) or 'failed' (Asterisk refused or the AMI link was down; detail says why).
-- config_audit is for configuration changes; this is the history of supervision.

CREATE TABLE supervision_log (
    id                 bigserial PRIMARY KEY,
    started_at         timestamptz NOT NULL DEFAULT now(),
    -- the API user; the login is kept as text too, so the row says who even after the user is gone
    supervisor_user_id bigint CONSTRAINT supervision_log_supervisor_user_id_fkey
                       REFERENCES users (id) ON DELETE SET NULL,
    supervisor         text NOT NULL
                       CONSTRAINT supervision_log_supervisor_check CHECK (length(supervisor) BETWEEN 1 AND 64),
    -- the seat spied on; its interface is kept as it was then
    seat_id            bigint CONSTRAINT supervision_log_seat_id_fkey REFERENCES seats (id) ON DELETE SET NULL,
    seat               text NOT NULL CONSTRAINT supervision_log_seat_check CHECK (length(seat) BETWEEN 1 AND 80),
    -- the supervisor's phone that was originated (an interface such as PJSIP/8100)
    phone              text NOT NULL CONSTRAINT supervision_log_phone_check CHECK (length(phone) BETWEEN 1 AND 80),
    mode               text NOT NULL
                       CONSTRAINT supervision_log_mode_check CHECK (mode IN ('listen', 'whisper', 'barge')),
    -- the Asterisk node (settings node id) the Originate went to
    node               text NOT NULL,
    result             text NOT NULL DEFAULT 'requested'
                       CONSTRAINT supervision_log_result_check
                       CHECK (result IN ('requested', 'queued', 'no_call', 'failed')),
    action_id          text,
    detail             text CONSTRAINT supervision_log_detail_check CHECK (length(detail) <= 500),
    CONSTRAINT supervision_log_action_id_check CHECK ((result = 'queued') = (action_id IS NOT NULL))
);
CREATE INDEX supervision_log_started_idx ON supervision_log (started_at);
CREATE INDEX supervision_log_seat_idx ON supervision_log (seat_id, started_at);
CREATE INDEX supervision_log_supervisor_idx ON supervision_log (supervisor_user_id, started_at);
