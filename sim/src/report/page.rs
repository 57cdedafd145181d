//! One self-contained HTML page: a scenario's modes, one above the other, on a shared
//! simulated-time axis, drawn as inline SVG.
//!
//! Owns: the page's layout, its stable hooks for tests and readers (`class="lane"
//! data-lane="gateway"`, `class="marker fault"`, `data-mode`, `data-request`,
//! `data-attempt`, `class="... diverges"`), the legend, and the tiny script that records
//! script errors on `<body data-errors>` and sets `data-ok` once the page has loaded.
//! Every piece of text is escaped. Same input, same bytes: nothing here reads a clock.
//! Does not own what is drawn (`timeline`).

use std::fmt::Write as _;

use std::collections::BTreeSet;

use super::escape::html;
use super::scale::Scale;
use super::timeline::{Item, ModeTimeline, Shape};

/// What one page shows.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The scenario's name.
    pub title: String,
    /// Where it came from (a file path, or `explore case 42`).
    pub source: String,
    /// Whether every check passed.
    pub passed: bool,
    /// Every failed check, as the oracle wrote it.
    pub failures: Vec<String>,
    /// The oracle's messages about where the modes diverge, each with the request and the
    /// attempt it names (highlighted on the timelines).
    pub divergences: Vec<(String, u32, String)>,
    pub modes: Vec<ModeTimeline>,
    /// Each mode's trace, shown under its timeline.
    pub traces: Vec<(String, String)>,
    /// Extra sections (a probe's per-mode findings), as (heading, preformatted text).
    pub notes: Vec<(String, String)>,
}

const WIDTH: f64 = 1200.0;
const LABEL: f64 = 120.0;
const RIGHT: f64 = 24.0;
const AXIS: f64 = 34.0;
const LANE: f64 = 40.0;

