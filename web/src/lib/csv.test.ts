import { describe, expect, it } from 'vitest';
import { separatorFor, toCsv } from './csv';

describe('CSV export', () => {
  it('quotes what needs quoting and ends lines with CRLF', () => {
    expect(toCsv(['a', 'b'], [['x,y', 'say "hi"'], [1.5, null], ['line\nbreak', true]])).toBe('a,b\r\n"x,y","say ""hi"""\r\n1.5,\r\n"line\nbreak",true\r\n');
  });

  it('keeps spreadsheet formulas from running', () => {
    expect(toCsv(['v'], [['=HYPERLINK("x")'], ['+1'], ['@cmd'], [-3]])).toBe('v\r\n"\'=HYPERLINK(""x"")"\r\n\'+1\r\n\'@cmd\r\n-3\r\n');
  });

  it('uses the separator of the language', () => {
    expect(separatorFor('pt-BR')).toBe(';');
    expect(separatorFor('en')).toBe(',');
    expect(toCsv(['a', 'b'], [['1,5', 'x;y']], ';')).toBe('a;b\r\n1,5;"x;y"\r\n');
  });
});
