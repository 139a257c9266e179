// The console's dashboard open in headless Chromium during a capacity run (scripts/scale-run.sh): signs in as a
// user, keeps the dashboard open until SIGTERM or DURATION seconds, and counts what a person watching it would
// get: the live socket's messages (by type and channel), the dashboard's summary refetches (and their time as
// the browser saw them), and the device counts shown. Writes OUT (JSON) at the end; a line a minute to stdout.
//
// Usage: node dashboard.mjs BASE_URL EMAIL PASSWORD DURATION_SECS OUT
// Environment: CHROMIUM (default /usr/bin/chromium). playwright-core is loaded from web/node_modules.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', '..', '..', 'web', 'package.json'));
const { chromium } = require('playwright-core');

const [base, email, password, durationArg, out] = process.argv.slice(2);
if (!out) { console.error('usage: node dashboard.mjs BASE_URL EMAIL PASSWORD DURATION_SECS OUT'); process.exit(2); }
const duration = Math.min(Number(durationArg) || 600, 7200);

const stats = {
  started: new Date().toISOString(), signed_in: false, ws_opened: 0, ws_closed: 0,
  ws_messages: 0, ws_by_kind: {}, summary_responses: 0, summary_failed: 0, summary_ms: [],
  counts: [], page_errors: [], finished: null,
};
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
let stopping = false;
const finish = async (why) => {
  if (stopping) return;
  stopping = true;
  stats.finished = `${new Date().toISOString()} (${why})`;
  const ms = [...stats.summary_ms].sort((a, b) => a - b);
  const q = (p) => (ms.length ? ms[Math.min(ms.length - 1, Math.floor(ms.length * p))] : null);
  stats.summary_ms_p50 = q(0.5); stats.summary_ms_p95 = q(0.95); stats.summary_ms_max = ms.at(-1) ?? null;
  delete stats.summary_ms;
  writeFileSync(out, JSON.stringify(stats, null, 2));
  await browser.close().catch(() => {});
  process.exit(stats.signed_in ? 0 : 1);
};
process.on('SIGTERM', () => finish('SIGTERM'));
process.on('SIGINT', () => finish('SIGINT'));
setTimeout(() => finish('duration'), duration * 1000).unref();

try {
  const page = await browser.newPage({ locale: 'pt-BR' });
  page.on('pageerror', (e) => { if (stats.page_errors.length < 20) stats.page_errors.push(String(e)); });
  page.on('websocket', (ws) => {
    if (!ws.url().endsWith('/api/v1/live')) return;
    stats.ws_opened++;
    ws.on('close', () => stats.ws_closed++);
    ws.on('framereceived', (f) => {
      let m;
      try { m = JSON.parse(String(f.payload)); } catch { return; }
      stats.ws_messages++;
      const k = `${m.type ?? '?'}${m.channel ? ':' + m.channel : ''}`;
      stats.ws_by_kind[k] = (stats.ws_by_kind[k] ?? 0) + 1;
    });
  });
  const sent = new Map();
  page.on('request', (r) => { if (r.url().includes('/api/v1/summary')) sent.set(r, Date.now()); });
  page.on('requestfinished', async (r) => {
    if (!sent.has(r)) return;
    const t = Date.now() - sent.get(r); sent.delete(r);
    const resp = await r.response().catch(() => null);
    if (resp && resp.ok()) { stats.summary_responses++; stats.summary_ms.push(t); } else stats.summary_failed++;
  });
  page.on('requestfailed', (r) => { if (sent.delete(r)) stats.summary_failed++; });
  page.setDefaultTimeout(120_000);
  await page.goto(base + '/');
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Senha').fill(password);
  await page.getByRole('button', { name: 'Entrar' }).click();
  await page.getByRole('heading', { name: 'Painel' }).waitFor();
  await page.getByTestId('count-devices').waitFor();
  stats.signed_in = true;
  console.log(`dashboard: signed in, devices shown: ${await page.getByTestId('count-devices').innerText()}`);
  for (;;) {
    await new Promise((r) => setTimeout(r, 60_000));
    if (stopping) break;
    const shown = await page.getByTestId('count-devices').innerText({ timeout: 10_000 }).catch(() => '?');
    stats.counts.push({ at: new Date().toISOString(), devices: shown });
    console.log(`dashboard: ${new Date().toISOString()} devices ${shown}, live messages ${stats.ws_messages}, summaries ${stats.summary_responses}`);
  }
} catch (e) {
  stats.error = String(e?.stack ?? e);
  console.error('dashboard: ' + stats.error);
  await finish('error');
}
