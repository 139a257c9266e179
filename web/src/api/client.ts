// The REST API client: bearer access token in memory, rotating refresh token in storage, one refresh at a time
// (concurrent 401s share it; across tabs a Web Lock serialises rotations), and the service worker's stale marks
// turned into a connectivity signal for the "last data seen" banner.

export interface TokenStore {
  getRefresh(): string | null;
  setRefresh(token: string | null): void;
}

/** Refresh token in localStorage, so a reload keeps the session (the access token never leaves memory). */
export const localTokenStore: TokenStore = {
  getRefresh: () => {
    try { return localStorage.getItem('octoisp.refresh'); } catch { return null; }
  },
  setRefresh: (t) => {
    try {
      if (t) localStorage.setItem('octoisp.refresh', t);
      else localStorage.removeItem('octoisp.refresh');
    } catch { /* storage unavailable: the session lasts as long as the page */ }
  },
};

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
  get offline(): boolean { return this.code === 'offline'; }
}

export interface ApiResult<T> {
  data: T;
  /** When the answer came from the service worker's cache: when that data was fetched (ISO), else null. */
  staleSince: string | null;
}

export interface Connectivity {
  /** True while answers come from the cache (or nothing answers). */
  stale: boolean;
  /** When the data shown was fetched, if known. */
  since: string | null;
}

export interface TokenPair { access_token: string; refresh_token: string; expires_in: number }

/**
 * What index.html's boot script started before the app's code ran: the refresh exchange (its new pair, already
 * stored; the refused status; or null when the server could not be reached) and GETs made with the new access
 * token, by path. Each is used once; a failure is redone the normal way.
 */
export interface Boot {
  refresh: Promise<{ pair: TokenPair } | { status: number } | null>;
  gets: Record<string, Promise<Response>>;
}

export interface ClientOptions {
  base?: string;
  fetch?: typeof fetch;
  store?: TokenStore;
  /** Serialises refreshes across tabs (defaults to navigator.locks when present). */
  lock?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** The boot script's head start (defaults to `window.__octoispBoot`). */
  boot?: Boot | null;
}

type Listener<T> = (v: T) => void;

export class ApiClient {
  private access: string | null = null;
  private refreshing: Promise<boolean> | null = null;
  private readonly base: string;
  private readonly doFetch: typeof fetch;
  private readonly store: TokenStore;
  private readonly lock: <T>(fn: () => Promise<T>) => Promise<T>;
  private authLost = new Set<Listener<void>>();
  private tokenListeners = new Set<Listener<string>>();
  private connectivity = new Set<Listener<Connectivity>>();
  private boot: Boot | null;
  /** The access token the boot script's GETs were made with (its answers are used only in that session). */
  private bootAccess: string | null = null;

  constructor(opts: ClientOptions = {}) {
    this.base = opts.base ?? '/api/v1';
    this.doFetch = opts.fetch ?? ((...a) => fetch(...a));
    this.store = opts.store ?? localTokenStore;
    this.boot = opts.boot !== undefined ? opts.boot
      : typeof window !== 'undefined' ? ((window as Window & { __octoispBoot?: Boot }).__octoispBoot ?? null) : null;
    const locks = typeof navigator !== 'undefined' ? (navigator as Navigator & { locks?: LockManager }).locks : undefined;
    this.lock = opts.lock ?? (locks
      ? <T,>(fn: () => Promise<T>) => locks.request('octoisp-refresh', fn) as Promise<T>
      : <T,>(fn: () => Promise<T>) => fn());
  }

  /** Whether a session exists (a refresh token is stored or an access token is held). */
  get signedIn(): boolean { return this.access !== null || this.store.getRefresh() !== null; }
  get accessToken(): string | null { return this.access; }

  onAuthLost(f: Listener<void>): () => void { this.authLost.add(f); return () => this.authLost.delete(f); }
  onToken(f: Listener<string>): () => void { this.tokenListeners.add(f); return () => this.tokenListeners.delete(f); }
  onConnectivity(f: Listener<Connectivity>): () => void { this.connectivity.add(f); return () => this.connectivity.delete(f); }

  private setTokens(pair: TokenPair) {
    this.access = pair.access_token;
    this.store.setRefresh(pair.refresh_token);
    this.tokenListeners.forEach((f) => f(pair.access_token));
  }

  private lose() {
    const had = this.access !== null || this.store.getRefresh() !== null;
    this.access = null;
    this.store.setRefresh(null);
    if (had) this.authLost.forEach((f) => f());
  }

  private signal(c: Connectivity) { this.connectivity.forEach((f) => f(c)); }

