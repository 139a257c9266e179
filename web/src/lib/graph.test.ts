import { describe, expect, it } from 'vitest';
import { aggregatePoints, bounds, extent, hasBands, niceTicks, panels, parseRange, rangeParam, zoomRange, type Series } from './graph';

let next = 1;
const s = (metric: string, labels: Record<string, unknown> = {}): Series => ({ id: next++, device_id: 'd', metric, labels, kind: 'gauge' });

describe('device panels', () => {
  it('groups traffic per interface (in and out together) and keeps a fixed panel order', () => {
    const list = [
      s('cpu.load_percent'), s('if.out_bps', { ifName: 'ether10' }), s('if.in_bps', { ifName: 'ether2' }),
      s('if.out_bps', { ifName: 'ether2' }), s('if.in_bps', { ifName: 'ether10' }), s('onu.rx_dbm'), s('ping.loss_ratio'),
      s('ping.rtt_avg_ms'), s('mem.available_bytes'), s('sys.uptime_seconds'),
    ];
    const p = panels(list);
    expect(p.map((x) => x.kind)).toEqual(['traffic', 'cpu', 'memory', 'latency', 'loss', 'optical', 'other']);
    const traffic = p[0];
    expect(traffic.unit).toBe('bits');
    expect(traffic.choices.map((c) => c.label)).toEqual(['ether2', 'ether10']);
    expect(traffic.choices[0].lines.map((l) => [l.label, l.series.metric])).toEqual([['in', 'if.in_bps'], ['out', 'if.out_bps']]);
    expect(p.find((x) => x.kind === 'optical')?.unit).toBe('dbm');
    expect(p.find((x) => x.kind === 'loss')?.unit).toBe('ratio');
  });

  it('leaves out panels without series and caps the lines of one panel', () => {
    const cores = Array.from({ length: 12 }, (_, i) => s('cpu.load_percent', { index: i }));
    const p = panels(cores);
    expect(p).toHaveLength(1);
    expect(p[0].choices[0].lines).toHaveLength(8);
    expect(panels([])).toEqual([]);
  });
});

describe('ranges', () => {
  it('ends presets now and keeps custom ranges', () => {
    expect(bounds({ preset: '1h' }, 10_000_000)).toEqual({ from: 10_000_000 - 3_600_000, to: 10_000_000 });
    expect(bounds({ preset: '1y' }, 0).from).toBe(-365 * 86_400_000);
    expect(bounds({ from: 5, to: 9 }, 100)).toEqual({ from: 5, to: 9 });
  });

  it('round-trips through the URL and refuses nonsense', () => {
    expect(parseRange('7d')).toEqual({ preset: '7d' });
    expect(parseRange(rangeParam({ from: 1764000000000, to: 1764003600000 }))).toEqual({ from: 1764000000000, to: 1764003600000 });
    expect(parseRange('2d')).toBeNull();
    expect(parseRange('1764003600000-1764000000000')).toBeNull();
    expect(parseRange(null)).toBeNull();
  });

  it('maps a drag to a time range and ignores clicks', () => {
    const from = 0, to = 3_600_000;
    expect(zoomRange(100, 300, 400, from, to)).toEqual({ from: 900_000, to: 2_700_000 });
    expect(zoomRange(300, 100, 400, from, to)).toEqual({ from: 900_000, to: 2_700_000 });
    expect(zoomRange(100, 102, 400, from, to)).toBeNull();
    expect(zoomRange(-50, 20, 400, from, to)).toEqual({ from: 0, to: 180_000 });
    // Narrower than a minute: not a zoom.
    expect(zoomRange(0, 10, 400, 0, 600_000)).toBeNull();
  });
});

describe('axes', () => {
  it('chooses nice ticks covering the data', () => {
    expect(niceTicks(0, 100, 5)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(0, 9.3e8, 4)).toEqual([0, 2.5e8, 5e8, 7.5e8, 1e9]);
    const t = niceTicks(-28.4, -17.1, 4);
    expect(t[0]).toBeLessThanOrEqual(-28.4);
    expect(t[t.length - 1]).toBeGreaterThanOrEqual(-17.1);
    expect(niceTicks(5, 5).length).toBeGreaterThan(1);
  });

  it('takes the bands into the extent only when drawn', () => {
    const items = [{ ts: 'x', min: 1, max: 9, avg: 5, last: 5, count: 3, p95: 8 }];
    expect(extent([{ items }], true)).toEqual([1, 9]);
    expect(extent([{ items }], false)).toEqual([5, 5]);
    expect(extent([], true)).toEqual([0, 1]);
    expect(hasBands('raw')).toBe(false);
    expect(hasBands('1h')).toBe(true);
  });

  it('turns an aggregate into graph points', () => {
    const p = aggregatePoints({ metric: 'if.in_bps', resolution: '5m', series_count: 2, from: 'a', to: 'b', items: [{ ts: 't', value: 7, series: 2 }] });
    expect(p.resolution).toBe('5m');
    expect(p.items[0]).toMatchObject({ avg: 7, min: 7, max: 7 });
  });
});
