// Console load figures on loopback (not a test: prints numbers for docs/BENCHMARKS.md).
//
// Same stack as run.mjs (fresh database, real control plane serving web/dist, Debian's Chromium). Measures, over
// RUNS cold loads each (new browser context: empty HTTP cache, no service worker):
// - the login page: First Contentful Paint and the load event;
// - the dashboard of a signed-in user (refresh token already stored): time from navigation start until the
//   device count is on screen (the "first meaningful paint" of the issue), which includes the token refresh and
//   the /me and /summary round trips.
// - a device's one-year traffic graph (1-day rollups, 365 points per line, in and out): time from the arrival of
//   the last points answer (its responseEnd) until the chart is drawn and a frame painted (JSON parsing, React
//   state and render, SVG layout) — the "< 300 ms after the data arrives" of the issue.
// And the size of the JavaScript the first page loads, raw and gzipped.
//
// Environment: as run.mjs, plus RUNS (default 10).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readdirSync, readFileSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist');
const adminBase = process.env.OCTOISP_TEST_PG;
if (!adminBase) { console.error('OCTOISP_TEST_PG is required'); process.exit(2); }
const cpBin = process.env.OCTOISP_CP_BIN ?? join(process.env.CARGO_TARGET_DIR ?? '/var/cache/octoisp-target', 'debug', 'octoisp-controlplane');
const RUNS = Number(process.env.RUNS ?? 10);

const port = await new Promise((res) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
const base = `http://127.0.0.1:${port}`;
const dbName = 'octoisp_bench_' + randomBytes(4).toString('hex');
const dbUrl = (db, user) => { const u = new URL(adminBase); u.pathname = '/' + db; if (user) { u.username = user; u.password = ''; } return u.toString(); };
const psql = (db, sql) => execFileSync('psql', [dbUrl(db), '-XqtA', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8' }).trim();
const work = mkdtempSync(join(tmpdir(), 'octoisp-bench-'));
const config = join(work, 'cp.toml');
writeFileSync(config, `data_dir = "${join(work, 'data')}"
[database]
url = "${dbUrl(dbName, 'octoisp_app')}"
admin_url = "${dbUrl(dbName)}"
[http]
listen = "127.0.0.1:${port}"
web_dir = "${dist}"
[api]
redis_url = "${process.env.OCTOISP_TEST_REDIS ?? 'redis://127.0.0.1:6379'}"
redis_prefix = "octoisp-bench-${randomBytes(4).toString('hex')}"
rate_limit = { enabled = false }
[auth]
jwt_secret = "${randomBytes(32).toString('hex')}"
`);
const env = { ...process.env, OCTOISP_CP_CONFIG: config, RUST_LOG: 'warn' };
const cp = (...a) => execFileSync(cpBin, a, { env, encoding: 'utf8' });
const PASSWORD = 'bench-' + randomBytes(8).toString('hex');
let server, browser;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const p90 = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * 0.9))]; };

