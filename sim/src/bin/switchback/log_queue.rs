//! The bounded queue between the threads that log and the thread that writes the lines.
//!
//! Owns: [`LogQueue`] (a worker's side: a line is appended to a shared buffer, or dropped
//! and counted when the queue is full; it never waits for the writer), the writer thread
//! (it wakes on a period, not per line, and writes whatever gathered in one call), and the
//! flush at exit, bounded in time. Does not own how a line looks (`logs`: the subscriber).
//!
//! Why a period, not a wake-up per line: on a 2-core machine a thread woken per request
//! took a core from the request it was woken by (the worker woke it before writing the
//! response, and the scheduler often ran it first). Measured with `switchback load` at 200
//! requests a second, `--log-level warn` (no access line, no wake-up) answered about 200 µs
//! sooner at p50 than `info` with the per-line writer (`tracing-appender`'s, which also
//! spun in `sched_yield` before sleeping). Lines now reach stderr at most
//! [`GATHER_INTERVAL`] after they are logged; a queue half full wakes the writer at once, so
//! a burst is not dropped for want of a wake-up.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long lines gather before the writer writes them.
pub const GATHER_INTERVAL: Duration = Duration::from_millis(25);

/// How long the exit waits for queued lines to be written to a stderr that no longer drains.
pub const EXIT_FLUSH_WAIT: Duration = Duration::from_secs(1);

/// The most a batch buffer keeps between writes (a burst may grow it further, once).
const RETAINED_BATCH_BYTES: usize = 64 * 1024;

/// How the writer paces itself (the constants above in `serve`; shorter in tests).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub gather: Duration,
    pub exit_wait: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            gather: GATHER_INTERVAL,
            exit_wait: EXIT_FLUSH_WAIT,
        }
    }
}

/// The lines waiting for the writer.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the queue reaches its high-water mark, and at close.
    wake: Condvar,
    limit_lines: usize,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while the lock is held leaves a buffer of whole lines: still fit to write.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Half the queue: past it the writer is woken rather than left to its period.
    fn high_water(&self) -> usize {
        self.limit_lines.div_ceil(2)
    }
}

/// The logging side of the queue: cheap to clone, one per subscriber.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

/// How many lines were dropped because the queue was full.
#[derive(Clone)]
pub struct DroppedLines(Arc<Shared>);

impl DroppedLines {
    pub fn get(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread: dropping it closes the queue and writes what is left, waiting at most
/// the pace's `exit_wait`.
pub struct Writer {
    shared: Arc<Shared>,
    finished: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
    exit_wait: Duration,
}

impl LogQueue {
    /// A queue of at most `limit_lines` lines (at least 1), written to `out` by a thread
    /// named `thread_name`.
    pub fn start(
        out: impl Write + Send + 'static,
        limit_lines: usize,
        pace: Pace,
        thread_name: &str,
    ) -> std::io::Result<(LogQueue, Writer)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            limit_lines: limit_lines.max(1),
            dropped: AtomicU64::new(0),
        });
        let (done, finished) = mpsc::channel();
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || {
                write_until_closed(&for_thread, out, pace.gather);
                let _ = done.send(());
            })?;
        Ok((
            LogQueue {
                shared: shared.clone(),
            },
            Writer {
                shared,
                finished,
                thread: Some(thread),
                exit_wait: pace.exit_wait,
            },
        ))
    }

    /// Queues one line (the bytes of one write); drops and counts it when the queue is full.
    pub fn push(&self, line: &[u8]) {
        let shared = &*self.shared;
        let mut pending = shared.lock();
        if pending.lines >= shared.limit_lines || pending.closed {
            drop(pending);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes.extend_from_slice(line);
        pending.lines += 1;
        let wake = pending.lines == shared.high_water();
        drop(pending);
        if wake {
            shared.wake.notify_one();
        }
    }

    pub fn dropped(&self) -> DroppedLines {
        DroppedLines(self.shared.clone())
    }
}

/// The writer's loop: every `gather` (or at once when woken), it takes what is queued and
/// writes it in one call; after the close it writes what is left and returns.
fn write_until_closed(shared: &Shared, mut out: impl Write, gather: Duration) {
    let mut batch = Vec::new();
    loop {
        let high_water = shared.high_water();
        // Waits out the period (spurious wake-ups included) unless the queue fills or closes.
        let mut pending = shared
            .wake
            .wait_timeout_while(shared.lock(), gather, |p| p.lines < high_water && !p.closed)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        let closed = pending.closed;
        let lines = std::mem::take(&mut pending.lines);
        // The buffers trade places, so neither is allocated again once grown.
        std::mem::swap(&mut pending.bytes, &mut batch);
        drop(pending);
        if !batch.is_empty() && out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            // A stderr that fails (its reader gone) loses these lines: said as dropped.
            shared.dropped.fetch_add(lines as u64, Ordering::Relaxed);
        }
        batch.clear();
        if batch.capacity() > RETAINED_BATCH_BYTES {
            // A burst's buffer is let go: the resident memory of a quiet gateway stays small.
            batch = Vec::new();
        }
        if closed {
            return;
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        // A writer stuck on a stderr that no longer drains is left behind, not waited for.
        if self.finished.recv_timeout(self.exit_wait).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// `tracing-subscriber`'s writer: each event's line is written in one call, queued as one.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(self)
    }
}

