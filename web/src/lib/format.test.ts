import { describe, expect, it } from 'vitest';
import { formatBits, formatBytes, formatDbm, formatDuration, formatTick, formatValue, unitOf } from './format';

// Intl puts a narrow no-break space in some pt-BR outputs; compare with plain spaces.
const plain = (s: string) => s.replace(/[\u00a0\u202f]/g, ' ');

describe('metric formatting', () => {
  it('picks the unit from the metric name', () => {
    expect(unitOf('if.in_bps')).toBe('bits');
    expect(unitOf('mem.available_bytes')).toBe('bytes');
    expect(unitOf('onu.rx_dbm')).toBe('dbm');
    expect(unitOf('cpu.load_percent')).toBe('percent');
    expect(unitOf('ping.loss_ratio')).toBe('ratio');
    expect(unitOf('ping.rtt_avg_ms')).toBe('ms');
    expect(unitOf('sys.uptime_seconds')).toBe('plain');
  });

  it('formats bit rates with SI prefixes in both languages', () => {
    expect(formatBits(0, 'pt-BR')).toBe('0 bit/s');
    expect(formatBits(950, 'en')).toBe('950 bit/s');
    expect(formatBits(1_500_000, 'pt-BR')).toBe('1,5 Mbit/s');
    expect(formatBits(1_500_000, 'en')).toBe('1.5 Mbit/s');
    expect(formatBits(12_345_678_901, 'en')).toBe('12.3 Gbit/s');
    expect(formatBits(Number.NaN, 'en')).toBe('—');
  });

  it('formats bytes, dBm, percentages and ratios', () => {
    expect(formatBytes(2_500_000_000, 'pt-BR')).toBe('2,5 GB');
    expect(formatDbm(-21.37, 'pt-BR')).toBe('-21,4 dBm');
    expect(formatDbm(2, 'en')).toBe('2.0 dBm');
    expect(plain(formatValue('percent', 87.25, 'pt-BR'))).toBe('87,3 %');
    expect(plain(formatValue('ratio', 0.125, 'pt-BR'))).toMatch(/^12,5 ?%$/);
    expect(formatValue('ms', 3.456, 'en')).toBe('3.46 ms');
    expect(formatValue('ms', 123.45, 'pt-BR')).toBe('123,5 ms');
  });

  it('labels axis ticks by the span: times, then days, then months', () => {
    const ms = Date.UTC(2026, 10, 29, 15, 30);
    expect(formatTick(ms, 3_600_000, 'pt-BR')).toMatch(/^\d\d:\d\d$/);
    expect(formatTick(ms, 30 * 86_400_000, 'pt-BR')).toMatch(/^\d\d\/\d\d$/);
    expect(plain(formatTick(ms, 365 * 86_400_000, 'pt-BR'))).toMatch(/nov/);
    expect(formatTick(ms, 365 * 86_400_000, 'en')).toMatch(/Nov/);
  });

  it('formats durations', () => {
    expect(formatDuration(42)).toBe('42 s');
    expect(formatDuration(600)).toBe('10 min');
    expect(formatDuration(7500)).toBe('2 h 5 min');
    expect(formatDuration(3 * 86_400 + 4 * 3600)).toBe('3 d 4 h');
  });
});
