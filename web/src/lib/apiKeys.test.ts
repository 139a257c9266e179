import { describe, expect, it } from 'vitest';
import { grantable, keyBody, keyDraft, keyLabel, keyState, EXPIRY_CHOICES, type ApiKey } from './apiKeys';
import { ptBR } from '../i18n/pt-BR';

const now = new Date('2026-03-10T12:00:00Z');
const key = (over: Partial<ApiKey> = {}): ApiKey => ({
  id: 'k', provider_id: 'p', name: 'Zabbix', prefix: 'ab12cd34', permissions: ['devices:read'], created_by: 'u',
  created_at: '2026-03-01T00:00:00Z', expires_at: null, revoked_at: null, last_used_at: null, ...over,
});

describe('API keys', () => {
  it('offers only the permissions the user holds, without the global ones, grouped by module', () => {
    const g = grantable(['metrics:read', 'devices:write', 'devices:read', 'providers:write', 'devices:read'],
      [{ code: 'providers:write', module: 'providers', action: 'write', description: '', global_only: true }]);
    expect(g).toEqual([{ module: 'devices', codes: ['devices:read', 'devices:write'] }, { module: 'metrics', codes: ['metrics:read'] }]);
    // Without the catalogue (no roles:read) the held ones are offered; the server still refuses a global one.
    expect(grantable(['alerts:ack'], null)).toEqual([{ module: 'alerts', codes: ['alerts:ack'] }]);
  });

  it('names the missing name and permissions, a past or malformed date', () => {
    expect(keyBody(keyDraft(), now).errors).toEqual({ name: 'required', permissions: 'noPermission' });
    expect(keyBody({ ...keyDraft(), name: 'x'.repeat(201), permissions: ['a:b'] }, now).errors).toEqual({ name: 'tooLong' });
    expect(keyBody({ ...keyDraft(), name: 'k', permissions: ['a:b'], expiry: 'date', expiresOn: '2026-03-09' }, now).errors).toEqual({ expires_at: 'past' });
    expect(keyBody({ ...keyDraft(), name: 'k', permissions: ['a:b'], expiry: 'date', expiresOn: '' }, now).errors).toEqual({ expires_at: 'date' });
  });

  it('builds the body: trimmed name, sorted permissions, the expiry chosen', () => {
    const r = keyBody({ name: '  Zabbix ', permissions: ['metrics:read', 'devices:read', 'metrics:read'], expiry: '30', expiresOn: '' }, now);
    expect(r.errors).toEqual({});
    expect(r.body).toEqual({ name: 'Zabbix', permissions: ['devices:read', 'metrics:read'], expires_at: '2026-04-09T12:00:00.000Z' });
    expect(keyBody({ name: 'k', permissions: ['a:b'], expiry: 'never', expiresOn: '' }, now).body?.expires_at).toBeNull();
    const d = keyBody({ name: 'k', permissions: ['a:b'], expiry: 'date', expiresOn: '2027-01-31' }, now).body?.expires_at;
    expect(new Date(d!).getFullYear()).toBe(2027);
  });

  it('tells active, expired and revoked keys apart', () => {
    expect(keyState(key(), now)).toBe('active');
    expect(keyState(key({ expires_at: '2026-03-10T11:59:59Z' }), now)).toBe('expired');
    expect(keyState(key({ expires_at: '2026-03-10T11:59:59Z', revoked_at: '2026-03-02T00:00:00Z' }), now)).toBe('revoked');
    expect(keyLabel(key())).toBe('oik_ab12cd34_…');
  });

  it('has a text for every expiry choice, state and error', () => {
    for (const c of EXPIRY_CHOICES) expect(`apikeys.expiry.${c}` in ptBR, c).toBe(true);
    for (const s of ['active', 'expired', 'revoked']) expect(`apikeys.state.${s}` in ptBR, s).toBe(true);
    for (const e of ['required', 'tooLong', 'noPermission', 'past', 'date']) expect(`apikeys.err.${e}` in ptBR, e).toBe(true);
  });
});
