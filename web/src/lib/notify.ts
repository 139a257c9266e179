// The notification settings' logic: channel and policy editor drafts turned into the API's bodies, with the
// checks the API makes repeated so that errors show beside the field; and the VAPID key decoding for Web Push.

export const CHANNEL_KINDS = ['email', 'telegram', 'webhook', 'webpush'] as const;
export const EVENT_KINDS = ['firing', 'resolved', 'flapping', 'flap_ended', 'acknowledged'] as const;
export const POLICY_SCOPES = ['all', 'pop', 'group'] as const;

export interface Channel {
  id: string; name: string; kind: string; config: Record<string, unknown>; language: string; rate_limit_per_minute: number;
  enabled: boolean; has_secret: boolean; created_at: string; updated_at: string;
}
export interface ChannelWithSecret extends Channel { secret: string | null }
export interface Policy {
  id: string; name: string; channel_id: string; user_id: string | null; severities: string[]; kinds: string[]; scope: string;
  scope_id: string | null; quiet_start: string | null; quiet_end: string | null; quiet_timezone: string;
  quiet_allow_critical: boolean; enabled: boolean; created_at: string;
}

export interface ChannelDraft {
  name: string; kind: string; to: string; chat_id: string; url: string; secret: string; language: string; rate: string; enabled: boolean;
}

export function channelDraft(c?: Channel): ChannelDraft {
  const cfg = c?.config ?? {};
  return {
    name: c?.name ?? '', kind: c?.kind ?? 'email',
    to: Array.isArray(cfg.to) ? (cfg.to as unknown[]).map(String).join(', ') : '',
    chat_id: cfg.chat_id !== undefined ? String(cfg.chat_id) : '', url: typeof cfg.url === 'string' ? cfg.url : '',
    secret: '', language: c?.language ?? 'pt-BR', rate: String(c?.rate_limit_per_minute ?? 30), enabled: c?.enabled ?? true,
  };
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** Error codes, translated as `notif.err.<code>`. */
export type NotifError = 'required' | 'email' | 'url' | 'token' | 'rate' | 'time' | 'none';

/**
 * The body of a channel draft: for a new channel the full body; for an edit (`existing`) only what may change
 * (name, config, language, rate, enabled, and the secret when one was typed). Errors per field otherwise.
 */
export function channelBody(d: ChannelDraft, existing: boolean): { body: Record<string, unknown> | null; errors: Record<string, NotifError> } {
  const e: Record<string, NotifError> = {};
  if (!d.name.trim()) e.name = 'required';
  let config: Record<string, unknown> = {};
  if (d.kind === 'email') {
    const to = d.to.split(/[,;\s]+/).map((s) => s.trim()).filter(Boolean);
    if (!to.length) e['config.to'] = 'required';
    else if (to.some((a) => !EMAIL.test(a))) e['config.to'] = 'email';
    config = { to };
  } else if (d.kind === 'telegram') {
    const chat = d.chat_id.trim();
    if (!chat) e['config.chat_id'] = 'required';
    config = { chat_id: /^-?\d+$/.test(chat) ? Number(chat) : chat };
    if (!existing && !d.secret.trim()) e.secret = 'required';
    if (d.secret.trim() && !/^\d+:[A-Za-z0-9_-]+$/.test(d.secret.trim())) e.secret = 'token';
  } else if (d.kind === 'webhook') {
    if (!/^https?:\/\/[^\s/]+/.test(d.url.trim())) e['config.url'] = d.url.trim() ? 'url' : 'required';
    config = { url: d.url.trim() };
  } else if (d.secret.trim()) {
    e.secret = 'none';
  }
  const rate = Number(d.rate);
  if (!Number.isInteger(rate) || rate < 1 || rate > 10_000) e.rate_limit_per_minute = 'rate';
  if (Object.keys(e).length) return { body: null, errors: e };
  const body: Record<string, unknown> = { name: d.name.trim(), language: d.language, rate_limit_per_minute: rate, enabled: d.enabled };
  if (!existing) body.kind = d.kind;
  if (d.kind !== 'webpush' || !existing) body.config = config;
  if (d.secret.trim()) body.secret = d.secret.trim();
  return { body, errors: {} };
}

export interface PolicyDraft {
  name: string; channel_id: string; severities: string[]; kinds: string[]; scope: string; scope_id: string;
  quiet_start: string; quiet_end: string; quiet_timezone: string; quiet_allow_critical: boolean; enabled: boolean;
}

export function policyDraft(p?: Policy): PolicyDraft {
  return {
    name: p?.name ?? '', channel_id: p?.channel_id ?? '', severities: p?.severities ?? ['warning', 'critical'],
    kinds: p?.kinds ?? [...EVENT_KINDS], scope: p?.scope ?? 'all', scope_id: p?.scope_id ?? '',
    quiet_start: p?.quiet_start ?? '', quiet_end: p?.quiet_end ?? '', quiet_timezone: p?.quiet_timezone ?? 'America/Sao_Paulo',
    quiet_allow_critical: p?.quiet_allow_critical ?? true, enabled: p?.enabled ?? true,
  };
}

/** The body of a policy draft (the same for create and edit: every field is sent). */
export function policyBody(d: PolicyDraft): { body: Record<string, unknown> | null; errors: Record<string, NotifError> } {
  const e: Record<string, NotifError> = {};
  if (!d.name.trim()) e.name = 'required';
  if (!d.channel_id) e.channel_id = 'required';
  if (!d.severities.length) e.severities = 'required';
  if (!d.kinds.length) e.kinds = 'required';
  if (d.scope !== 'all' && !d.scope_id.trim()) e.scope_id = 'required';
  const hhmm = /^([01]\d|2[0-3]):[0-5]\d$/;
  if (d.quiet_start && !hhmm.test(d.quiet_start)) e.quiet_start = 'time';
  if (d.quiet_end && !hhmm.test(d.quiet_end)) e.quiet_end = 'time';
  if (!!d.quiet_start !== !!d.quiet_end) e[d.quiet_start ? 'quiet_end' : 'quiet_start'] = 'required';
  if (Object.keys(e).length) return { body: null, errors: e };
  return {
    body: {
      name: d.name.trim(), channel_id: d.channel_id, severities: d.severities, kinds: d.kinds, scope: d.scope,
      scope_id: d.scope === 'all' ? null : d.scope_id.trim(), quiet_start: d.quiet_start || null, quiet_end: d.quiet_end || null,
      quiet_timezone: d.quiet_timezone.trim() || 'America/Sao_Paulo', quiet_allow_critical: d.quiet_allow_critical, enabled: d.enabled,
    },
    errors: {},
  };
}

/** A VAPID public key (base64url, no padding) as the bytes `pushManager.subscribe` wants. */
export function vapidKeyBytes(b64url: string): Uint8Array<ArrayBuffer> {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (b64url.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
