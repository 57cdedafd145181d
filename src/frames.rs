//! A bounded channel of response frames between the attempt loop and a streaming client.
//!
//! Owns: how much a slow client can make the gateway hold for it, counted both in frames
//! (`limits.stream_buffer_frames`) and in bytes (`limits.stream_buffer_bytes`), and how
//! long one write may wait for the client to make room (`limits.client_write_timeout`,
//! never past the request deadline). A client that stops reading is therefore dropped after
//! a bounded time with a bounded buffer, and its upstream connection goes with it. Also
//! owns how a stream ends: cleanly only once the sender said its last frame
//! ([`FrameSender::end`]); a sender dropped before that (a write that timed out, a final
//! frame that could not be sent) makes the body fail, so hyper cuts the connection without
//! the chunked body's last chunk and the client's SDK raises, rather than taking a stream
//! cut short for a whole answer. Also owns keeping a stream alive while the gateway waits
//! ([`FrameSender::hold`]), or while its provider talks without chunks ([`Liveness`]): an
//! SSE comment whenever the client has had no byte for the keep-alive interval, written by
//! the body itself, so the attempt loop never waits to
//! write one and a comment always falls between whole events. Does not own what the frames
//! say (`delivery`) nor the HTTP response (`gateway::body`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::{Instant, Sleep, timeout_at};

/// What a stream is kept alive with: an SSE comment, which every SSE reader skips.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Why a frame could not be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The receiving side is gone: the client closed its connection.
    Closed,
    /// The client did not make room in time.
    TimedOut,
}

/// The error a stream's body ends with when the answer was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream ended before its last frame was sent")]
pub struct StreamCut;

/// A channel holding at most `frames` frames and about `bytes` bytes (a single frame larger
/// than `bytes` still passes, alone), whose body writes a keep-alive comment each
/// `keep_alive` without a byte while the sender holds ([`FrameSender::hold`]).
pub fn channel(
    frames: usize,
    bytes: usize,
    keep_alive: Option<Duration>,
) -> (FrameSender, FrameReceiver) {
    assert!(frames > 0 && bytes > 0, "validated limits are at least 1");
    let bytes = bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
    let (tx, rx) = mpsc::channel(frames);
    let budget = Arc::new(Semaphore::new(bytes));
    let ended = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(Holding::default());
    (
        FrameSender {
            tx,
            budget: budget.clone(),
            max_bytes: bytes,
            ended: ended.clone(),
            holding: holding.clone(),
        },
        FrameReceiver {
            rx,
            budget,
            max_bytes: bytes,
            ended,
            cut: false,
            keep_alive: keep_alive.map(|every| KeepAlive {
                every,
                wrote_at: Instant::now(),
                quiet_until: Box::pin(tokio::time::sleep(every)),
                held: Box::pin(holding.changed.clone().notified_owned()),
                holding,
            }),
        },
    )
}

/// Whether the gateway is waiting on its own account, shared by the two ends.
#[derive(Debug, Default)]
struct Holding {
    /// Set by [`FrameSender::hold`], cleared by the next frame sent.
    now: AtomicBool,
    /// Set by [`Liveness::hold`], cleared by the next frame sent or the next comment
    /// written: one comment at most for each time the provider talked.
    once: AtomicBool,
    /// Wakes the body when a hold begins, so that a client already quiet for the interval
    /// gets its comment at once.
    changed: Arc<Notify>,
}

impl Holding {
    fn begin(flag: &AtomicBool, changed: &Notify) {
        // Only a hold that begins wakes the body: one that goes on changes nothing it
        // waits for.
        if !flag.swap(true, Ordering::AcqRel) {
            changed.notify_one();
        }
    }

    fn holds(&self) -> bool {
        self.now.load(Ordering::Acquire) || self.once.load(Ordering::Acquire)
    }
}

/// A handle that holds a stream alive from elsewhere: the upstream reader, when its
/// provider sends bytes that are no chunk (keep-alive comments) while it thinks. Such a
/// provider is not silent, so neither is the stream to its client; but each time it talks
/// licenses one comment at most, so that a provider that then goes silent is passed on
/// as silent, as any provider's silence is.
#[derive(Debug, Clone)]
pub struct Liveness(Arc<Holding>);

impl Liveness {
    pub fn hold(&self) {
        Holding::begin(&self.0.once, &self.0.changed);
    }
}

/// The body's side of keeping a stream alive.
struct KeepAlive {
    every: Duration,
    /// When the body last wrote a byte.
    wrote_at: Instant,
    /// Ends `every` after `wrote_at`; set only while the sender holds, so that a frame
    /// written costs a clock read and never a timer's lock.
    quiet_until: Pin<Box<Sleep>>,
    held: Pin<Box<OwnedNotified>>,
    holding: Arc<Holding>,
}

