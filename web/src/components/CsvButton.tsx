// "Export CSV" of the rows on screen, in the user's language (separator, numbers, dates as shown).
import { useI18n } from '../i18n';
import { downloadCsv, separatorFor, toCsv, type Cell } from '../lib/csv';

export function CsvButton({ name, header, rows, testid }: { name: string; header: string[]; rows: () => Cell[][]; testid?: string }) {
  const i18n = useI18n();
  const onClick = () => {
    const stamp = new Date().toISOString().slice(0, 16).replace(/[:T]/g, '-');
    downloadCsv(`octoisp-${name}-${stamp}.csv`, toCsv(header, rows(), separatorFor(i18n.locale)));
  };
  return <button className="btn btn-small" onClick={onClick} data-testid={testid ?? 'csv-export'}>{i18n.t('common.exportCsv')}</button>;
}
