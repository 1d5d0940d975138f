//! The page's frame — head, style, header, footer and its script — and the small formatting
//! helpers the sections share (escaping, tables, units).

use std::{collections::HashMap, fmt::Write};

use super::{REFRESH_SECS, sections};
use crate::{db::status::StatusRows, status::StatusHandle};

/// What one render reads.
pub(super) struct Inputs<'a> {
    /// The instance.
    pub status: &'a StatusHandle,
    /// Readiness and what stops it.
    pub ready: (bool, Vec<&'static str>),
    /// The database read, or why it failed.
    pub rows: Result<&'a StatusRows, &'a str>,
    /// Frames/s by show name.
    pub rates: &'a HashMap<String, f64>,
}

/// Fixed layouts and ellipsis everywhere, so that no name can widen the page past its
/// window; `.wrap` cells and `.chips` lists wrap instead.
const STYLE: &str = "*{box-sizing:border-box}\
body{font:13px system-ui,sans-serif;margin:0 auto;padding:8px 16px;max-width:1280px;color:#222}\
h1{font-size:20px;margin:4px 0}h2{font-size:15px;margin:14px 0 4px}\
table{border-collapse:collapse;width:100%;table-layout:fixed}\
td,th{padding:2px 6px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top;\
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}\
th{color:#666;font-weight:600}td.wrap{white-space:normal;overflow-wrap:anywhere}\
.n{text-align:right}.k{color:#666}.bad{color:#b30}.ok{color:#2a7}.note{background:#fee;padding:4px 8px}\
.grid{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}.grid>*{min-width:0}\
.tiles{display:flex;flex-wrap:wrap;gap:6px 28px;margin:6px 0}.tiles b{font-size:16px}\
.chips{display:flex;flex-wrap:wrap;gap:2px 6px;margin:2px 0}\
.chips span{max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;\
background:#f2f2f2;padding:0 4px;border-radius:3px}\
summary{cursor:pointer}svg{max-width:100%}a{color:#25c}";

/// Reopens the `<details>` opened before the reload, records the page's widths (as shown and
/// with every `<details>` open) for tests, and reloads the page.
const SCRIPT: &str = "(function(){var d=document,k='stagehand-open',all=d.querySelectorAll('details[id]'),o=[];\
try{o=JSON.parse(sessionStorage.getItem(k)||'[]')}catch(e){}\
all.forEach(function(e){e.open=o.indexOf(e.id)>=0;e.addEventListener('toggle',function(){\
var n=[];all.forEach(function(x){if(x.open)n.push(x.id)});\
try{sessionStorage.setItem(k,JSON.stringify(n))}catch(e){}})});\
var b=d.body,w=function(){return d.documentElement.scrollWidth};b.setAttribute('data-scroll-width',w());\
var was=[];all.forEach(function(e){was.push(e.open);e.open=true});b.setAttribute('data-scroll-width-open',w());\
all.forEach(function(e,i){e.open=was[i]});\
setTimeout(function(){location.reload()},REFRESH_MS)})();";

/// The whole page.
pub(super) fn page(inputs: &Inputs<'_>) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"></noscript>\
         <title>stagehand</title><style>{STYLE}</style></head><body>"
    );
    out.push_str(&sections::header(inputs));
    if let Err(e) = inputs.rows {
        let _ = write!(
            out,
            "<p class=\"note bad\" id=\"db-note\">database unreachable ({}): the figures below \
             are this instance's own view; the tables read from the database are empty.</p>",
            escape(e)
        );
    }
    out.push_str(&sections::farm(inputs));
    out.push_str(&sections::shows(inputs));
    out.push_str(&sections::instances(inputs));
    out.push_str(&sections::layers(inputs));
    out.push_str(&sections::reservations_and_failures(inputs));
    out.push_str(&sections::clusters(inputs.status));
    let _ = write!(
        out,
        "<p class=\"k\">config generation {} · <a href=\"/status\">/status</a> · \
         <a href=\"/metrics\">/metrics</a> · reloads every {REFRESH_SECS} s</p>\
         <script>{}</script></body></html>",
        inputs
            .status
            .generation
            .load(std::sync::atomic::Ordering::Acquire),
        SCRIPT.replace("REFRESH_MS", &(REFRESH_SECS * 1000).to_string()),
    );
    out
}

