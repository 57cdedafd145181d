//! `index.html`: the results table of a `report --html` run, linking each scenario's page.
//!
//! Owns: the table's rows (scenario, file, each mode's verdict, attempts, serving
//! deployment, simulated time, failed checks) and their markup. Wall-clock times are left
//! out on purpose: the same corpus gives the same index, byte for byte.

use std::fmt::Write as _;

use super::escape::html;
use crate::run::Report;

/// One scenario's row.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub file: String,
    pub page: String,
    pub passed: bool,
    /// Per mode: (mode, verdict ok, attempts, serving, simulated ms).
    pub modes: Vec<(String, bool, usize, String, u128)>,
    pub failures: usize,
}

impl Row {
    pub fn of(r: &Report, page: String) -> Row {
        let modes = r
            .runs
            .iter()
            .map(|m| {
                let (attempts, serving) = crate::run::attempts_and_serving(m);
                // As the results table says it: a few names, or how many.
                let serving = if serving.len() > 3 {
                    vec![format!("{} kinds", serving.len())]
                } else {
                    serving
                };
                (
                    m.mode.as_str().to_string(),
                    r.mode_passed(m.mode),
                    attempts,
                    serving.join(", "),
                    m.elapsed.as_millis(),
                )
            })
            .collect();
        Row {
            name: r.name.clone(),
            file: r.path.display().to_string(),
            page,
            passed: r.passed(),
            modes,
            failures: r.failures.len(),
        }
    }
}

/// The index page.
pub fn render(rows: &[Row]) -> String {
    let passed = rows.iter().filter(|r| r.passed).count();
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>switchback report</title>\n<style>\nbody{font:14px/1.4 system-ui,sans-serif;margin:16px}\ntable{border-collapse:collapse}\ntd,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}\ntd.num{text-align:right}\n.ok{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}\ncode{font-size:12px}\n</style>\n</head>\n<body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>switchback report</h1>\n<p id=\"summary\" data-scenarios=\"{}\" data-passed=\"{passed}\">{passed} of {} scenarios passed.</p>",
        rows.len(),
        rows.len()
    );
    out.push_str("<table id=\"results\">\n<tr><th>scenario</th><th>file</th><th>mode</th><th>verdict</th><th>attempts</th><th>serving</th><th>simulated</th><th>failed checks</th></tr>\n");
    for r in rows {
        let span = r.modes.len().max(1);
        let verdict = |ok: bool| if ok { ("ok", "ok") } else { ("fail", "FAIL") };
        let _ = write!(
            out,
            "<tr class=\"scenario\" data-passed=\"{}\"><td rowspan=\"{span}\"><a href=\"{}\">{}</a></td><td rowspan=\"{span}\"><code>{}</code></td>",
            r.passed,
            html(&r.page),
            html(&r.name),
            html(&r.file)
        );
        if r.modes.is_empty() {
            let _ = writeln!(
                out,
                "<td>-</td><td class=\"fail\">FAIL</td><td></td><td></td><td></td><td class=\"num\">{}</td></tr>",
                r.failures
            );
            continue;
        }
        for (i, (mode, ok, attempts, serving, sim)) in r.modes.iter().enumerate() {
            if i > 0 {
                out.push_str("<tr>");
            }
            let (class, word) = verdict(*ok);
            let _ = write!(
                out,
                "<td>{}</td><td class=\"{class}\">{word}</td><td class=\"num\">{attempts}</td><td>{}</td><td class=\"num\">{sim} ms</td>",
                html(mode),
                html(serving)
            );
            if i == 0 {
                let _ = write!(
                    out,
                    "<td class=\"num\" rowspan=\"{span}\">{}</td>",
                    r.failures
                );
            }
            out.push_str("</tr>\n");
        }
    }
    out.push_str("</table>\n</body>\n</html>\n");
    out
}
