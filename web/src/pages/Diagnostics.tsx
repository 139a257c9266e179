// Diagnostics: run ping, MTR, traceroute, IP sweep, port scan, DNS and HTTP checks from a chosen POP's agent, with
// live results (progress over the live socket, polled as a fallback), and the history of past runs.
import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Page, Pop } from '../api/types';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable, Pill } from '../components/ui';
import { Field, invalid } from '../components/forms';
import { PALETTE } from '../components/Chart';
import { formatValue } from '../lib/format';
import { buildArgs, emptyForm, FIELDS, initialRun, isTerminal, runReducer, TOOLS, type DiagForm, type Hop, type RunState, type Tool } from '../lib/diag';

interface CommandView { id: string; pop_id: string; device_id: string | null; name: string; args: Record<string, unknown>; status: string; error: string | null; created_at: string; finished_at: string | null }
interface CommandDetail extends CommandView { output: unknown }
interface ProgressPage { items: { seq: number; ts: string; payload: unknown }[]; status: string }

const POLL_MS = 2500;

function statusKind(s: string): 'ok' | 'bad' | 'warn' | 'muted' {
  if (s === 'succeeded') return 'ok';
  if (['failed', 'expired', 'rejected', 'dead'].includes(s)) return 'bad';
  if (s === 'cancelled' || s === 'idle') return 'muted';
  return 'warn';
}

function StatusPill({ status }: { status: string }) {
  const { t } = useI18n();
  return <Pill kind={statusKind(status)}><span data-testid="run-status" data-status={status}>{t(('diag.status.' + status) as MessageKey)}</span></Pill>;
}

/** Follows one command: live events, a poll of its progress while it runs, its detail once it ends. */
function useRun(): [RunState, (id: string, status: string) => void, (e: string) => void] {
  const { watchCommand } = useApp();
  const [run, dispatch] = useReducer(runReducer, undefined, initialRun);
  const ref = useRef(run);
  ref.current = run;
  const busy = useRef(false);

  const detail = useCallback(async (id: string) => {
    try {
      const d = await client.get<CommandDetail>('/commands/' + id);
      if (ref.current.id === id) dispatch({ type: 'detail', status: d.data.status, error: d.data.error, output: d.data.output });
    } catch { /* the next poll tries again */ }
  }, []);
  const poll = useCallback(async (id: string) => {
    if (busy.current) return;
    busy.current = true;
    try {
      const p = await client.get<ProgressPage>(`/commands/${id}/progress${query({ after: ref.current.lastSeq || undefined, limit: 500 })}`);
      if (ref.current.id !== id) return;
      for (const f of p.data.items) dispatch({ type: 'frame', seq: f.seq, payload: f.payload });
      if (p.data.status !== ref.current.status) dispatch({ type: 'status', status: p.data.status });
      if (isTerminal(p.data.status)) await detail(id);
    } catch { /* offline or gone: keep what is on screen */ } finally { busy.current = false; }
  }, [detail]);

  const id = run.id;
  const terminal = isTerminal(run.status);
  useEffect(() => {
    if (!id || terminal) return;
    const off = watchCommand(id, (e) => {
      if (e.resync) { void poll(id); return; }
      if (typeof e.seq === 'number') dispatch({ type: 'frame', seq: e.seq, payload: e.payload });
      if (typeof e.status === 'string') {
        dispatch({ type: 'status', status: e.status });
        if (isTerminal(e.status)) void detail(id);
      }
    });
    const timer = setInterval(() => void poll(id), POLL_MS);
    return () => { off(); clearInterval(timer); };
  }, [id, terminal, watchCommand, poll, detail]);

  // A run opened (new, or from the history): its progress so far, and its detail when it has ended.
  useEffect(() => { if (id) void poll(id); }, [id, poll]);

  const start = useCallback((cid: string, status: string) => dispatch({ type: 'created', id: cid, status }), []);
  const fail = useCallback((e: string) => dispatch({ type: 'failed', error: e }), []);
  return [run, start, fail];
}

