// Device search: the form's fields map one to one to the API's query parameters (q, ip, vendor, status, pop,
// tag); pages follow the keyset cursor.
import { useEffect, useState, type FormEvent } from 'react';
import { useI18n } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Device, Page, Pop } from '../api/types';
import { client, navigate, useApp, useGet } from '../state';
import { CsvButton } from '../components/CsvButton';
import { Card, ErrorView, Loading, Pill } from '../components/ui';

interface Filters { q: string; ip: string; vendor: string; status: '' | 'online' | 'offline'; pop: string; tag: string }
const EMPTY: Filters = { q: '', ip: '', vendor: '', status: '', pop: '', tag: '' };

function fromUrl(): Filters {
  const p = new URLSearchParams(window.location.search);
  const status = p.get('status');
  return {
    q: p.get('q') ?? '', ip: p.get('ip') ?? '', vendor: p.get('vendor') ?? '', pop: p.get('pop') ?? '', tag: p.get('tag') ?? '',
    status: status === 'online' || status === 'offline' ? status : '',
  };
}

export default function Devices() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can, tick } = useApp();
  const pops = useGet<Page<Pop>>(can('pops:read') ? '/pops' + query({ limit: 500 }) : null);
  const [form, setForm] = useState<Filters>(fromUrl);
  const [applied, setApplied] = useState<Filters>(fromUrl);
  const [items, setItems] = useState<Device[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(false);

  async function load(f: Filters, after: string | null) {
    setLoading(true);
    try {
      const r = await client.get<Page<Device>>('/devices' + query({ ...f, limit: 50, cursor: after }));
      setItems((prev) => (after && prev ? [...prev, ...r.data.items] : r.data.items));
      setCursor(r.data.next_cursor);
      setError(null);
    } catch (e) {
      setError(e instanceof ApiError ? e : new ApiError(0, 'error', String(e)));
    } finally { setLoading(false); }
  }

  useEffect(() => { load(applied, null); }, [applied, tick]); // eslint-disable-line react-hooks/exhaustive-deps

  function submit(e: FormEvent) {
    e.preventDefault();
    const q = query({ ...form });
    window.history.replaceState(null, '', '/devices' + q);
    setApplied({ ...form });
  }
  const set = (k: keyof Filters) => (e: { target: { value: string } }) => setForm({ ...form, [k]: e.target.value });
  const popName = new Map((pops.data?.items ?? []).map((p) => [p.id, p.name]));

  return (
    <div className="page">
      <h1>{t('devices.title')}</h1>
      <Card>
        <form className="filters" onSubmit={submit} role="search">
          <label className="grow" data-tour="search">{t('devices.q')}<input name="q" data-testid="device-q" value={form.q} onChange={set('q')} /></label>
          <div className="filters-more" data-tour="filters">
            <label>{t('devices.ip')}<input name="ip" value={form.ip} onChange={set('ip')} placeholder="10.0.0.0/24" /></label>
            <label>{t('devices.vendor')}<input name="vendor" value={form.vendor} onChange={set('vendor')} /></label>
            <label>{t('devices.status')}
              <select name="status" value={form.status} onChange={set('status')}>
                <option value="">{t('devices.statusAny')}</option>
                <option value="online">{t('devices.online')}</option>
                <option value="offline">{t('devices.offline')}</option>
              </select>
            </label>
            {pops.data && (
              <label>{t('devices.pop')}
                <select name="pop" value={form.pop} onChange={set('pop')}>
                  <option value="">{t('devices.popAny')}</option>
                  {pops.data.items.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
                </select>
              </label>
            )}
            <label>{t('devices.tag')}<input name="tag" value={form.tag} onChange={set('tag')} /></label>
          </div>
          <div className="row">
            <button className="btn btn-primary" type="submit" data-testid="device-search">{t('common.search')}</button>
            <button className="btn btn-ghost" type="button" onClick={() => { setForm(EMPTY); window.history.replaceState(null, '', '/devices'); setApplied(EMPTY); }}>{t('common.clear')}</button>
          </div>
        </form>
      </Card>
      {error && !items && <ErrorView error={error} />}
      {error && items && error.status === 400 && <p className="notice notice-bad" role="alert">{error.message}</p>}
      {loading && !items && <Loading />}
      {items && (
        <Card tour="results">
          <div className="row">
            <p className="muted small" data-testid="device-count">{t('devices.count', { count: i18n.number(items.length) })}</p>
            <span className="spacer" />
            <CsvButton name="devices" header={[t('devices.name'), t('devices.key'), t('devices.serial'), t('devices.vendor'), t('devices.model'), t('devices.mgmtIp'), t('devices.pop'), t('devices.status'), t('devices.lastSeen')]}
              rows={() => items.map((d) => [d.name, d.device_key, d.serial_number, d.vendor, d.model, d.mgmt_ip, popName.get(d.pop_id) ?? d.pop_id, d.online ? t('devices.online') : t('devices.offline'), i18n.dateTime(d.last_seen)])} />
          </div>
          <div className="table-wrap">
            <table>
              <thead><tr>
                <th>{t('devices.name')}</th><th>{t('devices.serial')}</th><th>{t('devices.vendor')}</th><th>{t('devices.mgmtIp')}</th>
                <th>{t('devices.pop')}</th><th>{t('devices.status')}</th><th>{t('devices.lastSeen')}</th>
              </tr></thead>
              <tbody>
                {items.map((d) => (
                  <tr key={d.id} className="clickable" data-testid="device-row" tabIndex={0}
                    onClick={() => navigate('/devices/' + d.id)} onKeyDown={(e) => { if (e.key === 'Enter') navigate('/devices/' + d.id); }}>
                    <td><strong>{d.name ?? d.device_key}</strong></td>
                    <td><code>{d.serial_number ?? t('common.none')}</code></td>
                    <td>{[d.vendor, d.model].filter(Boolean).join(' ') || t('common.none')}</td>
                    <td><code>{d.mgmt_ip ?? t('common.none')}</code></td>
                    <td>{popName.get(d.pop_id) ?? d.pop_id.slice(0, 8)}</td>
                    <td>{d.online ? <Pill kind="ok">{t('devices.online')}</Pill> : <Pill kind="bad">{t('devices.offline')}</Pill>}</td>
                    <td title={i18n.dateTime(d.last_seen)}>{i18n.relative(d.last_seen)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {items.length === 0 && <p className="muted">{t('common.empty')}</p>}
          </div>
          {cursor && <button className="btn" disabled={loading} onClick={() => load(applied, cursor)}>{t('common.more')}</button>}
        </Card>
      )}
    </div>
  );
}
