//! The native baseline: a tokio server doing exactly what each guest does,
//! with no wasm in between. Same stdout contract as `host run`: one line
//! `listening on ADDR`, then silence.

use anyhow::{bail, Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use std::convert::Infallible;
use std::io::Write;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Mode {
    /// hello.wasm: send `HELLO,WORLD`, read up to 1024 bytes once, close.
    Seed,
    /// echo.wasm: echo in 64 KiB reads until EOF, then close.
    Echo,
    /// http.wasm: HTTP/1.1 with keep-alive, every request answered 200
    /// `text/plain` `Hello, World!\n`.
    Http,
}

/// The body http.wasm answers every request with (the bench's HTTP warm-up
/// checks responses against it).
pub const HTTP_BODY: &[u8] = b"Hello, World!\n";

/// `bench native seed|echo|http [--addr IP] [--port N] [--backlog N]`
pub fn main(args: &[String]) -> Result<()> {
    let mode = match args.first().map(String::as_str) {
        Some("seed") => Mode::Seed,
        Some("echo") => Mode::Echo,
        Some("http") => Mode::Http,
        other => bail!("native: expected `seed`, `echo` or `http`, got {other:?}"),
    };
    let mut addr = "127.0.0.1".to_string();
    let mut port = 0u16;
    let mut backlog = 1024u32; // the host's default
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = val.clone(),
            "--port" => port = val.parse()?,
            "--backlog" => backlog = val.parse()?,
            _ => bail!("native: unknown flag {flag}"),
        }
    }
    // Multi-thread runtime, like the host's, so the comparison is about the
    // wasm layer and not about the scheduler.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(mode, &addr, port, backlog))
}

async fn serve(mode: Mode, addr: &str, port: u16, backlog: u32) -> Result<()> {
    let sock_addr: std::net::SocketAddr = format!("{addr}:{port}").parse()?;
    let socket = if sock_addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(sock_addr)?;
    let listener: TcpListener = socket.listen(backlog)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = &mut shutdown => return r,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        // Errors (resets, etc.) end the connection silently,
                        // as a guest's error would end its instance.
                        let _ = match mode {
                            Mode::Seed => seed(stream).await,
                            Mode::Echo => echo(stream).await,
                            Mode::Http => http(stream).await,
                        };
                    });
                }
                // EMFILE and friends: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            },
        }
    }
}

async fn seed(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(b"HELLO,WORLD").await?;
    let mut buf = [0u8; 1024];
    let _n = stream.read(&mut buf).await?;
    // The guest logs this line at info level; with --log-level warn the host
    // drops it, so the native server prints nothing either.
    Ok(())
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// One HTTP/1.1 connection through hyper's own server loop: keep-alive is
/// hyper's default, and a request's `Connection: close` makes hyper answer
/// with `connection: close` and end the connection. Hyper adds a `date`
/// header, which http.wasm does not; everything else is the same response.
async fn http(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    hyper::server::conn::http1::Builder::new()
        .serve_connection(io, hyper::service::service_fn(hello))
        .await
        .map_err(std::io::Error::other)
}

/// Any method, any path: 200, `content-type: text/plain`, the 14-byte body.
async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(HTTP_BODY)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}
