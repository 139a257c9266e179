// Reports: pick a kind (only those the user's permissions allow), a POP or customer, a range and a format; the
// control plane generates the CSV or PDF (GET /api/v1/reports/{kind}) and the browser saves it.
import { useState, type FormEvent } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { ApiError, query } from '../api/client';
import { REPORT_KINDS, reportQuery, type ReportKind as Kind } from '../lib/reports';
import type { Page, Pop } from '../api/types';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView } from '../components/ui';

interface Customer { id: string; name: string }

/** `YYYY-MM-DD` of a date in local time, for a date input. */
function day(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

export default function Reports() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const kinds = REPORT_KINDS.filter((k) => can(k.permission));
  const [kind, setKind] = useState<Kind | ''>(kinds[0]?.kind ?? '');
  const [format, setFormat] = useState<'csv' | 'pdf'>('pdf');
  const [pop, setPop] = useState('');
  const [customer, setCustomer] = useState('');
  const [by, setBy] = useState<'pop' | 'customer'>('pop');
  const [from, setFrom] = useState(() => day(new Date(Date.now() - 30 * 86_400_000)));
  const [to, setTo] = useState(() => day(new Date()));
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const pops = useGet<Page<Pop>>(can('pops:read') ? '/pops' + query({ limit: 500 }) : null);
  const customers = useGet<Page<Customer>>(can('customers:read') ? '/customers' + query({ limit: 500 }) : null);

  if (kinds.length === 0 || kind === '') return <div className="page"><h1>{t('reports.title')}</h1><p className="notice">{t('reports.none')}</p></div>;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true); setDone(null); setError(null);
    try {
      const q = reportQuery({ kind, format, lang: i18n.locale, pop, customer, by, from, to });
      const { blob, filename } = await client.download(`/reports/${kind}${q}`);
      const name = filename ?? `octoisp-${kind}.${format}`;
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      setDone(name);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'error', String(err)));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="page">
      <h1>{t('reports.title')}</h1>
      <Card>
        <form onSubmit={submit} data-testid="report-form">
          <div className="form-row" data-tour="report-kind">
            <label>{t('reports.kind')}
              <select data-testid="report-kind" value={kind} onChange={(e) => setKind(e.target.value as Kind)}>
                {kinds.map((k) => <option key={k.kind} value={k.kind}>{t(`reports.kind.${k.kind}` as MessageKey)}</option>)}
              </select>
            </label>
          </div>
          <div data-tour="report-scope" className="form-row">
            <label>{t('reports.pop')}
              {can('pops:read')
                ? <select data-testid="report-pop" value={pop} onChange={(e) => setPop(e.target.value)}>
                    <option value="">{t('reports.all')}</option>
                    {(pops.data?.items ?? []).map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
                  </select>
                : <input value={pop} onChange={(e) => setPop(e.target.value.trim())} placeholder="uuid" />}
            </label>
            <label>{t('reports.customer')}
              {can('customers:read')
                ? <select data-testid="report-customer" value={customer} onChange={(e) => setCustomer(e.target.value)}>
                    <option value="">{t('reports.all')}</option>
                    {(customers.data?.items ?? []).map((c) => <option key={c.id} value={c.id}>{c.name}</option>)}
                  </select>
                : <input value={customer} onChange={(e) => setCustomer(e.target.value.trim())} placeholder="uuid" />}
            </label>
            {kind === 'traffic' && (
              <label>{t('reports.by')}
                <select data-testid="report-by" value={by} onChange={(e) => setBy(e.target.value as 'pop' | 'customer')}>
                  <option value="pop">{t('reports.by.pop')}</option>
                  <option value="customer">{t('reports.by.customer')}</option>
                </select>
              </label>
            )}
            {kind !== 'inventory' && <>
              <label>{t('graph.from')}<input type="date" data-testid="report-from" value={from} max={to} onChange={(e) => setFrom(e.target.value)} required /></label>
              <label>{t('graph.to')}<input type="date" data-testid="report-to" value={to} min={from} onChange={(e) => setTo(e.target.value)} required /></label>
            </>}
          </div>
          {kind === 'inventory' && <p className="muted">{t('reports.snapshot')}</p>}
          <div className="row" data-tour="report-download">
            <div role="radiogroup" aria-label={t('reports.format')} className="row">
              <label className="inline"><input type="radio" name="format" value="pdf" checked={format === 'pdf'} onChange={() => setFormat('pdf')} data-testid="report-format-pdf" />PDF</label>
              <label className="inline"><input type="radio" name="format" value="csv" checked={format === 'csv'} onChange={() => setFormat('csv')} data-testid="report-format-csv" />CSV</label>
            </div>
            <button className="btn btn-primary" type="submit" disabled={busy} data-testid="report-download">{t('reports.download')}</button>
          </div>
        </form>
        <div role="status" aria-live="polite" data-testid="report-status">
          {busy && <p className="muted">{t('reports.generating')}</p>}
          {done && <p>{t('reports.done', { file: done })}</p>}
        </div>
        {error && <ErrorView error={error} />}
      </Card>
    </div>
  );
}
