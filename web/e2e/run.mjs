// End-to-end test of the console in headless Chromium against a real control plane and PostgreSQL.
//
// It creates a database of its own on OCTOISP_TEST_PG, applies the migrations, creates a provider, two POPs, a
// user and devices, starts `octoisp-controlplane serve --roles api` serving web/dist, and drives Chromium
// (Debian's /usr/bin/chromium through playwright-core): log in, real counts on the dashboard, English, device
// search and detail, a live event (an alert_events row + pg_notify, as the alert engine does, after a new
// device) refreshing the dashboard without reload, the server stopped (stale banner over the last data) and
// started again (live again); the device graphs over seeded samples and rollups (resolution follows the range,
// drag-to-zoom), the provider's bandwidth, alerts (acknowledge, rule editor with inline errors, silence,
// maintenance window), a notification channel, an MTR run from a POP on a real enrolled agent (hops drawn from its
// progress), reports, TR-069, the agent configuration, and a Viewer who sees no action buttons and gets 403 from
// the API.
// Screenshots go to web/e2e/artifacts/.
//
// Environment: OCTOISP_TEST_PG (admin URL, required), OCTOISP_TEST_REDIS (default redis://127.0.0.1:6379),
// OCTOISP_CP_BIN (default $CARGO_TARGET_DIR/debug/octoisp-controlplane), OCTOISP_AGENT_BIN (default
// $CARGO_TARGET_DIR/debug/octoisp-agent), CHROMIUM (default /usr/bin/chromium).
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, rmSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';

const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

const here = dirname(fileURLToPath(import.meta.url));
const webDir = join(here, '..');
const dist = join(webDir, 'dist');
const artifacts = join(here, 'artifacts');
const adminBase = process.env.OCTOISP_TEST_PG;
if (!adminBase) { console.error('OCTOISP_TEST_PG is required (admin URL of a PostgreSQL)'); process.exit(2); }
const redis = process.env.OCTOISP_TEST_REDIS ?? 'redis://127.0.0.1:6379';
const targetDir = process.env.CARGO_TARGET_DIR ?? '/var/cache/octoisp-target';
const cpBin = process.env.OCTOISP_CP_BIN ?? join(targetDir, 'debug', 'octoisp-controlplane');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

let passed = 0, failed = 0;
const failures = [];
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`  ok   ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    failed++;
    failures.push(name);
    console.log(`  FAIL ${name}: ${err?.stack ?? err}`);
    throw err;
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on('error', reject);
  });
}

const dbName = 'octoisp_e2e_' + randomBytes(4).toString('hex');
const url = new URL(adminBase);
const adminUrl = (db) => { const u = new URL(adminBase); u.pathname = '/' + db; return u.toString(); };
const appUrl = (() => { const u = new URL(adminBase); u.username = 'octoisp_app'; u.password = ''; u.pathname = '/' + dbName; return u.toString(); })();
const psql = (db, sql) => execFileSync('psql', [adminUrl(db), '-XqtA', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8' }).trim();

const work = mkdtempSync(join(tmpdir(), 'octoisp-e2e-'));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const config = join(work, 'controlplane.toml');
writeFileSync(config, `data_dir = "${join(work, 'data')}"

[database]
url = "${appUrl}"
admin_url = "${adminUrl(dbName)}"

[http]
listen = "127.0.0.1:${port}"
web_dir = "${dist}"

[api]
redis_url = "${redis}"
redis_prefix = "octoisp-e2e-${randomBytes(4).toString('hex')}"

[queue]
redis_url = "${redis}"
prefix = "octoisp-e2e-q-${randomBytes(4).toString('hex')}"

[auth]
jwt_secret = "${randomBytes(32).toString('hex')}"
`);
const env = { ...process.env, OCTOISP_CP_CONFIG: config, RUST_LOG: process.env.RUST_LOG ?? 'warn' };
const cp = (...args) => execFileSync(cpBin, args, { env, encoding: 'utf8' }).trim();

let server = null;
function startServer() {
  const log = openSync(join(work, 'controlplane.log'), 'a');
  server = spawn(cpBin, ['serve', '--roles', 'api'], { env, stdio: ['ignore', log, log] });
}
async function waitReady() {
  for (let i = 0; i < 150; i++) {
    try { if ((await fetch(base + '/readyz')).ok) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('the control plane did not become ready; see ' + join(work, 'controlplane.log'));
}
async function stopServer() {
  if (!server) return;
  const s = server;
  server = null;
  const done = new Promise((r) => s.once('exit', r));
  s.kill('SIGTERM');
  await Promise.race([done, new Promise((r) => setTimeout(r, 20000))]);
  if (s.exitCode === null) s.kill('SIGKILL');
}

// The agent side, for the MTR step only: a second control plane instance (ingest: the agent's QUIC
// connection; workers: the command dispatcher) on the same database and queue, with alerts and notifications
// off so that nothing else changes the seeded data, and a real agent enrolled in POP Norte.
const agentBin = process.env.OCTOISP_AGENT_BIN ?? join(targetDir, 'debug', 'octoisp-agent');
let workers = null, agent = null;
async function startAgentSide() {
  const httpPort = await freePort();
  const quic = `127.0.0.1:${await freePort()}`;
  const config2 = join(work, 'controlplane-workers.toml');
  writeFileSync(config2, readFileSync(config, 'utf8').replace(`listen = "127.0.0.1:${port}"`, `listen = "127.0.0.1:${httpPort}"`) + `
[ingest]
listen = "${quic}"

[alerts]
enabled = false

[notify]
enabled = false
`);
  const env2 = { ...env, OCTOISP_CP_CONFIG: config2 };
  const wlog = openSync(join(work, 'controlplane-workers.log'), 'a');
  workers = spawn(cpBin, ['serve', '--roles', 'ingest,workers'], { env: env2, stdio: ['ignore', wlog, wlog] });
  for (let i = 0; ; i++) {
    try { if ((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).ok) break; } catch { /* not yet */ }
    if (i > 150) throw new Error('the second control plane did not become ready; see ' + join(work, 'controlplane-workers.log'));
    await new Promise((r) => setTimeout(r, 200));
  }
  const token = cp('pop', 'enroll-token', '--provider', 'e2e', '--pop', 'norte', '--ttl-secs', '600').split('\n').pop().trim();
  const agentConfig = join(work, 'agent.toml');
  writeFileSync(agentConfig, `state_dir = "${join(work, 'agent-state')}"
