-- The tenant functions in PL/pgSQL, so that planning a statement no longer parses their bodies.
--
-- `octoisp_tenant()` and `octoisp_is_global_admin()` were plain SQL so that the per-row policies of 0001 could
-- inline them. Since 0018 every policy calls them once per statement, in a scalar subquery (an InitPlan), and
-- inlining gains nothing there; it costs, though: the planner inlines a SQL function by parsing and analysing its
-- body text, for every reference of every table with a policy, on every planning. A device page names `devices`
-- twice, so four bodies were parsed per page (`base_yyparse` and `core_yylex` led PostgreSQL's profile of the
-- device list). As PL/pgSQL functions they are called, not inlined: planning a device page went from 0.45-1.0 ms
-- to 0.37-0.7 ms (docs/BENCHMARKS.md, issue 3). Same names, signatures and results, so the policies, which refer
-- to the functions by identity, are unchanged.
--
-- `octoisp_may_write(provider_id)` is the CHECK constraint of every `samples` partition, evaluated for each row
-- ingest writes: it stays SQL (the constraint inlines it) and reads the settings itself, so that a row does not pay
-- two PL/pgSQL calls.
CREATE OR REPLACE FUNCTION octoisp_tenant() RETURNS uuid
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$ BEGIN RETURN nullif(current_setting('app.provider_id', true), '')::uuid; END $$;

CREATE OR REPLACE FUNCTION octoisp_is_global_admin() RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$ BEGIN RETURN coalesce(current_setting('app.global_admin', true) = 'on', false); END $$;

CREATE OR REPLACE FUNCTION octoisp_may_write(p_provider_id uuid) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(p_provider_id = nullif(current_setting('app.provider_id', true), '')::uuid, false)
                 OR coalesce(current_setting('app.global_admin', true) = 'on', false) $$;
