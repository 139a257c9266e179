import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TABLES, LOCALES, translate, format } from './index';
import { ptBR } from './pt-BR';
import { en } from './en';

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return sources(p);
    return /\.tsx?$/.test(f) && !f.endsWith('.test.ts') ? [p] : [];
  });
}

describe('i18n tables', () => {
  it('have the same keys in every language', () => {
    const keys = Object.keys(ptBR).sort();
    for (const l of LOCALES) expect(Object.keys(TABLES[l]).sort(), l).toEqual(keys);
  });

  it('have no empty text and the same placeholders in every language', () => {
    for (const key of Object.keys(ptBR) as (keyof typeof ptBR)[]) {
      for (const l of LOCALES) expect(TABLES[l][key].trim().length, `${l} ${key}`).toBeGreaterThan(0);
      expect(placeholders(en[key]), key).toEqual(placeholders(ptBR[key]));
    }
  });

  it('are really translated: a text equal in both languages must be one of the words both use', () => {
    const allowed = new Set(['app.name', 'common.none', 'lang.pt-BR', 'lang.en', 'nav.pops', 'pops.title', 'dash.pops',
      'dash.online', 'dash.offline', 'devices.online', 'devices.offline', 'agents.pop', 'devices.pop', 'nav.menu',
      'conn.offline', 'devices.oui', 'devices.firmware', 'pops.agents', 'agents.hostname', 'dash.onlineShare',
      // Units and abbreviations written the same way in both languages.
      'graph.preset.1h', 'graph.preset.6h', 'graph.preset.24h', 'graph.cpu', 'graph.interface', 'graph.res.5m', 'silences.hours',
      'rules.scope.pop', 'notif.kind.webhook', 'notif.err.time',
      'ifmon.open', 'ifmon.pop', 'ifmon.interface', 'ifmon.perSecond']);
    const same = Object.keys(ptBR).filter((k) => ptBR[k as keyof typeof ptBR] === en[k as keyof typeof en]);
    expect(same.filter((k) => !allowed.has(k))).toEqual([]);
  });

  it('cover every key the code asks for', () => {
    const root = join(__dirname, '..');
    const used = new Set<string>();
    for (const file of sources(root)) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/\bt\(\s*'([a-zA-Z0-9.\-]+)'/g)) used.add(m[1]);
      for (const m of text.matchAll(/'((?:nav|tour|dash|devices|agents|pops|users|roles|audit|common|conn|help|login|theme|lang|graph|alerts|rules|silences|maint|notif|diag|agentcfg|apikeys|ifmon|tpl)\.[a-zA-Z0-9.\-]+)'/g)) used.add(m[1]);
    }
    expect(used.size).toBeGreaterThan(50);
    // A key ending with '.' is a prefix completed at run time (checked with its values in the modules' tests).
    const missing = [...used].filter((k) => !k.endsWith('.') && !(k in ptBR));
    expect(missing).toEqual([]);
  });

  it('has help texts (about, fields, actions) for every page with help', () => {
    const pages = ['dashboard', 'pops', 'agents', 'devices', 'deviceDetail', 'users', 'roles', 'audit', 'alerts', 'notifications', 'diagnostics', 'tr069', 'agentConfig', 'firmware', 'apiKeys', 'interfaces'];
    for (const p of pages) for (const part of ['about', 'fields', 'actions']) expect(`help.${p}.${part}` in ptBR, `${p}.${part}`).toBe(true);
  });

  it('formats placeholders and falls back to the key text', () => {
    expect(format('a {x} b {y}', { x: 1 })).toBe('a 1 b {y}');
    expect(translate('en', 'login.throttled', { seconds: 30 })).toBe('Too many attempts. Try again in 30 s.');
    expect(translate('pt-BR', 'login.throttled', { seconds: 30 })).toBe('Muitas tentativas. Tente de novo em 30 s.');
  });
});
