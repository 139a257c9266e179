// CPE firmware: the images held by the control plane (upload, list, delete) and the campaigns that roll one out
// in stages with a stop rule (create, progress per state and per device, pause/resume/cancel).
import { useState, type FormEvent } from 'react';
import { useI18n } from '../i18n';
import { ApiError, query } from '../api/client';
import type { Page, Pop } from '../api/types';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';
import { DeleteButton, Field, invalid } from '../components/forms';
import {
  actions, CAMPAIGN_STATES, failurePct, formatSize, parseStages, sha256Hex, shares, total,
  type Campaign, type CampaignDevice, type FirmwareImage,
} from '../lib/firmware';

const STATUS_KIND: Record<Campaign['status'], 'ok' | 'bad' | 'muted' | 'warn'> = {
  running: 'ok', paused: 'warn', halted: 'bad', cancelled: 'muted', done: 'ok',
};
const STATE_COLOR: Record<string, string> = {
  succeeded: 'var(--ok)', failed: 'var(--bad)', running: 'var(--warn, #d9a400)', pending: 'var(--muted, #999)', skipped: 'var(--border, #ccc)',
};

function msg(e: unknown): string { return e instanceof ApiError ? e.message : String(e); }

function Upload({ onDone }: { onDone(): void }) {
  const { t } = useI18n();
  const [file, setFile] = useState<File | null>(null);
  const [name, setName] = useState('');
  const [version, setVersion] = useState('');
  const [oui, setOui] = useState('');
  const [productClass, setProductClass] = useState('');
  const [vendor, setVendor] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!file) { setError(t('fw.noFile')); return; }
    setBusy(true); setError(null);
    try {
      const data = await file.arrayBuffer();
      const sha256 = await sha256Hex(data);
      await client.upload<FirmwareImage>('/firmware/images' + query({
        name: name || file.name, version, oui, product_class: productClass, vendor, sha256,
      }), new Blob([data]));
      setFile(null); setName(''); setVersion('');
      onDone();
    } catch (err) { setError(msg(err)); } finally { setBusy(false); }
  }

  return (
    <form className="form-grid" onSubmit={submit} data-tour="fw-upload" data-testid="fw-upload">
      <Field label={t('fw.file')} id="fw-file"><input id="fw-file" type="file" onChange={(e) => setFile(e.target.files?.[0] ?? null)} /></Field>
      <Field label={t('fw.name')} id="fw-name"><input id="fw-name" value={name} onChange={(e) => setName(e.target.value)} placeholder={file?.name ?? ''} /></Field>
      <Field label={t('fw.version')} id="fw-version"><input id="fw-version" required value={version} onChange={(e) => setVersion(e.target.value)} /></Field>
      <Field label={t('fw.vendor')} id="fw-vendor"><input id="fw-vendor" value={vendor} onChange={(e) => setVendor(e.target.value)} /></Field>
      <Field label={t('fw.oui')} id="fw-oui"><input id="fw-oui" value={oui} maxLength={6} onChange={(e) => setOui(e.target.value)} /></Field>
      <Field label={t('fw.productClass')} id="fw-pc"><input id="fw-pc" value={productClass} onChange={(e) => setProductClass(e.target.value)} /></Field>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      <button className="btn btn-primary" type="submit" disabled={busy}>{busy ? t('fw.uploading') : t('fw.upload')}</button>
    </form>
  );
}

