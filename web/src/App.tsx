// The console's shell: header (live indicator, language, theme, help, sign out), navigation filtered by the
// user's permissions, the stale-data banner, and the page of the current route.
import { lazy, Suspense, useCallback, useEffect, useState, type ReactNode } from 'react';
import { useI18n, LOCALES, type Locale, type MessageKey } from './i18n';
import { client, Link, navigate, settings, useApp, usePath } from './state';
import { HelpPanel, Tour, type HelpPage } from './components/help';
import { Loading } from './components/ui';
import { visibleNav } from './nav';
import type { Me } from './api/types';
import Login from './pages/Login';
import Dashboard from './pages/Dashboard';

const Pops = lazy(() => import('./pages/Pops'));
const Agents = lazy(() => import('./pages/Agents'));
const Devices = lazy(() => import('./pages/Devices'));
const DeviceDetail = lazy(() => import('./pages/DeviceDetail'));
const Users = lazy(() => import('./pages/Users'));
const Roles = lazy(() => import('./pages/Roles'));
const Audit = lazy(() => import('./pages/Audit'));
const Alerts = lazy(() => import('./pages/Alerts'));
const Notifications = lazy(() => import('./pages/Notifications'));
const Diagnostics = lazy(() => import('./pages/Diagnostics'));
const Reports = lazy(() => import('./pages/Reports'));
const Tr069 = lazy(() => import('./pages/Tr069'));
const AgentConfig = lazy(() => import('./pages/AgentConfig'));
const Firmware = lazy(() => import('./pages/Firmware'));
const ApiKeys = lazy(() => import('./pages/ApiKeys'));
const Interfaces = lazy(() => import('./pages/Interfaces'));

