// CSV export of the lists on screen: RFC 4180 quoting, a guard against spreadsheet formulas in cell text, and the
// separator a spreadsheet of the user's language expects (`;` in pt-BR, where the comma is the decimal mark).

export type Cell = string | number | boolean | null | undefined;

/** The separator for a locale: `;` where numbers use a decimal comma, `,` otherwise. */
export function separatorFor(locale: string): string {
  return new Intl.NumberFormat(locale).format(1.5).includes(',') ? ';' : ',';
}

function cell(v: Cell, sep: string): string {
  if (v === null || v === undefined) return '';
  let s = String(v);
  // A text starting with = + - @ (or a tab/CR) would run as a formula when opened in a spreadsheet.
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /["\r\n]/.test(s) || s.includes(sep) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

/** The CSV text of a header and rows (CRLF line ends). */
export function toCsv(header: string[], rows: Cell[][], sep = ','): string {
  return [header, ...rows].map((r) => r.map((c) => cell(c, sep)).join(sep)).join('\r\n') + '\r\n';
}

/** Offers the text as a file download (with a byte order mark, so that spreadsheets read UTF-8 accents). */
export function downloadCsv(filename: string, text: string): void {
  const blob = new Blob(['\ufeff' + text], { type: 'text/csv;charset=utf-8' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