[uplink]
server = "${quic}"
backoff_min_ms = 100
backoff_max_ms = 1000
`);
  execFileSync(agentBin, ['--config', agentConfig, 'enroll', '--server', quic, '--token', token], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  agent = spawn(agentBin, ['--config', agentConfig, 'run'], { stdio: ['ignore', 'ignore', openSync(join(work, 'agent.log'), 'a')] });
}
async function stopProcess(p) {
  if (!p || p.exitCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await Promise.race([done, new Promise((r) => setTimeout(r, 15000))]);
  if (p.exitCode === null) p.kill('SIGKILL');
}
async function stopAgentSide() {
  await stopProcess(agent);
  await stopProcess(workers);
  agent = null;
  workers = null;
}

// After a failure the work directory is removed: its logs are printed first (their last lines), with the
// commands table, so that a failure on a machine nobody can log in to still says what happened.
function printLogs() {
  for (const name of ['controlplane.log', 'controlplane-workers.log', 'agent.log']) {
    let text = '';
    try { text = readFileSync(join(work, name), 'utf8'); } catch { continue; }
    const lines = text.trimEnd().split('\n').slice(-60);
    console.log(`--- last ${lines.length} lines of ${name} ---\n${lines.join('\n')}`);
  }
  try {
    console.log('--- commands ---\n' + psql(dbName, `SELECT name, status, pop_id, created_at, started_at, finished_at, error FROM commands ORDER BY created_at`));
  } catch (err) { console.log('commands table not readable: ' + err.message); }
}

let browser = null;
async function cleanup() {
  try { await browser?.close(); } catch { /* ignore */ }
  await stopAgentSide();
  await stopServer();
  try { psql(url.pathname.slice(1) || 'postgres', `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`); } catch { /* ignore */ }
  rmSync(work, { recursive: true, force: true });
}

const EMAIL = 'noc@e2e.example';
const VIEWER = 'viewer@e2e.example';
const PASSWORD = 'e2e-' + randomBytes(9).toString('hex');
let provider, pops, anaId;

// Series of 'Cliente Ana' (cpe-1): traffic of interface pon0 and CPU. Raw samples every minute over the last
// two hours (a 1 h graph is drawn from them), hourly rollups over the last 30 days (a 30-day graph uses them),
// and 5-minute rollups over the last day (the dashboard's provider and POP bandwidth). A firing alert of a rule
// 'CPU high' on the device, for the alert steps.
function seedMetricsAndAlerts() {
  anaId = psql(dbName, "SELECT id FROM devices WHERE device_key = 'cpe-1'");
  const agent = psql(dbName, `SELECT id FROM agents WHERE pop_id = '${pops[0]}'`);
  const ids = psql(dbName, `INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, labels, kind) VALUES
    ('${provider}', '${agent}', 1, '${anaId}', 'if.in_bps', '{"ifIndex": "1", "ifName": "pon0"}', 'gauge'),
    ('${provider}', '${agent}', 2, '${anaId}', 'if.out_bps', '{"ifIndex": "1", "ifName": "pon0"}', 'gauge'),
    ('${provider}', '${agent}', 3, '${anaId}', 'cpu.load_percent', '{}', 'gauge') RETURNING id`).split('\n');
  psql(dbName, "SELECT count(*) FROM octoisp_sample_partitions(ARRAY[(now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date - 1])");
  psql(dbName, "SELECT count(*) FROM octoisp_rollup_partitions('1h', ARRAY(SELECT generate_series(now() - interval '32 days', now(), interval '1 day')))");
  psql(dbName, "SELECT count(*) FROM octoisp_rollup_partitions('5m', ARRAY(SELECT generate_series(now() - interval '2 days', now(), interval '1 day')))");
  // in: 40-60 Mbit/s, out: 8-12 Mbit/s, CPU: 20-40 %.
  const shape = (i, base, amp, t) => `${base} + ${amp} * sin(extract(epoch from ${t}) / 3600.0 + ${i})`;
  ids.forEach((id, i) => {
    const [base, amp] = [[50e6, 10e6], [10e6, 2e6], [30, 10]][i];
    // The sample partitions check the writer's tenant (app.provider_id), as the ingest sets it.
    psql(dbName, `SET app.provider_id = '${provider}'; INSERT INTO samples (provider_id, series_id, ts, value)
      SELECT '${provider}', ${id}, t, ${shape(i, base, amp, 't')}
      FROM generate_series(date_trunc('minute', now()) - interval '119 minutes', date_trunc('minute', now()), interval '1 minute') AS t`);
    psql(dbName, `INSERT INTO rollup_1h (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95)
      SELECT '${provider}', ${id}, b, v * 0.8, v * 1.2, v * 60, 60, v, b + interval '59 minutes', v * 1.1
      FROM (SELECT b, ${shape(i, base, amp, 'b')} AS v FROM generate_series(date_trunc('hour', now()) - interval '30 days', date_trunc('hour', now()) - interval '1 hour', interval '1 hour') AS b) x`);
    psql(dbName, `INSERT INTO rollup_5m (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95)
      SELECT '${provider}', ${id}, b, v * 0.9, v * 1.1, v * 5, 5, v, b + interval '4 minutes', v * 1.05
      FROM (SELECT b, ${shape(i, base, amp, 'b')} AS v FROM generate_series(octoisp_rollup_bucket('5m', now()) - interval '1 day', octoisp_rollup_bucket('5m', now()), interval '5 minutes') AS b) x`);
  });
  seedInterfaces(agent);
  const rule = psql(dbName, `INSERT INTO alert_rules (provider_id, rule_key, name, metric, kind, op, threshold)
    VALUES ('${provider}', 'cpu', 'CPU high', 'cpu.load_percent', 'threshold', '>', 90) RETURNING id`);
  psql(dbName, `INSERT INTO alerts (provider_id, rule_id, target_key, target, device_id, pop_id, series_id, state, severity, value, occurrences, started_at, changed_ts)
    VALUES ('${provider}', '${rule}', 'series:${ids[2]}', 'Cliente Ana', '${anaId}', '${pops[0]}', ${ids[2]}, 'firing', 'critical', 97.5, 3, now() - interval '20 minutes', now())`);
}

// Interfaces of POP Centro for the interface monitoring page: Ana's pon0 (the traffic above, ~50 Mbit/s in, of
// 1 Gbit/s), Bruno's eth0 (900 Mbit/s in, 100 out of 1 Gbit/s: 90 % used, 5 errors/s) and eth1 (down, no
// traffic). One sample each, a minute ago: the page shows the newest value of the last 15 minutes.
function seedInterfaces(agent) {
  const bruno = psql(dbName, "SELECT id FROM devices WHERE device_key = 'cpe-2'");
  const rows = [
    [anaId, '1', 'pon0', 'if.speed_bps', 1e9], [anaId, '1', 'pon0', 'if.oper_status', 1],
    [bruno, '1', 'eth0', 'if.in_bps', 9e8], [bruno, '1', 'eth0', 'if.out_bps', 1e8], [bruno, '1', 'eth0', 'if.speed_bps', 1e9],
    [bruno, '1', 'eth0', 'if.in_errors_per_s', 5], [bruno, '1', 'eth0', 'if.oper_status', 1],
    [bruno, '2', 'eth1', 'if.in_bps', 0], [bruno, '2', 'eth1', 'if.out_bps', 0], [bruno, '2', 'eth1', 'if.speed_bps', 1e9],
    [bruno, '2', 'eth1', 'if.oper_status', 2], [bruno, '2', 'eth1', 'if.admin_status', 1],
  ];
  const values = rows.map(([dev, idx, name, metric], i) =>
    `('${provider}', '${agent}', ${100 + i}, '${dev}', '${metric}', '{"ifIndex": "${idx}", "ifName": "${name}"}', 'gauge')`).join(',\n');
  const ids = psql(dbName, `INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, labels, kind) VALUES ${values} RETURNING id`).split('\n');
  psql(dbName, `SET app.provider_id = '${provider}'; INSERT INTO samples (provider_id, series_id, ts, value) VALUES
    ${ids.map((id, i) => `('${provider}', ${id}, now() - interval '1 minute', ${rows[i][4]})`).join(', ')}`);
}

// A GPON ONT on POP Centro known through TR-069: a full read two hours ago (5,000+ parameters: its hosts table
// makes the tree large, as real ones are), an Inform's changes since (the optical power dropped), and an
// accepted write of the SSID (which makes it known writable), as the ingest stores them in tr069_results.
const ONT_KEY = 'cwmp:00259E-EG8145V5-E2E0000000001';
const IGD = 'InternetGatewayDevice.';
const WAN = IGD + 'WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.';
const SSID = IGD + 'LANDevice.1.WLANConfiguration.1.SSID';
const RXP = IGD + 'WANDevice.1.X_GponInterafceConfig.RXPower';
let ontId;
const psqlIn = (db, sql) => execFileSync('psql', [adminUrl(db), '-XqtA', '-v', 'ON_ERROR_STOP=1'], { input: sql, encoding: 'utf8' }).trim();
function seedTr069() {
  ontId = psql(dbName, `INSERT INTO devices (provider_id, pop_id, device_key, name, vendor, model, serial_number, oui, product_class, firmware, last_seen)
    VALUES ('${provider}', '${pops[0]}', '${ONT_KEY}', 'Cliente Elisa', 'Huawei', 'EG8145V5', 'E2E0000000001', '00259E', 'EG8145V5', 'V5R020C10S115', now()) RETURNING id`);
  const agent = psql(dbName, `SELECT id FROM agents WHERE pop_id = '${pops[0]}'`);
  const full = {
    [WAN + 'ConnectionStatus']: 'Connected', [WAN + 'ExternalIPAddress']: '198.51.100.77', [WAN + 'Username']: 'elisa@provedor',
    [WAN + 'ConnectionType']: 'IP_Routed', [SSID]: 'Elisa', [IGD + 'LANDevice.1.WLANConfiguration.5.SSID']: 'Elisa-5G',
    [IGD + 'LANDevice.1.WLANConfiguration.1.Channel']: '6', [IGD + 'LANDevice.1.WLANConfiguration.1.TotalAssociations']: '3',
    [RXP]: '-19.5', [IGD + 'WANDevice.1.X_GponInterafceConfig.TXPower']: '2.3',
    [IGD + 'DeviceInfo.SoftwareVersion']: 'V5R020C10S115', [IGD + 'DeviceInfo.UpTime']: '86400',
    [IGD + 'ManagementServer.PeriodicInformInterval']: '300',
  };
  const insert = (ago, kind, params) => psqlIn(dbName, `INSERT INTO tr069_results (provider_id, id, agent_id, device_id, ts, kind, ok, parameters)
    VALUES ('${provider}', gen_random_uuid(), '${agent}', '${ontId}', now() - interval '${ago}', '${kind}', true,
      $json$${JSON.stringify(params)}$json$::jsonb || (SELECT coalesce(jsonb_object_agg('${IGD}LANDevice.1.Hosts.Host.' || i || '.IPAddress', '192.168.' || (i / 250) || '.' || (i % 250 + 2)), '{}')
        FROM generate_series(1, ${kind === 'get' ? 5000 : 0}) AS i))`);
  insert('2 hours', 'get', full);
  insert('30 minutes', 'ParameterChanges', { [RXP]: '-26.2' });
  insert('20 minutes', 'set', { [SSID]: 'Elisa' });
}

/** Serious or critical axe-core violations on the current page, light and dark. */
async function axeViolations(page, label) {
  const found = [];
  for (const theme of ['light', 'dark']) {
    await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
    if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ path: axePath });
    const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
    for (const v of violations) found.push(`${label} ${theme}: ${v}`);
  }
  await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });
  return found;
}

/** Client-side navigation (no reload), as a click on a link does. */
async function go(page, path) {
  await page.evaluate((p) => { window.history.pushState(null, '', p); window.dispatchEvent(new PopStateEvent('popstate')); }, path);
}

try {
  mkdirSync(artifacts, { recursive: true });
  console.log(`e2e: database ${dbName}, control plane ${base}, console ${dist}`);
  await step('set up PostgreSQL and seed the tenant', async () => {
    psql(url.pathname.slice(1) || 'postgres', `CREATE DATABASE ${dbName}`);
    cp('migrate');
    cp('provider', 'create', '--slug', 'e2e', '--name', 'Provedor E2E', '--tier', 'small');
    cp('pop', 'create', '--provider', 'e2e', '--slug', 'centro', '--name', 'POP Centro');
    cp('pop', 'create', '--provider', 'e2e', '--slug', 'norte', '--name', 'POP Norte');
    execFileSync(cpBin, ['user', 'create', '--provider', 'e2e', '--email', EMAIL, '--name', 'NOC E2E', '--role', 'Provider Admin'],
      { env: { ...env, OCTOISP_USER_PASSWORD: PASSWORD }, encoding: 'utf8' });
    provider = psql(dbName, "SELECT id FROM providers WHERE slug = 'e2e'");
    pops = psql(dbName, `SELECT id FROM pops WHERE provider_id = '${provider}' ORDER BY slug`).split('\n');
    // Five devices: three seen just now (online), two seen two days ago (offline); one agent per POP.
    psql(dbName, `INSERT INTO devices (provider_id, pop_id, device_key, name, vendor, model, serial_number, mgmt_ip, last_seen) VALUES
      ('${provider}', '${pops[0]}', 'cpe-1', 'Cliente Ana', 'Huawei', 'HG8245', 'E2E-SERIAL-0042', '10.9.0.42', now()),
      ('${provider}', '${pops[0]}', 'cpe-2', 'Cliente Bruno', 'ZTE', 'F670L', 'ZTEG00000002', '10.9.0.2', now()),
      ('${provider}', '${pops[1]}', 'cpe-3', 'Cliente Carla', 'ZTE', 'F670L', 'ZTEG00000003', '10.9.1.3', now()),
      ('${provider}', '${pops[1]}', 'cpe-4', 'Cliente Davi', 'TP-Link', 'EX220', 'TPL00000004', '10.9.1.4', now() - interval '2 days'),
      ('${provider}', '${pops[1]}', 'sw-1', 'Switch Norte', 'MikroTik', 'CRS326', 'MKT00000005', '10.9.1.1', now() - interval '2 days')`);
    psql(dbName, `INSERT INTO agents (id, provider_id, pop_id, hostname, version, cert_fingerprint, last_seen) VALUES
      (gen_random_uuid(), '${provider}', '${pops[0]}', 'agente-centro', '0.1.0', '${'a'.repeat(64)}', now() - interval '5 minutes'),
      (gen_random_uuid(), '${provider}', '${pops[1]}', 'agente-norte', '0.1.0', '${'b'.repeat(64)}', now() - interval '1 hour')`);
    seedMetricsAndAlerts();
    execFileSync(cpBin, ['user', 'create', '--provider', 'e2e', '--email', VIEWER, '--name', 'Viewer E2E', '--role', 'Viewer'],
      { env: { ...env, OCTOISP_USER_PASSWORD: PASSWORD }, encoding: 'utf8' });
    startServer();
    await waitReady();
  });

  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'pt-BR', serviceWorkers: 'allow' });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const text = (testid) => page.getByTestId(testid).first().innerText();

  await step('the manifest makes the console installable', async () => {
    const m = await (await fetch(base + '/manifest.webmanifest')).json();
    assert(m.display === 'standalone' && m.start_url === '/', 'manifest display/start_url');
    for (const size of ['192x192', '512x512']) {
      const icon = m.icons.find((i) => i.sizes === size && i.type === 'image/png');
      assert(icon, 'icon ' + size);
      const r = await fetch(base + icon.src);
      assert(r.ok && r.headers.get('content-type') === 'image/png', 'icon served ' + size);
    }
  });

  await step('log in and see the dashboard with the real counts (pt-BR)', async () => {
    await page.goto(base + '/');
    await page.getByLabel('E-mail').fill(EMAIL);
    await page.getByLabel('Senha').fill(PASSWORD);
    await page.getByRole('button', { name: 'Entrar' }).click();
    await page.getByRole('heading', { name: 'Painel' }).waitFor();
    await page.getByTestId('count-devices').waitFor();
    assert((await text('count-devices')).includes('5'), 'devices count: ' + (await text('count-devices')));
    assert((await text('count-online')) === '3', 'online: ' + (await text('count-online')));
    assert((await text('count-offline')) === '2', 'offline: ' + (await text('count-offline')));
    assert((await text('count-pops')).includes('2'), 'pops: ' + (await text('count-pops')));
    assert((await text('card-agents')).includes('2'), 'agents');
    // The agent list is its own request, answered after the summary's counts: wait for it, not for the counts.
    await page.getByTestId('dash-agent').nth(1).waitFor();
    const agents = await page.getByTestId('dash-agent').allInnerTexts();
    assert(agents.some((a) => a.includes('agente-centro')) && agents.some((a) => a.includes('agente-norte')), 'agents listed: ' + agents);
    await page.getByTestId('dash-audit').waitFor();
  });

  await step('the service worker is registered and controls the page', async () => {
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
    // Reload under the worker's control so that the data seen goes through it (and is kept).
    await page.reload();
    await page.getByTestId('count-devices').waitFor();
    await page.getByTestId('live-status').and(page.locator('[data-status="live"]')).waitFor();
  });

  await step('a live event (alert engine notify) refreshes the dashboard without reload', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    psql(dbName, `INSERT INTO devices (provider_id, pop_id, device_key, name, last_seen) VALUES ('${provider}', '${pops[0]}', 'cpe-6', 'Cliente Nova', now())`);
    psql(dbName, `INSERT INTO alert_events (provider_id, alert_id, kind, severity, group_key, rule_name, target)
      VALUES ('${provider}', gen_random_uuid(), 'firing', 'critical', 'alert:e2e', 'CPE offline', 'Cliente Davi');
      SELECT pg_notify('octoisp_alert_events', '${provider}')`);
    await page.waitForFunction(() => document.querySelector('[data-testid="count-devices"]')?.textContent?.includes('6'));
    assert((await text('count-online')) === '4', 'online after the event: ' + (await text('count-online')));
    assert(!(await text('alert-events')).includes('Nenhum'), 'alert event shown: ' + (await text('alert-events')));
    assert(await page.evaluate(() => window.__noReload === true), 'the page was reloaded');
  });

  await step('switch the language to English', async () => {
    await page.getByTestId('lang').selectOption('en');
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    assert((await page.getByRole('link', { name: 'Devices' }).count()) === 1, 'nav in English');
    assert((await page.evaluate(() => document.documentElement.lang)) === 'en', 'html lang');
  });

  await step('help panel and guided tour', async () => {
    await page.getByTestId('help').click();
    const help = await text('help-panel');
    assert(help.includes('What to do'), 'help panel: ' + help);
    await page.getByRole('button', { name: 'Take the guided tour' }).click();
    await page.getByTestId('tour').waitFor();
    assert((await text('tour')).includes('Step 1 of'), 'tour step');
    await page.getByRole('button', { name: 'Next' }).click();
    assert((await text('tour')).includes('Step 2 of'), 'tour step 2');
    while (await page.getByRole('button', { name: 'Next' }).count()) await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('button', { name: 'Done' }).click();
  });

  await step('search a device and open it', async () => {
    await page.getByRole('link', { name: 'Devices' }).click();
    await page.getByTestId('device-row').first().waitFor();
    assert((await page.getByTestId('device-row').count()) === 6, 'all six devices listed');
    await page.getByTestId('device-q').fill('E2E-SERIAL');
    await page.getByTestId('device-search').click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="device-row"]').length === 1);
    const row = await page.getByTestId('device-row').innerText();
    assert(row.includes('Cliente Ana') && row.includes('E2E-SERIAL-0042'), 'row: ' + row);
    assert(page.url().includes('q=E2E-SERIAL'), 'filters in the URL');
    await page.getByTestId('device-row').click();
    await page.getByTestId('device-title').waitFor();
    assert((await text('device-title')).includes('Cliente Ana'), 'detail');
    assert((await page.locator('main').innerText()).includes('HG8245'), 'model in detail');
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.getByTestId('count-devices').waitFor();
    await page.getByTestId('live-status').and(page.locator('[data-status="live"]')).waitFor();
  });

  await step('device graphs: seeded samples drawn, the resolution follows the range, drag-to-zoom', async () => {
    await go(page, `/devices/${anaId}?range=1h`);
    const traffic = page.getByTestId('graph-traffic');
    await traffic.waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="graph-traffic"] [data-testid="chart"]')?.dataset.points) > 0);
    // 1 h: raw samples (two series × ~60 minutes).
    const raw = Number(await traffic.getByTestId('chart').getAttribute('data-points'));
    assert(raw >= 100 && raw <= 124, 'raw points over 1 h: ' + raw);
    assert((await traffic.getByTestId('graph-resolution').innerText()).includes('raw samples'), 'raw resolution shown');
    assert((await traffic.locator('svg path').count()) >= 2, 'in and out lines drawn');
    assert((await page.getByTestId('graph-cpu').count()) === 1, 'CPU graph');
    // 30 days: hourly rollups, with min/max bands.
    await page.getByTestId('range-30d').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="graph-traffic"] [data-testid="graph-resolution"]')?.textContent?.includes('1 hour'));
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="graph-traffic"] [data-testid="chart"]')?.dataset.points) > 1000);
    assert(page.url().includes('range=30d'), 'range in the URL: ' + page.url());
    assert((await traffic.innerText()).includes('95th percentile'), 'bands explained');
    await page.screenshot({ path: join(artifacts, 'device-graphs-desktop-light.png'), fullPage: true });
    // Drag across the middle of the chart: a custom range, shown, and in the URL.
    const box = await traffic.locator('svg').boundingBox();
    await page.mouse.move(box.x + box.width * 0.45, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
    await page.getByTestId('range-shown').waitFor();
    assert(/range=\d+-\d+/.test(page.url()), 'zoomed range in the URL: ' + page.url());
    await page.waitForFunction(() => { const n = Number(document.querySelector('[data-testid="graph-traffic"] [data-testid="chart"]')?.dataset.points); return n > 0 && n < 600; });
  });

  await step('the dashboard shows the provider bandwidth and each POP', async () => {
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.getByTestId('dash-bandwidth').waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="bandwidth-chart"]')?.dataset.points) > 100)
      .catch(async (e) => { throw new Error(e.message + '\ncard: ' + (await text('dash-bandwidth')) + '\npoints: ' + (await page.getByTestId('bandwidth-chart').getAttribute('data-points').catch(() => 'none'))); });
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="pop-bandwidth"]').length === 2);
    const rows = await page.getByTestId('pop-bandwidth').allInnerTexts();
    assert(rows.length === 2 && rows[0].includes('POP Centro') && /Mbit\/s/.test(rows[0]), 'POP bandwidth: ' + rows);
  });

  await step('an alert is acknowledged and shows as acknowledged', async () => {
    await page.getByRole('link', { name: 'Alerts' }).click();
    const row = page.getByTestId('alert-row').filter({ hasText: 'CPU high' });
    await row.waitFor();
    assert((await row.innerText()).includes('Cliente Ana') && (await row.innerText()).includes('critical'), 'alert row: ' + (await row.innerText()));
    await row.getByTestId('alert-ack').click();
    await row.getByTestId('alert-acked').waitFor();
    assert((await row.getByTestId('alert-ack').count()) === 0, 'no second acknowledge');
    await page.getByTestId('tab-history').click();
    await page.getByTestId('history-row').filter({ hasText: 'acknowledged' }).first().waitFor();
  });

  await step('a rule is created, with inline errors first', async () => {
    await page.getByTestId('tab-rules').click();
    await page.getByTestId('rule-new').click();
    await page.getByLabel('Name', { exact: true }).fill('Perda alta');
    await page.getByLabel('Key (overrides rules with the same key)').fill('Perda Alta');
    await page.getByLabel('Metric').fill('ping.loss_ratio');
    await page.getByTestId('rule-save').click();
    await page.getByTestId('err-rule-rule_key').waitFor();
    await page.getByTestId('err-rule-threshold').waitFor();
    await page.getByLabel('Key (overrides rules with the same key)').fill('perda-alta');
    await page.getByLabel('Fire threshold').fill('0,05');
    await page.getByTestId('rule-save').click();
    const row = page.getByTestId('rule-row').filter({ hasText: 'Perda alta' });
    await row.waitFor();
    assert((await row.innerText()).includes('ping.loss_ratio > 0.05'), 'rule row: ' + (await row.innerText()));
    assert(psql(dbName, "SELECT threshold FROM alert_rules WHERE rule_key = 'perda-alta'") === '0.05', 'stored threshold');
  });

  await step('rule preview: what the rule would have fired on the stored samples, before saving', async () => {
    // 'CPU high' (> 90) never fired on Ana's seeded CPU (20-40 %); at > 24 it would have (the last two hours of
    // raw samples always reach 24.6 % or more).
    await page.getByTestId('rule-row').filter({ hasText: 'CPU high' }).getByTestId('rule-edit').click();
    await page.getByTestId('rule-preview-run').click();
    await page.getByTestId('rule-preview-summary').waitFor();
    assert((await text('rule-preview-summary')).startsWith('0 device(s)'), 'at > 90: ' + (await text('rule-preview-summary')));
    await page.getByLabel('Fire threshold').fill('24');
    await page.getByTestId('rule-preview-run').click();
    await page.getByTestId('rule-preview-summary').filter({ hasText: '1 device(s) would have fired' }).waitFor();
    const row = page.getByTestId('rule-preview-row').first();
    assert((await row.innerText()).includes('Cliente Ana'), 'preview row: ' + (await row.innerText()));
    assert((await row.locator('rect.timeline-bar').count()) >= 1, 'a bar on the timeline');
    assert(psql(dbName, "SELECT threshold FROM alert_rules WHERE rule_key = 'cpu'") === '90', 'the preview saved nothing');
    // A bad value: the field's error, no request.
    await page.getByLabel('Fire threshold').fill('muito');
    await page.getByTestId('rule-preview-run').click();
    await page.getByTestId('err-rule-threshold').waitFor();
    await page.getByLabel('Fire threshold').fill('24');
    await page.getByTestId('rule-preview-run').click();
    await page.getByTestId('rule-preview-row').first().waitFor();
    const found = await axeViolations(page, 'rule preview');
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));
    for (const [size, vp] of [['desktop', { width: 1366, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
      await page.setViewportSize(vp);
      for (const theme of ['light', 'dark']) {
        await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
        await page.getByTestId('rule-preview').screenshot({ path: join(artifacts, `rule-preview-${size}-${theme}.png`) });
      }
    }
    await page.setViewportSize({ width: 1366, height: 900 });
    await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });
    await page.getByTestId('rule-form').getByRole('button', { name: 'Cancel' }).click();
  });

  await step('a silence and a maintenance window are created', async () => {
    await page.getByTestId('tab-silences').click();
    await page.getByLabel('Reason').fill('Troca de ONU agendada');
    await page.getByTestId('silence-create').click();
    await page.getByTestId('silence-row').filter({ hasText: 'Troca de ONU agendada' }).waitFor();
    await page.getByTestId('tab-maintenance').click();
    await page.getByLabel('Which').selectOption({ label: 'POP Norte' });
    await page.getByLabel('Reason').fill('Janela de fibra');
    await page.getByTestId('maint-create').click();
    const row = page.getByTestId('maint-row').filter({ hasText: 'Janela de fibra' });
    await row.waitFor();
    assert((await row.innerText()).includes('POP Norte'), 'maintenance row: ' + (await row.innerText()));
  });

  await step('a notification channel is created and tested', async () => {
    await page.getByRole('link', { name: 'Notifications' }).click();
    await page.getByTestId('push-card').waitFor();
    await page.getByTestId('channel-new').click();
    await page.getByLabel('Name', { exact: true }).fill('NOC e-mail');
    await page.getByLabel('Recipients (comma separated)').fill('noc@provedor.example, not an address');
    await page.getByTestId('channel-save').click();
    await page.getByTestId('err-ch-to').waitFor();
    await page.getByLabel('Recipients (comma separated)').fill('noc@provedor.example, plantao@provedor.example');
    await page.getByTestId('channel-save').click();
    const row = page.getByTestId('channel-row').filter({ hasText: 'NOC e-mail' });
    await row.waitFor();
    assert((await row.innerText()).includes('plantao@provedor.example'), 'channel row: ' + (await row.innerText()));
    await row.getByTestId('channel-test').click();
    await row.getByText('Test message queued').waitFor();
  });

  await step('diagnostics: the form checks its fields; the page follows whether the commands API exists', async () => {
    const status = (await fetch(base + '/api/v1/commands')).status;
    await page.getByRole('link', { name: 'Diagnostics' }).click();
    await page.getByTestId('diag-form').waitFor();
    await page.getByLabel('Target (IP)').fill('not-an-ip');
    await page.getByTestId('diag-run').click();
    await page.getByTestId('err-diag-target').waitFor();
    await page.getByTestId('diag-tool').selectOption('portscan');
    await page.getByLabel('Host').fill('100.64.0.1');
    await page.getByLabel('Ports').fill('22, 99999');
    await page.getByTestId('diag-run').click();
    await page.getByTestId('err-diag-ports').waitFor();
    // Without the commands API (404), running says so; with it, the run is queued.
    await page.getByLabel('Ports').fill('22, 80');
    await page.getByTestId('diag-run').click();
    if (status === 404) await page.getByTestId('not-available').first().waitFor();
    else await page.getByTestId('diag-result').getByTestId('run-status').waitFor();
    await page.screenshot({ path: join(artifacts, 'diagnostics-desktop-light.png'), fullPage: true });
  });

  await step('diagnostics: an MTR from POP Norte runs on its real agent and the hops appear', async () => {
    try {
      await startAgentSide();
      // A fresh page (the port scan of the step before still waits for POP Centro's agent).
      await page.getByRole('link', { name: 'Dashboard' }).click();
      await page.getByRole('link', { name: 'Diagnostics' }).click();
      await page.getByTestId('diag-form').waitFor();
      await page.locator('#diag-pop').selectOption({ label: 'POP Norte' });
      await page.getByTestId('diag-tool').selectOption('mtr');
      await page.locator('#diag-target').fill('127.0.0.1');
      await page.locator('#diag-cycles').fill('3');
      await page.getByTestId('diag-run').click();
      await page.getByTestId('hop-row').first().waitFor({ timeout: 60000 });
      await page.locator('[data-testid="diag-result"] [data-testid="run-status"][data-status="succeeded"]').waitFor({ timeout: 60000 });
      const hops = await page.getByTestId('hop-row').allInnerTexts();
      assert(hops.some((h) => h.includes('127.0.0.1')), 'hops: ' + hops);
      await page.getByTestId('mtr-graph').waitFor();
      const stored = psql(dbName, `SELECT status FROM commands WHERE name = 'mtr' AND pop_id = '${pops[1]}'`);
      assert(stored === 'succeeded', 'command row: ' + stored);
      await page.screenshot({ path: join(artifacts, 'diagnostics-mtr-desktop-light.png'), fullPage: true });
    } finally {
      // Later steps expect commands to stay queued: no agent, no dispatcher.
      await stopAgentSide();
    }
  });

  await step('reports: the traffic PDF is generated on the server and downloaded', async () => {
    await page.getByRole('link', { name: 'Reports' }).click();
    await page.getByTestId('report-form').waitFor();
    await page.getByTestId('report-kind').selectOption('traffic');
    await page.getByTestId('report-format-pdf').check();
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('report-download').click()]);
    assert(/^octoisp-traffic-.*\.pdf$/.test(download.suggestedFilename()), 'file name: ' + download.suggestedFilename());
    const pdf = readFileSync(await download.path());
    assert(pdf.subarray(0, 5).toString('latin1') === '%PDF-', 'not a PDF: ' + pdf.subarray(0, 16).toString('latin1'));
    assert(pdf.length > 3000, 'PDF of ' + pdf.length + ' bytes');
    await page.getByTestId('report-status').getByText('Report downloaded').waitFor();
    await page.screenshot({ path: join(artifacts, 'reports-desktop-light.png'), fullPage: true });
  });

  await step('accessibility of the new pages: device graphs, alerts, notifications', async () => {
    const found = [];
    for (const [path, ready] of [[`/devices/${anaId}?range=24h`, 'graph-traffic'], ['/alerts?tab=active', 'alert-row'], ['/alerts?tab=rules', 'rule-row'], ['/notifications', 'channel-row']]) {
      await go(page, path);
      await page.getByTestId(ready).first().waitFor();
      found.push(...(await axeViolations(page, path)));
    }
    await page.screenshot({ path: join(artifacts, 'notifications-desktop-light.png'), fullPage: true });
    await go(page, '/alerts?tab=active');
    await page.getByTestId('alert-row').first().waitFor();
    for (const theme of ['light', 'dark']) {
      await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
      await page.screenshot({ path: join(artifacts, `alerts-desktop-${theme}.png`), fullPage: true });
    }
    await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.getByTestId('count-devices').waitFor();
  });

  await step('TR-069: summary with the optical level coloured, the tree, a search, a write queued as a task', async () => {
    seedTr069(); // a seventh device, online: the counts checked later include it
    await go(page, `/devices/${ontId}`);
    await page.getByTestId('open-tr069').click();
    await page.getByTestId('tr069-title').waitFor();
    const rx = page.getByTestId('optical-rx');
    await rx.waitFor();
    // -26.2 dBm: below the -25 dBm green edge, above the -27 dBm sensitivity: yellow, drawn in the warning colour.
    assert((await rx.getAttribute('data-level')) === 'yellow', 'rx level: ' + (await rx.getAttribute('data-level')));
    const colours = await rx.locator('.level').evaluate((el) => {
      const probe = document.createElement('span');
      probe.style.color = 'var(--warn)';
      document.body.append(probe);
      const warn = getComputedStyle(probe).color;
      probe.remove();
      return [getComputedStyle(el).color, warn];
    });
    assert(colours[0] === colours[1], 'rx drawn in the warning colour: ' + colours);
    assert((await rx.innerText()).includes('26.2') && (await rx.innerText()).includes('marginal'), 'rx text: ' + (await rx.innerText()));
    assert((await page.getByTestId('optical-tx').getAttribute('data-level')) === 'green', 'tx level');
    assert((await text('tr-wan-ip')) === '198.51.100.77', 'wan ip: ' + (await text('tr-wan-ip')));
    assert((await text('tr-wan')).includes('PPPoE') && (await text('tr-wan')).includes('elisa@provedor'), 'wan: ' + (await text('tr-wan')));
    assert((await text('tr-ssids')).includes('Elisa-5G'), 'ssids: ' + (await text('tr-ssids')));
    // Browse: the root's one object holds every parameter; its level lists the next objects.
    const root = page.getByTestId('tr-child').first();
    assert((await root.innerText()).includes('InternetGatewayDevice') && /5[,.]?01\d/.test(await root.innerText()), 'root child: ' + (await root.innerText()));
    await root.click();
    await page.getByTestId('tr-child').filter({ hasText: 'LANDevice' }).waitFor();
    // Search: a substring of the name finds the SSIDs; the optical power is read-only, the SSID was written before.
    await page.getByTestId('tr-search').fill('RXPower');
    const rxRow = page.locator(`[data-testid="param-row"][data-name="${RXP}"]`);
    await rxRow.waitFor();
    assert((await rxRow.innerText()).includes('read-only') && (await rxRow.getByTestId('param-edit').count()) === 0, 'rx row: ' + (await rxRow.innerText()));
    await page.getByTestId('tr-search').fill('WLANConfiguration.1.SSID');
    const row = page.locator(`[data-testid="param-row"][data-name="${SSID}"]`);
    await row.waitFor();
    assert((await row.innerText()).includes('writable'), 'ssid row: ' + (await row.innerText()));
    await row.getByTestId('param-edit').click();
    await row.getByTestId('param-input').fill('Elisa-Nova');
    await row.getByTestId('param-save').click();
    const task = page.getByTestId('tr-task');
    await task.getByTestId('task-status').waitFor();
    // The card fills in from GET /commands/{id} right after the 202.
    await task.getByText(`${SSID} = Elisa-Nova`).waitFor();
    await page.getByTestId('tr-task-row').filter({ hasText: 'Elisa-Nova' }).waitFor();
    const args = JSON.parse(psql(dbName, `SELECT args FROM commands WHERE name = 'tr069.set_params' AND device_id = '${ontId}'`));
    assert(args.device_key === ONT_KEY && args.values[0].name === SSID && args.values[0].value === 'Elisa-Nova', 'command args: ' + JSON.stringify(args));
    // Reboot asks first; cancelling sends nothing.
    await page.getByTestId('tr-reboot').click();
    await page.getByTestId('confirm').waitFor();
    await page.getByTestId('confirm').getByRole('button', { name: 'Cancel' }).click();
    assert(psql(dbName, `SELECT count(*) FROM commands WHERE name = 'tr069.reboot'`) === '0', 'no reboot sent');
    await page.getByTestId('tr-search').fill('');
    await page.getByTestId('tr-child').first().waitFor();
    await page.screenshot({ path: join(artifacts, 'tr069-desktop-light.png'), fullPage: true });
    const found = await axeViolations(page, 'tr069');
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));
  });

  await step("agent configuration: a POP's ping monitors edited in the form, saved as version 1 then 2", async () => {
    await go(page, '/pops');
    await page.getByTestId('pop-card').filter({ hasText: 'POP Centro' }).getByTestId('pop-agent-config').click();
    await page.getByTestId('agentcfg-version').waitFor();
    assert((await text('agentcfg-version')).includes('version 0'), 'no version yet: ' + (await text('agentcfg-version')));
    assert((await text('agentcfg-agents')).includes('agente-centro'), 'agents: ' + (await text('agentcfg-agents')));
    await page.getByTestId('agentcfg-add').click();
    await page.getByLabel('Name', { exact: true }).fill('gateway');
    await page.getByLabel('Targets (IPs)').fill('192.0.2.1');
    await page.getByTestId('agentcfg-save').click();
    await page.getByTestId('agentcfg-saved').waitFor();
    await page.waitForFunction(() => document.querySelector('[data-testid="agentcfg-version"]')?.textContent?.includes('version 1'));
    // A second monitor with a name for a target: refused beside the field, then fixed.
    await page.getByTestId('agentcfg-add').click();
    await page.getByLabel('Name', { exact: true }).nth(1).fill('dns');
    await page.getByLabel('Targets (IPs)').nth(1).fill('dns.example');
    await page.getByTestId('agentcfg-save').click();
    await page.getByTestId('err-m1-targets').waitFor();
    await page.getByLabel('Targets (IPs)').nth(1).fill('198.51.100.53');
    await page.getByTestId('agentcfg-comment').fill('DNS monitor');
    await page.getByTestId('agentcfg-save').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="agentcfg-version"]')?.textContent?.includes('version 2'));
    await page.getByTestId('agentcfg-history-row').nth(1).waitFor();
    const stored = JSON.parse(psql(dbName, `SELECT config FROM agent_configs WHERE pop_id = '${pops[0]}' AND version = 2`));
    assert(stored.monitors.ping.length === 2 && stored.monitors.ping[1].targets[0] === '198.51.100.53', 'version 2: ' + JSON.stringify(stored));
    // The JSON editor names the line of a syntax error.
    await page.getByTestId('agentcfg-tab-json').click();
    await page.getByTestId('agentcfg-json').fill('{\n  "monitors": {\n    "ping": [,]\n  }\n}');
    await page.getByTestId('err-agentcfg-json').waitFor();
    assert((await text('err-agentcfg-json')).includes('line 3'), 'json error: ' + (await text('err-agentcfg-json')));
    await page.screenshot({ path: join(artifacts, 'agent-config-desktop-light.png'), fullPage: true });
  });

  await step('agent configuration: an ACS provisioning template checked beside its fields, previewed, saved as version 3', async () => {
    await go(page, '/pops');
    await page.getByTestId('pop-card').filter({ hasText: 'POP Centro' }).getByTestId('pop-agent-config').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="agentcfg-version"]')?.textContent?.includes('version 2'));
    await page.getByTestId('agentcfg-tab-templates').click();
    await page.getByTestId('agentcfg-add-template').click();
    await page.locator('#t0-name').fill('inform-interval');
    await page.locator('#t0p0-name').fill('InternetGatewayDevice.ManagementServer.PeriodicInformInterval');
    await page.locator('#t0p0-type').fill('xsd:unsignedInt');
    // No condition: every known device of the POP matches; an OUI nobody has: none.
    const preview = () => text('agentcfg-template-preview');
    await page.waitForFunction(() => /(\d+) of the \1 known/.test(document.querySelector('[data-testid="agentcfg-template-preview"]')?.textContent ?? ''));
    const all = Number((await preview()).match(/of the (\d+)/)[1]);
    assert(all > 0, 'the POP has known devices: ' + (await preview()));
    await page.locator('#t0-oui').fill('FFFFFF');
    await page.waitForFunction(() => (document.querySelector('[data-testid="agentcfg-template-preview"]')?.textContent ?? '').startsWith('Matches 0 of'));
    await page.locator('#t0-oui').fill('');
    // A placeholder the agent does not know is refused beside the field, before anything is sent.
    await page.locator('#t0p0-value').fill('{serial_number}');
    await page.getByTestId('agentcfg-save').click();
    await page.getByTestId('err-t0p0-value').waitFor();
    assert((await text('err-t0p0-value')).includes('Unknown placeholder'), 'error: ' + (await text('err-t0p0-value')));
    await page.locator('#t0p0-value').fill('{spread:3600:600}');
    await page.getByTestId('agentcfg-comment').fill('Inform interval spread');
    await page.getByTestId('agentcfg-save').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="agentcfg-version"]')?.textContent?.includes('version 3'));
    const stored = JSON.parse(psql(dbName, `SELECT config FROM agent_configs WHERE pop_id = '${pops[0]}' AND version = 3`));
    const tpl = stored.acs?.templates?.[0];
    assert(tpl?.name === 'inform-interval' && tpl.version === 1 && tpl.set[0].value === '{spread:3600:600}' && tpl.set[0].type === 'xsd:unsignedInt',
      'version 3 template: ' + JSON.stringify(stored));
    assert(stored.monitors.ping.length === 2, 'the monitors are kept: ' + JSON.stringify(stored));
    await page.screenshot({ path: join(artifacts, 'agent-config-templates-desktop-light.png'), fullPage: true });
    const found = await axeViolations(page, 'agent configuration, templates');
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));
  });

  await step("interface monitoring: a POP's interfaces busiest first, sorted by a column, a row opens its graph", async () => {
    await go(page, '/pops');
    await page.getByTestId('pop-card').filter({ hasText: 'POP Centro' }).getByTestId('pop-interfaces').click();
    await page.getByTestId('ifmon-row').nth(2).waitFor();
    const order = () => page.getByTestId('ifmon-row').evaluateAll((rows) => rows.map((r) => r.dataset.if));
    assert(JSON.stringify(await order()) === '["eth0","pon0","eth1"]', 'busiest first: ' + (await order()));
    const eth0 = page.getByTestId('ifmon-row').filter({ hasText: 'eth0' });
    assert((await eth0.getByTestId('ifmon-util').getAttribute('data-level')) === 'bad', 'eth0 at 90 % is red');
    const eth0Text = await eth0.innerText();
    assert(eth0Text.includes('900 Mbit/s') && eth0Text.includes('90%') && eth0Text.includes('5/s'), 'eth0: ' + eth0Text);
    assert((await page.getByTestId('ifmon-row').filter({ hasText: 'eth1' }).innerText()).includes('down'), 'eth1 down');
    await page.getByTestId('ifmon-sort-name').click();
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="ifmon-row"]')].map((r) => r.dataset.if).join() === 'pon0,eth0,eth1');
    assert(page.url().includes('sort=name'), 'sort in the URL: ' + page.url());
    await page.getByTestId('ifmon-sort-errors').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="ifmon-row"]')?.dataset.if === 'eth0' && location.search.includes('sort=errors'));
    await page.screenshot({ path: join(artifacts, 'interfaces-desktop-light.png'), fullPage: true });
    const found = await axeViolations(page, '/pops/…/interfaces');
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));
    // The row's name opens the device page with that interface chosen in the traffic graph.
    await page.getByTestId('ifmon-row').filter({ hasText: 'eth1' }).getByRole('link', { name: 'eth1' }).click();
    await page.getByTestId('device-title').waitFor();
    assert((await text('device-title')).includes('Cliente Bruno'), 'device page: ' + (await text('device-title')));
    await page.getByTestId('graph-choice-traffic').waitFor();
    assert((await page.getByTestId('graph-choice-traffic').inputValue()) === 'eth1', 'interface chosen');
  });

  await step('API keys: created with chosen permissions, shown once, used, revoked', async () => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    await go(page, '/users');
    await page.getByTestId('users-api-keys').click();
    await page.getByTestId('apikey-form').waitFor();
    // Nothing chosen: both errors beside their fields, nothing sent.
    await page.getByTestId('apikey-create').click();
    await page.getByTestId('err-ak-name').waitFor();
    await page.getByTestId('err-ak-perms').waitFor();
    assert((await page.getByTestId('apikey-row').count()) === 0, 'no key created');
    await page.locator('#ak-name').fill('Zabbix NOC');
    await page.locator('[data-perm="devices:read"]').check();
    await page.locator('[data-perm="metrics:read"]').check();
    await page.getByTestId('apikey-create').click();
    await page.getByTestId('apikey-secret').waitFor();
    const key = (await text('apikey-secret')).trim();
    assert(/^oik_[a-z0-9]{8}_\S{20,}$/.test(key), 'key shown: ' + key);
    await page.getByTestId('apikey-copy').click();
    await page.getByTestId('apikey-copy').filter({ hasText: 'Copied' }).waitFor();
    assert((await page.evaluate(() => navigator.clipboard.readText())) === key, 'key copied');
    await page.screenshot({ path: join(artifacts, 'api-keys-desktop-light.png'), fullPage: true });
    const row = page.getByTestId('apikey-row').filter({ hasText: 'Zabbix NOC' });
    await row.waitFor();
    assert((await row.getAttribute('data-state')) === 'active' && (await row.innerText()).includes(key.slice(0, 12) + '_…'), 'row: ' + (await row.innerText()));
    // The key works for what it was given, and only for that.
    const withKey = (path) => fetch(base + '/api/v1' + path, { headers: { 'x-api-key': key } });
    assert((await withKey('/devices')).status === 200, 'the key reads devices');
    assert((await withKey('/alerts')).status === 403, 'the key may not read alerts');
    // Shown once: closed, it is nowhere on the page.
    await page.getByTestId('apikey-done').click();
    assert((await page.getByTestId('apikey-secret').count()) === 0 && !(await page.locator('main').innerText()).includes(key), 'key gone');
    const found = await axeViolations(page, '/api-keys');
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));
    await row.getByTestId('apikey-revoke').click();
    await row.getByTestId('apikey-revoke-confirm').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="apikey-row"][data-name="Zabbix NOC"]')?.dataset.state === 'revoked');
    assert((await withKey('/devices')).status === 401, 'a revoked key is refused');
    assert(psql(dbName, "SELECT count(*) FROM audit_log WHERE action IN ('api_keys.create', 'api_keys.revoke')") === '2', 'audited');
  });

  await step('users and roles: an admin creates a custom role and a user with it; that user sees only what the role allows', async () => {
    const TECH = 'tecnico@e2e.example';
    await go(page, '/roles');
    await page.getByTestId('role-new').click();
    // Nothing filled: the errors, nothing sent.
    await page.getByTestId('role-save').click();
    await page.getByTestId('err-role-name').waitFor();
    await page.locator('#role-name').fill('Field tech E2E');
    await page.locator('#role-description').fill('Sees devices and alerts, nothing else');
    for (const code of ['devices:read', 'alerts:read', 'alerts:ack']) await page.getByTestId('perm-' + code).check();
    await page.getByTestId('perm-alerts:ack').uncheck();
    await page.getByTestId('role-save').click();
    const card = page.getByTestId('role-card').filter({ hasText: 'Field tech E2E' });
    await card.waitFor();
    assert(psql(dbName, "SELECT string_agg(permission, ',' ORDER BY permission) FROM role_permissions rp JOIN roles r ON r.id = rp.role_id WHERE r.name = 'Field tech E2E'")
      === 'alerts:read,devices:read', 'stored permissions');
    // Edited: one more permission.
    await card.getByTestId('role-edit').click();
    await page.getByTestId('role-matrix').waitFor();
    let found = await axeViolations(page, '/roles editor');
    for (const theme of ['light', 'dark']) {
      await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
      await page.screenshot({ path: join(artifacts, `roles-editor-desktop-${theme}.png`), fullPage: true });
    }
    await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });
    await page.getByTestId('perm-metrics:read').check();
    await page.getByTestId('role-save').click();
    await card.filter({ hasText: 'metrics:read' }).waitFor();
    // A throwaway role is created and deleted.
    await page.getByTestId('role-new').click();
    await page.locator('#role-name').fill('Temporary E2E');
    await page.getByTestId('perm-devices:read').check();
    await page.getByTestId('role-save').click();
    const temp = page.getByTestId('role-card').filter({ hasText: 'Temporary E2E' });
    await temp.getByTestId('role-delete').click();
    await temp.getByTestId('role-delete-confirm').click();
    await page.waitForFunction(() => ![...document.querySelectorAll('[data-testid="role-card"]')].some((c) => c.textContent.includes('Temporary E2E')));

    await go(page, '/users');
    await page.getByTestId('user-new').click();
    await page.getByTestId('user-save').click();
    await page.getByTestId('err-user-email').waitFor();
    await page.locator('#user-email').fill(TECH);
    await page.locator('#user-name').fill('Técnico E2E');
    await page.locator('#user-role').selectOption({ label: 'Viewer' });
    await page.getByTestId('user-mode-set').check();
    await page.locator('#user-password').fill('curta');
    await page.getByTestId('user-save').click();
    await page.getByTestId('err-user-password').waitFor();
    await page.locator('#user-password').fill(PASSWORD);
    found.push(...(await axeViolations(page, '/users form')));
    for (const [size, vp] of [['desktop', { width: 1366, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
      await page.setViewportSize(vp);
      for (const theme of ['light', 'dark']) {
        await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
        await page.screenshot({ path: join(artifacts, `users-new-${size}-${theme}.png`), fullPage: true });
      }
    }
    await page.setViewportSize({ width: 1366, height: 900 });
    await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });
    await page.getByTestId('user-save').click();
    await page.getByTestId('user-notice').waitFor();
    const row = page.getByTestId('user-row').filter({ hasText: TECH });
    await row.waitFor();
    // Its role changed from Viewer to the custom role, from the list.
    await row.getByTestId('user-role-select').selectOption({ label: 'Field tech E2E' });
    for (let i = 0; i < 50 && psql(dbName, `SELECT r.name FROM users u JOIN roles r ON r.id = u.role_id WHERE u.email = '${TECH}'`) !== 'Field tech E2E'; i++) await page.waitForTimeout(100);
    assert(psql(dbName, `SELECT r.name FROM users u JOIN roles r ON r.id = u.role_id WHERE u.email = '${TECH}'`) === 'Field tech E2E', 'role changed');
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));

    // The new user signs in and sees only what the role allows.
    const tctx = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'en-US', serviceWorkers: 'block' });
    const tp = await tctx.newPage();
    tp.setDefaultTimeout(15000);
    await tp.goto(base + '/');
    await tp.getByLabel('E-mail').fill(TECH);
    await tp.getByLabel('Senha').fill(PASSWORD);
    await tp.getByRole('button', { name: 'Entrar' }).click();
    // The console speaks pt-BR until the user picks English.
    await tp.getByRole('link', { name: 'Dispositivos' }).first().waitFor();
    const nav = await tp.locator('nav').first().innerText();
    for (const hidden of ['Usuários', 'Perfis', 'POPs', 'Agentes', 'Auditoria', 'Diagnóstico', 'Chaves de API']) {
      assert(!nav.includes(hidden), `the role hides ${hidden}: ${nav}`);
    }
    assert(nav.includes('Alertas'), 'alerts in the menu: ' + nav);
    await go(tp, '/alerts');
    await tp.getByTestId('alert-row').first().waitFor();
    assert((await tp.getByTestId('alert-ack').count()) === 0, 'no acknowledge without alerts:ack');
    const login = await (await fetch(base + '/api/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: TECH, password: PASSWORD }) })).json();
    const users = await fetch(base + '/api/v1/users', { headers: { authorization: 'Bearer ' + login.access_token } });
    assert(users.status === 403, 'users list refused: ' + users.status);
    const devices = await fetch(base + '/api/v1/devices', { headers: { authorization: 'Bearer ' + login.access_token } });
    assert(devices.status === 200, 'devices allowed: ' + devices.status);
    await tctx.close();

    // Disabled: the next sign-in is refused.
    await row.getByTestId('user-toggle').click();
    await row.filter({ hasText: 'disabled' }).waitFor();
    const again = await fetch(base + '/api/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: TECH, password: PASSWORD }) });
    assert(again.status === 401 || again.status === 403, 'a disabled user signs in: ' + again.status);
    assert(psql(dbName, "SELECT count(DISTINCT action) FROM audit_log WHERE action IN ('roles.create', 'roles.update', 'roles.delete', 'users.create', 'users.set_role', 'users.disable')") === '6', 'audited');
  });

  await step('screenshots of the new pages: light and dark, desktop and phone', async () => {
    for (const [name, path, ready] of [['interfaces', `/pops/${pops[0]}/interfaces`, 'ifmon-row'], ['api-keys', '/api-keys', 'apikey-row']]) {
      await go(page, path);
      await page.getByTestId(ready).first().waitFor();
      for (const [size, vp] of [['desktop', { width: 1366, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
        await page.setViewportSize(vp);
        for (const theme of ['light', 'dark']) {
          await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
          await page.getByTestId(ready).first().waitFor();
          await page.screenshot({ path: join(artifacts, `${name}-${size}-${theme}.png`), fullPage: true });
        }
      }
    }
    await page.setViewportSize({ width: 1366, height: 900 });
    await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });
  });

  await step('a Viewer sees alerts and graphs but no action buttons, and the API refuses the action', async () => {
    const vctx = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'en-US', serviceWorkers: 'block' });
    const v = await vctx.newPage();
    v.setDefaultTimeout(15000);
    await v.goto(base + '/alerts');
    await v.getByLabel('E-mail').fill(VIEWER);
    await v.getByLabel('Senha').fill(PASSWORD);
    await v.getByRole('button', { name: 'Entrar' }).click();
    const row = v.getByTestId('alert-row').filter({ hasText: 'CPU high' });
    await row.waitFor();
    assert((await v.getByTestId('alert-ack').count()) === 0 && (await v.getByTestId('alert-resolve').count()) === 0
      && (await v.getByTestId('alert-silence').count()) === 0, 'viewer sees alert action buttons');
    await v.getByTestId('tab-rules').click();
    await v.getByTestId('rule-row').first().waitFor();
    assert((await v.getByTestId('rule-new').count()) === 0 && (await v.getByTestId('rule-edit').count()) === 0
      && (await v.getByTestId('rule-delete').count()) === 0, 'viewer sees rule edit buttons');
    await v.getByTestId('tab-silences').click();
    await v.getByTestId('silence-row').first().waitFor();
    assert((await v.getByTestId('silence-form').count()) === 0 && (await v.getByTestId('silence-delete').count()) === 0, 'viewer sees silence buttons');
    await v.getByRole('link', { name: /Notifica/ }).click();
    await v.getByTestId('push-card').waitFor();
    assert((await v.getByTestId('channel-new').count()) === 0, 'viewer sees channel editing');
    await go(v, `/devices/${anaId}?range=1h`);
    await v.waitForFunction(() => Number(document.querySelector('[data-testid="graph-traffic"] [data-testid="chart"]')?.dataset.points) > 0);
    // TR-069: the Viewer reads the summary and the tree, with nothing to change or reboot.
    await go(v, `/devices/${ontId}/tr069`);
    await v.getByTestId('optical-rx').waitFor();
    await v.getByTestId('tr-child').first().waitFor();
    assert((await v.getByTestId('param-edit').count()) === 0 && (await v.getByTestId('tr-reboot').count()) === 0
      && (await v.getByTestId('tr-factory-reset').count()) === 0, 'viewer sees TR-069 actions');
    // The server refuses anyway.
    const login = await (await fetch(base + '/api/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: VIEWER, password: PASSWORD }) })).json();
    const alert = psql(dbName, "SELECT id FROM alerts WHERE target = 'Cliente Ana'");
    const r = await fetch(`${base}/api/v1/alerts/${alert}/resolve`, { method: 'POST', headers: { authorization: 'Bearer ' + login.access_token, 'content-type': 'application/json' }, body: '{}' });
    assert(r.status === 403, 'viewer resolve: ' + r.status);
    const rr = await fetch(`${base}/api/v1/alert-rules`, { method: 'POST', headers: { authorization: 'Bearer ' + login.access_token, 'content-type': 'application/json' },
      body: JSON.stringify({ rule_key: 'viewer-rule', name: 'Viewer rule', metric: 'cpu.load_percent', kind: 'threshold', op: '>', threshold: 1 }) });
    assert(rr.status === 403, 'viewer rule create: ' + rr.status);
    const set = await fetch(`${base}/api/v1/commands`, { method: 'POST', headers: { authorization: 'Bearer ' + login.access_token, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'tr069.set_params', device_id: ontId, args: { values: [{ name: SSID, value: 'x' }] } }) });
    assert(set.status === 403, 'viewer tr069.set_params: ' + set.status);
    // API keys: no entry in the menu, and the API refuses the list; the interface page is read-only anyway.
    assert((await v.getByRole('link', { name: 'API keys' }).count()) === 0, 'viewer sees API keys in the menu');
    const keys = await fetch(`${base}/api/v1/api-keys`, { headers: { authorization: 'Bearer ' + login.access_token } });
    assert(keys.status === 403, 'viewer api-keys: ' + keys.status);
    await go(v, `/pops/${pops[0]}/interfaces`);
    await v.getByTestId('ifmon-row').first().waitFor();
    await vctx.close();
  });

  await step('accessibility: no serious or critical axe-core violation on the main pages, light and dark', async () => {
    const found = [];
    for (const [path, ready] of [['/', 'count-devices'], ['/devices', 'device-row'], ['/pops', 'pop-card'], ['/agents', 'agent-row'], ['/audit', 'audit-row'], ['/reports', 'report-form']]) {
      await page.evaluate((p) => { window.history.pushState(null, '', p); window.dispatchEvent(new PopStateEvent('popstate')); }, path);
      await page.getByTestId(ready).first().waitFor();
      for (const theme of ['light', 'dark']) {
        await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
        if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ path: axePath });
        const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
          .filter((v) => v.impact === 'serious' || v.impact === 'critical')
          .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
        for (const v of violations) found.push(`${path} ${theme}: ${v}`);
      }
    }
    await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });
    assert(found.length === 0, 'axe-core violations:\n' + found.join('\n'));
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.getByTestId('count-devices').waitFor();
  });

  await step('modules whose API is not there yet say so (only when the API answers 404)', async () => {
    const status = (await fetch(base + '/api/v1/alerts')).status;
    await page.getByRole('link', { name: 'Alerts' }).click();
    await page.getByRole('heading', { name: 'Alerts' }).waitFor();
    if (status === 404) await page.getByTestId('not-available').waitFor();
    else assert((await page.getByTestId('not-available').count()) === 0, 'not-available shown while the API exists');
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.getByTestId('count-devices').waitFor();
  });

  for (const [name, vp] of [['desktop', { width: 1366, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
    for (const theme of ['light', 'dark']) {
      await page.setViewportSize(vp);
      await page.evaluate((t) => { document.documentElement.dataset.theme = t; }, theme);
      await page.waitForTimeout(400); // the side menu's slide transition after a resize
      await page.screenshot({ path: join(artifacts, `dashboard-${name}-${theme}.png`) });
    }
  }
  await page.setViewportSize({ width: 1366, height: 900 });
  await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });

  await step('server stopped: the last data is shown, marked stale', async () => {
    await stopServer();
    await page.getByTestId('stale-banner').waitFor({ timeout: 20000 });
    const banner = await text('stale-banner');
    assert(banner.includes('last data seen') && /from .*\d/.test(banner), 'banner with the time of the data: ' + banner);
    assert((await text('count-devices')).includes('7'), 'last counts still shown');
    await page.screenshot({ path: join(artifacts, 'dashboard-stale.png') });
    // A page visited before is shown from the cache too, after a reload of the app shell.
    await page.reload();
    await page.getByTestId('count-devices').waitFor();
    await page.getByTestId('stale-banner').waitFor();
    assert((await text('count-devices')).includes('7'), 'cached counts after reload');
  });

  await step('server back: the console is live again by itself', async () => {
    psql(dbName, `UPDATE devices SET last_seen = now() WHERE device_key = 'cpe-4'`);
    startServer();
    await waitReady();
    await page.getByTestId('stale-banner').waitFor({ state: 'detached', timeout: 30000 });
    await page.waitForFunction(() => document.querySelector('[data-testid="count-online"]')?.textContent === '6', null, { timeout: 15000 });
    await page.getByTestId('live-status').and(page.locator('[data-status="live"]')).waitFor({ timeout: 30000 });
  });

  await step('sign out', async () => {
    await page.getByTestId('logout').click();
    await page.getByTestId('login-form').waitFor();
    assert(await page.evaluate(() => localStorage.getItem('octoisp.refresh') === null), 'refresh token forgotten');
  });
} catch (err) {
  // A failed step was reported by step(); anything else (the browser did not start...) is reported here.
  if (!failures.length) { failed++; console.log(`  FAIL outside a step: ${err?.stack ?? err}`); }
} finally {
  if (failed) printLogs();
  await cleanup();
}
console.log(`web e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