/// HTML-escapes text and attribute values.
pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A name that may be ellipsized: the full text stays in its tooltip.
pub(super) fn name(s: &str) -> String {
    let e = escape(s);
    format!("<span title=\"{e}\">{e}</span>")
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A fixed-layout table: `cols` are (header, width, right-aligned); each row's cells are HTML.
pub(super) fn table(cols: &[(&str, &str, bool)], rows: &[Vec<String>], empty: &str) -> String {
    let mut out = String::from("<table><colgroup>");
    for (_, width, _) in cols {
        let _ = write!(out, "<col style=\"width:{width}\">");
    }
    out.push_str("</colgroup><tr>");
    for (head, _, right) in cols {
        let _ = write!(
            out,
            "<th{}>{head}</th>",
            if *right { " class=\"n\"" } else { "" }
        );
    }
    out.push_str("</tr>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td class=\"k\" colspan=\"{}\">{empty}</td></tr>",
            cols.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for (cell, (_, _, right)) in row.iter().zip(cols) {
            let class = if *right {
                " class=\"n\""
            } else if cell.starts_with("<div") || cell.starts_with("<details") {
                " class=\"wrap\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// Cores from Cuebot's hundredths.
pub(super) fn cores(hundredths: i64) -> String {
    let c = hundredths as f64 / 100.0;
    if hundredths % 100 == 0 {
        format!("{c:.0}")
    } else {
        format!("{c:.1}")
    }
}

/// Memory from KB, in GB or TB.
pub(super) fn memory(kb: u64) -> String {
    let gb = kb as f64 / (1024.0 * 1024.0);
    if gb >= 10_000.0 {
        format!("{:.1} TB", gb / 1024.0)
    } else {
        format!("{gb:.0} GB")
    }
}

/// A duration in seconds, coarsely: `42s`, `3m 20s`, `5h 02m`.
pub(super) fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

/// `part` of `whole` with its percentage.
pub(super) fn share(part: &str, whole: &str, ratio: f64) -> String {
    format!(
        "<b>{part}</b> of {whole} <span class=\"k\">({:.0}%)</span>",
        ratio * 100.0
    )
}

/// The booking-rate sparkline: an SVG polyline of `values` scaled to their peak.
pub(super) fn sparkline(values: &[u32]) -> String {
    let max = f64::from(values.iter().copied().max().unwrap_or(0).max(1));
    let (w, h) = (480.0, 48.0);
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        w
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = h - f64::from(*v) / max * (h - 4.0) - 2.0;
            format!("{:.1},{y:.1}", i as f64 * step)
        })
        .collect();
    format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"frames booked per second\"><polyline fill=\"none\" stroke=\"#2a7\" \
         stroke-width=\"2\" points=\"{}\"/></svg>",
        points.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_escape_encode_and_format() {
        assert_eq!(escape("<a&\"b>"), "&lt;a&amp;&quot;b&gt;");
        assert_eq!(url_encode("job one/l+1"), "job%20one%2Fl%2B1");
        assert_eq!(cores(1250), "12.5");
        assert_eq!(cores(800), "8");
        assert_eq!(memory(64 * 1024 * 1024), "64 GB");
        assert_eq!(duration(200.0), "3m 20s");
        assert_eq!(duration(3600.0 * 5.0 + 120.0), "5h 02m");
    }

    #[test]
    fn sparkline_scales_to_the_peak() {
        let svg = sparkline(&[0, 5, 10]);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        assert!(svg.contains("480.0,2.0"), "the peak touches the top: {svg}");
    }

    #[test]
    fn tables_fix_their_columns_and_say_when_empty() {
        let t = table(&[("a", "30%", false), ("b", "70%", true)], &[], "none");
        assert!(t.contains("<col style=\"width:30%\">") && t.contains("colspan=\"2\">none"));
        let t = table(&[("a", "100%", false)], &[vec!["<div>x</div>".into()]], "");
        assert!(t.contains("<td class=\"wrap\"><div>x</div>"), "{t}");
    }
}
