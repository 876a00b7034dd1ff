//! A small hostile HTTP/1.1 server on 127.0.0.1 for unit tests: each request is
//! recorded (method, target, headers) and answered by a handler, with a body of fixed
//! bytes or one without end (until the client goes away, at most [`ENDLESS_CAP`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Endpoint;

/// The most an endless body sends: far past every client limit, so a client that does
/// not stop reads all of it and fails its test, in bounded time.
pub const ENDLESS_CAP: u64 = 64 << 20;

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header lines as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// A reply's body.
pub enum Payload {
    /// These bytes, with a `Content-Length`.
    Bytes(Vec<u8>),
    /// Bytes until the client closes (or [`ENDLESS_CAP`]), without a length.
    Endless,
}

/// A reply.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Payload,
}

impl Reply {
    /// `status` with a JSON body.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Payload::Bytes(body.as_bytes().to_vec()),
        }
    }

    /// `status` with a body that never ends.
    pub fn endless(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: Payload::Endless,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// The running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server answering with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let (requests, sent, stop) = (requests.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, sent, handler) =
                        (requests.clone(), sent.clone(), handler.clone());
                    std::thread::spawn(move || serve(conn, &requests, &sent, &*handler));
                }
            })
        };
        Server {
            addr,
            requests,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A plain-HTTP endpoint for this server.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            scheme: "http".into(),
            host: self.host(),
            ..Endpoint::default()
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests whose path contains `part`.
    pub fn count(&self, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path().contains(part))
            .count()
    }

    /// Body bytes written so far (of endless bodies: up to where the client stopped,
    /// plus what the kernel's socket buffers took).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection: requests one after another (keep-alive) until the client
/// closes, a read times out, or an endless body ends it.
fn serve(conn: TcpStream, requests: &Mutex<Vec<Request>>, sent: &AtomicU64, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    // A bound on requests per connection, as on every loop.
    for _ in 0..100_000 {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req.clone());
        let reply = handler(&req);
        let head_only = req.method == "HEAD";
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match reply.body {
            Payload::Bytes(b) => {
                head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                if !head_only {
                    if out.write_all(&b).is_err() {
                        return;
                    }
                    sent.fetch_add(b.len() as u64, Ordering::SeqCst);
                }
            }
            Payload::Endless => {
                head.push_str("Connection: close\r\n\r\n");
                if out.write_all(head.as_bytes()).is_err() || head_only {
                    return;
                }
                let chunk = vec![b'A'; 64 << 10];
                let mut total = 0u64;
                while total < ENDLESS_CAP {
                    if out.write_all(&chunk).is_err() {
                        return;
                    }
                    total += chunk.len() as u64;
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}

/// Reads a request head (at most 64 KiB); `None` at the end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut limited = reader.by_ref().take(64 << 10);
    let mut line = String::new();
    if limited.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if limited.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Some(Request {
        method,
        target,
        headers,
    })
}

/// Asserts that a failure is [`super::Kind::Oversize`] and that its message names the
/// URL `path` and the `limit` (as the message writes it, `4 MiB`).
pub fn assert_oversize(f: &super::Failure, path: &str, limit: &str) {
    assert_eq!(f.kind, super::Kind::Oversize, "{}", f.message);
    assert!(
        f.message.contains(path) && f.message.contains(limit),
        "{}",
        f.message
    );
}
