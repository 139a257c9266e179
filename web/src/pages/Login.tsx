import { useState, type FormEvent } from 'react';
import { useI18n, LOCALES, type Locale, type MessageKey } from '../i18n';
import { ApiError } from '../api/client';
import type { Me } from '../api/types';
import { client, useApp } from '../state';

export default function Login() {
  const i18n = useI18n();
  const { t } = i18n;
  const { setMe } = useApp();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await client.login(email, password);
      setMe((await client.get<Me>('/me')).data);
    } catch (err) {
      if (err instanceof ApiError && err.status === 429) setError(t('login.throttled', { seconds: err.retryAfter ?? 60 }));
      else if (err instanceof ApiError && err.offline) setError(t('login.offline'));
      else setError(t('login.failed'));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="login-wrap">
      <form className="card login" onSubmit={submit} data-testid="login-form">
        <div className="login-brand"><img src="/icons/icon.svg" alt="" width="48" height="48" /><h1>{t('login.title')}</h1></div>
        <label>{t('login.email')}<input type="email" name="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.target.value)} /></label>
        <label>{t('login.password')}<input type="password" name="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} /></label>
        {error && <p className="notice notice-bad" role="alert">{error}</p>}
        <button className="btn btn-primary" type="submit" disabled={busy}>{t('login.submit')}</button>
        <label className="inline">{t('lang.label')}
          <select value={i18n.locale} onChange={(e) => i18n.setLocale(e.target.value as Locale)}>
            {LOCALES.map((l) => <option key={l} value={l}>{t(`lang.${l}` as MessageKey)}</option>)}
          </select>
        </label>
      </form>
    </div>
  );
}
