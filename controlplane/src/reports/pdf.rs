//! PDF rendering with `pdf-writer`: A4 landscape pages, Helvetica and Helvetica-Bold in WinAnsi (standard 14
//! fonts, nothing embedded), a title block, the chart drawn as vector paths, then the table, paginated, its
//! header row repeated at the top of every page, and "page N of M" in every footer.
//!
//! Layout is done here, in points, with the font metrics of [`crate::reports::font`]: a cell too long for its
//! column is cut with `...` (the CSV has the whole text). Content streams are Flate-compressed (zlib, level
//! [`FLATE_LEVEL`]): a table page is mostly repeated operators and font names, which compress about tenfold.
//! Pure: a report in, bytes out.

use chrono::{DateTime, Utc};
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::reports::font::{encode, fit, width};
use crate::reports::{Align, Chart, Lang, Line, Report};

const PAGE_W: f32 = 842.0;
const PAGE_H: f32 = 595.0;
const MARGIN: f32 = 36.0;
const TABLE_W: f32 = PAGE_W - 2.0 * MARGIN;
const ROW_H: f32 = 14.0;
const CELL_PAD: f32 = 4.0;
const BODY_SIZE: f32 = 8.0;
const CHART_H: f32 = 180.0;
const FOOTER_Y: f32 = 20.0;
/// Most points drawn per chart line (more are reduced to the peak of each slice).
const MAX_LINE_POINTS: usize = 1_000;

/// zlib level of the content streams (6: miniz's default, most of level 9's gain for a fraction of its time).
const FLATE_LEVEL: u8 = 6;

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Line colours: in (blue), out (green), then more.
const PALETTE: [(f32, f32, f32); 4] = [
    (0.12, 0.40, 0.75),
    (0.16, 0.60, 0.30),
    (0.85, 0.45, 0.10),
    (0.55, 0.25, 0.65),
];

/// The report as a PDF document.
pub fn render(report: &Report, lang: Lang) -> Vec<u8> {
    let mut pages: Vec<Content> = Vec::new();
    let mut c = Content::new();
    let mut y = title_block(&mut c, report, lang);
    if let Some(chart) = &report.chart {
        // Bars take the room they need; lines the whole height.
        let h = match chart {
            Chart::Bars { bars, .. } => (40.0 + 16.0 * bars.len() as f32).min(CHART_H),
            Chart::Lines { .. } => CHART_H,
        };
        y -= 8.0;
        draw_chart(&mut c, chart, lang, MARGIN, y - h, TABLE_W, h);
        y -= h + 18.0;
    }
    let xs = column_edges(report);
    y = table_header(&mut c, report, &xs, y);
    if report.rows.is_empty() {
        set_gray(&mut c, 0.35);
        text(
            &mut c,
            REGULAR,
            9.0,
            MARGIN + CELL_PAD,
            y - 10.0,
            &encode(lang.t(
                "Nenhum dado no período e escopo escolhidos.",
                "No data for the chosen range and scope.",
            )),
        );
        y -= ROW_H;
    }
    for (i, row) in report.rows.iter().enumerate() {
        if y - ROW_H < FOOTER_Y + 16.0 {
            pages.push(std::mem::replace(&mut c, Content::new()));
            y = table_header(&mut c, report, &xs, PAGE_H - MARGIN);
        }
        if i % 2 == 1 {
            c.set_fill_rgb(0.95, 0.96, 0.98);
            c.rect(MARGIN, y - ROW_H, TABLE_W, ROW_H);
            c.fill_nonzero();
        }
        set_gray(&mut c, 0.1);
        for (j, cell) in row.iter().enumerate().take(report.columns.len()) {
            let (x0, x1) = (xs[j], xs[j + 1]);
            let bytes = fit(
                &encode(&lang.cell(cell)),
                BODY_SIZE,
                false,
                x1 - x0 - 2.0 * CELL_PAD,
            );
            let x = match report.columns[j].align {
                Align::Left => x0 + CELL_PAD,
                Align::Right => x1 - CELL_PAD - width(&bytes, BODY_SIZE, false),
            };
            text(&mut c, REGULAR, BODY_SIZE, x, y - ROW_H + 4.0, &bytes);
        }
        y -= ROW_H;
    }
    if report.truncated {
        if y - ROW_H < FOOTER_Y + 16.0 {
            pages.push(std::mem::replace(&mut c, Content::new()));
            y = PAGE_H - MARGIN;
        }
        c.set_fill_rgb(0.7, 0.1, 0.1);
        let note = encode(&crate::reports::csv::truncated_note(lang));
        text(&mut c, BOLD, 9.0, MARGIN, y - 12.0, &note);
    }
    pages.push(c);
    assemble(report, lang, pages)
}

