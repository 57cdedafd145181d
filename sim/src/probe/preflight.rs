//! Checks before a probe sends anything: the fakes' ports are free, and the gateway answers.
//!
//! Owns: telling "someone else already listens on a fake's port" (so the gateway would talk
//! to a stranger) and "nothing listens at the gateway's address" apart from a real result,
//! each with a clear error. Does not start the fakes (`live`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use switchback::transport::{Connector, TcpConnector};

use super::GatewayUrl;

/// Longest wait for one connection attempt of a check.
pub const CHECK_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The fakes' ports, `base` to `base + count - 1`, or why they cannot be used.
pub fn fake_ports(base: u16, count: usize) -> Result<Vec<u16>, String> {
    if base == 0 {
        return Err("--port-base 0: give a fixed port base, e.g. 18000".into());
    }
    (0..count)
        .map(|i| {
            u16::try_from(i)
                .ok()
                .and_then(|i| base.checked_add(i))
                .ok_or_else(|| {
                    format!("--port-base {base}: {count} fakes do not fit below port 65536")
                })
        })
        .collect()
}

/// Fails when anything accepts connections on one of `ports` of 127.0.0.1: a gateway
/// configured for these ports would reach that process instead of the fakes.
pub async fn ports_free(ports: &[u16]) -> Result<(), String> {
    for &port in ports {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let attempt =
            tokio::time::timeout(CHECK_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await;
        if let Ok(Ok(stream)) = attempt
            && someone_listens(&stream)
        {
            return Err(format!(
                "port {port} on 127.0.0.1 is taken: another process accepts connections there \
                 (fakes or a probe still running?). The fakes need ports {}-{}; choose another \
                 --port-base, and emit the gateway's config again with the same one",
                ports[0],
                ports[ports.len() - 1]
            ));
        }
    }
    Ok(())
}

/// Whether a connection that succeeded reached a listener. On Linux a connection to a free
/// port of the ephemeral range can come back connected to itself (TCP's simultaneous open,
/// when the kernel happens to choose that very port as its source): nobody listens then,
/// and calling the port taken would fail a probe for nothing.
fn someone_listens(stream: &tokio::net::TcpStream) -> bool {
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(local), Ok(peer)) => local != peer,
        // A connection that cannot name its ends is no proof either way: be careful.
        _ => true,
    }
}

/// Fails when nothing takes a TCP connection at the gateway's address.
pub async fn gateway_answers(gateway: &GatewayUrl) -> Result<(), String> {
    let url = format!("http://{}:{}", gateway.host, gateway.port);
    match tokio::time::timeout(
        CHECK_CONNECT_TIMEOUT,
        TcpConnector.connect(&gateway.host, gateway.port),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "nothing answers at {url} ({e}): start the gateway first"
        )),
        Err(_) => Err(format!(
            "{url} did not take a connection within {} s",
            CHECK_CONNECT_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_named() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = ports_free(&[port]).await.unwrap_err();
        assert!(
            e.contains(&format!("port {port}")) && e.contains("taken"),
            "{e}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn a_connection_to_itself_is_no_listener() {
        // The kernel's simultaneous open, forced: a socket bound to a port and connected to
        // that same port, with nothing listening there.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let own = socket.local_addr().unwrap();
        let stream = socket.connect(own).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), own, "a self-connection");
        assert!(!someone_listens(&stream));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to_listener = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(someone_listens(&to_listener));
    }

    #[test]
    fn port_ranges_must_fit() {
        assert_eq!(fake_ports(18000, 3).unwrap(), vec![18000, 18001, 18002]);
        assert!(fake_ports(65535, 2).is_err());
        assert!(fake_ports(0, 1).is_err());
    }
}
