import { useEffect, useState, type FormEvent } from 'react';
import { useI18n } from '../i18n';
import { ApiError, query } from '../api/client';
import type { AuditEntry, Page } from '../api/types';
import { client, useApp } from '../state';
import { Card, ErrorView, Loading } from '../components/ui';

export default function Audit() {
  const i18n = useI18n();
  const { t } = i18n;
  const { tick } = useApp();
  const [action, setAction] = useState('');
  const [target, setTarget] = useState('');
  const [applied, setApplied] = useState({ action: '', target_type: '' });
  const [items, setItems] = useState<AuditEntry[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);

  async function load(after: string | null) {
    try {
      const r = await client.get<Page<AuditEntry>>('/audit' + query({ ...applied, limit: 50, cursor: after }));
      setItems((prev) => (after && prev ? [...prev, ...r.data.items] : r.data.items));
      setCursor(r.data.next_cursor);
      setError(null);
    } catch (e) { setError(e instanceof ApiError ? e : new ApiError(0, 'error', String(e))); }
  }
  useEffect(() => { load(null); }, [applied, tick]); // eslint-disable-line react-hooks/exhaustive-deps

  function submit(e: FormEvent) { e.preventDefault(); setApplied({ action, target_type: target }); }

  return (
    <div className="page">
      <h1>{t('audit.title')}</h1>
      <Card>
        <form className="form-row" onSubmit={submit} role="search">
          <label>{t('audit.filterAction')}<input value={action} onChange={(e) => setAction(e.target.value)} /></label>
          <label>{t('audit.filterTarget')}<input value={target} onChange={(e) => setTarget(e.target.value)} /></label>
          <button className="btn btn-primary" type="submit">{t('common.search')}</button>
        </form>
      </Card>
      {error && !items && <ErrorView error={error} />}
      {!items && !error && <Loading />}
      {items && (
        <Card>
          <div className="table-wrap">
            <table>
              <thead><tr><th>{t('audit.time')}</th><th>{t('audit.action')}</th><th>{t('audit.target')}</th><th>{t('audit.actor')}</th></tr></thead>
              <tbody>
                {items.map((a) => (
                  <tr key={a.id} data-testid="audit-row">
                    <td>{i18n.dateTime(a.ts)}</td>
                    <td><code>{a.action}</code></td>
                    <td>{a.target_type} <code className="muted">{a.target_id?.slice(0, 13) ?? ''}</code></td>
                    <td><code className="muted">{(a.actor_user_id ?? a.actor_api_key_id ?? t('common.none')).slice(0, 8)}</code></td>
                  </tr>
                ))}
              </tbody>
            </table>
            {items.length === 0 && <p className="muted">{t('common.empty')}</p>}
          </div>
          {cursor && <button className="btn" onClick={() => load(cursor)}>{t('common.more')}</button>}
        </Card>
      )}
    </div>
  );
}