/// Writes the document: catalog, page tree, the two fonts, document info, and each page with its footer.
fn assemble(report: &Report, lang: Lang, pages: Vec<Content>) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let total = pages.len();
    let page_ref = |i: usize| Ref::new(6 + 2 * i as i32);
    let content_ref = |i: usize| Ref::new(7 + 2 * i as i32);
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..total).map(page_ref))
        .count(total as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr(&report.title))
        .producer(TextStr("OctoISP"));
    for (i, mut c) in pages.into_iter().enumerate() {
        footer(&mut c, report, lang, i + 1, total);
        let mut page = pdf.page(page_ref(i));
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        page.parent(tree);
        page.contents(content_ref(i));
        let mut resources = page.resources();
        let mut fonts = resources.fonts();
        fonts.pair(REGULAR, regular);
        fonts.pair(BOLD, bold);
        fonts.finish();
        resources.finish();
        page.finish();
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&c.finish(), FLATE_LEVEL);
        pdf.stream(content_ref(i), &compressed)
            .filter(Filter::FlateDecode);
    }
    pdf.finish()
}

/// Title, provider, scope, range, generation time and notes; returns the y below them.
fn title_block(c: &mut Content, r: &Report, lang: Lang) -> f32 {
    let mut y = PAGE_H - MARGIN - 16.0;
    set_gray(c, 0.05);
    text(c, BOLD, 16.0, MARGIN, y, &encode(&r.title));
    y -= 18.0;
    let mut lines = vec![format!(
        "{}: {}",
        lang.t("Provedor", "Provider"),
        r.provider
    )];
    if !r.scope.is_empty() {
        lines.push(r.scope.clone());
    }
    // The inventory is a snapshot: no range.
    if r.kind != crate::reports::Kind::Inventory {
        lines.push(format!(
            "{}: {} - {} (UTC)",
            lang.t("Período", "Range"),
            lang.time(r.from),
            lang.time(r.to)
        ));
    }
    lines.push(format!(
        "{}: {} UTC · {}: {}",
        lang.t("Gerado em", "Generated at"),
        lang.time(r.generated_at),
        lang.t("linhas", "rows"),
        lang.int(r.rows.len() as i64)
    ));
    set_gray(c, 0.2);
    for l in &lines {
        text(c, REGULAR, 9.5, MARGIN, y, &encode(l));
        y -= 12.0;
    }
    set_gray(c, 0.4);
    for n in &r.notes {
        text(
            c,
            REGULAR,
            8.0,
            MARGIN,
            y,
            &fit(&encode(n), 8.0, false, TABLE_W),
        );
        y -= 10.0;
    }
    if r.truncated {
        c.set_fill_rgb(0.7, 0.1, 0.1);
        text(
            c,
            BOLD,
            9.0,
            MARGIN,
            y,
            &encode(&crate::reports::csv::truncated_note(lang)),
        );
        y -= 12.0;
    }
    y
}

/// The x of each column's left edge, and the table's right edge last.
fn column_edges(r: &Report) -> Vec<f32> {
    let total: f32 = r.columns.iter().map(|c| c.weight.max(0.1)).sum();
    let mut xs = Vec::with_capacity(r.columns.len() + 1);
    let mut x = MARGIN;
    xs.push(x);
    for col in &r.columns {
        x += TABLE_W * col.weight.max(0.1) / total.max(0.1);
        xs.push(x);
    }
    xs
}

