import { describe, expect, it } from 'vitest';
import {
  checkValue, childLabel, crumbs, gaugeBands, gaugePosition, getParamsCommand, inferXsd, parentOf, relativeName, rootOf,
  setParamsCommand, taskTarget, taskValues, type OpticalRange,
} from './tr069';
import { deliveryState, monitorRows, parseDocument, redactedPaths, withMonitors, emptyMonitor, type AgentDelivery } from './agentConfig';

const RX: OpticalRange = { green_min: -25, green_max: -8, yellow_min: -27, yellow_max: -7 };

describe('the parameter tree', () => {
  it('splits a prefix into its levels and goes up one', () => {
    expect(crumbs('InternetGatewayDevice.LANDevice.1.')).toEqual([
      { label: 'InternetGatewayDevice', path: 'InternetGatewayDevice.' },
      { label: 'LANDevice', path: 'InternetGatewayDevice.LANDevice.' },
      { label: '1', path: 'InternetGatewayDevice.LANDevice.1.' },
    ]);
    expect(crumbs('')).toEqual([]);
    expect(parentOf('Device.WiFi.SSID.')).toBe('Device.WiFi.');
    expect(parentOf('Device.')).toBe('');
    expect(parentOf('')).toBe('');
  });

  it('names children and leaves relative to the level browsed', () => {
    expect(childLabel('Device.WiFi.', 'Device.')).toBe('WiFi');
    expect(relativeName('Device.WiFi.SSID.1.SSID', 'Device.WiFi.SSID.1.')).toBe('SSID');
    expect(relativeName('Device.X', 'Other.')).toBe('Device.X');
    expect(rootOf(['Device.DeviceInfo.UpTime'])).toBe('Device.');
    expect(rootOf([])).toBe('InternetGatewayDevice.');
  });
});

describe('editing a value', () => {
  it('guesses the type from the current value', () => {
    expect(inferXsd('true')).toBe('xsd:boolean');
    expect(inferXsd('36')).toBe('xsd:unsignedInt');
    expect(inferXsd('-12')).toBe('xsd:int');
    expect(inferXsd('2026-01-02T03:04:05Z')).toBe('xsd:dateTime');
    expect(inferXsd('Casa 5G')).toBe('xsd:string');
    expect(inferXsd('12345678901234')).toBe('xsd:string');
  });

  it('refuses a value that does not fit its type', () => {
    expect(checkValue('1', 'xsd:boolean')).toBeNull();
    expect(checkValue('yes', 'xsd:boolean')).toBe('boolean');
    expect(checkValue('4294967295', 'xsd:unsignedInt')).toBeNull();
    expect(checkValue('4294967296', 'xsd:unsignedInt')).toBe('unsigned');
    expect(checkValue('-1', 'xsd:unsignedInt')).toBe('unsigned');
    expect(checkValue('-1', 'xsd:int')).toBeNull();
    expect(checkValue('1.5', 'xsd:int')).toBe('int');
    expect(checkValue('2026-01-02T03:04:05Z', 'xsd:dateTime')).toBeNull();
    expect(checkValue('amanhã', 'xsd:dateTime')).toBe('datetime');
    expect(checkValue(' spaces kept ', 'xsd:string')).toBeNull();
    expect(checkValue('x'.repeat(5000), 'xsd:string')).toBe('long');
  });

  it('builds the commands', () => {
    expect(setParamsCommand('d1', 'Device.WiFi.SSID.1.SSID', ' Casa ', 'xsd:string')).toEqual({
      name: 'tr069.set_params', device_id: 'd1', args: { values: [{ name: 'Device.WiFi.SSID.1.SSID', value: ' Casa ', xsd_type: 'xsd:string' }] },
    });
    expect(setParamsCommand('d1', 'Device.WiFi.Radio.1.Channel', ' 6 ', 'xsd:unsignedInt').args.values[0].value).toBe('6');
    expect(getParamsCommand('d1', 'Device.')).toEqual({ name: 'tr069.get_params', device_id: 'd1', args: { names: ['Device.'] } });
  });

  it('describes tasks and their results', () => {
    expect(taskTarget({ name: 'tr069.set_params', args: { values: [{ name: 'A.B', value: 'x' }] } })).toBe('A.B = x');
    expect(taskTarget({ name: 'tr069.get_params', args: { names: ['Device.', 'X.Y'] } })).toBe('Device., X.Y');
    expect(taskTarget({ name: 'tr069.reboot', args: {} })).toBe('');
    expect(taskValues({ values: [{ name: 'A.B', value: 'x', type: 'xsd:string' }, { bad: 1 }] })).toEqual([{ name: 'A.B', value: 'x' }]);
    expect(taskValues(null)).toEqual([]);
  });
});

