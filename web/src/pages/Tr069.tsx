// A CPE's TR-069 page: its normalized summary (WAN, Wi-Fi, optical power on a green/yellow/red gauge), the
// parameter tree (browse level by level, or search; pages of 200), editing a value (a tr069.set_params command
// followed live), refresh, reboot and factory reset (confirmed), and the history of its TR-069 tasks.
import { useCallback, useEffect, useRef, useState, type FormEvent } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Page } from '../api/types';
import { client, Link, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable, Pill } from '../components/ui';
import { Field, invalid } from '../components/forms';
import { formatDbm, formatDuration } from '../lib/format';
import { isTerminal } from '../lib/diag';
import {
  checkValue, childLabel, crumbs, gaugeBands, gaugePosition, getParamsCommand, inferXsd, relativeName, rootOf, setParamsCommand,
  taskTarget, taskValues, XSD_TYPES, type Level, type OpticalRange, type Tr069Param, type Tr069Task, type Tr069View, type XsdType,
} from '../lib/tr069';
import './tr069.css';

const PAGE = 200;
const POLL_MS = 2500;

function statusKind(s: string): 'ok' | 'bad' | 'warn' | 'muted' {
  if (s === 'succeeded') return 'ok';
  if (['failed', 'expired', 'rejected', 'dead'].includes(s)) return 'bad';
  if (s === 'cancelled') return 'muted';
  return 'warn';
}

function TaskStatus({ status }: { status: string }) {
  const { t } = useI18n();
  return <Pill kind={statusKind(status)}><span data-testid="task-status" data-status={status}>{t(('diag.status.' + status) as MessageKey)}</span></Pill>;
}

function Gauge({ value, range, level, label, testid }: { value: number | null; range: OpticalRange; level: Level | null; label: string; testid: string }) {
  const i18n = useI18n();
  const { t } = i18n;
  return (
    <div data-testid={testid} data-level={level ?? 'none'}>
      <div className="muted small">{label}</div>
      {value === null
        ? <div className="muted">{t('tr069.noValue')}</div>
        : <div className={'level level-' + level}>{formatDbm(value, i18n.locale)} <span className="small">{t(('tr069.level.' + level) as MessageKey)}</span></div>}
      <div className="gauge" role="img" aria-label={t('tr069.gaugeLabel', { min: formatDbm(range.green_min, i18n.locale), max: formatDbm(range.green_max, i18n.locale) })}>
        {gaugeBands(range).map((b, i) => <div key={i} className={'gauge-band gauge-' + b.level} style={{ width: `${b.to - b.from}%` }} />)}
        {value !== null && <div className="gauge-mark" style={{ left: `${gaugePosition(value, range)}%` }} />}
      </div>
      <div className="muted small">{t('tr069.range', { min: formatDbm(range.green_min, i18n.locale), max: formatDbm(range.green_max, i18n.locale) })}</div>
    </div>
  );
}

function SummaryCards({ v }: { v: Tr069View }) {
  const i18n = useI18n();
  const { t } = i18n;
  const s = v.summary;
  const none = t('common.none');
  const wanType = s.wan.connection_type;
  const known = ['pppoe', 'dhcp', 'static', 'bridge'];
  return (
    <div className="grid cards" data-tour="tr-summary">
      <Card title={t('tr069.wan')} testid="tr-wan">
        <dl className="kv">
          <dt>{t('tr069.wanType')}</dt><dd>{wanType ? (known.includes(wanType) ? t(('tr069.wanType.' + wanType) as MessageKey) : wanType) : none}</dd>
          <dt>{t('tr069.wanIp')}</dt><dd><code data-testid="tr-wan-ip">{s.wan.ip ?? none}</code></dd>
          <dt>{t('tr069.wanStatus')}</dt><dd>{s.wan.status === 'up' ? <Pill kind="ok">{t('tr069.up')}</Pill> : s.wan.status === 'down' ? <Pill kind="bad">{t('tr069.down')}</Pill> : (s.wan.status ?? none)}</dd>
          {s.wan.pppoe_user && <><dt>{t('tr069.pppoeUser')}</dt><dd><code>{s.wan.pppoe_user}</code></dd></>}
        </dl>
      </Card>
      <Card title={t('tr069.wifi')} testid="tr-wifi">
        <dl className="kv">
          <dt>{t('tr069.ssids')}</dt><dd data-testid="tr-ssids">{s.wifi.ssids.length ? s.wifi.ssids.map((x) => <Pill key={x} kind="muted">{x}</Pill>) : none}</dd>
          <dt>{t('tr069.channel')}</dt><dd>{s.wifi.channel ?? none}</dd>
          <dt>{t('tr069.clients')}</dt><dd>{s.wifi.clients === null ? none : i18n.number(s.wifi.clients)}</dd>
        </dl>
      </Card>
      <Card title={t('tr069.optical')} testid="tr-optical">
        <Gauge value={s.optical.rx_dbm} range={s.optical.rx_range} level={s.optical.rx_level} label={t('tr069.rx')} testid="optical-rx" />
        <Gauge value={s.optical.tx_dbm} range={s.optical.tx_range} level={s.optical.tx_level} label={t('tr069.tx')} testid="optical-tx" />
      </Card>
      <Card title={t('tr069.device')}>
        <dl className="kv">
          <dt>{t('devices.oui')}</dt><dd><code>{v.oui ?? none}</code></dd>
          <dt>{t('devices.productClass')}</dt><dd>{v.product_class ?? none}</dd>
          <dt>{t('devices.serial')}</dt><dd><code>{v.serial_number ?? none}</code></dd>
          <dt>{t('devices.firmware')}</dt><dd>{s.firmware ?? v.firmware ?? none}</dd>
          <dt>{t('tr069.uptime')}</dt><dd>{s.uptime_s === null ? none : formatDuration(s.uptime_s)}</dd>
          <dt>{t('tr069.updated')}</dt><dd>{v.updated_at ? `${i18n.dateTime(v.updated_at)} (${i18n.relative(v.updated_at)})` : none}</dd>
        </dl>
      </Card>
    </div>
  );
}