/// The header row at `y` (its top); returns the y below it.
fn table_header(c: &mut Content, r: &Report, xs: &[f32], y: f32) -> f32 {
    c.set_fill_rgb(0.86, 0.89, 0.94);
    c.rect(MARGIN, y - ROW_H - 2.0, TABLE_W, ROW_H + 2.0);
    c.fill_nonzero();
    set_gray(c, 0.05);
    for (j, col) in r.columns.iter().enumerate() {
        let (x0, x1) = (xs[j], xs[j + 1]);
        let bytes = fit(
            &encode(&col.label),
            BODY_SIZE,
            true,
            x1 - x0 - 2.0 * CELL_PAD,
        );
        let x = match col.align {
            Align::Left => x0 + CELL_PAD,
            Align::Right => x1 - CELL_PAD - width(&bytes, BODY_SIZE, true),
        };
        text(c, BOLD, BODY_SIZE, x, y - ROW_H + 3.0, &bytes);
    }
    y - ROW_H - 2.0
}

fn footer(c: &mut Content, r: &Report, lang: Lang, page: usize, total: usize) {
    set_gray(c, 0.45);
    let left = encode(&format!("OctoISP · {} · {}", r.provider, r.title));
    text(
        c,
        REGULAR,
        7.5,
        MARGIN,
        FOOTER_Y,
        &fit(&left, 7.5, false, TABLE_W - 120.0),
    );
    let right = encode(&format!(
        "{} {page} {} {total}",
        lang.t("Página", "Page"),
        lang.t("de", "of")
    ));
    let x = PAGE_W - MARGIN - width(&right, 7.5, false);
    text(c, REGULAR, 7.5, x, FOOTER_Y, &right);
}

fn draw_chart(c: &mut Content, chart: &Chart, lang: Lang, x: f32, y: f32, w: f32, h: f32) {
    // Frame and title.
    c.set_stroke_rgb(0.75, 0.78, 0.82);
    c.set_line_width(0.6);
    c.rect(x, y, w, h);
    c.stroke();
    let title = match chart {
        Chart::Lines { title, .. } | Chart::Bars { title, .. } => title,
    };
    set_gray(c, 0.1);
    text(c, BOLD, 10.0, x + 8.0, y + h - 14.0, &encode(title));
    match chart {
        Chart::Lines { series, .. } => draw_lines(c, series, lang, x, y, w, h - 20.0),
        Chart::Bars { bars, percent, .. } => draw_bars(c, bars, *percent, lang, x, y, w, h - 20.0),
    }
}

