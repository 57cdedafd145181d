//! HTML timelines of runs: `switchback report PATH --html DIR`, and the pages `explore` and
//! `probe` write with `--html`.
//!
//! Owns: turning a judged run ([`run::Report`]: its modes' traces and the oracle's
//! failures) into a [`page::Page`], writing one page per scenario plus `index.html`, and the
//! page file names. The pieces, one concept each: [`parse`] reads trace lines back,
//! [`timeline`] turns them into things on lanes, [`scale`] maps time to x, [`page`] draws
//! a page, [`index`] the results table, [`probe_page`] a probe's page, [`escape`] makes
//! text safe. Does not run anything (`run`, `explore`, `probe` do).

pub mod escape;
pub mod index;
pub mod page;
pub mod parse;
pub mod probe_page;
pub mod scale;
pub mod timeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::run::{self, Report};
use crate::world::ModeRun;
use page::Page;
use timeline::{ModeTimeline, TraceInput};

/// One mode's trace with what the timeline needs to know about the world it ran in.
pub struct ModeSource<'a> {
    pub mode: &'a str,
    pub trace: &'a str,
    pub labels: BTreeMap<u64, String>,
    /// Whether the trace holds the gateway's events (not for an external gateway).
    pub gateway_traced: bool,
}

/// Lanes and deployment hosts of a run, from the configs the gateway ran with.
pub fn world_of(runs: &[ModeRun]) -> (Vec<String>, BTreeMap<String, String>) {
    let mut providers: Vec<String> = Vec::new();
    let mut hosts = BTreeMap::new();
    for run in runs {
        for catalog in run.catalogs.iter().chain(std::iter::once(&run.catalog)) {
            for d in &catalog.deployments {
                hosts.insert(d.id.clone(), d.endpoint.host.clone());
                if !providers.contains(&d.endpoint.host) {
                    providers.push(d.endpoint.host.clone());
                }
            }
        }
        for host in run.calls.keys() {
            if !providers.contains(host) {
                providers.push(host.clone());
            }
        }
    }
    (providers, hosts)
}

/// The client label (`r0.0`) of each gateway request number in `run`.
pub fn labels_of(run: &ModeRun) -> BTreeMap<u64, String> {
    run.results
        .iter()
        .filter_map(|r| {
            r.request_id()
                .map(|id| (id, format!("r{}.{}", r.index, r.copy)))
        })
        .collect()
}

