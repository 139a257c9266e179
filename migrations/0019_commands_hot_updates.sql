-- Commands: the dispatch and `running` updates become HOT (heap-only: no index entry written), the final update
-- writes 8 index entries instead of 10.
--
-- A row of `commands` is written three times (insert, dispatched, final) and, up to 0018, both updates wrote a
-- new entry into every one of the table's indexes: an update is HOT only when no indexed column changes and the
-- new version fits on the same page, and `status` was indexed twice (`commands_status`, and the predicate of
-- `commands_open`). Now:
-- - no index reads `status`. The final status is copied by PostgreSQL into the generated column `final_status`
--   (NULL while the command is open), and the two indexes that served status filters read that column instead:
--   `commands_final` (a final status, for the API's `status=` filter) and `commands_open` (the open commands of a
--   provider, for the API's `status=` filter on an open status and for the reconciler). Moving between open
--   statuses (queued, waiting_agent, dispatched, running) changes no indexed column: such an update is HOT;
-- - `fillfactor = 50` leaves room on each page for those new versions (without room, an update is not HOT either):
--   with 70, 8,043 of 20,095 dispatch updates of a 20,000-row fan-out were HOT, with 50 19,134 (rows of ~220 bytes;
--   the table was no larger, since the final versions no longer move to new pages).
--
-- A query that wants an index on status must say `final_status = ...` or `final_status IS NULL`: the planner does
-- not infer them from `status`. Adding the column rewrites the table once (existing rows get their value).

ALTER TABLE commands SET (fillfactor = 50);
ALTER TABLE commands ADD COLUMN final_status text GENERATED ALWAYS AS (
    CASE WHEN status IN ('succeeded', 'failed', 'expired', 'rejected', 'cancelled', 'dead') THEN status END
) STORED;
COMMENT ON COLUMN commands.final_status IS
    'status once final, NULL while open (queued, waiting_agent, dispatched, running): the only status column indexed, '
    'so updates between open statuses are HOT.';

DROP INDEX commands_status;
DROP INDEX commands_open;
CREATE INDEX commands_final ON commands (provider_id, final_status, id) WHERE final_status IS NOT NULL;
-- A provider's unfinished commands in creation order (API filter on an open status, reconciliation).
CREATE INDEX commands_open ON commands (provider_id, id) WHERE final_status IS NULL;

CREATE OR REPLACE FUNCTION octoisp_command_open_providers() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
        SELECT DISTINCT provider_id FROM public.commands
         WHERE final_status IS NULL AND created_at < now() - interval '1 minute'
    $$;

-- Redundant foreign keys, checked once per inserted row (one `SELECT ... FOR KEY SHARE` on providers each): a
-- command's provider is already held by `(provider_id, pop_id) -> pops` and a result's by
-- `(provider_id, agent_id) -> agents`, and pops and agents reference providers themselves (no cascade: a
-- provider with pops or agents cannot be deleted, nor a pop or an agent with commands or results).
ALTER TABLE commands DROP CONSTRAINT commands_provider_id_fkey;
ALTER TABLE command_results DROP CONSTRAINT command_results_provider_id_fkey;