function NewCampaign({ images, pops, onDone }: { images: FirmwareImage[]; pops: Pop[]; onDone(): void }) {
  const { t } = useI18n();
  const [name, setName] = useState('');
  const [image, setImage] = useState('');
  const [kind, setKind] = useState<'pop_id' | 'group_id' | 'device_ids'>('pop_id');
  const [target, setTarget] = useState('');
  const [stages, setStages] = useState('5, 25, 100');
  const [maxFail, setMaxFail] = useState('10');
  const [comeBack, setComeBack] = useState('30');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const parsed = parseStages(stages);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!parsed) return;
    const value = kind === 'device_ids' ? target.split(/[\s,;]+/).filter(Boolean) : target;
    setBusy(true); setError(null);
    try {
      await client.post('/firmware/campaigns', {
        name, image_id: image, target: { [kind]: value }, stages_pct: parsed,
        max_failure_pct: Number(maxFail), come_back_secs: Math.round(Number(comeBack) * 60),
      });
      setName('');
      onDone();
    } catch (err) { setError(msg(err)); } finally { setBusy(false); }
  }

  return (
    <form className="form-grid" onSubmit={submit} data-tour="fw-campaign-new" data-testid="fw-campaign-new">
      <Field label={t('fw.campaignName')} id="fc-name"><input id="fc-name" required value={name} onChange={(e) => setName(e.target.value)} /></Field>
      <Field label={t('fw.image')} id="fc-image">
        <select id="fc-image" required value={image} onChange={(e) => setImage(e.target.value)}>
          <option value="">—</option>
          {images.map((i) => <option key={i.id} value={i.id}>{i.name} {i.version}</option>)}
        </select>
      </Field>
      <Field label={t('fw.targetKind')} id="fc-kind">
        <select id="fc-kind" value={kind} onChange={(e) => { setKind(e.target.value as typeof kind); setTarget(''); }}>
          <option value="pop_id">{t('fw.target.pop')}</option>
          <option value="group_id">{t('fw.target.group')}</option>
          <option value="device_ids">{t('fw.target.devices')}</option>
        </select>
      </Field>
      <Field label={t('fw.target')} id="fc-target">
        {kind === 'pop_id'
          ? <select id="fc-target" required value={target} onChange={(e) => setTarget(e.target.value)}>
              <option value="">—</option>
              {pops.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
            </select>
          : <input id="fc-target" required value={target} onChange={(e) => setTarget(e.target.value)}
              placeholder={kind === 'group_id' ? t('fw.groupIdHint') : t('fw.deviceIdsHint')} />}
      </Field>
      <Field label={t('fw.stages')} id="fc-stages" error={parsed ? null : t('fw.stagesInvalid')}>
        <input id="fc-stages" value={stages} onChange={(e) => setStages(e.target.value)} {...invalid('fc-stages', parsed ? null : 'x')} />
      </Field>
      <Field label={t('fw.maxFailure')} id="fc-fail"><input id="fc-fail" type="number" min={0} max={100} step="any" value={maxFail} onChange={(e) => setMaxFail(e.target.value)} /></Field>
      <Field label={t('fw.comeBack')} id="fc-back"><input id="fc-back" type="number" min={1} value={comeBack} onChange={(e) => setComeBack(e.target.value)} /></Field>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      <button className="btn btn-primary" type="submit" disabled={busy || !parsed}>{t('fw.startCampaign')}</button>
    </form>
  );
}

function Progress({ c }: { c: Campaign }) {
  const { t } = useI18n();
  const s = shares(c);
  return (
    <div>
      <div className="bar" role="img" aria-label={t('fw.progressLabel', { done: c.counts.succeeded, total: total(c) })} style={{ display: 'flex' }}>
        {CAMPAIGN_STATES.map((k) => s[k] > 0 && <div key={k} style={{ width: `${s[k]}%`, background: STATE_COLOR[k] }} />)}
      </div>
      <p className="small muted">
        {CAMPAIGN_STATES.map((k) => `${t(`fw.state.${k}` as 'fw.state.pending')}: ${c.counts[k] ?? 0}`).join(' · ')}
      </p>
    </div>
  );
}

