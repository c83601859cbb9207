//! The `http` guest served by the real host, talked to by curl, Python's
//! http.client and raw sockets: keep-alive, pipelining, bodies, HEAD,
//! HTTP/1.0, the error statuses for requests it cannot frame, and the time
//! limit on a request head.

use crate::support::*;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const OK_BODY: &str = "Hello, World!\n";

fn curl(args: &[&str]) -> Output {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl (Debian package curl)");
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn url(host: &Host, path: &str) -> String {
    format!("http://{}{path}", host.addr)
}

/// Sends `request` on a fresh connection and returns everything the server
/// wrote before closing.
fn raw_exchange(host: &Host, request: &[u8]) -> String {
    let mut stream = connect(host.addr);
    stream.write_all(request).unwrap();
    String::from_utf8_lossy(&read_to_end(&mut stream)).into_owned()
}

#[test]
fn curl_gets_hello() {
    let host = Host::serve("http", &[]);
    let out = curl(&["--include", &url(&host, "/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-type: text/plain\r\n"), "{text}");
    assert!(text.ends_with(&format!("\r\n\r\n{OK_BODY}")), "{text}");
}

#[test]
fn curl_reuses_one_connection_for_several_requests() {
    let host = Host::serve("http", &[]);
    let out = curl(&["--verbose", &url(&host, "/a"), &url(&host, "/b"), &url(&host, "/c")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), OK_BODY.repeat(3));
    let trace = String::from_utf8_lossy(&out.stderr);
    assert_eq!(trace.matches("Re-using existing connection").count(), 2, "curl opened new connections:\n{trace}");
}

#[test]
fn python_http_client_keeps_one_connection_across_requests() {
    let host = Host::serve("http", &[]);
    let script = r#"
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
ports = set()
for method, body in [("GET", None), ("POST", b"x" * 100000), ("PUT", b"small"), ("DELETE", None), ("GET", None)]:
    conn.request(method, "/item?q=1", body=body)
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    assert resp.read() == b"Hello, World!\n"
    ports.add(conn.sock.getsockname()[1])
print(len(ports))
"#;
    let out =
        Command::new("python3").args(["-c", script, &host.addr.port().to_string()]).output().expect("run python3");
    assert!(out.status.success(), "python client failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "every request used the same connection");
}

#[test]
fn many_parallel_curl_transfers_all_succeed() {
    let host = Host::serve("http", &[]);
    let urls: Vec<String> = (0..60).map(|i| url(&host, &format!("/{i}"))).collect();
    let mut args = vec!["--parallel", "--parallel-max", "30"];
    args.extend(urls.iter().map(String::as_str));
    let out = curl(&args);
    assert_eq!(String::from_utf8_lossy(&out.stdout), OK_BODY.repeat(60));
}

#[test]
fn head_gets_headers_without_a_body() {
    let host = Host::serve("http", &[]);
    let out = curl(&["--head", &url(&host, "/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: 14\r\n"), "{text}");
    assert!(!text.contains("Hello"), "HEAD response carried a body: {text}");
}

#[test]
fn connection_close_is_honoured_after_a_posted_body() {
    let host = Host::serve("http", &[]);
    let mut curl = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--include", "-H", "Connection: close"])
        .args(["--data-binary", "@-", &url(&host, "/upload")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    curl.stdin.take().unwrap().write_all(&vec![b'a'; 300_000]).unwrap();
    let out = curl.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {text}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with(OK_BODY), "{text}");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_bodies_skipped() {
    let host = Host::serve("http", &[]);
    let reply = raw_exchange(
        &host,
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nGET /fake\r\n\
          HEAD /b HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{reply}");
    // The POST and the GET carry a body, the HEAD does not; only the last
    // response announces the close, and then the server closed.
    assert_eq!(reply.matches(OK_BODY).count(), 2, "{reply}");
    assert_eq!(reply.matches("connection: close").count(), 1, "{reply}");
    assert!(reply.ends_with(&format!("connection: close\r\n\r\n{OK_BODY}")), "{reply}");
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let host = Host::serve("http", &[]);
    let plain = raw_exchange(&host, b"GET / HTTP/1.0\r\n\r\n");
    assert!(plain.contains("connection: close\r\n") && plain.ends_with(OK_BODY), "{plain}");

    let mut stream = connect(host.addr);
    stream.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n").unwrap();
    let both = String::from_utf8_lossy(&read_to_end(&mut stream)).into_owned();
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "the kept-alive connection answered again: {both}");
    assert!(both.contains("connection: keep-alive\r\n"), "{both}");
}

#[test]
fn requests_it_cannot_frame_get_an_error_status_and_a_log_line() {
    let host = Host::serve("http", &[]);
    let huge_header = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "b".repeat(10_000));
    let cases: [(&[u8], &str); 6] = [
        (b"GARBAGE\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", "505 HTTP Version Not Supported"),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "501 Not Implemented",
        ),
        (huge_header.as_bytes(), "431 Request Header Fields Too Large"),
    ];
    for (request, status) in cases {
        let reply = raw_exchange(&host, request);
        assert!(reply.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{status}: {reply}");
        assert!(reply.contains("connection: close\r\n"), "{status}: {reply}");
        host.wait_for_log(status, |l| l.contains(status));
    }
    // The server itself is unaffected.
    assert_eq!(String::from_utf8_lossy(&curl(&[&url(&host, "/")]).stdout), OK_BODY);
}

#[test]
fn a_head_trickled_a_byte_a_second_gets_408_after_10_seconds() {
    let host = Host::serve("http", &[]);
    // A head that never ends: a header value that grows by a byte a second.
    let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
    let start = Instant::now();
    let mut stream = connect(host.addr);
    // Each turn sends one byte, then waits up to a second for an answer.
    stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    for &byte in head {
        assert!(start.elapsed() < Duration::from_secs(20), "no answer to a trickled head within 20 s");
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("read failed after {:?}: {e}", start.elapsed()),
        }
    }
    let answered = start.elapsed();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    reply.extend(read_to_end(&mut stream));
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "after {answered:?}: {reply}");
    assert!(reply.contains("connection: close\r\n"), "{reply}");
    assert!(
        answered >= Duration::from_secs(10) && answered < Duration::from_secs(15),
        "answered after {answered:?}, not within 10-15 s"
    );
    host.wait_for_log("warning of the slow head", |l| l.contains("WARN") && l.contains("408 Request Timeout"));
    assert_eq!(host.count_log("408 Request Timeout"), 1, "one line");
}

#[test]
fn an_idle_keep_alive_connection_is_not_cut_by_the_head_timeout() {
    // Between requests only the host's idle timeout (30 s) applies: a client
    // that waits 11 s before its next request, which then arrives in parts,
    // is answered.
    let host = Host::serve("http", &[]);
    let mut stream = connect(host.addr);
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut buf = [0u8; 1024];
    let mut response = |stream: &mut std::net::TcpStream| {
        let mut got = Vec::new();
        while !got.ends_with(OK_BODY.as_bytes()) {
            let n = stream.read(&mut buf).expect("read a response");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    stream.write_all(request).unwrap();
    assert!(response(&mut stream).starts_with("HTTP/1.1 200 OK\r\n"));
    // The idle time under test, longer than the head timeout.
    std::thread::sleep(Duration::from_secs(11));
    // The next head in three parts a second apart (the slow client under
    // test): the guest sees its first byte well after the previous request.
    stream.write_all(&request[..1]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stream.write_all(&request[1..10]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stream.write_all(&request[10..]).unwrap();
    let second = response(&mut stream);
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    // The guest logs the status line it rejects with; a bare "408" could
    // be part of a timestamp, a port or a duration.
    assert_eq!(host.count_log("408 Request Timeout"), 0, "no 408 logged");
}
