// End-to-end test of the console in headless Chromium against a real control plane and PostgreSQL.
//
// It creates a database of its own on OCTOISP_TEST_PG, applies the migrations, creates a provider, two POPs, a
// user and devices, starts `octoisp-controlplane serve --roles api` serving web/dist, and drives Chromium
// (Debian's /usr/bin/chromium through playwright-core): log in, real counts on the dashboard, English, device
// search and detail, a live event (an alert_events row + pg_notify, as the alert engine does, after a new
// device) refreshing the dashboard without reload, the server stopped (stale banner over the last data) and
// started again (live again). Screenshots go to web/e2e/artifacts/.
//
// Environment: OCTOISP_TEST_PG (admin URL, required), OCTOISP_TEST_REDIS (default redis://127.0.0.1:6379),
// OCTOISP_CP_BIN (default $CARGO_TARGET_DIR/debug/octoisp-controlplane), CHROMIUM (default /usr/bin/chromium).
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, rmSync, openSync } from 'node:fs';
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

let browser = null;
async function cleanup() {
  try { await browser?.close(); } catch { /* ignore */ }
  await stopServer();
  try { psql(url.pathname.slice(1) || 'postgres', `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`); } catch { /* ignore */ }
  rmSync(work, { recursive: true, force: true });
}

const EMAIL = 'noc@e2e.example';
const PASSWORD = 'e2e-' + randomBytes(9).toString('hex');
let provider, pops;

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

  await step('accessibility: no serious or critical axe-core violation on the main pages, light and dark', async () => {
    const found = [];
    for (const [path, ready] of [['/', 'count-devices'], ['/devices', 'device-row'], ['/pops', 'pop-card'], ['/agents', 'agent-row'], ['/audit', 'audit-row']]) {
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
    assert((await text('count-devices')).includes('6'), 'last counts still shown');
    await page.screenshot({ path: join(artifacts, 'dashboard-stale.png') });
    // A page visited before is shown from the cache too, after a reload of the app shell.
    await page.reload();
    await page.getByTestId('count-devices').waitFor();
    await page.getByTestId('stale-banner').waitFor();
    assert((await text('count-devices')).includes('6'), 'cached counts after reload');
  });

  await step('server back: the console is live again by itself', async () => {
    psql(dbName, `UPDATE devices SET last_seen = now() WHERE device_key = 'cpe-4'`);
    startServer();
    await waitReady();
    await page.getByTestId('stale-banner').waitFor({ state: 'detached', timeout: 30000 });
    await page.waitForFunction(() => document.querySelector('[data-testid="count-online"]')?.textContent === '5', null, { timeout: 15000 });
    await page.getByTestId('live-status').and(page.locator('[data-status="live"]')).waitFor({ timeout: 30000 });
  });

  await step('sign out', async () => {
    await page.getByTestId('logout').click();
    await page.getByTestId('login-form').waitFor();
    assert(await page.evaluate(() => localStorage.getItem('octoisp.refresh') === null), 'refresh token forgotten');
  });
} catch {
  // Reported by step(); fall through to cleanup.
} finally {
  await cleanup();
}
console.log(`web e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
