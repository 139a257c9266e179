// Interface monitoring per POP: the API's rows (`GET /pops/{id}/interfaces`), the sorts, how a status and a
// utilisation are shown, and the link to the interface's graphs on the device page.

export interface PopInterface {
  device_id: string; device_name: string | null; device_key: string; mgmt_ip: string | null;
  if_index: string; if_name: string | null; if_descr: string | null; if_alias: string | null;
  in_bps: number | null; out_bps: number | null; speed_bps: number | null; utilisation: number | null;
  in_errors_per_s: number | null; out_errors_per_s: number | null; in_discards_per_s: number | null; out_discards_per_s: number | null;
  oper_status: number | null; admin_status: number | null; updated_at: string | null;
}

/** The server's sorts; each column that sorts names one. `name` is A to Z, the others largest first. */
export const SORTS = ['busiest', 'utilisation', 'errors', 'in', 'out', 'name'] as const;
export type Sort = typeof SORTS[number];

export function parseSort(s: string | null): Sort {
  return (SORTS as readonly string[]).includes(s ?? '') ? (s as Sort) : 'busiest';
}

/** What the status column shows (ifOperStatus, with ifAdminStatus down meaning "disabled"). */
export type IfStatus = 'up' | 'down' | 'disabled' | 'dormant' | 'other' | 'unknown';

export function ifStatus(r: Pick<PopInterface, 'oper_status' | 'admin_status'>): IfStatus {
  if (r.admin_status === 2) return 'disabled';
  switch (r.oper_status) {
    case 1: return 'up';
    case 2: case 7: return 'down'; // down, lowerLayerDown
    case 5: return 'dormant';
    case null: return 'unknown';
    default: return 'other'; // testing, unknown, notPresent
  }
}

/** Utilisation bands: below 70 % fine, up to 90 % watch, from 90 % saturated. */
export function utilisationLevel(u: number | null): 'ok' | 'warn' | 'bad' | 'none' {
  if (u === null || !Number.isFinite(u)) return 'none';
  return u >= 0.9 ? 'bad' : u >= 0.7 ? 'warn' : 'ok';
}

/** The interface's name as the device page's traffic panel names it (ifName, then ifDescr, then the index). */
export function ifLabel(r: Pick<PopInterface, 'if_name' | 'if_descr' | 'if_index'>): string {
  return r.if_name || r.if_descr || '#' + r.if_index;
}

/** Errors in + out per second, null when neither is known. */
export function errorsPerSecond(r: Pick<PopInterface, 'in_errors_per_s' | 'out_errors_per_s'>): number | null {
  if (r.in_errors_per_s === null && r.out_errors_per_s === null) return null;
  return (r.in_errors_per_s ?? 0) + (r.out_errors_per_s ?? 0);
}

/** The device page with this interface chosen in its traffic graph. */
export function graphLink(r: PopInterface): string {
  return `/devices/${r.device_id}?if=${encodeURIComponent(ifLabel(r))}`;
}

/** Pages after the first, appended without repeating a row (a live refetch of the first page may overlap). */
export function appendPage(rows: PopInterface[], more: PopInterface[]): PopInterface[] {
  const key = (r: PopInterface) => r.device_id + '/' + r.if_index;
  const seen = new Set(rows.map(key));
  return [...rows, ...more.filter((r) => !seen.has(key(r)))];
}
