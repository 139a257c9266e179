-- Row-level security evaluated once per statement instead of once per row.
--
-- Every policy reads the tenant with `octoisp_tenant()` and the global-admin flag with `octoisp_is_global_admin()`.
-- Inlined into the policy, both are evaluated for every row a statement visits: two GUC lookups and a text-to-uuid
-- parse per row (`uuid_in` led the control plane's PostgreSQL profile in the scale run, docs/SCALING.md). Written
-- as scalar subqueries, `(SELECT octoisp_tenant())`, the planner computes each once per statement (an InitPlan)
-- and the per-row check becomes a comparison with a parameter. The values are the same: both functions are STABLE
-- and read transaction-local settings, which cannot change within a statement.
--
-- The policies are rewritten from their own definitions (pg_policies), so every policy of every earlier migration
-- is covered; the block fails if a call is left outside a subquery. New policies must be written in this form:
--     USING (provider_id = (SELECT octoisp_tenant()) OR (SELECT octoisp_is_global_admin()))
-- (controlplane/tests/rls.rs checks that every policy does).
DO $$
DECLARE
    p record;
    using_expr text;
    check_expr text;
BEGIN
    FOR p IN
        SELECT schemaname, tablename, policyname, qual, with_check
        FROM pg_policies
        WHERE schemaname = 'public'
          AND (qual ~ 'octoisp_(tenant|is_global_admin)\(\)' OR with_check ~ 'octoisp_(tenant|is_global_admin)\(\)')
    LOOP
        using_expr := regexp_replace(p.qual, '(octoisp_(tenant|is_global_admin)\(\))', '(SELECT \1)', 'g');
        check_expr := regexp_replace(p.with_check, '(octoisp_(tenant|is_global_admin)\(\))', '(SELECT \1)', 'g');
        IF using_expr IS NOT NULL AND check_expr IS NOT NULL THEN
            EXECUTE format('ALTER POLICY %I ON %I.%I USING (%s) WITH CHECK (%s)',
                           p.policyname, p.schemaname, p.tablename, using_expr, check_expr);
        ELSIF using_expr IS NOT NULL THEN
            EXECUTE format('ALTER POLICY %I ON %I.%I USING (%s)',
                           p.policyname, p.schemaname, p.tablename, using_expr);
        ELSE
            EXECUTE format('ALTER POLICY %I ON %I.%I WITH CHECK (%s)',
                           p.policyname, p.schemaname, p.tablename, check_expr);
        END IF;
    END LOOP;

    -- Deparsed, a subquery reads `( SELECT octoisp_tenant() AS octoisp_tenant)`: strip those and no call may remain.
    PERFORM 1 FROM pg_policies
    WHERE schemaname = 'public'
      AND (regexp_replace(coalesce(qual, '') || ' ' || coalesce(with_check, ''),
                          'SELECT octoisp_(tenant|is_global_admin)\(\) AS', '', 'g')
           ~ 'octoisp_(tenant|is_global_admin)\(\)');
    IF FOUND THEN
        RAISE EXCEPTION 'a row-level security policy still calls octoisp_tenant() or octoisp_is_global_admin() per row';
    END IF;
END
$$;
