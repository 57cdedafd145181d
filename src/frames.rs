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
//! cut short for a whole answer. Does not own what the frames say (`delivery`) nor the HTTP
//! response (`gateway::body`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, timeout_at};

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
/// than `bytes` still passes, alone).
pub fn channel(frames: usize, bytes: usize) -> (FrameSender, FrameReceiver) {
    assert!(frames > 0 && bytes > 0, "validated limits are at least 1");
    let bytes = bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
    let (tx, rx) = mpsc::channel(frames);
    let budget = Arc::new(Semaphore::new(bytes));
    let ended = Arc::new(AtomicBool::new(false));
    (
        FrameSender {
            tx,
            budget: budget.clone(),
            max_bytes: bytes,
            ended: ended.clone(),
        },
        FrameReceiver {
            rx,
            budget,
            max_bytes: bytes,
            ended,
            cut: false,
        },
    )
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
}

impl FrameSender {
    /// Hands `frame` over, waiting for room until `until` at the latest.
    pub async fn send(&self, frame: Bytes, until: Instant) -> Result<(), SendError> {
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
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(frame)) => {
                let cost = cost(&frame, self.max_bytes);
                self.budget.add_permits(cost as usize);
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
        let (tx, mut rx) = channel(64, 10);
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
        let (tx, mut rx) = channel(4, 1024);
        tx.send(Bytes::from_static(b"data: [DONE]\n\n"), soon())
            .await
            .unwrap();
        tx.end();
        drop(tx);
        assert!(rx.frame().await.unwrap().is_ok());
        assert!(rx.frame().await.is_none(), "ended: a clean end");

        let (tx, mut rx) = channel(4, 1024);
        tx.send(Bytes::from_static(b"data: {}\n\n"), soon())
            .await
            .unwrap();
        drop(tx);
        assert!(rx.frame().await.unwrap().is_ok(), "what was sent is read");
        assert_eq!(rx.frame().await.unwrap().unwrap_err(), StreamCut);
        assert!(rx.frame().await.is_none());
    }
}
