-- A command withdrawn on the agent before it took effect (`tr069.withdraw`, sent when a firmware campaign is
-- paused or cancelled) ends `cancelled` there; its result row carries that status.
ALTER TABLE command_results DROP CONSTRAINT command_results_status_check;
ALTER TABLE command_results ADD CONSTRAINT command_results_status_check
    CHECK (status IN ('succeeded', 'failed', 'expired', 'rejected', 'cancelled'));
