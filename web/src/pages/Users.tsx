// Users of the provider: the list, and with `users:manage` a new-user form (email, name, role, an initial
// password or a password reset email), a role picker per user and disable/enable. Without `users:manage` none
// of those show; the server refuses them anyway.
import { useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Page, Role, User } from '../api/types';
import { client, Link, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';
import { apiFieldErrors, Field, invalid } from '../components/forms';
import { assignableRoles, userBody, userDraft, type UserDraft } from '../lib/users';

function NewUser({ roles, onDone }: { roles: Role[]; onDone(message: string): void }) {
  const { t } = useI18n();
  const [d, setD] = useState<UserDraft>(userDraft);
  const [touched, setTouched] = useState(false);
  const [server, setServer] = useState<{ fields: Record<string, string>; general: string | null }>({ fields: {}, general: null });
  const [busy, setBusy] = useState(false);
  const local = userBody(d);
  const err = (f: string): string | null => server.fields[f] ?? (touched && local.errors[f] ? t(('users.err.' + local.errors[f]) as MessageKey) : null);
  const set = (patch: Partial<UserDraft>) => { setD({ ...d, ...patch }); setServer({ fields: {}, general: null }); };
  const save = async () => {
    setTouched(true);
    if (!local.body) return;
    setBusy(true);
    try {
      await client.post('/users', local.body);
      if (d.mode === 'email') await client.post('/auth/password-reset', { email: local.body.email });
      onDone(t(d.mode === 'email' ? 'users.createdEmail' : 'users.created', { email: local.body.email }));
      setD(userDraft()); setTouched(false);
    } catch (e) {
      setServer(apiFieldErrors(e, ['email', 'name', 'role_id', 'password']));
    } finally { setBusy(false); }
  };
  return (
    <Card title={t('users.new')} testid="user-form" tour="user-new">
      <div className="form-grid">
        <Field id="user-email" label={t('users.email')} error={err('email')}>
          <input id="user-email" type="email" autoComplete="off" value={d.email} onChange={(e) => set({ email: e.target.value })} {...invalid('user-email', err('email'))} />
        </Field>
        <Field id="user-name" label={t('users.name')} error={err('name')}>
          <input id="user-name" value={d.name} onChange={(e) => set({ name: e.target.value })} {...invalid('user-name', err('name'))} />
        </Field>
        <Field id="user-role" label={t('users.role')} error={err('role_id')}>
          <select id="user-role" value={d.role_id} onChange={(e) => set({ role_id: e.target.value })} {...invalid('user-role', err('role_id'))}>
            <option value="">{t('users.pickRole')}</option>
            {roles.map((r) => <option key={r.id} value={r.id}>{r.name}</option>)}
          </select>
        </Field>
      </div>
      <fieldset className="plain">
        <legend>{t('users.passwordMode')}</legend>
        <label className="inline"><input type="radio" name="user-mode" checked={d.mode === 'email'} onChange={() => set({ mode: 'email' })} data-testid="user-mode-email" />{t('users.mode.email')}</label>
        <label className="inline"><input type="radio" name="user-mode" checked={d.mode === 'set'} onChange={() => set({ mode: 'set' })} data-testid="user-mode-set" />{t('users.mode.set')}</label>
      </fieldset>
      {d.mode === 'set' && (
        <div className="form-grid">
          <Field id="user-password" label={t('users.password')} error={err('password')}>
            <input id="user-password" type="password" autoComplete="new-password" value={d.password} onChange={(e) => set({ password: e.target.value })} {...invalid('user-password', err('password'))} />
          </Field>
        </div>
      )}
      {server.general && <p className="notice notice-bad" role="alert" data-testid="user-error">{server.general}</p>}
      <div className="row" style={{ marginTop: 12 }}>
        <button className="btn btn-primary" onClick={save} disabled={busy} data-testid="user-save">{t('users.create')}</button>
      </div>
    </Card>
  );
}

export default function Users() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can, me } = useApp();
  const manage = can('users:manage');
  const users = useGet<Page<User>>('/users' + query({ limit: 500 }));
  const roles = useGet<Page<Role>>(manage && can('roles:read') ? '/roles' : null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  const grantable = assignableRoles(roles.data?.items ?? [], me?.permissions ?? [], me?.global_admin ?? false);

  async function act(f: () => Promise<unknown>) {
    setError(null); setNotice(null);
    try { await f(); users.reload(); }
    catch (e) { setError(e instanceof ApiError ? e.message : String(e)); }
  }

  return (
    <div className="page">
      <div className="row"><h1>{t('users.title')}</h1><div className="spacer" />
        {manage && !creating && <button className="btn btn-primary" onClick={() => { setCreating(true); setNotice(null); }} data-testid="user-new">{t('users.new')}</button>}
        {can('api_keys:manage') && <Link to="/api-keys" className="btn" data-testid="users-api-keys">{t('users.apiKeys')}</Link>}</div>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      {notice && <p className="notice" role="status" data-testid="user-notice">{notice}</p>}
      {manage && creating && <NewUser roles={grantable} onDone={(m) => { setNotice(m); setCreating(false); users.reload(); }} />}
      {users.loading && !users.data && <Loading />}
      {users.error && !users.data && <ErrorView error={users.error} onRetry={users.reload} />}
      {users.data && (
        <Card tour="users">
          <div className="table-wrap">
            <table>
              <thead><tr><th scope="col">{t('users.name')}</th><th scope="col">{t('users.email')}</th><th scope="col">{t('users.role')}</th>
                <th scope="col">{t('users.lastLogin')}</th><th scope="col">{t('users.status')}</th><th scope="col"><span className="sr-only">{t('alerts.actions')}</span></th></tr></thead>
              <tbody>
                {users.data.items.map((u) => {
                  const mayChange = manage && u.id !== me?.user_id && grantable.length > 0;
                  return (
                    <tr key={u.id} data-testid="user-row">
                      <td><strong>{u.name}</strong></td>
                      <td>{u.email}</td>
                      <td>{mayChange
                        ? <select aria-label={t('users.roleOf', { name: u.name })} value={u.role_id} data-testid="user-role-select"
                            onChange={(e) => { const role_id = e.target.value; void act(() => client.put(`/users/${u.id}/role`, { role_id })); }}>
                            {!grantable.some((r) => r.id === u.role_id) && <option value={u.role_id} disabled>{u.role_name}</option>}
                            {grantable.map((r) => <option key={r.id} value={r.id}>{r.name}</option>)}
                          </select>
                        : u.role_name}</td>
                      <td title={i18n.dateTime(u.last_login_at)}>{i18n.relative(u.last_login_at)}</td>
                      <td>{u.disabled_at ? <Pill kind="muted">{t('users.disabled')}</Pill> : <Pill kind="ok">{t('users.enabled')}</Pill>}</td>
                      <td>{manage && u.id !== me?.user_id &&
                        <button className="btn btn-small" data-testid="user-toggle" onClick={() => act(() => client.patch(`/users/${u.id}`, { disabled: !u.disabled_at }))}>{u.disabled_at ? t('users.enable') : t('users.disable')}</button>}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        </Card>
      )}
    </div>
  );
}
