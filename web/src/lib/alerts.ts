// The alert pages' logic: what a user may do with an alert, and the rule editor's draft (text fields as typed)
// turned into the API's body, with the checks the API makes repeated here so that errors show as the user types.
import type { Alert, AlertRule } from '../api/types';

/** The buttons an alert row shows for a user with these permissions. */
export function alertActions(a: Alert, can: (p: string) => boolean): { ack: boolean; resolve: boolean; silence: boolean } {
  const firing = a.state === 'firing';
  return {
    ack: firing && !a.acknowledged_at && can('alerts:ack'),
    resolve: firing && can('alerts:ack'),
    silence: firing && can('alerts:manage'),
  };
}

export const KINDS = ['threshold', 'rate', 'absence', 'offline', 'optical'] as const;
export const OPS = ['>', '>=', '<', '<=', '==', '!='] as const;
export const SEVERITIES = ['info', 'warning', 'critical'] as const;
export const SCOPES = ['provider', 'pop', 'group', 'device'] as const;
export const MISSING = ['keep', 'resolve', 'alert'] as const;

/** The editor's fields, as typed. */
export interface RuleDraft {
  rule_key: string; name: string; scope: string; scope_id: string; metric: string; kind: string; op: string;
  threshold: string; recover_threshold: string; low: string; high: string; hysteresis: string; absence_secs: string;
  severity: string; for_secs: string; recover_for_secs: string; missing_data: string; flap_enabled: boolean;
  is_uplink: boolean; enabled: boolean;
}

export function emptyDraft(): RuleDraft {
  return {
    rule_key: '', name: '', scope: 'provider', scope_id: '', metric: '', kind: 'threshold', op: '>', threshold: '',
    recover_threshold: '', low: '', high: '', hysteresis: '0', absence_secs: '', severity: 'warning', for_secs: '0',
    recover_for_secs: '0', missing_data: 'keep', flap_enabled: true, is_uplink: false, enabled: true,
  };
}

const str = (v: number | null | undefined) => (v === null || v === undefined ? '' : String(v));

export function draftFromRule(r: AlertRule): RuleDraft {
  return {
    rule_key: r.rule_key, name: r.name, scope: r.scope, scope_id: r.scope_id ?? '', metric: r.metric, kind: r.kind,
    op: r.op ?? '>', threshold: str(r.threshold), recover_threshold: str(r.recover_threshold), low: str(r.low),
    high: str(r.high), hysteresis: str(r.hysteresis), absence_secs: str(r.absence_secs), severity: r.severity,
    for_secs: str(r.for_secs), recover_for_secs: str(r.recover_for_secs), missing_data: r.missing_data,
    flap_enabled: r.flap_enabled, is_uplink: r.is_uplink, enabled: r.enabled,
  };
}

/** Error codes of the draft's checks (translated by the page as `rules.err.<code>`). */
export type DraftError = 'required' | 'number' | 'key' | 'uuid' | 'order' | 'secs';

