import { describe, expect, it } from 'vitest';
import { buildArgs, emptyForm, initialRun, isIp, isTerminal, parseHops, parsePorts, runReducer, TOOLS, type RunState } from './diag';
import { ptBR } from '../i18n/pt-BR';

describe('diagnostic forms', () => {
  it('accepts addresses and refuses names where the agent wants an IP', () => {
    for (const ok of ['10.0.0.1', '2001:db8::1', '::1', 'fe80::1:2']) expect(isIp(ok), ok).toBe(true);
    for (const bad of ['10.0.0.256', 'example.com', '1:2', '2001:db8::1::2', '']) expect(isIp(bad), bad).toBe(false);
  });

  it('reads port lists and ranges', () => {
    expect(parsePorts('22, 80 8000-8002')).toEqual([22, 80, 8000, 8001, 8002]);
    expect(parsePorts('')).toEqual([]);
    expect(parsePorts('0')).toBeNull();
    expect(parsePorts('90-80')).toBeNull();
    expect(parsePorts('http')).toBeNull();
  });

  it('builds the arguments of each tool', () => {
    const f = { ...emptyForm(), targets: '8.8.8.8, 1.1.1.1', target: '200.160.2.3', cycles: '5', cidrs: '10.0.0.0/24', host: '10.0.0.1', ports: '22,443', name: 'registro.br', url: 'https://registro.br' };
    expect(buildArgs('ping', f).args).toEqual({ targets: ['8.8.8.8', '1.1.1.1'], count: 4 });
    expect(buildArgs('mtr', f).args).toEqual({ target: '200.160.2.3', protocol: 'icmp', cycles: 5 });
    expect(buildArgs('traceroute', f).args).toEqual({ target: '200.160.2.3', protocol: 'icmp' });
    expect(buildArgs('sweep', f).args).toEqual({ cidrs: ['10.0.0.0/24'] });
    expect(buildArgs('portscan', f).args).toEqual({ host: '10.0.0.1', ports: [22, 443] });
    expect(buildArgs('dns', f).args).toEqual({ name: 'registro.br', rtype: 'A', servers: [] });
    expect(buildArgs('http', f).args).toEqual({ url: 'https://registro.br' });
  });

  it('names the wrong fields', () => {
    const f = { ...emptyForm(), targets: 'google.com', count: '0', target: '', cycles: 'x', cidrs: '10.0.0.0/33', host: '10.0.0.1', ports: 'abc', url: 'ftp://x' };
    expect(buildArgs('ping', f).errors).toEqual({ targets: 'ip', count: 'int' });
    expect(buildArgs('mtr', f).errors).toEqual({ target: 'required', cycles: 'int' });
    expect(buildArgs('sweep', f).errors).toEqual({ cidrs: 'cidr' });
    expect(buildArgs('portscan', f).errors).toEqual({ ports: 'ports' });
    expect(buildArgs('http', f).errors).toEqual({ url: 'url' });
    expect(buildArgs('dns', f).errors).toEqual({ name: 'required' });
  });
});

const hop = (ttl: number, ip: string | null, last: number | null, loss: number) =>
  ({ ttl, ip, addrs: ip ? [[ip, 3]] : [], sent: 3, received: loss === 100 ? 0 : 3, loss_pct: loss, last_ms: last, min_ms: last, avg_ms: last, max_ms: last, p95_ms: last, stdev_ms: 0, jitter_ms: 0 });

