-- 0002_closed_by_resync: a call the service could not follow to its last Hangup (the AMI link
-- was down, Asterisk restarted, the service was killed) is closed by the resync after the next
-- AMI login and written with what was known. closed_by says so: NULL for a call followed to its
-- end, 'resync' when its channels were found gone, 'asterisk_restart' when Asterisk restarted.
ALTER TABLE calls ADD COLUMN closed_by text
    CONSTRAINT calls_closed_by_check CHECK (closed_by IN ('resync', 'asterisk_restart'));
CREATE INDEX calls_closed_by_idx ON calls (closed_by) WHERE closed_by IS NOT NULL;
