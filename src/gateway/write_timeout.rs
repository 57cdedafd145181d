//! A client connection whose writes cannot wait for ever.
//!
//! Owns: [`WriteTimeout`], a wrapper around a client's byte stream that fails a write (or a
//! flush) that has made no progress for `limits.client_write_timeout`, or that is still
//! waiting at the [`WriteDeadline`] of the request being answered. hyper then closes the
//! connection. Without it, a client that stops reading keeps its connection slot for as
//! long as it likes: the attempt loop gives up on it (see `frames`), but the server would
//! still sit on a full socket trying to send the response's last bytes. Without the
//! deadline, one that reads a few bytes now and then (each within the timeout, which any
//! progress resets) held its slot and a whole non-stream answer for hours. Does not own
//! reads (the header and body read timeouts live in `gateway` and `routes`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The instant by which the response being written on a connection must have been read:
/// set as each request arrives (HTTP/1 answers one at a time), shared between the
/// connection's writer and its service.
#[derive(Debug, Clone, Default)]
pub struct WriteDeadline(Arc<Mutex<Option<Instant>>>);

impl WriteDeadline {
    pub fn set(&self, at: Instant) {
        *self.0.lock().expect("write deadline lock") = Some(at);
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock().expect("write deadline lock")
    }
}

pub struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: WriteDeadline,
    /// Armed while a write or flush is pending; disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> WriteTimeout<T> {
        WriteTimeout {
            inner,
            timeout,
            deadline: WriteDeadline::default(),
            stalled: None,
        }
    }

    /// The deadline the connection's service sets for each response.
    pub fn deadline(&self) -> WriteDeadline {
        self.deadline.clone()
    }

    /// Turns a pending write into an error once it has been pending for `timeout`, or at
    /// the response's deadline, whichever comes first.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let deadline = self.deadline.get();
        let timeout = self.timeout;
        let sleep = self.stalled.get_or_insert_with(|| {
            let stall = Instant::now() + timeout;
            let at = deadline.map_or(stall, |d| d.min(stall));
            Box::pin(tokio::time::sleep_until(at))
        });
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    "the client had not read the response by the request's deadline"
                } else {
                    "the client did not read for client_write_timeout"
                },
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_timeout() {
        let (near, _far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::from_secs(2));
        io.write_all(&[0; 16]).await.unwrap();
        let started = Instant::now();
        let e = io.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_still_waiting_at_the_deadline_fails_then() {
        let (near, _far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::from_secs(30));
        io.deadline().set(Instant::now() + Duration::from_secs(3));
        io.write_all(&[0; 16]).await.unwrap();
        let started = Instant::now();
        let e = io.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("deadline"), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_moving_reader_is_never_cut() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::from_secs(2));
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                far.read_exact(&mut buf).await.unwrap();
            }
        });
        for _ in 0..10 {
            io.write_all(&[1; 16]).await.unwrap();
        }
        reader.await.unwrap();
    }
}