  private async send(method: string, path: string, body?: unknown, token?: string | null): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    try {
      return await this.doFetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, 'offline', 'no connection to the server');
    }
  }

  private static async error(resp: Response): Promise<ApiError> {
    let code = 'http_' + resp.status, message = resp.statusText;
    try {
      const j = await resp.json();
      code = j?.error?.code ?? code;
      message = j?.error?.message ?? message;
    } catch { /* not JSON */ }
    const ra = resp.headers.get('retry-after');
    if (resp.headers.get('x-octoisp-offline')) code = 'offline';
    return new ApiError(resp.status, code, message, ra ? Number(ra) : null);
  }

  async login(email: string, password: string): Promise<void> {
    this.boot = null;
    const resp = await this.send('POST', '/auth/login', { email, password });
    if (!resp.ok) throw await ApiClient.error(resp);
    this.setTokens(await resp.json());
  }

  async logout(): Promise<void> {
    this.boot = null;
    const rt = this.store.getRefresh();
    this.access = null;
    this.store.setRefresh(null);
    if (rt) {
      try { await this.send('POST', '/auth/logout', { refresh_token: rt }); } catch { /* offline: forget locally */ }
    }
  }

  /**
   * Exchanges the stored refresh token for a new pair. Concurrent callers share one exchange. Returns false
   * when there is no session any more (the token was refused: signed out); throws an offline ApiError when the
   * server cannot be reached (the session is kept).
   */
  refresh(): Promise<boolean> {
    if (!this.refreshing) {
      this.refreshing = this.lock(async () => {
        // The boot script's exchange, once: its pair is the session; refused or unreachable, redo it below.
        const early = this.boot?.refresh;
        if (this.boot) this.boot = { ...this.boot, refresh: Promise.resolve(null) };
        const done = early ? await early.catch(() => null) : null;
        if (done && 'pair' in done) { this.setTokens(done.pair); this.bootAccess = done.pair.access_token; return true; }
        const rt = this.store.getRefresh();
        if (!rt) { this.lose(); return false; }
        const resp = await this.send('POST', '/auth/refresh', { refresh_token: rt });
        if (resp.ok) { this.setTokens(await resp.json()); return true; }
        if (resp.status === 401) {
          // Another tab may have rotated the token meanwhile: its successor is then in storage.
          const now = this.store.getRefresh();
          if (now && now !== rt) {
            const again = await this.send('POST', '/auth/refresh', { refresh_token: now });
            if (again.ok) { this.setTokens(await again.json()); return true; }
          }
          this.lose();
          return false;
        }
        throw await ApiClient.error(resp);
      }).finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  /** A request with the session's token; a 401 refreshes once and retries. */
  async request<T>(method: string, path: string, body?: unknown): Promise<ApiResult<T>> {
    if (!this.access && this.store.getRefresh()) {
      try { await this.refresh(); } catch (e) {
        // Offline at start: GETs may still be answered from the cache.
        if (!(e instanceof ApiError && e.offline) || method !== 'GET') throw e;
      }
    }
    let resp = (method === 'GET' && (await this.early(path))) || (await this.send(method, path, body, this.access));
    if (resp.status === 401 && this.store.getRefresh()) {
      if (await this.refresh()) resp = await this.send(method, path, body, this.access);
    }
    if (!resp.ok) {
      const err = await ApiClient.error(resp);
      if (err.offline) this.signal({ stale: true, since: null });
      else if (resp.status === 401) this.lose();
      throw err;
    }
    const staleSince = resp.headers.get('x-octoisp-stale');
    this.signal(staleSince !== null ? { stale: true, since: staleSince || null } : { stale: false, since: null });
    // 204, and 202 without a body (a password reset request), carry no JSON.
    const text = resp.status === 204 ? '' : await resp.text();
    const data = (text ? JSON.parse(text) : undefined) as T;
    return { data, staleSince: staleSince !== null ? staleSince || '' : null };
  }

  /** The boot script's answer to GET `path`, once, if it got one. */
  private async early(path: string): Promise<Response | null> {
    const p = this.boot?.gets[path];
    if (!p || !this.boot || this.access === null || this.access !== this.bootAccess) return null;
    delete this.boot.gets[path];
    return p.catch(() => null);
  }

  /** A file from the API (a report): its body and the name from Content-Disposition; a 401 refreshes once. */
  async download(path: string): Promise<{ blob: Blob; filename: string | null }> {
    if (!this.access && this.store.getRefresh()) await this.refresh();
    let resp = await this.send('GET', path, undefined, this.access);
    if (resp.status === 401 && this.store.getRefresh()) {
      if (await this.refresh()) resp = await this.send('GET', path, undefined, this.access);
    }
    if (!resp.ok) throw await ApiClient.error(resp);
    const m = /filename="([^"]+)"/.exec(resp.headers.get('content-disposition') ?? '');
    return { blob: await resp.blob(), filename: m ? m[1] : null };
  }

  /** A file uploaded as the raw request body (`application/octet-stream`, a firmware image); a 401 refreshes once. */
  async upload<T>(path: string, body: Blob): Promise<T> {
    if (!this.access && this.store.getRefresh()) await this.refresh();
    const send = async () => {
      const headers: Record<string, string> = { accept: 'application/json', 'content-type': 'application/octet-stream' };
      if (this.access) headers.authorization = `Bearer ${this.access}`;
      try {
        return await this.doFetch(this.base + path, { method: 'POST', headers, body });
      } catch {
        throw new ApiError(0, 'offline', 'no connection to the server');
      }
    };
    let resp = await send();
    if (resp.status === 401 && this.store.getRefresh()) {
      if (await this.refresh()) resp = await send();
    }
    if (!resp.ok) throw await ApiClient.error(resp);
    return (await resp.json()) as T;
  }

  get<T>(path: string) { return this.request<T>('GET', path); }
  post<T>(path: string, body?: unknown) { return this.request<T>('POST', path, body ?? {}); }
  patch<T>(path: string, body: unknown) { return this.request<T>('PATCH', path, body); }
  put<T>(path: string, body: unknown) { return this.request<T>('PUT', path, body); }
  del(path: string) { return this.request<void>('DELETE', path); }
}

/**
 * The field a validation error names: the API's 400/422 messages start with `field: ` (or `a, b: ` for a rule
 * over two fields). Returns the field names and the rest of the message; no field: `fields` is empty.
 */
export function fieldErrors(message: string): { fields: string[]; text: string } {
  message = message.replace(/^Failed to deserialize the JSON body into the target type: /, '');
  const m = message.match(/^([a-z_][a-z0-9_.]*(?:, [a-z_][a-z0-9_.]*)*):? (.+)$/s);
  if (!m) return { fields: [], text: message };
  return { fields: m[1].split(', '), text: m[2] };
}

/** `?a=1&b=x` from the defined, non-empty values. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? '?' + s : '';
}
