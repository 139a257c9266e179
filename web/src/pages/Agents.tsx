import { useState } from 'react';
import { useI18n } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Agent, Page, Pop } from '../api/types';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';

export default function Agents() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const agents = useGet<Page<Agent>>('/agents' + query({ limit: 500 }));
  const pops = useGet<Page<Pop>>(can('pops:read') ? '/pops' + query({ limit: 500 }) : null);
  const [error, setError] = useState<string | null>(null);
  const popName = new Map((pops.data?.items ?? []).map((p) => [p.id, p.name]));

  async function revoke(a: Agent) {
    if (!window.confirm(t('agents.revokeConfirm', { agent: a.hostname || a.id }))) return;
    try { await client.post(`/agents/${a.id}/revoke`); agents.reload(); }
    catch (e) { setError(e instanceof ApiError ? e.message : String(e)); }
  }

  return (
    <div className="page">
      <h1>{t('agents.title')}</h1>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      {agents.loading && !agents.data && <Loading />}
      {agents.error && !agents.data && <ErrorView error={agents.error} onRetry={agents.reload} />}
      {agents.data && (
        <Card tour="agents">
          <div className="table-wrap">
            <table>
              <thead><tr>
                <th>{t('agents.hostname')}</th><th>{t('agents.pop')}</th><th>{t('agents.version')}</th>
                <th>{t('agents.lastSeen')}</th><th>{t('agents.status')}</th><th />
              </tr></thead>
              <tbody>
                {agents.data.items.map((a) => (
                  <tr key={a.id} data-testid="agent-row">
                    <td><strong>{a.hostname || a.id.slice(0, 8)}</strong></td>
                    <td>{popName.get(a.pop_id) ?? a.pop_id.slice(0, 8)}</td>
                    <td><code>{a.version || t('common.none')}</code></td>
                    <td title={i18n.dateTime(a.last_seen)}>{i18n.relative(a.last_seen)}</td>
                    <td>{a.revoked_at ? <Pill kind="muted">{t('agents.revoked')}</Pill> : <Pill kind="ok">{t('agents.active')}</Pill>}</td>
                    <td>{can('agents:revoke') && !a.revoked_at && <button className="btn btn-small btn-danger" onClick={() => revoke(a)}>{t('agents.revoke')}</button>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {agents.data.items.length === 0 && <p className="muted">{t('common.empty')}</p>}
          </div>
        </Card>
      )}
    </div>
  );
}
