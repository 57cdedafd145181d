//! A fault scripted "after chunk k" happens after exactly k chunks reached the gateway,
//! whatever the delays: a zero delay before the fault must not let it overtake the chunks
//! before it, and a fault after the last chunk (before `[DONE]`) must be reachable.
//!
//! The gateway's own `attempt_failed ... after_chunks=N` says how many content chunks it
//! received; the stream client's continuation prefix says the same from the other side.

use switchback::trace::Event;
use switchback_sim::scenario::{Mode, Scenario};
use switchback_sim::world;

/// Chunks of the scripted answer.
const CHUNKS: usize = 3;

fn scenario(kind: &str, after: usize, delays: [u64; CHUNKS]) -> Scenario {
    let yaml = format!(
        r#"name: fault after chunk {after}
seed: 3
gateway:
  allow_anonymous: true
  model_list:
    - {{model_name: chat, litellm_params: {{model: openai/m, api_base: "http://a:8000/v1"}}, model_info: {{id: a}}}}
    - {{model_name: backup, litellm_params: {{model: openai/m, api_base: "http://b:8000/v1"}}, model_info: {{id: b}}}}
  router_settings: {{num_retries: 0, stream_timeout: 1, fallbacks: [{{chat: [backup]}}]}}
providers:
  - host: a
    default: {{chunks: ["ab", "cd", "ef"], delays_ms: {delays:?}, fault: {{kind: {kind}, after_chunks: {after}}}}}
  - host: b
    default: {{chunks: ["ab", "cd", "ef"], delay_ms: 1}}
requests: [{{model: chat}}]
"#
    );
    Scenario::load("fault_offsets.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The `after_chunks` of the primary's failed attempt, as the gateway counted.
fn chunks_seen(scenario: &Scenario, mode: Mode) -> Option<u32> {
    let run = world::run(scenario, mode).expect("runs");
    assert!(run.hang.is_none(), "{:?}", run.hang);
    run.records.iter().find_map(|r| match &r.event {
        Event::AttemptFailed { after_chunks, .. } => Some(*after_chunks),
        _ => None,
    })
}

#[test]
fn a_fault_after_chunk_k_delivers_exactly_k_chunks_whatever_the_delays() {
    let mut wrong = Vec::new();
    for kind in ["reset", "error_event", "malformed", "stall"] {
        for after in 1..=CHUNKS {
            for delays in [[0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5], [5, 5, 5]] {
                // The client's mode does not matter here: the gateway always streams upstream.
                let seen = chunks_seen(&scenario(kind, after, delays), Mode::Stream);
                if seen != Some(after as u32) {
                    wrong.push(format!(
                        "{kind} after {after}, delays {delays:?}: the gateway saw {seen:?} chunks"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// "Reset after the final chunk, before `[DONE]`": the stream client keeps the whole text
/// from the first deployment, and the fallback is asked to continue after all of it.
#[test]
fn a_reset_after_the_final_chunk_is_reachable() {
    let s = scenario("reset", CHUNKS, [0, 0, 0]);
    let run = world::run(&s, Mode::Stream).expect("runs");
    let continued = run.calls["b"].first().and_then(|c| c.continuation.clone());
    assert_eq!(
        continued.as_deref(),
        Some("abcdef"),
        "the fallback should continue after every chunk of the first answer\n{}",
        run.trace
    );
}

/// A fake sends no Date header of its own: hyper's automatic one is read from the real
/// clock, and the engine measures an HTTP-date Retry-After against the response's Date, so
/// real time reached the trace. Without one, the engine measures against its own clock,
/// the simulated one: the wait ends at the date the header names, in simulated time.
#[test]
fn an_http_date_retry_after_is_measured_in_simulated_time() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/retries/retry_after_http_date_without_date.yaml");
    let s = Scenario::load_file(&path).expect("corpus file");
    for mode in [Mode::NonStream, Mode::Stream] {
        let run = world::run(&s, mode).expect("runs");
        let (at, wait) = run
            .records
            .iter()
            .find_map(|r| match &r.event {
                Event::AttemptFailed { retry_after, .. } => Some((r.at, *retry_after)),
                _ => None,
            })
            .expect("the 429");
        // 22:13:22 is 2 s after the epoch (22:13:20).
        assert_eq!(
            wait.map(|w| at + w),
            Some(std::time::Duration::from_secs(2)),
            "{}: the 429 came at {at:?} and the gateway waits {wait:?}",
            mode.as_str()
        );
    }
}