describe('run reducer', () => {
  const created = runReducer(initialRun(), { type: 'created', id: 'c1', status: 'queued' });

  it('folds MTR cycles into the table and its history, once per seq', () => {
    let s: RunState = runReducer(created, { type: 'frame', seq: 0, payload: { state: 'started' } });
    expect(s.agentState).toBe('started');
    s = runReducer(s, { type: 'frame', seq: 1, payload: { cycle: 1, reached: false, hops: [hop(2, '10.0.0.2', 3.5, 0), hop(1, '10.0.0.1', 1.2, 0)] } });
    s = runReducer(s, { type: 'frame', seq: 2, payload: { cycle: 2, reached: true, hops: [hop(1, '10.0.0.1', 1.4, 0), hop(2, null, null, 100), hop(3, '200.160.2.3', 9.9, 0)] } });
    const again = runReducer(s, { type: 'frame', seq: 2, payload: { cycle: 2, hops: [] } });
    expect(again).toBe(s);
    expect(s.lastSeq).toBe(2);
    expect(s.cycle).toBe(2);
    expect(s.reached).toBe(true);
    expect(s.hops.map((h) => [h.ttl, h.ip, h.loss_pct])).toEqual([[1, '10.0.0.1', 0], [2, null, 100], [3, '200.160.2.3', 0]]);
    expect(s.history.map((h) => h.cycle)).toEqual([1, 2]);
    expect(s.history[0].hops.map((h) => h.ttl)).toEqual([1, 2]);
  });

  it('reads hop statistics nested under `stats` too', () => {
    expect(parseHops([{ ttl: 1, ip: '10.0.0.1', stats: { loss_pct: 25, last_ms: 2, sent: 4, received: 3 } }])[0]).toMatchObject({ loss_pct: 25, last_ms: 2, received: 3 });
    expect(parseHops('nonsense')).toEqual([]);
  });

  it('collects ping replies per target with the running summary', () => {
    let s = runReducer(created, { type: 'frame', seq: 1, payload: { target: '8.8.8.8', seq: 0, rtt_ms: 12.5, ttl: 117, summary: { sent: 1, received: 1, loss_pct: 0, avg_ms: 12.5 } } });
    s = runReducer(s, { type: 'frame', seq: 2, payload: { target: '8.8.8.8', seq: 1, rtt_ms: null, summary: { sent: 2, received: 1, loss_pct: 50, avg_ms: 12.5 } } });
    s = runReducer(s, { type: 'frame', seq: 3, payload: { target: '1.1.1.1', seq: 0, rtt_ms: 3, summary: { sent: 1, received: 1, loss_pct: 0 } } });
    expect(s.ping.map((t) => [t.target, t.replies.length, t.summary?.loss_pct])).toEqual([['8.8.8.8', 2, 50], ['1.1.1.1', 1, 0]]);
    expect(s.ping[0].replies[1].rtt_ms).toBeNull();
  });

  it('accumulates scan progress and takes the final output', () => {
    let s = runReducer(created, { type: 'frame', seq: 1, payload: { done: 256, total: 512, percent: 50, found: [{ ip: '10.0.0.5' }] } });
    s = runReducer(s, { type: 'frame', seq: 2, payload: { done: 512, total: 512, percent: 100, found: [{ ip: '10.0.1.9' }] } });
    expect(s.scan).toEqual({ done: 512, total: 512, found: [{ ip: '10.0.0.5' }, { ip: '10.0.1.9' }] });
    const d = runReducer(s, { type: 'detail', status: 'succeeded', error: null, output: { host: '10.0.0.1', protocol: 'tcp', ports: [{ port: 22, state: 'open' }, { port: 23, state: 'closed' }] } });
    expect(d.scan?.found).toEqual([{ port: 22, state: 'open' }]);
    expect(isTerminal(d.status)).toBe(true);
    expect(isTerminal('running')).toBe(false);
  });

  it('keeps an error and the status of a refused command', () => {
    const s = runReducer(created, { type: 'detail', status: 'rejected', error: 'scan not allowed in 10.0.0.0/8', output: null });
    expect([s.status, s.error]).toEqual(['rejected', 'scan not allowed in 10.0.0.0/8']);
  });

  it('has a translation for every tool, status and error', () => {
    const keys = [...TOOLS.map((x) => `diag.tool.${x}`),
      ...['idle', 'queued', 'waiting_agent', 'dispatched', 'running', 'succeeded', 'failed', 'expired', 'rejected', 'cancelled', 'dead'].map((x) => `diag.status.${x}`),
      ...['required', 'ip', 'int', 'cidr', 'ports', 'url', 'many'].map((x) => `diag.err.${x}`)];
    expect(keys.filter((k) => !(k in ptBR))).toEqual([]);
  });
});
