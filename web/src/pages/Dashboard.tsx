// The dashboard: counts (devices online/offline, POPs, agents), agents with their last contact, alerts and live
// events, and the latest audit entries for those who may read them. Refetched on every live event.
import { lazy, Suspense } from 'react';
import { useI18n } from '../i18n';
import { query } from '../api/client';
import type { Agent, AuditEntry, Page, Pop, Summary } from '../api/types';
import { settings, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable, Pill, Stat } from '../components/ui';

const Bandwidth = lazy(() => import('./Bandwidth'));

export default function Dashboard() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can, events, me } = useApp();
  const summary = useGet<Summary>('/summary');
  const agents = useGet<Page<Agent>>(can('agents:read') ? '/agents' + query({ limit: 100 }) : null);
  const pops = useGet<Page<Pop>>(can('pops:read') ? '/pops' + query({ limit: 500 }) : null);
  const audit = useGet<Page<AuditEntry>>(can('audit:read') ? '/audit' + query({ limit: 8 }) : null);
  const alerts = useGet<Page<unknown>>(can('alerts:read') ? '/alerts' + query({ limit: 5 }) : null);
  const s = summary.data;
  if (s) settings.onlineThresholdSecs = s.online_threshold_secs;
  const popName = new Map((pops.data?.items ?? []).map((p) => [p.id, p.name]));
  const lastAlertEvent = events.find((e) => e.channel === 'alerts');

  return (
    <div className="page">
      <h1>{t('dash.title')}</h1>
      {summary.loading && !s && <Loading />}
      {summary.error && !s && <ErrorView error={summary.error} onRetry={summary.reload} />}
      {s && (
        <div className="grid stats" data-tour="counts">
          {s.devices && (
            <Card testid="card-devices">
              <Stat label={t('dash.devices')} value={i18n.number(s.devices.total)} testid="count-devices"
                sub={<><Pill kind="ok"><span data-testid="count-online">{i18n.number(s.devices.online)}</span> {t('dash.online')}</Pill>{' '}
                  <Pill kind={s.devices.offline ? 'bad' : 'muted'}><span data-testid="count-offline">{i18n.number(s.devices.offline)}</span> {t('dash.offline')}</Pill></>} />
              {s.devices.total > 0 && <div className="bar" aria-hidden="true"><div className="bar-fill" style={{ width: `${(100 * s.devices.online) / s.devices.total}%` }} /></div>}
              {s.devices.total > 0 && <div className="muted small">{t('dash.onlineShare', { percent: i18n.percent(s.devices.online / s.devices.total) })}</div>}
            </Card>
          )}
          {s.pops && <Card testid="card-pops"><Stat label={t('dash.pops')} value={i18n.number(s.pops.total)} testid="count-pops" /></Card>}
          {s.agents && (
            <Card testid="card-agents">
              <Stat label={t('dash.agents')} value={i18n.number(s.agents.total)} testid="count-agents"
                sub={<>
                  <Pill kind="ok">{t('dash.agentsActive', { n: i18n.number(s.agents.active) })}</Pill>{' '}
                  {s.agents.revoked > 0 && <Pill kind="muted">{t('dash.agentsRevoked', { n: i18n.number(s.agents.revoked) })}</Pill>}
                  <div className="muted small">{t('dash.lastContact', { time: i18n.relative(s.agents.last_contact) })}</div>
                </>} />
            </Card>
          )}
        </div>
      )}
      {can('metrics:read') && me?.provider_id && s && (
        <Suspense fallback={null}><Bandwidth pops={pops.data?.items ?? []} /></Suspense>
      )}
      <div className="grid two">
        {agents.data && (
          <Card title={t('dash.agentList')} tour="agents" testid="dash-agents">
            <ul className="list">
              {agents.data.items.map((a) => (
                <li key={a.id} data-testid="dash-agent">
                  <span><strong>{a.hostname || a.id.slice(0, 8)}</strong> <span className="muted">{popName.get(a.pop_id) ?? ''}</span></span>
                  <span>{a.revoked_at ? <Pill kind="muted">{t('agents.revoked')}</Pill> : <span title={i18n.dateTime(a.last_seen)} data-testid="agent-last-seen">{i18n.relative(a.last_seen)}</span>}</span>
                </li>
              ))}
              {agents.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
            </ul>
          </Card>
        )}
        <Card title={t('dash.alerts')} testid="dash-alerts">
          {alerts.error?.status === 404 && <NotAvailable />}
          {alerts.data && <p>{i18n.number(alerts.data.items.length)}</p>}
          <p data-testid="alert-events">{lastAlertEvent ? t('dash.alertsChanged', { time: i18n.time(lastAlertEvent.at) }) : t('dash.alertsNone')}</p>
          <ul className="list" data-testid="live-events">
            {events.filter((e) => e.channel === 'live').slice(0, 5).map((e, i) => (
              <li key={i}>{t('dash.liveEvent', { agent: String(e.event?.agent_id ?? '').slice(0, 8), time: i18n.time(e.at) })}</li>
            ))}
          </ul>
        </Card>
        {audit.data && (
          <Card title={t('dash.recentChanges')} testid="dash-audit">
            <ul className="list">
              {audit.data.items.map((a) => (
                <li key={a.id}><span><code>{a.action}</code> <span className="muted">{a.target_type}</span></span><span className="muted">{i18n.relative(a.ts)}</span></li>
              ))}
              {audit.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
            </ul>
          </Card>
        )}
      </div>
      {s && <p className="muted small">{t('dash.updated', { time: i18n.time(new Date()) })}</p>}
    </div>
  );
}
