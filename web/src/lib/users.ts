// Users and roles: the new-user form's draft turned into the API's body (with the API's checks, so that errors
// show beside the field), which roles a user may hand out, and the permission catalogue as a module × action
// matrix for the custom role editor.
import type { Role } from '../api/types';
import type { PermissionInfo } from './apiKeys';

/** The server's shortest password (`auth::password::MIN_PASSWORD_CHARS`). */
export const MIN_PASSWORD_CHARS = 10;

/** How the new user gets a password: typed here, or chosen by the user through a reset email. */
export type PasswordMode = 'set' | 'email';

export interface UserDraft { email: string; name: string; role_id: string; mode: PasswordMode; password: string }

export function userDraft(): UserDraft {
  return { email: '', name: '', role_id: '', mode: 'email', password: '' };
}

/** Error codes, translated as `users.err.<code>`. */
export type UserError = 'required' | 'email' | 'short' | 'tooLong';

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** The body of `POST /users` for a draft, or the errors per field (`email`, `name`, `role_id`, `password`). */
export function userBody(d: UserDraft): { body: { email: string; name: string; role_id: string; password: string | null } | null; errors: Record<string, UserError> } {
  const errors: Record<string, UserError> = {};
  const email = d.email.trim(), name = d.name.trim();
  if (!email) errors.email = 'required';
  else if (!EMAIL.test(email) || email.length > 254) errors.email = 'email';
  if (!name) errors.name = 'required';
  else if ([...name].length > 200) errors.name = 'tooLong';
  if (!d.role_id) errors.role_id = 'required';
  if (d.mode === 'set' && [...d.password].length < MIN_PASSWORD_CHARS) errors.password = d.password ? 'short' : 'required';
  if (Object.keys(errors).length) return { body: null, errors };
  return { body: { email, name, role_id: d.role_id, password: d.mode === 'set' ? d.password : null }, errors: {} };
}

/**
 * The roles a user holding `held` may give (the server refuses a role with a permission the giver lacks), the
 * Global Admin role never (only a Global Admin gives it, and not from a provider's console).
 */
export function assignableRoles(roles: Role[], held: string[], globalAdmin: boolean): Role[] {
  const have = new Set(held);
  return roles.filter((r) => (globalAdmin || r.permissions.every((p) => have.has(p))) && !(r.provider_id === null && r.permissions.includes('providers:write') && !globalAdmin));
}

/** The catalogue as rows (modules) and columns (actions); a cell is the permission's code or null. */
export interface Matrix { actions: string[]; rows: { module: string; cells: (PermissionInfo | null)[] }[] }

/** The permissions a provider's role may hold (not the Global Admin ones), as a module × action matrix. */
export function permissionMatrix(catalogue: PermissionInfo[]): Matrix {
  const perms = catalogue.filter((p) => !p.global_only);
  const order = ['read', 'write', 'manage', 'ack', 'run', 'revoke'];
  const rank = (a: string) => { const i = order.indexOf(a); return i < 0 ? order.length : i; };
  const actions = [...new Set(perms.map((p) => p.action))].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const modules = [...new Set(perms.map((p) => p.module))].sort();
  return {
    actions,
    rows: modules.map((module) => ({
      module,
      cells: actions.map((a) => perms.find((p) => p.module === module && p.action === a) ?? null),
    })),
  };
}

export interface RoleDraft { name: string; description: string; permissions: string[] }

export function roleDraft(r: Role | null): RoleDraft {
  return r ? { name: r.name, description: r.description, permissions: [...r.permissions] } : { name: '', description: '', permissions: [] };
}

/** The body of `POST /roles` (or `PATCH /roles/{id}`), or the errors per field. */
export function roleBody(d: RoleDraft): { body: RoleDraft | null; errors: Record<string, UserError | 'noPermission'> } {
  const errors: Record<string, UserError | 'noPermission'> = {};
  const name = d.name.trim();
  if (!name) errors.name = 'required';
  else if ([...name].length > 200) errors.name = 'tooLong';
  if (!d.permissions.length) errors.permissions = 'noPermission';
  if (Object.keys(errors).length) return { body: null, errors };
  return { body: { name, description: d.description.trim(), permissions: [...new Set(d.permissions)].sort() }, errors: {} };
}

/** Toggles one permission, or a whole module row or action column when `codes` has several. */
export function toggle(selected: string[], codes: string[], on: boolean): string[] {
  const s = new Set(selected);
  for (const c of codes) { if (on) s.add(c); else s.delete(c); }
  return [...s].sort();
}
