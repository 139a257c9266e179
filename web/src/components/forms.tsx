// Form helpers shared by the editors: a labelled field with its inline error, the API's validation errors
// mapped to fields, and a delete button that asks for a second click.
import { useState, type ReactNode } from 'react';
import { useI18n } from '../i18n';
import { ApiError, fieldErrors } from '../api/client';

/** A label around an input, with the field's error under it (announced, tied by aria-describedby). */
export function Field({ label, error, children, id, wide }: { label: string; error?: string | null; children: ReactNode; id: string; wide?: boolean }) {
  return (
    <label htmlFor={id} style={wide ? { gridColumn: '1 / -1' } : undefined}>
      {label}
      {children}
      {error && <span className="field-error" id={id + '-err'} role="alert" data-testid={'err-' + id}>{error}</span>}
    </label>
  );
}

/** Props that mark an input invalid and point to its error text. */
export function invalid(id: string, error: string | null | undefined) {
  return error ? { 'aria-invalid': true as const, 'aria-describedby': id + '-err' } : {};
}

/** An API failure split into errors of named fields and a general message. */
export function apiFieldErrors(e: unknown, known: string[]): { fields: Record<string, string>; general: string | null } {
  if (!(e instanceof ApiError)) return { fields: {}, general: String(e) };
  if (e.status === 400 || e.status === 422) {
    const f = fieldErrors(e.message);
    const hits = f.fields.filter((x) => known.includes(x));
    if (hits.length) return { fields: Object.fromEntries(hits.map((x) => [x, f.text])), general: null };
  }
  return { fields: {}, general: e.message };
}

/** A delete button: the first click asks, the second deletes. */
export function DeleteButton({ onDelete, label, testid }: { onDelete(): Promise<void> | void; label?: string; testid?: string }) {
  const { t } = useI18n();
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!asking) return <button className="btn btn-small btn-danger" onClick={() => setAsking(true)} data-testid={testid}>{label ?? t('common.delete')}</button>;
  return (
    <span className="row">
      <button className="btn btn-small btn-danger" disabled={busy} data-testid={testid ? testid + '-confirm' : undefined}
        onClick={async () => { setBusy(true); try { await onDelete(); } finally { setBusy(false); setAsking(false); } }}>{t('common.confirmDelete')}</button>
      <button className="btn btn-small" onClick={() => setAsking(false)}>{t('common.cancel')}</button>
    </span>
  );
}

/** `datetime-local` value of an epoch time, in the browser's time zone. */
export function localInput(ms: number): string {
  return new Date(ms - new Date(ms).getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}
