// The TR-069 page's logic, pure: API shapes, the parameter tree's path levels, value types and their checks,
// the commands a change becomes, and how a task reads in the history.

export type Level = 'green' | 'yellow' | 'red';
export interface OpticalRange { green_min: number; green_max: number; yellow_min: number; yellow_max: number }
export interface Tr069Summary {
  wan: { connection_type: string | null; ip: string | null; status: string | null; pppoe_user: string | null; path: string | null };
  wifi: { ssids: string[]; channel: number | null; clients: number | null };
  optical: {
    rx_dbm: number | null; rx_level: Level | null; tx_dbm: number | null; tx_level: Level | null;
    rx_range: OpticalRange; tx_range: OpticalRange;
  };
  firmware: string | null;
  uptime_s: number | null;
}
export interface Tr069Param {
  name: string; value: string; ts: string; source: string; writable: boolean | null; writable_source: 'set' | 'data_model' | null;
}
export interface Tr069View {
  device_id: string; device_key: string; oui: string | null; product_class: string | null; serial_number: string | null;
  vendor: string | null; firmware: string | null; attrs: Record<string, unknown>; last_seen: string; updated_at: string | null;
  total: number; matched: number; summary: Tr069Summary; children: { path: string; parameters: number }[];
  parameters: { items: Tr069Param[]; next_cursor: string | null };
}
export interface Tr069Task {
  id: string; name: string; args: Record<string, unknown>; status: string; error: string | null; created_at: string;
  finished_at: string | null; output: unknown; result_ts: string | null;
}

/** The path levels of a prefix, for the breadcrumb: `A.B.1.` → `A.`, `A.B.`, `A.B.1.`. */
export function crumbs(prefix: string): { label: string; path: string }[] {
  const parts = prefix.split('.').filter((p) => p !== '');
  return parts.map((label, i) => ({ label, path: parts.slice(0, i + 1).join('.') + '.' }));
}

/** The prefix one level up (`''` at the root). */
export function parentOf(prefix: string): string {
  const c = crumbs(prefix);
  return c.length > 1 ? c[c.length - 2].path : '';
}

/** A parameter's name relative to the level browsed. */
export function relativeName(name: string, prefix: string): string {
  return prefix && name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

/** The last segment of an object path, without its dot: `Device.WiFi.` → `WiFi`. */
export function childLabel(path: string, prefix: string): string {
  return relativeName(path, prefix).replace(/\.$/, '');
}

export const XSD_TYPES = ['xsd:string', 'xsd:boolean', 'xsd:unsignedInt', 'xsd:int', 'xsd:dateTime'] as const;
export type XsdType = (typeof XSD_TYPES)[number];

/** The type a value most likely has (the ingest keeps values as text, without the CPE's type). */
export function inferXsd(value: string): XsdType {
  const v = value.trim();
  if (v === 'true' || v === 'false') return 'xsd:boolean';
  if (/^\d+$/.test(v) && v.length <= 10) return 'xsd:unsignedInt';
  if (/^-\d+$/.test(v) && v.length <= 11) return 'xsd:int';
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/.test(v)) return 'xsd:dateTime';
  return 'xsd:string';
}

export type ValueError = 'boolean' | 'unsigned' | 'int' | 'datetime' | 'long';

/** Most characters a string value may have (TR-069 strings are at most 256 unless the model says more). */
export const MAX_VALUE_CHARS = 4096;

/** Checks a value against its type; null when it fits. */
export function checkValue(value: string, type: XsdType): ValueError | null {
  const v = value.trim();
  switch (type) {
    case 'xsd:boolean': return ['true', 'false', '1', '0'].includes(v) ? null : 'boolean';
    case 'xsd:unsignedInt': return /^\d+$/.test(v) && Number(v) <= 4294967295 ? null : 'unsigned';
    case 'xsd:int': return /^-?\d+$/.test(v) && Math.abs(Number(v)) <= 2147483648 ? null : 'int';
    case 'xsd:dateTime': return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/.test(v) ? null : 'datetime';
    default: return value.length <= MAX_VALUE_CHARS ? null : 'long';
  }
}

/** The `POST /commands` body that writes one parameter of a device. */
export function setParamsCommand(deviceId: string, name: string, value: string, type: XsdType) {
  const v = type === 'xsd:string' ? value : value.trim();
  return { name: 'tr069.set_params', device_id: deviceId, args: { values: [{ name, value: v, xsd_type: type }] } };
}

/** The `POST /commands` body that reads parameters again (a partial path ends in `.`; empty: the whole tree). */
export function getParamsCommand(deviceId: string, root: string) {
  return { name: 'tr069.get_params', device_id: deviceId, args: { names: [root] } };
}

/** The root object of a tree (`Device.` or `InternetGatewayDevice.`), from a parameter name. */
export function rootOf(names: string[]): string {
  const first = names.find((n) => n.includes('.'));
  return first ? first.slice(0, first.indexOf('.') + 1) : 'InternetGatewayDevice.';
}

/** What a task did, in a few words: the parameters written or read, from its arguments. */
export function taskTarget(t: Pick<Tr069Task, 'name' | 'args'>): string {
  const a = t.args ?? {};
  if (t.name === 'tr069.set_params' && Array.isArray(a.values)) {
    return a.values.map((v) => {
      const o = (v ?? {}) as Record<string, unknown>;
      return `${String(o.name ?? '')} = ${String(o.value ?? '')}`;
    }).join('; ');
  }
  if (t.name === 'tr069.get_params' && Array.isArray(a.names)) return a.names.map(String).join(', ');
  if (t.name === 'tr069.download' && typeof a.url === 'string') return a.url;
  return '';
}

/** The values a finished task reports (`output.values`: read or written), if any. */
export function taskValues(output: unknown): { name: string; value: string }[] {
  const o = (output ?? {}) as Record<string, unknown>;
  const v = o.values ?? o.parameters;
  if (!Array.isArray(v)) return [];
  return v.flatMap((x) => {
    const p = (x ?? {}) as Record<string, unknown>;
    return typeof p.name === 'string' ? [{ name: p.name, value: String(p.value ?? '') }] : [];
  });
}

/** Where a value sits on a gauge drawn from yellow_min − 3 dB to yellow_max + 3 dB, 0 to 100. */
export function gaugePosition(value: number, r: OpticalRange): number {
  const lo = r.yellow_min - 3, hi = r.yellow_max + 3;
  return Math.max(0, Math.min(100, ((value - lo) / (hi - lo)) * 100));
}

/** The gauge's coloured stretches, in percent of its width. */
export function gaugeBands(r: OpticalRange): { level: Level; from: number; to: number }[] {
  const p = (v: number) => gaugePosition(v, r);
  return [
    { level: 'red', from: 0, to: p(r.yellow_min) },
    { level: 'yellow', from: p(r.yellow_min), to: p(r.green_min) },
    { level: 'green', from: p(r.green_min), to: p(r.green_max) },
    { level: 'yellow', from: p(r.green_max), to: p(r.yellow_max) },
    { level: 'red', from: p(r.yellow_max), to: 100 },
  ];
}