describe('the optical gauge', () => {
  it('places values and colours the stretches in order', () => {
    expect(gaugePosition(-100, RX)).toBe(0);
    expect(gaugePosition(10, RX)).toBe(100);
    expect(gaugePosition(-17, RX)).toBeCloseTo(50, 5);
    const bands = gaugeBands(RX);
    expect(bands.map((b) => b.level)).toEqual(['red', 'yellow', 'green', 'yellow', 'red']);
    for (let i = 1; i < bands.length; i++) expect(bands[i].from).toBeCloseTo(bands[i - 1].to, 9);
    const green = bands[2];
    expect(gaugePosition(-20, RX)).toBeGreaterThan(green.from);
    expect(gaugePosition(-20, RX)).toBeLessThan(green.to);
  });
});

describe('the agent configuration form', () => {
  const doc = { monitors: { ping: [{ name: 'gw', targets: ['192.0.2.1'], interval_ms: 10000, count: 5, dscp: 46 }], mtr: [{ name: 'm' }] }, snmp: { community: '********' } };

  it('round-trips ping monitors and keeps what the form does not edit', () => {
    const rows = monitorRows(doc);
    expect(rows).toEqual([{ name: 'gw', targets: '192.0.2.1', interval_s: '10', count: '5', extra: { dscp: 46 } }]);
    rows.push({ ...emptyMonitor(), name: 'dns', targets: '198.51.100.53, 2001:db8::53', interval_s: '2,5' });
    const out = withMonitors(doc, rows);
    expect(out.errors).toEqual({});
    expect(out.config).toEqual({
      monitors: {
        ping: [
          { name: 'gw', targets: ['192.0.2.1'], interval_ms: 10000, count: 5, dscp: 46 },
          { name: 'dns', targets: ['198.51.100.53', '2001:db8::53'], interval_ms: 2500, count: 5 },
        ],
        mtr: [{ name: 'm' }],
      },
      snmp: { community: '********' },
    });
  });

  it('names the wrong fields of each row', () => {
    const out = withMonitors({}, [
      { name: '', targets: 'gw.example', interval_s: '0', count: '0', extra: {} },
      { name: 'a', targets: '192.0.2.1', interval_s: '10', count: '5', extra: {} },
      { name: 'a', targets: '', interval_s: 'x', count: '101', extra: {} },
    ]);
    expect(out.config).toBeNull();
    expect(out.errors).toEqual({
      0: { name: 'required', targets: 'ip', interval_s: 'interval', count: 'count' },
      2: { name: 'duplicate', targets: 'required', interval_s: 'interval', count: 'count' },
    });
  });

  it('finds the line of a JSON error and the secrets still redacted', () => {
    const bad = parseDocument('{\n  "monitors": {\n    "ping": [,]\n  }\n}');
    expect(bad.config).toBeNull();
    expect(bad.line).toBe(3);
    expect(parseDocument('{"a": 1,\n"b": tru}').line).toBe(2);
    expect(parseDocument('{"a": "x}').line).toBe(1);
    expect(parseDocument('[]').error).toBe('object');
    expect(parseDocument('{"a": 1}').config).toEqual({ a: 1 });
    expect(redactedPaths(doc)).toEqual(['snmp.community']);
    expect(redactedPaths({ snmp: { v3: [{ auth_password: '********' }] } })).toEqual(['snmp.v3.0.auth_password']);
  });

  it('tells where each agent stands', () => {
    const a = (applied: number | null, last: number | null, status: string | null): AgentDelivery => ({
      agent_id: 'a', hostname: 'h', last_seen: null, applied_version: applied, last_version: last, last_status: status, last_error: null, last_command_id: null,
    });
    expect(deliveryState(a(2, 2, 'succeeded'), 2)).toBe('current');
    expect(deliveryState(a(1, 2, 'queued'), 2)).toBe('pending');
    expect(deliveryState(a(1, 2, 'rejected'), 2)).toBe('failed');
    expect(deliveryState(a(1, 1, 'succeeded'), 2)).toBe('old');
    expect(deliveryState(a(null, null, null), 0)).toBe('none');
  });
});

describe('translations of the values the pages compose keys from', () => {
  it('exist for every level, WAN type, task, status and error', async () => {
    const { ptBR } = await import('../i18n/pt-BR');
    const keys = [
      ...['green', 'yellow', 'red'].map((x) => 'tr069.level.' + x),
      ...['pppoe', 'dhcp', 'static', 'bridge'].map((x) => 'tr069.wanType.' + x),
      ...['get_params', 'set_params', 'reboot', 'factory_reset', 'download'].map((x) => 'tr069.task.' + x),
      ...['boolean', 'unsigned', 'int', 'datetime', 'long'].map((x) => 'tr069.err.' + x),
      ...['required', 'ip', 'interval', 'count', 'duplicate'].map((x) => 'agentcfg.err.' + x),
      ...['current', 'pending', 'failed', 'old', 'none'].map((x) => 'agentcfg.state.' + x),
    ];
    expect(keys.filter((k) => !(k in ptBR))).toEqual([]);
  });
});
