-- A command's POP is its agent's POP, and one foreign key says so where two did less.
--
-- Up to 0020 a command row had `(provider_id, pop_id) -> pops` and `(provider_id, agent_id) -> agents`: two
-- checks per inserted row (one `SELECT ... FOR KEY SHARE` each), and nothing tied the two together. Now
-- `(provider_id, pop_id, agent_id) -> agents (provider_id, pop_id, id)`: one check per row, and a command can
-- no longer name a POP other than its agent's. The POP is still held: agents reference their POP, so a POP
-- with agents cannot be deleted, nor an agent with commands (as before).
--
-- Measured on a 6,250-row fan-out insert in a rolled-back transaction (the four per-row foreign-key checks were
-- about 45 % of its time): 228-480 ms before, 204-337 ms after, in the same sessions (docs/BENCHMARKS.md).
-- Agents never change POP (no statement updates `agents.pop_id`).

ALTER TABLE agents ADD CONSTRAINT agents_provider_pop_id_key UNIQUE (provider_id, pop_id, id);
ALTER TABLE commands ADD CONSTRAINT commands_agent_pop_fkey
    FOREIGN KEY (provider_id, pop_id, agent_id) REFERENCES agents (provider_id, pop_id, id) NOT VALID;
ALTER TABLE commands VALIDATE CONSTRAINT commands_agent_pop_fkey;
ALTER TABLE commands DROP CONSTRAINT commands_provider_id_pop_id_fkey;
ALTER TABLE commands DROP CONSTRAINT commands_provider_id_agent_id_fkey;
