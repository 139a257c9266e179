import { useState, type FormEvent } from 'react';
import { useI18n } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Agent, EnrollmentToken, Page, Pop } from '../api/types';
import { client, Link, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';

export default function Pops() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const pops = useGet<Page<Pop>>('/pops' + query({ limit: 500 }));
  const agents = useGet<Page<Agent>>(can('agents:read') ? '/agents' + query({ limit: 500 }) : null);
  const [token, setToken] = useState<{ pop: Pop; token: EnrollmentToken } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [slug, setSlug] = useState('');

  async function enroll(pop: Pop) {
    setError(null);
    try {
      const r = await client.post<EnrollmentToken>('/agents/enrollment-tokens', { pop_id: pop.id });
      setToken({ pop, token: r.data });
    } catch (e) { setError(e instanceof ApiError ? e.message : String(e)); }
  }

  async function create(e: FormEvent) {
    e.preventDefault();
    setError(null);
    try {
      await client.post<Pop>('/pops', { name, slug });
      setName(''); setSlug('');
      pops.reload();
    } catch (err) { setError(err instanceof ApiError ? err.message : String(err)); }
  }

  const count = (pop: Pop) => (agents.data?.items ?? []).filter((a) => a.pop_id === pop.id && !a.revoked_at).length;
  return (
    <div className="page">
      <h1>{t('pops.title')}</h1>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      {token && (
        <Card title={t('pops.enrollFor', { pop: token.pop.name })} className="highlight" testid="enroll-token">
          <p className="muted">{t('pops.tokenOnce')}</p>
          <pre className="token">{token.token.token ?? `${token.token.token_id}.${token.token.secret}`}</pre>
          <p className="muted">{t('pops.tokenExpires', { time: i18n.dateTime(token.token.expires_at) })}</p>
          <button className="btn" onClick={() => setToken(null)}>{t('common.close')}</button>
        </Card>
      )}
      {pops.loading && !pops.data && <Loading />}
      {pops.error && !pops.data && <ErrorView error={pops.error} onRetry={pops.reload} />}
      <div className="grid cards" data-tour="pops">
        {pops.data?.items.map((p) => (
          <Card key={p.id} title={p.name} testid="pop-card">
            <dl className="kv">
              <dt>{t('pops.slug')}</dt><dd><code>{p.slug}</code></dd>
              <dt>{t('pops.created')}</dt><dd>{i18n.dateTime(p.created_at)}</dd>
              {agents.data && <><dt>{t('pops.agents')}</dt><dd><Pill kind={count(p) ? 'ok' : 'warn'}>{i18n.number(count(p))}</Pill></dd></>}
            </dl>
            <div className="row">
              {can('agents:enroll') && <button className="btn" data-tour="enroll" onClick={() => enroll(p)}>{t('pops.enroll')}</button>}
              {can('metrics:read') && can('devices:read') && <Link to={`/pops/${p.id}/interfaces`} className="btn" data-testid="pop-interfaces">{t('ifmon.open')}</Link>}
              {can('agents:read') && <Link to={`/pops/${p.id}/agent-config`} className="btn" data-testid="pop-agent-config">{t('pops.agentConfig')}</Link>}
            </div>
          </Card>
        ))}
      </div>
      {can('pops:write') && (
        <Card title={t('pops.new')}>
          <form className="form-row" onSubmit={create}>
            <label>{t('pops.name')}<input required value={name} onChange={(e) => setName(e.target.value)} /></label>
            <label>{t('pops.slug')}<input required pattern="[a-z0-9][a-z0-9-]*" value={slug} onChange={(e) => setSlug(e.target.value)} /></label>
            <button className="btn btn-primary" type="submit">{t('common.create')}</button>
          </form>
        </Card>
      )}
    </div>
  );
}