/// A page from modes' traces and the oracle's failures.
pub fn page_of(
    title: &str,
    source: &str,
    modes: &[ModeSource<'_>],
    providers: &[String],
    deployment_hosts: &BTreeMap<String, String>,
    failures: &[String],
) -> Page {
    let mut timelines: Vec<ModeTimeline> = modes
        .iter()
        .map(|m| {
            timeline::build(&TraceInput {
                mode: m.mode,
                trace: m.trace,
                providers,
                deployment_hosts,
                labels: &m.labels,
                gateway_traced: m.gateway_traced,
            })
        })
        .collect();
    // The oracle names the request (`[equivalence] request r0.0: ...`), and for differing
    // attempt lists the attempt: that message is the one shown, when there is one. Else the
    // first attempt where the two modes' attempts differ is where to look.
    let mut by_request: BTreeMap<&str, &str> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for f in failures {
        let Some((label, message)) = f
            .strip_prefix("[equivalence] request ")
            .and_then(|r| r.split_once(": "))
        else {
            continue;
        };
        match by_request.get(label) {
            None => {
                order.push(label);
                by_request.insert(label, message);
            }
            Some(_) if named_attempt(message).is_some() => {
                by_request.insert(label, message);
            }
            Some(_) => {}
        }
    }
    let mut divergences = Vec::new();
    for label in order {
        let message = by_request[label];
        let attempt = match timelines.as_slice() {
            [a, b] => {
                named_attempt(message).unwrap_or_else(|| timeline::first_divergence(a, b, label))
            }
            _ => named_attempt(message).unwrap_or(1),
        };
        for t in &mut timelines {
            t.highlight(label, attempt, message);
        }
        divergences.push((label.to_string(), attempt, message.to_string()));
    }
    Page {
        title: title.to_string(),
        source: source.to_string(),
        passed: failures.is_empty(),
        failures: failures.to_vec(),
        divergences,
        modes: timelines,
        traces: modes
            .iter()
            .map(|m| (m.mode.to_string(), m.trace.to_string()))
            .collect(),
        notes: Vec::new(),
    }
}

/// `attempts diverge at attempt 2: ...` → 2.
fn named_attempt(message: &str) -> Option<u32> {
    let rest = message.strip_prefix("attempts diverge at attempt ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The page of a judged scenario.
pub fn page_of_report(report: &Report) -> Page {
    page_of_runs(
        &report.name,
        &report.path.display().to_string(),
        &report.runs,
        &report.failures,
    )
}

/// The page of modes run in simulation (a scenario, or a case `explore` judged).
pub fn page_of_runs(title: &str, source: &str, runs: &[ModeRun], failures: &[String]) -> Page {
    let (providers, hosts) = world_of(runs);
    let modes: Vec<ModeSource<'_>> = runs
        .iter()
        .map(|m| ModeSource {
            mode: m.mode.as_str(),
            trace: &m.trace,
            labels: labels_of(m),
            gateway_traced: true,
        })
        .collect();
    page_of(title, source, &modes, &providers, &hosts, failures)
}

/// The page's file name for a scenario file: its path under `scenarios/` with `/` as `__`
/// (`scenarios/midstream/x.yaml` → `midstream__x.html`).
pub fn page_file_name(path: &Path) -> String {
    let stem = run::snapshot_name(path, crate::scenario::Mode::Stream);
    let stem = stem.strip_suffix("__stream").unwrap_or(&stem);
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.html")
}

/// Writes one page per report and `index.html` into `dir`; returns the index's path.
pub fn write_suite(reports: &[Report], dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut rows = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for r in reports {
        let mut name = page_file_name(&r.path);
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!(
                "{}-{n}.html",
                page_file_name(&r.path).trim_end_matches(".html")
            );
            n += 1;
        }
        std::fs::write(dir.join(&name), page::render(&page_of_report(r)))?;
        rows.push(index::Row::of(r, name));
    }
    let index = dir.join("index.html");
    std::fs::write(&index, index::render(&rows))?;
    Ok(index)
}

/// Writes one page to `path` (creating its folder).
pub fn write_page(page: &Page, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, page::render(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that fails mid-stream with a 429 event after three chunks, cools its
    /// deployment and is continued on the fallback (the corpus's key-fallback case, with a
    /// cooldown and a hostile chunk added).
    const STREAM: &str = r#"     0ms client    r0.0 send stream=true
     4ms gateway   req=1 admitted key=…prod group=lite-group stream=true
     4ms gateway   req=1 plan_resolved chain=[lite-group,flash-group] fallbacks_from=key max_fallbacks=5 mid_stream=continue
     4ms gateway   req=1 attempt_started attempt=1 group=lite-group deployment=lite continuation=false
     7ms vertex    received call=1 model=m stream=true continuation=0 fault=error_event@3
    29ms gateway   req=1 committed attempt=1 deployment=lite
    30ms client    r0.0 head status=200 sse=true retries=0 fallbacks=0 deployment=lite
    30ms client    r0.0 chunk model=m text="The q"
    50ms client    r0.0 chunk model=m text="<script>alert(\"x\")</script>"
    89ms gateway   req=1 attempt_failed attempt=1 deployment=lite class=rate_limited status=429 retry_after_ms=1000 after_chunks=3 mocked=false timeout=-
    89ms gateway   req=1 deployment_cooled deployment=lite for_ms=1000 class=rate_limited
    89ms gateway   req=1 fallback_taken from=lite-group to=flash-group list=fallbacks class=rate_limited
    89ms gateway   req=1 attempt_started attempt=2 group=flash-group deployment=flash continuation=true
    92ms flash     received call=1 model=m stream=true continuation=15 fault=-
   115ms client    r0.0 chunk model=m text=" fox "
   214ms gateway   req=1 completed group=flash-group deployment=flash model=m retries=0 fallbacks=1 chunks=12
   215ms client    r0.0 done
   215ms client    r0.0 end status=200 ok model=m done=true
"#;

    /// The same request in the other mode, without the fallback: attempt 2 differs.
    const NON_STREAM: &str = r#"     0ms client    r0.0 send stream=false
     4ms gateway   req=1 admitted key=…prod group=lite-group stream=false
     4ms gateway   req=1 attempt_started attempt=1 group=lite-group deployment=lite continuation=false
     7ms vertex    received call=1 model=m stream=true continuation=0 fault=error_event@3
    89ms gateway   req=1 attempt_failed attempt=1 deployment=lite class=rate_limited status=429 retry_after_ms=1000 after_chunks=3 mocked=false timeout=-
    89ms gateway   req=1 retry_scheduled group=lite-group deployment=lite delay_ms=10
    99ms gateway   req=1 attempt_started attempt=2 group=lite-group deployment=lite continuation=false
   102ms vertex    received call=2 model=m stream=true continuation=0 fault=-
   200ms gateway   req=1 completed group=lite-group deployment=lite model=m retries=1 fallbacks=0 chunks=12
   201ms client    r0.0 head status=200 sse=false retries=1 fallbacks=0 deployment=lite
   201ms client    r0.0 end status=200 ok model=m done=false
"#;

    fn page(failures: &[String]) -> String {
        let providers = vec!["vertex".to_string(), "flash".to_string()];
        let hosts: BTreeMap<String, String> = [("lite", "vertex"), ("flash", "flash")]
            .into_iter()
            .map(|(d, h)| (d.to_string(), h.to_string()))
            .collect();
        let labels: BTreeMap<u64, String> = [(1, "r0.0".to_string())].into_iter().collect();
        let modes = [
            ModeSource {
                mode: "non_stream",
                trace: NON_STREAM,
                labels: labels.clone(),
                gateway_traced: true,
            },
            ModeSource {
                mode: "stream",
                trace: STREAM,
                labels,
                gateway_traced: true,
            },
        ];
        page::render(&page_of(
            "a <b>mid-stream</b> 429",
            "scenarios/x.yaml",
            &modes,
            &providers,
            &hosts,
            failures,
        ))
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn the_page_has_lanes_and_every_kind_of_marker() {
        let html = page(&[]);
        for lane in ["client", "gateway", "vertex", "flash"] {
            assert_eq!(
                count(&html, &format!("<g class=\"lane\" data-lane=\"{lane}\">")),
                2,
                "lane {lane} in both modes"
            );
        }
        assert_eq!(
            count(&html, "class=\"marker fault\" data-lane=\"vertex\""),
            2
        );
        assert!(html.contains(
            "fault kind=error_event k=3 status=429 (class rate_limited) on lite, attempt 1"
        ));
        assert_eq!(
            count(&html, "class=\"marker commit\""),
            1,
            "only the stream commits"
        );
        assert_eq!(count(&html, "class=\"marker fallback\""), 1);
        assert_eq!(count(&html, "class=\"marker retry\""), 1);
        assert_eq!(
            count(&html, "class=\"bar cooldown\" data-lane=\"vertex\""),
            1
        );
        assert_eq!(count(&html, "class=\"tick chunk\" data-lane=\"client\""), 3);
        assert!(html.contains("<title>30 ms r0.0 chunk &quot;The q&quot; (model m)</title>"));
        assert_eq!(
            count(&html, "class=\"arrow request\" data-lane=\"client\""),
            2
        );
        assert_eq!(
            count(
                &html,
                "class=\"arrow request upstream\" data-lane=\"gateway\""
            ),
            4
        );
        assert!(
            html.contains("data-to-lane=\"flash\""),
            "the continuation goes to flash"
        );
        assert_eq!(count(&html, "class=\"marker completed\""), 2);
        assert_eq!(
            count(&html, " diverges\""),
            0,
            "nothing diverges without the oracle saying so"
        );
        assert!(html.contains("id=\"verdict\" data-passed=\"true\""));
    }

    #[test]
    fn every_piece_of_text_is_escaped() {
        let html = page(&["[stream] content <i>differs</i> & more".to_string()]);
        assert!(
            !html.contains("<script>alert"),
            "chunk text reached the page raw"
        );
        // In the chunk's tooltip (quoted as the trace quotes it) and in the trace below.
        assert!(
            html.contains(
                "chunk &quot;&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;&quot;"
            )
        );
        assert!(
            html.contains("text=&quot;&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;&quot;")
        );
        assert!(
            !html.contains("<b>mid-stream</b>"),
            "the scenario name reached the page raw"
        );
        assert!(html.contains("a &lt;b&gt;mid-stream&lt;/b&gt; 429"));
        assert!(html.contains("content &lt;i&gt;differs&lt;/i&gt; &amp; more"));
        // The only scripts are the page's own.
        assert_eq!(count(&html, "<script>"), 1);
    }

    #[test]
    fn the_first_diverging_attempt_is_highlighted_with_the_oracles_message() {
        let message = "attempts diverge at attempt 2: non_stream lite-group/lite: ok, stream flash-group/flash: ok";
        let html = page(&[format!("[equivalence] request r0.0: {message}")]);
        assert_eq!(
            count(
                &html,
                "class=\"bar divergence diverges\" data-lane=\"gateway\""
            ),
            2,
            "a band in each mode"
        );
        assert!(html.contains("data-request=\"r0.0\" data-attempt=\"2\""));
        assert!(html.contains(&escape::html(message)));
        assert!(html.contains("class=\"divergence-note\""));
        // Attempt 2's own items are marked, attempt 1's are not.
        assert!(html.contains("class=\"arrow request upstream diverges\""));
        assert!(html.contains("id=\"verdict\" data-passed=\"false\""));
    }

    #[test]
    fn without_an_attempt_number_the_first_different_attempt_is_found() {
        let html = page(&[
            "[equivalence] request r0.0: serving deployment or model differs: ...".to_string(),
        ]);
        assert!(
            html.contains("class=\"divergence-note\" data-request=\"r0.0\" data-attempt=\"2\"")
        );
    }

    #[test]
    fn the_same_input_gives_the_same_bytes() {
        let failures = ["[equivalence] request r0.0: outcome differs".to_string()];
        assert_eq!(page(&failures), page(&failures));
    }

    #[test]
    fn page_names_follow_the_scenario_path() {
        assert_eq!(
            page_file_name(Path::new("scenarios/midstream/continue_at_chunk_1.yaml")),
            "midstream__continue_at_chunk_1.html"
        );
    }
}
