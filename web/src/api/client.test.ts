// The API client's session logic against a small in-memory server with the control plane's refresh semantics:
// refresh tokens are single use (a reused one is refused), access tokens expire.
import { describe, expect, it } from 'vitest';
import { ApiClient, ApiError, type Boot, type TokenStore } from './client';

class FakeServer {
  refreshCalls = 0;
  validAccess = new Set<string>();
  validRefresh = new Set<string>();
  private n = 0;
  /** Answers later than at once, so that concurrent requests overlap. */
  delay = 5;
  down = false;

  issue() {
    const n = ++this.n;
    this.validAccess.add('a' + n);
    this.validRefresh.add('r' + n);
    return { access_token: 'a' + n, refresh_token: 'r' + n, expires_in: 900 };
  }
  expireAll() { this.validAccess.clear(); }

  fetch: typeof fetch = async (input, init) => {
    await new Promise((r) => setTimeout(r, this.delay));
    if (this.down) throw new TypeError('Failed to fetch');
    const url = String(input);
    const headers = new Headers(init?.headers);
    const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
    const body = init?.body ? JSON.parse(String(init.body)) : null;
    if (url.endsWith('/auth/login')) return body.password === 'right' ? json(200, this.issue()) : json(401, { error: { code: 'unauthenticated', message: 'no' } });
    if (url.endsWith('/auth/refresh')) {
      this.refreshCalls++;
      if (!this.validRefresh.delete(body.refresh_token)) return json(401, { error: { code: 'unauthenticated', message: 'reused' } });
      return json(200, this.issue());
    }
    const token = headers.get('authorization')?.replace('Bearer ', '') ?? '';
    if (!this.validAccess.has(token)) return json(401, { error: { code: 'unauthenticated', message: 'expired' } });
    return json(200, { ok: true, token });
  };
}

function memoryStore(initial: string | null = null): TokenStore & { value: string | null } {
  return { value: initial, getRefresh() { return this.value; }, setRefresh(t) { this.value = t; } };
}

