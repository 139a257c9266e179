// A POP's agent configuration: the newest version and where each agent stands (applied version, latest push),
// an editor (a form for ping monitors, one for the ACS provisioning templates, or the whole document as JSON,
// checked as typed), saved as a new version
// against the version it was based on (409: someone saved meanwhile), and the history with each version's document.
import { useEffect, useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Device, Page, Pop } from '../api/types';
import { client, Link, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable, Pill } from '../components/ui';
import { Field, invalid } from '../components/forms';
import {
  deliveryState, emptyMonitor, monitorRows, parseDocument, redactedPaths, withMonitors,
  type AgentConfigDocument, type AgentConfigVersion, type AgentConfigView, type AgentConfigWritten, type MonitorRow,
} from '../lib/agentConfig';
import { templateRows, withTemplates, type TemplateRow } from '../lib/templates';
import TemplatesEditor from './TemplatesEditor';
import './agentConfig.css';

type Mode = 'form' | 'templates' | 'json';

const STATE_KIND = { current: 'ok', pending: 'warn', failed: 'bad', old: 'warn', none: 'muted' } as const;

function pretty(v: unknown): string {
  return JSON.stringify(v, null, 2);
}

export default function AgentConfig({ popId }: { popId: string }) {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const writer = can('agents:write');
  const pop = useGet<Pop>('/pops/' + popId);
  const cfg = useGet<AgentConfigView>(`/pops/${popId}/agent-config`);
  const versions = useGet<AgentConfigVersion[]>(`/pops/${popId}/agent-config/versions` + query({ limit: 20 }));
  const [mode, setMode] = useState<Mode>('form');
  const [base, setBase] = useState<number | null>(null);
  const [text, setText] = useState('');
  const [rows, setRows] = useState<MonitorRow[]>([]);
  const [tpls, setTpls] = useState<TemplateRow[]>([]);
  const [comment, setComment] = useState('');
  const [touched, setTouched] = useState(false);
  const [saved, setSaved] = useState<AgentConfigWritten | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [conflict, setConflict] = useState(false);
  const [busy, setBusy] = useState(false);
  const [shown, setShown] = useState<AgentConfigDocument | null>(null);
  const c = cfg.data;

  // Load the editor from the newest version once (live refetches must not overwrite what is being typed).
  const load = (v: AgentConfigView | AgentConfigDocument, version: number) => {
    setBase(version);
    setText(pretty(v.config));
    setRows(monitorRows(v.config));
    setTpls(templateRows(v.config));
    setTouched(false);
    setConflict(false);
    setError(null);
  };
  useEffect(() => { if (c && base === null) load(c, c.version); }, [c, base]);

  const parsed = parseDocument(text);
  const fromForm = mode === 'form' && parsed.config ? withMonitors(parsed.config, rows) : null;
  const fromTpl = mode === 'templates' && parsed.config ? withTemplates(parsed.config, tpls) : null;
  const doc = mode === 'form' ? fromForm?.config ?? null : mode === 'templates' ? fromTpl?.config ?? null : parsed.config;
  // The POP's known devices, for the templates' preview.
  const devices = useGet<Page<Device>>(mode === 'templates' && can('devices:read') ? '/devices' + query({ pop: popId, limit: 500 }) : null);
  const redacted = doc ? redactedPaths(doc) : [];
  const switchMode = (m: Mode) => {
    if (m === mode) return;
    // What the current tab holds becomes the document the next tab starts from.
    const current = mode === 'form' ? fromForm?.config : mode === 'templates' ? fromTpl?.config : parsed.config;
    if (current && mode !== 'json') setText(pretty(current));
    const from = current ?? parsed.config;
    if (m === 'form' && from) setRows(monitorRows(from));
    if (m === 'templates' && from) setTpls(templateRows(from));
    setMode(m);
  };

  const save = async () => {
    setTouched(true);
    setSaved(null);
    if (!doc || base === null) return;
    setBusy(true);
    setError(null);
    try {
      const r = await client.request<AgentConfigWritten>('PUT', `/pops/${popId}/agent-config`, { config: doc, base_version: base, comment: comment.trim() || null });
      setSaved(r.data);
      setBase(r.data.version);
      setText(pretty(doc));
      setComment('');
      setTouched(false);
      cfg.reload();
      versions.reload();
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) setConflict(true);
      setError(e instanceof ApiError ? e.message : String(e));
    } finally { setBusy(false); }
  };

  const show = async (v: number) => {
    try { setShown((await client.get<AgentConfigDocument>(`/pops/${popId}/agent-config/versions/${v}`)).data); } catch (e) { setError(e instanceof ApiError ? e.message : String(e)); }
  };

  if (cfg.error?.status === 404 && !c) return <div className="page"><Link to="/pops" className="back">← {t('common.back')}</Link><NotAvailable /></div>;
  const rowErr = (i: number, f: 'name' | 'targets' | 'interval_s' | 'count') => {
    const e = touched ? fromForm?.errors[i]?.[f] : undefined;
    return e ? t(('agentcfg.err.' + e) as MessageKey) : null;
  };
  const setRow = (i: number, patch: Partial<MonitorRow>) => setRows(rows.map((r, j) => (j === i ? { ...r, ...patch } : r)));
  return (
    <div className="page">
      <Link to="/pops" className="back">← {t('common.back')}</Link>
      <h1>{t('agentcfg.title', { pop: pop.data?.name ?? '' })}</h1>
      {cfg.loading && !c && <Loading />}
      {cfg.error && !c && <ErrorView error={cfg.error} onRetry={cfg.reload} />}
      {c && (
        <>
          <Card title={t('agentcfg.current')} testid="agentcfg-current" tour="agentcfg-current">
            <p><strong data-testid="agentcfg-version">{t('agentcfg.version', { n: c.version })}</strong>
              {c.created_at && <span className="muted small"> · {i18n.dateTime(c.created_at)}</span>}
              {c.comment && <span className="muted small"> · {c.comment}</span>}</p>
            <div className="table-wrap">
              <table className="compact" data-testid="agentcfg-agents">
                <thead><tr><th scope="col">{t('agents.hostname')}</th><th scope="col">{t('agentcfg.applied')}</th><th scope="col">{t('agentcfg.push')}</th><th scope="col">{t('agents.lastSeen')}</th></tr></thead>
                <tbody>
                  {c.agents.map((a) => {
                    const st = deliveryState(a, c.version);
                    return (
                      <tr key={a.agent_id} data-testid="agentcfg-agent">
                        <td>{a.hostname}</td>
                        <td><Pill kind={STATE_KIND[st]}>{t(('agentcfg.state.' + st) as MessageKey, { n: a.applied_version ?? 0 })}</Pill></td>
                        <td>{a.last_version !== null ? <>{t('agentcfg.version', { n: a.last_version })} · {t(('diag.status.' + (a.last_status ?? 'queued')) as MessageKey)}</> : t('common.none')}
                          {a.last_error && <div className="small" style={{ color: 'var(--bad)' }}>{a.last_error}</div>}</td>
                        <td>{a.last_seen ? i18n.relative(a.last_seen) : t('common.none')}</td>
                      </tr>
                    );
                  })}
                  {c.agents.length === 0 && <tr><td colSpan={4} className="muted">{t('agentcfg.noAgents')}</td></tr>}
                </tbody>
              </table>
            </div>
          </Card>
          <Card title={writer ? t('agentcfg.edit') : t('agentcfg.document')} testid="agentcfg-editor" tour="agentcfg-editor">
            <div className="tabs" role="tablist">
              <button className="tab" role="tab" aria-selected={mode === 'form'} onClick={() => switchMode('form')} disabled={mode === 'json' && !parsed.config} data-testid="agentcfg-tab-form">{t('agentcfg.pingForm')}</button>
              <button className="tab" role="tab" aria-selected={mode === 'templates'} onClick={() => switchMode('templates')} disabled={mode === 'json' && !parsed.config} data-testid="agentcfg-tab-templates">{t('agentcfg.templates')}</button>
              <button className="tab" role="tab" aria-selected={mode === 'json'} onClick={() => switchMode('json')} data-testid="agentcfg-tab-json">{t('agentcfg.json')}</button>
            </div>
            {mode === 'form' && (
              <div data-testid="agentcfg-monitors">
                {rows.map((r, i) => (
                  <div className="monitor-row" key={i} data-testid="agentcfg-monitor">
                    <Field id={`m${i}-name`} label={t('agentcfg.name')} error={rowErr(i, 'name')}>
                      <input id={`m${i}-name`} value={r.name} readOnly={!writer} onChange={(e) => setRow(i, { name: e.target.value })} {...invalid(`m${i}-name`, rowErr(i, 'name'))} />
                    </Field>
                    <Field id={`m${i}-targets`} label={t('agentcfg.targets')} error={rowErr(i, 'targets')}>
                      <input id={`m${i}-targets`} value={r.targets} readOnly={!writer} placeholder="192.0.2.1, 2001:db8::1" onChange={(e) => setRow(i, { targets: e.target.value })} {...invalid(`m${i}-targets`, rowErr(i, 'targets'))} />
                    </Field>
                    <Field id={`m${i}-interval`} label={t('agentcfg.interval')} error={rowErr(i, 'interval_s')}>
                      <input id={`m${i}-interval`} inputMode="decimal" value={r.interval_s} readOnly={!writer} onChange={(e) => setRow(i, { interval_s: e.target.value })} {...invalid(`m${i}-interval`, rowErr(i, 'interval_s'))} />
                    </Field>
                    <Field id={`m${i}-count`} label={t('agentcfg.count')} error={rowErr(i, 'count')}>
                      <input id={`m${i}-count`} inputMode="numeric" value={r.count} readOnly={!writer} onChange={(e) => setRow(i, { count: e.target.value })} {...invalid(`m${i}-count`, rowErr(i, 'count'))} />
                    </Field>
                    {writer && <button className="btn btn-small btn-danger" onClick={() => setRows(rows.filter((_, j) => j !== i))}>{t('common.delete')}</button>}
                  </div>
                ))}
                {rows.length === 0 && <p className="muted">{t('agentcfg.noMonitors')}</p>}
                {writer && <button className="btn btn-small" onClick={() => setRows([...rows, emptyMonitor()])} data-testid="agentcfg-add">{t('agentcfg.addMonitor')}</button>}
                <p className="muted small">{t('agentcfg.formNote')}</p>
              </div>
            )}
            {mode === 'templates' && (
              <TemplatesEditor rows={tpls} setRows={setTpls} errors={touched ? fromTpl?.errors ?? null : null} writer={writer} devices={devices.data ?? null} />
            )}
            {mode === 'json' && (
              <Field id="agentcfg-json" label={t('agentcfg.json')} error={parsed.error ? t('agentcfg.jsonError', { line: parsed.line ?? 1, message: parsed.error === 'object' ? t('agentcfg.notObject') : parsed.error }) : null}>
                <textarea id="agentcfg-json" className="json-editor" spellCheck={false} value={text} readOnly={!writer} onChange={(e) => setText(e.target.value)} data-testid="agentcfg-json" {...invalid('agentcfg-json', parsed.error)} />
              </Field>
            )}
            {redacted.length > 0 && <p className="notice" data-testid="agentcfg-redacted">{t('agentcfg.redacted', { keys: redacted.join(', ') })}</p>}
            {writer && (
              <div className="form-row">
                <label htmlFor="agentcfg-comment">{t('agentcfg.comment')}<input id="agentcfg-comment" value={comment} maxLength={500} onChange={(e) => setComment(e.target.value)} data-testid="agentcfg-comment" /></label>
                <button className="btn btn-primary" onClick={save} disabled={busy} data-testid="agentcfg-save" data-tour="agentcfg-save">{t('agentcfg.save')}</button>
              </div>
            )}
            {error && (
              <div className="notice notice-bad" role="alert" data-testid="agentcfg-error">
                {conflict ? t('agentcfg.conflict') : error}
                {conflict && <button className="btn btn-small" onClick={() => { setBase(null); cfg.reload(); }}>{t('agentcfg.reload')}</button>}
              </div>
            )}
            {saved && <p className="notice" role="status" data-testid="agentcfg-saved">{saved.changed ? t('agentcfg.saved', { n: saved.version, agents: saved.commands.length }) : t('agentcfg.unchanged')}</p>}
          </Card>
          <Card title={t('agentcfg.history')} testid="agentcfg-history" tour="agentcfg-history">
            {versions.data && (
              <ul className="list">
                {versions.data.map((v) => (
                  <li key={v.version} data-testid="agentcfg-history-row">
                    <span><strong>{t('agentcfg.version', { n: v.version })}</strong> <span className="muted small">{i18n.dateTime(v.created_at)} · {v.sections.join(', ')}</span> {v.comment && <span className="small">{v.comment}</span>}</span>
                    <button className="btn btn-small" onClick={() => show(v.version)}>{t('agentcfg.view')}</button>
                  </li>
                ))}
                {versions.data.length === 0 && <li className="muted">{t('common.empty')}</li>}
              </ul>
            )}
            {shown && (
              <div data-testid="agentcfg-shown">
                <h3>{t('agentcfg.version', { n: shown.version })}</h3>
                <pre className="token">{pretty(shown.config)}</pre>
                <div className="row">
                  {writer && <button className="btn btn-small" onClick={() => { const b = base; load(shown, b ?? shown.version); setShown(null); }}>{t('agentcfg.restore')}</button>}
                  <button className="btn btn-small" onClick={() => setShown(null)}>{t('common.close')}</button>
                </div>
              </div>
            )}
          </Card>
        </>
      )}
    </div>
  );
}
