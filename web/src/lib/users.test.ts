import { describe, expect, it } from 'vitest';
import { assignableRoles, permissionMatrix, roleBody, roleDraft, toggle, userBody, userDraft } from './users';
import type { Role } from '../api/types';
import type { PermissionInfo } from './apiKeys';

const perm = (code: string, global_only = false): PermissionInfo => {
  const [module, action] = code.split(':');
  return { code, module, action, description: code, global_only };
};
const role = (id: string, permissions: string[], provider_id: string | null = 'p'): Role => ({ id, provider_id, name: id, description: '', permissions });

describe('new user form', () => {
  it('asks for a reset email by default and sends no password', () => {
    const r = userBody({ ...userDraft(), email: ' ana@isp.example ', name: ' Ana ', role_id: 'r1' });
    expect(r.errors).toEqual({});
    expect(r.body).toEqual({ email: 'ana@isp.example', name: 'Ana', role_id: 'r1', password: null });
  });
  it('checks the fields the API checks', () => {
    expect(userBody(userDraft()).errors).toEqual({ email: 'required', name: 'required', role_id: 'required' });
    expect(userBody({ ...userDraft(), email: 'ana', name: 'Ana', role_id: 'r' }).errors).toEqual({ email: 'email' });
    const set = { ...userDraft(), email: 'a@b.example', name: 'A', role_id: 'r', mode: 'set' as const };
    expect(userBody(set).errors).toEqual({ password: 'required' });
    expect(userBody({ ...set, password: 'curta' }).errors).toEqual({ password: 'short' });
    expect(userBody({ ...set, password: 'longa-o-bastante' }).body?.password).toBe('longa-o-bastante');
  });
});

describe('roles a user may give', () => {
  it('only roles whose every permission the giver holds, never Global Admin', () => {
    const roles = [role('viewer', ['devices:read']), role('noc', ['devices:read', 'alerts:ack']), role('global', ['providers:write'], null)];
    expect(assignableRoles(roles, ['devices:read', 'users:manage'], false).map((r) => r.id)).toEqual(['viewer']);
    expect(assignableRoles(roles, ['devices:read', 'alerts:ack', 'providers:write'], false).map((r) => r.id)).toEqual(['viewer', 'noc']);
  });
});

describe('permission matrix', () => {
  it('has a row per module and a column per action, reads first, without Global Admin permissions', () => {
    const m = permissionMatrix([perm('devices:write'), perm('devices:read'), perm('alerts:ack'), perm('alerts:read'), perm('providers:write', true)]);
    expect(m.actions).toEqual(['read', 'write', 'ack']);
    expect(m.rows.map((r) => r.module)).toEqual(['alerts', 'devices']);
    expect(m.rows[0].cells.map((c) => c?.code ?? null)).toEqual(['alerts:read', null, 'alerts:ack']);
    expect(m.rows[1].cells.map((c) => c?.code ?? null)).toEqual(['devices:read', 'devices:write', null]);
  });
  it('toggles cells and keeps the selection sorted and unique', () => {
    expect(toggle(['b:read'], ['a:read', 'b:read'], true)).toEqual(['a:read', 'b:read']);
    expect(toggle(['a:read', 'b:read'], ['a:read'], false)).toEqual(['b:read']);
  });
  it('a role needs a name and a permission', () => {
    expect(roleBody(roleDraft(null)).errors).toEqual({ name: 'required', permissions: 'noPermission' });
    const r = roleBody({ name: ' Técnico ', description: ' campo ', permissions: ['devices:read', 'alerts:read', 'devices:read'] });
    expect(r.body).toEqual({ name: 'Técnico', description: 'campo', permissions: ['alerts:read', 'devices:read'] });
    expect(roleDraft(role('x', ['a:read'])).permissions).toEqual(['a:read']);
  });
});
