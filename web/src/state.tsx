// Session, connectivity and live state shared by the pages, plus the small router and the data hook.
import { createContext, useCallback, useContext, useEffect, useRef, useState, type ReactNode, type MouseEvent } from 'react';
import { ApiClient, ApiError, type Connectivity } from './api/client';
import { LiveSocket, type LiveMessage, type LiveStatus } from './api/live';
import type { Me } from './api/types';

export const client = new ApiClient();

export interface LiveEntry { at: string; channel: string; event: Record<string, unknown> | null }

interface AppState {
  me: Me | null;
  setMe(me: Me | null): void;
  connectivity: Connectivity;
  live: LiveStatus;
  /** Bumped on every live event or resync: data hooks refetch. */
  tick: number;
  events: LiveEntry[];
  can(permission: string): boolean;
  signOut(): Promise<void>;
  /** Follows a command's live events (progress frames and status changes); returns the unsubscribe. */
  watchCommand(id: string, onEvent: (event: Record<string, unknown>) => void): () => void;
}

const Ctx = createContext<AppState | null>(null);

const ME_KEY = 'octoisp.me';

function savedMe(): Me | null {
  try { return client.signedIn ? JSON.parse(localStorage.getItem(ME_KEY) ?? 'null') : null; } catch { return null; }
}

export function AppProvider({ children }: { children: ReactNode }) {
  const [me, setMeState] = useState<Me | null>(savedMe);
  const [connectivity, setConnectivity] = useState<Connectivity>({ stale: false, since: null });
  const [live, setLive] = useState<LiveStatus>('offline');
  const [tick, setTick] = useState(0);
  const [events, setEvents] = useState<LiveEntry[]>([]);
  const socket = useRef<LiveSocket | null>(null);
  const commandListeners = useRef(new Map<string, Set<(e: Record<string, unknown>) => void>>());

  const setMe = useCallback((m: Me | null) => {
    setMeState(m);
    try { if (m) localStorage.setItem(ME_KEY, JSON.stringify(m)); else localStorage.removeItem(ME_KEY); } catch { /* ignore */ }
  }, []);

  useEffect(() => client.onConnectivity((c) => {
    setConnectivity((prev) => {
      if (prev.stale && !c.stale) setTick((t) => t + 1); // back live: refetch everything
      // A request with nothing cached says "stale, time unknown": keep the time of the data on screen.
      const next = c.stale && prev.stale && !c.since ? { stale: true, since: prev.since } : c;
      return prev.stale === next.stale && prev.since === next.since ? prev : next;
    });
  }), []);
  useEffect(() => client.onAuthLost(() => setMe(null)), [setMe]);

  // The live socket runs while signed in.
  useEffect(() => {
    if (!me) return;
    const onMessage = (m: LiveMessage) => {
      // Command progress goes to the page following it only (an MTR sends a frame per cycle: no global refetch).
      if (m.type === 'event' && m.channel === 'command') {
        const id = String(m.event?.command_id ?? '');
        commandListeners.current.get(id)?.forEach((f) => f(m.event ?? {}));
        return;
      }
      if (m.type === 'resync') commandListeners.current.forEach((set) => set.forEach((f) => f({ resync: true })));
      if (m.type === 'event') {
        setEvents((ev) => [{ at: new Date().toISOString(), channel: m.channel ?? 'live', event: m.event ?? null }, ...ev].slice(0, 20));
      }
      setTick((t) => t + 1);
    };
    let last: LiveStatus = 'offline';
    const onStatus = (st: LiveStatus) => {
      // The socket dropped: refetch at once, so that an unreachable server shows as stale data right away.
      if (last === 'live' && st === 'offline') setTick((t) => t + 1);
      last = st;
      setLive(st);
    };
    const s = new LiveSocket(client, onMessage, onStatus);
    socket.current = s;
    for (const id of commandListeners.current.keys()) s.watch(id);
    const online = () => s.kick();
    window.addEventListener('online', online);
    return () => { window.removeEventListener('online', online); s.close(); socket.current = null; };
  }, [me]);

  // While stale, probe the server now and then so that the console comes back live by itself.
  useEffect(() => {
    if (!connectivity.stale) return;
    const id = setInterval(() => { setTick((t) => t + 1); socket.current?.kick(); }, 4000);
    return () => clearInterval(id);
  }, [connectivity.stale]);

  const can = useCallback((p: string) => !!me && (me.global_admin || me.permissions.includes(p)), [me]);
  const signOut = useCallback(async () => {
    await client.logout();
    navigator.serviceWorker?.controller?.postMessage({ type: 'clear-data' });
    setEvents([]);
    setMe(null);
    navigate('/');
  }, [setMe]);

  const watchCommand = useCallback((id: string, onEvent: (e: Record<string, unknown>) => void) => {
    const map = commandListeners.current;
    if (!map.has(id)) { map.set(id, new Set()); socket.current?.watch(id); }
    map.get(id)!.add(onEvent);
    return () => {
      const set = map.get(id);
      set?.delete(onEvent);
      if (set && set.size === 0) { map.delete(id); socket.current?.unwatch(id); }
    };
  }, []);

  return <Ctx.Provider value={{ me, setMe, connectivity, live, tick, events, can, signOut, watchCommand }}>{children}</Ctx.Provider>;
}

