//! A hand-written SVG bar chart: the host's performance relative to native
//! per row (higher is better for every bar: rates are host/native, costs
//! such as memory and start-up time are native/host), with the 0.9x target.

use crate::report::Row;
use std::fmt::Write;

pub fn chart(title: &str, rows: &[Row]) -> String {
    // Wide enough for the longest row name (about 6.6 px a character at
    // 12 px sans-serif), so no label is cut at the left edge.
    let longest = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
    let label_w = (longest as f64 * 6.6 + 20.0).max(330.0);
    let bar_w = 420.0;
    let row_h = 26.0;
    let top = 56.0;
    let width = label_w + bar_w + 90.0;
    let height = top + row_h * rows.len() as f64 + 40.0;
    // Scale to at least 1.2x so the target and parity lines are always in view.
    let max =
        rows.iter().filter_map(Row::relative_performance).filter(|v| v.is_finite()).fold(1.2f64, f64::max).min(5.0);
    let x = |v: f64| label_w + bar_w * (v.min(max) / max);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#, esc(title));
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#555">host+guest performance relative to native (rates: host/native; memory, start-up: native/host). Higher is better.</text>"##
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + row_h * 0.65,
            esc(&r.name)
        );
        match r.relative_performance().filter(|v| v.is_finite()) {
            Some(v) => {
                let color = if v >= 0.9 { "#3a8f4f" } else { "#d08a2c" };
                let _ = writeln!(
                    s,
                    r#"<rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{color}"/>"#,
                    y + 4.0,
                    x(v) - label_w,
                    row_h - 8.0
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}" stroke="white" stroke-width="3" paint-order="stroke">{v:.2}x</text>"#,
                    x(v) + 4.0,
                    y + row_h * 0.65
                );
            }
            None => {
                let why = r.na.unwrap_or("n/a");
                let _ = writeln!(
                    s,
                    r##"<text x="{}" y="{}" fill="#888">{}</text>"##,
                    label_w + 4.0,
                    y + row_h * 0.65,
                    esc(why)
                );
            }
        }
    }
    let bottom = top + row_h * rows.len() as f64;
    // Axis, parity (1.0x) and target (0.9x) lines.
    let _ = writeln!(s, r##"<line x1="{label_w}" y1="{top}" x2="{label_w}" y2="{bottom}" stroke="#000"/>"##);
    let _ = writeln!(
        s,
        r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#888" stroke-dasharray="2,3"/><text x="{0:.1}" y="{3}" text-anchor="middle" fill="#888">1.0x</text>"##,
        x(1.0),
        top - 4.0,
        bottom,
        bottom + 14.0
    );
    let _ = writeln!(
        s,
        r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#c0392b" stroke-width="2" stroke-dasharray="6,4"/><text x="{0:.1}" y="{3}" text-anchor="middle" fill="#c0392b">0.9x target</text>"##,
        x(0.9),
        top - 4.0,
        bottom,
        bottom + 28.0
    );
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
