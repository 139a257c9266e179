import { describe, expect, it } from 'vitest';
import { appendPage, errorsPerSecond, graphLink, ifLabel, ifStatus, parseSort, SORTS, utilisationLevel, type PopInterface } from './interfaces';
import { ptBR } from '../i18n/pt-BR';

const row = (over: Partial<PopInterface> = {}): PopInterface => ({
  device_id: 'd1', device_name: null, device_key: 'olt-1', mgmt_ip: null, if_index: '17', if_name: 'xe-1/1', if_descr: null,
  if_alias: null, in_bps: 1, out_bps: 2, speed_bps: 10, utilisation: 0.2, in_errors_per_s: null, out_errors_per_s: null,
  in_discards_per_s: null, out_discards_per_s: null, oper_status: 1, admin_status: 1, updated_at: null, ...over,
});

describe('interface monitoring', () => {
  it('reads the sort from the URL, busiest by default', () => {
    expect(parseSort('errors')).toBe('errors');
    expect(parseSort('loudest')).toBe('busiest');
    expect(parseSort(null)).toBe('busiest');
  });

  it('shows ifOperStatus, and an interface shut by the operator as disabled', () => {
    expect(ifStatus({ oper_status: 1, admin_status: 1 })).toBe('up');
    expect(ifStatus({ oper_status: 2, admin_status: 1 })).toBe('down');
    expect(ifStatus({ oper_status: 7, admin_status: null })).toBe('down');
    expect(ifStatus({ oper_status: 2, admin_status: 2 })).toBe('disabled');
    expect(ifStatus({ oper_status: 5, admin_status: 1 })).toBe('dormant');
    expect(ifStatus({ oper_status: 6, admin_status: 1 })).toBe('other');
    expect(ifStatus({ oper_status: null, admin_status: null })).toBe('unknown');
  });

  it('colours utilisation by band', () => {
    expect(utilisationLevel(0.5)).toBe('ok');
    expect(utilisationLevel(0.7)).toBe('warn');
    expect(utilisationLevel(0.95)).toBe('bad');
    expect(utilisationLevel(null)).toBe('none');
  });

  it('names an interface and links to its graph', () => {
    expect(ifLabel(row())).toBe('xe-1/1');
    expect(ifLabel(row({ if_name: null, if_descr: 'GigabitEthernet0/1' }))).toBe('GigabitEthernet0/1');
    expect(ifLabel(row({ if_name: null }))).toBe('#17');
    expect(graphLink(row())).toBe('/devices/d1?if=xe-1%2F1');
    expect(errorsPerSecond(row())).toBeNull();
    expect(errorsPerSecond(row({ in_errors_per_s: 2.5, out_errors_per_s: null }))).toBe(2.5);
  });

  it('appends a page without repeating rows', () => {
    const a = row(), b = row({ if_index: '18' }), c = row({ device_id: 'd2' });
    expect(appendPage([a, b], [b, c]).map((r) => r.device_id + r.if_index)).toEqual(['d117', 'd118', 'd217']);
  });

  it('has a text for every sort and status', () => {
    for (const s of SORTS) expect(`ifmon.sort.${s}` in ptBR, s).toBe(true);
    for (const s of ['up', 'down', 'disabled', 'dormant', 'other', 'unknown']) expect(`ifmon.status.${s}` in ptBR, s).toBe(true);
  });
});
