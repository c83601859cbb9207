//! The admin endpoint (`--admin-addr`, `[admin] address`): a small HTTP/1.1
//! server for operators, apart from the listeners and off their connections'
//! path. One request per connection, answered with `Connection: close`:
//!
//! - `GET /metrics`: the metrics (`metrics.rs`), Prometheus text format;
//! - `GET /livez`: 200 while the process runs;
//! - `GET /readyz`: 200 while every listener serves, 503 (naming what is not
//!   ready) before that and from the moment shutdown begins, so a load
//!   balancer stops sending before connections drain;
//! - `POST /reload`: what SIGHUP does; 200 with the outcome line, 500 with
//!   the error line, 409 once shutdown has begun.
//!
//! Anything else is 404 (unknown path) or 405 (wrong method). It has no
//! authentication: it belongs on loopback or a private network.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What `POST /reload` does: the outcome line, or the error line.
pub type ReloadFn = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// A request head larger than this is refused.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the process is ready for traffic: every listener serving, and
/// no shutdown begun.
pub struct Health {
    shutdown: watch::Receiver<bool>,
    /// Each listener, and whether it is bound and serving a generation.
    listeners: Mutex<BTreeMap<String, bool>>,
}

impl Health {
    pub fn new(shutdown: watch::Receiver<bool>) -> Arc<Health> {
        Arc::new(Health { shutdown, listeners: Mutex::default() })
    }

    /// A listener that is to serve, not yet serving.
    pub fn expect(&self, name: &str) {
        self.listeners.lock().unwrap().entry(name.to_string()).or_insert(false);
    }

    /// A listener bound and serving its first generation.
    pub fn serving(&self, name: &str) {
        self.listeners.lock().unwrap().insert(name.to_string(), true);
    }

    /// A listener a reload removed.
    pub fn removed(&self, name: &str) {
        self.listeners.lock().unwrap().remove(name);
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// `Ok`, or what is not ready.
    fn ready(&self) -> Result<(), String> {
        if self.shutting_down() {
            return Err("not ready: shutting down".into());
        }
        let listeners = self.listeners.lock().unwrap();
        let waiting: Vec<&str> = listeners.iter().filter(|(_, ready)| !**ready).map(|(n, _)| n.as_str()).collect();
        match (listeners.is_empty(), waiting.is_empty()) {
            (true, _) => Err("not ready: no listener".into()),
            (false, true) => Ok(()),
            (false, false) => Err(format!("not ready: listener(s) not serving yet: {}", waiting.join(", "))),
        }
    }
}

pub struct Admin {
    pub health: Arc<Health>,
    pub reload: ReloadFn,
}

/// Binds the admin address (before anything is served, so a bad address
/// fails the start).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    crate::ops::listen::bind(addr, 128).with_context(|| format!("admin address {addr}"))
}

/// Serves the admin endpoint on `listener` until the process ends.
pub fn spawn(listener: TcpListener, admin: Admin) -> Result<SocketAddr> {
    let bound = listener.local_addr().context("cannot read the admin address")?;
    let admin = Arc::new(admin);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, admin.clone()));
                }
                Err(e) => {
                    tracing::warn!("admin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

/// Reads a request head, up to its blank line.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(head);
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

async fn handle(mut stream: TcpStream, admin: Arc<Admin>) {
    let Ok(Some(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await else { return };
    let line = String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap_or(0)]).into_owned();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let response = respond(&admin, method, path).await;
    let Response { status, content_type, body, allow } = response;
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    let allow = allow.map(|a| format!("Allow: {a}\r\n")).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: Option<&'static str>,
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    Response { status, content_type: "text/plain; charset=utf-8", body, allow: None }
}

async fn respond(admin: &Admin, method: &str, path: &str) -> Response {
    let get = method == "GET" || method == "HEAD";
    let wrong = |allow: &'static str| Response { allow: Some(allow), ..text(405, "method not allowed") };
    match path {
        "/metrics" if get => Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: crate::ops::metrics::global().encode(),
            allow: None,
        },
        "/livez" if get => text(200, "ok"),
        "/readyz" if get => match admin.health.ready() {
            Ok(()) => text(200, "ok"),
            Err(why) => text(503, why),
        },
        "/reload" if method == "POST" => {
            if admin.health.shutting_down() {
                return text(409, "shutting down: not reloading");
            }
            match (admin.reload)().await {
                Ok(line) => text(200, line),
                Err(line) => text(500, line),
            }
        }
        "/metrics" | "/livez" | "/readyz" => wrong("GET, HEAD"),
        "/reload" => wrong("POST"),
        _ => text(404, "not found: the admin endpoint serves /metrics, /livez, /readyz and POST /reload"),
    }
}
