// The navigation: which pages exist and the permission each needs (from /me; the server refuses anyway).
import type { MessageKey } from './i18n/pt-BR';
import type { HelpPage } from './components/help';
import type { Me } from './api/types';

export interface NavEntry {
  path: string; label: MessageKey; permission: string | null; help: HelpPage; icon: string;
  /** Shown when the user holds any of these (instead of `permission`). */
  anyOf?: string[];
}

/**
 * The navigation; `permission` decides whether the entry shows (null: everyone signed in). Notifications is for
 * everyone: any user may subscribe a browser to push; channels and policies inside need notifications:manage.
 */
export const NAV: NavEntry[] = [
  { path: '/', label: 'nav.dashboard', permission: null, help: 'dashboard', icon: '◉' },
  { path: '/pops', label: 'nav.pops', permission: 'pops:read', help: 'pops', icon: '⌂' },
  { path: '/agents', label: 'nav.agents', permission: 'agents:read', help: 'agents', icon: '⚙' },
  { path: '/devices', label: 'nav.devices', permission: 'devices:read', help: 'devices', icon: '▤' },
  { path: '/firmware', label: 'nav.firmware', permission: 'tr069:read', help: 'firmware', icon: '⇪' },
  { path: '/diagnostics', label: 'nav.diagnostics', permission: 'diagnostics:run', help: 'diagnostics', icon: '⌁' },
  { path: '/alerts', label: 'nav.alerts', permission: 'alerts:read', help: 'alerts', icon: '⚠' },
  { path: '/notifications', label: 'nav.notifications', permission: null, help: 'notifications', icon: '✉' },
  { path: '/users', label: 'nav.users', permission: 'users:read', help: 'users', icon: '☺' },
  { path: '/roles', label: 'nav.roles', permission: 'roles:read', help: 'roles', icon: '⚑' },
  { path: '/api-keys', label: 'nav.apiKeys', permission: 'api_keys:manage', help: 'apiKeys', icon: '⚿' },
  { path: '/audit', label: 'nav.audit', permission: 'audit:read', help: 'audit', icon: '☰' },
  // Each report has its own permission: the page shows with any of them and lists the reports allowed.
  { path: '/reports', label: 'nav.reports', permission: null, anyOf: ['devices:read', 'alerts:read', 'metrics:read'], help: 'reports', icon: '⇩' },
];

export function visibleNav(me: Me | null): NavEntry[] {
  if (!me) return [];
  const may = (p: string) => me.global_admin || me.permissions.includes(p);
  return NAV.filter((n) => (n.anyOf ? n.anyOf.some(may) : n.permission === null || may(n.permission)));
}

