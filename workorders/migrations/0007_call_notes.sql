-- 0007_call_notes: what the leader hotline records about a call still in progress.
--
-- A work order is created only when the call ends (workorders/store.py writes the call, its order
-- and its events in one transaction). While the call runs, a pre-screen or a transfer to the
-- leader (queues/leader.py) of a first-time caller has no order to go on: it is kept here, keyed
-- by the call's (node, linkedid). The call writer, in the transaction that stores the call, moves
-- the call's notes into work_order_events (same kind, actor, at, detail, plus the call_id) and
-- deletes them; a rolled-back write keeps them. Both sides serialise on the advisory lock
-- (12346, hashtext(node || '/' || linkedid)), so a note is never left behind by a racing writer.

CREATE TABLE call_notes (
    id       bigserial PRIMARY KEY,
    node     text NOT NULL CONSTRAINT call_notes_node_check CHECK (length(node) BETWEEN 1 AND 64),
    linkedid text NOT NULL CONSTRAINT call_notes_linkedid_check CHECK (length(linkedid) BETWEEN 1 AND 150),
    kind     text NOT NULL CONSTRAINT call_notes_kind_check CHECK (length(kind) BETWEEN 1 AND 64),
    actor    text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX call_notes_call_idx ON call_notes (node, linkedid);
