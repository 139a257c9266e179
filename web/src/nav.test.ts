import { describe, expect, it } from 'vitest';
import { visibleNav } from './nav';
import type { Me } from './api/types';

const me = (permissions: string[], global_admin = false): Me =>
  ({ user_id: 'u', api_key_id: null, provider_id: global_admin ? null : 'p', global_admin, permissions });

describe('navigation by permission', () => {
  it('shows a viewer only what it may read', () => {
    const paths = visibleNav(me(['devices:read', 'pops:read'])).map((n) => n.path);
    expect(paths).toEqual(['/', '/pops', '/devices', '/notifications', '/reports']);
  });
  it('shows an admin the admin pages', () => {
    const paths = visibleNav(me(['users:read', 'roles:read', 'audit:read', 'agents:read'])).map((n) => n.path);
    expect(paths).toEqual(['/', '/agents', '/notifications', '/users', '/roles', '/audit']);
  });
  it('shows CPE firmware to whoever reads TR-069 data', () => {
    const paths = visibleNav(me(['tr069:read'])).map((n) => n.path);
    expect(paths).toContain('/firmware');
    expect(visibleNav(me(['devices:read'])).map((n) => n.path)).not.toContain('/firmware');
  });
  it('shows API keys only to who may manage them', () => {
    expect(visibleNav(me(['users:read', 'users:manage'])).map((n) => n.path)).not.toContain('/api-keys');
    expect(visibleNav(me(['users:read', 'api_keys:manage'])).map((n) => n.path)).toContain('/api-keys');
  });
  it('shows a Global Admin everything and nobody signed out anything', () => {
    expect(visibleNav(me([], true)).length).toBeGreaterThan(8);
    expect(visibleNav(null)).toEqual([]);
  });
});
