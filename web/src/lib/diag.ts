// Diagnostics: the tools a technician runs from a POP (their fields, checked and turned into the command's
// arguments), the command states, and the reducer that folds progress frames and the final result of one run
// into what the page draws (the MTR table and its per-cycle history, ping replies, scan progress).
// Shapes: docs/COMMANDS-AGENT.md (progress and output of each command) and the commands API.

export const TOOLS = ['ping', 'mtr', 'traceroute', 'sweep', 'portscan', 'dns', 'http'] as const;
export type Tool = (typeof TOOLS)[number];

export const TERMINAL = ['succeeded', 'failed', 'expired', 'rejected', 'cancelled', 'dead'] as const;
export function isTerminal(status: string): boolean {
  return (TERMINAL as readonly string[]).includes(status);
}

/** The form of every tool, as typed (one object so that switching tools keeps what was typed). */
export interface DiagForm {
  target: string; targets: string; count: string; cycles: string; protocol: string; cidrs: string; host: string;
  ports: string; name: string; rtype: string; servers: string; url: string;
}

export function emptyForm(): DiagForm {
  return { target: '', targets: '', count: '4', cycles: '10', protocol: 'icmp', cidrs: '', host: '', ports: '', name: '', rtype: 'A', servers: '', url: '' };
}

/** The fields each tool shows. */
export const FIELDS: Record<Tool, (keyof DiagForm)[]> = {
  ping: ['targets', 'count'],
  mtr: ['target', 'cycles', 'protocol'],
  traceroute: ['target', 'protocol'],
  sweep: ['cidrs'],
  portscan: ['host', 'ports'],
  dns: ['name', 'rtype', 'servers'],
  http: ['url'],
};

export type DiagError = 'required' | 'ip' | 'int' | 'cidr' | 'ports' | 'url' | 'many';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
/** An IPv4 or IPv6 address (IPv6 loosely: hex groups and colons, at most one `::`). */
export function isIp(s: string): boolean {
  if (IPV4.test(s)) return true;
  if (!/^[0-9a-fA-F:.]+$/.test(s) || !s.includes(':') || (s.match(/::/g) ?? []).length > 1) return false;
  const groups = s.split(':');
  return groups.length >= 3 && groups.length <= 8 && groups.every((g) => g === '' || /^[0-9a-fA-F]{1,4}$/.test(g) || IPV4.test(g));
}

function isCidr(s: string): boolean {
  const [ip, len, ...rest] = s.split('/');
  if (rest.length || !isIp(ip)) return false;
  if (len === undefined) return true;
  const n = Number(len);
  return /^\d+$/.test(len) && n >= 0 && n <= (ip.includes(':') ? 128 : 32);
}

const list = (s: string) => s.split(/[\s,;]+/).map((x) => x.trim()).filter(Boolean);

/** Ports as typed: `22, 80, 8000-8010`; null when a part is not a port or range. */
export function parsePorts(s: string): number[] | null {
  const out: number[] = [];
  for (const part of list(s)) {
    const m = part.match(/^(\d{1,5})(?:-(\d{1,5}))?$/);
    if (!m) return null;
    const a = Number(m[1]), b = Number(m[2] ?? m[1]);
    if (a < 1 || b > 65535 || a > b || b - a > 65535) return null;
    for (let p = a; p <= b; p++) out.push(p);
  }
  return [...new Set(out)];
}

function int(s: string, lo: number, hi: number): number | null {
  const n = Number(s.trim());
  return /^\d+$/.test(s.trim()) && n >= lo && n <= hi ? n : null;
}