/// Lines over time inside the box (x, y, w, h): y grid with rate labels, time labels, legend.
fn draw_lines(c: &mut Content, series: &[Line], lang: Lang, x: f32, y: f32, w: f32, h: f32) {
    let (px0, py0) = (x + 70.0, y + 22.0);
    let (pw, ph) = (w - 90.0, h - 34.0);
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut t0, mut t1, mut vmax) = (i64::MAX, i64::MIN, 0.0f64);
    for (t, v) in all {
        t0 = t0.min(t.timestamp());
        t1 = t1.max(t.timestamp());
        if v.is_finite() {
            vmax = vmax.max(*v);
        }
    }
    if t0 >= t1 {
        set_gray(c, 0.4);
        text(
            c,
            REGULAR,
            9.0,
            px0,
            py0 + ph / 2.0,
            &encode(lang.t("Sem dados no período.", "No data in the range.")),
        );
        return;
    }
    let top = nice_ceiling(vmax);
    // Grid and labels.
    c.set_line_width(0.4);
    for i in 0..=4 {
        let gy = py0 + ph * i as f32 / 4.0;
        c.set_stroke_rgb(0.88, 0.89, 0.91);
        c.move_to(px0, gy);
        c.line_to(px0 + pw, gy);
        c.stroke();
        let label = encode(&lang.bps(top * f64::from(i) / 4.0));
        set_gray(c, 0.35);
        text(
            c,
            REGULAR,
            7.0,
            px0 - 4.0 - width(&label, 7.0, false),
            gy - 2.5,
            &label,
        );
    }
    for i in 0..=2 {
        let t = t0 + (t1 - t0) * i / 2;
        let label = encode(&lang.time(DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default()));
        let lw = width(&label, 7.0, false);
        let lx = (px0 + pw * i as f32 / 2.0 - lw / 2.0).clamp(px0 - 10.0, px0 + pw - lw);
        text(c, REGULAR, 7.0, lx, py0 - 12.0, &label);
    }
    // The lines.
    let sx = |t: i64| px0 + pw * (t - t0) as f32 / (t1 - t0) as f32;
    let sy = |v: f64| py0 + ph * (v / top) as f32;
    c.set_line_width(1.1);
    for (i, s) in series.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        c.set_stroke_rgb(r, g, b);
        let pts = reduce(&s.points, MAX_LINE_POINTS);
        let mut first = true;
        for (t, v) in pts.iter().filter(|(_, v)| v.is_finite()) {
            if first {
                c.move_to(sx(t.timestamp()), sy(*v));
                first = false;
            } else {
                c.line_to(sx(t.timestamp()), sy(*v));
            }
        }
        if !first {
            c.stroke();
        }
        // Legend, top right.
        let lx = x + w - 150.0;
        let ly = y + h + 6.0 - 11.0 * i as f32;
        c.set_fill_rgb(r, g, b);
        c.rect(lx, ly, 10.0, 3.0);
        c.fill_nonzero();
        set_gray(c, 0.2);
        text(c, REGULAR, 8.0, lx + 14.0, ly - 1.5, &encode(&s.label));
    }
}

/// Horizontal bars with their labels and values.
#[allow(clippy::too_many_arguments)]
fn draw_bars(
    c: &mut Content,
    bars: &[(String, f64)],
    percent: bool,
    lang: Lang,
    x: f32,
    y: f32,
    w: f32,
    h: f32,
) {
    if bars.is_empty() {
        set_gray(c, 0.4);
        text(
            c,
            REGULAR,
            9.0,
            x + 8.0,
            y + h / 2.0,
            &encode(lang.t("Sem dados no período.", "No data in the range.")),
        );
        return;
    }
    let label_w = 170.0;
    let (bx, bw) = (x + label_w + 8.0, w - label_w - 70.0);
    let slot = ((h - 8.0) / bars.len() as f32).min(16.0);
    let top = if percent {
        100.0
    } else {
        nice_ceiling(bars.iter().map(|b| b.1).fold(0.0, f64::max))
    };
    for (i, (label, v)) in bars.iter().enumerate() {
        let by = y + h - 4.0 - slot * (i as f32 + 1.0);
        set_gray(c, 0.2);
        let l = fit(&encode(label), 8.0, false, label_w - 8.0);
        text(
            c,
            REGULAR,
            8.0,
            x + label_w - width(&l, 8.0, false),
            by + slot * 0.3,
            &l,
        );
        let len = (bw * (v.max(0.0) / top) as f32).min(bw);
        let (r, g, b) = if percent && *v < 99.0 {
            (0.85, 0.45, 0.10)
        } else {
            PALETTE[0]
        };
        c.set_fill_rgb(r, g, b);
        c.rect(bx, by + slot * 0.15, len.max(0.5), slot * 0.7);
        c.fill_nonzero();
        set_gray(c, 0.2);
        let value = if percent {
            format!("{} %", lang.num(*v, 2))
        } else {
            lang.num(*v, 0)
        };
        text(
            c,
            REGULAR,
            8.0,
            bx + len + 4.0,
            by + slot * 0.3,
            &encode(&value),
        );
    }
}

