// The dashboard's bandwidth card: the provider's total traffic in and out (sum over every interface) over the
// last 24 hours, and the current traffic of each POP. From `GET /api/v1/metrics/aggregate` (5-minute rollups
// and coarser), refetched on live events at most every 30 s.
import { useEffect, useRef, useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { query } from '../api/client';
import type { Pop } from '../api/types';
import { client, useApp } from '../state';
import { Card, Pill } from '../components/ui';
import { Chart } from '../components/Chart';
import { formatBits } from '../lib/format';
import { aggregatePoints, type Aggregate, type Points } from '../lib/graph';

const RANGE_MS = 86_400_000;
const REFRESH_MS = 30_000;
/** POPs listed with their current traffic (the busiest first). */
const MAX_POPS = 12;

interface State { from: number; to: number; inP: Points | null; outP: Points | null; pops: { pop: Pop; in: number; out: number }[] }

function lastValue(a: Aggregate): number {
  return a.items.length ? a.items[a.items.length - 1].value : 0;
}

export default function Bandwidth({ pops }: { pops: Pop[] }) {
  const i18n = useI18n();
  const { t } = i18n;
  const { tick } = useApp();
  const [st, setSt] = useState<State | null>(null);
  const [failed, setFailed] = useState(false);
  const last = useRef({ at: 0, pops: '' });
  const popKey = pops.map((p) => p.id).join(',');
  useEffect(() => {
    if (Date.now() - last.current.at < REFRESH_MS && last.current.pops === popKey) return;
    last.current = { at: Date.now(), pops: popKey };
    const to = Date.now(), from = to - RANGE_MS;
    const agg = (metric: string, scope: string, id?: string, points = 300) => client.get<Aggregate>('/metrics/aggregate' + query({
      metric, scope, id, points, from: new Date(scope === 'pop' ? to - 3_600_000 : from).toISOString(), to: new Date(to).toISOString(),
    })).then((r) => r.data);
    const popList = pops.slice(0, 50);
    Promise.all([
      agg('if.in_bps', 'provider'), agg('if.out_bps', 'provider'),
      Promise.all(popList.map((p) => Promise.all([agg('if.in_bps', 'pop', p.id, 15), agg('if.out_bps', 'pop', p.id, 15)]))),
    ]).then(([inA, outA, perPop]) => {
      const rows = popList.map((pop, i) => ({ pop, in: lastValue(perPop[i][0]), out: lastValue(perPop[i][1]) }))
        .sort((a, b) => b.in + b.out - (a.in + a.out)).slice(0, MAX_POPS);
      setSt({ from, to, inP: aggregatePoints(inA), outP: aggregatePoints(outA), pops: rows });
      setFailed(false);
    }, () => setFailed(true));
  }, [tick, popKey, pops]);

  return (
    <Card title={t('dash.bandwidth')} testid="dash-bandwidth" tour="bandwidth">
      {failed && !st && <p className="muted">{t('dash.bandwidthFailed')}</p>}
      {st && (
        <>
          <div className="row">
            {st.inP && <Pill kind="muted">{t('graph.resolution', { res: t(('graph.res.' + st.inP.resolution) as MessageKey) })}</Pill>}
          </div>
          <Chart lines={[{ label: t('graph.in'), data: st.inP }, { label: t('graph.out'), data: st.outP }]} from={st.from} to={st.to}
            unit="bits" locale={i18n.locale} bands={false} height={180} label={t('dash.bandwidth')} testid="bandwidth-chart" />
          {st.pops.length > 0 && (
            <table className="compact">
              <caption className="sr-only">{t('dash.bandwidthPops')}</caption>
              <thead><tr><th scope="col">{t('devices.pop')}</th><th scope="col">{t('graph.in')}</th><th scope="col">{t('graph.out')}</th></tr></thead>
              <tbody>
                {st.pops.map((r) => (
                  <tr key={r.pop.id} data-testid="pop-bandwidth"><td>{r.pop.name}</td><td>{formatBits(r.in, i18n.locale)}</td><td>{formatBits(r.out, i18n.locale)}</td></tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </Card>
  );
}
