import { describe, expect, it } from 'vitest';
import { actions, failurePct, formatSize, parseStages, sha256Hex, shares, total } from './firmware';

const counts = (succeeded: number, failed: number, running: number, pending: number, skipped = 0) =>
  ({ counts: { succeeded, failed, running, pending, skipped } });

describe('firmware campaigns', () => {
  it('parses stages as the API accepts them', () => {
    expect(parseStages('5, 25,100')).toEqual([5, 25, 100]);
    expect(parseStages('100')).toEqual([100]);
    expect(parseStages('25 5 100')).toBeNull();
    expect(parseStages('5,25,90')).toBeNull();
    expect(parseStages('0,100')).toBeNull();
    expect(parseStages('5,5,100')).toBeNull();
    expect(parseStages('1.5,100')).toBeNull();
    expect(parseStages('')).toBeNull();
  });

  it('sums progress and the failure rate the stop rule uses', () => {
    const c = counts(6, 2, 1, 1);
    expect(total(c)).toBe(10);
    expect(shares(c)).toEqual({ succeeded: 60, failed: 20, running: 10, pending: 10, skipped: 0 });
    expect(failurePct(c)).toBe(25);
    expect(failurePct(counts(0, 0, 2, 8))).toBeNull();
    expect(shares(counts(0, 0, 0, 0)).succeeded).toBe(0);
  });

  it('offers only the transitions the server allows', () => {
    expect(actions('running')).toEqual(['pause', 'cancel']);
    expect(actions('paused')).toEqual(['resume', 'cancel']);
    expect(actions('halted')).toEqual([]);
    expect(actions('done')).toEqual([]);
  });

  it('formats sizes and hashes files', async () => {
    expect(formatSize(512)).toBe('512 B');
    expect(formatSize(1536)).toBe('1.5 KiB');
    expect(formatSize(31_457_280)).toBe('30.0 MiB');
    const abc = new TextEncoder().encode('abc');
    expect(await sha256Hex(abc.buffer)).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});
