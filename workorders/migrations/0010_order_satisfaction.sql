-- 0010_order_satisfaction: the satisfaction survey's answer on the work order itself (issue 5):
-- the first answer given about the order and the latest one (a repeat call may be surveyed
-- again). Set by the call writer in the call's own transaction, from calls.survey; a survey
-- without an answer (no_answer) does not change them.

ALTER TABLE work_orders
    ADD COLUMN first_satisfaction text
        CONSTRAINT work_orders_first_satisfaction_check
        CHECK (first_satisfaction IN ('satisfied', 'basically_satisfied', 'dissatisfied')),
    ADD COLUMN satisfaction text
        CONSTRAINT work_orders_satisfaction_check
        CHECK (satisfaction IN ('satisfied', 'basically_satisfied', 'dissatisfied'));
