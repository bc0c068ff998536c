//! The `--plot` picture: each candidate's estimates (IPS, SNIPS, DR) as points with their 95 %
//! intervals, one row per candidate, on a shared reward axis, with the logging policy's DR
//! estimate as a dashed line. A plain SVG of its own (the project's `plot` module draws graphs
//! through Graphviz, not charts).

use std::fmt::Write;

use serde_json::Value;

const ESTIMATORS: [(&str, &str); 3] = [("ips", "#1f77b4"), ("snips", "#ff7f0e"), ("dr", "#2ca02c")];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG of a report ([`super::Evaluation::report`]).
pub fn plot(report: &Value) -> String {
    let empty = Vec::new();
    let rows = report["candidates"].as_array().unwrap_or(&empty);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for r in rows {
        for (e, _) in ESTIMATORS {
            if let Some(ci) = r["estimates"][e]["ci95"].as_array() {
                for v in ci.iter().filter_map(Value::as_f64) {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let (left, width, row_h, top) = (230.0, 520.0, 54.0, 40.0);
    let height = top + row_h * rows.len().max(1) as f64 + 50.0;
    let x = |v: f64| left + (v - lo) / (hi - lo) * width;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = left + width + 30.0
    );
    let _ = write!(
        s,
        r#"<text x="10" y="20" font-size="14">Off-policy estimates of router `{}` (95 % intervals)</text>"#,
        esc(report["router"].as_str().unwrap_or(""))
    );
    // Axis with 5 ticks.
    let axis_y = top + row_h * rows.len().max(1) as f64 + 10.0;
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
        left + width
    );
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{0}" y1="{axis_y}" x2="{0}" y2="{1}" stroke="#333"/><text x="{0}" y="{2}" text-anchor="middle">{v:.3}</text>"##,
            x(v),
            axis_y + 5.0,
            axis_y + 20.0
        );
    }
    if let Some(v) = rows
        .iter()
        .find(|r| r["name"] == "logging")
        .and_then(|r| r["estimates"]["dr"]["value"].as_f64())
    {
        let _ = write!(
            s,
            r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{axis_y}" stroke="#999" stroke-dasharray="4 3"/>"##,
            x(v)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y0 = top + row_h * i as f64;
        let _ = write!(
            s,
            r#"<text x="10" y="{}">{}</text>"#,
            y0 + row_h / 2.0,
            esc(r["name"].as_str().unwrap_or(""))
        );
        if r["status"] != "ok" {
            let _ = write!(
                s,
                r##"<text x="{left}" y="{}" fill="#c00">refused: {}</text>"##,
                y0 + row_h / 2.0,
                esc(&r["reason"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(80)
                    .collect::<String>())
            );
            continue;
        }
        for (j, (e, colour)) in ESTIMATORS.iter().enumerate() {
            let est = &r["estimates"][e];
            let (Some(v), Some(a), Some(b)) = (
                est["value"].as_f64(),
                est["ci95"][0].as_f64(),
                est["ci95"][1].as_f64(),
            ) else {
                continue;
            };
            let y = y0 + 12.0 + 14.0 * j as f64;
            let _ = write!(
                s,
                r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="2"/><circle cx="{}" cy="{y}" r="3.5" fill="{colour}"><title>{e}: {v:.4} [{a:.4}, {b:.4}]</title></circle>"#,
                x(a),
                x(b),
                x(v)
            );
        }
    }
    for (j, (e, colour)) in ESTIMATORS.iter().enumerate() {
        let lx = left + 120.0 * j as f64;
        let _ = write!(
            s,
            r#"<circle cx="{lx}" cy="{}" r="4" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            axis_y + 35.0,
            lx + 8.0,
            axis_y + 39.0,
            e.to_uppercase()
        );
    }
    s.push_str("</svg>\n");
    s
}
