//! The scrape endpoint: just enough HTTP/1.1 to answer `GET` (or `HEAD`) with the Prometheus
//! text format, on any path, then close the connection.
//!
//! Every input is bounded: a request head larger than [`MAX_HEAD`] or slower than
//! [`IO_TIMEOUT`] is dropped, and at most [`MAX_CONNECTIONS`] scrapes are served at once, so a
//! client that connects and says nothing cannot hold the endpoint for others.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// Largest request head read (request line and headers); scrapers send a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time allowed for reading the request and for writing the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at the same time; more connections are closed at once.
pub const MAX_CONNECTIONS: usize = 4;

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET`: the metrics.
    Get,
    /// `HEAD`: the headers of the metrics answer, no body.
    Head,
    /// Another method: 405.
    OtherMethod,
    /// Not an HTTP/1.x request line: 400.
    Malformed,
}

/// Classifies a request head (everything up to the blank line).
pub fn parse_head(head: &[u8]) -> Request {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Malformed;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if target.is_empty() || !version.starts_with("HTTP/1.") {
        return Request::Malformed;
    }
    match method {
        "GET" => Request::Get,
        "HEAD" => Request::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Request::OtherMethod,
        _ => Request::Malformed,
    }
}

/// The full answer to `request`; `body` renders the metrics and is only called when needed.
pub fn response(request: Request, body: impl FnOnce() -> String) -> Vec<u8> {
    let (status, content_type, body, send_body) = match request {
        Request::Get => ("200 OK", CONTENT_TYPE, body(), true),
        Request::Head => ("200 OK", CONTENT_TYPE, body(), false),
        Request::OtherMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n".to_string(),
            true,
        ),
        Request::Malformed => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".to_string(),
            true,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{}connection: close\r\n\r\n",
        body.len(),
        if request == Request::OtherMethod { "allow: GET, HEAD\r\n" } else { "" },
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Accepts scrapes for ever, each on its own short-lived thread.
pub fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "metrics endpoint: accept failed");
                // Out of file descriptors and the like: don't spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            continue; // dropping `stream` closes it
        }
        let handle = handle.clone();
        let done = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("metrics-scrape".into())
            .spawn(move || {
                if let Err(e) = answer(stream, &handle) {
                    tracing::debug!(error = %e, "metrics endpoint: scrape failed");
                }
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(head) = read_head(&mut stream)? else {
        return Ok(());
    };
    let request = parse_head(&head);
    stream.write_all(&response(request, || handle.render()))?;
    stream.flush()
}

/// Reads up to the blank line that ends the head; `None` when the client gave up first.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_request_lines() {
        let cases: &[(&[u8], Request)] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Request::Get),
            (b"GET / HTTP/1.0\r\n\r\n", Request::Get),
            (b"HEAD /anything HTTP/1.1\r\n\r\n", Request::Head),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Request::OtherMethod),
            (b"GET /metrics\r\n\r\n", Request::Malformed),
            (b"GET  HTTP/1.1\r\n\r\n", Request::Malformed),
            (b"GET / HTTP/2\r\n\r\n", Request::Malformed),
            (b"GET / HTTP/1.1 extra\r\n\r\n", Request::Malformed),
            (b"get / HTTP/1.1\r\n\r\n", Request::Malformed),
            (b"\xff\xfe / HTTP/1.1\r\n\r\n", Request::Malformed),
            (b"", Request::Malformed),
        ];
        for (head, want) in cases {
            assert_eq!(
                parse_head(head),
                *want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    fn text(r: Vec<u8>) -> String {
        String::from_utf8(r).unwrap()
    }

    #[test]
    fn get_carries_the_body_and_its_length() {
        let r = text(response(Request::Get, || "a 1\n".into()));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("content-type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("content-length: 4\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\na 1\n"), "{r}");
    }

    #[test]
    fn head_has_the_length_but_no_body() {
        let r = text(response(Request::Head, || "a 1\n".into()));
        assert!(r.contains("content-length: 4\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
    }

    #[test]
    fn errors_do_not_render_metrics() {
        for (req, status) in [(Request::OtherMethod, "405"), (Request::Malformed, "400")] {
            let r = text(response(req, || panic!("rendered for {req:?}")));
            assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{r}");
        }
        let r = text(response(Request::OtherMethod, String::new));
        assert!(r.contains("allow: GET, HEAD\r\n"), "{r}");
    }
}
