-- 0009_ivr: IVR flows as versioned data, special-topic switches, business-hours calendars and
-- caller lists (issue 5). A flow version is never changed once saved: a change is a new version,
-- and which version new calls run is one row per flow name (ivr_flow_live), switched in one
-- statement, so a call in progress keeps the version it loaded at its start.

CREATE TABLE ivr_flow_versions (
    name       text NOT NULL CONSTRAINT ivr_flow_versions_name_check CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    version    integer NOT NULL CONSTRAINT ivr_flow_versions_version_check CHECK (version >= 1),
    source     text NOT NULL CONSTRAINT ivr_flow_versions_source_check CHECK (length(source) BETWEEN 1 AND 200000),
    comment    text NOT NULL DEFAULT ''
               CONSTRAINT ivr_flow_versions_comment_check CHECK (length(comment) <= 500 AND comment !~ '[[:cntrl:]]'),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- the version new calls of this flow run
CREATE TABLE ivr_flow_live (
    name         text PRIMARY KEY,
    version      integer NOT NULL,
    activated_by text NOT NULL,
    activated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ivr_flow_live_version_fkey FOREIGN KEY (name, version) REFERENCES ivr_flow_versions (name, version)
);

-- special-topic announcements (e.g. a typhoon): on while `active` and inside the window, if any
CREATE TABLE ivr_topics (
    key        text PRIMARY KEY CONSTRAINT ivr_topics_key_check CHECK (key ~ '^[a-z0-9_-]{1,64}$'),
    title      text NOT NULL CONSTRAINT ivr_topics_title_check CHECK (length(title) BETWEEN 1 AND 200 AND title !~ '[[:cntrl:]]'),
    active     boolean NOT NULL DEFAULT false,
    starts_at  timestamptz,
    ends_at    timestamptz,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ivr_topics_window_check CHECK (starts_at IS NULL OR ends_at IS NULL OR ends_at > starts_at)
);

-- business hours of dedicated seats (ivr/hours.py): opening ranges of a working and a rest day,
-- the official calendar (holidays and make-up working days) or Monday to Friday, dates overridden
CREATE TABLE ivr_calendars (
    name              text PRIMARY KEY CONSTRAINT ivr_calendars_name_check CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    workday           jsonb NOT NULL,
    restday           jsonb NOT NULL,
    official_holidays boolean NOT NULL DEFAULT true,
    closed_dates      date[] NOT NULL DEFAULT '{}',
    open_dates        date[] NOT NULL DEFAULT '{}',
    updated_by        text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- numbers on a caller list (elderly, disabled, VIP, ...): a flow's caller_list node raises their
-- queue priority
CREATE TABLE caller_list_entries (
    list       text NOT NULL CONSTRAINT caller_list_entries_list_check CHECK (list ~ '^[a-z0-9_-]{1,32}$'),
    number     text NOT NULL CONSTRAINT caller_list_entries_number_check CHECK (number ~ '^\+?[0-9]{3,20}$'),
    note       text NOT NULL DEFAULT ''
               CONSTRAINT caller_list_entries_note_check CHECK (length(note) <= 200 AND note !~ '[[:cntrl:]]'),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list, number)
);
CREATE INDEX caller_list_entries_number_idx ON caller_list_entries (number);

-- every change of the above is audited like the rest of the configuration
ALTER TABLE config_audit DROP CONSTRAINT config_audit_entity_check;
ALTER TABLE config_audit ADD CONSTRAINT config_audit_entity_check CHECK (entity IN (
    'user', 'queue', 'seat', 'operator', 'operator_skills', 'leader', 'leader_slot',
    'ivr_flow', 'ivr_topic', 'ivr_calendar', 'caller_list'));
-- ivr entities are keyed by name (a flow: name and version in entity_id), not by a numeric id
ALTER TABLE config_audit ALTER COLUMN entity_id DROP NOT NULL;
ALTER TABLE config_audit ADD COLUMN entity_key text
    CONSTRAINT config_audit_entity_key_check CHECK (length(entity_key) <= 100);
ALTER TABLE config_audit ADD CONSTRAINT config_audit_entity_ref_check
    CHECK (entity_id IS NOT NULL OR entity_key IS NOT NULL);

-- the IVR's own endings: a caller transferred to 110 (emergency) and one who asked to be called
-- back instead of waiting are neither abandons nor IVR hang-ups
ALTER TABLE calls DROP CONSTRAINT calls_outcome_check;
ALTER TABLE calls ADD CONSTRAINT calls_outcome_check
    CHECK (outcome IN ('answered', 'abandoned', 'queue_timeout', 'ivr_hangup', 'dropped',
                       'emergency_transfer', 'callback_requested'));

-- the satisfaction survey after the seat hung up (ivr/survey.py): 1 satisfied, 2 basically
-- satisfied, 3 dissatisfied, or no answer; NULL: not surveyed (the caller hung up first)
ALTER TABLE calls ADD COLUMN survey text
    CONSTRAINT calls_survey_check CHECK (survey IN ('satisfied', 'basically_satisfied', 'dissatisfied', 'no_answer'));