/** Follows one command until it ends: live events, a poll as a fallback, then its result. */
function useTask(onEnd: () => void): [Tr069Task | null, (id: string) => void] {
  const { watchCommand } = useApp();
  const [task, setTask] = useState<Tr069Task | null>(null);
  const id = task?.id ?? null;
  const done = task ? isTerminal(task.status) : true;
  const ended = useRef(onEnd);
  ended.current = onEnd;
  const fetchIt = useCallback(async (cid: string) => {
    try {
      const r = await client.get<Tr069Task>('/commands/' + cid);
      setTask((cur) => (cur && cur.id !== cid ? cur : r.data));
      if (isTerminal(r.data.status)) ended.current();
    } catch { /* next poll */ }
  }, []);
  useEffect(() => {
    if (!id || done) return;
    const off = watchCommand(id, (e) => { if (e.resync || typeof e.status === 'string') void fetchIt(id); });
    const timer = setInterval(() => void fetchIt(id), POLL_MS);
    return () => { off(); clearInterval(timer); };
  }, [id, done, watchCommand, fetchIt]);
  const follow = useCallback((cid: string) => {
    setTask({ id: cid, name: '', args: {}, status: 'queued', error: null, created_at: new Date().toISOString(), finished_at: null, output: null, result_ts: null });
    void fetchIt(cid);
  }, [fetchIt]);
  return [task, follow];
}

function ParamRow({ p, prefix, canWrite, onSet }: { p: Tr069Param; prefix: string; canWrite: boolean; onSet(p: Tr069Param, value: string, type: XsdType): Promise<void> }) {
  const i18n = useI18n();
  const { t } = i18n;
  const [editing, setEditing] = useState(false);
  const [value, setValue] = useState(p.value);
  const [type, setType] = useState<XsdType>(() => inferXsd(p.value));
  const [busy, setBusy] = useState(false);
  const error = checkValue(value, type);
  const id = 'edit-' + p.name.replace(/[^a-zA-Z0-9]/g, '-');
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (error) return;
    setBusy(true);
    try { await onSet(p, value, type); setEditing(false); } finally { setBusy(false); }
  };
  const editable = canWrite && p.writable !== false;
  return (
    <tr data-testid="param-row" data-name={p.name}>
      <td className="param-name"><code>{relativeName(p.name, prefix)}</code></td>
      <td className="param-value">
        {editing ? (
          <form className="edit-row" onSubmit={submit}>
            <Field id={id} label={t('tr069.newValue')} error={error ? t(('tr069.err.' + error) as MessageKey) : null}>
              <input id={id} value={value} onChange={(e) => setValue(e.target.value)} autoFocus data-testid="param-input" {...invalid(id, error)} />
            </Field>
            <Field id={id + '-type'} label={t('tr069.type')}>
              <select id={id + '-type'} value={type} onChange={(e) => setType(e.target.value as XsdType)}>
                {XSD_TYPES.map((x) => <option key={x} value={x}>{x}</option>)}
              </select>
            </Field>
            <button className="btn btn-primary btn-small" type="submit" disabled={busy || !!error} data-testid="param-save">{t('tr069.write')}</button>
            <button className="btn btn-small" type="button" onClick={() => { setEditing(false); setValue(p.value); }}>{t('common.cancel')}</button>
            {p.writable === null && <p className="muted small">{t('tr069.writableUnknown')}</p>}
          </form>
        ) : <code data-testid="param-value">{p.value === '' ? '""' : p.value}</code>}
      </td>
      <td className="small muted">{i18n.relative(p.ts)}</td>
      <td>
        {p.writable === true && <Pill kind="ok">{t('tr069.writable')}</Pill>}
        {p.writable === false && <Pill kind="muted">{t('tr069.readOnly')}</Pill>}
        {editable && !editing && <button className="btn btn-small" onClick={() => setEditing(true)} data-testid="param-edit" aria-label={t('tr069.editName', { name: p.name })}>{t('tr069.edit')}</button>}
      </td>
    </tr>
  );
}

