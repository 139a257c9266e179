// The graphs of a device: its series grouped into panels (traffic per interface, CPU, memory, latency, loss,
// optical power, other metrics), a shared range picker (presets, custom, drag-to-zoom; kept in the URL's
// `range`), and the resolution the server chose for each panel.
import { useEffect, useMemo, useRef, useState } from 'react';
import { useI18n, type MessageKey } from '../i18n';
import { query, type ApiError } from '../api/client';
import type { Page } from '../api/types';
import { client, useApp, useGet } from '../state';
import { Card, ErrorView, Loading, Pill } from '../components/ui';
import { Chart } from '../components/Chart';
import { bounds, hasBands, panels, parseRange, PRESETS, rangeParam, type Panel, type Points, type Range, type Series } from '../lib/graph';

/** Points asked per series: about one per pixel of a wide chart. */
export const GRAPH_POINTS = 800;
/** A range ending now is refetched on live events at most this often. */
const REFRESH_MS = 20_000;

function initialRange(): Range {
  return parseRange(new URLSearchParams(window.location.search).get('range')) ?? { preset: '24h' };
}

function toLocalInput(ms: number): string {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

/** The points of a set of series over a range; refetched on live ticks (throttled) while the range ends now. */
function usePoints(ids: number[], range: Range): { data: Map<number, Points>; from: number; to: number; error: ApiError | null; loading: boolean } {
  const { tick } = useApp();
  const key = ids.join(',');
  const [state, setState] = useState<{ data: Map<number, Points>; from: number; to: number; error: ApiError | null; loading: boolean }>(
    () => ({ data: new Map(), ...bounds(range, Date.now()), error: null, loading: true }));
  const last = useRef<{ key: string; range: string; at: number; seq: number }>({ key: '', range: '', at: 0, seq: 0 });
  useEffect(() => {
    const rp = rangeParam(range);
    const same = last.current.key === key && last.current.range === rp;
    // Same series and range: only a preset (ending now) moves, and not more often than REFRESH_MS.
    if (same && (!('preset' in range) || Date.now() - last.current.at < REFRESH_MS)) return;
    // Only the newest request's answer is kept (an older one may arrive later).
    const seq = last.current.seq + 1;
    last.current = { key, range: rp, at: Date.now(), seq };
    const b = bounds(range, Date.now());
    const current = () => last.current.seq === seq;
    setState((s) => ({ ...s, loading: true, ...(same ? {} : { data: new Map(), ...b }) }));
    const q = query({ from: new Date(b.from).toISOString(), to: new Date(b.to).toISOString(), points: GRAPH_POINTS });
    Promise.all(ids.map((id) => client.get<Points>(`/series/${id}/points${q}`).then((r) => [id, r.data] as const))).then(
      (all) => { if (current()) setState({ data: new Map(all), ...b, error: null, loading: false }); },
      (e: ApiError) => { if (current()) setState((s) => ({ ...s, error: e, loading: false })); },
    );
  }, [key, rangeParam(range), tick]);
  return state;
}

const PANEL_TITLE: Record<Panel['kind'], MessageKey> = {
  traffic: 'graph.traffic', cpu: 'graph.cpu', memory: 'graph.memory', latency: 'graph.latency', loss: 'graph.loss',
  optical: 'graph.optical', other: 'graph.other',
};

function GraphPanel({ panel, range, onZoom }: { panel: Panel; range: Range; onZoom(from: number, to: number): void }) {
  const i18n = useI18n();
  const { t } = i18n;
  // `?if=<name>` (a link from the POP's interface list) picks that interface in the traffic panel.
  const [choiceKey, setChoiceKey] = useState(() => {
    const wanted = panel.kind === 'traffic' ? new URLSearchParams(window.location.search).get('if') : null;
    return panel.choices.find((c) => c.key === wanted)?.key ?? panel.choices[0].key;
  });
  const choice = panel.choices.find((c) => c.key === choiceKey) ?? panel.choices[0];
  const ids = useMemo(() => choice.lines.map((l) => l.series.id), [choice]);
  const pts = usePoints(ids, range);
  const first = ids.map((id) => pts.data.get(id)).find((p) => p);
  const resolution = first?.resolution ?? null;
  const bands = resolution !== null && hasBands(resolution);
  const label = (l: string) => (panel.kind === 'traffic' ? t(l === 'in' ? 'graph.in' : 'graph.out') : l);
  const title = t(PANEL_TITLE[panel.kind]);
  return (
    <Card testid={'graph-' + panel.kind} className="graph-card">
      <div className="graph-head">
        <h2 className="card-title">{title}</h2>
        {panel.choices.length > 1 && (
          <label className="inline">
            <span>{panel.kind === 'traffic' ? t('graph.interface') : t('graph.metric')}</span>
            <select value={choice.key} onChange={(e) => setChoiceKey(e.target.value)} data-testid={'graph-choice-' + panel.kind}>
              {panel.choices.map((c) => <option key={c.key} value={c.key}>{c.label}</option>)}
            </select>
          </label>
        )}
        <span className="spacer" />
        {resolution && <Pill kind="muted"><span data-testid="graph-resolution">{t('graph.resolution', { res: t(('graph.res.' + resolution) as MessageKey) })}</span></Pill>}
        {pts.loading && <span className="muted small" role="status">{t('common.loading')}</span>}
      </div>
      {pts.error && <ErrorView error={pts.error} />}
      <Chart lines={choice.lines.map((l) => ({ label: label(l.label), data: pts.data.get(l.series.id) ?? null }))}
        from={pts.from} to={pts.to} unit={panel.unit} locale={i18n.locale} bands={bands} onZoom={onZoom}
        label={t('graph.aria', { title, from: i18n.dateTime(new Date(pts.from).toISOString()), to: i18n.dateTime(new Date(pts.to).toISOString()) })} testid="chart" />
      {first && first.items.length === 0 && <p className="muted small" data-testid="graph-empty">{t('graph.noData')}</p>}
      {bands && <p className="muted small">{t('graph.bandsNote')}</p>}
    </Card>
  );
}

export default function DeviceGraphs({ deviceId }: { deviceId: string }) {
  const i18n = useI18n();
  const { t } = i18n;
  const series = useGet<Page<Series>>('/series' + query({ device_id: deviceId, limit: 500 }));
  const [range, setRangeState] = useState<Range>(initialRange);
  const b = bounds(range, Date.now());
  const [custom, setCustom] = useState<{ from: string; to: string } | null>(null);
  const setRange = (r: Range) => {
    setRangeState(r);
    setCustom(null);
    const u = new URL(window.location.href);
    u.searchParams.set('range', rangeParam(r));
    window.history.replaceState(null, '', u.pathname + u.search);
  };
  const list = useMemo(() => panels(series.data?.items ?? []), [series.data]);
  const applyCustom = () => {
    if (!custom) return;
    const from = Date.parse(custom.from), to = Date.parse(custom.to);
    if (Number.isFinite(from) && Number.isFinite(to) && from < to) setRange({ from, to });
  };
  const customBad = custom !== null && !(Date.parse(custom.from) < Date.parse(custom.to));

  return (
    <section aria-labelledby="graphs-title" data-testid="device-graphs">
      <div className="graph-toolbar" data-tour="range">
        <h2 id="graphs-title" className="section-title">{t('graph.title')}</h2>
        <div className="segmented" role="group" aria-label={t('graph.range')}>
          {PRESETS.map((p) => (
            <button key={p} className={'btn btn-small' + ('preset' in range && range.preset === p ? ' btn-primary' : '')}
              aria-pressed={'preset' in range && range.preset === p} onClick={() => setRange({ preset: p })} data-testid={'range-' + p}>
              {t(('graph.preset.' + p) as MessageKey)}
            </button>
          ))}
          <button className={'btn btn-small' + (!('preset' in range) || custom ? ' btn-primary' : '')} aria-pressed={!('preset' in range)}
            onClick={() => setCustom({ from: toLocalInput(b.from), to: toLocalInput(b.to) })} data-testid="range-custom">{t('graph.custom')}</button>
        </div>
        {!('preset' in range) && (
          <span className="muted small" data-testid="range-shown">{t('graph.shown', { from: i18n.dateTime(new Date(b.from).toISOString()), to: i18n.dateTime(new Date(b.to).toISOString()) })}</span>
        )}
      </div>
      {custom && (
        <div className="form-row custom-range">
          <label>{t('graph.from')}<input type="datetime-local" value={custom.from} onChange={(e) => setCustom({ ...custom, from: e.target.value })} /></label>
          <label>{t('graph.to')}<input type="datetime-local" value={custom.to} onChange={(e) => setCustom({ ...custom, to: e.target.value })} /></label>
          <button className="btn btn-primary" onClick={applyCustom} disabled={customBad}>{t('graph.apply')}</button>
          <button className="btn" onClick={() => setCustom(null)}>{t('common.cancel')}</button>
          {customBad && <span className="field-error">{t('graph.customBad')}</span>}
        </div>
      )}
      <p className="muted small">{t('graph.zoomHint')}</p>
      {series.loading && !series.data && <Loading />}
      {series.error && !series.data && <ErrorView error={series.error} onRetry={series.reload} />}
      {series.data && list.length === 0 && <p className="notice" data-testid="graphs-none">{t('graph.noSeries')}</p>}
      <div className="graphs" data-tour="graphs">
        {list.map((p) => <GraphPanel key={p.kind} panel={p} range={range} onZoom={(from, to) => setRange({ from, to })} />)}
      </div>
    </section>
  );
}