/** A number as typed ("1,5" is accepted as the Brazilian decimal comma); empty: null; not a number: NaN. */
export function parseNumber(s: string): number | null {
  const t = s.trim().replace(',', '.');
  if (!t) return null;
  return /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(t) ? Number(t) : Number.NaN;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The API body of a draft, or the errors per field (the same rules as the API's, which still has the last word). */
export function ruleBody(d: RuleDraft): { body: Record<string, unknown> | null; errors: Record<string, DraftError> } {
  const e: Record<string, DraftError> = {};
  if (!/^[a-z0-9][a-z0-9_.-]{0,99}$/.test(d.rule_key)) e.rule_key = d.rule_key ? 'key' : 'required';
  if (!d.name.trim()) e.name = 'required';
  if (!d.metric.trim()) e.metric = 'required';
  if (d.scope !== 'provider' && !UUID.test(d.scope_id.trim())) e.scope_id = d.scope_id.trim() ? 'uuid' : 'required';
  const num = (f: keyof RuleDraft, required: boolean): number | null => {
    const v = parseNumber(String(d[f]));
    if (v === null) { if (required) e[f] = 'required'; return null; }
    if (Number.isNaN(v)) { e[f] = 'number'; return null; }
    return v;
  };
  const secs = (f: keyof RuleDraft, min: number): number => {
    const v = parseNumber(String(d[f]));
    if (v === null || Number.isNaN(v) || !Number.isInteger(v) || v < min || v > 604_800) { e[f] = 'secs'; return 0; }
    return v;
  };
  const body: Record<string, unknown> = {
    rule_key: d.rule_key, name: d.name.trim(), scope: d.scope, scope_id: d.scope === 'provider' ? null : d.scope_id.trim(),
    metric: d.metric.trim(), kind: d.kind, severity: d.severity, missing_data: d.missing_data,
    for_secs: secs('for_secs', 0), recover_for_secs: secs('recover_for_secs', 0),
    flap_enabled: d.flap_enabled, is_uplink: d.is_uplink, enabled: d.enabled,
    op: null, threshold: null, recover_threshold: null, low: null, high: null, absence_secs: null,
    hysteresis: num('hysteresis', false) ?? 0,
  };
  if (d.kind === 'threshold' || d.kind === 'rate') {
    body.op = d.op;
    body.threshold = num('threshold', true);
    body.recover_threshold = num('recover_threshold', false);
  } else if (d.kind === 'optical') {
    const low = num('low', true), high = num('high', true);
    if (low !== null && high !== null && !(low < high)) e.high = 'order';
    body.low = low;
    body.high = high;
  } else {
    body.absence_secs = secs('absence_secs', 1);
  }
  return Object.keys(e).length ? { body: null, errors: e } : { body, errors: {} };
}

/** Which fields the editor shows for a kind of rule. */
export function fieldsOf(kind: string): { op: boolean; threshold: boolean; optical: boolean; absence: boolean } {
  return {
    op: kind === 'threshold' || kind === 'rate',
    threshold: kind === 'threshold' || kind === 'rate',
    optical: kind === 'optical',
    absence: kind === 'absence' || kind === 'offline',
  };
}

// --- preview -----------------------------------------------------------------------------------------------------

/** The preview's ranges, hours back from now. */
export const PREVIEW_RANGES = [6, 24, 72, 168] as const;

/**
 * The preview body of a draft: the rule's checks without name and key (a rule can be previewed before it is
 * named), over the `hours` before `now`; errors as in `ruleBody`.
 */
export function previewBody(d: RuleDraft, hours: number, now: number, ruleId: string | null):
  { body: Record<string, unknown> | null; errors: Record<string, DraftError> } {
  const named: RuleDraft = { ...d, name: d.name.trim() || 'preview', rule_key: d.rule_key || 'preview' };
  const r = ruleBody(named);
  if (!r.body) return r;
  return {
    body: { rule: r.body, rule_id: ruleId, from: new Date(now - hours * 3_600_000).toISOString(), to: new Date(now).toISOString() },
    errors: {},
  };
}

/** One bar of a preview timeline: where it starts and how wide it is, in percent of the range. */
export interface Bar { left: number; width: number; open: boolean }

/**
 * The firing intervals of a target as bars over `[from, to]` (ISO times), clipped to the range; a bar is at least
 * `minWidth` percent wide so that a short alert stays visible.
 */
export function timelineBars(intervals: { start: string; end: string | null }[], from: string, to: string, minWidth = 0.6): Bar[] {
  const a = Date.parse(from), b = Date.parse(to);
  const span = b - a;
  if (!(span > 0)) return [];
  return intervals.map((i) => {
    const s = Math.max(a, Math.min(b, Date.parse(i.start)));
    const e = i.end === null ? b : Math.max(s, Math.min(b, Date.parse(i.end)));
    const left = ((s - a) / span) * 100;
    const width = Math.min(100 - left, Math.max(minWidth, ((e - s) / span) * 100));
    return { left, width, open: i.end === null };
  });
}

/** A duration in seconds as the largest two units: `2 h 5 min`, `45 s`, `3 d 4 h`. */
export function shortDuration(secs: number): string {
  const s = Math.max(0, Math.round(secs));
  const d = Math.floor(s / 86_400), h = Math.floor((s % 86_400) / 3_600), m = Math.floor((s % 3_600) / 60), r = s % 60;
  if (d) return h ? `${d} d ${h} h` : `${d} d`;
  if (h) return m ? `${h} h ${m} min` : `${h} h`;
  if (m) return r ? `${m} min ${r} s` : `${m} min`;
  return `${r} s`;
}
