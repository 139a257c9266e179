// Notification settings: channels (email, Telegram, webhook, web push: create, edit, test, delete), policies
// (which alert events go to which channel, with quiet hours), and this browser's Web Push subscription.
import { useEffect, useState, type ReactNode } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Page, Pop } from '../api/types';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, NotAvailable, Pill } from '../components/ui';
import { apiFieldErrors, DeleteButton, Field, invalid } from '../components/forms';
import {
  CHANNEL_KINDS, channelBody, channelDraft, EVENT_KINDS, POLICY_SCOPES, policyBody, policyDraft, vapidKeyBytes,
  type Channel, type ChannelDraft, type ChannelWithSecret, type Policy, type PolicyDraft,
} from '../lib/notify';
import { SEVERITIES } from '../lib/alerts';

const PUSH_ID_KEY = 'octoisp.push.subscription';

function useErr() {
  const { t } = useI18n();
  return (code: string | undefined | null): string | null => (code ? t(('notif.err.' + code) as MessageKey) : null);
}

// --- channels ---------------------------------------------------------------------------------------------------

function ChannelEditor({ channel, onDone }: { channel: Channel | null; onDone(secret: string | null): void }) {
  const { t } = useI18n();
  const errText = useErr();
  const [d, setD] = useState<ChannelDraft>(() => channelDraft(channel ?? undefined));
  const [touched, setTouched] = useState(false);
  const [server, setServer] = useState<{ fields: Record<string, string>; general: string | null }>({ fields: {}, general: null });
  const local = channelBody(d, channel !== null);
  const err = (f: string) => server.fields[f] ?? (touched ? errText(local.errors[f]) : null);
  const set = (p: Partial<ChannelDraft>) => { setD({ ...d, ...p }); setServer({ fields: {}, general: null }); };
  const save = async () => {
    setTouched(true);
    if (!local.body) return;
    try {
      const r = channel
        ? await client.patch<ChannelWithSecret>('/notifications/channels/' + channel.id, local.body)
        : await client.post<ChannelWithSecret>('/notifications/channels', local.body);
      onDone(r.data?.secret ?? null);
    } catch (e) {
      setServer(apiFieldErrors(e, ['name', 'kind', 'config.to', 'config.chat_id', 'config.url', 'secret', 'language', 'rate_limit_per_minute']));
    }
  };
  const input = (id: string, f: keyof ChannelDraft, label: MessageKey, errKey: string, extra: Record<string, unknown> = {}): ReactNode => (
    <Field id={id} label={t(label)} error={err(errKey)}>
      <input id={id} value={String(d[f])} onChange={(e) => set({ [f]: e.target.value } as Partial<ChannelDraft>)} {...invalid(id, err(errKey))} {...extra} />
    </Field>
  );
  return (
    <Card title={channel ? t('notif.editChannel', { name: channel.name }) : t('notif.newChannel')} testid="channel-form">
      <div className="form-grid">
        {input('ch-name', 'name', 'rules.name', 'name')}
        <Field id="ch-kind" label={t('notif.kind')}>
          <select id="ch-kind" value={d.kind} disabled={channel !== null} onChange={(e) => set({ kind: e.target.value })}>
            {CHANNEL_KINDS.map((k) => <option key={k} value={k}>{t(('notif.kind.' + k) as MessageKey)}</option>)}
          </select>
        </Field>
        {d.kind === 'email' && input('ch-to', 'to', 'notif.to', 'config.to', { placeholder: 'noc@provedor.com.br' })}
        {d.kind === 'telegram' && input('ch-chat', 'chat_id', 'notif.chatId', 'config.chat_id', { placeholder: '-1001234567890' })}
        {d.kind === 'telegram' && input('ch-secret', 'secret', channel?.has_secret ? 'notif.botTokenKeep' : 'notif.botToken', 'secret', { type: 'password', autoComplete: 'off' })}
        {d.kind === 'webhook' && input('ch-url', 'url', 'notif.url', 'config.url', { placeholder: 'https://', type: 'url' })}
        {d.kind === 'webhook' && input('ch-secret', 'secret', 'notif.webhookSecret', 'secret', { type: 'password', autoComplete: 'off' })}
        <Field id="ch-lang" label={t('lang.label')}>
          <select id="ch-lang" value={d.language} onChange={(e) => set({ language: e.target.value })}>
            <option value="pt-BR">{t('lang.pt-BR')}</option><option value="en">{t('lang.en')}</option>
          </select>
        </Field>
        {input('ch-rate', 'rate', 'notif.rate', 'rate_limit_per_minute', { inputMode: 'numeric' })}
      </div>
      {d.kind === 'webpush' && <p className="muted small">{t('notif.webpushNote')}</p>}
      <label className="inline"><input type="checkbox" checked={d.enabled} onChange={(e) => set({ enabled: e.target.checked })} />{t('rules.enabled')}</label>
      {server.general && <p className="notice notice-bad" role="alert">{server.general}</p>}
      <div className="row" style={{ marginTop: 12 }}>
        <button className="btn btn-primary" onClick={save} data-testid="channel-save">{t('common.save')}</button>
        <button className="btn" onClick={() => onDone(null)}>{t('common.cancel')}</button>
      </div>
    </Card>
  );
}

