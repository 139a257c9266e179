// The device page's graph model: which series go in which panel, the ranges of the range picker, axis ticks and
// the pixel ↔ time mapping of drag-to-zoom. Pure functions (tested in graph.test.ts).
import { unitOf, type Unit } from './format';

/** A series as `GET /api/v1/series` returns it. */
export interface Series { id: number; device_id: string; metric: string; labels: Record<string, unknown>; kind: string }

/** One point as `GET /api/v1/series/{id}/points` returns it. */
export interface Point { ts: string; min: number; max: number; avg: number; last: number; count: number; p95: number; partial?: boolean }
export interface Points { series_id: number; resolution: string; from: string; to: string; items: Point[] }

/** One bucket of `GET /api/v1/metrics/aggregate`. */
export interface AggregatePoint { ts: string; value: number; series: number; partial?: boolean }
export interface Aggregate { metric: string; resolution: string; series_count: number; from: string; to: string; items: AggregatePoint[] }

export type PanelKind = 'traffic' | 'cpu' | 'memory' | 'latency' | 'loss' | 'optical' | 'other';

/** A line of a panel: one series and the name shown in the legend. */
export interface Line { series: Series; label: string }
/** A choice of a panel (an interface of the traffic panel, a metric of "other"): the lines drawn together. */
export interface Choice { key: string; label: string; lines: Line[] }
export interface Panel { kind: PanelKind; unit: Unit; choices: Choice[] }

const ORDER: PanelKind[] = ['traffic', 'cpu', 'memory', 'latency', 'loss', 'optical', 'other'];
/** Most lines drawn in one panel (a device with 64 CPU cores shows the first eight). */
export const MAX_LINES = 8;

/** The interface (or other instance) a series measures, for legends: ifName, ifDescr, then any label. */
export function instanceLabel(s: Series): string {
  const l = s.labels ?? {};
  for (const k of ['ifName', 'ifDescr', 'name', 'descr', 'index']) {
    const v = l[k];
    if (typeof v === 'string' && v) return v;
    if (typeof v === 'number') return String(v);
  }
  const vals = Object.values(l).filter((v) => typeof v === 'string' || typeof v === 'number');
  return vals.length ? String(vals[0]) : '';
}

function panelOf(metric: string): PanelKind {
  if (metric === 'if.in_bps' || metric === 'if.out_bps') return 'traffic';
  if (metric === 'cpu.load_percent') return 'cpu';
  if (metric.startsWith('mem.')) return 'memory';
  if (/^ping\.rtt_(avg|min|max|p95)_ms$/.test(metric) || metric === 'ping.jitter_ms') return 'latency';
  if (metric === 'ping.loss_ratio') return 'loss';
  if (unitOf(metric) === 'dbm') return 'optical';
  return 'other';
}

/** Groups a device's series into the panels of its page, in a fixed order; panels without series are left out. */
export function panels(series: Series[]): Panel[] {
  const by = new Map<PanelKind, Series[]>();
  for (const s of series) {
    const k = panelOf(s.metric);
    by.set(k, [...(by.get(k) ?? []), s]);
  }
  const out: Panel[] = [];
  for (const kind of ORDER) {
    const list = by.get(kind);
    if (!list?.length) continue;
    if (kind === 'traffic') {
      // One choice per interface: its in and out series.
      const ifs = new Map<string, Line[]>();
      for (const s of list) {
        const name = instanceLabel(s) || '#' + s.id;
        ifs.set(name, [...(ifs.get(name) ?? []), { series: s, label: s.metric === 'if.in_bps' ? 'in' : 'out' }]);
      }
      const choices = [...ifs.entries()]
        .sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }))
        .map(([name, lines]) => ({ key: name, label: name, lines: lines.sort((a, b) => a.label.localeCompare(b.label)) }));
      out.push({ kind, unit: 'bits', choices });
    } else if (kind === 'other') {
      const choices = list.map((s) => {
        const inst = instanceLabel(s);
        return { key: String(s.id), label: inst ? `${s.metric} (${inst})` : s.metric, lines: [{ series: s, label: s.metric }] };
      }).sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
      out.push({ kind, unit: 'plain', choices });
    } else {
      const lines = list.slice(0, MAX_LINES).map((s) => {
        const inst = instanceLabel(s);
        return { series: s, label: inst ? `${s.metric} ${inst}` : s.metric };
      });
      out.push({ kind, unit: unitOf(list[0].metric), choices: [{ key: kind, label: kind, lines }] });
    }
  }
  return out;
}

