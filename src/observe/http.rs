//! A small read-only HTTP/1.1 endpoint: `GET` only, one request per connection, a fixed number
//! of threads.
//!
//! Parsing is `httparse`'s (a small, widely used HTTP/1.x parser with no dependencies); the
//! accept loop is ours, because the synchronous server crates spawn a thread per connection
//! without a bound (tiny_http's task pool grows with every busy connection) and wait on slow
//! clients forever. Here one thread accepts and hands connections to [`HTTP_WORKERS`] workers
//! through a queue of [`HTTP_QUEUE`]; when the queue is full the connection gets `503` at once.
//! Every read and write has a timeout ([`HTTP_IO_TIMEOUT_MS`]) and a request head is at most
//! [`MAX_HTTP_REQUEST_HEAD_BYTES`]. Methods other than `GET` get `405`; unknown paths `404`.
//!
//! [`HTTP_WORKERS`]: crate::limits::HTTP_WORKERS
//! [`HTTP_QUEUE`]: crate::limits::HTTP_QUEUE
//! [`HTTP_IO_TIMEOUT_MS`]: crate::limits::HTTP_IO_TIMEOUT_MS
//! [`MAX_HTTP_REQUEST_HEAD_BYTES`]: crate::limits::MAX_HTTP_REQUEST_HEAD_BYTES

use crate::error::{Error, Result};
use crate::limits::{HTTP_IO_TIMEOUT_MS, HTTP_QUEUE, HTTP_WORKERS, MAX_HTTP_REQUEST_HEAD_BYTES};
use crossbeam_channel::{bounded, Receiver, TrySendError};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (200, 503, ...).
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl HttpResponse {
    /// A `text/plain` answer.
    pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Answers a `GET` of a path (without its query string); `None` for an unknown path (`404`).
pub type Handler = Arc<dyn Fn(&str) -> Option<HttpResponse> + Send + Sync>;

/// A running endpoint. Dropping it stops it (as [`HttpServer::shutdown`]).
pub struct HttpServer {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

fn io_timeout() -> Duration {
    Duration::from_millis(HTTP_IO_TIMEOUT_MS)
}

impl HttpServer {
    /// Bind `addr` (only there) and serve `handler`. Threads are named `{name}-http-*`.
    pub fn start(addr: SocketAddr, name: &str, handler: Handler) -> Result<HttpServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::io(format!("binding the HTTP endpoint to {addr}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the HTTP endpoint's address", e))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<TcpStream>(HTTP_QUEUE);
        let mut threads = Vec::with_capacity(HTTP_WORKERS + 1);
        for i in 0..HTTP_WORKERS {
            let rx: Receiver<TcpStream> = rx.clone();
            let handler = Arc::clone(&handler);
            threads.push(spawn(format!("{name}-http-{i}"), move || {
                for stream in rx {
                    serve_connection(stream, &handler);
                }
            })?);
        }
        let stop = Arc::clone(&stopping);
        threads.push(spawn(format!("{name}-http-accept"), move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                match tx.try_send(stream) {
                    Ok(()) => {}
                    Err(TrySendError::Full(mut stream)) => {
                        let _ = stream.set_write_timeout(Some(io_timeout()));
                        let busy = HttpResponse::text(503, "busy: too many requests at once\n");
                        let _ = write_response(&mut stream, &busy, &[]);
                    }
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
            // Dropping `tx` ends the workers once they finished the queue.
        })?);
        Ok(HttpServer {
            local_addr,
            stopping,
            threads,
        })
    }

    /// Where it listens (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, finish the connections already accepted, join every thread.
    /// Idempotent.
    pub fn shutdown(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, io_timeout());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| Error::io("spawning an HTTP endpoint thread", e))
}

/// What the request head said.
enum Head {
    Get(String),
    OtherMethod,
    Bad(&'static str),
    TooLarge,
}

fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let mut buf = vec![0u8; MAX_HTTP_REQUEST_HEAD_BYTES];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Some(Head::TooLarge);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return None, // closed before a whole head arrived
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None, // timed out or reset: nobody to answer
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                return Some(match (request.method, request.path) {
                    (Some("GET"), Some(path)) => {
                        let path = path.split('?').next().unwrap_or(path);
                        Head::Get(path.to_string())
                    }
                    _ => Head::OtherMethod,
                })
            }
            Err(httparse::Error::TooManyHeaders) => return Some(Head::TooLarge),
            Err(_) => return Some(Head::Bad("malformed HTTP request")),
        }
    }
}

fn serve_connection(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(io_timeout()));
    let _ = stream.set_write_timeout(Some(io_timeout()));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let (response, extra): (HttpResponse, &[(&str, &str)]) = match head {
        Head::Get(path) => (
            handler(&path).unwrap_or_else(|| HttpResponse::text(404, "not found\n")),
            &[],
        ),
        Head::OtherMethod => (
            HttpResponse::text(405, "read-only: only GET is served\n"),
            &[("Allow", "GET")],
        ),
        Head::Bad(why) => (HttpResponse::text(400, format!("{why}\n")), &[]),
        Head::TooLarge => (HttpResponse::text(431, "request head too large\n"), &[]),
    };
    let _ = write_response(&mut stream, &response, extra);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(
    stream: &mut TcpStream,
    response: &HttpResponse,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn gets_are_answered_other_methods_refused_and_junk_rejected() {
        let handler: Handler =
            Arc::new(|path: &str| (path == "/hello").then(|| HttpResponse::text(200, "hi\n")));
        let mut server =
            HttpServer::start("127.0.0.1:0".parse().unwrap(), "test", handler).unwrap();
        let addr = server.local_addr();
        let ok = ask(addr, "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nhi\n"), "{ok}");
        assert!(ok.contains("Content-Length: 3\r\n"), "{ok}");
        let missing = ask(addr, "GET /nope HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = ask(addr, "POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("Allow: GET\r\n"), "{post}");
        let junk = ask(addr, "\x01\x02 nonsense\r\n\r\n");
        assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
        // Exactly the limit and still no end of head (so nothing is left unread at close).
        let huge = format!("GET /{}", "a".repeat(MAX_HTTP_REQUEST_HEAD_BYTES - 5));
        let huge = ask(addr, &huge);
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        server.shutdown();
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after shutdown"
        );
    }
}