describe('ApiClient', () => {
  it('logs in and sends the access token', async () => {
    const server = new FakeServer();
    const store = memoryStore();
    const c = new ApiClient({ fetch: server.fetch, store, base: '' });
    await c.login('a@b', 'right');
    expect(store.value).toBe('r1');
    const r = await c.get<{ token: string }>('/me');
    expect(r.data.token).toBe('a1');
    expect(r.staleSince).toBeNull();
  });

  it('refreshes once on 401, rotates the refresh token and retries', async () => {
    const server = new FakeServer();
    const store = memoryStore();
    const c = new ApiClient({ fetch: server.fetch, store, base: '' });
    await c.login('a@b', 'right');
    server.expireAll();
    const r = await c.get<{ token: string }>('/devices');
    expect(r.data.token).toBe('a2');
    expect(store.value).toBe('r2');
    expect(server.validRefresh.has('r1')).toBe(false);
    expect(server.refreshCalls).toBe(1);
  });

  it('shares one refresh between concurrent requests (a second one would reuse a rotated token)', async () => {
    const server = new FakeServer();
    const store = memoryStore();
    const c = new ApiClient({ fetch: server.fetch, store, base: '' });
    await c.login('a@b', 'right');
    server.expireAll();
    let lost = 0;
    c.onAuthLost(() => lost++);
    const results = await Promise.all([c.get('/a'), c.get('/b'), c.get('/c'), c.get('/d')]);
    expect(results).toHaveLength(4);
    expect(server.refreshCalls).toBe(1);
    expect(lost).toBe(0);
  });

  it('resumes a session from the stored refresh token (after a reload)', async () => {
    const server = new FakeServer();
    server.issue(); // r1 exists on the server
    const store = memoryStore('r1');
    const c = new ApiClient({ fetch: server.fetch, store, base: '' });
    const r = await c.get<{ token: string }>('/me');
    expect(r.data.token).toBe('a2');
    expect(store.value).toBe('r2');
  });

  it('signs out when the refresh token is refused', async () => {
    const server = new FakeServer();
    const store = memoryStore('stolen-and-used');
    const c = new ApiClient({ fetch: server.fetch, store, base: '' });
    let lost = 0;
    c.onAuthLost(() => lost++);
    await expect(c.get('/me')).rejects.toBeInstanceOf(ApiError);
    expect(lost).toBe(1);
    expect(store.value).toBeNull();
    expect(c.signedIn).toBe(false);
  });

  it('uses the successor another tab stored when its own token was already rotated', async () => {
    const server = new FakeServer();
    const store = memoryStore();
    const c = new ApiClient({ fetch: server.fetch, store, base: '' });
    await c.login('a@b', 'right');
    server.expireAll();
    // Another tab rotates r1 -> r2 after this tab read r1 but before its exchange reaches the server.
    const tabB = server.issue(); // r2
    server.validRefresh.delete('r1');
    const original = store.getRefresh.bind(store);
    let reads = 0;
    store.getRefresh = () => (++reads <= 2 ? original() : tabB.refresh_token);
    const r = await c.get<{ token: string }>('/me');
    expect(r.data.token).toBe('a3');
    expect(c.signedIn).toBe(true);
  });

  it('keeps the session when the server is unreachable, and reports it', async () => {
    const server = new FakeServer();
    const store = memoryStore();
    const c = new ApiClient({ fetch: server.fetch, store, base: '' });
    await c.login('a@b', 'right');
    server.expireAll();
    server.down = true;
    await expect(c.get('/me')).rejects.toMatchObject({ code: 'offline' });
    expect(store.value).toBe('r1');
    server.down = false;
    const r = await c.get<{ token: string }>('/me');
    expect(r.data.token).toBe('a2');
  });

  it('turns the service worker stale mark into a stale answer and connectivity signal', async () => {
    const seen: boolean[] = [];
    const fetchStale: typeof fetch = async () =>
      new Response('{"items":[]}', { status: 200, headers: { 'x-octoisp-stale': '2026-01-01T00:00:00Z' } });
    const c = new ApiClient({ fetch: fetchStale, store: memoryStore('r'), base: '', lock: (f) => f() });
    // Stale answers are served without a live refresh (the refresh itself fails offline).
    c.onConnectivity((s) => seen.push(s.stale));
    const r = await c.get('/pops');
    expect(r.staleSince).toBe('2026-01-01T00:00:00Z');
    expect(seen.at(-1)).toBe(true);
  });

  describe('the boot script started by index.html', () => {
    /** What the boot script does, against the fake server: one exchange, then GETs with its access token. */
    function boot(server: FakeServer, store: { value: string | null }, paths: string[]): Boot {
      const refresh = server.fetch('/auth/refresh', { method: 'POST', body: JSON.stringify({ refresh_token: store.value }) })
        .then(async (r) => {
          if (!r.ok) return { status: r.status };
          const pair = await r.json();
          store.value = pair.refresh_token;
          return { pair };
        });
      const gets: Record<string, Promise<Response>> = {};
      for (const p of paths) {
        gets[p] = refresh.then((r) => {
          if (!r || !('pair' in r)) throw new Error('no session');
          return server.fetch(p, { headers: { authorization: 'Bearer ' + r.pair.access_token } });
        });
        gets[p].catch(() => undefined);
      }
      return { refresh, gets };
    }

    it('takes its refreshed session and its first answers instead of asking again', async () => {
      const server = new FakeServer();
      server.issue();
      const store = memoryStore('r1');
      const b = boot(server, store, ['/me', '/summary']);
      let calls = 0;
      const counting: typeof fetch = (i, init) => { calls++; return server.fetch(i, init); };
      const c = new ApiClient({ fetch: counting, store, base: '', boot: b });
      const [me, summary] = await Promise.all([c.get<{ token: string }>('/me'), c.get<{ token: string }>('/summary')]);
      expect(me.data.token).toBe('a2');
      expect(summary.data.token).toBe('a2');
      expect(calls).toBe(0);
      expect(server.refreshCalls).toBe(1);
      expect(store.value).toBe('r2');
      // Used once: the next GET of the same path goes to the server.
      await c.get('/summary');
      expect(calls).toBe(1);
    });

    it('redoes what the boot could not: a refused token signs out, an unreachable server keeps the session', async () => {
      const server = new FakeServer();
      const store = memoryStore('stale');
      const c = new ApiClient({ fetch: server.fetch, store, base: '', boot: boot(server, store, ['/me']) });
      let lost = 0;
      c.onAuthLost(() => lost++);
      await expect(c.get('/me')).rejects.toBeInstanceOf(ApiError);
      expect(lost).toBe(1);
      expect(store.value).toBeNull();

      const up = new FakeServer();
      up.issue();
      const kept = memoryStore('r1');
      const failed = Promise.reject(new Error('offline'));
      failed.catch(() => undefined);
      const unreachable: Boot = { refresh: Promise.resolve(null), gets: { '/me': failed } };
      const c2 = new ApiClient({ fetch: up.fetch, store: kept, base: '', boot: unreachable });
      expect((await c2.get<{ token: string }>('/me')).data.token).toBe('a2');
    });

    it("never hands another session's answer to a user who signs in", async () => {
      const server = new FakeServer();
      server.issue();
      const store = memoryStore('r1');
      const b = boot(server, store, ['/summary']);
      await b.refresh;
      const c = new ApiClient({ fetch: server.fetch, store, base: '', boot: b });
      await c.login('other@b', 'right');
      const r = await c.get<{ token: string }>('/summary');
      expect(r.data.token).toBe('a3');
    });
  });
});
