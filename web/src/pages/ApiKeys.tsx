// API keys for integrations (`/api-keys`, api_keys:manage): the provider's keys with their permissions and
// state, a form to create one with chosen permissions (the key is shown once, with a copy button), revoke.
import { useState, type FormEvent } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { ApiError } from '../api/client';
import type { Page } from '../api/types';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';
import { DeleteButton, Field, invalid } from '../components/forms';
import {
  EXPIRY_CHOICES, grantable, keyBody, keyDraft, keyLabel, keyState,
  type ApiKey, type CreatedApiKey, type KeyDraft, type KeyError, type PermissionInfo,
} from '../lib/apiKeys';

const STATE_PILL = { active: 'ok', expired: 'warn', revoked: 'muted' } as const;

/** The key in clear, shown once after its creation. */
function NewKey({ created, onClose }: { created: CreatedApiKey; onClose(): void }) {
  const { t } = useI18n();
  const [copied, setCopied] = useState<boolean | null>(null);
  async function copy() {
    try { await navigator.clipboard.writeText(created.key); setCopied(true); } catch { setCopied(false); }
  }
  return (
    <Card title={t('apikeys.createdTitle', { name: created.name })} className="highlight" testid="apikey-created">
      <p className="notice notice-bad" role="alert"><strong>{t('apikeys.once')}</strong></p>
      <pre className="token" data-testid="apikey-secret">{created.key}</pre>
      <p className="muted">{t('apikeys.howTo')}</p>
      <div className="row">
        <button className="btn btn-primary" onClick={copy} data-testid="apikey-copy">{copied ? t('common.copied') : t('common.copy')}</button>
        {copied === false && <span className="muted" role="status">{t('apikeys.copyFailed')}</span>}
        <button className="btn" onClick={onClose} data-testid="apikey-done">{t('apikeys.stored')}</button>
      </div>
    </Card>
  );
}

function CreateForm({ held, catalogue, onCreated }: { held: string[]; catalogue: PermissionInfo[] | null; onCreated(k: CreatedApiKey): void }) {
  const { t } = useI18n();
  const [d, setD] = useState<KeyDraft>(keyDraft);
  const [tried, setTried] = useState(false);
  const [busy, setBusy] = useState(false);
  const [general, setGeneral] = useState<string | null>(null);
  const set = (p: Partial<KeyDraft>) => setD((x) => ({ ...x, ...p }));
  const groups = grantable(held, catalogue);
  const describe = new Map((catalogue ?? []).map((p) => [p.code, p.description]));
  const { body, errors } = keyBody(d, new Date());
  const err = (f: string) => (tried && errors[f] ? t(('apikeys.err.' + errors[f]) as `apikeys.err.${KeyError}`) : null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setTried(true);
    setGeneral(null);
    if (!body) return;
    setBusy(true);
    try {
      const r = await client.post<CreatedApiKey>('/api-keys', body);
      setD(keyDraft()); setTried(false);
      onCreated(r.data);
    } catch (x) { setGeneral(x instanceof ApiError ? x.message : String(x)); }
    finally { setBusy(false); }
  }

  const toggle = (code: string) => set({ permissions: d.permissions.includes(code) ? d.permissions.filter((c) => c !== code) : [...d.permissions, code] });
  return (
    <Card title={t('apikeys.new')} tour="apikey-new" testid="apikey-form">
      <form onSubmit={submit} noValidate>
        {general && <p className="notice notice-bad" role="alert" data-testid="apikey-error">{general}</p>}
        <div className="form-grid">
          <Field id="ak-name" label={t('apikeys.name')} error={err('name')}>
            <input id="ak-name" value={d.name} maxLength={200} onChange={(e) => set({ name: e.target.value })} placeholder={t('apikeys.namePlaceholder')} {...invalid('ak-name', err('name'))} />
          </Field>
          <Field id="ak-expiry" label={t('apikeys.expiry')} error={err('expires_at')}>
            <select id="ak-expiry" value={d.expiry} onChange={(e) => set({ expiry: e.target.value })}>
              {EXPIRY_CHOICES.map((c) => <option key={c} value={c}>{t(`apikeys.expiry.${c}`)}</option>)}
            </select>
          </Field>
          {d.expiry === 'date' && (
            <Field id="ak-date" label={t('apikeys.expiresOn')}>
              <input id="ak-date" type="date" value={d.expiresOn} onChange={(e) => set({ expiresOn: e.target.value })} {...invalid('ak-expiry', err('expires_at'))} />
            </Field>
          )}
        </div>
        <fieldset className="checks" data-testid="apikey-perms" aria-describedby={err('permissions') ? 'ak-perms-err' : undefined}>
          <legend>{t('apikeys.permissions')}</legend>
          {groups.map((g) => g.codes.map((c) => (
            <label key={c} className="inline" title={describe.get(c)}>
              <input type="checkbox" checked={d.permissions.includes(c)} onChange={() => toggle(c)} data-perm={c} /><code>{c}</code>
            </label>
          )))}
        </fieldset>
        {err('permissions') && <p className="field-error" id="ak-perms-err" role="alert" data-testid="err-ak-perms">{err('permissions')}</p>}
        <p className="muted">{t('apikeys.permsHint')}</p>
        <button className="btn btn-primary" type="submit" disabled={busy} data-testid="apikey-create">{t('apikeys.create')}</button>
      </form>
    </Card>
  );
}

