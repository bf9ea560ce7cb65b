-- 0004_centre_config: the centre's configuration (users and their API tokens, queues, seats,
-- operators with their skills, leaders and their hotline slots) and the audit of every change.
--
-- The running service still takes its queues and seats from the settings (TOML); these tables are
-- the model the HTTP API edits (issue 4). Rules that the data must always obey are here, in the
-- schema (FKs, CHECKs, uniques); hotline/api.py validates the same rules first to name the field.

-- people who use the HTTP API. The password hash is argon2id (argon2-cffi); it is never returned.
CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    login         text NOT NULL
                  CONSTRAINT users_login_check CHECK (login ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    display_name  text NOT NULL
                  CONSTRAINT users_display_name_check CHECK (length(display_name) BETWEEN 1 AND 200),
    role          text NOT NULL
                  CONSTRAINT users_role_check CHECK (role IN ('admin', 'supervisor', 'operator', 'leader', 'recorder')),
    password_hash text NOT NULL
                  CONSTRAINT users_password_hash_check CHECK (password_hash LIKE '$argon2id$%'),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- logins are compared without case: "Admin" and "admin" are one user
CREATE UNIQUE INDEX users_login_key ON users (lower(login));

-- bearer tokens: only the SHA-256 of the random token is stored
CREATE TABLE api_tokens (
    token_hash bytea PRIMARY KEY
               CONSTRAINT api_tokens_token_hash_check CHECK (octet_length(token_hash) = 32),
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT api_tokens_expiry_check CHECK (expires_at > created_at)
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- app_queue queues. app_queue finds queues by name without case, and [general] is the settings
-- section of queues.conf: the name is unique without case and never 'general'.
CREATE TABLE queues (
    id                    bigserial PRIMARY KEY,
    name                  text NOT NULL
                          CONSTRAINT queues_name_check
                          CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$' AND lower(name) <> 'general'),
    purpose               text NOT NULL
                          CONSTRAINT queues_purpose_check
                          CHECK (purpose IN ('general', 'business', 'dialect', 'special', 'leader')),
    strategy              text NOT NULL DEFAULT 'rrmemory'
                          CONSTRAINT queues_strategy_check
                          CHECK (strategy IN ('ringall', 'leastrecent', 'fewestcalls', 'random', 'rrmemory',
                                              'linear', 'wrandom', 'rrordered')),
    service_level_seconds integer NOT NULL DEFAULT 15
                          CONSTRAINT queues_service_level_seconds_check CHECK (service_level_seconds BETWEEN 1 AND 600),
    max_wait_seconds      integer NOT NULL DEFAULT 120
                          CONSTRAINT queues_max_wait_seconds_check CHECK (max_wait_seconds BETWEEN 5 AND 3600),
    ring_timeout_seconds  integer NOT NULL DEFAULT 15
                          CONSTRAINT queues_ring_timeout_seconds_check CHECK (ring_timeout_seconds BETWEEN 1 AND 300),
    wrapup_seconds        integer NOT NULL DEFAULT 5
                          CONSTRAINT queues_wrapup_seconds_check CHECK (wrapup_seconds BETWEEN 0 AND 600),
    -- work-order category of the calls routed here (also set by the generated dialplan)
    category              text NOT NULL DEFAULT 'general'
                          CONSTRAINT queues_category_check CHECK (category ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- where a caller goes when max_wait_seconds is reached; NULL: the call leaves the queue
    overflow_queue_id     bigint CONSTRAINT queues_overflow_queue_id_fkey REFERENCES queues (id),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queues_overflow_not_self_check CHECK (overflow_queue_id <> id),
    -- the target of leader_slots' (queue_id, 'leader') reference
    CONSTRAINT queues_id_purpose_key UNIQUE (id, purpose)
);
CREATE UNIQUE INDEX queues_name_key ON queues (lower(name));

-- a seat: the SIP interface app_queue rings, the device state it follows, where it is
CREATE TABLE seats (
    id              bigserial PRIMARY KEY,
    interface       text NOT NULL
                    CONSTRAINT seats_interface_check
                    CHECK (interface ~ '^[A-Za-z0-9_-]+/[A-Za-z0-9_@./-]+$' AND length(interface) <= 80),
    -- app_queue MemberName
    name            text NOT NULL
                    CONSTRAINT seats_name_check
                    CHECK (length(name) BETWEEN 1 AND 80 AND name !~ '[[:cntrl:],|]'),
    -- NULL: the interface itself
    state_interface text
                    CONSTRAINT seats_state_interface_check
                    CHECK (state_interface ~ '^[A-Za-z0-9_-]+[/:][A-Za-z0-9_@./:-]+$' AND length(state_interface) <= 80),
    location        text NOT NULL DEFAULT ''
                    CONSTRAINT seats_location_check CHECK (length(location) <= 200 AND location !~ '[[:cntrl:]]'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX seats_interface_key ON seats (interface);

-- an operator is a person; the user it logs into the API as, if any
CREATE TABLE operators (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL
                CONSTRAINT operators_name_check CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    employee_no text NOT NULL
                CONSTRAINT operators_employee_no_check CHECK (employee_no ~ '^[A-Za-z0-9_-]{1,32}$'),
    user_id     bigint CONSTRAINT operators_user_id_fkey REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operators_employee_no_key UNIQUE (employee_no),
    CONSTRAINT operators_user_id_key UNIQUE (user_id)
);

-- the queues an operator answers, with the app_queue penalty (0 = first choice)
CREATE TABLE operator_skills (
    operator_id bigint NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    queue_id    bigint NOT NULL CONSTRAINT operator_skills_queue_id_fkey REFERENCES queues (id),
    penalty     integer NOT NULL DEFAULT 0
                CONSTRAINT operator_skills_penalty_check CHECK (penalty BETWEEN 0 AND 100),
    PRIMARY KEY (operator_id, queue_id)
);
CREATE INDEX operator_skills_queue_idx ON operator_skills (queue_id);

-- city leaders who take calls in announced slots
CREATE TABLE leaders (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL
                 CONSTRAINT leaders_name_check CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    title        text NOT NULL
                 CONSTRAINT leaders_title_check CHECK (length(title) BETWEEN 1 AND 200 AND title !~ '[[:cntrl:]]'),
    jurisdiction text NOT NULL
                 CONSTRAINT leaders_jurisdiction_check
                 CHECK (length(jurisdiction) BETWEEN 1 AND 200 AND jurisdiction !~ '[[:cntrl:]]'),
    -- the user (role leader) the leader signs in as, if any
    user_id      bigint CONSTRAINT leaders_user_id_fkey REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT leaders_user_id_key UNIQUE (user_id)
);

-- a leader's slot: a local date (settings.timezone) and time range, the leader seat, the queue of
-- purpose 'leader' that is open during the slot, and the topic
CREATE TABLE leader_slots (
    id             bigserial PRIMARY KEY,
    slot_date      date NOT NULL,
    start_time     time without time zone NOT NULL,
    end_time       time without time zone NOT NULL,
    leader_id      bigint NOT NULL CONSTRAINT leader_slots_leader_id_fkey REFERENCES leaders (id),
    leader_seat_id bigint NOT NULL CONSTRAINT leader_slots_leader_seat_id_fkey REFERENCES seats (id),
    queue_id       bigint NOT NULL,
    -- always 'leader': with queue_id it references queues (id, purpose), so a slot's queue is a
    -- leader queue, and a queue in a slot cannot stop being one
    queue_purpose  text NOT NULL DEFAULT 'leader'
                   CONSTRAINT leader_slots_queue_purpose_check CHECK (queue_purpose = 'leader'),
    topic          text NOT NULL
                   CONSTRAINT leader_slots_topic_check CHECK (length(topic) BETWEEN 1 AND 500 AND topic !~ '[[:cntrl:]]'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT leader_slots_time_check CHECK (end_time > start_time),
    CONSTRAINT leader_slots_queue_id_fkey FOREIGN KEY (queue_id, queue_purpose) REFERENCES queues (id, purpose)
);
CREATE INDEX leader_slots_date_idx ON leader_slots (slot_date, start_time);
CREATE INDEX leader_slots_leader_idx ON leader_slots (leader_id);
CREATE INDEX leader_slots_seat_idx ON leader_slots (leader_seat_id);
CREATE INDEX leader_slots_queue_idx ON leader_slots (queue_id);

-- the operators who pre-screen the slot's calls
CREATE TABLE leader_slot_prescreeners (
    slot_id     bigint NOT NULL REFERENCES leader_slots (id) ON DELETE CASCADE,
    operator_id bigint NOT NULL CONSTRAINT leader_slot_prescreeners_operator_id_fkey REFERENCES operators (id),
    PRIMARY KEY (slot_id, operator_id)
);
CREATE INDEX leader_slot_prescreeners_operator_idx ON leader_slot_prescreeners (operator_id);

-- the hard cases (work orders) prepared for the slot, in the order given
CREATE TABLE leader_slot_cases (
    slot_id       bigint NOT NULL REFERENCES leader_slots (id) ON DELETE CASCADE,
    work_order_id bigint NOT NULL CONSTRAINT leader_slot_cases_work_order_id_fkey REFERENCES work_orders (id),
    position      integer NOT NULL CONSTRAINT leader_slot_cases_position_check CHECK (position >= 0),
    PRIMARY KEY (slot_id, work_order_id),
    CONSTRAINT leader_slot_cases_position_key UNIQUE (slot_id, position)
);
CREATE INDEX leader_slot_cases_order_idx ON leader_slot_cases (work_order_id);

-- one row per configuration change, written in the change's own transaction. The actor is kept
-- as text too, so the row says who even after the user is gone. Never holds a password hash.
CREATE TABLE config_audit (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor_user_id bigint,
    actor         text NOT NULL,
    entity        text NOT NULL
                  CONSTRAINT config_audit_entity_check CHECK (entity IN (
                      'user', 'queue', 'seat', 'operator', 'operator_skills', 'leader', 'leader_slot')),
    entity_id     bigint NOT NULL,
    action        text NOT NULL
                  CONSTRAINT config_audit_action_check CHECK (action IN ('create', 'update', 'delete')),
    before        jsonb,
    after         jsonb,
    CONSTRAINT config_audit_images_check CHECK (
        (action = 'create' AND before IS NULL AND after IS NOT NULL)
        OR (action = 'update' AND before IS NOT NULL AND after IS NOT NULL)
        OR (action = 'delete' AND before IS NOT NULL AND after IS NULL))
);
CREATE INDEX config_audit_entity_idx ON config_audit (entity, entity_id, at);
CREATE INDEX config_audit_at_idx ON config_audit (at);
