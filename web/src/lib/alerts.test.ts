import { describe, expect, it } from 'vitest';
import { alertActions, draftFromRule, emptyDraft, fieldsOf, KINDS, MISSING, parseNumber, previewBody, ruleBody, SCOPES, SEVERITIES, shortDuration, timelineBars } from './alerts';
import { fieldErrors } from '../api/client';
import { ptBR } from '../i18n/pt-BR';
import type { Alert, AlertRule } from '../api/types';

const alert = (over: Partial<Alert> = {}): Alert => ({
  id: 'a', rule_id: 'r', rule_name: 'CPU', target: 'sw-1', device_id: null, pop_id: null, series_id: null, state: 'firing',
  severity: 'warning', value: 95, occurrences: 1, flapping: false, inhibited_by: null, acknowledged_by: null,
  acknowledged_at: null, started_at: '2026-11-29T10:00:00Z', resolved_at: null, manual: false, ...over,
});

describe('alert actions follow the permissions', () => {
  const perms = (...p: string[]) => (x: string) => p.includes(x);
  it('a viewer sees no button', () => {
    expect(alertActions(alert(), perms('alerts:read'))).toEqual({ ack: false, resolve: false, silence: false });
  });
  it('a technician acknowledges and resolves but does not silence', () => {
    expect(alertActions(alert(), perms('alerts:read', 'alerts:ack'))).toEqual({ ack: true, resolve: true, silence: false });
  });
  it('an acknowledged alert cannot be acknowledged again; a resolved one has no action', () => {
    const all = perms('alerts:ack', 'alerts:manage');
    expect(alertActions(alert({ acknowledged_at: '2026-11-29T10:05:00Z' }), all)).toEqual({ ack: false, resolve: true, silence: true });
    expect(alertActions(alert({ state: 'resolved' }), all)).toEqual({ ack: false, resolve: false, silence: false });
  });
});

describe('rule editor', () => {
  it('reads numbers with a decimal comma', () => {
    expect(parseNumber('1,5')).toBe(1.5);
    expect(parseNumber(' -27 ')).toBe(-27);
    expect(parseNumber('')).toBeNull();
    expect(parseNumber('abc')).toBeNaN();
    expect(parseNumber('1.2.3')).toBeNaN();
  });

  it('builds the body of a threshold rule', () => {
    const r = ruleBody({ ...emptyDraft(), rule_key: 'cpu-alta', name: ' CPU alta ', metric: 'cpu.load_percent', threshold: '90', for_secs: '120' });
    expect(r.errors).toEqual({});
    expect(r.body).toMatchObject({ rule_key: 'cpu-alta', name: 'CPU alta', kind: 'threshold', op: '>', threshold: 90, for_secs: 120, scope_id: null, low: null, absence_secs: null });
  });

  it('names every field that is wrong', () => {
    const r = ruleBody({ ...emptyDraft(), rule_key: 'Bad Key', scope: 'pop', threshold: 'x', for_secs: '-1' });
    expect(r.body).toBeNull();
    expect(r.errors).toEqual({ rule_key: 'key', name: 'required', metric: 'required', scope_id: 'required', threshold: 'number', for_secs: 'secs' });
  });

  it('checks the fields of optical and absence rules', () => {
    const base = { ...emptyDraft(), rule_key: 'o', name: 'n', metric: 'onu.rx_dbm' };
    expect(ruleBody({ ...base, kind: 'optical', low: '-20', high: '-27' }).errors).toEqual({ high: 'order' });
    expect(ruleBody({ ...base, kind: 'optical', low: '-27', high: '-8' }).body).toMatchObject({ low: -27, high: -8, op: null, threshold: null });
    expect(ruleBody({ ...base, kind: 'offline' }).errors).toEqual({ absence_secs: 'secs' });
    expect(ruleBody({ ...base, kind: 'offline', absence_secs: '300' }).body).toMatchObject({ absence_secs: 300 });
    expect(fieldsOf('optical')).toEqual({ op: false, threshold: false, optical: true, absence: false });
  });

  it('edits an existing rule without losing its values', () => {
    const rule = {
      id: 'x', rule_key: 'loss', name: 'Perda', scope: 'provider', scope_id: null, metric: 'ping.loss_ratio', kind: 'threshold', op: '>=',
      threshold: 0.05, recover_threshold: 0.01, low: null, high: null, hysteresis: 0, absence_secs: null, severity: 'critical',
      for_secs: 60, recover_for_secs: 300, missing_data: 'alert', flap_enabled: false, flap_window: 21, flap_high: 50, flap_low: 25,
      is_uplink: false, enabled: true, created_at: '', updated_at: '',
    } satisfies AlertRule;
    expect(ruleBody(draftFromRule(rule)).body).toMatchObject({ op: '>=', threshold: 0.05, recover_threshold: 0.01, severity: 'critical', missing_data: 'alert', flap_enabled: false, recover_for_secs: 300 });
  });

  it('maps the API validation message to its fields', () => {
    expect(fieldErrors('threshold: required for threshold and rate rules')).toEqual({ fields: ['threshold'], text: 'required for threshold and rate rules' });
    expect(fieldErrors('low, high: required for optical rules, low < high').fields).toEqual(['low', 'high']);
    expect(fieldErrors('Failed to deserialize the JSON body into the target type: for_secs: invalid type').fields).toEqual(['for_secs']);
    expect(fieldErrors('`from` must be before `to`').fields).toEqual([]);
    expect(fieldErrors('scope_id is required when scope is pop or group')).toEqual({ fields: ['scope_id'], text: 'is required when scope is pop or group' });
    expect(fieldErrors('config.to: 1 to 10 addresses').fields).toEqual(['config.to']);
  });

  it('has a translation for every value the pages show', () => {
    const keys = [
      ...SEVERITIES.map((s) => `alerts.sev.${s}`), ...KINDS.map((k) => `rules.kind.${k}`), ...SCOPES.map((s) => `rules.scope.${s}`),
      ...MISSING.map((m) => `rules.missing.${m}`), ...['required', 'number', 'key', 'uuid', 'order', 'secs'].map((e) => `rules.err.${e}`),
      ...['firing', 'resolved', 'flapping', 'flap_ended', 'acknowledged'].map((k) => `alerts.kind.${k}`),
      ...['silence', 'maintenance', 'flapping', 'inhibited'].map((k) => `alerts.supp.${k}`),
      ...['active', 'history', 'silences', 'maintenance', 'rules'].map((k) => `alerts.tab.${k}`),
      ...['raw', '5m', '1h', '1d', '7d', '30d'].map((k) => `graph.res.${k}`),
      ...['1h', '6h', '24h', '7d', '30d', '1y'].map((k) => `graph.preset.${k}`),
    ];
    expect(keys.filter((k) => !(k in ptBR))).toEqual([]);
  });
});

