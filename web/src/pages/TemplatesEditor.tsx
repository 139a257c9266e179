// The ACS provisioning templates of a POP's agent configuration (`acs.templates`): one card per template with its
// conditions and the parameters it sets, errors beside each field (the agent's own checks), and a preview of which
// of the POP's known devices each template matches. The parent page saves the document as a new version.
import { useI18n, type MessageKey } from '../i18n';
import type { Device, Page } from '../api/types';
import { Field, invalid } from '../components/forms';
import { emptySet, emptyTemplate, matches, type TemplateErrors, type TemplateRow } from '../lib/templates';

export default function TemplatesEditor({ rows, setRows, errors, writer, devices }: {
  rows: TemplateRow[]; setRows: (rows: TemplateRow[]) => void; errors: Record<number, TemplateErrors> | null;
  writer: boolean; devices: Page<Device> | null;
}) {
  const { t } = useI18n();
  const msg = (e: string | undefined) => (e ? t(('agentcfg.tplErr.' + e) as MessageKey) : null);
  const set = (i: number, patch: Partial<TemplateRow>) => setRows(rows.map((r, j) => (j === i ? { ...r, ...patch } : r)));
  const text = (i: number, k: 'name' | 'version' | 'oui' | 'product_class' | 'software_version' | 'tags', label: MessageKey, err?: string | null, hint?: string) => (
    <Field id={`t${i}-${k}`} label={t(label)} error={err ?? null}>
      <input id={`t${i}-${k}`} value={rows[i][k]} readOnly={!writer} placeholder={hint} onChange={(e) => set(i, { [k]: e.target.value })} {...invalid(`t${i}-${k}`, err ?? null)} />
    </Field>
  );
  return (
    <div data-testid="agentcfg-templates">
      {rows.map((r, i) => {
        const e = errors?.[i];
        const known = devices?.items ?? [];
        const matched = known.filter((d) => matches(r, d));
        return (
          <fieldset className="template" key={i} data-testid="agentcfg-template">
            <legend>{r.name || t('agentcfg.tpl.unnamed')}</legend>
            <div className="monitor-row">
              {text(i, 'name', 'agentcfg.name', msg(e?.name))}
              {text(i, 'version', 'agentcfg.tpl.version', msg(e?.version))}
            </div>
            <div className="monitor-row">
              {text(i, 'oui', 'agentcfg.tpl.oui', null, '00259E')}
              {text(i, 'product_class', 'agentcfg.tpl.productClass', null, 'EG8145V5')}
              {text(i, 'software_version', 'agentcfg.tpl.software', null, 'V5R020*')}
              {text(i, 'tags', 'agentcfg.tpl.tags', null, 'fiber')}
            </div>
            <p className="muted small">{t('agentcfg.tpl.whenNote')}</p>
            {r.set.map((p, j) => {
              const pe = e?.params[j];
              const upd = (patch: Partial<typeof p>) => set(i, { set: r.set.map((q, k) => (k === j ? { ...q, ...patch } : q)) });
              return (
                <div className="monitor-row" key={j} data-testid="agentcfg-param">
                  <Field id={`t${i}p${j}-name`} label={t('agentcfg.tpl.param')} error={msg(pe?.name)}>
                    <input id={`t${i}p${j}-name`} value={p.name} readOnly={!writer} placeholder="InternetGatewayDevice.ManagementServer.PeriodicInformInterval" onChange={(ev) => upd({ name: ev.target.value })} {...invalid(`t${i}p${j}-name`, msg(pe?.name))} />
                  </Field>
                  <Field id={`t${i}p${j}-value`} label={t('agentcfg.tpl.value')} error={msg(pe?.value)}>
                    <input id={`t${i}p${j}-value`} value={p.value} readOnly={!writer} placeholder="{spread:3600:600}" onChange={(ev) => upd({ value: ev.target.value })} {...invalid(`t${i}p${j}-value`, msg(pe?.value))} />
                  </Field>
                  <Field id={`t${i}p${j}-type`} label={t('agentcfg.tpl.type')} error={msg(pe?.type)}>
                    <input id={`t${i}p${j}-type`} value={p.type} readOnly={!writer} list="xsd-types" onChange={(ev) => upd({ type: ev.target.value })} {...invalid(`t${i}p${j}-type`, msg(pe?.type))} />
                  </Field>
                  {writer && <button className="btn btn-small btn-danger" onClick={() => set(i, { set: r.set.filter((_, k) => k !== j) })}>{t('common.delete')}</button>}
                </div>
              );
            })}
            {e?.set && <p className="field-error" role="alert">{msg(e.set)}</p>}
            <p className="muted small">{t('agentcfg.tpl.valueNote')}</p>
            <div className="row">
              {writer && <button className="btn btn-small" onClick={() => set(i, { set: [...r.set, emptySet()] })} data-testid="agentcfg-add-param">{t('agentcfg.tpl.addParam')}</button>}
              {writer && <button className="btn btn-small btn-danger" onClick={() => setRows(rows.filter((_, k) => k !== i))}>{t('agentcfg.tpl.remove')}</button>}
            </div>
            {devices && (
              <p className="small" data-testid="agentcfg-template-preview">
                {t('agentcfg.tpl.matches', { n: matched.length, total: known.length })}
                {matched.length > 0 && <span className="muted"> · {matched.slice(0, 5).map((d) => d.name ?? d.serial_number ?? d.device_key).join(', ')}{matched.length > 5 ? '…' : ''}</span>}
              </p>
            )}
          </fieldset>
        );
      })}
      {rows.length === 0 && <p className="muted">{t('agentcfg.tpl.none')}</p>}
      {writer && <button className="btn btn-small" onClick={() => setRows([...rows, emptyTemplate()])} data-testid="agentcfg-add-template">{t('agentcfg.tpl.add')}</button>}
      <datalist id="xsd-types">
        {['xsd:string', 'xsd:unsignedInt', 'xsd:int', 'xsd:boolean', 'xsd:dateTime', 'xsd:base64'].map((x) => <option key={x} value={x} />)}
      </datalist>
      <p className="muted small">{t('agentcfg.tpl.note')}</p>
    </div>
  );
}
