// The console's service worker (plain JS, copied to dist/sw.js by the build with the file list filled in).
//
// - App shell (index.html, hashed assets, manifest, icons): precached at install; navigations are network
//   first, falling back to the cached index.html; assets are cache first (their names change with content).
// - API GETs (/api/v1/..., except the live socket): network first; each successful answer is kept as "the last
//   data seen". When the network fails, the cached answer is returned with `x-octoisp-stale: <ISO time it was
//   fetched>` so that the console shows it marked stale; with nothing cached, a 503 `offline` error.
//   Graph data (series points, aggregates) is not kept: its URLs carry the time range, so they never repeat;
//   nor are report downloads (files of up to megabytes, generated for one moment).
// - The page may ask to forget the data (logout): {type: 'clear-data'}.
// - Web Push: a push message from the control plane ({title, body, tag, data: {severity}}) is shown as a
//   notification; clicking it focuses an open console on the alerts page (or opens one).
/* eslint-disable no-restricted-globals */
const SHELL = __SHELL__;
const VERSION = __VERSION__;
const SHELL_CACHE = 'octoisp-shell-' + VERSION;
const DATA_CACHE = 'octoisp-data-v1';

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(SHELL_CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith('octoisp-shell-') && key !== SHELL_CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('message', (event) => {
  if (event.data && event.data.type === 'clear-data') event.waitUntil(caches.delete(DATA_CACHE));
});

function offline() {
  return new Response(JSON.stringify({ error: { code: 'offline', message: 'offline and nothing cached' } }), {
    status: 503, headers: { 'content-type': 'application/json', 'x-octoisp-offline': '1' },
  });
}

async function apiGet(request) {
  const cache = await caches.open(DATA_CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) {
      const headers = new Headers(response.headers);
      headers.set('x-octoisp-fetched-at', new Date().toISOString());
      const body = await response.clone().arrayBuffer();
      await cache.put(request.url, new Response(body, { status: response.status, headers }));
    }
    return response;
  } catch {
    const cached = await cache.match(request.url);
    if (!cached) return offline();
    const headers = new Headers(cached.headers);
    headers.set('x-octoisp-stale', cached.headers.get('x-octoisp-fetched-at') || '');
    return new Response(await cached.arrayBuffer(), { status: cached.status, headers });
  }
}

async function navigation(request) {
  try {
    return await fetch(request);
  } catch {
    const cache = await caches.open(SHELL_CACHE);
    return (await cache.match('/index.html')) || (await cache.match('/')) || offline();
  }
}

async function shell(request) {
  const cache = await caches.open(SHELL_CACHE);
  const hit = await cache.match(request);
  if (hit) return hit;
  const response = await fetch(request);
  if (response.ok && new URL(request.url).pathname.startsWith('/assets/')) await cache.put(request, response.clone());
  return response;
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname === '/api/v1/live') return;
  if (/^\/api\/v1\/(series\/\d+\/points|metrics\/aggregate|reports\/[a-z]+)$/.test(url.pathname)) {
    event.respondWith(fetch(request).catch(() => offline()));
  } else if (url.pathname.startsWith('/api/')) {
    event.respondWith(apiGet(request));
  } else if (request.mode === 'navigate') {
    event.respondWith(navigation(request));
  } else {
    event.respondWith(shell(request));
  }
});

self.addEventListener('push', (event) => {
  let msg = {};
  try { msg = event.data ? event.data.json() : {}; } catch { msg = { body: event.data ? event.data.text() : '' }; }
  const title = typeof msg.title === 'string' && msg.title ? msg.title.slice(0, 200) : 'OctoISP';
  const options = {
    body: typeof msg.body === 'string' ? msg.body.slice(0, 1000) : '',
    tag: typeof msg.tag === 'string' ? msg.tag : undefined,
    icon: '/icons/icon-192.png',
    badge: '/icons/icon-192.png',
    data: { url: '/alerts' },
    requireInteraction: msg.data && msg.data.severity === 'critical',
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const target = (event.notification.data && event.notification.data.url) || '/';
  event.waitUntil((async () => {
    const all = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const c of all) {
      if (new URL(c.url).origin === self.location.origin) {
        await c.focus();
        if ('navigate' in c) await c.navigate(target);
        return;
      }
    }
    await self.clients.openWindow(target);
  })());
});
