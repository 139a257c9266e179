-- Agent configuration from the centre: one versioned document per POP (sections `monitors`, `snmp`, `acs`,
-- `scan`, in the shapes of the agent's config file), pushed to the POP's agents as `config.update` commands.
--
-- Versions are immutable: a change inserts version N+1 (a rollback inserts an older document again as a new
-- version), so every version an agent ever applied can be read back. The `config.update` command row carries only
-- `{"version": N}`; the document is read from here when the command is sent, so credentials never sit in
-- `commands.args` (which the command API returns) and large documents (thousands of SNMP devices) are not bound
-- by the 64 KiB argument limit.
--
-- Conventions of 0001/0006: `provider_id` on every row, ENABLE + FORCE ROW LEVEL SECURITY, one `tenant_isolation`
-- policy, composite foreign keys, DML granted table by table.

CREATE TABLE agent_configs (
    provider_id        uuid NOT NULL REFERENCES providers (id),
    pop_id             uuid NOT NULL,
    version            bigint NOT NULL CHECK (version > 0),
    config             jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'
                           AND length(config::text) <= 4194304),
    comment            text CHECK (comment IS NULL OR length(comment) <= 500),
    created_by_user    uuid,
    created_by_api_key uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, pop_id, version),
    FOREIGN KEY (provider_id, pop_id) REFERENCES pops (provider_id, id)
);
COMMENT ON TABLE agent_configs IS
    'Versioned central configuration per POP; the newest version is the one pushed to the POP''s agents.';

ALTER TABLE agent_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_configs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_configs
    USING (provider_id = octoisp_tenant() OR octoisp_is_global_admin())
    WITH CHECK (provider_id = octoisp_tenant() OR octoisp_is_global_admin());

-- Versions are never changed or deleted by the application.
GRANT SELECT, INSERT ON agent_configs TO octoisp_app;

-- Each agent's `config.update` commands, newest first (what it applied, what is pending, what it refused).
CREATE INDEX commands_agent_config ON commands (provider_id, agent_id, id DESC) WHERE name = 'config.update';
