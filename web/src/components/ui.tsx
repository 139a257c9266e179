// Small building blocks: cards, status pills, loading/error/forbidden/not-yet states.
import type { ReactNode } from 'react';
import { useI18n } from '../i18n';
import type { ApiError } from '../api/client';

export function Card({ title, children, className, tour, testid }: { title?: ReactNode; children: ReactNode; className?: string; tour?: string; testid?: string }) {
  return (
    <section className={'card ' + (className ?? '')} data-tour={tour} data-testid={testid}>
      {title && <h2 className="card-title">{title}</h2>}
      {children}
    </section>
  );
}

export function Stat({ label, value, sub, testid }: { label: string; value: ReactNode; sub?: ReactNode; testid?: string }) {
  return (
    <div className="stat" data-testid={testid}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">{value}</div>
      {sub && <div className="stat-sub">{sub}</div>}
    </div>
  );
}

export function Pill({ kind, children }: { kind: 'ok' | 'bad' | 'muted' | 'warn'; children: ReactNode }) {
  return <span className={'pill pill-' + kind}>{children}</span>;
}

export function Loading() {
  const { t } = useI18n();
  return <p className="muted" role="status">{t('common.loading')}</p>;
}

export function ErrorView({ error, onRetry }: { error: ApiError; onRetry?: () => void }) {
  const { t } = useI18n();
  if (error.status === 403) return <p className="notice">{t('common.forbidden')}</p>;
  if (error.offline) return <p className="notice">{t('conn.offlineNoData')}</p>;
  return (
    <div className="notice notice-bad" role="alert">
      {t('common.error', { message: error.message })}
      {onRetry && <button className="btn btn-small" onClick={onRetry}>{t('common.retry')}</button>}
    </div>
  );
}

export function NotAvailable() {
  const { t } = useI18n();
  return (
    <div className="notice" data-testid="not-available">
      <strong>{t('common.notAvailable')}</strong>
      <p>{t('common.notAvailableBody')}</p>
    </div>
  );
}