/** The range picker's presets. */
export const PRESETS = ['1h', '6h', '24h', '7d', '30d', '1y'] as const;
export type Preset = (typeof PRESETS)[number];
const PRESET_MS: Record<Preset, number> = {
  '1h': 3_600_000, '6h': 6 * 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000, '30d': 30 * 86_400_000, '1y': 365 * 86_400_000,
};

export type Range = { preset: Preset } | { from: number; to: number };

/** `[from, to)` in epoch milliseconds: a preset ends now; a custom range is as given. */
export function bounds(r: Range, now: number): { from: number; to: number } {
  if ('preset' in r) return { from: now - PRESET_MS[r.preset], to: now };
  return { from: r.from, to: r.to };
}

/** Parses a range from the URL's `range` parameter (`24h`, or `<from ms>-<to ms>`); unknown text: null. */
export function parseRange(v: string | null): Range | null {
  if (!v) return null;
  if ((PRESETS as readonly string[]).includes(v)) return { preset: v as Preset };
  const m = v.match(/^(\d{10,14})-(\d{10,14})$/);
  if (!m) return null;
  const from = Number(m[1]), to = Number(m[2]);
  return from < to ? { from, to } : null;
}

export function rangeParam(r: Range): string {
  return 'preset' in r ? r.preset : `${Math.round(r.from)}-${Math.round(r.to)}`;
}

/** Shortest range drag-to-zoom may select (one minute): below that a drag is taken as a click. */
export const MIN_ZOOM_MS = 60_000;

/**
 * The time range selected by dragging from pixel `x0` to `x1` on a plot `width` pixels wide showing
 * `[from, to)`; null when the selection is narrower than 4 px or one minute.
 */
export function zoomRange(x0: number, x1: number, width: number, from: number, to: number): { from: number; to: number } | null {
  if (width <= 0) return null;
  const [a, b] = [Math.max(0, Math.min(x0, x1)), Math.min(width, Math.max(x0, x1))];
  if (b - a < 4) return null;
  const t = (x: number) => from + ((to - from) * x) / width;
  const z = { from: Math.round(t(a)), to: Math.round(t(b)) };
  return z.to - z.from >= MIN_ZOOM_MS ? z : null;
}

/** "Nice" axis ticks (1, 2, 2.5, 5 × 10^n) covering `[lo, hi]`, about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const first = Math.floor(lo / step) * step;
  const ticks: number[] = [];
  for (let v = first; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

/** Whether a resolution carries min/max/p95 worth drawing (raw samples have one value each). */
export function hasBands(resolution: string): boolean {
  return resolution !== 'raw';
}

/** Value range of the lines (bands included), for the y axis; [0, 1] when there is no data. */
export function extent(sets: { items: Point[] }[], bands: boolean): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const s of sets) for (const p of s.items) {
    const a = bands ? Math.min(p.min, p.avg) : p.avg;
    const b = bands ? Math.max(p.max, p.avg) : p.avg;
    if (Number.isFinite(a)) lo = Math.min(lo, a);
    if (Number.isFinite(b)) hi = Math.max(hi, b);
  }
  if (lo === Infinity) return [0, 1];
  return [lo, hi];
}

/** The points of an aggregate as graph points (min = max = avg = the sum). */
export function aggregatePoints(a: Aggregate): Points {
  return {
    series_id: 0, resolution: a.resolution, from: a.from, to: a.to,
    items: a.items.map((p) => ({ ts: p.ts, min: p.value, max: p.value, avg: p.value, last: p.value, count: p.series, p95: p.value, partial: p.partial })),
  };
}