type Theme = 'light' | 'dark';
function initialTheme(): Theme {
  try {
    const s = localStorage.getItem('octoisp.theme');
    if (s === 'light' || s === 'dark') return s;
  } catch { /* ignore */ }
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function page(path: string): { node: ReactNode; help: HelpPage; title: MessageKey } {
  const m = path.match(/^\/devices\/([0-9a-f-]{36})$/);
  if (m) return { node: <DeviceDetail id={m[1]} />, help: 'deviceDetail', title: 'devices.detail' };
  const tr = path.match(/^\/devices\/([0-9a-f-]{36})\/tr069$/);
  if (tr) return { node: <Tr069 id={tr[1]} />, help: 'tr069', title: 'tr069.title' };
  const ac = path.match(/^\/pops\/([0-9a-f-]{36})\/agent-config$/);
  if (ac) return { node: <AgentConfig popId={ac[1]} />, help: 'agentConfig', title: 'pops.agentConfig' };
  const ifs = path.match(/^\/pops\/([0-9a-f-]{36})\/interfaces$/);
  if (ifs) return { node: <Interfaces key={ifs[1]} popId={ifs[1]} />, help: 'interfaces', title: 'ifmon.open' };
  switch (path) {
    case '/pops': return { node: <Pops />, help: 'pops', title: 'nav.pops' };
    case '/agents': return { node: <Agents />, help: 'agents', title: 'nav.agents' };
    case '/devices': return { node: <Devices />, help: 'devices', title: 'nav.devices' };
    case '/users': return { node: <Users />, help: 'users', title: 'nav.users' };
    case '/roles': return { node: <Roles />, help: 'roles', title: 'nav.roles' };
    case '/api-keys': return { node: <ApiKeys />, help: 'apiKeys', title: 'nav.apiKeys' };
    case '/audit': return { node: <Audit />, help: 'audit', title: 'nav.audit' };
    case '/alerts': return { node: <Alerts />, help: 'alerts', title: 'nav.alerts' };
    case '/diagnostics': return { node: <Diagnostics />, help: 'diagnostics', title: 'nav.diagnostics' };
    case '/notifications': return { node: <Notifications />, help: 'notifications', title: 'nav.notifications' };
    case '/reports': return { node: <Reports />, help: 'reports', title: 'nav.reports' };
    case '/firmware': return { node: <Firmware />, help: 'firmware', title: 'nav.firmware' };
    default: return { node: <Dashboard />, help: 'dashboard', title: 'nav.dashboard' };
  }
}

function StaleBanner() {
  const { connectivity } = useApp();
  const i18n = useI18n();
  if (!connectivity.stale) return null;
  return (
    <div className="stale-banner" role="status" data-testid="stale-banner">
      {connectivity.since
        ? i18n.t('conn.stale', { time: i18n.dateTime(connectivity.since) })
        : i18n.t('conn.staleUnknown')}
    </div>
  );
}

export default function App() {
  const { me, setMe, live, connectivity, signOut } = useApp();
  const i18n = useI18n();
  const { t } = i18n;
  const path = usePath();
  const [theme, setTheme] = useState<Theme>(initialTheme);
  const [help, setHelp] = useState(false);
  const [tour, setTour] = useState(false);
  const [menu, setMenu] = useState(false);

  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    try { localStorage.setItem('octoisp.theme', theme); } catch { /* ignore */ }
  }, [theme]);
  useEffect(() => { document.documentElement.lang = i18n.locale; }, [i18n.locale]);
  useEffect(() => { setMenu(false); }, [path]);

  // Who am I: refreshed at start and whenever the session changes.
  useEffect(() => {
    if (!client.signedIn) return;
    client.get<Me>('/me').then((r) => setMe(r.data), () => { /* offline: keep the saved one */ });
  }, [setMe]);

  const closeHelp = useCallback(() => setHelp(false), []);
  if (!me) return <Login />;

  const current = page(path);
  const nav = visibleNav(me);
  const liveLabel = connectivity.stale ? t('conn.offline') : live === 'live' ? t('conn.live') : live === 'connecting' ? t('conn.connecting') : t('conn.offline');

  return (
    <div className="shell">
      <a className="skip" href="#main">{t('app.skip')}</a>
      <header className="topbar">
        <button className="btn btn-ghost menu-btn" aria-label={t('nav.menu')} aria-expanded={menu} onClick={() => setMenu(!menu)}>☰</button>
        <Link to="/" className="brand"><img src="/icons/icon.svg" alt="" width="28" height="28" /><span className="brand-text">{t('app.name')}</span></Link>
        <span className={'live-dot live-' + (connectivity.stale ? 'offline' : live)} data-tour="live" data-testid="live-status" data-status={connectivity.stale ? 'offline' : live}>{liveLabel}</span>
        <div className="spacer" />
        <div className="prefs" data-tour="prefs">
          <label className="sr-only" htmlFor="lang">{t('lang.label')}</label>
          <select id="lang" data-testid="lang" value={i18n.locale} onChange={(e) => i18n.setLocale(e.target.value as Locale)}>
            {LOCALES.map((l) => <option key={l} value={l}>{t(`lang.${l}` as MessageKey)}</option>)}
          </select>
          <button className="btn btn-ghost" aria-label={t('theme.toggle')} title={theme === 'dark' ? t('theme.light') : t('theme.dark')}
            onClick={() => setTheme(theme === 'dark' ? 'light' : 'dark')} data-testid="theme">{theme === 'dark' ? '☀' : '☾'}</button>
          <button className="btn btn-ghost" aria-label={t('help.open')} data-tour="help" data-testid="help" onClick={() => setHelp(!help)}>?</button>
          <button className="btn btn-ghost" onClick={signOut} data-testid="logout">{t('nav.logout')}</button>
        </div>
      </header>
      <StaleBanner />
      <div className="body">
        <nav className={'sidenav' + (menu ? ' open' : '')} aria-label={t('nav.menu')}>
          {nav.map((n) => (
            <Link key={n.path} to={n.path} className={'nav-item' + (n.path === path ? ' active' : '')} aria-current={n.path === path ? 'page' : undefined}>
              <span aria-hidden="true" className="nav-icon">{n.icon}</span>{t(n.label)}
            </Link>
          ))}
        </nav>
        <main id="main" data-tour="main">
          <Suspense fallback={<Loading />}>{current.node}</Suspense>
        </main>
        {help && <HelpPanel page={current.help} title={t(current.title)} vars={{ threshold: i18n.number(settings.onlineThresholdSecs) }} onClose={closeHelp}
          onTour={() => { setHelp(false); setTour(true); }} />}
      </div>
      {tour && <Tour page={current.help} onDone={() => setTour(false)} />}
    </div>
  );
}

export { navigate };
