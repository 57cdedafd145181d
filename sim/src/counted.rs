//! Counting open connections at the gateway's side of the transport seam.
//!
//! Owns: [`Counted`], a byte stream that holds a slot in a shared counter until it is
//! dropped. The world wraps every upstream connection the gateway opens, so "no connection
//! left open at the end" is checked where a leak would be the gateway's fault, whatever the
//! network did to the packets that close it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Live connections of one kind.
#[derive(Debug, Default, Clone)]
pub struct OpenCount(Arc<AtomicUsize>);

impl OpenCount {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Wraps `inner`, counting it open until it is dropped.
    pub fn track<T>(&self, inner: T) -> Counted<T> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Counted {
            inner,
            count: self.0.clone(),
        }
    }
}

pub struct Counted<T> {
    inner: T,
    count: Arc<AtomicUsize>,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
