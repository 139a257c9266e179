// The agent configuration editor's logic, pure: API shapes, the ping monitor form (rows ⇄ the document's
// `monitors.ping`), the JSON text's parse errors with their line, and the secrets still redacted.
import { isIp } from './diag';

export interface AgentDelivery {
  agent_id: string; hostname: string; last_seen: string | null; applied_version: number | null; last_version: number | null;
  last_status: string | null; last_error: string | null; last_command_id: string | null;
}
export interface AgentConfigView {
  pop_id: string; version: number; config: Record<string, unknown>; comment: string | null; created_at: string | null;
  created_by_user: string | null; agents: AgentDelivery[];
}
export interface AgentConfigVersion { version: number; comment: string | null; created_at: string; created_by_user: string | null; sections: string[] }
export interface AgentConfigDocument { version: number; config: Record<string, unknown>; comment: string | null; created_at: string }
export interface AgentConfigWritten { pop_id: string; version: number; changed: boolean; commands: string[] }

/** What the control plane shows instead of a secret to readers without agents:write. */
export const REDACTED = '********';

/** One ping monitor as the form edits it (text fields, checked on save). */
export interface MonitorRow { name: string; targets: string; interval_s: string; count: string; extra: Record<string, unknown> }

export type MonitorError = 'required' | 'ip' | 'interval' | 'count' | 'duplicate';

/** The ping monitors of a document as form rows; fields the form does not edit are kept in `extra`. */
export function monitorRows(config: Record<string, unknown>): MonitorRow[] {
  const monitors = (config.monitors ?? {}) as Record<string, unknown>;
  const ping = Array.isArray(monitors.ping) ? monitors.ping : [];
  return ping.map((m) => {
    const { name, targets, interval_ms, count, ...extra } = (m ?? {}) as Record<string, unknown>;
    return {
      name: typeof name === 'string' ? name : '',
      targets: Array.isArray(targets) ? targets.map(String).join(', ') : '',
      interval_s: typeof interval_ms === 'number' ? String(interval_ms / 1000) : '',
      count: typeof count === 'number' ? String(count) : '',
      extra,
    };
  });
}

/** A blank row (the agent's defaults: every 10 s, 5 probes). */
export function emptyMonitor(): MonitorRow {
  return { name: '', targets: '', interval_s: '10', count: '5', extra: {} };
}

/**
 * The document with `monitors.ping` replaced by the rows; errors per row and field when a row is wrong (the
 * document is then null). Other sections and the other monitor kinds stay as they are.
 */
export function withMonitors(config: Record<string, unknown>, rows: MonitorRow[]): {
  config: Record<string, unknown> | null; errors: Record<number, Partial<Record<'name' | 'targets' | 'interval_s' | 'count', MonitorError>>>;
} {
  const errors: Record<number, Partial<Record<'name' | 'targets' | 'interval_s' | 'count', MonitorError>>> = {};
  const names = new Set<string>();
  const ping = rows.map((r, i) => {
    const e: Partial<Record<'name' | 'targets' | 'interval_s' | 'count', MonitorError>> = {};
    const name = r.name.trim();
    if (!name) e.name = 'required';
    else if (names.has(name)) e.name = 'duplicate';
    names.add(name);
    const targets = r.targets.split(/[\s,]+/).filter(Boolean);
    if (!targets.length) e.targets = 'required';
    else if (!targets.every(isIp)) e.targets = 'ip';
    const interval = Number(r.interval_s.trim().replace(',', '.'));
    if (!r.interval_s.trim() || !Number.isFinite(interval) || interval < 1 || interval > 86400) e.interval_s = 'interval';
    const count = Number(r.count.trim());
    if (!/^\d+$/.test(r.count.trim()) || count < 1 || count > 100) e.count = 'count';
    if (Object.keys(e).length) errors[i] = e;
    return { ...r.extra, name, targets, interval_ms: Math.round(interval * 1000), count };
  });
  if (Object.keys(errors).length) return { config: null, errors };
  const monitors = { ...((config.monitors ?? {}) as Record<string, unknown>), ping };
  return { config: { ...config, monitors }, errors };
}

/** The JSON text as a document, or the parser's message with the line (1-based) where the text stops being JSON. */
export function parseDocument(text: string): { config: Record<string, unknown> | null; error: string | null; line: number | null } {
  try {
    const v: unknown = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return { config: null, error: 'object', line: 1 };
    return { config: v as Record<string, unknown>, error: null, line: null };
  } catch (e) {
    const at = jsonErrorOffset(text);
    return { config: null, error: e instanceof Error ? e.message : String(e), line: text.slice(0, at).split('\n').length };
  }
}

/** The offset of the first character that is not valid JSON (browsers word and place their messages differently). */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const fail = (): never => { throw i; };
  const lit = (w: string) => { if (text.startsWith(w, i)) i += w.length; else fail(); };
  const str = () => {
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++;
      else if (text.charCodeAt(i) < 0x20) fail();
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  const num = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) fail();
    i += m![0].length;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++; ws();
      if (text[i] === '}') { i++; return; }
      for (;;) {
        ws(); if (text[i] !== '"') fail(); str(); ws();
        if (text[i] !== ':') fail(); i++; value(); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return; }
        fail();
      }
    } else if (c === '[') {
      i++; ws();
      if (text[i] === ']') { i++; return; }
      for (;;) {
        value(); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return; }
        fail();
      }
    } else if (c === '"') str();
    else if (c === 't') lit('true');
    else if (c === 'f') lit('false');
    else if (c === 'n') lit('null');
    else num();
  };
  try { value(); ws(); return i < text.length ? i : text.length; } catch (at) { return typeof at === 'number' ? at : 0; }
}

/** Paths (`snmp.v2c.0.community`) whose value is still the redaction placeholder: a save would be refused. */
export function redactedPaths(v: unknown, path = ''): string[] {
  if (v === REDACTED) return [path];
  if (Array.isArray(v)) return v.flatMap((x, i) => redactedPaths(x, path ? `${path}.${i}` : String(i)));
  if (v && typeof v === 'object') {
    return Object.entries(v as Record<string, unknown>).flatMap(([k, x]) => redactedPaths(x, path ? `${path}.${k}` : k));
  }
  return [];
}

/** Where one agent stands: applied the newest version, on its way, refused or failed, or never reached. */
export function deliveryState(a: AgentDelivery, newest: number): 'current' | 'pending' | 'failed' | 'old' | 'none' {
  if (newest > 0 && a.applied_version === newest) return 'current';
  if (a.last_version === newest && a.last_status && ['failed', 'rejected', 'expired', 'dead', 'cancelled'].includes(a.last_status)) return 'failed';
  if (a.last_version === newest) return 'pending';
  if (a.applied_version !== null) return 'old';
  return 'none';
}
