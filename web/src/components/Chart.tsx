// A time-series chart drawn as SVG by hand (no charting library: the bundle budget): one average line per
// series, a min–max band and a dashed p95 line when the resolution has them, a hover readout, and drag-to-zoom.
import { useEffect, useMemo, useRef, useState, type PointerEvent } from 'react';
import { formatDateTime, formatTick, formatValue, type Unit } from '../lib/format';
import { extent, niceTicks, zoomRange, type Points } from '../lib/graph';

/** Line colours, readable on the light and the dark theme. */
export const PALETTE = ['#2f80ed', '#27ae60', '#eb5757', '#f2994a', '#9b51e0', '#00a3a3', '#c2185b', '#7f8c8d'];

export interface ChartLine { label: string; data: Points | null }

const PAD = { left: 78, right: 12, top: 10, bottom: 26 };

export function Chart({ lines, from, to, unit, locale, bands, height = 220, onZoom, label, testid }: {
  lines: ChartLine[]; from: number; to: number; unit: Unit; locale: string; bands: boolean; height?: number;
  onZoom?(from: number, to: number): void; label: string; testid?: string;
}) {
  const wrap = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(800);
  const [hover, setHover] = useState<number | null>(null);
  const [drag, setDrag] = useState<{ x0: number; x1: number } | null>(null);

  useEffect(() => {
    const el = wrap.current;
    if (!el) return;
    const measure = () => setWidth(Math.max(240, Math.floor(el.clientWidth)));
    measure();
    if (typeof ResizeObserver === 'undefined') return;
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const sets = useMemo(() => lines.map((l) => ({ label: l.label, items: l.data?.items ?? [] })), [lines]);
  const geometry = useMemo(() => {
    let [lo, hi] = extent(sets, bands);
    if (lo >= 0 && unit !== 'dbm') lo = 0;
    const yt = niceTicks(lo, hi, Math.max(2, Math.round(plotH / 45)));
    const y0 = yt[0] ?? lo, y1 = yt[yt.length - 1] ?? hi;
    const x = (ms: number) => PAD.left + ((ms - from) / (to - from)) * plotW;
    const y = (v: number) => PAD.top + plotH - ((v - y0) / (y1 - y0 || 1)) * plotH;
    return { yt, x, y };
  }, [sets, bands, unit, from, to, plotW, plotH]);
  const { yt, x, y } = geometry;

  const paths = useMemo(() => sets.map((s) => {
    const pts = s.items.map((p) => ({ t: Date.parse(p.ts), p }));
    // Gaps: a step more than 2.5 × the median step breaks the line.
    const steps = pts.slice(1).map((q, i) => q.t - pts[i].t).sort((a, b) => a - b);
    const gap = steps.length ? steps[Math.floor(steps.length / 2)] * 2.5 : Infinity;
    let avg = '', p95 = '', band = '';
    let segment: typeof pts = [];
    const flush = () => {
      if (!segment.length) return;
      avg += segment.map((q, i) => `${i ? 'L' : 'M'}${x(q.t).toFixed(1)},${y(q.p.avg).toFixed(1)}`).join('');
      if (bands) {
        p95 += segment.map((q, i) => `${i ? 'L' : 'M'}${x(q.t).toFixed(1)},${y(q.p.p95).toFixed(1)}`).join('');
        const top = segment.map((q) => `${x(q.t).toFixed(1)},${y(q.p.max).toFixed(1)}`);
        const bottom = segment.map((q) => `${x(q.t).toFixed(1)},${y(q.p.min).toFixed(1)}`).reverse();
        band += `M${top.join('L')}L${bottom.join('L')}Z`;
      }
      if (segment.length === 1) avg += `m-1,0h2`; // a lone point stays visible
      segment = [];
    };
    pts.forEach((q, i) => {
      if (i > 0 && q.t - pts[i - 1].t > gap) flush();
      segment.push(q);
    });
    flush();
    return { avg, p95, band, pts };
  }), [sets, bands, x, y]);

  const xt = useMemo(() => {
    const n = Math.max(2, Math.floor(plotW / 110));
    return Array.from({ length: n + 1 }, (_, i) => from + ((to - from) * i) / n);
  }, [from, to, plotW]);

  const local = (e: PointerEvent<SVGSVGElement>) => {
    const r = e.currentTarget.getBoundingClientRect();
    return Math.max(0, Math.min(plotW, e.clientX - r.left - PAD.left));
  };
  const onDown = (e: PointerEvent<SVGSVGElement>) => {
    if (!onZoom || e.button !== 0) return;
    e.currentTarget.setPointerCapture?.(e.pointerId);
    const px = local(e);
    setDrag({ x0: px, x1: px });
  };
  const onMove = (e: PointerEvent<SVGSVGElement>) => {
    const px = local(e);
    setHover(from + ((to - from) * px) / plotW);
    if (drag) setDrag({ ...drag, x1: px });
  };
  const onUp = () => {
    if (drag && onZoom) {
      const z = zoomRange(drag.x0, drag.x1, plotW, from, to);
      if (z) onZoom(z.from, z.to);
    }
    setDrag(null);
  };

  // Readout: the value of each line nearest to the hovered time (else the newest).
  const readout = paths.map((p, i) => {
    if (!p.pts.length) return { label: sets[i].label, value: null as null | number, t: null as null | number };
    let best = p.pts[p.pts.length - 1];
    if (hover !== null) for (const q of p.pts) if (Math.abs(q.t - hover) < Math.abs(best.t - hover)) best = q;
    return { label: sets[i].label, value: best.p.avg, t: best.t };
  });
  const total = paths.reduce((n, p) => n + p.pts.length, 0);
  const readTime = readout.find((r) => r.t !== null)?.t ?? null;

  return (
    <div className="chart" ref={wrap} data-testid={testid} data-points={total}>
      <svg width={width} height={height} role="img" aria-label={label} onPointerDown={onDown} onPointerMove={onMove}
        onPointerUp={onUp} onPointerLeave={() => { setHover(null); }} style={{ touchAction: onZoom ? 'pan-y' : undefined }}>
        {yt.map((v) => (
          <g key={'y' + v}>
            <line x1={PAD.left} x2={width - PAD.right} y1={y(v)} y2={y(v)} className="grid-line" />
            <text x={PAD.left - 6} y={y(v) + 4} textAnchor="end" className="axis">{formatValue(unit, v, locale)}</text>
          </g>
        ))}
        {xt.map((ms, i) => (
          <text key={'x' + i} x={x(ms)} y={height - 8} textAnchor={i === 0 ? 'start' : i === xt.length - 1 ? 'end' : 'middle'} className="axis">
            {formatTick(ms, to - from, locale)}
          </text>
        ))}
        {paths.map((p, i) => bands && p.band && <path key={'b' + i} d={p.band} fill={PALETTE[i % PALETTE.length]} opacity={0.15} stroke="none" />)}
        {paths.map((p, i) => bands && p.p95 && <path key={'p' + i} d={p.p95} fill="none" stroke={PALETTE[i % PALETTE.length]} strokeWidth={1} strokeDasharray="4 3" opacity={0.8} />)}
        {paths.map((p, i) => <path key={'a' + i} d={p.avg} fill="none" stroke={PALETTE[i % PALETTE.length]} strokeWidth={1.8} strokeLinejoin="round" />)}
        {hover !== null && <line x1={x(hover)} x2={x(hover)} y1={PAD.top} y2={PAD.top + plotH} className="cursor-line" />}
        {drag && <rect x={PAD.left + Math.min(drag.x0, drag.x1)} y={PAD.top} width={Math.abs(drag.x1 - drag.x0)} height={plotH} className="zoom-rect" />}
      </svg>
      <div className="legend">
        {readout.map((r, i) => (
          <span key={i} className="legend-item">
            <span className="swatch" style={{ background: PALETTE[i % PALETTE.length] }} aria-hidden="true" />
            {r.label} <strong>{r.value === null ? '—' : formatValue(unit, r.value, locale)}</strong>
          </span>
        ))}
        {readTime !== null && <span className="muted small">{formatDateTime(readTime, locale)}</span>}
      </div>
    </div>
  );
}
