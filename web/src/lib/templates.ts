// Provisioning templates of the ACS as the agent configuration carries them (`acs.templates`, the shape of a
// template file: agent/src/acs/templates.rs): form rows ⇄ the document, the same checks the agent makes (so a
// template the agent would refuse is caught before it is saved), and which known devices a template matches.
import type { Device } from '../api/types';

/** One parameter to set, as the form edits it. */
export interface SetRow { name: string; value: string; type: string }

/** One template as the form edits it: condition lists as comma-separated text. */
export interface TemplateRow {
  name: string; version: string; oui: string; product_class: string; software_version: string; tags: string; set: SetRow[];
}

export type TemplateError =
  | 'required' | 'tooLong' | 'duplicate' | 'version' | 'nothingToSet' | 'paramPath' | 'paramObject' | 'xsdType'
  | 'placeholder' | 'spread';

/** Errors of one template: its own fields, and per parameter row. */
export interface TemplateErrors {
  name?: TemplateError; version?: TemplateError; set?: TemplateError;
  params: Record<number, Partial<Record<'name' | 'type' | 'value', TemplateError>>>;
}

const list = (v: unknown): string => (Array.isArray(v) ? v.map(String).join(', ') : '');
const split = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);

/** The templates of a document's `acs` section as form rows. */
export function templateRows(config: Record<string, unknown>): TemplateRow[] {
  const acs = (config.acs ?? {}) as Record<string, unknown>;
  const templates = Array.isArray(acs.templates) ? acs.templates : [];
  return templates.map((t) => {
    const o = (t ?? {}) as Record<string, unknown>;
    const when = (o.when ?? {}) as Record<string, unknown>;
    const set = Array.isArray(o.set) ? o.set : [];
    return {
      name: typeof o.name === 'string' ? o.name : '',
      version: typeof o.version === 'number' ? String(o.version) : '',
      oui: list(when.oui), product_class: list(when.product_class), software_version: list(when.software_version), tags: list(when.tags),
      set: set.map((p) => {
        const q = (p ?? {}) as Record<string, unknown>;
        return { name: String(q.name ?? ''), value: String(q.value ?? ''), type: typeof q.type === 'string' ? q.type : 'xsd:string' };
      }),
    };
  });
}

/** A blank template with one parameter row. */
export function emptyTemplate(): TemplateRow {
  return { name: '', version: '1', oui: '', product_class: '', software_version: '', tags: '', set: [emptySet()] };
}

export function emptySet(): SetRow {
  return { name: '', value: '', type: 'xsd:string' };
}

/** The placeholder error of a value, as the agent checks it (`check_placeholders`). */
export function placeholderError(value: string): TemplateError | null {
  for (const m of value.matchAll(/\{([^}]*)\}/g)) {
    const parts = m[1].split(':');
    const [head] = parts;
    if (parts.length === 1 && ['serial', 'oui', 'product_class'].includes(head)) continue;
    if (head === 'tag' && parts.length === 2 && parts[1] !== '') continue;
    if (head === 'spread' && parts.length === 3) {
      if (!/^\d+$/.test(parts[1]) || !/^\d+$/.test(parts[2])) return 'spread';
      continue;
    }
    // Not a placeholder (a brace in a JSON value, say) unless it starts like one.
    if (/^[a-z]/.test(m[1])) return 'placeholder';
  }
  return null;
}

/**
 * The document with `acs.templates` replaced by the rows (other `acs` keys kept); errors per template when one is
 * wrong (the document is then null).
 */
export function withTemplates(config: Record<string, unknown>, rows: TemplateRow[]): {
  config: Record<string, unknown> | null; errors: Record<number, TemplateErrors>;
} {
  const errors: Record<number, TemplateErrors> = {};
  const names = new Set<string>();
  const templates = rows.map((r, i) => {
    const e: TemplateErrors = { params: {} };
    const name = r.name.trim();
    if (!name) e.name = 'required';
    else if (name.length > 100) e.name = 'tooLong';
    else if (names.has(name)) e.name = 'duplicate';
    names.add(name);
    const version = r.version.trim();
    if (!/^\d+$/.test(version)) e.version = 'version';
    if (r.set.length === 0) e.set = 'nothingToSet';
    r.set.forEach((p, j) => {
      const pe: Partial<Record<'name' | 'type' | 'value', TemplateError>> = {};
      const path = p.name.trim();
      if (!path || path.length > 256 || /\s/.test(path)) pe.name = 'paramPath';
      else if (path.endsWith('.')) pe.name = 'paramObject';
      if (!p.type.startsWith('xsd:')) pe.type = 'xsdType';
      const ph = placeholderError(p.value);
      if (ph) pe.value = ph;
      if (Object.keys(pe).length) e.params[j] = pe;
    });
    if (e.name || e.version || e.set || Object.keys(e.params).length) errors[i] = e;
    const when: Record<string, string[]> = {};
    for (const k of ['oui', 'product_class', 'software_version', 'tags'] as const) {
      const v = split(r[k]);
      if (v.length) when[k] = v;
    }
    return {
      name, version: Number(version), when,
      set: r.set.map((p) => ({ name: p.name.trim(), value: p.value, type: p.type })),
    };
  });
  if (Object.keys(errors).length) return { config: null, errors };
  const acs = { ...((config.acs ?? {}) as Record<string, unknown>) };
  if (templates.length) acs.templates = templates;
  else delete acs.templates;
  const out = { ...config };
  if (Object.keys(acs).length) out.acs = acs;
  else delete out.acs;
  return { config: out, errors };
}

/** A trailing `*` matches any suffix, as in the agent. */
function glob(pattern: string, s: string): boolean {
  return pattern.endsWith('*') ? s.startsWith(pattern.slice(0, -1)) : pattern === s;
}

/** Whether a device matches every condition list given (tags: all of them, by name or `name=value`). */
export function matches(r: TemplateRow, d: Pick<Device, 'oui' | 'product_class' | 'firmware' | 'tags'>): boolean {
  const any = (patterns: string[], v: string | null) => patterns.length === 0 || patterns.some((p) => glob(p, v ?? ''));
  const tags = d.tags ?? [];
  return any(split(r.oui), d.oui) && any(split(r.product_class), d.product_class)
    && any(split(r.software_version), d.firmware)
    && split(r.tags).every((t) => tags.some((have) => have === t || have.split('=')[0] === t));
}
