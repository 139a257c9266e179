// Contextual help: a side panel explaining the current page (what it is, its fields, what to do) and a short
// guided tour highlighting elements marked with data-tour.
import { useEffect, useLayoutEffect, useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';

export type HelpPage = 'dashboard' | 'pops' | 'agents' | 'devices' | 'deviceDetail' | 'users' | 'roles' | 'audit' | 'alerts' | 'notifications' | 'diagnostics' | 'reports' | 'tr069' | 'agentConfig' | 'firmware' | 'apiKeys' | 'interfaces';

/** Tour steps per page: the data-tour target and its text. */
const TOURS: Partial<Record<HelpPage, [string, MessageKey][]>> = {
  dashboard: [['counts', 'tour.dashboard.1'], ['agents', 'tour.dashboard.2'], ['live', 'tour.dashboard.3'], ['prefs', 'tour.dashboard.4'], ['bandwidth', 'tour.dashboard.5']],
  devices: [['search', 'tour.devices.1'], ['filters', 'tour.devices.2'], ['results', 'tour.devices.3']],
  pops: [['pops', 'tour.pops.1'], ['enroll', 'tour.pops.2']],
  agents: [['agents', 'tour.agents.1']],
  notifications: [['push', 'tour.notifications.1'], ['channel-new', 'tour.notifications.2'], ['channels', 'tour.notifications.3']],
  diagnostics: [['diag-where', 'tour.diagnostics.1'], ['diag-fields', 'tour.diagnostics.2'], ['diag-run', 'tour.diagnostics.3']],
  alerts: [['alert-tabs', 'tour.alerts.1'], ['alert-filters', 'tour.alerts.2'], ['alert-list', 'tour.alerts.3'], ['rule-preview', 'tour.alerts.4']],
  deviceDetail: [['range', 'tour.deviceDetail.1'], ['graphs', 'tour.deviceDetail.2']],
  reports: [['report-kind', 'tour.reports.1'], ['report-scope', 'tour.reports.2'], ['report-download', 'tour.reports.3']],
  tr069: [['tr-summary', 'tour.tr069.1'], ['tr-actions', 'tour.tr069.2'], ['tr-tree', 'tour.tr069.3'], ['tr-tasks', 'tour.tr069.4']],
  interfaces: [['ifmon-pop', 'tour.interfaces.1'], ['ifmon-list', 'tour.interfaces.2']],
  apiKeys: [['apikey-list', 'tour.apiKeys.1'], ['apikey-new', 'tour.apiKeys.2']],
  agentConfig: [['agentcfg-current', 'tour.agentConfig.1'], ['agentcfg-editor', 'tour.agentConfig.2'], ['agentcfg-history', 'tour.agentConfig.3']],
  firmware: [['fw-images', 'tour.firmware.1'], ['fw-campaigns', 'tour.firmware.2'], ['fw-campaign-new', 'tour.firmware.3']],
};
const GENERIC: [string, MessageKey][] = [['main', 'tour.generic.1'], ['help', 'tour.generic.2']];

export function tourFor(page: HelpPage): [string, MessageKey][] {
  return TOURS[page] ?? GENERIC;
}

export function HelpPanel({ page, title, vars, onClose, onTour }: {
  page: HelpPage; title: string; vars?: Record<string, string | number>; onClose(): void; onTour(): void;
}) {
  const { t } = useI18n();
  useEffect(() => {
    const k = (e: KeyboardEvent) => { if (e.key === 'Escape') onClose(); };
    window.addEventListener('keydown', k);
    return () => window.removeEventListener('keydown', k);
  }, [onClose]);
  return (
    <aside className="help-panel" role="dialog" aria-modal="false" aria-label={t('help.title', { page: title })} data-testid="help-panel">
      <div className="help-head">
        <h2>{t('help.title', { page: title })}</h2>
        <button className="btn btn-ghost" onClick={onClose} aria-label={t('common.close')}>✕</button>
      </div>
      <p>{t(`help.${page}.about` as MessageKey, vars)}</p>
      <h3>{t('help.fields')}</h3>
      <p>{t(`help.${page}.fields` as MessageKey, vars)}</p>
      <h3>{t('help.actions')}</h3>
      <p>{t(`help.${page}.actions` as MessageKey, vars)}</p>
      <button className="btn" onClick={onTour}>{t('help.startTour')}</button>
    </aside>
  );
}

export function Tour({ page, onDone }: { page: HelpPage; onDone(): void }) {
  const { t } = useI18n();
  const steps = tourFor(page).filter(([sel]) => document.querySelector(`[data-tour="${sel}"]`));
  const [i, setI] = useState(0);
  const [rect, setRect] = useState<DOMRect | null>(null);
  const step = steps[i];
  useLayoutEffect(() => {
    if (!step) return;
    const el = document.querySelector(`[data-tour="${step[0]}"]`);
    el?.scrollIntoView({ block: 'nearest' });
    setRect(el ? el.getBoundingClientRect() : null);
  }, [step]);
  if (!step) { queueMicrotask(onDone); return null; }
  const top = rect ? Math.min(rect.bottom + 8, window.innerHeight - 160) : 80;
  const left = rect ? Math.max(8, Math.min(rect.left, window.innerWidth - 328)) : 8;
  return (
    <div className="tour" role="dialog" aria-live="polite" data-testid="tour">
      {rect && <div className="tour-ring" style={{ top: rect.top - 4, left: rect.left - 4, width: rect.width + 8, height: rect.height + 8 }} />}
      <div className="tour-pop" style={{ top, left }}>
        <div className="muted">{t('tour.step', { n: i + 1, total: steps.length })}</div>
        <p>{t(step[1])}</p>
        <div className="row">
          {i > 0 && <button className="btn btn-ghost" onClick={() => setI(i - 1)}>{t('tour.prev')}</button>}
          {i < steps.length - 1
            ? <button className="btn" onClick={() => setI(i + 1)}>{t('tour.next')}</button>
            : <button className="btn" onClick={onDone}>{t('tour.done')}</button>}
        </div>
      </div>
    </div>
  );
}
