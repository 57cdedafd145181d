//! Watching a runtime's event loop for stalls: a task that sleeps a short tick and measures
//! how late it wakes.
//!
//! Owns: [`StallWatch`] (the worst lateness seen, and a report of each one past a
//! threshold). A task can only wake late when its runtime's thread is busy elsewhere (a
//! long poll, a blocking call) or not running at all (the machine's other work), so a late
//! tick says the thread stalled, and for how long, whatever it was doing. `serve` runs one
//! per worker and logs each stall (`worker_stalled`); `bench-overhead` runs one on its own
//! runtime (the load generator's and the fakes'), so that a stall in a run is placed in the
//! gateway or in the harness. Does not own what a stall means: the caller reports it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the watch sleeps between looks at the clock.
pub const TICK: Duration = Duration::from_millis(10);

/// How late a wake-up is: the time past `slept_at + tick` (none if on time or early).
pub fn lateness(slept_at: Instant, woke_at: Instant, tick: Duration) -> Duration {
    woke_at.saturating_duration_since(slept_at + tick)
}

/// A running watch on the current runtime; stopped when dropped.
pub struct StallWatch {
    worst_nanos: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl StallWatch {
    /// Starts watching the runtime this is called in. `report` gets every lateness over
    /// `threshold`.
    pub fn start(threshold: Duration, report: impl Fn(Duration) + Send + 'static) -> StallWatch {
        let worst_nanos = Arc::new(AtomicU64::new(0));
        let worst = worst_nanos.clone();
        let task = tokio::spawn(async move {
            loop {
                let slept_at = Instant::now();
                tokio::time::sleep(TICK).await;
                let late = lateness(slept_at, Instant::now(), TICK);
                let nanos = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
                worst.fetch_max(nanos, Ordering::Relaxed);
                if late > threshold {
                    report(late);
                }
            }
        });
        StallWatch { worst_nanos, task }
    }

    /// The latest the watch has woken so far.
    pub fn worst(&self) -> Duration {
        Duration::from_nanos(self.worst_nanos.load(Ordering::Relaxed))
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lateness_counts_only_the_time_past_the_tick() {
        let t = Instant::now();
        let tick = Duration::from_millis(10);
        assert_eq!(
            lateness(t, t + Duration::from_millis(4), tick),
            Duration::ZERO
        );
        assert_eq!(lateness(t, t + tick, tick), Duration::ZERO);
        assert_eq!(
            lateness(t, t + Duration::from_millis(35), tick),
            Duration::from_millis(25)
        );
    }

    // A thread blocked for 150 ms is reported as a stall of at least the time it was
    // blocked less one tick (the watch may have been asleep for up to a tick of it). Real
    // time: a blocked thread is exactly what a paused clock cannot show.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_thread_is_reported() {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = reports.clone();
        let watch = StallWatch::start(Duration::from_millis(50), move |late| {
            seen.lock().unwrap().push(late);
        });
        // Let the watch start sleeping, then hold the thread.
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(150));
        let deadline = Instant::now() + Duration::from_secs(5);
        while reports.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no stall reported");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let late = reports.lock().unwrap()[0];
        assert!(late >= Duration::from_millis(150) - TICK, "{late:?}");
        assert!(watch.worst() >= late);
    }
}
