import { useI18n } from '../i18n';
import type { Device, Pop } from '../api/types';
import { Link, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';
import DeviceGraphs from './DeviceGraphs';

export default function DeviceDetail({ id }: { id: string }) {
  const i18n = useI18n();
  const { t } = i18n;
  const { can } = useApp();
  const dev = useGet<Device>('/devices/' + id);
  const d = dev.data;
  const pop = useGet<Pop>(d && can('pops:read') ? '/pops/' + d.pop_id : null);
  const none = t('common.none');
  return (
    <div className="page">
      <Link to="/devices" className="back">← {t('common.back')}</Link>
      {dev.loading && !d && <Loading />}
      {dev.error && !d && <ErrorView error={dev.error} onRetry={dev.reload} />}
      {d && (
        <>
          <h1 data-testid="device-title">{d.name ?? d.device_key} {d.online ? <Pill kind="ok">{t('devices.online')}</Pill> : <Pill kind="bad">{t('devices.offline')}</Pill>}</h1>
          <Card>
            <dl className="kv">
              <dt>{t('devices.key')}</dt><dd><code>{d.device_key}</code></dd>
              <dt>{t('devices.serial')}</dt><dd><code>{d.serial_number ?? none}</code></dd>
              <dt>{t('devices.vendor')}</dt><dd>{d.vendor ?? none}</dd>
              <dt>{t('devices.model')}</dt><dd>{d.model ?? none}</dd>
              <dt>{t('devices.firmware')}</dt><dd>{d.firmware ?? none}</dd>
              <dt>{t('devices.oui')}</dt><dd>{d.oui ?? none}</dd>
              <dt>{t('devices.productClass')}</dt><dd>{d.product_class ?? none}</dd>
              <dt>{t('devices.mgmtIp')}</dt><dd><code>{d.mgmt_ip ?? none}</code></dd>
              <dt>{t('devices.pop')}</dt><dd>{pop.data?.name ?? d.pop_id}</dd>
              <dt>{t('devices.customer')}</dt><dd>{d.customer_id ?? none}</dd>
              <dt>{t('devices.tags')}</dt><dd>{d.tags.length ? d.tags.map((g) => <Pill key={g} kind="muted">{g}</Pill>) : none}</dd>
              <dt>{t('devices.firstSeen')}</dt><dd>{i18n.dateTime(d.first_seen)}</dd>
              <dt>{t('devices.lastSeen')}</dt><dd>{i18n.dateTime(d.last_seen)} ({i18n.relative(d.last_seen)})</dd>
            </dl>
          </Card>
          {can('tr069:read') && (d.device_key.startsWith('cwmp:') || d.oui) && (
            <p><Link to={`/devices/${d.id}/tr069`} className="btn" data-testid="open-tr069">{t('devices.tr069')}</Link></p>
          )}
          {can('metrics:read') && <DeviceGraphs deviceId={d.id} />}
        </>
      )}
    </div>
  );
}
