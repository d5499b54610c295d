//! A fault-injecting TCP proxy for HTTP services (the object stores): tests put it between the
//! pipeline and the server and switch its mode while the pipeline runs.
//!
//! - [`Fault::Pass`]: bytes flow both ways untouched.
//! - [`Fault::Refuse`]: nothing listens on the port, so connecting is refused.
//! - [`Fault::Reset`]: connections are accepted and reset at once.
//! - [`Fault::SlowDown`]: every HTTP request is read and answered `503 SlowDown`, as S3
//!   throttles (Azure answers the same status as ServerBusy).
//!
//! Leaving `Pass` resets every connection in flight, so keep-alive connections a client
//! pooled meet the fault too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the proxy does to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Refuse connections (the port is closed).
    Refuse,
    /// Accept connections and reset them.
    Reset,
    /// Answer every request with HTTP 503 and S3's SlowDown error.
    SlowDown,
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Fault>,
    faulted: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt.block_on(bind("127.0.0.1:0".parse().expect("an address"))).expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, watch) = watch::channel(Fault::Pass);
        let faulted = Arc::new(AtomicU64::new(0));
        rt.spawn(serve(listener, addr, upstream, watch, faulted.clone()));
        FaultProxy { addr, mode, faulted, _rt: rt }
    }

    /// Starts a proxy in front of an `http://host:port` endpoint; see [`FaultProxy::start`].
    pub fn in_front_of(endpoint: &str) -> Self {
        let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("{endpoint} is not an http://host:port endpoint"));
        Self::start(upstream)
    }

    /// The proxy's endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the fault; connections in flight are reset when leaving `Pass`.
    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }

    /// Connections reset or requests answered 503 so far (plus one per switch to `Refuse`:
    /// a refused connect never reaches the proxy), so a test can see faults being met.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::Relaxed)
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Rebinding the same port after `Refuse` must not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Fault>,
    faulted: Arc<AtomicU64>,
) {
    loop {
        if *mode.borrow_and_update() == Fault::Refuse {
            drop(listener);
            // Closed port: every connect is refused until the mode changes.
            while *mode.borrow() == Fault::Refuse {
                faulted.fetch_add(1, Ordering::Relaxed);
                if mode.changed().await.is_err() {
                    return;
                }
            }
            listener = loop {
                match bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            };
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let fault = *mode.borrow();
                tokio::spawn(connection(client, upstream, fault, mode.clone(), faulted.clone()));
            }
            changed = mode.changed() => if changed.is_err() { return },
        }
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    mut mode: watch::Receiver<Fault>,
    faulted: Arc<AtomicU64>,
) {
    match fault {
        Fault::Pass => {
            let Ok(mut server) = TcpStream::connect(upstream).await else { return reset(client) };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = mode.wait_for(|m| *m != Fault::Pass) => reset(client),
            }
        }
        Fault::Refuse | Fault::Reset => {
            faulted.fetch_add(1, Ordering::Relaxed);
            reset(client);
        }
        Fault::SlowDown => {
            // Read the whole request (headers and body) so the client sees an answer, not a
            // broken pipe, then answer 503 and close.
            if read_request(&mut client).await.is_ok() {
                faulted.fetch_add(1, Ordering::Relaxed);
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                            <Message>Please reduce your request rate.</Message></Error>";
                let response = format!(
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(response.as_bytes()).await;
                let _ = client.shutdown().await;
            }
        }
    }
}

/// Drops the connection with a TCP reset rather than an orderly close.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Reads one HTTP/1.1 request: headers, then `Content-Length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot upstream that answers `HTTP/1.1 200 OK` with body `up`.
    fn upstream() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nup");
            }
        });
        addr
    }

    fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn each_mode_does_what_it_says() {
        let proxy = FaultProxy::start(upstream());
        let addr = proxy.addr;
        assert!(get(addr).unwrap().ends_with("up"));
        proxy.set(Fault::SlowDown);
        let answer = get(addr).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("<Code>SlowDown</Code>"), "{answer}");
        proxy.set(Fault::Refuse);
        crate::wait_for("the port to close", Duration::from_secs(5), || {
            std::net::TcpStream::connect(addr)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        proxy.set(Fault::Reset);
        crate::wait_for("the port to reopen", Duration::from_secs(5), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(
            get(addr).is_err() || get(addr).is_ok_and(|s| s.is_empty()),
            "reset connections carry no answer"
        );
        proxy.set(Fault::Pass);
        assert!(get(addr).unwrap().ends_with("up"));
        assert!(proxy.faulted() >= 3);
    }
}