/// At most `max` points: the peak of each of `max` equal slices (a graph of peaks keeps the spikes).
fn reduce(points: &[(DateTime<Utc>, f64)], max: usize) -> Vec<(DateTime<Utc>, f64)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .filter_map(|chunk| chunk.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

/// A round number at or above `v` (1, 2 or 5 times a power of ten), for an axis.
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn set_gray(c: &mut Content, g: f32) {
    c.set_fill_rgb(g, g, g);
}

fn text(c: &mut Content, font: Name, size: f32, x: f32, y: f32, bytes: &[u8]) {
    c.begin_text();
    c.set_font(font, size);
    c.next_line(x, y);
    c.show(Str(bytes));
    c.end_text();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::{Cell, Column, Kind};

    /// The content streams of a PDF: their stored length and their inflated bytes.
    fn inflated_streams(pdf: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let find = |from: usize, pat: &[u8]| {
            pdf[from..]
                .windows(pat.len())
                .position(|w| w == pat)
                .map(|p| p + from)
        };
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(start) = find(at, b">>\nstream\n") {
            let data = start + b">>\nstream\n".len();
            let end = find(data, b"\nendstream").expect("a stream ends");
            let inflated = miniz_oxide::inflate::decompress_to_vec_zlib(&pdf[data..end]);
            out.push((end - data, inflated.expect("a zlib stream")));
            at = end;
        }
        out
    }

    fn report(rows: usize) -> Report {
        let t = DateTime::<Utc>::from_timestamp(1_764_500_000, 0).unwrap();
        Report {
            kind: Kind::Inventory,
            title: "Inventário".into(),
            provider: "Provedor São João".into(),
            scope: String::new(),
            from: t,
            to: t,
            generated_at: t,
            columns: vec![
                Column {
                    label: "Nome".into(),
                    align: Align::Left,
                    weight: 2.0,
                },
                Column {
                    label: "Total".into(),
                    align: Align::Right,
                    weight: 1.0,
                },
            ],
            rows: (0..rows)
                .map(|i| vec![Cell::Text(format!("Estação {i}")), Cell::Int(i as i64)])
                .collect(),
            truncated: false,
            chart: Some(Chart::Bars {
                title: "POP".into(),
                percent: false,
                bars: vec![("Centro".into(), 3.0)],
            }),
            notes: vec![],
        }
    }

    #[test]
    fn pages_repeat_the_header_and_count_themselves() {
        let pdf = render(&report(200), Lang::PtBr);
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        let pages = text.matches("/Type /Page\n").count() + text.matches("/Type /Page ").count();
        assert!(pages >= 5, "{pages} pages for 200 rows");
        // Every content stream is compressed; inflated, each draws the header once.
        let streams = inflated_streams(&pdf);
        assert_eq!(streams.len(), pages);
        assert_eq!(text.matches("/Filter /FlateDecode").count(), pages);
        assert!(
            !text.contains("(Nome) Tj"),
            "content streams are not compressed"
        );
        for (_, s) in &streams {
            assert_eq!(String::from_utf8_lossy(s).matches("(Nome) Tj").count(), 1);
        }
        assert!(text.contains("/WinAnsiEncoding"));
    }

    #[test]
    fn content_streams_are_compressed_several_fold() {
        let pdf = render(&report(200), Lang::PtBr);
        let streams = inflated_streams(&pdf);
        let stored: usize = streams.iter().map(|(n, _)| n).sum();
        let raw: usize = streams.iter().map(|(_, s)| s.len()).sum();
        // What the file would weigh with the streams stored as they are (give or take the /Length digits).
        let uncompressed =
            pdf.len() - stored + raw - streams.len() * "/Filter /FlateDecode\n".len();
        eprintln!(
            "200-row report, {} pages: {} bytes with Flate, {uncompressed} without (streams {stored} vs {raw})",
            streams.len(),
            pdf.len(),
        );
        assert!(
            pdf.len() * 4 < uncompressed,
            "{} vs {uncompressed}",
            pdf.len()
        );
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(730.0), 1000.0);
        assert_eq!(nice_ceiling(1_600_000.0), 2_000_000.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        let pts: Vec<_> = (0..5000)
            .map(|i| {
                (
                    DateTime::<Utc>::from_timestamp(i, 0).unwrap(),
                    (i % 7) as f64,
                )
            })
            .collect();
        let r = reduce(&pts, 1000);
        assert!(r.len() <= 1000 && r.iter().all(|p| p.1 == 6.0 || p.1 >= 4.0));
    }
}
