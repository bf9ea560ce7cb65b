-- 0003_dropped_outcome: a call Asterisk lost by restarting under it before a seat answered is
-- 'dropped' (the caller did not give up; the centre calls back), not 'abandoned', so that the
-- abandonment rate counts citizens' choices and the dropped count the PBX's failures.
ALTER TABLE calls DROP CONSTRAINT calls_outcome_check;
ALTER TABLE calls ADD CONSTRAINT calls_outcome_check
    CHECK (outcome IN ('answered', 'abandoned', 'queue_timeout', 'ivr_hangup', 'dropped'));
