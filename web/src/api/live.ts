// The live event socket (/api/v1/live): authenticates with its first message (never a token in the URL),
// sends each fresh access token, and reconnects with backoff; a 4401 close refreshes the session first.
import type { ApiClient } from './client';

export type LiveStatus = 'connecting' | 'live' | 'offline';
export interface LiveMessage { type: 'event' | 'resync'; channel?: 'alerts' | 'live' | 'command'; event?: Record<string, unknown> | null }

export class LiveSocket {
  private ws: WebSocket | null = null;
  private stopped = false;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private offToken: () => void;
  /** Commands whose progress this socket asked for (asked again after every reconnect). */
  private watched = new Set<string>();

  constructor(
    private readonly client: ApiClient,
    private readonly onMessage: (m: LiveMessage) => void,
    private readonly onStatus: (s: LiveStatus) => void,
    private readonly url = LiveSocket.defaultUrl(),
  ) {
    this.offToken = client.onToken((token) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'auth', token }));
    });
    this.connect();
  }

  static defaultUrl(): string {
    const { protocol, host } = window.location;
    return `${protocol === 'https:' ? 'wss' : 'ws'}://${host}/api/v1/live`;
  }

  /** Reconnects now (e.g. the browser came back online). */
  kick() {
    if (this.stopped || this.ws) return;
    if (this.timer) clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  /** Asks for a command's progress and status events (`channel: "command"`). */
  watch(commandId: string) {
    this.watched.add(commandId);
    this.sendJson({ type: 'watch', command_id: commandId });
  }

  unwatch(commandId: string) {
    if (this.watched.delete(commandId)) this.sendJson({ type: 'unwatch', command_id: commandId });
  }

  private ready = false;
  private sendJson(m: unknown) {
    if (this.ready && this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  close() {
    this.stopped = true;
    this.offToken();
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close(1000);
  }

  private async connect() {
    this.timer = null;
    if (this.stopped) return;
    this.onStatus('connecting');
    if (!this.client.accessToken) {
      try { await this.client.refresh(); } catch { return this.retry(); }
    }
    const token = this.client.accessToken;
    if (!token || this.stopped) return this.retry();
    let ws: WebSocket;
    try { ws = new WebSocket(this.url); } catch { return this.retry(); }
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
    ws.onmessage = (e) => {
      let m: { type?: string };
      try { m = JSON.parse(String(e.data)); } catch { return; }
      if (m.type === 'ready') {
        this.attempt = 0;
        this.ready = true;
        for (const id of this.watched) ws.send(JSON.stringify({ type: 'watch', command_id: id }));
        this.onStatus('live');
        // Whatever happened while disconnected is unknown: refetch.
        this.onMessage({ type: 'resync' });
      } else if (m.type === 'event' || m.type === 'resync') {
        this.onMessage(m as LiveMessage);
      }
    };
    ws.onclose = async (e) => {
      this.ws = null;
      this.ready = false;
      if (this.stopped) return;
      this.onStatus('offline');
      if (e.code === 4401) {
        try { if (!(await this.client.refresh())) return; } catch { /* offline: retry later */ }
      }
      if (e.code === 4403) return;
      this.retry();
    };
  }

  private retry() {
    if (this.stopped) return;
    this.onStatus('offline');
    const delay = Math.min(15000, 500 * 2 ** this.attempt++);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
