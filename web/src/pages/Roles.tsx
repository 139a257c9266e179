// Roles: the built-in ones and the provider's own, each with its permissions. With `roles:manage`, custom roles
// are created, edited (a checkbox matrix of module × action; only permissions the user holds can be given, as
// the server demands) and deleted. Without it none of that shows; the server refuses it anyway.
import { useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import type { Page, Role } from '../api/types';
import type { PermissionInfo } from '../lib/apiKeys';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';
import { apiFieldErrors, DeleteButton, Field, invalid } from '../components/forms';
import { permissionMatrix, roleBody, roleDraft, toggle, type RoleDraft } from '../lib/users';

function RoleEditor({ role, catalogue, held, onDone }: { role: Role | null; catalogue: PermissionInfo[]; held: (code: string) => boolean; onDone(): void }) {
  const { t } = useI18n();
  const [d, setD] = useState<RoleDraft>(() => roleDraft(role));
  const [touched, setTouched] = useState(false);
  const [server, setServer] = useState<{ fields: Record<string, string>; general: string | null }>({ fields: {}, general: null });
  const [busy, setBusy] = useState(false);
  const local = roleBody(d);
  const err = (f: string): string | null => server.fields[f] ?? (touched && local.errors[f] ? t(('roles.err.' + local.errors[f]) as MessageKey) : null);
  const set = (patch: Partial<RoleDraft>) => { setD({ ...d, ...patch }); setServer({ fields: {}, general: null }); };
  const matrix = permissionMatrix(catalogue);
  const save = async () => {
    setTouched(true);
    if (!local.body) return;
    setBusy(true);
    try {
      if (role) await client.patch('/roles/' + role.id, local.body);
      else await client.post('/roles', local.body);
      onDone();
    } catch (e) {
      setServer(apiFieldErrors(e, ['name', 'description', 'permissions']));
    } finally { setBusy(false); }
  };
  const selected = new Set(d.permissions);
  const actionLabel = (a: string) => t(('roles.action.' + a) as MessageKey);
  return (
    <Card title={role ? t('roles.edit', { name: role.name }) : t('roles.new')} testid="role-form" tour="role-editor">
      <div className="form-grid">
        <Field id="role-name" label={t('roles.name')} error={err('name')}>
          <input id="role-name" value={d.name} onChange={(e) => set({ name: e.target.value })} {...invalid('role-name', err('name'))} />
        </Field>
        <Field id="role-description" label={t('roles.description')} error={err('description')} wide>
          <input id="role-description" value={d.description} onChange={(e) => set({ description: e.target.value })} {...invalid('role-description', err('description'))} />
        </Field>
      </div>
      <p className="muted small">{t('roles.matrixHint')}</p>
      <div className="table-wrap">
        <table className="matrix" data-testid="role-matrix">
          <caption className="sr-only">{t('roles.permissions')}</caption>
          <thead><tr><th scope="col">{t('roles.module')}</th>{matrix.actions.map((a) => <th scope="col" key={a}>{actionLabel(a)}</th>)}</tr></thead>
          <tbody>
            {matrix.rows.map((row) => (
              <tr key={row.module}>
                <th scope="row">{t(('roles.module.' + row.module) as MessageKey)}</th>
                {row.cells.map((p, i) => (
                  <td key={matrix.actions[i]}>
                    {p && (
                      <input type="checkbox" checked={selected.has(p.code)} disabled={!held(p.code) && !selected.has(p.code)}
                        title={p.description} aria-label={`${t(('roles.module.' + row.module) as MessageKey)}: ${actionLabel(p.action)} (${p.code})`}
                        data-testid={'perm-' + p.code}
                        onChange={(e) => set({ permissions: toggle(d.permissions, [p.code], e.target.checked) })} />
                    )}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {err('permissions') && <p className="field-error" role="alert">{err('permissions')}</p>}
      {server.general && <p className="notice notice-bad" role="alert" data-testid="role-error">{server.general}</p>}
      <div className="row" style={{ marginTop: 12 }}>
        <button className="btn btn-primary" onClick={save} disabled={busy} data-testid="role-save">{t('common.save')}</button>
        <button className="btn" onClick={onDone}>{t('common.cancel')}</button>
      </div>
    </Card>
  );
}

export default function Roles() {
  const { t } = useI18n();
  const { can } = useApp();
  const manage = can('roles:manage');
  const roles = useGet<Page<Role>>('/roles');
  const catalogue = useGet<Page<PermissionInfo>>(manage ? '/permissions' : null);
  const [editing, setEditing] = useState<Role | 'new' | null>(null);
  const [error, setError] = useState<string | null>(null);
  return (
    <div className="page">
      <div className="row"><h1>{t('roles.title')}</h1><div className="spacer" />
        {manage && !editing && <button className="btn btn-primary" onClick={() => setEditing('new')} data-testid="role-new">{t('roles.new')}</button>}</div>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      {manage && editing && catalogue.data && (
        <RoleEditor key={editing === 'new' ? 'new' : editing.id} role={editing === 'new' ? null : editing} catalogue={catalogue.data.items} held={can}
          onDone={() => { setEditing(null); roles.reload(); }} />
      )}
      {roles.loading && !roles.data && <Loading />}
      {roles.error && !roles.data && <ErrorView error={roles.error} onRetry={roles.reload} />}
      <div className="grid cards">
        {roles.data?.items.map((r) => (
          <Card key={r.id} title={<>{r.name} {r.provider_id === null && <Pill kind="muted">{t('roles.builtin')}</Pill>}</>} testid="role-card">
            <p className="muted">{r.description}</p>
            <div className="chips">{r.permissions.map((p) => <code key={p} className="chip">{p}</code>)}</div>
            {manage && r.provider_id !== null && (
              <div className="row" style={{ marginTop: 8 }}>
                <button className="btn btn-small" onClick={() => { setError(null); setEditing(r); }} data-testid="role-edit">{t('common.edit')}</button>
                <DeleteButton testid="role-delete" onDelete={async () => {
                  setError(null);
                  try { await client.del('/roles/' + r.id); roles.reload(); }
                  catch (e) { setError(apiFieldErrors(e, []).general); }
                }} />
              </div>
            )}
          </Card>
        ))}
      </div>
    </div>
  );
}
