import { useI18n } from '../i18n';
import type { Page, Role } from '../api/types';
import { useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';

export default function Roles() {
  const { t } = useI18n();
  const roles = useGet<Page<Role>>('/roles');
  return (
    <div className="page">
      <h1>{t('roles.title')}</h1>
      {roles.loading && !roles.data && <Loading />}
      {roles.error && !roles.data && <ErrorView error={roles.error} onRetry={roles.reload} />}
      <div className="grid cards">
        {roles.data?.items.map((r) => (
          <Card key={r.id} title={<>{r.name} {r.provider_id === null && <Pill kind="muted">{t('roles.builtin')}</Pill>}</>} testid="role-card">
            <p className="muted">{r.description}</p>
            <div className="chips">{r.permissions.map((p) => <code key={p} className="chip">{p}</code>)}</div>
          </Card>
        ))}
      </div>
    </div>
  );
}
