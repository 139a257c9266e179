// The console's i18n: every UI string is a key of the tables in pt-BR.ts (default) and en.ts; numbers, dates and
// relative times go through Intl with the chosen locale.
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from 'react';
import { ptBR, type MessageKey } from './pt-BR';
import { en } from './en';

export type Locale = 'pt-BR' | 'en';
export const LOCALES: Locale[] = ['pt-BR', 'en'];
export const TABLES: Record<Locale, Record<MessageKey, string>> = { 'pt-BR': ptBR, en };
export type { MessageKey };

const STORAGE_KEY = 'octoisp.locale';

/** Fills `{name}` placeholders. */
export function format(template: string, vars?: Record<string, string | number>): string {
  if (!vars) return template;
  return template.replace(/\{(\w+)\}/g, (m, name: string) => (name in vars ? String(vars[name]) : m));
}

/** Translates `key` in `locale` (falls back to Portuguese, then to the key itself). */
export function translate(locale: Locale, key: MessageKey, vars?: Record<string, string | number>): string {
  return format(TABLES[locale][key] ?? ptBR[key] ?? key, vars);
}

export function initialLocale(): Locale {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved === 'en' || saved === 'pt-BR') return saved;
  } catch { /* storage unavailable */ }
  return 'pt-BR';
}

export interface I18n {
  locale: Locale;
  setLocale(l: Locale): void;
  t(key: MessageKey, vars?: Record<string, string | number>): string;
  number(n: number): string;
  percent(fraction: number): string;
  dateTime(iso: string | null | undefined): string;
  time(iso: string | Date): string;
  relative(iso: string | null | undefined): string;
}

export function makeI18n(locale: Locale, setLocale: (l: Locale) => void): I18n {
  const num = new Intl.NumberFormat(locale);
  const pct = new Intl.NumberFormat(locale, { style: 'percent', maximumFractionDigits: 1 });
  const dt = new Intl.DateTimeFormat(locale, { dateStyle: 'short', timeStyle: 'medium' });
  const tm = new Intl.DateTimeFormat(locale, { timeStyle: 'medium' });
  const rel = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' });
  return {
    locale,
    setLocale,
    t: (key, vars) => translate(locale, key, vars),
    number: (n) => num.format(n),
    percent: (f) => pct.format(f),
    dateTime: (iso) => (iso ? dt.format(new Date(iso)) : translate(locale, 'common.never')),
    time: (iso) => tm.format(typeof iso === 'string' ? new Date(iso) : iso),
    relative: (iso) => {
      if (!iso) return translate(locale, 'common.never');
      const secs = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
      const abs = Math.abs(secs);
      if (abs < 60) return rel.format(secs, 'second');
      if (abs < 3600) return rel.format(Math.round(secs / 60), 'minute');
      if (abs < 86400) return rel.format(Math.round(secs / 3600), 'hour');
      return rel.format(Math.round(secs / 86400), 'day');
    },
  };
}

const Ctx = createContext<I18n>(makeI18n('pt-BR', () => {}));

export function I18nProvider({ children }: { children: ReactNode }) {
  const [locale, setLocaleState] = useState<Locale>(initialLocale);
  const setLocale = useCallback((l: Locale) => {
    setLocaleState(l);
    try { localStorage.setItem(STORAGE_KEY, l); } catch { /* ignore */ }
    document.documentElement.lang = l;
  }, []);
  const value = useMemo(() => makeI18n(locale, setLocale), [locale, setLocale]);
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useI18n(): I18n {
  return useContext(Ctx);
}
