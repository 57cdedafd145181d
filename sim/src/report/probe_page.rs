//! A probe's page (`probe --html FILE`): what each mode's client and the fakes saw, against
//! an external gateway.
//!
//! Owns: splitting the probe's one real-clock trace (client and fake lines; an external
//! gateway writes none) into its two modes, each from its own first send, and the page:
//! both modes' timelines on one axis, the verdict's reasons as the failed checks, and the
//! side-by-side report as text. Does not own probing (`probe`).

use std::collections::BTreeMap;

use super::page::Page;
use super::{ModeSource, page_of};
use crate::probe::{ProbeRun, Verdict};
use crate::scenario::Scenario;

/// The trace of each mode, in the order the modes ran, each line's time counted from that
/// mode's first line. Probe sends one request at a time, so a provider's line belongs to
/// the mode of the last request sent; the client's `send stream=...` says which that is.
pub fn split_by_mode(trace: &str) -> Vec<(String, String)> {
    let mut modes: Vec<(String, u64, String)> = Vec::new();
    for raw in trace.lines() {
        let Some(line) = super::parse::line(raw) else {
            continue;
        };
        if line.host == "client" && line.text.contains(" send stream=") {
            let mode = if line.text.ends_with("stream=true") {
                "stream"
            } else {
                "non_stream"
            };
            if modes.last().is_none_or(|(m, _, _)| m != mode) {
                modes.push((mode.to_string(), line.at_ms, String::new()));
            }
        }
        let Some((_, start, text)) = modes.last_mut() else {
            continue;
        };
        let at = line.at_ms.saturating_sub(*start);
        text.push_str(&format!("{at:>6}ms {:<9} {}\n", line.host, line.text));
    }
    modes.into_iter().map(|(m, _, t)| (m, t)).collect()
}

/// The page of a probe of `scenario` (read from `source`), from its verdict, its text
/// report and the trace its client and fakes wrote.
pub fn page_of_probe(
    scenario: &Scenario,
    source: &str,
    run: &ProbeRun,
    report_text: &str,
    trace: &str,
) -> Page {
    let providers: Vec<String> = scenario.providers.iter().map(|p| p.host.clone()).collect();
    let mut hosts = BTreeMap::new();
    for d in &scenario.gateway.model_list {
        if let (Some(id), Some(base)) = (&d.model_info.id, &d.litellm_params.api_base) {
            if let Ok(e) = switchback::upstream::Endpoint::parse(base) {
                hosts.insert(id.clone(), e.host);
            }
        }
    }
    let split = split_by_mode(trace);
    let modes: Vec<ModeSource<'_>> = split
        .iter()
        .map(|(mode, text)| ModeSource {
            mode,
            trace: text,
            labels: BTreeMap::new(),
            gateway_traced: false,
        })
        .collect();
    let mut failures: Vec<String> = Vec::new();
    if let Some(reason) = &run.could_not_run {
        failures.push(format!("could not run: {reason}"));
    }
    for p in &run.pairs {
        for r in &p.judgement.reasons {
            failures.push(format!(
                "[probe] request {}: {}: {r}",
                p.label,
                p.judgement.verdict.as_str()
            ));
        }
    }
    let mut page = page_of(
        &scenario.name,
        &format!("probe of {source}: {}", run.verdict.as_str()),
        &modes,
        &providers,
        &hosts,
        &failures,
    );
    page.passed = run.verdict == Verdict::Equivalent;
    page.notes.push((
        "What each mode's client and the fakes saw".to_string(),
        report_text.to_string(),
    ));
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "  1000ms client    r0.0 send stream=false
  1003ms a         received call=1 model=m stream=true continuation=0 fault=http@0
  1010ms client    r0.0 head status=200 sse=false retries=- fallbacks=- deployment=-
  1010ms client    r0.0 end status=200 ok model=m done=false
  2500ms client    r0.0 send stream=true
  2504ms a         received call=1 model=m stream=true continuation=0 fault=http@0
  2510ms client    r0.0 head status=429 sse=false retries=- fallbacks=- deployment=-
  2510ms client    r0.0 end status=429 error status=429 type=rate_limit_error
";

    #[test]
    fn each_mode_starts_at_its_first_send() {
        let modes = split_by_mode(TRACE);
        assert_eq!(modes.len(), 2);
        assert_eq!(modes[0].0, "non_stream");
        assert_eq!(modes[1].0, "stream");
        assert!(
            modes[1]
                .1
                .starts_with("     0ms client    r0.0 send stream=true\n")
        );
        assert!(modes[1].1.contains("     4ms a         received call=1"));
        assert_eq!(modes[0].1.lines().count(), 4);
    }

    #[test]
    fn the_page_shows_both_modes_the_scripted_fault_and_the_report() {
        let scenario = Scenario::load(
            "x.yaml",
            "name: probe page\ngateway:\n  allow_anonymous: true\n  model_list:\n    - {model_name: chat, litellm_params: {model: openai/m, api_base: \"http://a:8000/v1\"}, model_info: {id: da}}\nproviders:\n  - host: a\n    default: {fault: {kind: http, status: 429}}\nrequests:\n  - model: chat\n",
        )
        .expect("scenario");
        let run = ProbeRun {
            verdict: Verdict::Different,
            could_not_run: None,
            pairs: Vec::new(),
            whole_run: Vec::new(),
            unchecked: Vec::new(),
        };
        let html = super::super::page::render(&page_of_probe(
            &scenario,
            "x.yaml",
            &run,
            "request r0.0\n  outcome 200 <> error 429",
            TRACE,
        ));
        for mode in ["non_stream", "stream"] {
            assert!(html.contains(&format!("<section class=\"mode\" data-mode=\"{mode}\">")));
        }
        assert_eq!(
            html.matches("class=\"arrow request upstream\" data-lane=\"gateway\"")
                .count(),
            2
        );
        assert_eq!(
            html.matches("class=\"marker fault\" data-lane=\"a\"")
                .count(),
            2
        );
        assert!(html.contains("scripted http@0"));
        assert!(html.contains("outcome 200 &lt;&gt; error 429"));
        assert!(html.contains("id=\"verdict\" data-passed=\"false\""));
    }
}
