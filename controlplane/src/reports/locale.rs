//! The two languages of the reports (pt-BR first, English): their words, and how numbers, rates, dates and
//! durations are written in each. Times are written in UTC, and the title block says so.

use chrono::{DateTime, Utc};

use crate::reports::Cell;

/// A report's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// Brazilian Portuguese: `1.234,5`, `30/11/2026 14:05`.
    #[default]
    PtBr,
    /// English: `1,234.5`, `2026-11-30 14:05`.
    En,
}

impl Lang {
    /// Parses `pt-BR` or `en` (case-insensitive).
    pub fn parse(s: &str) -> Option<Lang> {
        match s.to_ascii_lowercase().as_str() {
            "pt-br" | "pt" => Some(Lang::PtBr),
            "en" | "en-us" => Some(Lang::En),
            _ => None,
        }
    }

    /// Picks the text of this language.
    pub fn t(self, pt: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::PtBr => pt,
            Lang::En => en,
        }
    }

    /// The decimal separator.
    fn decimal(self) -> char {
        match self {
            Lang::PtBr => ',',
            Lang::En => '.',
        }
    }

    /// The thousands separator.
    fn thousands(self) -> char {
        match self {
            Lang::PtBr => '.',
            Lang::En => ',',
        }
    }

    /// An integer with thousands separators: `12.345` / `12,345`.
    pub fn int(self, n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
        if n < 0 {
            out.push('-');
        }
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(self.thousands());
            }
            out.push(c);
        }
        out
    }

    /// A number with `decimals` digits after the separator, thousands grouped: `1.234,56`.
    pub fn num(self, v: f64, decimals: usize) -> String {
        if !v.is_finite() {
            return "-".to_owned();
        }
        let text = format!("{:.*}", decimals, v.abs());
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        let whole: i64 = int.parse().unwrap_or(0);
        let mut out = String::new();
        if v < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
            out.push('-');
        }
        out.push_str(&self.int(whole));
        if !frac.is_empty() {
            out.push(self.decimal());
            out.push_str(frac);
        }
        out
    }

    /// A rate with an SI prefix: `1,25 Gbit/s`.
    pub fn bps(self, v: f64) -> String {
        const UNITS: [&str; 5] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
        if !v.is_finite() {
            return "-".to_owned();
        }
        let mut x = v;
        let mut unit = 0;
        while x.abs() >= 1000.0 && unit + 1 < UNITS.len() {
            x /= 1000.0;
            unit += 1;
        }
        let decimals = if unit == 0 { 0 } else { 2 };
        format!("{} {}", self.num(x, decimals), UNITS[unit])
    }

    /// A time in UTC: `30/11/2026 14:05` / `2026-11-30 14:05`.
    pub fn time(self, t: DateTime<Utc>) -> String {
        match self {
            Lang::PtBr => t.format("%d/%m/%Y %H:%M").to_string(),
            Lang::En => t.format("%Y-%m-%d %H:%M").to_string(),
        }
    }

    /// A day: `30/11/2026` / `2026-11-30`.
    pub fn day(self, t: DateTime<Utc>) -> String {
        match self {
            Lang::PtBr => t.format("%d/%m/%Y").to_string(),
            Lang::En => t.format("%Y-%m-%d").to_string(),
        }
    }

    /// A duration: `2 d 03:04:05` or `03:04:05`.
    pub fn duration(self, secs: i64) -> String {
        let s = secs.max(0);
        let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
        if d > 0 {
            format!("{d} d {h:02}:{m:02}:{s:02}")
        } else {
            format!("{h:02}:{m:02}:{s:02}")
        }
    }

    /// A cell as a person reads it in this language.
    pub fn cell(self, c: &Cell) -> String {
        match c {
            Cell::Empty => String::new(),
            Cell::Text(s) => s.clone(),
            Cell::Int(n) => self.int(*n),
            Cell::Bps(v) => self.bps(*v),
            Cell::Percent(v) => format!("{} %", self.num(*v, 2)),
            Cell::Time(t) => self.time(*t),
            Cell::Duration(s) => self.duration(*s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_language() {
        assert_eq!(Lang::PtBr.int(1_234_567), "1.234.567");
        assert_eq!(Lang::En.int(1_234_567), "1,234,567");
        assert_eq!(Lang::En.int(-999), "-999");
        assert_eq!(Lang::PtBr.num(1234.5, 2), "1.234,50");
        assert_eq!(Lang::En.num(-0.001, 2), "0.00");
        assert_eq!(Lang::PtBr.bps(1_250_000_000.0), "1,25 Gbit/s");
        assert_eq!(Lang::En.bps(950.0), "950 bit/s");
        assert_eq!(Lang::PtBr.cell(&Cell::Percent(99.5)), "99,50 %");
    }

    #[test]
    fn dates_and_durations() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T14:05:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Lang::PtBr.time(t), "30/11/2026 14:05");
        assert_eq!(Lang::En.time(t), "2026-11-30 14:05");
        assert_eq!(
            Lang::En.duration(2 * 86_400 + 3 * 3600 + 4 * 60 + 5),
            "2 d 03:04:05"
        );
        assert_eq!(Lang::En.duration(65), "00:01:05");
    }
}
