import { describe, expect, it } from 'vitest';
import { emptyTemplate, matches, placeholderError, templateRows, withTemplates, type TemplateRow } from './templates';

const doc = {
  monitors: { ping: [] },
  acs: {
    listen: '0.0.0.0:7547',
    templates: [{
      name: 'inform-interval', version: 2,
      when: { oui: ['00259E'], software_version: ['V5R020*'] },
      set: [{ name: 'InternetGatewayDevice.ManagementServer.PeriodicInformInterval', value: '{spread:3600:600}', type: 'xsd:unsignedInt' }],
    }],
  },
};

const row = (patch: Partial<TemplateRow> = {}): TemplateRow => ({
  ...emptyTemplate(), name: 't', set: [{ name: 'A.B', value: '1', type: 'xsd:string' }], ...patch,
});

describe('provisioning templates', () => {
  it('round-trips a document through the form, keeping the other acs keys', () => {
    const rows = templateRows(doc);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ name: 'inform-interval', version: '2', oui: '00259E', software_version: 'V5R020*', product_class: '' });
    const out = withTemplates(doc, rows);
    expect(out.errors).toEqual({});
    expect(out.config).toEqual(doc);
  });

  it('removing every template leaves no empty list behind', () => {
    const out = withTemplates(doc, []);
    expect(out.config).toEqual({ monitors: { ping: [] }, acs: { listen: '0.0.0.0:7547' } });
    expect(withTemplates({}, []).config).toEqual({});
  });

  it('refuses what the agent refuses, per field', () => {
    const out = withTemplates({}, [
      row({ name: '' }),
      row({ name: 'dup' }),
      row({ name: 'dup', version: '-1' }),
      row({ name: 'x', set: [] }),
      row({ name: 'y', set: [{ name: 'A.B.', value: '1', type: 'int' }, { name: 'A B', value: '{serial_no}', type: 'xsd:string' }] }),
    ]);
    expect(out.config).toBeNull();
    expect(out.errors[0].name).toBe('required');
    expect(out.errors[1]).toBeUndefined();
    expect(out.errors[2]).toMatchObject({ name: 'duplicate', version: 'version' });
    expect(out.errors[3].set).toBe('nothingToSet');
    expect(out.errors[4].params).toEqual({ 0: { name: 'paramObject', type: 'xsdType' }, 1: { name: 'paramPath', value: 'placeholder' } });
  });

  it('knows the placeholders of the agent', () => {
    for (const ok of ['{serial}', '{oui}-{product_class}', '{tag:pppoe_user}', '{spread:3600:600}', '{"k": 1}', 'plain']) {
      expect(placeholderError(ok), ok).toBeNull();
    }
    expect(placeholderError('{spread:ten:5}')).toBe('spread');
    expect(placeholderError('{tag:}')).toBe('placeholder');
    expect(placeholderError('{serialnumber}')).toBe('placeholder');
  });

  it('previews which devices a template matches', () => {
    const t = row({ oui: '00259E', software_version: 'V5R020*', tags: 'fiber' });
    const huawei = { oui: '00259E', product_class: 'EG8145V5', firmware: 'V5R020C00S280', tags: ['fiber', 'pppoe_user=ana'] };
    expect(matches(t, huawei)).toBe(true);
    expect(matches(t, { ...huawei, firmware: 'V3R017' })).toBe(false);
    expect(matches(t, { ...huawei, tags: [] })).toBe(false);
    expect(matches(row({ tags: 'pppoe_user' }), huawei)).toBe(true);
    expect(matches(row(), { oui: null, product_class: null, firmware: null, tags: [] })).toBe(true);
  });
});