pub struct LineWriter<'a>(&'a LogQueue);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);
    /// How long a test waits for something that should happen at once: a failure, not a hang.
    const BOUND: Duration = Duration::from_secs(30);

    /// A sink that reports each write on a channel, and can be made to block until released.
    struct Sink {
        writes: mpsc::Sender<Vec<u8>>,
        gate: Option<mpsc::Receiver<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes.send(buf.to_vec()).expect("test alive");
            if let Some(gate) = &self.gate {
                let _ = gate.recv();
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn pace(gather: Duration) -> Pace {
        Pace {
            gather,
            exit_wait: BOUND,
        }
    }

    #[test]
    fn lines_logged_within_one_interval_are_written_in_one_call_in_order() {
        let (writes, written) = mpsc::channel();
        let sink = Sink { writes, gate: None };
        let (queue, writer) = LogQueue::start(sink, 10_000, pace(LONG), "t").unwrap();
        for n in 0..1000 {
            queue.push(format!("line {n}\n").as_bytes());
            // The writer gets every chance to run: it must not write before its time.
            std::thread::yield_now();
        }
        // No wake-up per line: nothing is written before the interval or the close.
        assert!(written.try_recv().is_err());
        drop(writer);
        let all: Vec<Vec<u8>> = written.try_iter().collect();
        let expected: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(all, vec![expected.into_bytes()]);
        assert_eq!(queue.dropped().get(), 0);
    }

    #[test]
    fn the_writer_writes_on_its_period_without_being_woken() {
        let (writes, written) = mpsc::channel();
        let sink = Sink { writes, gate: None };
        let (queue, _writer) =
            LogQueue::start(sink, 100, pace(Duration::from_millis(1)), "t").unwrap();
        queue.push(b"one\n");
        assert_eq!(written.recv_timeout(BOUND).unwrap(), b"one\n");
    }

    #[test]
    fn a_queue_half_full_wakes_the_writer_at_once() {
        let (writes, written) = mpsc::channel();
        let sink = Sink { writes, gate: None };
        let (queue, _writer) = LogQueue::start(sink, 8, pace(LONG), "t").unwrap();
        for _ in 0..3 {
            queue.push(b"x\n");
        }
        assert!(written.try_recv().is_err());
        queue.push(b"y\n");
        assert_eq!(written.recv_timeout(BOUND).unwrap(), b"x\nx\nx\ny\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_and_never_waits_for_a_stuck_writer() {
        let (writes, written) = mpsc::channel();
        let (release, gate) = mpsc::channel();
        let sink = Sink {
            writes,
            gate: Some(gate),
        };
        let (queue, writer) =
            LogQueue::start(sink, 4, pace(Duration::from_millis(1)), "t").unwrap();
        queue.push(b"first\n");
        // The writer has taken `first` and is stuck writing it.
        assert_eq!(written.recv_timeout(BOUND).unwrap(), b"first\n");
        for n in 0..7 {
            queue.push(format!("{n}\n").as_bytes());
        }
        assert_eq!(queue.dropped().get(), 3, "four queued, three dropped");
        release.send(()).unwrap();
        release.send(()).unwrap();
        drop(writer);
        let rest: Vec<u8> = written.try_iter().flatten().collect();
        assert_eq!(rest, b"0\n1\n2\n3\n");
        // After the close, a line is dropped and counted, never queued for no writer.
        queue.push(b"late\n");
        assert_eq!(queue.dropped().get(), 4);
    }

    #[test]
    fn the_exit_waits_a_bounded_time_for_a_stderr_that_no_longer_drains() {
        let (writes, written) = mpsc::channel();
        let (_never_released, gate) = mpsc::channel::<()>();
        let sink = Sink {
            writes,
            gate: Some(gate),
        };
        let (queue, writer) = LogQueue::start(
            sink,
            4,
            Pace {
                gather: Duration::from_millis(1),
                exit_wait: Duration::from_millis(10),
            },
            "t",
        )
        .unwrap();
        queue.push(b"stuck\n");
        assert_eq!(written.recv_timeout(BOUND).unwrap(), b"stuck\n");
        // Returns (the test would hang otherwise) with the writer still stuck.
        drop(writer);
    }

    #[test]
    fn a_failing_stderr_counts_its_lines_as_dropped() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (queue, writer) = LogQueue::start(Broken, 8, pace(LONG), "t").unwrap();
        queue.push(b"a\n");
        queue.push(b"b\n");
        drop(writer);
        assert_eq!(queue.dropped().get(), 2);
    }
}