try {
  psql(new URL(adminBase).pathname.slice(1) || 'postgres', `CREATE DATABASE ${dbName}`);
  cp('migrate');
  cp('provider', 'create', '--slug', 'bench', '--name', 'Bench', '--tier', 'small');
  cp('pop', 'create', '--provider', 'bench', '--slug', 'p1', '--name', 'POP 1');
  execFileSync(cpBin, ['user', 'create', '--provider', 'bench', '--email', 'b@bench.example', '--name', 'B', '--role', 'Provider Admin'],
    { env: { ...env, OCTOISP_USER_PASSWORD: PASSWORD } });
  const provider = psql(dbName, "SELECT id FROM providers WHERE slug = 'bench'");
  const pop = psql(dbName, `SELECT id FROM pops WHERE provider_id = '${provider}'`);
  psql(dbName, `INSERT INTO devices (provider_id, pop_id, device_key, last_seen)
    SELECT '${provider}', '${pop}', 'dev-' || g, now() - (g % 3) * interval '1 day' FROM generate_series(1, 10000) g`);
  // One device with a year of daily traffic rollups (in and out).
  const agent = psql(dbName, `INSERT INTO agents (id, provider_id, pop_id, hostname, version, cert_fingerprint, last_seen)
    VALUES (gen_random_uuid(), '${provider}', '${pop}', 'bench-agent', '0.1.0', '${'c'.repeat(64)}', now()) RETURNING id`);
  const device = psql(dbName, `SELECT id FROM devices WHERE device_key = 'dev-1'`);
  const series = psql(dbName, `INSERT INTO series (provider_id, agent_id, local_id, device_id, metric, labels, kind) VALUES
    ('${provider}', '${agent}', 1, '${device}', 'if.in_bps', '{"ifName": "uplink"}', 'gauge'),
    ('${provider}', '${agent}', 2, '${device}', 'if.out_bps', '{"ifName": "uplink"}', 'gauge') RETURNING id`).split('\n');
  psql(dbName, "SELECT count(*) FROM octoisp_rollup_partitions('1d', ARRAY[now() - interval '400 days', now()])");
  for (const [i, id] of series.entries()) {
    psql(dbName, `INSERT INTO rollup_1d (provider_id, series_id, bucket, min, max, sum, count, last, last_ts, p95)
      SELECT '${provider}', ${id}, b, v * 0.3, v * 1.6, v * 288, 288, v, b + interval '23 hours', v * 1.4
      FROM (SELECT b, ${i ? 2e8 : 9e8} * (1 + 0.3 * sin(extract(epoch from b) / 604800.0)) AS v
            FROM generate_series(date_trunc('day', now()) - interval '365 days', date_trunc('day', now()) - interval '1 day', interval '1 day') AS b) x`);
  }
  server = spawn(cpBin, ['serve', '--roles', 'api'], { env, stdio: ['ignore', openSync(join(work, 'cp.log'), 'a'), 'inherit'] });
  for (let i = 0; i < 150; i++) { try { if ((await fetch(base + '/readyz')).ok) break; } catch { /* not yet */ } await new Promise((r) => setTimeout(r, 200)); }

  // Bundle: the scripts and styles index.html references (what a first visit downloads before rendering).
  const html = readFileSync(join(dist, 'index.html'), 'utf8');
  const initial = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
  let raw = 0, gz = 0;
  for (const f of initial) { const b = readFileSync(join(dist, f)); raw += b.length; gz += gzipSync(b, { level: 9 }).length; }
  let allJs = 0;
  for (const f of readdirSync(join(dist, 'assets'))) if (f.endsWith('.js')) allJs += gzipSync(readFileSync(join(dist, 'assets', f)), { level: 9 }).length;

  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const login = await (await fetch(base + '/api/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'b@bench.example', password: PASSWORD }) })).json();
  let refresh = login.refresh_token;
  const fcp = [], loadEv = [], dash = [], parts = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ serviceWorkers: 'block' });
    const page = await ctx.newPage();
    await page.goto(base + '/', { waitUntil: 'load' });
    await page.getByRole('button').first().waitFor();
    const t = await page.evaluate(() => ({
      fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN,
      load: performance.getEntriesByType('navigation')[0].loadEventEnd,
    }));
    fcp.push(t.fcp); loadEv.push(t.load);
    await ctx.close();

    const ctx2 = await browser.newContext({ serviceWorkers: 'block' });
    await ctx2.addInitScript((rt) => { if (!sessionStorage.getItem('seeded')) { localStorage.setItem('octoisp.refresh', rt); localStorage.setItem('octoisp.me', JSON.stringify({ user_id: null, api_key_id: null, provider_id: null, global_admin: false, permissions: ['devices:read', 'pops:read', 'agents:read'] })); sessionStorage.setItem('seeded', '1'); } }, refresh);
    const p2 = await ctx2.newPage();
    await p2.goto(base + '/');
    await p2.waitForFunction(() => document.querySelector('[data-testid="count-devices"]')?.textContent?.includes('10'));
    dash.push(await p2.evaluate(() => performance.now()));
    // Where the wait went: when the app's script, the token refresh and the summary answer arrived, and the
    // first paint (all from navigation start).
    parts.push(await p2.evaluate(() => {
      const rs = performance.getEntriesByType('resource');
      const at = (re, f) => { const m = rs.filter((e) => re.test(e.name)).map(f); return m.length ? Math.max(...m) : NaN; };
      return {
        html: performance.getEntriesByType('navigation')[0].responseEnd,
        js: at(/\/assets\/index-[^/]*\.js$/, (e) => e.responseEnd),
        refreshStart: at(/\/auth\/refresh$/, (e) => e.startTime), refresh: at(/\/auth\/refresh$/, (e) => e.responseEnd),
        // The first /summary (index.html's boot script starts it with the refreshed token) and the last one
        // (refetches on live events).
        summaryStart: -at(/\/summary$/, (e) => -e.startTime), summary: -at(/\/summary$/, (e) => -e.responseEnd),
        summaries: rs.filter((e) => /\/summary$/.test(e.name)).length, lastSummary: at(/\/summary$/, (e) => e.responseEnd),
        fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN,
      };
    }));
    refresh = await p2.evaluate(() => localStorage.getItem('octoisp.refresh'));
    await ctx2.close();
  }
  // The one-year graph: data arrival → drawn.
  const yearRender = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext({ serviceWorkers: 'block', viewport: { width: 1366, height: 900 } });
    await ctx.addInitScript((rt) => {
      if (!sessionStorage.getItem('seeded')) { localStorage.setItem('octoisp.refresh', rt); sessionStorage.setItem('seeded', '1'); }
      new MutationObserver(() => {
        const el = document.querySelector('[data-testid="graph-traffic"] [data-testid="chart"]');
        if (!window.__drawnAt && el && Number(el.getAttribute('data-points')) >= 700) requestAnimationFrame(() => { window.__drawnAt = performance.now(); });
      }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-points'] });
    }, refresh);
    const p3 = await ctx.newPage();
    await p3.goto(`${base}/devices/${device}?range=1y`);
    await p3.waitForFunction(() => window.__drawnAt, null, { timeout: 30000 });
    const r = await p3.evaluate(() => {
      const ends = performance.getEntriesByType('resource').filter((e) => e.name.includes('/points')).map((e) => e.responseEnd);
      const res = document.querySelector('[data-testid="graph-traffic"] [data-testid="graph-resolution"]')?.textContent ?? '';
      return { drawn: window.__drawnAt, arrived: Math.max(...ends), res };
    });
    if (i === 0) console.log(`one-year graph: ${r.res}`);
    yearRender.push(r.drawn - r.arrived);
    refresh = await p3.evaluate(() => localStorage.getItem('octoisp.refresh'));
    await ctx.close();
  }
  // The API part of the dashboard's wait, from node (no browser): one token refresh, then /summary.
  const tRefresh = [], tSummary = [];
  for (let i = 0; i < RUNS; i++) {
    let t0 = performance.now();
    const pair = await (await fetch(base + '/api/v1/auth/refresh', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refresh }) })).json();
    tRefresh.push(performance.now() - t0);
    refresh = pair.refresh_token;
    t0 = performance.now();
    await (await fetch(base + '/api/v1/summary', { headers: { authorization: 'Bearer ' + pair.access_token } })).json();
    tSummary.push(performance.now() - t0);
  }
  const f = (x) => x.toFixed(0);
  console.log(`API from node (n=${RUNS}): refresh median ${f(median(tRefresh))} ms, summary (10,000 devices) median ${f(median(tSummary))} ms`);
  console.log(`initial JS+CSS (${initial.join(', ')}): ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzip -9; all JS chunks gzip: ${(allJs / 1024).toFixed(1)} KiB`);
  console.log(`login page, cold (n=${RUNS}): FCP median ${f(median(fcp))} ms, p90 ${f(p90(fcp))} ms; load event median ${f(median(loadEv))} ms`);
  console.log(`dashboard with 10,000 devices, cold, signed in (n=${RUNS}): counts on screen median ${f(median(dash))} ms, p90 ${f(p90(dash))} ms`);
  const part = (k) => f(median(parts.map((p) => p[k])));
  console.log(`  of which (medians from navigation start): HTML ${part('html')} ms, app script arrived ${part('js')} ms, `
    + `refresh ${part('refreshStart')}→${part('refresh')} ms, first summary ${part('summaryStart')}→${part('summary')} ms `
    + `(${part('summaries')} summary requests, the last answered at ${part('lastSummary')} ms), first paint ${part('fcp')} ms`);
  console.log(`one-year traffic graph (2 × 365 daily points), last answer → drawn and painted (n=${RUNS}): median ${f(median(yearRender))} ms, p90 ${f(p90(yearRender))} ms, max ${f(Math.max(...yearRender))} ms`);
} finally {
  try { await browser?.close(); } catch { /* ignore */ }
  if (server) { server.kill('SIGTERM'); await new Promise((r) => server.once('exit', r)); }
  try { psql(new URL(adminBase).pathname.slice(1) || 'postgres', `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`); } catch { /* ignore */ }
  rmSync(work, { recursive: true, force: true });
}
