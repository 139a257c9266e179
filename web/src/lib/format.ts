// Unit-aware formatting of metric values (bit/s, bytes, dBm, percent, milliseconds) in the chosen locale.

const SI = ['', 'k', 'M', 'G', 'T', 'P'];

/** The unit a metric is drawn in, from its name's suffix. */
export type Unit = 'bits' | 'bytes' | 'dbm' | 'percent' | 'ratio' | 'ms' | 'celsius' | 'plain';

export function unitOf(metric: string): Unit {
  if (/_bps$/.test(metric)) return 'bits';
  if (/_bytes$/.test(metric)) return 'bytes';
  if (/_dbm$/.test(metric)) return 'dbm';
  if (/_percent$/.test(metric)) return 'percent';
  if (/_ratio(_5m)?$/.test(metric)) return 'ratio';
  if (/_ms$/.test(metric)) return 'ms';
  if (/_celsius$/.test(metric)) return 'celsius';
  return 'plain';
}

function scaled(v: number, base: number, locale: string, digits = 3): { text: string; prefix: string } {
  let i = 0;
  let x = Math.abs(v);
  while (x >= base && i < SI.length - 1) { x /= base; i++; }
  const n = new Intl.NumberFormat(locale, { maximumSignificantDigits: digits }).format(Math.sign(v) * x);
  return { text: n, prefix: SI[i] };
}

/** `1,5 Mbit/s` (SI prefixes, base 1000). */
export function formatBits(v: number, locale: string): string {
  if (!Number.isFinite(v)) return '—';
  const s = scaled(v, 1000, locale);
  return `${s.text} ${s.prefix}bit/s`;
}

/** `3,2 GB` (SI prefixes, base 1000). */
export function formatBytes(v: number, locale: string): string {
  if (!Number.isFinite(v)) return '—';
  const s = scaled(v, 1000, locale);
  return `${s.text} ${s.prefix}B`;
}

/** `-21,4 dBm` (one decimal). */
export function formatDbm(v: number, locale: string): string {
  if (!Number.isFinite(v)) return '—';
  return new Intl.NumberFormat(locale, { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(v) + ' dBm';
}

/** A value in the unit of its metric. */
export function formatValue(unit: Unit, v: number, locale: string): string {
  if (!Number.isFinite(v)) return '—';
  switch (unit) {
    case 'bits': return formatBits(v, locale);
    case 'bytes': return formatBytes(v, locale);
    case 'dbm': return formatDbm(v, locale);
    case 'percent': return new Intl.NumberFormat(locale, { maximumFractionDigits: 1 }).format(v) + ' %';
    case 'ratio': return new Intl.NumberFormat(locale, { style: 'percent', maximumFractionDigits: 1 }).format(v);
    case 'ms': return new Intl.NumberFormat(locale, { maximumFractionDigits: v < 10 ? 2 : 1 }).format(v) + ' ms';
    case 'celsius': return new Intl.NumberFormat(locale, { maximumFractionDigits: 1 }).format(v) + ' °C';
    default: return new Intl.NumberFormat(locale, { maximumSignificantDigits: 4 }).format(v);
  }
}

/** A date and time for tables and tooltips (`29/11/2026 23:05`). */
export function formatDateTime(d: Date | string | number, locale: string): string {
  return new Intl.DateTimeFormat(locale, { dateStyle: 'short', timeStyle: 'short' }).format(new Date(d));
}

/** An axis label: the time for spans up to two days, the day and month beyond, month and year past 90 days. */
export function formatTick(ms: number, spanMs: number, locale: string): string {
  const d = new Date(ms);
  if (spanMs <= 2 * 86_400_000) return new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit' }).format(d);
  if (spanMs <= 90 * 86_400_000) return new Intl.DateTimeFormat(locale, { day: '2-digit', month: '2-digit', hour: spanMs <= 8 * 86_400_000 ? '2-digit' : undefined }).format(d);
  return new Intl.DateTimeFormat(locale, { month: 'short', year: '2-digit' }).format(d);
}

/** A duration in seconds as `2 h 5 min`, `45 s`, `3 d 4 h`. */
export function formatDuration(secs: number): string {
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) { const m = Math.floor((s % 3600) / 60); return `${Math.floor(s / 3600)} h${m ? ` ${m} min` : ''}`; }
  const h = Math.floor((s % 86_400) / 3600);
  return `${Math.floor(s / 86_400)} d${h ? ` ${h} h` : ''}`;
}
