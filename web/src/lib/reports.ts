// Reports: the kinds the console offers, the permission each needs, and the query string of a download.
import { query } from '../api/client';

/** The kinds of report and the permission each needs (the server checks it too). */
export const REPORT_KINDS = [
  { kind: 'inventory', permission: 'devices:read' },
  { kind: 'alerts', permission: 'alerts:read' },
  { kind: 'traffic', permission: 'metrics:read' },
  { kind: 'availability', permission: 'metrics:read' },
] as const;
export type ReportKind = (typeof REPORT_KINDS)[number]['kind'];

/** The query string of a report request: a local day range becomes [from 00:00, the day after `to` 00:00). */
export function reportQuery(r: { format: string; lang: string; pop: string; customer: string; by: string; from: string; to: string; kind: string }): string {
  const start = new Date(r.from + 'T00:00:00');
  const end = new Date(r.to + 'T00:00:00');
  end.setDate(end.getDate() + 1);
  return query({
    format: r.format,
    lang: r.lang,
    pop_id: r.pop || undefined,
    customer_id: r.customer || undefined,
    by: r.kind === 'traffic' ? r.by : undefined,
    from: r.kind === 'inventory' ? undefined : start.toISOString(),
    to: r.kind === 'inventory' ? undefined : end.toISOString(),
  });
}