/** Per-hop latency over the cycles (one line per hop) and loss per hop and cycle (the cells under it). */
function MtrGraph({ run }: { run: RunState }) {
  const i18n = useI18n();
  const { t } = i18n;
  const hist = run.history;
  if (hist.length < 1) return null;
  const ttls = [...new Set(hist.flatMap((h) => h.hops.map((x) => x.ttl)))].sort((a, b) => a - b);
  const W = 640, H = 180, L = 56, R = 8, T = 8, B = 20;
  const maxMs = Math.max(1, ...hist.flatMap((h) => h.hops.map((x) => x.last_ms ?? 0)));
  const c0 = hist[0].cycle, c1 = Math.max(hist[hist.length - 1].cycle, c0 + 1);
  const x = (c: number) => L + ((c - c0) / (c1 - c0)) * (W - L - R);
  const y = (ms: number) => T + (H - T - B) * (1 - ms / maxMs);
  const cellW = (W - L - R) / hist.length;
  const rowH = 10;
  return (
    <figure className="mtr-graph" data-testid="mtr-graph">
      <svg viewBox={`0 0 ${W} ${H + ttls.length * rowH + 6}`} width="100%" role="img" aria-label={t('diag.mtrGraph')}>
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line x1={L} x2={W - R} y1={y(maxMs * f)} y2={y(maxMs * f)} className="grid-line" />
            <text x={L - 4} y={y(maxMs * f) + 4} textAnchor="end" className="axis">{formatValue('ms', maxMs * f, i18n.locale)}</text>
          </g>
        ))}
        {ttls.map((ttl, i) => {
          const pts = hist.map((h) => ({ c: h.cycle, v: h.hops.find((x) => x.ttl === ttl)?.last_ms ?? null })).filter((p) => p.v !== null);
          if (!pts.length) return null;
          return <path key={ttl} d={pts.map((p, j) => `${j ? 'L' : 'M'}${x(p.c).toFixed(1)},${y(p.v!).toFixed(1)}`).join('') + (pts.length === 1 ? 'm-1,0h2' : '')}
            fill="none" stroke={PALETTE[i % PALETTE.length]} strokeWidth={1.5} />;
        })}
        <text x={L} y={H - 4} className="axis">{t('diag.cycleN', { n: c0 })}</text>
        <text x={W - R} y={H - 4} textAnchor="end" className="axis">{t('diag.cycleN', { n: hist[hist.length - 1].cycle })}</text>
        {ttls.map((ttl, r) => (
          <g key={'l' + ttl}>
            <text x={L - 4} y={H + r * rowH + 8} textAnchor="end" className="axis">{ttl}</text>
            {hist.map((h, j) => {
              const loss = h.hops.find((x) => x.ttl === ttl)?.loss_pct ?? 0;
              return <rect key={j} x={L + j * cellW} y={H + r * rowH} width={Math.max(1, cellW - 0.5)} height={rowH - 2}
                fill={loss >= 50 ? 'var(--bad)' : loss > 0 ? 'var(--warn)' : 'var(--ok)'} opacity={loss > 0 ? 0.9 : 0.35} />;
            })}
          </g>
        ))}
      </svg>
      <figcaption className="muted small">{t('diag.mtrGraphNote')}</figcaption>
    </figure>
  );
}

