// A module whose API is being built (alerts, notifications): the page asks the API, and shows "not yet
// available" only when the API answers 404; otherwise it lists what the API returns.
import { useI18n, type MessageKey } from '../i18n';
import type { Page } from '../api/types';
import { useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable } from '../components/ui';

export default function Upcoming({ path, title }: { path: string; title: MessageKey }) {
  const { t } = useI18n();
  const list = useGet<Page<Record<string, unknown>>>(path + '?limit=50');
  return (
    <div className="page">
      <h1>{t(title)}</h1>
      {list.loading && !list.data && <Loading />}
      {list.error?.status === 404 && <NotAvailable />}
      {list.error && list.error.status !== 404 && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
      {list.data && (
        <Card>
          <ul className="list">
            {list.data.items.map((it, i) => (
              <li key={String(it.id ?? i)}><span>{String(it.name ?? it.rule_name ?? it.id ?? '')}</span><span className="muted">{String(it.severity ?? it.kind ?? '')}</span></li>
            ))}
            {list.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
          </ul>
        </Card>
      )}
    </div>
  );
}
