//! CSV rendering: RFC 4180 quoting and CRLF line ends, UTF-8 with a byte order mark so that Excel reads the
//! accents, and no cell that a spreadsheet would run as a formula.
//!
//! The separator follows the language, as spreadsheets do: a comma in English, a semicolon in pt-BR (Excel in a
//! Brazilian locale splits columns on its list separator, `;`, because the comma is the decimal separator there).
//! Numbers and dates are written as the title block and the PDF write them in that language.

use crate::reports::{Lang, Report};

/// The UTF-8 byte order mark.
pub const BOM: &str = "\u{feff}";

/// The field separator of `lang`.
pub fn separator(lang: Lang) -> char {
    match lang {
        Lang::PtBr => ';',
        Lang::En => ',',
    }
}

/// The report as CSV: a header row, the rows, and a last row saying it was truncated when it was.
pub fn render(report: &Report, lang: Lang) -> Vec<u8> {
    let sep = separator(lang);
    let mut out = String::with_capacity(64 + report.rows.len() * 96);
    out.push_str(BOM);
    push_row(
        &mut out,
        sep,
        report.columns.iter().map(|c| c.label.as_str()),
    );
    for row in &report.rows {
        let cells: Vec<String> = row.iter().map(|c| lang.cell(c)).collect();
        push_row(&mut out, sep, cells.iter().map(String::as_str));
    }
    if report.truncated {
        let note = truncated_note(lang);
        push_row(&mut out, sep, std::iter::once(note.as_str()));
    }
    out.into_bytes()
}

/// The note that ends a truncated report.
pub fn truncated_note(lang: Lang) -> String {
    match lang {
        Lang::PtBr => format!(
            "Relatório truncado: mais de {} linhas; restrinja o período, o POP ou o cliente.",
            lang.int(crate::reports::MAX_ROWS as i64)
        ),
        Lang::En => format!(
            "Report truncated: more than {} rows; narrow the range, the POP or the customer.",
            lang.int(crate::reports::MAX_ROWS as i64)
        ),
    }
}

fn push_row<'a>(out: &mut String, sep: char, cells: impl Iterator<Item = &'a str>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(sep);
        }
        push_cell(out, sep, cell);
    }
    out.push_str("\r\n");
}

/// One field: a cell starting with `=`, `+`, `-`, `@` (or a tab or carriage return, which some spreadsheets
/// skip before looking) gets a leading `'` so it is shown as text and never evaluated; a cell holding the
/// separator, a quote or a line break is quoted, its quotes doubled.
fn push_cell(out: &mut String, sep: char, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    // A negative number (digits and separators only) is not a formula: keep `-12,5` a number.
    let number = cell.len() > 1
        && cell.starts_with('-')
        && cell[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',');
    let guard = formula && !number;
    let quote = guard || cell.contains([sep, '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str, sep: char) -> String {
        let mut out = String::new();
        push_cell(&mut out, sep, s);
        out
    }

    #[test]
    fn quoting_follows_rfc_4180() {
        assert_eq!(field("plain", ','), "plain");
        assert_eq!(field("a,b", ','), "\"a,b\"");
        assert_eq!(field("a,b", ';'), "a,b");
        assert_eq!(field("say \"hi\"", ','), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines", ';'), "\"two\nlines\"");
    }

    #[test]
    fn formulas_are_defused() {
        assert_eq!(
            field("=HYPERLINK(\"x\")", ','),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(field("+1+1", ','), "\"'+1+1\"");
        assert_eq!(field("@SUM(A1)", ';'), "\"'@SUM(A1)\"");
        assert_eq!(field("-cmd", ','), "\"'-cmd\"");
        assert_eq!(field("\t=1", ','), "\"'\t=1\"");
        assert_eq!(field("-12,5", ';'), "-12,5");
        assert_eq!(
            field("-2+3+cmd|' /C calc'!A0", ';'),
            "\"'-2+3+cmd|' /C calc'!A0\""
        );
    }
}