describe('rule preview', () => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  it('previews an unnamed rule over the hours before now, and refuses what the API would', () => {
    const r = previewBody({ ...emptyDraft(), metric: 'cpu.load_percent', threshold: '90' }, 24, now, null);
    expect(r.errors).toEqual({});
    expect(r.body).toMatchObject({ rule_id: null, from: '2026-11-29T12:00:00.000Z', to: '2026-11-30T12:00:00.000Z' });
    expect((r.body!.rule as Record<string, unknown>)).toMatchObject({ name: 'preview', rule_key: 'preview', threshold: 90 });
    const bad = previewBody({ ...emptyDraft(), metric: 'cpu.load_percent', threshold: 'x' }, 24, now, 'r1');
    expect(bad.body).toBeNull();
    expect(bad.errors).toEqual({ threshold: 'number' });
  });

  it('keeps the rule being edited so that it does not compete with itself', () => {
    const r = previewBody({ ...emptyDraft(), rule_key: 'cpu', name: 'CPU', metric: 'cpu.load_percent', threshold: '90' }, 6, now, 'r1');
    expect(r.body).toMatchObject({ rule_id: 'r1', rule: { rule_key: 'cpu', name: 'CPU' } });
  });

  it('draws intervals as bars clipped to the range, open ones to its end', () => {
    const from = '2026-11-30T00:00:00Z', to = '2026-11-30T10:00:00Z';
    const bars = timelineBars([
      { start: '2026-11-29T23:00:00Z', end: '2026-11-30T01:00:00Z' },
      { start: '2026-11-30T05:00:00Z', end: '2026-11-30T05:00:01Z' },
      { start: '2026-11-30T09:00:00Z', end: null },
    ], from, to);
    expect(bars[0]).toEqual({ left: 0, width: 10, open: false });
    expect(bars[1].left).toBe(50);
    expect(bars[1].width).toBeCloseTo(0.6, 5);
    expect(bars[2]).toEqual({ left: 90, width: 10, open: true });
    expect(timelineBars([{ start: from, end: to }], to, from)).toEqual([]);
  });

  it('writes durations with their two largest units', () => {
    expect(shortDuration(45)).toBe('45 s');
    expect(shortDuration(125)).toBe('2 min 5 s');
    expect(shortDuration(7_500)).toBe('2 h 5 min');
    expect(shortDuration(3 * 86_400 + 4 * 3_600 + 59)).toBe('3 d 4 h');
    expect(shortDuration(3_600)).toBe('1 h');
  });
});