impl KeepAlive {
    /// A comment is due: the sender holds and the client has had no byte for the interval.
    /// Registers for both, so the body is woken when either changes.
    fn due(&mut self, cx: &mut Context<'_>) -> bool {
        // A hold that began while the body slept wakes it; each wake is taken, and the
        // next registered (a permit stored by `notify_one` is taken at once).
        while self.held.as_mut().poll(cx).is_ready() {
            self.held = Box::pin(self.holding.changed.clone().notified_owned());
        }
        // Acquire: pairs with the Release of `hold` and of `send`.
        if !self.holding.holds() {
            return false;
        }
        let until = self.wrote_at + self.every;
        if self.quiet_until.deadline() != until {
            self.quiet_until.as_mut().reset(until);
        }
        self.quiet_until.as_mut().poll(cx).is_ready()
    }

    /// A byte went out: the quiet starts again.
    fn wrote(&mut self) {
        self.wrote_at = Instant::now();
    }
}

/// What one frame costs of the byte budget.
fn cost(frame: &Bytes, max_bytes: usize) -> u32 {
    // `max_bytes` fits in u32 (see `channel`).
    frame.len().clamp(1, max_bytes) as u32
}

pub struct FrameSender {
    tx: mpsc::Sender<Bytes>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
    /// Set by [`FrameSender::end`]: the frames sent are the whole stream.
    ended: Arc<AtomicBool>,
    holding: Arc<Holding>,
}

impl FrameSender {
    /// Hands `frame` over, waiting for room until `until` at the latest. Ends a hold.
    pub async fn send(&self, frame: Bytes, until: Instant) -> Result<(), SendError> {
        // A body that sees the hold over sees it with this frame on its way.
        self.unhold();
        let cost = cost(&frame, self.max_bytes);
        let handover = async {
            let permit = tokio::select! {
                biased;
                () = self.tx.closed() => return Err(SendError::Closed),
                permit = self.budget.acquire_many(cost) => permit.map_err(|_| SendError::Closed)?,
            };
            // Given back by the receiver when the frame leaves the buffer.
            permit.forget();
            self.tx.send(frame).await.map_err(|_| SendError::Closed)
        };
        match timeout_at(until, handover).await {
            Ok(result) => result,
            Err(_) => {
                if self.tx.is_closed() {
                    Err(SendError::Closed)
                } else {
                    Err(SendError::TimedOut)
                }
            }
        }
    }

    /// Says the gateway now waits on its own account until its next frame (a backoff, a
    /// continuation's connect and first byte): the body keeps the client's connection alive
    /// meanwhile, when it has a keep-alive interval.
    pub fn hold(&self) {
        Holding::begin(&self.holding.now, &self.holding.changed);
    }

    /// A handle that holds this stream from elsewhere (see [`Liveness`]).
    pub fn liveness(&self) -> Liveness {
        Liveness(self.holding.clone())
    }

    /// Ends a hold without a frame: the answer goes on, and what comes of it is not the
    /// gateway's own wait (a chunk the delivery holds back, such as a finish).
    pub fn unhold(&self) {
        self.holding.now.store(false, Ordering::Release);
        self.holding.once.store(false, Ordering::Release);
    }

    /// Resolves when the receiver is gone (the client closed its connection).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Says the frames sent are the whole stream (its last was `[DONE]` or an error event):
    /// the body then ends cleanly once they are read and the sender is dropped. Without
    /// it, the body fails.
    pub fn end(&self) {
        // Release: seen by the receiver with the channel's close (Acquire below).
        self.ended.store(true, Ordering::Release);
    }
}

/// The response body end: frames in order, ending when the sender is dropped. Dropping it
/// (the client went away) is what [`FrameSender::closed`] reports.
pub struct FrameReceiver {
    rx: mpsc::Receiver<Bytes>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
    ended: Arc<AtomicBool>,
    /// The cut was reported once: the body is over.
    cut: bool,
    keep_alive: Option<KeepAlive>,
}

