//! The IANA Private Enterprise Numbers table (`agent/fingerprints/enterprise-numbers.tsv`, the whole registry:
//! ~62,000 rows, 1.7 MB), kept as its text plus one `u32` offset per row, so a lookup is a binary search that
//! reads the row in place: no `String` per name, ~250 KB of index for the built-in table, built in one pass.
//!
//! Format: `number<TAB>name` lines; lines starting with `#` and blank lines are skipped; a line without a tab or
//! with a number that does not parse is skipped too (the table is a naming aid, not configuration).

use std::borrow::Cow;

/// An enterprise-number table.
#[derive(Debug, Clone, Default)]
pub struct Enterprises {
    text: Cow<'static, str>,
    /// Byte offsets of the rows in `text`, ordered by enterprise number (one per number: the last row wins).
    rows: Vec<u32>,
}

/// The number at the start of `line` (before its tab) and the name after it.
fn split_row(line: &str) -> Option<(u32, &str)> {
    let (n, name) = line.split_once('\t')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some((n.trim().parse().ok()?, name))
}

impl Enterprises {
    /// Indexes `text`. A table larger than 4 GiB is cut at 4 GiB (offsets are `u32`).
    pub fn parse(text: impl Into<Cow<'static, str>>) -> Enterprises {
        let text = text.into();
        let mut rows: Vec<(u32, u32)> = Vec::new();
        let mut offset = 0usize;
        for line in text.split_inclusive('\n') {
            let at = offset;
            offset += line.len();
            let Ok(at) = u32::try_from(at) else { break };
            if line.starts_with('#') {
                continue;
            }
            if let Some((n, _)) = split_row(line) {
                rows.push((n, at));
            }
        }
        // The registry is in order already; a hand-made table may not be.
        if !rows.is_sorted_by_key(|r| r.0) {
            rows.sort_by_key(|r| r.0);
        }
        // Keep the last row of a repeated number.
        rows.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = later.1;
                true
            } else {
                false
            }
        });
        let mut rows: Vec<u32> = rows.into_iter().map(|r| r.1).collect();
        rows.shrink_to_fit();
        Enterprises { text, rows }
    }

    fn row(&self, i: usize) -> Option<(u32, &str)> {
        let at = *self.rows.get(i)? as usize;
        let rest = self.text.get(at..)?;
        let line = rest.split('\n').next().unwrap_or(rest);
        split_row(line)
    }

    /// The name of enterprise `n`.
    pub fn name(&self, n: u32) -> Option<&str> {
        let i = self
            .rows
            .binary_search_by_key(&n, |&at| {
                // Every offset indexes a row that parsed when the index was built.
                self.text
                    .get(at as usize..)
                    .and_then(|rest| split_row(rest.split('\n').next().unwrap_or(rest)))
                    .map_or(u32::MAX, |r| r.0)
            })
            .ok()?;
        self.row(i).map(|r| r.1)
    }

    /// Number of enterprises.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes held: the text when owned (the built-in table's text is in the binary) plus the index.
    pub fn heap_bytes(&self) -> usize {
        let text = match &self.text {
            Cow::Borrowed(_) => 0,
            Cow::Owned(s) => s.capacity(),
        };
        text + self.rows.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_in_order_unordered_and_repeated_tables() {
        let t =
            Enterprises::parse("# c\n2\tIBM\n9\tciscoSystems\n\n2636\tJuniper Networks, Inc.\n");
        assert_eq!(t.len(), 3);
        assert_eq!(t.name(9), Some("ciscoSystems"));
        assert_eq!(t.name(2636), Some("Juniper Networks, Inc."));
        assert_eq!(t.name(3), None);
        assert_eq!(t.name(u32::MAX), None);
        let t = Enterprises::parse(String::from(
            "9\tlater\r\n2\tIBM\n9\tcisco\nx\ty\nno tab\n7\t \n",
        ));
        assert_eq!(t.len(), 2);
        assert_eq!(t.name(2), Some("IBM"));
        assert_eq!(t.name(9), Some("cisco"));
        assert_eq!(t.name(7), None);
        assert!(Enterprises::parse("").is_empty());
    }
}