export function useApp(): AppState {
  const c = useContext(Ctx);
  if (!c) throw new Error('AppProvider missing');
  return c;
}

// --- router -----------------------------------------------------------------------------------------------

const routeListeners = new Set<() => void>();
export function navigate(path: string) {
  if (path !== window.location.pathname + window.location.search) window.history.pushState(null, '', path);
  routeListeners.forEach((f) => f());
}
window.addEventListener('popstate', () => routeListeners.forEach((f) => f()));

export function usePath(): string {
  const [path, setPath] = useState(window.location.pathname);
  useEffect(() => {
    const f = () => setPath(window.location.pathname);
    routeListeners.add(f);
    return () => { routeListeners.delete(f); };
  }, []);
  return path;
}

export function Link({ to, children, className, ...rest }: { to: string; children: ReactNode; className?: string; 'aria-current'?: 'page' | undefined }) {
  const onClick = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={onClick} className={className} {...rest}>{children}</a>;
}

// --- data -------------------------------------------------------------------------------------------------

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  staleSince: string | null;
  reload(): void;
}

/**
 * GETs `path` (null: nothing), again on every live tick; keeps the last data while reloading. A refetch does not
 * throw away the answer still on its way (the live socket's first message comes while the first answer is in
 * flight: dropping it would make the first paint wait for a second round trip); answers are applied in the order
 * the requests were made, and never those of a previous path.
 */
export function useGet<T>(path: string | null): Loaded<T> {
  const { tick } = useApp();
  const [state, setState] = useState<{ data: T | null; error: ApiError | null; loading: boolean; staleSince: string | null }>({
    data: null, error: null, loading: path !== null, staleSince: null,
  });
  const [bump, setBump] = useState(0);
  const order = useRef({ path: null as string | null, sent: 0, applied: 0 });
  useEffect(() => {
    if (path === null) return;
    const o = order.current;
    if (o.path !== path) { o.path = path; o.applied = o.sent; }
    const seq = ++o.sent;
    const current = () => o.path === path && seq > o.applied;
    setState((s) => ({ ...s, loading: true }));
    client.get<T>(path).then(
      (r) => {
        if (!current()) return;
        o.applied = seq;
        setState({ data: r.data, error: null, loading: seq !== o.sent, staleSince: r.staleSince });
      },
      (e: unknown) => {
        if (!current()) return;
        o.applied = seq;
        const err = e instanceof ApiError ? e : new ApiError(0, 'error', String(e));
        // Offline with data on screen: keep it (the banner says it is stale).
        setState((s) => ({ data: err.offline ? s.data : null, error: err, loading: seq !== o.sent, staleSince: s.staleSince }));
      },
    );
  }, [path, tick, bump]);
  // Leaving a path (or the page) ignores the answers still on their way for it.
  useEffect(() => () => { order.current.path = null; }, [path]);
  return { ...state, reload: () => setBump((b) => b + 1) };
}

/** Server settings learnt from answers (the summary carries the online threshold). */
export const settings = { onlineThresholdSecs: 300 };
