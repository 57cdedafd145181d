//! The connect/listen seam: the only place the engine touches sockets.
//!
//! Owns: the [`Connector`] (open a byte stream to `host:port`) and [`Listener`] (accept byte
//! streams) traits, and their tokio TCP implementations, which set `TCP_NODELAY` because SSE
//! chunks are small writes that Nagle's algorithm would hold back (and [`Accepted`], what a
//! listener says of the protocol a connection negotiated). The simulation provides
//! turmoil implementations; benches provide in-memory ones. Does not own HTTP (that is
//! hyper's, in `upstream` and `gateway`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens connections to upstreams.
pub trait Connector: Send + Sync + 'static {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<BoxIo>>;
}

/// Accepts client connections.
pub trait Listener: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Accepts a connection and says whether it speaks HTTP/2 (a TLS listener whose client
    /// picked `h2` by ALPN); a plain listener's never does (no h2c).
    fn accept_negotiated(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            let (io, peer) = self.accept().await?;
            Ok(Accepted {
                io,
                peer,
                http2: false,
            })
        })
    }
}

/// A connection a [`Listener`] accepted.
pub struct Accepted {
    pub io: BoxIo,
    pub peer: SocketAddr,
    /// The connection negotiated HTTP/2.
    pub http2: bool,
}

/// Real TCP through tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

/// A tokio TCP listener.
#[derive(Debug)]
pub struct TcpListener(pub tokio::net::TcpListener);

impl TcpListener {
    pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Ok(TcpListener(tokio::net::TcpListener::bind(addr).await?))
    }
}

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxIo, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
