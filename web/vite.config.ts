/// <reference types="vitest/config" />
import { readFileSync } from 'node:fs';
import { defineConfig, type Plugin } from 'vite';
import react from '@vitejs/plugin-react';

/**
 * Emits `sw.js` from `src/sw.js`, with the build's file list (the app shell to precache) and a version derived
 * from it, so that every release installs a new worker and drops the old caches.
 */
function serviceWorker(): Plugin {
  return {
    name: 'octoisp-service-worker',
    apply: 'build',
    generateBundle(_options, bundle) {
      const files = Object.keys(bundle).filter((f) => !f.endsWith('.map'));
      const shell = ['/', '/index.html', '/manifest.webmanifest', '/icons/icon.svg', '/icons/icon-192.png',
        ...files.filter((f) => f !== 'index.html').map((f) => '/' + f)];
      const version = files.filter((f) => f.startsWith('assets/')).sort().join(',');
      let hash = 0;
      for (let i = 0; i < version.length; i++) hash = (hash * 31 + version.charCodeAt(i)) >>> 0;
      const source = readFileSync(new URL('./src/sw.js', import.meta.url), 'utf8')
        .replace('__SHELL__', JSON.stringify(shell))
        .replace('__VERSION__', JSON.stringify(hash.toString(36)));
      this.emitFile({ type: 'asset', fileName: 'sw.js', source });
    },
  };
}

export default defineConfig({
  plugins: [react(), serviceWorker()],
  build: { target: 'es2022', sourcemap: false, chunkSizeWarningLimit: 400 },
  server: {
    // `npm run dev`: the API of a local control plane (scripts/dev-up.sh prints its port).
    proxy: {
      '/api': { target: process.env.OCTOISP_API ?? 'http://127.0.0.1:55080', ws: true },
    },
  },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});