/** The command's `args` for a tool, or the errors per field. */
export function buildArgs(tool: Tool, f: DiagForm): { args: Record<string, unknown> | null; errors: Partial<Record<keyof DiagForm, DiagError>> } {
  const e: Partial<Record<keyof DiagForm, DiagError>> = {};
  let args: Record<string, unknown> = {};
  switch (tool) {
    case 'ping': {
      const targets = list(f.targets);
      if (!targets.length) e.targets = 'required';
      else if (targets.length > 256) e.targets = 'many';
      else if (!targets.every(isIp)) e.targets = 'ip';
      const count = int(f.count, 1, 100);
      if (count === null) e.count = 'int';
      args = { targets, count };
      break;
    }
    case 'mtr':
    case 'traceroute': {
      const target = f.target.trim();
      if (!target) e.target = 'required'; else if (!isIp(target)) e.target = 'ip';
      args = { target, protocol: f.protocol };
      if (tool === 'mtr') {
        const cycles = int(f.cycles, 1, 1000);
        if (cycles === null) e.cycles = 'int';
        args.cycles = cycles;
      }
      break;
    }
    case 'sweep': {
      const cidrs = list(f.cidrs);
      if (!cidrs.length) e.cidrs = 'required'; else if (!cidrs.every(isCidr)) e.cidrs = 'cidr';
      args = { cidrs };
      break;
    }
    case 'portscan': {
      const host = f.host.trim();
      if (!host) e.host = 'required'; else if (!isIp(host)) e.host = 'ip';
      const ports = parsePorts(f.ports);
      if (ports === null) e.ports = 'ports';
      args = { host, ports: ports ?? [] };
      break;
    }
    case 'dns': {
      const name = f.name.trim();
      if (!name) e.name = 'required';
      const servers = list(f.servers);
      args = { name, rtype: f.rtype, servers };
      break;
    }
    case 'http': {
      const url = f.url.trim();
      if (!/^https?:\/\/[^\s/]+/.test(url)) e.url = url ? 'url' : 'required';
      args = { url };
      break;
    }
  }
  return Object.keys(e).length ? { args: null, errors: e } : { args, errors: {} };
}

// --- results -------------------------------------------------------------------------------------------------

/** RTT summary of a target or hop (milliseconds; null: no reply yet). */
export interface Rtt { sent: number; received: number; loss_pct: number; last_ms: number | null; min_ms: number | null; avg_ms: number | null; max_ms: number | null; p95_ms: number | null; jitter_ms: number | null }
export interface Hop extends Rtt { ttl: number; ip: string | null; addrs: [string, number][] }

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function rtt(o: Record<string, unknown>): Rtt {
  return {
    sent: num(o.sent) ?? 0, received: num(o.received) ?? 0, loss_pct: num(o.loss_pct) ?? 0, last_ms: num(o.last_ms),
    min_ms: num(o.min_ms), avg_ms: num(o.avg_ms), max_ms: num(o.max_ms), p95_ms: num(o.p95_ms), jitter_ms: num(o.jitter_ms),
  };
}

/** The hops of an MTR or traceroute table (statistics flattened into the hop, or under `stats`). */
export function parseHops(v: unknown): Hop[] {
  if (!Array.isArray(v)) return [];
  return v.filter((h): h is Record<string, unknown> => !!h && typeof h === 'object').map((h) => {
    const stats = h.stats && typeof h.stats === 'object' ? (h.stats as Record<string, unknown>) : h;
    const addrs = Array.isArray(h.addrs) ? (h.addrs as unknown[]).filter(Array.isArray).map((a) => [String((a as unknown[])[0]), num((a as unknown[])[1]) ?? 0] as [string, number]) : [];
    return { ttl: num(h.ttl) ?? 0, ip: typeof h.ip === 'string' ? h.ip : null, addrs, ...rtt(stats) };
  }).sort((a, b) => a.ttl - b.ttl);
}

export interface PingReply { seq: number; rtt_ms: number | null; ttl: number | null }
export interface PingTarget { target: string; replies: PingReply[]; summary: Rtt | null }

/** What the page draws for one run. */
export interface RunState {
  id: string | null;
  status: string;
  error: string | null;
  /** Highest progress seq folded in (progress is asked `after` it). */
  lastSeq: number;
  /** seq 0's state: started, duplicate, expired, rejected. */
  agentState: string | null;
  /** MTR and traceroute: the table, the cycle, whether the target answered. */
  hops: Hop[];
  cycle: number;
  reached: boolean;
  /** MTR: per cycle, each hop's last latency and loss (for the graph over time). */
  history: { cycle: number; hops: { ttl: number; last_ms: number | null; loss_pct: number }[] }[];
  ping: PingTarget[];
  /** Sweep and port scan: how far, and what was found so far. */
  scan: { done: number; total: number; found: unknown[] } | null;
  output: unknown;
}

