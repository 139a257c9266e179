//! Reports the console downloads as CSV or PDF: device inventory, alert history, traffic and availability of a
//! provider, per POP or customer (details in docs/REPORTS.md).
//!
//! A report is built in two steps. [`query`] reads PostgreSQL in the caller's tenant transaction and returns a
//! [`Report`]: a title block, typed columns, typed cells and a chart, all bounded ([`MAX_ROWS`] rows, a range
//! of at most [`MAX_RANGE_DAYS`]). Then a pure renderer turns it into bytes: [`csv::render`] or [`pdf::render`],
//! both taking the report and a [`Lang`] and doing no I/O, so they are tested without a database.

pub mod csv;
pub mod font;
pub mod locale;
pub mod pdf;
pub mod query;

use chrono::{DateTime, Utc};

pub use locale::Lang;

/// Most rows a report holds; past it the report says it was truncated.
pub const MAX_ROWS: usize = 50_000;
/// Longest range a report may cover.
pub const MAX_RANGE_DAYS: i64 = 400;

/// The kinds of report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Devices: name, POP, customer, vendor/model, management IP, online or offline, last seen.
    Inventory,
    /// Alert history in the range: rule, target, severity, fired, resolved, duration, acknowledged by.
    Alerts,
    /// Traffic per POP or customer: average, 95th percentile and peak in and out, from the rollups.
    Traffic,
    /// Share of 5-minute intervals in which each device sent at least one sample.
    Availability,
}

impl Kind {
    /// Every kind, in menu order.
    pub const ALL: [Kind; 4] = [
        Kind::Inventory,
        Kind::Alerts,
        Kind::Traffic,
        Kind::Availability,
    ];

    /// Its name in URLs and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inventory => "inventory",
            Kind::Alerts => "alerts",
            Kind::Traffic => "traffic",
            Kind::Availability => "availability",
        }
    }

    /// The permission a caller needs to export it.
    pub fn permission(self) -> &'static str {
        match self {
            Kind::Inventory => "devices:read",
            Kind::Alerts => "alerts:read",
            // Both are computed from the rollups of the devices' series.
            Kind::Traffic | Kind::Availability => "metrics:read",
        }
    }
}

/// How a column is aligned (numbers to the right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A column of a report's table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header, already in the report's language.
    pub label: String,
    /// Alignment.
    pub align: Align,
    /// Share of the table width in the PDF (relative to the other columns).
    pub weight: f32,
}

/// One cell. Values stay typed until a renderer formats them for a language.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Nothing (an unknown value).
    Empty,
    /// Text as stored (names, addresses, rule names).
    Text(String),
    /// A count.
    Int(i64),
    /// A rate in bit/s.
    Bps(f64),
    /// A percentage, 0 to 100.
    Percent(f64),
    /// A point in time.
    Time(DateTime<Utc>),
    /// A duration in seconds.
    Duration(i64),
}

/// A chart drawn above the table in the PDF (the CSV carries the table only).
#[derive(Debug, Clone)]
pub enum Chart {
    /// Lines over time sharing one y axis (bit/s).
    Lines {
        /// Title, in the report's language.
        title: String,
        /// The lines.
        series: Vec<Line>,
    },
    /// Horizontal bars, one per label.
    Bars {
        /// Title, in the report's language.
        title: String,
        /// Whether the values are percentages (axis 0 to 100) rather than counts.
        percent: bool,
        /// Label and value of each bar.
        bars: Vec<(String, f64)>,
    },
}

/// One line of a [`Chart::Lines`].
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Points in time order: (time, value).
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// A report, ready to render.
#[derive(Debug, Clone)]
pub struct Report {
    /// What it is.
    pub kind: Kind,
    /// Its title, in its language.
    pub title: String,
    /// The provider's name.
    pub provider: String,
    /// What it was narrowed to (a POP, a customer), in its language; empty: the whole provider.
    pub scope: String,
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    /// When it was generated.
    pub generated_at: DateTime<Utc>,
    /// The table's columns.
    pub columns: Vec<Column>,
    /// The table's rows (at most [`MAX_ROWS`]).
    pub rows: Vec<Vec<Cell>>,
    /// More rows matched than [`MAX_ROWS`].
    pub truncated: bool,
    /// The chart, if the report has one.
    pub chart: Option<Chart>,
    /// Lines printed under the title block (how the figures were computed).
    pub notes: Vec<String>,
}

impl Report {
    /// The file name of its download, such as `octoisp-traffic-20261130.pdf`.
    pub fn file_name(&self, ext: &str) -> String {
        format!(
            "octoisp-{}-{}.{ext}",
            self.kind.as_str(),
            self.generated_at.format("%Y%m%d-%H%M")
        )
    }
}
