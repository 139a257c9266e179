import { useState } from 'react';
import { useI18n } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Page, User } from '../api/types';
import { client, Link, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';

export default function Users() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can, me } = useApp();
  const users = useGet<Page<User>>('/users' + query({ limit: 500 }));
  const [error, setError] = useState<string | null>(null);

  async function toggle(u: User) {
    try { await client.patch(`/users/${u.id}`, { disabled: !u.disabled_at }); users.reload(); }
    catch (e) { setError(e instanceof ApiError ? e.message : String(e)); }
  }

  return (
    <div className="page">
      <div className="row"><h1>{t('users.title')}</h1><div className="spacer" />
        {can('api_keys:manage') && <Link to="/api-keys" className="btn" data-testid="users-api-keys">{t('users.apiKeys')}</Link>}</div>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      {users.loading && !users.data && <Loading />}
      {users.error && !users.data && <ErrorView error={users.error} onRetry={users.reload} />}
      {users.data && (
        <Card tour="users">
          <div className="table-wrap">
            <table>
              <thead><tr><th>{t('users.name')}</th><th>{t('users.email')}</th><th>{t('users.role')}</th><th>{t('users.lastLogin')}</th><th>{t('users.status')}</th><th /></tr></thead>
              <tbody>
                {users.data.items.map((u) => (
                  <tr key={u.id} data-testid="user-row">
                    <td><strong>{u.name}</strong></td>
                    <td>{u.email}</td>
                    <td>{u.role_name}</td>
                    <td title={i18n.dateTime(u.last_login_at)}>{i18n.relative(u.last_login_at)}</td>
                    <td>{u.disabled_at ? <Pill kind="muted">{t('users.disabled')}</Pill> : <Pill kind="ok">{t('users.enabled')}</Pill>}</td>
                    <td>{can('users:manage') && u.id !== me?.user_id &&
                      <button className="btn btn-small" onClick={() => toggle(u)}>{u.disabled_at ? t('users.enable') : t('users.disable')}</button>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </Card>
      )}
    </div>
  );
}
