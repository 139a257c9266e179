// API keys' logic: which permissions a user may put on a key, the create form's draft turned into the API's
// body (with the checks the API makes, so that errors show beside the field), and a key's state.

/** An API key as the API lists it (never its secret). */
export interface ApiKey {
  id: string; provider_id: string; name: string; prefix: string; permissions: string[]; created_by: string;
  created_at: string; expires_at: string | null; revoked_at: string | null; last_used_at: string | null;
}
/** The answer of a creation: the key in clear, shown this once. */
export interface CreatedApiKey extends ApiKey { key: string }
/** A permission of the catalogue (`GET /permissions`). */
export interface PermissionInfo { code: string; module: string; action: string; description: string; global_only: boolean }

export interface KeyDraft { name: string; permissions: string[]; expiry: string; expiresOn: string }

/** Expiry choices of the form: days from now, none, or a chosen date. */
export const EXPIRY_CHOICES = ['30', '90', '365', 'never', 'date'] as const;

export function keyDraft(): KeyDraft {
  return { name: '', permissions: [], expiry: '90', expiresOn: '' };
}

/** Error codes, translated as `apikeys.err.<code>`. */
export type KeyError = 'required' | 'tooLong' | 'noPermission' | 'past' | 'date';

/**
 * The permissions a user may give a key: those it holds (the server refuses others), without the Global-Admin-only
 * ones (refused on a provider's key), grouped by module in code order.
 */
export function grantable(held: string[], catalogue: PermissionInfo[] | null): { module: string; codes: string[] }[] {
  const globalOnly = new Set((catalogue ?? []).filter((p) => p.global_only).map((p) => p.code));
  const codes = [...new Set(held)].filter((c) => !globalOnly.has(c) && c.includes(':')).sort();
  const groups = new Map<string, string[]>();
  for (const c of codes) {
    const m = c.split(':')[0];
    groups.set(m, [...(groups.get(m) ?? []), c]);
  }
  return [...groups].map(([module, cs]) => ({ module, codes: cs }));
}

/** The body of `POST /api-keys` for a draft, or the errors per field (`name`, `permissions`, `expires_at`). */
export function keyBody(d: KeyDraft, now: Date): { body: { name: string; permissions: string[]; expires_at: string | null } | null; errors: Record<string, KeyError> } {
  const errors: Record<string, KeyError> = {};
  const name = d.name.trim();
  if (!name) errors.name = 'required';
  else if ([...name].length > 200) errors.name = 'tooLong';
  if (!d.permissions.length) errors.permissions = 'noPermission';
  let expires: Date | null = null;
  if (d.expiry === 'date') {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(d.expiresOn);
    if (!m) errors.expires_at = 'date';
    else {
      // The end of the chosen day in the browser's time zone.
      expires = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), 23, 59, 59);
      if (expires.getTime() <= now.getTime()) errors.expires_at = 'past';
    }
  } else if (d.expiry !== 'never') {
    expires = new Date(now.getTime() + Number(d.expiry) * 86_400_000);
  }
  if (Object.keys(errors).length) return { body: null, errors };
  return { body: { name, permissions: [...new Set(d.permissions)].sort(), expires_at: expires ? expires.toISOString() : null }, errors };
}

export type KeyState = 'active' | 'expired' | 'revoked';

export function keyState(k: ApiKey, now: Date): KeyState {
  if (k.revoked_at) return 'revoked';
  if (k.expires_at && new Date(k.expires_at).getTime() <= now.getTime()) return 'expired';
  return 'active';
}

/** How a key is shown in lists: `oik_<prefix>_…`. */
export function keyLabel(k: ApiKey): string {
  return `oik_${k.prefix}_…`;
}
