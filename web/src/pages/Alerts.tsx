// Alerts: the active alerts (acknowledge, resolve, silence), the history, silences, maintenance windows and the
// rule editor. Buttons follow the user's permissions (alerts:ack, alerts:manage); the lists refetch on every
// live event, so an alert fired or acknowledged elsewhere shows up without a reload.
import { useEffect, useMemo, useState, type ReactNode } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { query } from '../api/client';
import type { Alert, AlertEvent, AlertRule, MaintenanceWindow, Page, Pop, RulePreview, Severity, Silence } from '../api/types';
import { client, Link, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable, Pill } from '../components/ui';
import { CsvButton } from '../components/CsvButton';
import { apiFieldErrors, DeleteButton, Field, invalid, localInput } from '../components/forms';
import { alertActions, draftFromRule, emptyDraft, fieldsOf, KINDS, MISSING, OPS, PREVIEW_RANGES, previewBody, ruleBody, SCOPES, SEVERITIES, shortDuration, timelineBars, type RuleDraft } from '../lib/alerts';

const TABS = ['active', 'history', 'silences', 'maintenance', 'rules'] as const;
type Tab = (typeof TABS)[number];

function currentTab(): Tab {
  const v = new URLSearchParams(window.location.search).get('tab');
  return (TABS as readonly string[]).includes(v ?? '') ? (v as Tab) : 'active';
}

export function SeverityPill({ severity }: { severity: Severity | string }) {
  const { t } = useI18n();
  return <span className={'pill sev-' + severity}>{t(('alerts.sev.' + severity) as MessageKey)}</span>;
}

function usePops(): Map<string, string> {
  const { can } = useApp();
  const pops = useGet<Page<Pop>>(can('pops:read') ? '/pops' + query({ limit: 500 }) : null);
  return useMemo(() => new Map((pops.data?.items ?? []).map((p) => [p.id, p.name])), [pops.data]);
}

function PopSelect({ id, value, onChange, pops, any, error }: { id: string; value: string; onChange(v: string): void; pops: Map<string, string>; any?: boolean; error?: string | null }) {
  const { t } = useI18n();
  const { can } = useApp();
  // Without pops:read the POP is typed as its id; with it, chosen by name (the list may still be loading).
  if (!can('pops:read')) return <input id={id} value={value} onChange={(e) => onChange(e.target.value)} placeholder="uuid" {...invalid(id, error)} />;
  return (
    <select id={id} value={value} onChange={(e) => onChange(e.target.value)} {...invalid(id, error)}>
      <option value="">{any ? t('alerts.any') : t('alerts.choose')}</option>
      {[...pops.entries()].map(([pid, name]) => <option key={pid} value={pid}>{name}</option>)}
    </select>
  );
}

// --- active ---------------------------------------------------------------------------------------------------

