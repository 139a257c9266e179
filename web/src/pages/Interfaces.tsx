// Interface monitoring of a POP (`/pops/<id>/interfaces`): every monitored interface of the POP's devices with
// its current traffic, utilisation, errors and status, busiest first (or by the column chosen, kept in the URL's
// `sort`), pages of 100 ("load more"), each row linking to the interface's graphs on the device page.
import { useEffect, useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { query, type ApiError } from '../api/client';
import type { Page, Pop } from '../api/types';
import { client, Link, navigate, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable, Pill } from '../components/ui';
import { formatBits } from '../lib/format';
import {
  appendPage, errorsPerSecond, graphLink, ifLabel, ifStatus, parseSort, utilisationLevel,
  type IfStatus, type PopInterface, type Sort,
} from '../lib/interfaces';

const PAGE = 100;
const STATUS_PILL: Record<IfStatus, 'ok' | 'bad' | 'muted' | 'warn'> = {
  up: 'ok', down: 'bad', disabled: 'muted', dormant: 'warn', other: 'warn', unknown: 'muted',
};

function SortHeader({ sort, current, onSort, label }: { sort: Sort; current: Sort; onSort(s: Sort): void; label: MessageKey }) {
  const { t } = useI18n();
  const active = sort === current;
  return (
    <th aria-sort={active ? (sort === 'name' ? 'ascending' : 'descending') : undefined}>
      <button className={'btn btn-ghost btn-small th-sort' + (active ? ' active' : '')} onClick={() => onSort(sort)} data-testid={'ifmon-sort-' + sort}>
        {t(label)}{active ? (sort === 'name' ? ' ↑' : ' ↓') : ''}
      </button>
    </th>
  );
}

export default function Interfaces({ popId }: { popId: string }) {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const [sort, setSortState] = useState<Sort>(() => parseSort(new URLSearchParams(window.location.search).get('sort')));
  const pops = useGet<Page<Pop>>('/pops' + query({ limit: 500 }));
  const first = useGet<Page<PopInterface>>(`/pops/${popId}/interfaces` + query({ sort, limit: PAGE }));
  const [more, setMore] = useState<{ rows: PopInterface[]; cursor: string | null } | null>(null);
  const [moreError, setMoreError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  // A new sort or POP starts from the first page again.
  useEffect(() => { setMore(null); setMoreError(null); }, [popId, sort]);

  const setSort = (s: Sort) => {
    setSortState(s);
    const u = new URL(window.location.href);
    u.searchParams.set('sort', s);
    window.history.replaceState(null, '', u.pathname + u.search);
  };
  const rows = more ? appendPage(first.data?.items ?? [], more.rows) : first.data?.items ?? [];
  const cursor = more ? more.cursor : first.data?.next_cursor ?? null;
  async function loadMore() {
    if (!cursor) return;
    setBusy(true);
    try {
      const r = await client.get<Page<PopInterface>>(`/pops/${popId}/interfaces` + query({ sort, limit: PAGE, cursor }));
      setMore({ rows: [...(more?.rows ?? []), ...r.data.items], cursor: r.data.next_cursor });
      setMoreError(null);
    } catch (e) { setMoreError(e as ApiError); } finally { setBusy(false); }
  }

  const pop = pops.data?.items.find((p) => p.id === popId);
  const bits = (v: number | null) => (v === null ? t('common.none') : formatBits(v, i18n.locale));
  const rate = (v: number | null) => (v === null ? t('common.none') : t('ifmon.perSecond', { n: i18n.number(v) }));
  const header = (s: Sort, label: MessageKey) => <SortHeader sort={s} current={sort} onSort={setSort} label={label} />;

  return (
    <div className="page">
      <div className="row">
        <Link to="/pops" className="back">← {t('nav.pops')}</Link>
      </div>
      <h1>{t('ifmon.title', { pop: pop?.name ?? '' })}</h1>
      <div className="filters" data-tour="ifmon-pop">
        <label>{t('ifmon.pop')}
          <select value={popId} onChange={(e) => navigate(`/pops/${e.target.value}/interfaces?sort=${sort}`)} data-testid="ifmon-pop">
            {!pop && <option value={popId}>{t('common.loading')}</option>}
            {pops.data?.items.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
          </select>
        </label>
        <label>{t('ifmon.sortBy')}
          <select value={sort} onChange={(e) => setSort(parseSort(e.target.value))} data-testid="ifmon-sort">
            {(['busiest', 'utilisation', 'errors', 'in', 'out', 'name'] as const).map((s) => <option key={s} value={s}>{t(`ifmon.sort.${s}`)}</option>)}
          </select>
        </label>
      </div>
      {first.loading && !first.data && <Loading />}
      {first.error?.status === 404 && !first.data && <NotAvailable />}
      {first.error && first.error.status !== 404 && !first.data && <ErrorView error={first.error} onRetry={first.reload} />}
      {first.data && (
        <Card tour="ifmon-list" testid="ifmon-list">
          {rows.length === 0 ? <p className="muted" data-testid="ifmon-empty">{t('ifmon.none')}</p> : (
            <div className="table-wrap">
              <table>
                <caption className="sr-only">{t('ifmon.caption')}</caption>
                <thead><tr>
                  {header('name', 'ifmon.interface')}
                  <th>{t('ifmon.status')}</th>
                  {header('in', 'ifmon.in')}
                  {header('out', 'ifmon.out')}
                  {header('utilisation', 'ifmon.utilisation')}
                  {header('errors', 'ifmon.errors')}
                  <th>{t('ifmon.discards')}</th>
                  <th>{t('ifmon.updated')}</th>
                </tr></thead>
                <tbody>
                  {rows.map((r) => {
                    const st = ifStatus(r);
                    const lvl = utilisationLevel(r.utilisation);
                    const discards = errorsPerSecond({ in_errors_per_s: r.in_discards_per_s, out_errors_per_s: r.out_discards_per_s });
                    const errs = errorsPerSecond(r);
                    return (
                      <tr key={r.device_id + '/' + r.if_index} data-testid="ifmon-row" data-if={ifLabel(r)} data-device={r.device_key}>
                        <td>
                          {can('devices:read')
                            ? <Link to={graphLink(r)} className="strong">{ifLabel(r)}</Link>
                            : <strong>{ifLabel(r)}</strong>}
                          <div className="muted small">{r.device_name ?? r.device_key}{r.if_alias ? ' · ' + r.if_alias : ''}</div>
                        </td>
                        <td><Pill kind={STATUS_PILL[st]}>{t(`ifmon.status.${st}` as MessageKey)}</Pill></td>
                        <td className="num">{bits(r.in_bps)}</td>
                        <td className="num">{bits(r.out_bps)}</td>
                        <td className="num" data-testid="ifmon-util" data-level={lvl}>
                          {r.utilisation === null ? t('common.none') : (
                            <span className="util">
                              <span className="bar" aria-hidden="true"><span className={'bar-fill util-' + lvl} style={{ width: Math.min(100, r.utilisation * 100) + '%' }} /></span>
                              {i18n.percent(r.utilisation)}
                            </span>
                          )}
                          {r.speed_bps !== null && <div className="muted small">{t('ifmon.of', { speed: formatBits(r.speed_bps, i18n.locale) })}</div>}
                        </td>
                        <td className={'num' + (errs ? ' text-bad' : '')}>{rate(errs)}</td>
                        <td className="num">{rate(discards)}</td>
                        <td>{r.updated_at ? <span title={i18n.dateTime(r.updated_at)}>{i18n.relative(r.updated_at)}</span> : <span className="muted">{t('ifmon.noRecent')}</span>}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )}
          {moreError && <ErrorView error={moreError} onRetry={loadMore} />}
          {cursor && <button className="btn" onClick={loadMore} disabled={busy} data-testid="ifmon-more">{t('common.more')}</button>}
        </Card>
      )}
    </div>
  );
}
