//! `serve`'s log lines, on stderr, written by a thread of their own.
//!
//! Owns: the subscriber (text or JSON, the level) and its writer, a bounded queue to a
//! thread that writes stderr (`log_queue`, lossy). A worker formats its line and queues
//! it; it never waits for stderr, and never wakes the writer for a line. Why: a write to
//! stderr waits for whatever reads it (a pipe to a log collector that falls behind or stops
//! reading, a terminal, a file on a busy disk). Made on a worker, it held up every
//! connection of that worker, and the other workers behind stderr's lock: a log reader that
//! stopped reading stopped the gateway
//! (`a_log_reader_that_stops_reading_never_stops_the_gateway`, `sim/tests/operations_live.rs`).
//! A full queue drops lines and counts them (`switchback_log_lines_dropped_total`). The
//! writer writes what gathered in one go, so a burst of lines costs one system call, not
//! one each. At exit, what is queued is written (waiting at most a second for a stderr that
//! no longer drains). Does not own what is logged (`switchback::decision_log`, the access
//! lines).

use crate::log_queue::{DroppedLines, LogQueue, Pace, Writer};

/// Lines `--log-queue-lines` lets wait for the writer by default: four seconds of a busy
/// gateway's lines (2,000 requests a second, a line each), at most about 2.5 MB of text at
/// 300 bytes a line. Nothing is allocated up front: the queue's buffer grows with the lines
/// that wait in it.
pub const DEFAULT_LOG_QUEUE_LINES: usize = 8_192;

/// The installed log writer: keep it until exit, so that queued lines are written.
pub struct Logs {
    _written_at_exit: Writer,
    dropped: DroppedLines,
}

impl Logs {
    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> DroppedLines {
        self.dropped.clone()
    }
}

/// How log lines look (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Installs the subscriber with a queue of `queue_lines` (at least 1). `None` (and a line on
/// stderr saying why) if a subscriber was installed already or the writer cannot start.
pub fn install(format: Format, level: tracing::Level, queue_lines: usize) -> Option<Logs> {
    let (writer, written_at_exit) = match LogQueue::start(
        std::io::stderr(),
        queue_lines,
        Pace::default(),
        "switchback-logs",
    ) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("switchback: cannot start the log writer: {e}");
            return None;
        }
    };
    let dropped = writer.dropped();
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level);
    let installed = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
    match installed {
        Ok(()) => Some(Logs {
            _written_at_exit: written_at_exit,
            dropped,
        }),
        Err(e) => {
            eprintln!("switchback: cannot install the log writer: {e}");
            None
        }
    }
}