export function initialRun(): RunState {
  return { id: null, status: 'idle', error: null, lastSeq: 0, agentState: null, hops: [], cycle: 0, reached: false, history: [], ping: [], scan: null, output: null };
}

export type RunAction =
  | { type: 'created'; id: string; status: string }
  | { type: 'status'; status: string; error?: string | null }
  | { type: 'frame'; seq: number; payload: unknown }
  | { type: 'detail'; status: string; error: string | null; output: unknown }
  | { type: 'failed'; error: string };

/** Most MTR cycles kept for the graph (a long run keeps its latest). */
export const MAX_HISTORY = 600;

function obj(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

export function runReducer(s: RunState, a: RunAction): RunState {
  switch (a.type) {
    case 'created':
      return { ...initialRun(), id: a.id, status: a.status };
    case 'status':
      return { ...s, status: a.status, error: a.error ?? s.error };
    case 'failed':
      return { ...s, status: s.id ? s.status : 'idle', error: a.error };
    case 'detail': {
      const next = { ...s, status: a.status, error: a.error, output: a.output };
      const o = obj(a.output);
      if (Array.isArray(o.hops)) { next.hops = parseHops(o.hops); next.reached = o.reached === true; if (num(o.cycles) !== null) next.cycle = num(o.cycles)!; }
      if (Array.isArray(o.targets)) {
        next.ping = (o.targets as unknown[]).map(obj).map((t) => {
          const prev = s.ping.find((p) => p.target === String(t.target));
          return { target: String(t.target), replies: prev?.replies ?? [], summary: t.summary ? rtt(obj(t.summary)) : null };
        });
      }
      if (Array.isArray(o.hosts)) next.scan = { done: num(o.scanned) ?? 0, total: num(o.scanned) ?? 0, found: o.hosts as unknown[] };
      if (Array.isArray(o.ports)) {
        const open = (o.ports as unknown[]).filter((p) => obj(p).state === 'open');
        next.scan = { done: (o.ports as unknown[]).length, total: (o.ports as unknown[]).length, found: open };
      }
      return next;
    }
    case 'frame': {
      if (a.seq <= s.lastSeq && a.seq !== 0) return s; // already folded in (socket and polling may both bring it)
      const p = obj(a.payload);
      const next: RunState = { ...s, lastSeq: Math.max(s.lastSeq, a.seq) };
      if (a.seq === 0) { next.agentState = typeof p.state === 'string' ? p.state : null; return next; }
      if (Array.isArray(p.hops)) {
        next.hops = parseHops(p.hops);
        next.reached = p.reached === true;
        next.cycle = num(p.cycle) ?? s.cycle + 1;
        const entry = { cycle: next.cycle, hops: next.hops.map((h) => ({ ttl: h.ttl, last_ms: h.last_ms, loss_pct: h.loss_pct })) };
        next.history = [...s.history.filter((x) => x.cycle !== entry.cycle), entry].slice(-MAX_HISTORY);
      } else if (typeof p.target === 'string' && 'seq' in p) {
        const target = p.target;
        const reply = { seq: num(p.seq) ?? 0, rtt_ms: num(p.rtt_ms), ttl: num(p.ttl) };
        const found = s.ping.find((t) => t.target === target);
        const updated = { target, replies: [...(found?.replies ?? []), reply].slice(-1000), summary: p.summary ? rtt(obj(p.summary)) : found?.summary ?? null };
        next.ping = found ? s.ping.map((t) => (t.target === target ? updated : t)) : [...s.ping, updated];
      } else if ('done' in p && 'total' in p) {
        const add = Array.isArray(p.found) ? p.found : Array.isArray(p.open) ? p.open : [];
        next.scan = { done: num(p.done) ?? 0, total: num(p.total) ?? 0, found: [...(s.scan?.found ?? []), ...add] };
      }
      return next;
    }
  }
}