function Active({ onSilence }: { onSilence(a: Alert): void }) {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const [severity, setSeverity] = useState('');
  const list = useGet<Page<Alert>>('/alerts' + query({ state: 'firing', severity, limit: 200 }));
  const pops = usePops();
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const act = async (a: Alert, what: 'ack' | 'resolve') => {
    setBusy(a.id + what);
    setError(null);
    try { await client.post(`/alerts/${a.id}/${what}`); list.reload(); } catch (e) { setError(apiFieldErrors(e, []).general); } finally { setBusy(null); }
  };
  if (list.error?.status === 404) return <NotAvailable />;
  return (
    <Card>
      <div className="row" data-tour="alert-filters">
        <label className="inline">{t('alerts.severity')}
          <select value={severity} onChange={(e) => setSeverity(e.target.value)} data-testid="alert-severity">
            <option value="">{t('alerts.any')}</option>
            {SEVERITIES.map((s) => <option key={s} value={s}>{t(('alerts.sev.' + s) as MessageKey)}</option>)}
          </select>
        </label>
        <span className="spacer" />
        {list.data && <CsvButton name="alerts" header={[t('alerts.severity'), t('alerts.rule'), t('alerts.target'), t('alerts.since'), t('alerts.occurrences'), t('alerts.flapping'), t('alerts.acked')]}
          rows={() => list.data!.items.map((a) => [t(('alerts.sev.' + a.severity) as MessageKey), a.rule_name, a.target, i18n.dateTime(a.started_at), a.occurrences, a.flapping ? t('common.yes') : t('common.no'), a.acknowledged_at ? i18n.dateTime(a.acknowledged_at) : ''])} />}
      </div>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      {list.loading && !list.data && <Loading />}
      {list.error && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
      {list.data && (
        <div className="table-wrap" data-tour="alert-list">
          <table>
            <thead><tr>
              <th scope="col">{t('alerts.severity')}</th><th scope="col">{t('alerts.rule')}</th><th scope="col">{t('alerts.target')}</th>
              <th scope="col">{t('alerts.since')}</th><th scope="col">{t('alerts.occurrences')}</th><th scope="col">{t('alerts.status')}</th>
              <th scope="col"><span className="sr-only">{t('alerts.actions')}</span></th>
            </tr></thead>
            <tbody>
              {list.data.items.map((a) => {
                const can2 = alertActions(a, can);
                return (
                  <tr key={a.id} data-testid="alert-row" data-alert={a.id}>
                    <td><SeverityPill severity={a.severity} /></td>
                    <td>{a.rule_name}</td>
                    <td>{a.device_id ? <Link to={'/devices/' + a.device_id}>{a.target}</Link> : a.target} {a.pop_id && <span className="muted small">{pops.get(a.pop_id) ?? ''}</span>}</td>
                    <td title={i18n.dateTime(a.started_at)}>{i18n.relative(a.started_at)}</td>
                    <td>{i18n.number(a.occurrences)}</td>
                    <td>
                      {a.flapping && <Pill kind="warn">{t('alerts.flapping')}</Pill>}
                      {a.inhibited_by && <Pill kind="muted">{t('alerts.inhibited')}</Pill>}
                      {a.acknowledged_at
                        ? <span data-testid="alert-acked"><Pill kind="ok">{t('alerts.acked')}</Pill><span className="muted small">{i18n.relative(a.acknowledged_at)}</span></span>
                        : <Pill kind="bad">{t('alerts.unacked')}</Pill>}
                    </td>
                    <td className="row">
                      {can2.ack && <button className="btn btn-small btn-primary" disabled={busy !== null} onClick={() => act(a, 'ack')} data-testid="alert-ack">{t('alerts.ack')}</button>}
                      {can2.resolve && <button className="btn btn-small" disabled={busy !== null} onClick={() => act(a, 'resolve')} data-testid="alert-resolve">{t('alerts.resolve')}</button>}
                      {can2.silence && <button className="btn btn-small" onClick={() => onSilence(a)} data-testid="alert-silence">{t('alerts.silence')}</button>}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {list.data.items.length === 0 && <p className="muted" data-testid="alerts-none">{t('alerts.none')}</p>}
        </div>
      )}
    </Card>
  );
}

// --- history --------------------------------------------------------------------------------------------------

function History() {
  const i18n = useI18n();
  const { t } = i18n;
  const list = useGet<Page<AlertEvent>>('/alert-history' + query({ limit: 200 }));
  if (list.error?.status === 404) return <NotAvailable />;
  return (
    <Card>
      {list.loading && !list.data && <Loading />}
      {list.error && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
      {list.data && (
        <div className="table-wrap">
          <div className="row"><span className="spacer" />
            <CsvButton name="alert-history" header={[t('alerts.when'), t('alerts.event'), t('alerts.severity'), t('alerts.rule'), t('alerts.target'), t('alerts.suppressed')]}
              rows={() => list.data!.items.map((e) => [i18n.dateTime(e.event_ts ?? e.created_at), t(('alerts.kind.' + e.kind) as MessageKey), t(('alerts.sev.' + e.severity) as MessageKey), e.rule_name, e.target, e.suppressed ?? ''])} />
          </div>
          <table>
            <thead><tr><th scope="col">{t('alerts.when')}</th><th scope="col">{t('alerts.event')}</th><th scope="col">{t('alerts.severity')}</th>
              <th scope="col">{t('alerts.rule')}</th><th scope="col">{t('alerts.target')}</th><th scope="col">{t('alerts.suppressed')}</th></tr></thead>
            <tbody>
              {list.data.items.map((e) => (
                <tr key={e.id} data-testid="history-row">
                  <td>{i18n.dateTime(e.event_ts ?? e.created_at)}</td>
                  <td>{t(('alerts.kind.' + e.kind) as MessageKey)}</td>
                  <td><SeverityPill severity={e.severity} /></td>
                  <td>{e.rule_name}</td><td>{e.target}</td>
                  <td>{e.suppressed ? t(('alerts.supp.' + e.suppressed) as MessageKey) : ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {list.data.items.length === 0 && <p className="muted">{t('common.empty')}</p>}
        </div>
      )}
    </Card>
  );
}

// --- silences ---------------------------------------------------------------------------------------------------

export interface SilenceSeed { rule_id: string; device_id: string; pop_id: string; reason: string }

const DURATIONS = [1, 4, 24, 168];

function Silences({ seed }: { seed: SilenceSeed | null }) {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const list = useGet<Page<Silence>>('/silences' + query({ limit: 200 }));
  const rules = useGet<Page<AlertRule>>('/alert-rules' + query({ limit: 500 }));
  const pops = usePops();
  const ruleName = new Map((rules.data?.items ?? []).map((r) => [r.id, r.name]));
  const [f, setF] = useState<SilenceSeed & { hours: string }>(() => ({ rule_id: '', device_id: '', pop_id: '', reason: '', ...seed, hours: '4' }));
  const [errs, setErrs] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  const submit = async () => {
    setSaved(false);
    const e: Record<string, string> = {};
    if (!f.reason.trim()) e.reason = t('rules.err.required');
    if (f.device_id.trim() && !/^[0-9a-f-]{36}$/i.test(f.device_id.trim())) e.device_id = t('rules.err.uuid');
    setErrs(e);
    setGeneral(null);
    if (Object.keys(e).length) return;
    const body = {
      reason: f.reason.trim(), ends_at: new Date(Date.now() + Number(f.hours) * 3_600_000).toISOString(),
      rule_id: f.rule_id || null, device_id: f.device_id.trim() || null, pop_id: f.pop_id || null,
    };
    try {
      await client.post('/silences', body);
      setF({ rule_id: '', device_id: '', pop_id: '', reason: '', hours: '4' });
      setSaved(true);
      list.reload();
    } catch (err) {
      const r = apiFieldErrors(err, ['reason', 'ends_at', 'rule_id', 'device_id', 'pop_id']);
      setErrs(r.fields);
      setGeneral(r.general);
    }
  };
  if (list.error?.status === 404) return <NotAvailable />;
  return (
    <>
      {can('alerts:manage') && (
        <Card title={t('silences.new')} testid="silence-form" tour="silence-form">
          <div className="form-grid">
            <Field id="sil-reason" label={t('silences.reason')} error={errs.reason}>
              <input id="sil-reason" value={f.reason} onChange={(e) => setF({ ...f, reason: e.target.value })} maxLength={500} {...invalid('sil-reason', errs.reason)} />
            </Field>
            <Field id="sil-hours" label={t('silences.duration')}>
              <select id="sil-hours" value={f.hours} onChange={(e) => setF({ ...f, hours: e.target.value })}>
                {DURATIONS.map((h) => <option key={h} value={h}>{t('silences.hours', { n: h })}</option>)}
              </select>
            </Field>
            <Field id="sil-rule" label={t('alerts.rule')} error={errs.rule_id}>
              <select id="sil-rule" value={f.rule_id} onChange={(e) => setF({ ...f, rule_id: e.target.value })}>
                <option value="">{t('alerts.any')}</option>
                {(rules.data?.items ?? []).map((r) => <option key={r.id} value={r.id}>{r.name}</option>)}
              </select>
            </Field>
            <Field id="sil-pop" label={t('devices.pop')} error={errs.pop_id}>
              <PopSelect id="sil-pop" value={f.pop_id} onChange={(v) => setF({ ...f, pop_id: v })} pops={pops} any error={errs.pop_id} />
            </Field>
            <Field id="sil-device" label={t('silences.device')} error={errs.device_id}>
              <input id="sil-device" value={f.device_id} onChange={(e) => setF({ ...f, device_id: e.target.value })} placeholder={t('alerts.any')} {...invalid('sil-device', errs.device_id)} />
            </Field>
          </div>
          {general && <p className="notice notice-bad" role="alert">{general}</p>}
          <div className="row">
            <button className="btn btn-primary" onClick={submit} data-testid="silence-create">{t('common.create')}</button>
            {saved && <span className="muted" role="status">{t('common.saved')}</span>}
          </div>
        </Card>
      )}
      <Card title={t('silences.title')}>
        {list.loading && !list.data && <Loading />}
        {list.error && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
        {list.data && (
          <ul className="list">
            {list.data.items.map((s) => (
              <li key={s.id} data-testid="silence-row">
                <span>
                  <strong>{s.reason}</strong>{' '}
                  <span className="muted small">
                    {[s.rule_id && (ruleName.get(s.rule_id) ?? s.rule_id), s.pop_id && (pops.get(s.pop_id) ?? s.pop_id), s.device_id].filter(Boolean).join(' · ') || t('silences.everything')}
                    {' · '}{t('silences.until', { time: i18n.dateTime(s.ends_at) })}
                  </span>
                </span>
                {can('alerts:manage') && <DeleteButton testid="silence-delete" onDelete={async () => { await client.del('/silences/' + s.id); list.reload(); }} />}
              </li>
            ))}
            {list.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
          </ul>
        )}
      </Card>
    </>
  );
}

// --- maintenance -------------------------------------------------------------------------------------------------

function Maintenance() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const list = useGet<Page<MaintenanceWindow>>('/maintenance-windows' + query({ limit: 200 }));
  const pops = usePops();
  const blank = () => ({ scope: 'pop', scope_id: '', starts: localInput(Date.now()), ends: localInput(Date.now() + 2 * 3_600_000), reason: '' });
  const [f, setF] = useState(blank);
  const [errs, setErrs] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const submit = async () => {
    const e: Record<string, string> = {};
    if (!f.reason.trim()) e.reason = t('rules.err.required');
    if (f.scope !== 'provider' && !f.scope_id.trim()) e.scope_id = t('rules.err.required');
    const starts = Date.parse(f.starts), ends = Date.parse(f.ends);
    if (!(starts < ends)) e.ends_at = t('rules.err.order');
    setErrs(e);
    setGeneral(null);
    if (Object.keys(e).length) return;
    try {
      await client.post('/maintenance-windows', {
        scope: f.scope, scope_id: f.scope === 'provider' ? null : f.scope_id.trim(), reason: f.reason.trim(),
        starts_at: new Date(starts).toISOString(), ends_at: new Date(ends).toISOString(),
      });
      setF(blank());
      list.reload();
    } catch (err) {
      const r = apiFieldErrors(err, ['scope', 'scope_id', 'starts_at', 'ends_at', 'reason']);
      setErrs(r.fields);
      setGeneral(r.general);
    }
  };
  if (list.error?.status === 404) return <NotAvailable />;
  return (
    <>
      {can('alerts:manage') && (
        <Card title={t('maint.new')} testid="maint-form">
          <div className="form-grid">
            <Field id="mw-scope" label={t('rules.scope')}>
              <select id="mw-scope" value={f.scope} onChange={(e) => setF({ ...f, scope: e.target.value, scope_id: '' })}>
                {SCOPES.map((s) => <option key={s} value={s}>{t(('rules.scope.' + s) as MessageKey)}</option>)}
              </select>
            </Field>
            {f.scope !== 'provider' && (
              <Field id="mw-scope-id" label={t('rules.scopeId')} error={errs.scope_id}>
                {f.scope === 'pop'
                  ? <PopSelect id="mw-scope-id" value={f.scope_id} onChange={(v) => setF({ ...f, scope_id: v })} pops={pops} error={errs.scope_id} />
                  : <input id="mw-scope-id" value={f.scope_id} onChange={(e) => setF({ ...f, scope_id: e.target.value })} placeholder="uuid" {...invalid('mw-scope-id', errs.scope_id)} />}
              </Field>
            )}
            <Field id="mw-starts" label={t('maint.starts')} error={errs.starts_at}>
              <input id="mw-starts" type="datetime-local" value={f.starts} onChange={(e) => setF({ ...f, starts: e.target.value })} />
            </Field>
            <Field id="mw-ends" label={t('maint.ends')} error={errs.ends_at}>
              <input id="mw-ends" type="datetime-local" value={f.ends} onChange={(e) => setF({ ...f, ends: e.target.value })} {...invalid('mw-ends', errs.ends_at)} />
            </Field>
            <Field id="mw-reason" label={t('silences.reason')} error={errs.reason} wide>
              <input id="mw-reason" value={f.reason} onChange={(e) => setF({ ...f, reason: e.target.value })} maxLength={500} {...invalid('mw-reason', errs.reason)} />
            </Field>
          </div>
          {general && <p className="notice notice-bad" role="alert">{general}</p>}
          <button className="btn btn-primary" onClick={submit} data-testid="maint-create">{t('common.create')}</button>
        </Card>
      )}
      <Card title={t('maint.title')}>
        {list.loading && !list.data && <Loading />}
        {list.error && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
        {list.data && (
          <ul className="list">
            {list.data.items.map((m) => (
              <li key={m.id} data-testid="maint-row">
                <span><strong>{m.reason}</strong>{' '}
                  <span className="muted small">{t(('rules.scope.' + m.scope) as MessageKey)} {m.scope === 'pop' && m.scope_id ? pops.get(m.scope_id) ?? m.scope_id : m.scope_id ?? ''}
                    {' · '}{i18n.dateTime(m.starts_at)} → {i18n.dateTime(m.ends_at)}</span></span>
                {can('alerts:manage') && <DeleteButton testid="maint-delete" onDelete={async () => { await client.del('/maintenance-windows/' + m.id); list.reload(); }} />}
              </li>
            ))}
            {list.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
          </ul>
        )}
      </Card>
    </>
  );
}

// --- rules ----------------------------------------------------------------------------------------------------

const RULE_FIELDS = ['rule_key', 'name', 'scope', 'scope_id', 'metric', 'kind', 'op', 'threshold', 'recover_threshold', 'low', 'high',
  'hysteresis', 'absence_secs', 'severity', 'for_secs', 'recover_for_secs', 'missing_data', 'flap_window', 'flap_high', 'flap_low'];

function RuleEditor({ rule, onDone }: { rule: AlertRule | null; onDone(): void }) {
  const { t } = useI18n();
  const pops = usePops();
  const [d, setD] = useState<RuleDraft>(() => (rule ? draftFromRule(rule) : emptyDraft()));
  const [touched, setTouched] = useState(false);
  const [server, setServer] = useState<{ fields: Record<string, string>; general: string | null }>({ fields: {}, general: null });
  const [busy, setBusy] = useState(false);
  const local = ruleBody(d);
  const err = (f: string): string | null => server.fields[f] ?? (touched && local.errors[f] ? t(('rules.err.' + local.errors[f]) as MessageKey) : null);
  const show = fieldsOf(d.kind);
  const set = (patch: Partial<RuleDraft>) => { setD({ ...d, ...patch }); setServer({ fields: {}, general: null }); };
  const save = async () => {
    setTouched(true);
    if (!local.body) return;
    setBusy(true);
    try {
      if (rule) await client.patch('/alert-rules/' + rule.id, local.body);
      else await client.post('/alert-rules', local.body);
      onDone();
    } catch (e) {
      setServer(apiFieldErrors(e, RULE_FIELDS));
    } finally { setBusy(false); }
  };
  const text = (f: keyof RuleDraft, label: MessageKey, extra: Record<string, unknown> = {}): ReactNode => (
    <Field id={'rule-' + f} label={t(label)} error={err(f)}>
      <input id={'rule-' + f} value={String(d[f])} onChange={(e) => set({ [f]: e.target.value } as Partial<RuleDraft>)} {...invalid('rule-' + f, err(f))} {...extra} />
    </Field>
  );
  const select = (f: keyof RuleDraft, label: MessageKey, options: readonly string[], prefix: string | null): ReactNode => (
    <Field id={'rule-' + f} label={t(label)} error={err(f)}>
      <select id={'rule-' + f} value={String(d[f])} onChange={(e) => set({ [f]: e.target.value } as Partial<RuleDraft>)}>
        {options.map((o) => <option key={o} value={o}>{prefix ? t((prefix + o) as MessageKey) : o}</option>)}
      </select>
    </Field>
  );
  const check = (f: 'flap_enabled' | 'is_uplink' | 'enabled', label: MessageKey): ReactNode => (
    <label className="inline"><input type="checkbox" checked={d[f]} onChange={(e) => set({ [f]: e.target.checked })} />{t(label)}</label>
  );
  return (
    <Card title={rule ? t('rules.edit', { name: rule.name }) : t('rules.new')} testid="rule-form">
      <div className="form-grid">
        {text('name', 'rules.name')}
        {text('rule_key', 'rules.key', { placeholder: 'cpu-alta' })}
        {text('metric', 'rules.metric', { placeholder: 'cpu.load_percent', list: 'rule-metrics' })}
        <datalist id="rule-metrics">
          {['cpu.load_percent', 'if.in_bps', 'if.out_bps', 'ping.loss_ratio', 'ping.rtt_avg_ms', 'onu.rx_dbm', 'mem.available_bytes', 'cpu.temperature_celsius'].map((m) => <option key={m} value={m} />)}
        </datalist>
        {select('kind', 'rules.kind', KINDS, 'rules.kind.')}
        {select('severity', 'alerts.severity', SEVERITIES, 'alerts.sev.')}
        {select('scope', 'rules.scope', SCOPES, 'rules.scope.')}
        {d.scope !== 'provider' && (
          <Field id="rule-scope_id" label={t('rules.scopeId')} error={err('scope_id')}>
            {d.scope === 'pop'
              ? <PopSelect id="rule-scope_id" value={d.scope_id} onChange={(v) => set({ scope_id: v })} pops={pops} error={err('scope_id')} />
              : <input id="rule-scope_id" value={d.scope_id} onChange={(e) => set({ scope_id: e.target.value })} placeholder="uuid" {...invalid('rule-scope_id', err('scope_id'))} />}
          </Field>
        )}
        {show.op && select('op', 'rules.op', OPS, null)}
        {show.threshold && text('threshold', 'rules.threshold', { inputMode: 'decimal' })}
        {show.threshold && text('recover_threshold', 'rules.recoverThreshold', { inputMode: 'decimal' })}
        {show.optical && text('low', 'rules.low', { inputMode: 'decimal' })}
        {show.optical && text('high', 'rules.high', { inputMode: 'decimal' })}
        {show.optical && text('hysteresis', 'rules.hysteresis', { inputMode: 'decimal' })}
        {show.absence && text('absence_secs', 'rules.absenceSecs', { inputMode: 'numeric' })}
        {text('for_secs', 'rules.forSecs', { inputMode: 'numeric' })}
        {text('recover_for_secs', 'rules.recoverForSecs', { inputMode: 'numeric' })}
        {select('missing_data', 'rules.missing', MISSING, 'rules.missing.')}
      </div>
      <div className="row">
        {check('enabled', 'rules.enabled')}
        {check('flap_enabled', 'rules.flap')}
        {check('is_uplink', 'rules.uplink')}
      </div>
      {server.general && <p className="notice notice-bad" role="alert" data-testid="rule-error">{server.general}</p>}
      <div className="row" style={{ marginTop: 12 }}>
        <button className="btn btn-primary" onClick={save} disabled={busy} data-testid="rule-save">{t('common.save')}</button>
        <button className="btn" onClick={onDone}>{t('common.cancel')}</button>
      </div>
      <RulePreviewPanel draft={d} ruleId={rule?.id ?? null} onErrors={(fields) => { setTouched(true); setServer({ fields, general: null }); }} />
    </Card>
  );
}

/**
 * What the rule as typed would have fired on the stored samples of the last hours (`POST /alert-rules/preview`,
 * evaluated by the alert engine's own state machine on the server): how many devices, a list, and a timeline per
 * target. Asked for on demand, not on every keystroke.
 */
function RulePreviewPanel({ draft, ruleId, onErrors }: { draft: RuleDraft; ruleId: string | null; onErrors(fields: Record<string, string>): void }) {
  const i18n = useI18n();
  const { t } = i18n;
  const [hours, setHours] = useState<number>(24);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<RulePreview | null>(null);
  const [error, setError] = useState<string | null>(null);
  const run = async () => {
    const p = previewBody(draft, hours, Date.now(), ruleId);
    if (!p.body) {
      onErrors(Object.fromEntries(Object.entries(p.errors).map(([f, code]) => [f, t(('rules.err.' + code) as MessageKey)])));
      return;
    }
    setBusy(true); setError(null);
    try {
      setResult((await client.post<RulePreview>('/alert-rules/preview', p.body)).data);
    } catch (e) {
      const r = apiFieldErrors(e, RULE_FIELDS);
      if (Object.keys(r.fields).length) onErrors(r.fields);
      setError(r.general ?? Object.values(r.fields)[0] ?? null);
      setResult(null);
    } finally { setBusy(false); }
  };
  const worst = (v: number | null) => (v === null ? '' : i18n.number(v));
  return (
    <section className="preview" aria-labelledby="rule-preview-title" data-testid="rule-preview" data-tour="rule-preview">
      <h3 id="rule-preview-title">{t('rules.preview.title')}</h3>
      <div className="row">
        <label htmlFor="rule-preview-range" className="inline">{t('rules.preview.range')}
          <select id="rule-preview-range" value={hours} onChange={(e) => setHours(Number(e.target.value))}>
            {PREVIEW_RANGES.map((h) => <option key={h} value={h}>{t('rules.preview.hours', { hours: h })}</option>)}
          </select>
        </label>
        <button className="btn" onClick={run} disabled={busy} data-testid="rule-preview-run">{busy ? t('common.loading') : t('rules.preview.run')}</button>
      </div>
      {error && <p className="notice notice-bad" role="alert" data-testid="rule-preview-error">{error}</p>}
      {result && (
        <div aria-live="polite">
          <p data-testid="rule-preview-summary">
            <strong>{t('rules.preview.devices', { n: result.devices_fired })}</strong>{' '}
            {t('rules.preview.totals', { intervals: result.intervals_total, notifications: result.notifications_total, evaluated: result.targets_evaluated })}
          </p>
          {result.targets_overridden > 0 && <p className="muted small">{t('rules.preview.overridden', { n: result.targets_overridden })}</p>}
          {(result.targets_not_evaluated > 0 || result.samples_truncated) && <p className="notice" data-testid="rule-preview-truncated">{t('rules.preview.truncated', { n: result.targets_not_evaluated })}</p>}
          {result.targets.length > 0 && (
            <div className="table-wrap">
              <table>
                <thead><tr><th scope="col">{t('alerts.target')}</th><th scope="col">{t('rules.preview.firing')}</th><th scope="col">{t('rules.preview.worst')}</th>
                  <th scope="col">{t('rules.preview.timeline')}</th></tr></thead>
                <tbody>
                  {result.targets.map((x) => {
                    const labels = Object.entries(x.labels ?? {}).filter(([k]) => k !== 'probe').map(([k, v]) => `${k}=${v}`).join(', ');
                    const bars = timelineBars(x.intervals, result.from, result.to);
                    const worstAll = x.intervals.reduce<number | null>((w, i) => (i.worst === null ? w : w === null ? i.worst : (Math.abs(i.worst) > Math.abs(w) ? i.worst : w)), null);
                    return (
                      <tr key={x.target_key} data-testid="rule-preview-row">
                        <td><Link to={'/devices/' + x.device_id}>{x.device_name}</Link>{labels && <span className="muted small"> ({labels})</span>}</td>
                        <td>{shortDuration(x.firing_secs)} · {t('rules.preview.times', { n: x.intervals.length + x.intervals_left_out })}</td>
                        <td>{worst(worstAll)}</td>
                        <td className="timeline-cell">
                          <svg className="timeline" viewBox="0 0 100 10" preserveAspectRatio="none" role="img"
                            aria-label={x.intervals.map((i) => `${i18n.dateTime(i.start)} – ${i.end ? i18n.dateTime(i.end) : t('rules.preview.open')}`).join('; ')}>
                            <rect x="0" y="3" width="100" height="4" className="timeline-track" />
                            {bars.map((b, k) => <rect key={k} x={b.left} y="1" width={b.width} height="8" className={b.open ? 'timeline-bar open' : 'timeline-bar'} />)}
                          </svg>
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
              {result.targets_left_out > 0 && <p className="muted small">{t('rules.preview.more', { n: result.targets_left_out })}</p>}
            </div>
          )}
          <p className="muted small">{t('rules.preview.span', { from: i18n.dateTime(result.from), to: i18n.dateTime(result.to) })}</p>
        </div>
      )}
    </section>
  );
}

function Rules() {
  const { t } = useI18n();
  const { can } = useApp();
  const list = useGet<Page<AlertRule>>('/alert-rules' + query({ limit: 500 }));
  const [editing, setEditing] = useState<AlertRule | 'new' | null>(null);
  if (list.error?.status === 404) return <NotAvailable />;
  const manage = can('alerts:manage');
  const describe = (r: AlertRule): string => {
    if (r.kind === 'threshold' || r.kind === 'rate') return `${r.metric} ${r.op ?? ''} ${r.threshold ?? ''}`;
    if (r.kind === 'optical') return `${r.metric} ∉ [${r.low ?? ''}, ${r.high ?? ''}]`;
    return `${r.metric} · ${t('rules.silentFor', { secs: r.absence_secs ?? 0 })}`;
  };
  return (
    <>
      {manage && !editing && <button className="btn btn-primary" onClick={() => setEditing('new')} data-testid="rule-new" data-tour="rule-new" style={{ marginBottom: 12 }}>{t('rules.new')}</button>}
      {editing && <RuleEditor key={editing === 'new' ? 'new' : editing.id} rule={editing === 'new' ? null : editing} onDone={() => { setEditing(null); list.reload(); }} />}
      <Card title={t('rules.title')}>
        {list.loading && !list.data && <Loading />}
        {list.error && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
        {list.data && (
          <div className="table-wrap">
            <table>
              <thead><tr><th scope="col">{t('rules.name')}</th><th scope="col">{t('rules.kind')}</th><th scope="col">{t('rules.condition')}</th>
                <th scope="col">{t('alerts.severity')}</th><th scope="col">{t('rules.scope')}</th><th scope="col">{t('rules.enabled')}</th>
                <th scope="col"><span className="sr-only">{t('alerts.actions')}</span></th></tr></thead>
              <tbody>
                {list.data.items.map((r) => (
                  <tr key={r.id} data-testid="rule-row">
                    <td><strong>{r.name}</strong> <code className="muted small">{r.rule_key}</code></td>
                    <td>{t(('rules.kind.' + r.kind) as MessageKey)}</td>
                    <td><code>{describe(r)}</code></td>
                    <td><SeverityPill severity={r.severity} /></td>
                    <td>{t(('rules.scope.' + r.scope) as MessageKey)}</td>
                    <td>{r.enabled ? t('common.yes') : t('common.no')}</td>
                    <td className="row">
                      {manage && <button className="btn btn-small" onClick={() => setEditing(r)} data-testid="rule-edit">{t('common.edit')}</button>}
                      {manage && <DeleteButton testid="rule-delete" onDelete={async () => { await client.del('/alert-rules/' + r.id); list.reload(); }} />}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            {list.data.items.length === 0 && <p className="muted">{t('common.empty')}</p>}
          </div>
        )}
      </Card>
    </>
  );
}

export default function Alerts() {
  const { t } = useI18n();
  const [tab, setTabState] = useState<Tab>(currentTab);
  const [seed, setSeed] = useState<SilenceSeed | null>(null);
  // Back/forward (or a link) to another tab of this page.
  useEffect(() => {
    const f = () => setTabState(currentTab());
    window.addEventListener('popstate', f);
    return () => window.removeEventListener('popstate', f);
  }, []);
  const setTab = (x: Tab) => {
    setTabState(x);
    const u = new URL(window.location.href);
    u.searchParams.set('tab', x);
    window.history.replaceState(null, '', u.pathname + u.search);
  };
  return (
    <div className="page">
      <h1>{t('nav.alerts')}</h1>
      <div className="tabs" role="tablist" aria-label={t('nav.alerts')} data-tour="alert-tabs">
        {TABS.map((x) => (
          <button key={x} role="tab" className="tab" aria-selected={tab === x} onClick={() => setTab(x)} data-testid={'tab-' + x}>{t(('alerts.tab.' + x) as MessageKey)}</button>
        ))}
      </div>
      <div role="tabpanel">
        {tab === 'active' && <Active onSilence={(a) => { setSeed({ rule_id: a.rule_id, device_id: a.device_id ?? '', pop_id: '', reason: '' }); setTab('silences'); }} />}
        {tab === 'history' && <History />}
        {tab === 'silences' && <Silences seed={seed} />}
        {tab === 'maintenance' && <Maintenance />}
        {tab === 'rules' && <Rules />}
      </div>
    </div>
  );
}