function Confirm({ title, body, confirm, onConfirm, onCancel }: { title: string; body: string; confirm: string; onConfirm(): void; onCancel(): void }) {
  const { t } = useI18n();
  useEffect(() => {
    const k = (e: KeyboardEvent) => { if (e.key === 'Escape') onCancel(); };
    window.addEventListener('keydown', k);
    return () => window.removeEventListener('keydown', k);
  }, [onCancel]);
  return (
    <div className="modal-back">
      <div className="modal" role="alertdialog" aria-modal="true" aria-labelledby="confirm-title" aria-describedby="confirm-body" data-testid="confirm">
        <h2 id="confirm-title">{title}</h2>
        <p id="confirm-body">{body}</p>
        <div className="row">
          <button className="btn btn-danger" onClick={onConfirm} data-testid="confirm-yes" autoFocus>{confirm}</button>
          <button className="btn" onClick={onCancel}>{t('common.cancel')}</button>
        </div>
      </div>
    </div>
  );
}

export default function Tr069({ id }: { id: string }) {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const [prefix, setPrefix] = useState('');
  const [search, setSearch] = useState('');
  const [q, setQ] = useState('');
  const [more, setMore] = useState<Tr069Param[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [asking, setAsking] = useState<'reboot' | 'factory_reset' | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const browsing = q === '';
  const view = useGet<Tr069View>(`/devices/${id}/tr069` + query(browsing ? { prefix: prefix || undefined, direct: 'true', limit: PAGE } : { q, limit: PAGE }));
  const tasks = useGet<Page<Tr069Task>>(`/devices/${id}/tr069/tasks` + query({ limit: 20 }));
  const [task, follow] = useTask(() => { view.reload(); tasks.reload(); });
  const v = view.data;

  // A new level or search starts from its first page.
  useEffect(() => { setMore([]); setCursor(null); }, [prefix, q]);
  useEffect(() => { const h = setTimeout(() => setQ(search.trim()), 300); return () => clearTimeout(h); }, [search]);

  const loadMore = async () => {
    const next = cursor ?? v?.parameters.next_cursor;
    if (!next) return;
    const r = await client.get<Tr069View>(`/devices/${id}/tr069` + query(browsing ? { prefix: prefix || undefined, direct: 'true', limit: PAGE, cursor: next } : { q, limit: PAGE, cursor: next }));
    setMore((m) => [...m, ...r.data.parameters.items]);
    setCursor(r.data.parameters.next_cursor ?? '');
  };

  const run = async (body: Record<string, unknown>) => {
    setActionError(null);
    try {
      const r = await client.post<{ id: string }>('/commands', body);
      follow(r.data.id);
      tasks.reload();
    } catch (e) { setActionError(e instanceof ApiError ? e.message : String(e)); }
  };
  const setParam = async (p: Tr069Param, value: string, type: XsdType) => run(setParamsCommand(id, p.name, value, type));
  const root = v ? rootOf([...v.parameters.items.map((p) => p.name), ...v.children.map((c) => c.path)]) : 'InternetGatewayDevice.';

  if (view.error?.status === 404 && !v) return <div className="page"><Link to={'/devices/' + id} className="back">← {t('common.back')}</Link><NotAvailable /></div>;
  const items = [...(v?.parameters.items ?? []), ...more];
  const hasMore = cursor === null ? !!v?.parameters.next_cursor : cursor !== '';
  return (
    <div className="page">
      <Link to={'/devices/' + id} className="back">← {t('common.back')}</Link>
      <h1 data-testid="tr069-title">{t('tr069.title')} {v && <code className="small">{v.device_key}</code>}</h1>
      {view.loading && !v && <Loading />}
      {view.error && !v && <ErrorView error={view.error} onRetry={view.reload} />}
      {v && (
        <>
          <div className="row" data-tour="tr-actions" style={{ marginBottom: 'var(--gap)' }}>
            {can('tr069:read') && <button className="btn" onClick={() => run(getParamsCommand(id, root))} data-testid="tr-refresh">{t('tr069.refresh')}</button>}
            {can('tr069:reboot') && <button className="btn" onClick={() => setAsking('reboot')} data-testid="tr-reboot">{t('tr069.reboot')}</button>}
            {can('tr069:reboot') && <button className="btn btn-danger" onClick={() => setAsking('factory_reset')} data-testid="tr-factory-reset">{t('tr069.factoryReset')}</button>}
          </div>
          {actionError && <p className="notice notice-bad" role="alert" data-testid="tr-action-error">{actionError}</p>}
          {task && (
            <Card title={<>{t('tr069.currentTask')} <TaskStatus status={task.status} /></>} testid="tr-task">
              <p><strong>{task.name ? t(('tr069.task.' + task.name.replace('tr069.', '')) as MessageKey) : ''}</strong> <code className="small">{taskTarget(task)}</code></p>
              {!isTerminal(task.status) && <p className="muted small">{t('tr069.taskWaiting')}</p>}
              {task.error && <p className="notice notice-bad" role="alert">{task.error}</p>}
              {taskValues(task.output).length > 0 && (
                <ul className="list">{taskValues(task.output).map((x) => <li key={x.name}><code className="small">{x.name}</code><code>{x.value}</code></li>)}</ul>
              )}
            </Card>
          )}
          <SummaryCards v={v} />
          <Card title={t('tr069.params', { total: i18n.number(v.total) })} testid="tr-tree" tour="tr-tree">
            <div className="filters">
              <label htmlFor="tr-search" className="sr-only">{t('tr069.search')}</label>
              <input id="tr-search" type="search" value={search} placeholder={t('tr069.search')} onChange={(e) => setSearch(e.target.value)} data-testid="tr-search" data-tour="tr-search" />
            </div>
            {browsing ? (
              <nav className="crumbs" aria-label={t('tr069.path')}>
                <button onClick={() => setPrefix('')} aria-current={prefix === '' ? 'location' : undefined}>{t('tr069.root')}</button>
                {crumbs(prefix).map((c) => <span key={c.path}>/ <button onClick={() => setPrefix(c.path)} aria-current={c.path === prefix ? 'location' : undefined}>{c.label}</button></span>)}
              </nav>
            ) : <p className="muted small" data-testid="tr-matched">{t('tr069.matched', { n: i18n.number(v.matched) })}</p>}
            {browsing && v.children.length > 0 && (
              <ul className="tree-list" data-testid="tr-children">
                {v.children.map((c) => (
                  <li key={c.path}><button className="tree-node" onClick={() => setPrefix(c.path)} data-testid="tr-child"><span>▸ {childLabel(c.path, prefix)}</span><span className="muted small">{i18n.number(c.parameters)}</span></button></li>
                ))}
              </ul>
            )}
            {items.length > 0 && (
              <div className="table-wrap">
                <table className="compact">
                  <thead><tr><th scope="col">{t('tr069.name')}</th><th scope="col">{t('tr069.value')}</th><th scope="col">{t('tr069.reported')}</th><th scope="col"><span className="sr-only">{t('tr069.edit')}</span></th></tr></thead>
                  <tbody>{items.map((p) => <ParamRow key={p.name + p.ts} p={p} prefix={browsing ? prefix : ''} canWrite={can('tr069:write')} onSet={setParam} />)}</tbody>
                </table>
              </div>
            )}
            {items.length === 0 && v.children.length === 0 && <p className="muted">{v.total === 0 ? t('tr069.noParams') : t('common.empty')}</p>}
            {hasMore && <button className="btn" onClick={loadMore} data-testid="tr-more">{t('tr069.more')}</button>}
          </Card>
          <Card title={t('tr069.tasks')} testid="tr-tasks" tour="tr-tasks">
            {tasks.error && !tasks.data && <ErrorView error={tasks.error} onRetry={tasks.reload} />}
            {tasks.data && (
              <ul className="list">
                {tasks.data.items.map((x) => (
                  <li key={x.id} data-testid="tr-task-row">
                    <span><strong>{t(('tr069.task.' + x.name.replace('tr069.', '')) as MessageKey)}</strong> <code className="small">{taskTarget(x)}</code> <span className="muted small">{i18n.dateTime(x.created_at)}</span>
                      {x.error && <span className="small" style={{ color: 'var(--bad)' }}> {x.error}</span>}</span>
                    <span className="row"><TaskStatus status={x.status} /><button className="btn btn-small" onClick={() => follow(x.id)}>{t('diag.open')}</button></span>
                  </li>
                ))}
                {tasks.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
              </ul>
            )}
          </Card>
        </>
      )}
      {asking && (
        <Confirm title={t(asking === 'reboot' ? 'tr069.rebootTitle' : 'tr069.factoryResetTitle')}
          body={t(asking === 'reboot' ? 'tr069.rebootBody' : 'tr069.factoryResetBody')}
          confirm={t(asking === 'reboot' ? 'tr069.reboot' : 'tr069.factoryReset')}
          onCancel={() => setAsking(null)}
          onConfirm={() => { const name = 'tr069.' + asking; setAsking(null); void run({ name, device_id: id, args: {} }); }} />
      )}
    </div>
  );
}
