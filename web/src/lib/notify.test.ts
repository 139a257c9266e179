import { describe, expect, it } from 'vitest';
import { channelBody, channelDraft, policyBody, policyDraft, vapidKeyBytes, CHANNEL_KINDS, EVENT_KINDS, POLICY_SCOPES } from './notify';
import { ptBR } from '../i18n/pt-BR';

describe('channel editor', () => {
  it('builds an email channel from a typed list of addresses', () => {
    const r = channelBody({ ...channelDraft(), name: 'NOC', to: 'a@x.com.br; b@y.net,  ' }, false);
    expect(r.errors).toEqual({});
    expect(r.body).toEqual({ name: 'NOC', kind: 'email', config: { to: ['a@x.com.br', 'b@y.net'] }, language: 'pt-BR', rate_limit_per_minute: 30, enabled: true });
  });

  it('names the wrong fields', () => {
    expect(channelBody({ ...channelDraft(), to: 'not-an-address' }, false).errors).toEqual({ name: 'required', 'config.to': 'email' });
    expect(channelBody({ ...channelDraft(), name: 'T', kind: 'telegram', chat_id: '-100123' }, false).errors).toEqual({ secret: 'required' });
    expect(channelBody({ ...channelDraft(), name: 'T', kind: 'telegram', chat_id: '-100123', secret: 'nope' }, false).errors).toEqual({ secret: 'token' });
    expect(channelBody({ ...channelDraft(), name: 'W', kind: 'webhook', url: 'ftp://x' }, false).errors).toEqual({ 'config.url': 'url' });
    expect(channelBody({ ...channelDraft(), name: 'W', kind: 'webhook', url: 'https://x', rate: '0' }, false).errors).toEqual({ rate_limit_per_minute: 'rate' });
  });

  it('sends a numeric Telegram chat id as a number and keeps the token when editing', () => {
    const r = channelBody({ ...channelDraft(), name: 'T', kind: 'telegram', chat_id: '-100123', secret: '123:abc_DEF' }, false);
    expect(r.body).toMatchObject({ kind: 'telegram', config: { chat_id: -100123 }, secret: '123:abc_DEF' });
    const edit = channelBody({ ...channelDraft(), name: 'T', kind: 'telegram', chat_id: '@noc' }, true);
    expect(edit.body).toEqual({ name: 'T', config: { chat_id: '@noc' }, language: 'pt-BR', rate_limit_per_minute: 30, enabled: true });
  });

  it('reads an existing channel back', () => {
    const d = channelDraft({ id: 'c', name: 'Mail', kind: 'email', config: { to: ['a@b.co'] }, language: 'en', rate_limit_per_minute: 5, enabled: false, has_secret: false, created_at: '', updated_at: '' });
    expect(d).toMatchObject({ name: 'Mail', to: 'a@b.co', language: 'en', rate: '5', enabled: false, secret: '' });
  });
});

describe('policy editor', () => {
  it('defaults to warning and critical, every event, the whole provider', () => {
    const r = policyBody({ ...policyDraft(), name: 'Plantão', channel_id: 'c1' });
    expect(r.body).toMatchObject({ severities: ['warning', 'critical'], kinds: [...EVENT_KINDS], scope: 'all', scope_id: null, quiet_start: null });
  });

  it('checks quiet hours and the scope', () => {
    expect(policyBody({ ...policyDraft(), name: 'p', channel_id: 'c', quiet_start: '22:00' }).errors).toEqual({ quiet_end: 'required' });
    expect(policyBody({ ...policyDraft(), name: 'p', channel_id: 'c', quiet_start: '25:00', quiet_end: '06:00' }).errors).toEqual({ quiet_start: 'time' });
    expect(policyBody({ ...policyDraft(), name: 'p', channel_id: 'c', scope: 'pop' }).errors).toEqual({ scope_id: 'required' });
    expect(policyBody({ ...policyDraft(), severities: [], kinds: [] }).errors).toEqual({ name: 'required', channel_id: 'required', severities: 'required', kinds: 'required' });
  });
});

describe('web push', () => {
  it('decodes the VAPID key (base64url without padding)', () => {
    const bytes = new Uint8Array(65).map((_, i) => (i * 37) % 256);
    const b64url = Buffer.from(bytes).toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    expect([...vapidKeyBytes(b64url)]).toEqual([...bytes]);
  });

  it('has a translation for every kind and scope', () => {
    const keys = [...CHANNEL_KINDS.map((k) => `notif.kind.${k}`), ...POLICY_SCOPES.map((s) => `notif.scope.${s}`),
      ...['required', 'email', 'url', 'token', 'rate', 'time', 'none'].map((e) => `notif.err.${e}`),
      ...['unsupported', 'denied', 'off', 'on', 'busy'].map((s) => `notif.push.${s}`)];
    expect(keys.filter((k) => !(k in ptBR))).toEqual([]);
  });
});