function CampaignDevices({ id }: { id: string }) {
  const i18n = useI18n();
  const { t } = i18n;
  const d = useGet<Campaign & { devices: CampaignDevice[] }>(`/firmware/campaigns/${id}`);
  if (d.error && !d.data) return <ErrorView error={d.error} />;
  if (!d.data) return <Loading />;
  return (
    <div className="table-wrap">
      <table className="compact" data-testid="fw-campaign-devices">
        <thead><tr><th scope="col">#</th><th scope="col">{t('fw.device')}</th><th scope="col">{t('fw.deviceState')}</th><th scope="col">{t('fw.started')}</th><th scope="col">{t('fw.error')}</th></tr></thead>
        <tbody>
          {d.data.devices.map((x) => (
            <tr key={x.device_id}>
              <td>{x.position + 1}</td>
              <td><code>{x.device_key ?? x.device_id}</code></td>
              <td>{t(`fw.state.${x.state}` as 'fw.state.pending')}</td>
              <td>{x.started_at ? i18n.dateTime(x.started_at) : t('common.none')}</td>
              <td className="small">{x.error ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export default function Firmware() {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const write = can('tr069:firmware');
  const images = useGet<Page<FirmwareImage>>('/firmware/images' + query({ limit: 500 }));
  const campaigns = useGet<Page<Campaign>>('/firmware/campaigns' + query({ limit: 100 }));
  const pops = useGet<Page<Pop>>(can('pops:read') ? '/pops' + query({ limit: 500 }) : null);
  const [open, setOpen] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function act(c: Campaign, a: 'pause' | 'resume' | 'cancel') {
    if (a === 'cancel' && !window.confirm(t('fw.cancelConfirm', { name: c.name }))) return;
    try { await client.post(`/firmware/campaigns/${c.id}/${a}`); campaigns.reload(); setError(null); } catch (e) { setError(msg(e)); }
  }
  async function remove(i: FirmwareImage) {
    try { await client.del(`/firmware/images/${i.id}`); images.reload(); setError(null); } catch (e) { setError(msg(e)); }
  }

  return (
    <div className="page">
      <h1>{t('fw.title')}</h1>
      {error && <p className="notice notice-bad" role="alert">{error}</p>}
      <Card title={t('fw.images')} tour="fw-images" testid="fw-images">
        {images.error && !images.data && <ErrorView error={images.error} onRetry={images.reload} />}
        {!images.data && !images.error && <Loading />}
        {images.data && (
          <div className="table-wrap">
            <table>
              <thead><tr><th scope="col">{t('fw.name')}</th><th scope="col">{t('fw.version')}</th><th scope="col">{t('fw.fits')}</th><th scope="col">{t('fw.size')}</th><th scope="col">SHA-256</th><th scope="col">{t('fw.uploaded')}</th>{write && <th />}</tr></thead>
              <tbody>
                {images.data.items.map((i) => (
                  <tr key={i.id} data-testid="fw-image-row">
                    <td>{i.name}</td><td>{i.version}</td>
                    <td>{[i.vendor, i.oui, i.product_class].filter(Boolean).join(' · ') || t('fw.anyDevice')}</td>
                    <td>{formatSize(i.size)}</td>
                    <td><code className="muted" title={i.sha256}>{i.sha256.slice(0, 12)}…</code></td>
                    <td>{i18n.dateTime(i.created_at)}</td>
                    {write && <td><DeleteButton onDelete={() => remove(i)} /></td>}
                  </tr>
                ))}
              </tbody>
            </table>
            {images.data.items.length === 0 && <p className="muted">{t('common.empty')}</p>}
          </div>
        )}
        {write && <Upload onDone={images.reload} />}
      </Card>
      <Card title={t('fw.campaigns')} tour="fw-campaigns" testid="fw-campaigns">
        {campaigns.error && !campaigns.data && <ErrorView error={campaigns.error} onRetry={campaigns.reload} />}
        {!campaigns.data && !campaigns.error && <Loading />}
        {campaigns.data?.items.map((c) => {
          const fail = failurePct(c);
          return (
            <div key={c.id} className="card-section" data-testid="fw-campaign">
              <div className="row">
                <strong>{c.name}</strong> <Pill kind={STATUS_KIND[c.status]}>{t(`fw.status.${c.status}` as 'fw.status.running')}</Pill>
                <span className="muted small">{t('fw.rule', { stages: c.stages_pct.join('/'), max: c.max_failure_pct, minutes: Math.round(c.come_back_secs / 60) })}</span>
                {fail !== null && <span className="small">{t('fw.failureNow', { pct: fail })}</span>}
                {write && actions(c.status).map((a) => (
                  <button key={a} className="btn btn-small" onClick={() => act(c, a)}>{t(`fw.action.${a}` as 'fw.action.pause')}</button>
                ))}
                <button className="btn btn-small btn-ghost" onClick={() => setOpen(open === c.id ? null : c.id)}>{open === c.id ? t('fw.hideDevices') : t('fw.showDevices')}</button>
              </div>
              {c.halt_reason && <p className="small">{c.halt_reason}</p>}
              <Progress c={c} />
              {open === c.id && <CampaignDevices id={c.id} />}
            </div>
          );
        })}
        {campaigns.data?.items.length === 0 && <p className="muted">{t('common.empty')}</p>}
        {write && images.data && <NewCampaign images={images.data.items} pops={pops.data?.items ?? []} onDone={campaigns.reload} />}
      </Card>
    </div>
  );
}
