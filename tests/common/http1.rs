//! Raw HTTP/1 on both sides of the proxy: a reader that shows messages as
//! they crossed the wire, and a backend that answers by path and records
//! every request it read (so a smuggled request cannot hide).

use super::{within, TestCoordinator};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One HTTP/1 message read off a socket: head (as text) and body bytes.
pub struct Message {
    pub head: String,
    pub body: Vec<u8>,
}

impl Message {
    /// `name: value` lines of the head, names lowercased, sorted; without
    /// the start line and without the headers in `skip`.
    pub fn headers(&self, skip: &[&str]) -> BTreeSet<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .filter(|(n, _)| !skip.contains(&n.as_str()))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(&[])
            .into_iter()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    }
}

/// Reads more of `s` into `buf`; how many bytes came (0: closed).
pub async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    let k = s.read(&mut chunk).await.unwrap_or(0);
    buf.extend_from_slice(&chunk[..k]);
    k
}

/// Where a chunked body at the start of `buf` ends (after its trailers).
pub fn chunked_end(buf: &[u8]) -> Option<usize> {
    let last = if buf.starts_with(b"0\r\n") {
        0
    } else {
        buf.windows(5).position(|w| w == b"\r\n0\r\n")? + 2
    };
    let rest = &buf[last + 3..];
    if rest.starts_with(b"\r\n") {
        return Some(last + 5);
    }
    Some(last + 3 + rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4)
}

/// Reads one message from `s` (bytes after it stay in `buf`): a body framed
/// by `content-length`, chunked (kept raw, framing included), or, for a
/// response, until close.
pub async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>, bodiless: bool) -> Option<Message> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if fill(s, buf).await == 0 {
            return None;
        }
    };
    let head = String::from_utf8(buf.drain(..end).collect()).unwrap();
    let m = Message { head, body: vec![] };
    let body = if bodiless || m.head.starts_with("HTTP/1.1 204") {
        Vec::new()
    } else if let Some(n) = m.header("content-length") {
        let n: usize = n.parse().unwrap();
        while buf.len() < n {
            assert!(fill(s, buf).await > 0, "closed mid-body");
        }
        buf.drain(..n).collect()
    } else if m.header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            if let Some(n) = chunked_end(buf) {
                break buf.drain(..n).collect();
            }
            assert!(fill(s, buf).await > 0, "closed mid-body");
        }
    } else if m.head.starts_with("HTTP/") {
        while fill(s, buf).await > 0 {}
        std::mem::take(buf)
    } else {
        Vec::new()
    };
    Some(Message { body, ..m })
}

/// What a test and its raw backend tell each other.
#[derive(Default)]
pub struct Signals {
    /// `/chunked` sends its last chunk.
    pub release: Notify,
    /// A `/hold` request arrived.
    pub held: Notify,
    /// A `/hold` request's connection was closed by the proxy.
    pub abandoned: Notify,
    /// Every request the backend read, as `{method} {target} {body}`, in order:
    /// what a smuggled request would show up in.
    pub seen: std::sync::Mutex<Vec<String>>,
}

impl Signals {
    /// The requests seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A raw HTTP/1 backend. By path:
/// - `/head`: the request head it received, as the body, with hop-by-hop
///   and misleading headers of its own in the response;
/// - `/chunked`: a chunked body with a trailer, the last chunk sent only
///   once `release` is notified;
/// - `/until-close`: a body with no length, ended by closing;
/// - `/garbage`: not HTTP at all;
/// - `/huge-head`: a response head of 100 KB;
/// - `/bare-cr-trailer`: a chunked body whose trailer holds a bare CR;
/// - `/close-after`: an answer, then the connection closed without notice
///   (as a server whose keep-alive timeout expired);
/// - `/hold`: no answer; `abandoned` is notified when the proxy closes
///   the connection;
/// - anything else: `conn-{n} {method} {path} {body}`.
pub async fn raw_backend(signals: Arc<Signals>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = conns.fetch_add(1, Ordering::SeqCst);
            let signals = signals.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = read_message(&mut s, &mut buf, false).await {
                    let line = req.head.lines().next().unwrap_or("").to_string();
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    {
                        let method = line.split(' ').next().unwrap_or("");
                        let body = String::from_utf8_lossy(&req.body);
                        signals.seen.lock().unwrap().push(format!("{method} {path} {body}"));
                    }
                    // Served under `/p` as well (a service URL with a path prefix).
                    let route = path.split('?').next().unwrap_or("");
                    let route = route.strip_prefix("/p/").map_or(route, |r| &route[2..2 + r.len() + 1]);
                    let reply = match route {
                        "/health" => "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string(),
                        "/head" => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: x-hop\r\nX-Hop: 1\r\n\
                             Keep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nContent-Length: {}\r\n\r\n{}",
                            req.head.len(),
                            req.head
                        ),
                        "/chunked" => {
                            let first = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n";
                            if s.write_all(first.as_bytes()).await.is_err() {
                                return;
                            }
                            signals.release.notified().await;
                            "4;ext=1\r\nlast\r\n0\r\nx-t: 1\r\n\r\n".to_string()
                        }
                        "/until-close" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it").await;
                            return;
                        }
                        "/garbage" => "NOT HTTP\r\n\r\n".to_string(),
                        "/huge-head" => format!(
                            "HTTP/1.1 200 OK\r\nX-Huge: {}\r\ncontent-length: 2\r\n\r\nok",
                            "h".repeat(100_000)
                        ),
                        "/bare-cr-trailer" => {
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: a\rb\r\n\r\n"
                                .to_string()
                        }
                        "/close-after" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone").await;
                            return;
                        }
                        "/hold" => {
                            signals.held.notify_one();
                            let mut rest = Vec::new();
                            let _ = s.read_to_end(&mut rest).await;
                            signals.abandoned.notify_one();
                            return;
                        }
                        _ if line.starts_with("HEAD ") => "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n".to_string(),
                        _ => {
                            let method = line.split(' ').next().unwrap_or("");
                            let body = format!("conn-{n} {method} {path} {}", String::from_utf8_lossy(&req.body));
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                        }
                    };
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Sends `raw` on a new connection to `c`; the first response.
pub async fn ask(c: &TestCoordinator, raw: &str) -> Message {
    let mut s = TcpStream::connect(c.addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    within(read_message(&mut s, &mut Vec::new(), raw.starts_with("HEAD")))
        .await
        .expect("a response")
}
