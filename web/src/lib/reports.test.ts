import { describe, expect, it } from 'vitest';
import { reportQuery } from './reports';

const base = { format: 'pdf', lang: 'pt-BR', pop: '', customer: '', by: 'pop', from: '2026-11-01', to: '2026-11-30' };

describe('report request', () => {
  it('covers whole local days, the last one included', () => {
    const q = new URLSearchParams(reportQuery({ ...base, kind: 'traffic' }).slice(1));
    expect(new Date(q.get('from')!).getTime()).toBe(new Date('2026-11-01T00:00:00').getTime());
    expect(new Date(q.get('to')!).getTime()).toBe(new Date('2026-12-01T00:00:00').getTime());
    expect(q.get('by')).toBe('pop');
    expect(q.get('format')).toBe('pdf');
    expect(q.get('lang')).toBe('pt-BR');
  });

  it('sends no range for the inventory (a snapshot) and `by` only for traffic', () => {
    const q = new URLSearchParams(reportQuery({ ...base, kind: 'inventory', pop: 'p1' }).slice(1));
    expect(q.has('from') || q.has('to') || q.has('by')).toBe(false);
    expect(q.get('pop_id')).toBe('p1');
    expect(new URLSearchParams(reportQuery({ ...base, kind: 'alerts' }).slice(1)).has('by')).toBe(false);
  });
});
