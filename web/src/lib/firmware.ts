// Firmware images and campaigns (pages/Firmware.tsx): the pure parts, tested in firmware.test.ts.

export interface FirmwareImage {
  id: string; name: string; version: string; vendor: string | null; oui: string | null; product_class: string | null;
  size: number; sha256: string; created_by_user: string | null; created_at: string;
}

export type CampaignState = 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped';
export const CAMPAIGN_STATES: CampaignState[] = ['succeeded', 'failed', 'running', 'pending', 'skipped'];

export interface Campaign {
  id: string; name: string; image_id: string | null; image_sha256: string;
  target: { device_ids?: string[]; group_id?: string; pop_id?: string };
  stages_pct: number[]; max_failure_pct: number; come_back_secs: number;
  status: 'running' | 'paused' | 'halted' | 'cancelled' | 'done'; halt_reason: string | null;
  created_at: string; updated_at: string; finished_at: string | null;
  counts: Record<CampaignState, number>; excluded?: number | null;
}

export interface CampaignDevice {
  position: number; device_id: string; device_key: string | null; state: CampaignState; command_id: string | null;
  started_at: string | null; finished_at: string | null; error: string | null;
}

/** `"5, 25,100"` → `[5, 25, 100]`, or null unless 1-20 increasing whole percentages ending with 100. */
export function parseStages(text: string): number[] | null {
  const parts = text.split(/[\s,;]+/).filter((p) => p !== '');
  if (parts.length === 0 || parts.length > 20) return null;
  const nums = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  if (nums.some((n) => !Number.isInteger(n) || n < 1 || n > 100)) return null;
  for (let i = 1; i < nums.length; i++) if (nums[i] <= nums[i - 1]) return null;
  return nums[nums.length - 1] === 100 ? nums : null;
}

/** Devices of a campaign in all. */
export function total(c: Pick<Campaign, 'counts'>): number {
  return CAMPAIGN_STATES.reduce((s, k) => s + (c.counts[k] ?? 0), 0);
}

/** Share of each state in percent (for the progress bar), rounded to one decimal; empty campaign: all 0. */
export function shares(c: Pick<Campaign, 'counts'>): Record<CampaignState, number> {
  const n = total(c);
  const out = {} as Record<CampaignState, number>;
  for (const k of CAMPAIGN_STATES) out[k] = n === 0 ? 0 : Math.round(((c.counts[k] ?? 0) * 1000) / n) / 10;
  return out;
}

/** Failures among finished devices, percent (what the stop rule compares with max_failure_pct); null: none finished. */
export function failurePct(c: Pick<Campaign, 'counts'>): number | null {
  const finished = (c.counts.succeeded ?? 0) + (c.counts.failed ?? 0);
  return finished === 0 ? null : Math.round(((c.counts.failed ?? 0) * 1000) / finished) / 10;
}

/** Which actions a campaign in `status` offers. */
export function actions(status: Campaign['status']): ('pause' | 'resume' | 'cancel')[] {
  if (status === 'running') return ['pause', 'cancel'];
  if (status === 'paused') return ['resume', 'cancel'];
  return [];
}

/** Bytes for people: `1.5 MiB`. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return (u === 0 ? String(v) : v.toFixed(1)) + ' ' + units[u];
}

/** SHA-256 of a file, lowercase hex (sent with the upload: a damaged upload is refused by the server). */
export async function sha256Hex(data: ArrayBuffer): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', data);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