export default function ApiKeys() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can, me } = useApp();
  const keys = useGet<Page<ApiKey>>('/api-keys');
  const catalogue = useGet<Page<PermissionInfo>>(can('roles:read') ? '/permissions' : null);
  const [created, setCreated] = useState<CreatedApiKey | null>(null);
  const [error, setError] = useState<string | null>(null);
  const now = new Date();
  // Keys minted by a key are refused by the server: only a signed-in user gets the form.
  const mayCreate = can('api_keys:manage') && !!me?.user_id && !!me.provider_id;

  async function revoke(k: ApiKey) {
    setError(null);
    try { await client.del('/api-keys/' + k.id); keys.reload(); }
    catch (e) { setError(e instanceof ApiError ? e.message : String(e)); }
  }

  return (
    <div className="page">
      <h1>{t('apikeys.title')}</h1>
      <p className="muted">{t('apikeys.intro')}</p>
      {created && <NewKey created={created} onClose={() => setCreated(null)} />}
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      {keys.loading && !keys.data && <Loading />}
      {keys.error && !keys.data && <ErrorView error={keys.error} onRetry={keys.reload} />}
      {keys.data && (
        <Card tour="apikey-list" testid="apikey-list">
          {keys.data.items.length === 0 ? <p className="muted">{t('apikeys.none')}</p> : (
            <div className="table-wrap">
              <table>
                <thead><tr>
                  <th>{t('apikeys.name')}</th><th>{t('apikeys.key')}</th><th>{t('apikeys.permissions')}</th><th>{t('apikeys.created')}</th>
                  <th>{t('apikeys.expires')}</th><th>{t('apikeys.lastUsed')}</th><th>{t('apikeys.status')}</th><th />
                </tr></thead>
                <tbody>
                  {keys.data.items.map((k) => {
                    const st = keyState(k, now);
                    return (
                      <tr key={k.id} data-testid="apikey-row" data-name={k.name} data-state={st}>
                        <td><strong>{k.name}</strong></td>
                        <td><code>{keyLabel(k)}</code></td>
                        <td><div className="chips">{k.permissions.map((p) => <code key={p} className="chip">{p}</code>)}</div></td>
                        <td>{i18n.dateTime(k.created_at)}</td>
                        <td>{k.expires_at ? i18n.dateTime(k.expires_at) : t('apikeys.noExpiry')}</td>
                        <td title={k.last_used_at ? i18n.dateTime(k.last_used_at) : undefined}>{k.last_used_at ? i18n.relative(k.last_used_at) : t('common.never')}</td>
                        <td><Pill kind={STATE_PILL[st]}>{t(`apikeys.state.${st}` as MessageKey)}</Pill></td>
                        <td>{st !== 'revoked' && can('api_keys:manage') &&
                          <DeleteButton label={t('apikeys.revoke')} onDelete={() => revoke(k)} testid="apikey-revoke" />}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )}
        </Card>
      )}
      {mayCreate && <CreateForm held={me?.permissions ?? []} catalogue={catalogue.data?.items ?? null} onCreated={(k) => { setCreated(k); keys.reload(); }} />}
    </div>
  );
}
