//! Knowing when a new HTTP/2 connection's server has been heard: the bytes a server sends
//! first, watched until its first frame has been read and acted on.
//!
//! Owns: [`FirstFrameWatch`], the socket of a new HTTP/2 connection as hyper's h2 sees it,
//! telling once (a callback) that the server's first frame is in, or that none will come
//! (end of stream, a read error, the connection dropped). Does not own what waits on it (the
//! pool, which holds back the attempts waiting for the connection until its server's stream
//! limit is known) nor the connection itself (`client`).
//!
//! Why the bytes: a server's first frame is its SETTINGS (RFC 9113 §3.4), which carry its
//! `SETTINGS_MAX_CONCURRENT_STREAMS`. hyper's handshake returns as soon as our preface is
//! written, and neither hyper nor h2 says when the server's SETTINGS have arrived; until
//! they have, h2 counts 100 streams allowed. h2's connection task reads a frame, acts on it
//! (a SETTINGS frame is applied, and acknowledged, before it reads again), and reads from
//! the socket only once it has acted on every frame it holds: so the first read after the
//! last byte of the first frame was handed over comes after that frame was applied.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::BoxIo;

/// An HTTP/2 frame header: 24-bit length, type, flags, stream id (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;

/// Called once: the server's first frame was acted on, or will never be.
pub type Heard = Box<dyn FnOnce() + Send>;

/// The socket of a new HTTP/2 connection, watched until its server's first frame is in.
pub struct FirstFrameWatch {
    io: BoxIo,
    /// The first frame's header, as far as it was read.
    header: [u8; FRAME_HEADER],
    /// Bytes read from the server so far (counted until the first frame is in).
    read: usize,
    /// None once called.
    heard: Option<Heard>,
}

impl FirstFrameWatch {
    pub fn new(io: BoxIo, heard: Heard) -> FirstFrameWatch {
        FirstFrameWatch {
            io,
            header: [0; FRAME_HEADER],
            read: 0,
            heard: Some(heard),
        }
    }

    /// Whether every byte of the first frame has been handed to h2.
    fn first_frame_read(&self) -> bool {
        if self.read < FRAME_HEADER {
            return false;
        }
        let [a, b, c, ..] = self.header;
        let payload = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        self.read >= FRAME_HEADER + payload
    }

    fn count(&mut self, bytes: &[u8]) {
        if self.read < FRAME_HEADER {
            let n = (FRAME_HEADER - self.read).min(bytes.len());
            self.header[self.read..self.read + n].copy_from_slice(&bytes[..n]);
        }
        self.read = self.read.saturating_add(bytes.len());
    }

    fn tell(&mut self) {
        if let Some(heard) = self.heard.take() {
            heard();
        }
    }
}

impl Drop for FirstFrameWatch {
    fn drop(&mut self) {
        // The connection is gone: no frame will come, and nobody may wait for one.
        self.tell();
    }
}

impl AsyncRead for FirstFrameWatch {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.heard.is_none() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        // h2 reads again only once it has acted on every frame it was given (see the
        // module doc).
        if this.first_frame_read() {
            this.tell();
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before => this.tell(),
            Poll::Ready(Ok(())) => this.count(&buf.filled()[before..]),
            Poll::Ready(Err(_)) => this.tell(),
            Poll::Pending => {}
        }
        polled
    }
}

impl AsyncWrite for FirstFrameWatch {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn watched() -> (FirstFrameWatch, tokio::io::DuplexStream, Arc<AtomicBool>) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let heard = Arc::new(AtomicBool::new(false));
        let h = heard.clone();
        let watch = FirstFrameWatch::new(
            Box::new(ours),
            Box::new(move || h.store(true, Ordering::SeqCst)),
        );
        (watch, theirs, heard)
    }

    #[tokio::test]
    async fn heard_at_the_read_after_the_first_frame_however_its_bytes_are_cut() {
        let (mut watch, mut server, heard) = watched();
        // A SETTINGS frame of one setting (6 bytes), in three pieces, then a PING.
        let settings = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2];
        let mut buf = [0u8; 64];
        for piece in [&settings[..4], &settings[4..12], &settings[12..]] {
            assert!(!heard.load(Ordering::SeqCst), "not before the frame's end");
            server.write_all(piece).await.expect("write");
            let n = watch.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..n], piece);
        }
        assert!(
            !heard.load(Ordering::SeqCst),
            "read whole, not yet acted on"
        );
        server.write_all(&[0, 0, 8, 0x6]).await.expect("write");
        let n = watch.read(&mut buf).await.expect("read");
        assert_eq!(n, 4);
        assert!(heard.load(Ordering::SeqCst), "the next read");
    }

    #[tokio::test]
    async fn heard_when_no_frame_will_come() {
        let (mut watch, server, heard) = watched();
        drop(server);
        let mut buf = [0u8; 8];
        assert_eq!(watch.read(&mut buf).await.expect("end"), 0);
        assert!(heard.load(Ordering::SeqCst), "at the end of the stream");
        let (watch, _server, heard) = watched();
        drop(watch);
        assert!(heard.load(Ordering::SeqCst), "with the connection dropped");
    }
}