function HopTable({ hops, locale }: { hops: Hop[]; locale: string }) {
  const { t } = useI18n();
  const ms = (v: number | null) => (v === null ? '—' : formatValue('ms', v, locale));
  return (
    <div className="table-wrap">
      <table className="compact" data-testid="hop-table">
        <thead><tr><th scope="col">#</th><th scope="col">{t('diag.host')}</th><th scope="col">{t('diag.loss')}</th><th scope="col">{t('diag.sent')}</th>
          <th scope="col">{t('diag.last')}</th><th scope="col">{t('diag.avg')}</th><th scope="col">{t('diag.best')}</th><th scope="col">{t('diag.worst')}</th><th scope="col">{t('diag.jitter')}</th></tr></thead>
        <tbody>
          {hops.map((h) => (
            <tr key={h.ttl} data-testid="hop-row">
              <td>{h.ttl}</td>
              <td><code>{h.ip ?? '???'}</code>{h.addrs.length > 1 && <span className="muted small"> +{h.addrs.length - 1}</span>}</td>
              <td><span className={h.loss_pct >= 50 ? 'pill pill-bad' : h.loss_pct > 0 ? 'pill pill-warn' : ''}>{formatValue('percent', h.loss_pct, locale)}</span></td>
              <td>{h.sent}</td><td>{ms(h.last_ms)}</td><td>{ms(h.avg_ms)}</td><td>{ms(h.min_ms)}</td><td>{ms(h.max_ms)}</td><td>{ms(h.jitter_ms)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Results({ tool, run }: { tool: string; run: RunState }) {
  const i18n = useI18n();
  const { t } = i18n;
  const ms = (v: number | null | undefined) => (v === null || v === undefined ? '—' : formatValue('ms', v, i18n.locale));
  if (tool === 'mtr' || tool === 'traceroute') {
    return (
      <>
        {run.hops.length > 0 && <p className="muted small">{t('diag.cycle', { n: run.cycle })} · {run.reached ? t('diag.reached') : t('diag.notReached')}</p>}
        {run.hops.length > 0 && <HopTable hops={run.hops} locale={i18n.locale} />}
        {tool === 'mtr' && <MtrGraph run={run} />}
      </>
    );
  }
  if (tool === 'ping') {
    return (
      <div className="grid cards">
        {run.ping.map((p) => (
          <Card key={p.target} title={<code>{p.target}</code>} testid="ping-target">
            {p.summary && <p>{t('diag.pingSummary', { sent: p.summary.sent, received: p.summary.received, loss: formatValue('percent', p.summary.loss_pct, i18n.locale), avg: ms(p.summary.avg_ms), min: ms(p.summary.min_ms), max: ms(p.summary.max_ms) })}</p>}
            <ul className="list">
              {p.replies.slice(-10).map((r) => <li key={r.seq}><span>#{r.seq}</span><span>{r.rtt_ms === null ? <Pill kind="bad">{t('diag.timeout')}</Pill> : ms(r.rtt_ms)}</span></li>)}
            </ul>
          </Card>
        ))}
      </div>
    );
  }
  if (tool === 'sweep' || tool === 'portscan') {
    const s = run.scan;
    return s ? (
      <>
        <div className="bar" aria-hidden="true"><div className="bar-fill" style={{ width: `${s.total ? (100 * s.done) / s.total : 0}%` }} /></div>
        <p className="muted small">{t('diag.scanned', { done: i18n.number(s.done), total: i18n.number(s.total), found: i18n.number(s.found.length) })}</p>
        <ul className="list" data-testid="scan-found">
          {s.found.slice(0, 500).map((f, i) => {
            const o = (f ?? {}) as Record<string, unknown>;
            return <li key={i}><code>{String(o.ip ?? o.host ?? o.port ?? JSON.stringify(f))}</code><span className="muted small">{String(o.service ?? o.banner ?? o.rtt_ms ?? '')}</span></li>;
          })}
        </ul>
      </>
    ) : null;
  }
  return run.output ? <pre className="token" data-testid="run-output">{JSON.stringify(run.output, null, 2)}</pre> : null;
}

function describeArgs(a: Record<string, unknown>): string {
  const v = a.target ?? a.targets ?? a.host ?? a.cidrs ?? a.name ?? a.url ?? '';
  return Array.isArray(v) ? v.join(', ') : String(v);
}

export default function Diagnostics() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const pops = useGet<Page<Pop>>('/pops' + query({ limit: 500 }));
  const [popId, setPopId] = useState('');
  const [tool, setTool] = useState<Tool>('mtr');
  const [form, setForm] = useState<DiagForm>(emptyForm);
  const [touched, setTouched] = useState(false);
  const [missing, setMissing] = useState(false);
  const [runTool, setRunTool] = useState<string>('mtr');
  const [run, start, fail] = useRun();
  const history = useGet<Page<CommandView>>(can('commands:read') ? '/commands' + query({ pop_id: popId || undefined, limit: 20 }) : null);
  const built = buildArgs(tool, form);
  const err = (f: keyof DiagForm) => (touched && built.errors[f] ? t(('diag.err.' + built.errors[f]) as MessageKey) : null);
  const popList = pops.data?.items ?? [];
  useEffect(() => { if (!popId && popList.length) setPopId(popList[0].id); }, [popId, popList]);

  const submit = async () => {
    setTouched(true);
    if (!built.args || !popId) return;
    setRunTool(tool);
    try {
      const r = await client.post<{ id: string; status: string }>('/commands', { name: tool, args: built.args, pop_id: popId });
      setTouched(false);
      start(r.data.id, r.data.status);
      history.reload();
    } catch (e) {
      // A 404 is either a POP gone or no commands API on this server: a list never answers 404, so ask it.
      if (e instanceof ApiError && e.status === 404) {
        client.get('/commands' + query({ limit: 1 })).catch((l: unknown) => { if (l instanceof ApiError && l.status === 404) setMissing(true); });
      }
      fail(e instanceof ApiError ? e.message : String(e));
    }
  };
  const toolName = (n: string) => ((TOOLS as readonly string[]).includes(n) ? t(('diag.tool.' + n) as MessageKey) : n);
  const open = async (c: CommandView) => {
    setRunTool(c.name);
    start(c.id, c.status);
  };
  const cancel = async () => {
    if (!run.id) return;
    try { await client.post(`/commands/${run.id}/cancel`); } catch (e) { fail(e instanceof ApiError ? e.message : String(e)); }
  };
  const input = (f: keyof DiagForm, label: MessageKey, placeholder?: string) => (
    <Field id={'diag-' + f} label={t(label)} error={err(f)}>
      <input id={'diag-' + f} value={form[f]} placeholder={placeholder} onChange={(e) => setForm({ ...form, [f]: e.target.value })} {...invalid('diag-' + f, err(f))} />
    </Field>
  );
  const fields = FIELDS[tool];
  return (
    <div className="page">
      <h1>{t('nav.diagnostics')}</h1>
      {missing && <NotAvailable />}
      {can('diagnostics:run') && (
        <Card testid="diag-form">
          <div className="form-grid" data-tour="diag-where">
            <Field id="diag-pop" label={t('devices.pop')}>
              <select id="diag-pop" value={popId} onChange={(e) => setPopId(e.target.value)}>
                {popList.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
              </select>
            </Field>
            <Field id="diag-tool" label={t('diag.tool')}>
              <select id="diag-tool" value={tool} onChange={(e) => { setTool(e.target.value as Tool); setTouched(false); }} data-testid="diag-tool">
                {TOOLS.map((x) => <option key={x} value={x}>{t(('diag.tool.' + x) as MessageKey)}</option>)}
              </select>
            </Field>
          </div>
          <div className="form-grid" data-tour="diag-fields">
            {fields.includes('targets') && input('targets', 'diag.targets', '8.8.8.8, 1.1.1.1')}
            {fields.includes('count') && input('count', 'diag.count')}
            {fields.includes('target') && input('target', 'diag.target', '200.160.2.3')}
            {fields.includes('cycles') && input('cycles', 'diag.cycles')}
            {fields.includes('protocol') && (
              <Field id="diag-protocol" label={t('diag.protocol')}>
                <select id="diag-protocol" value={form.protocol} onChange={(e) => setForm({ ...form, protocol: e.target.value })}>
                  {['icmp', 'udp', 'tcp'].map((p) => <option key={p} value={p}>{p.toUpperCase()}</option>)}
                </select>
              </Field>
            )}
            {fields.includes('cidrs') && input('cidrs', 'diag.cidrs', '100.64.0.0/24')}
            {fields.includes('host') && input('host', 'diag.host', '100.64.0.1')}
            {fields.includes('ports') && input('ports', 'diag.ports', '22, 80, 443, 8000-8080')}
            {fields.includes('name') && input('name', 'diag.name', 'registro.br')}
            {fields.includes('rtype') && (
              <Field id="diag-rtype" label={t('diag.rtype')}>
                <select id="diag-rtype" value={form.rtype} onChange={(e) => setForm({ ...form, rtype: e.target.value })}>
                  {['A', 'AAAA', 'MX', 'TXT', 'NS', 'CNAME', 'SOA', 'PTR', 'SRV', 'CAA'].map((r) => <option key={r} value={r}>{r}</option>)}
                </select>
              </Field>
            )}
            {fields.includes('servers') && input('servers', 'diag.servers', '1.1.1.1, 8.8.8.8')}
            {fields.includes('url') && input('url', 'diag.url', 'https://')}
          </div>
          <p className="muted small">{t(('diag.about.' + tool) as MessageKey)}</p>
          <button className="btn btn-primary" onClick={submit} disabled={!popId || (run.id !== null && !isTerminal(run.status))} data-testid="diag-run" data-tour="diag-run">{t('diag.run')}</button>
        </Card>
      )}
      {(run.id || run.error) && !missing && (
        <Card title={<>{toolName(runTool)} <StatusPill status={run.status} /></>} testid="diag-result" tour="diag-result">
          {run.agentState && run.agentState !== 'started' && <p className="notice">{t('diag.agentState', { state: run.agentState })}</p>}
          {run.error && <p className="notice notice-bad" role="alert" data-testid="run-error">{run.error}</p>}
          {run.id && !isTerminal(run.status) && <button className="btn btn-small" onClick={cancel} data-testid="diag-cancel">{t('common.cancel')}</button>}
          <Results tool={runTool} run={run} />
        </Card>
      )}
      {can('commands:read') && (
        <Card title={t('diag.history')} testid="diag-history">
          {history.error?.status === 404 && <NotAvailable />}
          {history.loading && !history.data && <Loading />}
          {history.error && history.error.status !== 404 && !history.data && <ErrorView error={history.error} onRetry={history.reload} />}
          {history.data && (
            <ul className="list">
              {history.data.items.map((c) => (
                <li key={c.id} data-testid="diag-history-row">
                  <span><strong>{toolName(c.name)}</strong> <code className="small">{describeArgs(c.args)}</code> <span className="muted small">{i18n.dateTime(c.created_at)}</span></span>
                  <span className="row"><StatusPill status={c.status} /><button className="btn btn-small" onClick={() => open(c)}>{t('diag.open')}</button></span>
                </li>
              ))}
              {history.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
            </ul>
          )}
        </Card>
      )}
    </div>
  );
}