impl Body for FrameReceiver {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.cut {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => {
                if let Some(k) = &mut self.keep_alive {
                    if k.due(cx) {
                        k.wrote();
                        // A provider's talk is answered once (see `Liveness`).
                        k.holding.once.store(false, Ordering::Release);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
                    }
                }
                Poll::Pending
            }
            Poll::Ready(Some(frame)) => {
                let cost = cost(&frame, self.max_bytes);
                self.budget.add_permits(cost as usize);
                if let Some(k) = &mut self.keep_alive {
                    k.wrote();
                }
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            // Every sender is gone: `end` was called before the drop, or never.
            Poll::Ready(None) if self.ended.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => {
                self.cut = true;
                Poll::Ready(Some(Err(StreamCut)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn bytes_are_bounded_and_a_slow_reader_times_out() {
        let (tx, mut rx) = channel(64, 10, None);
        let soon = || Instant::now() + Duration::from_secs(1);
        tx.send(Bytes::from_static(b"12345678"), soon())
            .await
            .unwrap();
        // 8 of 10 bytes used: a 4-byte frame must wait for the reader.
        assert_eq!(
            tx.send(Bytes::from_static(b"abcd"), soon()).await,
            Err(SendError::TimedOut)
        );
        let first = rx.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"12345678");
        tx.send(Bytes::from_static(b"abcd"), soon()).await.unwrap();
        // A frame larger than the whole budget still passes once the buffer is empty.
        let _ = rx.frame().await;
        tx.send(Bytes::from(vec![0; 100]), soon()).await.unwrap();
        drop(rx);
        assert_eq!(
            tx.send(Bytes::from_static(b"x"), soon()).await,
            Err(SendError::Closed)
        );
        tx.closed().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_cleanly_only_once_the_sender_said_so() {
        let soon = || Instant::now() + Duration::from_secs(1);
        let (tx, mut rx) = channel(4, 1024, None);
        tx.send(Bytes::from_static(b"data: [DONE]\n\n"), soon())
            .await
            .unwrap();
        tx.end();
        drop(tx);
        assert!(rx.frame().await.unwrap().is_ok());
        assert!(rx.frame().await.is_none(), "ended: a clean end");

        let (tx, mut rx) = channel(4, 1024, None);
        tx.send(Bytes::from_static(b"data: {}\n\n"), soon())
            .await
            .unwrap();
        drop(tx);
        assert!(rx.frame().await.unwrap().is_ok(), "what was sent is read");
        assert_eq!(rx.frame().await.unwrap().unwrap_err(), StreamCut);
        assert!(rx.frame().await.is_none());
    }

    /// The next frame within `wait`, or `None` when none comes (the body stays pending).
    async fn next_within(rx: &mut FrameReceiver, wait: Duration) -> Option<Bytes> {
        let frame = tokio::time::timeout(wait, rx.frame()).await.ok()?;
        frame?.ok()?.into_data().ok()
    }

    /// A provider that talks without chunks (comments while it thinks) licenses one
    /// comment per talk, once the client has been quiet for the interval: when it goes
    /// silent, the client hears its silence.
    #[tokio::test(start_paused = true)]
    async fn a_providers_talk_keeps_the_client_alive_once_per_talk() {
        let soon = || Instant::now() + Duration::from_secs(1);
        let every = Duration::from_secs(10);
        let (tx, mut rx) = channel(4, 1024, Some(every));
        let liveness = tx.liveness();
        tx.send(Bytes::from_static(b"data: a\n\n"), soon())
            .await
            .unwrap();
        let _ = next_within(&mut rx, every).await;
        let sent_at = Instant::now();
        // It talks 3 s in: one comment when the client has been quiet for the interval.
        tokio::time::sleep(Duration::from_secs(3)).await;
        liveness.hold();
        assert_eq!(
            next_within(&mut rx, every).await.as_deref(),
            Some(KEEP_ALIVE)
        );
        assert_eq!(Instant::now(), sent_at + every);
        // Then silent: so is the stream.
        assert_eq!(next_within(&mut rx, every * 3).await, None);
        // Talking again after long silence: a comment at once, one.
        liveness.hold();
        assert_eq!(
            next_within(&mut rx, every).await.as_deref(),
            Some(KEEP_ALIVE)
        );
        assert_eq!(next_within(&mut rx, every * 3).await, None);
    }

    /// A comment comes only while the sender holds, once the client has had no byte for
    /// the interval (at once, for a client already that quiet), then every interval; the
    /// next frame ends the hold. Without an interval, a hold writes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_held_stream_is_kept_alive_each_quiet_interval() {
        let soon = || Instant::now() + Duration::from_secs(1);
        let every = Duration::from_secs(10);
        let (tx, mut rx) = channel(4, 1024, Some(every));
        tx.send(Bytes::from_static(b"data: a\n\n"), soon())
            .await
            .unwrap();
        assert_eq!(
            next_within(&mut rx, every).await.as_deref(),
            Some(&b"data: a\n\n"[..])
        );
        // Quiet, but not held: a provider's own silence is passed on.
        assert_eq!(next_within(&mut rx, every * 3).await, None);
        // Quiet for 30 s already when the hold begins: a comment at once.
        let held_at = Instant::now();
        tx.hold();
        assert_eq!(
            next_within(&mut rx, every).await.as_deref(),
            Some(KEEP_ALIVE)
        );
        assert_eq!(Instant::now(), held_at);
        assert_eq!(
            next_within(&mut rx, every * 2).await.as_deref(),
            Some(KEEP_ALIVE)
        );
        assert_eq!(Instant::now(), held_at + every);
        // A frame ends the hold, and the quiet starts again.
        tx.send(Bytes::from_static(b"data: b\n\n"), soon())
            .await
            .unwrap();
        assert_eq!(
            next_within(&mut rx, every).await.as_deref(),
            Some(&b"data: b\n\n"[..])
        );
        assert_eq!(next_within(&mut rx, every * 3).await, None);
        // A hold that begins soon after a frame waits out the rest of the interval.
        tx.send(Bytes::from_static(b"data: c\n\n"), soon())
            .await
            .unwrap();
        let _ = next_within(&mut rx, every).await;
        let wrote_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(4)).await;
        tx.hold();
        assert_eq!(
            next_within(&mut rx, every).await.as_deref(),
            Some(KEEP_ALIVE)
        );
        assert_eq!(Instant::now(), wrote_at + every);

        let (tx, mut rx) = channel(4, 1024, None);
        tx.hold();
        assert_eq!(next_within(&mut rx, every * 3).await, None);
    }
}