function Channels({ list }: { list: ReturnType<typeof useGet<Page<Channel>>> }) {
  const { t } = useI18n();
  const [editing, setEditing] = useState<Channel | 'new' | null>(null);
  const [secret, setSecret] = useState<string | null>(null);
  const [note, setNote] = useState<{ id: string; text: string; bad: boolean } | null>(null);
  const test = async (c: Channel) => {
    try {
      const r = await client.post<{ delivery_ids: string[] }>(`/notifications/channels/${c.id}/test`);
      setNote({ id: c.id, text: t('notif.testQueued', { n: r.data.delivery_ids.length }), bad: false });
    } catch (e) {
      setNote({ id: c.id, text: e instanceof ApiError ? e.message : String(e), bad: true });
    }
  };
  return (
    <>
      {!editing && <button className="btn btn-primary" style={{ marginBottom: 12 }} onClick={() => { setSecret(null); setEditing('new'); }} data-testid="channel-new" data-tour="channel-new">{t('notif.newChannel')}</button>}
      {editing && <ChannelEditor key={editing === 'new' ? 'new' : editing.id} channel={editing === 'new' ? null : editing}
        onDone={(s) => { setEditing(null); setSecret(s); list.reload(); }} />}
      {secret && (
        <div className="notice" role="status" data-testid="channel-secret">
          <strong>{t('notif.secretOnce')}</strong>
          <pre className="token">{secret}</pre>
          <button className="btn btn-small" onClick={() => setSecret(null)}>{t('common.close')}</button>
        </div>
      )}
      <Card title={t('notif.channels')} tour="channels">
        {list.loading && !list.data && <Loading />}
        {list.error && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
        {list.data && (
          <ul className="list">
            {list.data.items.map((c) => (
              <li key={c.id} data-testid="channel-row">
                <span>
                  <strong>{c.name}</strong> <Pill kind="muted">{t(('notif.kind.' + c.kind) as MessageKey)}</Pill>
                  {!c.enabled && <Pill kind="warn">{t('notif.disabled')}</Pill>}
                  <span className="muted small"> {describeChannel(c)}</span>
                  {note?.id === c.id && <span className={note.bad ? 'field-error' : 'muted small'} role="status"> {note.text}</span>}
                </span>
                <span className="row">
                  <button className="btn btn-small" onClick={() => test(c)} data-testid="channel-test">{t('notif.test')}</button>
                  <button className="btn btn-small" onClick={() => { setSecret(null); setEditing(c); }} data-testid="channel-edit">{t('common.edit')}</button>
                  <DeleteButton testid="channel-delete" onDelete={async () => {
                    try { await client.del('/notifications/channels/' + c.id); list.reload(); } catch (e) { setNote({ id: c.id, text: e instanceof ApiError ? e.message : String(e), bad: true }); }
                  }} />
                </span>
              </li>
            ))}
            {list.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
          </ul>
        )}
      </Card>
    </>
  );
}

function describeChannel(c: Channel): string {
  const cfg = c.config ?? {};
  if (Array.isArray(cfg.to)) return (cfg.to as unknown[]).join(', ');
  if (cfg.chat_id !== undefined) return String(cfg.chat_id);
  if (typeof cfg.url === 'string') return cfg.url;
  return '';
}

// --- policies ---------------------------------------------------------------------------------------------------

function PolicyEditor({ policy, channels, pops, onDone }: { policy: Policy | null; channels: Channel[]; pops: Pop[]; onDone(): void }) {
  const { t } = useI18n();
  const errText = useErr();
  const [d, setD] = useState<PolicyDraft>(() => ({ ...policyDraft(policy ?? undefined), channel_id: policy?.channel_id ?? channels[0]?.id ?? '' }));
  const [touched, setTouched] = useState(false);
  const [server, setServer] = useState<{ fields: Record<string, string>; general: string | null }>({ fields: {}, general: null });
  const local = policyBody(d);
  const err = (f: string) => server.fields[f] ?? (touched ? errText(local.errors[f]) : null);
  const set = (p: Partial<PolicyDraft>) => { setD({ ...d, ...p }); setServer({ fields: {}, general: null }); };
  const toggle = (f: 'severities' | 'kinds', v: string) => set({ [f]: d[f].includes(v) ? d[f].filter((x) => x !== v) : [...d[f], v] });
  const save = async () => {
    setTouched(true);
    if (!local.body) return;
    try {
      if (policy) await client.patch('/notifications/policies/' + policy.id, local.body);
      else await client.post('/notifications/policies', local.body);
      onDone();
    } catch (e) {
      setServer(apiFieldErrors(e, ['name', 'channel_id', 'severities', 'kinds', 'scope', 'scope_id', 'quiet_start', 'quiet_end', 'quiet_timezone']));
    }
  };
  return (
    <Card title={policy ? t('notif.editPolicy', { name: policy.name }) : t('notif.newPolicy')} testid="policy-form">
      <div className="form-grid">
        <Field id="po-name" label={t('rules.name')} error={err('name')}>
          <input id="po-name" value={d.name} onChange={(e) => set({ name: e.target.value })} {...invalid('po-name', err('name'))} />
        </Field>
        <Field id="po-channel" label={t('notif.channel')} error={err('channel_id')}>
          <select id="po-channel" value={d.channel_id} onChange={(e) => set({ channel_id: e.target.value })} {...invalid('po-channel', err('channel_id'))}>
            <option value="">{t('alerts.choose')}</option>
            {channels.map((c) => <option key={c.id} value={c.id}>{c.name}</option>)}
          </select>
        </Field>
        <Field id="po-scope" label={t('rules.scope')}>
          <select id="po-scope" value={d.scope} onChange={(e) => set({ scope: e.target.value, scope_id: '' })}>
            {POLICY_SCOPES.map((s) => <option key={s} value={s}>{t(('notif.scope.' + s) as MessageKey)}</option>)}
          </select>
        </Field>
        {d.scope !== 'all' && (
          <Field id="po-scope-id" label={t('rules.scopeId')} error={err('scope_id')}>
            {d.scope === 'pop' && pops.length
              ? <select id="po-scope-id" value={d.scope_id} onChange={(e) => set({ scope_id: e.target.value })} {...invalid('po-scope-id', err('scope_id'))}>
                  <option value="">{t('alerts.choose')}</option>{pops.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
                </select>
              : <input id="po-scope-id" value={d.scope_id} onChange={(e) => set({ scope_id: e.target.value })} placeholder="uuid" {...invalid('po-scope-id', err('scope_id'))} />}
          </Field>
        )}
        <Field id="po-qs" label={t('notif.quietStart')} error={err('quiet_start')}>
          <input id="po-qs" type="time" value={d.quiet_start} onChange={(e) => set({ quiet_start: e.target.value })} {...invalid('po-qs', err('quiet_start'))} />
        </Field>
        <Field id="po-qe" label={t('notif.quietEnd')} error={err('quiet_end')}>
          <input id="po-qe" type="time" value={d.quiet_end} onChange={(e) => set({ quiet_end: e.target.value })} {...invalid('po-qe', err('quiet_end'))} />
        </Field>
        <Field id="po-tz" label={t('notif.timezone')} error={err('quiet_timezone')}>
          <input id="po-tz" value={d.quiet_timezone} onChange={(e) => set({ quiet_timezone: e.target.value })} />
        </Field>
      </div>
      <fieldset className="checks">
        <legend>{t('notif.severities')}</legend>
        {SEVERITIES.map((s) => <label key={s} className="inline"><input type="checkbox" checked={d.severities.includes(s)} onChange={() => toggle('severities', s)} />{t(('alerts.sev.' + s) as MessageKey)}</label>)}
        {err('severities') && <span className="field-error" role="alert">{err('severities')}</span>}
      </fieldset>
      <fieldset className="checks">
        <legend>{t('notif.events')}</legend>
        {EVENT_KINDS.map((k) => <label key={k} className="inline"><input type="checkbox" checked={d.kinds.includes(k)} onChange={() => toggle('kinds', k)} />{t(('alerts.kind.' + k) as MessageKey)}</label>)}
        {err('kinds') && <span className="field-error" role="alert">{err('kinds')}</span>}
      </fieldset>
      <div className="row">
        <label className="inline"><input type="checkbox" checked={d.quiet_allow_critical} onChange={(e) => set({ quiet_allow_critical: e.target.checked })} />{t('notif.quietCritical')}</label>
        <label className="inline"><input type="checkbox" checked={d.enabled} onChange={(e) => set({ enabled: e.target.checked })} />{t('rules.enabled')}</label>
      </div>
      {server.general && <p className="notice notice-bad" role="alert">{server.general}</p>}
      <div className="row" style={{ marginTop: 12 }}>
        <button className="btn btn-primary" onClick={save} data-testid="policy-save">{t('common.save')}</button>
        <button className="btn" onClick={onDone}>{t('common.cancel')}</button>
      </div>
    </Card>
  );
}

function Policies({ channels }: { channels: Channel[] }) {
  const { t } = useI18n();
  const { can } = useApp();
  const list = useGet<Page<Policy>>('/notifications/policies' + query({ limit: 200 }));
  const pops = useGet<Page<Pop>>(can('pops:read') ? '/pops' + query({ limit: 500 }) : null);
  const [editing, setEditing] = useState<Policy | 'new' | null>(null);
  const name = new Map(channels.map((c) => [c.id, c.name]));
  return (
    <>
      {!editing && <button className="btn btn-primary" style={{ marginBottom: 12 }} disabled={!channels.length} onClick={() => setEditing('new')} data-testid="policy-new">{t('notif.newPolicy')}</button>}
      {editing && <PolicyEditor key={editing === 'new' ? 'new' : editing.id} policy={editing === 'new' ? null : editing} channels={channels}
        pops={pops.data?.items ?? []} onDone={() => { setEditing(null); list.reload(); }} />}
      <Card title={t('notif.policies')}>
        {list.loading && !list.data && <Loading />}
        {list.error && !list.data && <ErrorView error={list.error} onRetry={list.reload} />}
        {list.data && (
          <ul className="list">
            {list.data.items.map((p) => (
              <li key={p.id} data-testid="policy-row">
                <span><strong>{p.name}</strong> → {name.get(p.channel_id) ?? p.channel_id}{' '}
                  <span className="muted small">{p.severities.map((s) => t(('alerts.sev.' + s) as MessageKey)).join(', ')}
                    {p.quiet_start && ` · ${t('notif.quiet', { from: p.quiet_start, to: p.quiet_end ?? '' })}`}</span>
                  {!p.enabled && <Pill kind="warn">{t('notif.disabled')}</Pill>}</span>
                <span className="row">
                  <button className="btn btn-small" onClick={() => setEditing(p)}>{t('common.edit')}</button>
                  <DeleteButton onDelete={async () => { await client.del('/notifications/policies/' + p.id); list.reload(); }} />
                </span>
              </li>
            ))}
            {list.data.items.length === 0 && <li className="muted">{t('common.empty')}</li>}
          </ul>
        )}
      </Card>
    </>
  );
}

// --- this browser's push subscription -----------------------------------------------------------------------------

type PushState = 'unsupported' | 'denied' | 'off' | 'on' | 'busy';

function PushCard() {
  const { t } = useI18n();
  const { me } = useApp();
  const [state, setState] = useState<PushState>('busy');
  const [error, setError] = useState<string | null>(null);
  const supported = typeof window !== 'undefined' && 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
  useEffect(() => {
    if (!supported) { setState('unsupported'); return; }
    if (Notification.permission === 'denied') { setState('denied'); return; }
    navigator.serviceWorker.getRegistration().then(async (reg) => {
      const sub = await reg?.pushManager.getSubscription();
      setState(sub && localStorage.getItem(PUSH_ID_KEY) ? 'on' : 'off');
    }, () => setState('off'));
  }, [supported]);
  const subscribe = async () => {
    setError(null);
    setState('busy');
    try {
      const reg = await navigator.serviceWorker.ready;
      const perm = await Notification.requestPermission();
      if (perm !== 'granted') { setState(perm === 'denied' ? 'denied' : 'off'); return; }
      const key = await client.get<{ public_key: string }>('/push/vapid-public-key');
      const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: vapidKeyBytes(key.data.public_key) });
      const saved = await client.post<{ id: string }>('/push/subscriptions', sub.toJSON());
      localStorage.setItem(PUSH_ID_KEY, saved.data.id);
      setState('on');
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      setState('off');
    }
  };
  const unsubscribe = async () => {
    setError(null);
    setState('busy');
    try {
      const id = localStorage.getItem(PUSH_ID_KEY);
      if (id) await client.del('/push/subscriptions/' + id).catch((e) => { if (!(e instanceof ApiError && e.status === 404)) throw e; });
      localStorage.removeItem(PUSH_ID_KEY);
      const reg = await navigator.serviceWorker.getRegistration();
      await (await reg?.pushManager.getSubscription())?.unsubscribe();
      setState('off');
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      setState('on');
    }
  };
  return (
    <Card title={t('notif.push')} testid="push-card" tour="push">
      <p>{t(('notif.push.' + state) as MessageKey)}</p>
      {!me?.provider_id && <p className="muted small">{t('notif.push.noProvider')}</p>}
      {state === 'off' && me?.provider_id && <button className="btn btn-primary" onClick={subscribe} data-testid="push-subscribe">{t('notif.push.enable')}</button>}
      {state === 'on' && <button className="btn" onClick={unsubscribe} data-testid="push-unsubscribe">{t('notif.push.disable')}</button>}
      {error && <p className="field-error" role="alert">{error}</p>}
    </Card>
  );
}

export default function Notifications() {
  const { t } = useI18n();
  const { can } = useApp();
  const manage = can('notifications:manage');
  const channels = useGet<Page<Channel>>(manage ? '/notifications/channels' + query({ limit: 200 }) : null);
  const [tab, setTab] = useState<'channels' | 'policies'>('channels');
  return (
    <div className="page">
      <h1>{t('nav.notifications')}</h1>
      <PushCard />
      {manage && channels.error?.status === 404 && <NotAvailable />}
      {manage && channels.error?.status !== 404 && (
        <>
          <div className="tabs" role="tablist" aria-label={t('nav.notifications')}>
            {(['channels', 'policies'] as const).map((x) => (
              <button key={x} role="tab" className="tab" aria-selected={tab === x} onClick={() => setTab(x)} data-testid={'tab-' + x}>{t(('notif.' + x) as MessageKey)}</button>
            ))}
          </div>
          {tab === 'channels' ? <Channels list={channels} /> : <Policies channels={channels.data?.items ?? []} />}
        </>
      )}
    </div>
  );
}