/// The legend: kind, how it is drawn, what it means.
const LEGEND: &[(&str, &str)] = &[
    ("request", "request (client → gateway, gateway → provider)"),
    (
        "response",
        "response (head, first chunk, end of an attempt)",
    ),
    ("chunk", "chunk the client received (hover: its text)"),
    ("fault", "fault where it fired (kind, k, status)"),
    ("commit", "commit"),
    ("retry", "retry scheduled"),
    ("fallback", "fallback taken"),
    ("cooldown", "deployment cooling down"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("network", "network fault"),
    ("divergence", "first diverging attempt"),
];

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1b1f24;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 4px}
.source{color:#57606a;font-family:ui-monospace,monospace}
.verdict{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;color:#fff}
.verdict.pass{background:#1a7f37}.verdict.fail{background:#cf222e}
.failures{background:#fff1f0;border:1px solid #ffc1bd;padding:8px 12px;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}
.divergence-note{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap}
svg{display:block;background:#fbfcfd;border:1px solid #d0d7de}
.lane line{stroke:#afb8c1;stroke-width:1}
.lane text,.axis text{font:12px ui-monospace,monospace;fill:#24292f}
.axis line{stroke:#d0d7de}
.axis .gap rect{fill:#eaeef2;fill-opacity:.7}.axis .gap text{fill:#57606a}
.arrow line{stroke-width:1.4}
.arrow.request line{stroke:#0969da}.arrow.request path{fill:#0969da}
.arrow.response line{stroke:#8250df}.arrow.response path{fill:#8250df}
.arrow.failed line{stroke:#cf222e;stroke-dasharray:3 2}.arrow.failed path{fill:#cf222e}
.tick.chunk line{stroke:#1a7f37;stroke-width:2}
.marker{stroke:#fff;stroke-width:1}
.marker.fault{fill:#cf222e}.marker.commit{fill:#1a7f37}.marker.retry{fill:#bf8700}
.marker.fallback{fill:#8250df}.marker.completed{fill:#1a7f37}.marker.failed{fill:#cf222e}
.marker.event{fill:#8c959f}.marker.network{fill:#57606a}.marker.reload{fill:#0969da}
.marker.received{fill:#0969da}.marker.end.ok{fill:#1a7f37}.marker.end.error{fill:#cf222e}
.marker.error-event{fill:#cf222e}.marker.client-gone{fill:#57606a}
.bar.cooldown rect{fill:#bf8700;fill-opacity:.28;stroke:#bf8700}
.bar.divergence rect{fill:#ffd33d;fill-opacity:.45;stroke:#d4a72c;stroke-width:2}
text.label{font:11px system-ui,sans-serif;fill:#24292f;stroke:none;paint-order:stroke}
svg.focusing [data-request]:not(.focus){opacity:.15}
.diverges line{stroke-width:3}.marker.diverges{stroke:#d4a72c;stroke-width:3}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;margin:8px 0;font-size:12px}
.legend span.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-2px}
.sw-request{background:#0969da}.sw-response{background:#8250df}.sw-chunk{background:#1a7f37}
.sw-fault{background:#cf222e}.sw-commit{background:#1a7f37}.sw-retry{background:#bf8700}
.sw-fallback{background:#8250df}.sw-cooldown{background:#f3d58b}.sw-completed{background:#1a7f37}
.sw-failed{background:#cf222e}.sw-network{background:#57606a}.sw-divergence{background:#ffd33d}
pre.trace{font:12px ui-monospace,monospace;background:#f6f8fa;padding:8px;overflow:auto;max-height:420px}
"#;

/// Records script errors where `--dump-dom` (and a test) can read them, says the page ran
/// to the end, and on hover brings out one request's items.
const SCRIPT: &str = r#"
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));document.body.setAttribute('data-errors',errors.join(' | '));});
  // Hovering anything of one request brings out all of it and dims the rest.
  document.addEventListener('mouseover',function(e){
    var g=e.target.closest?e.target.closest('[data-request]'):null;
    var svg=e.target.closest?e.target.closest('svg'):null;
    document.querySelectorAll('.focus').forEach(function(n){n.classList.remove('focus');});
    document.querySelectorAll('svg.focusing').forEach(function(n){n.classList.remove('focusing');});
    if(!g||!svg){return;}
    svg.classList.add('focusing');
    var r=g.getAttribute('data-request');
    svg.querySelectorAll('[data-request]').forEach(function(n){if(n.getAttribute('data-request')===r){n.classList.add('focus');}});
  });
  window.addEventListener('load',function(){
    var lanes=document.querySelectorAll('g.lane').length;
    document.body.setAttribute('data-lanes',String(lanes));
    document.body.setAttribute('data-ok',errors.length===0&&lanes>0?'yes':'no');
  });
})();
"#;

/// The whole page.
pub fn render(page: &Page) -> String {
    let end = page
        .modes
        .iter()
        .map(|m| m.end_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let instants: BTreeSet<u64> = page
        .modes
        .iter()
        .flat_map(|m| &m.items)
        .flat_map(|i| {
            [Some(i.at), i.to.as_ref().map(|t| t.1), i.until]
                .into_iter()
                .flatten()
        })
        .collect();
    let scale = Scale::new(&instants, end, LABEL, WIDTH - LABEL - RIGHT);
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<title>{} · switchback timeline</title>",
        html(&page.title)
    );
    let _ = writeln!(out, "<style>{STYLE}</style>");
    let _ = writeln!(out, "<script>{SCRIPT}</script>");
    out.push_str("</head>\n<body data-errors=\"\">\n");
    let (class, word) = if page.passed {
        ("pass", "passed")
    } else {
        ("fail", "FAILED")
    };
    let _ = writeln!(
        out,
        "<h1>{} <span class=\"verdict {class}\" id=\"verdict\" data-passed=\"{}\">{word}</span></h1>",
        html(&page.title),
        page.passed
    );
    let _ = writeln!(out, "<div class=\"source\">{}</div>", html(&page.source));
    if !page.failures.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Failed checks</h2>\n<div class=\"failures\" id=\"failures\">{}</div>",
            html(&page.failures.join("\n"))
        );
    }
    for (label, attempt, message) in &page.divergences {
        let _ = writeln!(
            out,
            "<div class=\"divergence-note\" data-request=\"{}\" data-attempt=\"{attempt}\">The modes diverge: {} attempt {attempt} (highlighted below).\n{}</div>",
            html(label),
            html(label),
            html(message)
        );
    }
    out.push_str("<div class=\"legend\">");
    for (kind, text) in LEGEND {
        let _ = write!(
            out,
            "<span><span class=\"swatch sw-{kind}\"></span>{}</span>",
            html(text)
        );
    }
    out.push_str("</div>\n");
    for mode in &page.modes {
        let _ = writeln!(
            out,
            "<section class=\"mode\" data-mode=\"{}\">\n<h2>{}</h2>",
            html(&mode.mode),
            html(&mode.mode)
        );
        svg(&mut out, mode, &scale, end);
        out.push_str("</section>\n");
    }
    for (heading, text) in &page.notes {
        let _ = writeln!(
            out,
            "<h2>{}</h2>\n<pre class=\"note\">{}</pre>",
            html(heading),
            html(text)
        );
    }
    for (mode, trace) in &page.traces {
        let _ = writeln!(
            out,
            "<details class=\"trace\" data-mode=\"{}\"><summary>{} trace</summary><pre class=\"trace\">{}</pre></details>",
            html(mode),
            html(mode),
            html(trace)
        );
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// A round step for about ten axis ticks.
fn step(end: u64) -> u64 {
    let rough = (end / 10).max(1);
    let mut unit = 1;
    while unit * 10 <= rough {
        unit *= 10;
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * unit)
        .find(|s| *s >= rough)
        .unwrap_or(10 * unit)
}

fn ms(t: u64) -> String {
    if t >= 10_000 && t % 1000 == 0 {
        format!("{} s", t / 1000)
    } else {
        format!("{t} ms")
    }
}

fn svg(out: &mut String, mode: &ModeTimeline, scale: &Scale, end: u64) {
    let height = AXIS + LANE * mode.lanes.len() as f64 + 8.0;
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" data-mode=\"{}\" data-end-ms=\"{end}\">",
        html(&mode.mode)
    );
    // The axis, shared by every mode of the page (one scale). Shortened waits first, as
    // grey bands with their real length.
    out.push_str("<g class=\"axis\">");
    for (from, to) in scale.idle_gaps() {
        let (a, b) = (scale.x(from), scale.x(to));
        let _ = write!(
            out,
            "<g class=\"gap\" data-from-ms=\"{from}\" data-to-ms=\"{to}\"><rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{} ms with nothing happening, drawn shortened</title></rect><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">⋯ {} ⋯</text></g>",
            AXIS - 12.0,
            (b - a).max(1.0),
            height - AXIS + 12.0,
            to - from,
            (a + b) / 2.0,
            AXIS - 2.0,
            ms(to - from)
        );
    }
    let mut s = step(scale.drawn_ms() as u64);
    // Bounded work whatever the run's length.
    s = s.max(end / 10_000);
    let mut t = 0;
    let mut last = f64::NEG_INFINITY;
    while t <= end {
        let px = scale.x(t);
        if !scale.in_idle_gap(t) && px - last >= 56.0 {
            let _ = write!(
                out,
                "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{height:.1}\"/><text x=\"{px:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
                AXIS - 12.0,
                ms(t)
            );
            last = px;
        }
        t += s;
    }
    out.push_str("</g>\n");
    for lane in &mode.lanes {
        let y = lane_y(mode, lane);
        let _ = writeln!(
            out,
            "<g class=\"lane\" data-lane=\"{}\"><line x1=\"{LABEL}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/><text x=\"8\" y=\"{:.1}\">{}</text></g>",
            html(lane),
            WIDTH - RIGHT,
            y + 4.0,
            html(lane)
        );
    }
    // Bars first, so markers and arrows stay on top of them.
    let mut items: Vec<&Item> = mode
        .items
        .iter()
        .filter(|i| i.shape == Shape::Bar)
        .collect();
    items.extend(mode.items.iter().filter(|i| i.shape != Shape::Bar));
    // A marker's label goes on the first of two rows above its lane where it overlaps no
    // other label; where both are taken (a busy stretch) it is left out: the marker's
    // tooltip still says everything.
    let mut taken: std::collections::BTreeMap<(&str, u32), Vec<(f64, f64)>> = Default::default();
    for item in items {
        let level = match (&item.label, item.shape) {
            (Some(text), Shape::Marker) => {
                let (x0, x1) = label_span(scale.x(item.at), text);
                (0..2).find(|level| {
                    let row = taken.entry((item.lane.as_str(), *level)).or_default();
                    let free = row.iter().all(|(a, b)| x1 + 4.0 < *a || *b + 4.0 < x0);
                    if free {
                        row.push((x0, x1));
                    }
                    free
                })
            }
            _ => Some(0),
        };
        draw(out, mode, item, scale, end, level);
    }
    out.push_str("</svg>\n");
}

fn lane_y(mode: &ModeTimeline, lane: &str) -> f64 {
    let i = mode.lanes.iter().position(|l| l == lane).unwrap_or(1);
    AXIS + LANE * i as f64 + LANE / 2.0
}

fn draw(
    out: &mut String,
    mode: &ModeTimeline,
    item: &Item,
    scale: &Scale,
    end: u64,
    level: Option<u32>,
) {
    let shape = match item.shape {
        Shape::Arrow => "arrow",
        Shape::Tick => "tick",
        Shape::Marker => "marker",
        Shape::Bar => "bar",
    };
    let diverges = if item.diverges { " diverges" } else { "" };
    let mut attrs = format!(
        "class=\"{shape} {}{diverges}\" data-lane=\"{}\" data-at-ms=\"{}\"",
        item.kind,
        html(&item.lane),
        item.at
    );
    if let Some(r) = &item.request {
        let _ = write!(attrs, " data-request=\"{}\"", html(r));
    }
    if let Some(a) = item.attempt {
        let _ = write!(attrs, " data-attempt=\"{a}\"");
    }
    let title = format!("<title>{}</title>", html(&item.title));
    let (px, py) = (scale.x(item.at), lane_y(mode, &item.lane));
    match item.shape {
        Shape::Arrow => {
            let (to_lane, to_at) = item.to.clone().unwrap_or((item.lane.clone(), item.at));
            let (qx, qy) = (scale.x(to_at), lane_y(mode, &to_lane));
            let _ = write!(attrs, " data-to-lane=\"{}\"", html(&to_lane));
            // The head: a small triangle pointing along the arrow, ending on the lane.
            let (dx, dy) = (qx - px, qy - py);
            let len = (dx * dx + dy * dy).sqrt().max(1.0);
            let (ux, uy) = (dx / len, dy / len);
            let (bx, by) = (qx - ux * 7.0, qy - uy * 7.0);
            let (nx, ny) = (-uy * 3.5, ux * 3.5);
            let _ = writeln!(
                out,
                "<g {attrs}>{title}<line x1=\"{px:.1}\" y1=\"{py:.1}\" x2=\"{bx:.1}\" y2=\"{by:.1}\"/><path d=\"M{qx:.1},{qy:.1} L{:.1},{:.1} L{:.1},{:.1} Z\"/></g>",
                bx + nx,
                by + ny,
                bx - nx,
                by - ny
            );
        }
        Shape::Tick => {
            let _ = writeln!(
                out,
                "<g {attrs}>{title}<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\"/></g>",
                py - 9.0,
                py + 9.0
            );
        }
        Shape::Marker => {
            let symbol = match item.kind {
                "fault" | "failed" | "end error" | "error-event" => format!(
                    "<path d=\"M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z\"/>",
                    px,
                    py - 8.0,
                    px + 7.0,
                    py + 5.0,
                    px - 7.0,
                    py + 5.0
                ),
                "commit" | "completed" | "end ok" => format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" transform=\"rotate(45 {px:.1} {py:.1})\"/>",
                    px - 5.0,
                    py - 5.0
                ),
                "event" | "received" => {
                    format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\"/>")
                }
                _ => format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5.5\"/>"),
            };
            let label = level.map_or(String::new(), |level| {
                label(item, px + 8.0, py - 8.0 - 11.0 * f64::from(level))
            });
            let _ = writeln!(out, "<g {attrs}>{title}{symbol}{label}</g>");
        }
        Shape::Bar => {
            let until = item.until.unwrap_or(item.at).min(end);
            let w = (scale.x(until) - px).max(4.0);
            let (top, h) = if item.kind == "divergence" {
                (AXIS - 4.0, LANE * mode.lanes.len() as f64 + 8.0)
            } else {
                (py - 7.0, 14.0)
            };
            let left = if item.kind == "divergence" {
                px - 2.0
            } else {
                px
            };
            let _ = writeln!(
                out,
                "<g {attrs}><rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"{h:.1}\">{title}</rect>{}</g>",
                label(item, px + 3.0, py + 18.0)
            );
        }
    }
}

/// Where a marker at `px` puts its label `text` (about 6 px a character): after the
/// marker, or before it near the right edge.
fn label_span(px: f64, text: &str) -> (f64, f64) {
    let w = text.chars().count() as f64 * 6.0;
    if px + 8.0 > WIDTH - 160.0 {
        (px - 8.0 - w, px - 8.0)
    } else {
        (px + 8.0, px + 8.0 + w)
    }
}

/// The item's few words, as SVG text at (x, y); empty without any. Near the right edge it
/// ends at the item instead of starting there, so it stays on the page.
fn label(item: &Item, x: f64, y: f64) -> String {
    item.label.as_ref().map_or(String::new(), |l| {
        let (x, anchor) = if x > WIDTH - 160.0 {
            (x - 16.0, "end")
        } else {
            (x, "start")
        };
        format!(
            "<text class=\"label\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
            html(l)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(step(215), 50);
        assert_eq!(step(10), 1);
        assert_eq!(step(60_000), 10_000);
        assert_eq!(step(1), 1);
    }
}
