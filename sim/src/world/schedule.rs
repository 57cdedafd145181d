//! When the simulated client sends each copy of each request, so that the gateway admits
//! them in the same order in both modes.
//!
//! Owns: releasing copies on the scenario's schedule (`at_ms`, `repeat`, `concurrency`) and
//! collecting their results. Does not own what one exchange does (`client::send_spec`).
//!
//! A copy that waits for a free slot (`concurrency`) is released by another copy's end. Two
//! copies of different requests can end in the same simulated instant, and the client's
//! work to finish each differs by mode (SSE frames against one body): released as each slot
//! frees, they would leave in an order that depends on the mode, be admitted in that order,
//! and take the gateway's shared state (load balancing draws, cooldowns) in a different
//! order. So one dispatcher releases every copy, in (request, copy) order: copies due at
//! `at_ms` at that instant, and copies whose slot freed one millisecond after the instant
//! it freed (by then every copy that ended in that instant has). Copies released together
//! leave in that order, reach the gateway in that order (the client link's latency is
//! fixed), and are admitted in that order, whatever the mode.
//!
//! Live mode keeps `client::run_requests` (its clock is real: there is no instant to share).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{self, ClientResult, Clock, Target};
use crate::scenario::{Mode, RequestSpec};
use crate::trace::TraceSink;

/// How long after a slot frees the copies waiting for it are released.
pub const RELEASE_AFTER_END: Duration = Duration::from_millis(1);

/// Sends every request of a scenario on its schedule and returns the results ordered by
/// (request index, copy).
pub async fn run_requests(
    target: &Target,
    requests: &[RequestSpec],
    sequential: bool,
    mode: Mode,
    sink: Arc<dyn TraceSink>,
    clock: Clock,
) -> Vec<ClientResult> {
    if sequential {
        // One copy at a time: nothing to order.
        return client::run_requests(target, requests, sequential, mode, sink, clock).await;
    }
    let start = Instant::now();
    let results: Arc<Mutex<Vec<ClientResult>>> = Arc::default();
    // Requests whose copies ended since the dispatcher last looked.
    let ended: Arc<Mutex<Vec<usize>>> = Arc::default();
    let woken = Arc::new(Notify::new());
    let mut next = vec![0u32; requests.len()];
    let mut in_flight = vec![0u32; requests.len()];
    let mut copies = Vec::new();
    loop {
        let now = start.elapsed();
        for (index, spec) in requests.iter().enumerate() {
            while next[index] < spec.repeat
                && in_flight[index] < spec.concurrency
                && Duration::from_millis(spec.at_ms) <= now
            {
                let copy = next[index];
                next[index] += 1;
                in_flight[index] += 1;
                let (target, spec, sink, clock) =
                    (target.clone(), spec.clone(), sink.clone(), clock.clone());
                let (results, ended, woken) = (results.clone(), ended.clone(), woken.clone());
                copies.push(tokio::spawn(async move {
                    let r = client::send_spec(
                        &target,
                        &spec,
                        index,
                        copy,
                        mode,
                        spec.key.as_deref(),
                        sink.as_ref(),
                        clock.as_ref(),
                    )
                    .await;
                    results.lock().expect("results").push(r);
                    ended.lock().expect("ended").push(index);
                    woken.notify_one();
                }));
            }
        }
        let waiting = requests
            .iter()
            .enumerate()
            .filter(|(i, s)| next[*i] < s.repeat);
        let next_due = waiting
            .clone()
            .map(|(_, s)| Duration::from_millis(s.at_ms))
            .filter(|at| *at > now)
            .min();
        if waiting.count() == 0 {
            break;
        }
        tokio::select! {
            biased;
            () = woken.notified() => tokio::time::sleep(RELEASE_AFTER_END).await,
            () = sleep_until_some(next_due.map(|at| start + at)) => {}
        }
        for index in std::mem::take(&mut *ended.lock().expect("ended")) {
            in_flight[index] -= 1;
        }
    }
    for c in copies {
        // A panicking request task is a harness bug: surface it.
        if let Err(e) = c.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let mut results = std::mem::take(&mut *results.lock().expect("results"));
    results.sort_by_key(|r| (r.index, r.copy));
    results
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
