//! The `connection` resource over a wasi:sockets TCP socket and its two
//! streams: `send` and `recv` wait through wasi:io pollables, each wait
//! bounded by the idle timeout; `try-send` and `try-recv` never wait.

use crate::exports::netplug::protocol::types::{ErrorCode, GuestConnection};
use crate::wasi::clocks::monotonic_clock;
use crate::wasi::io::poll::{poll, Pollable};
use crate::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::wasi::sockets::tcp::{ShutdownType, TcpSocket};
use std::cell::Cell;

/// The host's cap on one `recv`, whatever the guest asks.
pub const MAX_RECV: u32 = 65536;

thread_local! {
    /// How long one wait on a peer may last (`listener.settings`).
    static IDLE_NS: Cell<u64> = const { Cell::new(30_000_000_000) };
}

pub fn set_idle_timeout_ms(ms: u64) {
    IDLE_NS.set(ms.saturating_mul(1_000_000));
}

/// A timer that fires once the idle timeout has passed from now.
pub fn idle_timer() -> Pollable {
    monotonic_clock::subscribe_duration(IDLE_NS.get())
}

/// One TCP connection. The streams come before the socket so that they are
/// dropped first: WASI requires a socket's streams to go before it.
pub struct Connection {
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
    peer: String,
    local: String,
    /// Once an operation failed, every later one fails at once with this.
    failed: Cell<Option<ErrorCode>>,
    /// The write side is shut down: `send` fails with `closed`.
    shut: Cell<bool>,
}

impl Connection {
    pub fn new(socket: TcpSocket, input: InputStream, output: OutputStream) -> Connection {
        let peer = crate::address::text(socket.remote_address());
        let local = crate::address::text(socket.local_address());
        Connection { input, output, socket, peer, local, failed: Cell::new(None), shut: Cell::new(false) }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The error a failed connection repeats, if it failed.
    pub fn check(&self) -> Result<(), ErrorCode> {
        self.failed.get().map_or(Ok(()), Err)
    }

    /// Marks the connection failed with `code`, and returns it.
    pub fn fail(&self, code: ErrorCode) -> ErrorCode {
        self.failed.set(Some(code));
        code
    }

    pub fn is_shut(&self) -> bool {
        self.shut.get()
    }

    pub fn readable(&self) -> Pollable {
        self.input.subscribe()
    }

    pub fn writable(&self) -> Pollable {
        self.output.subscribe()
    }

    /// Waits until `ready` fires or the idle timeout passes; the latter
    /// fails the connection with `timed-out`.
    fn wait_for(&self, ready: Pollable) -> Result<(), ErrorCode> {
        let timer = idle_timer();
        if poll(&[&ready, &timer]).contains(&0) {
            Ok(())
        } else {
            Err(self.fail(ErrorCode::TimedOut))
        }
    }

    /// Reads what is queued, at most `max` bytes: `None` when nothing is,
    /// an empty list at end of stream.
    pub fn read_now(&self, max: u32) -> Result<Option<Vec<u8>>, ErrorCode> {
        self.check()?;
        match self.input.read(u64::from(max.min(MAX_RECV))) {
            Ok(data) if data.is_empty() => Ok(None),
            Ok(data) => Ok(Some(data)),
            Err(StreamError::Closed) => Ok(Some(Vec::new())),
            Err(StreamError::LastOperationFailed(e)) => Err(self.fail(classify(&e.to_debug_string()))),
        }
    }

    /// Writes the prefix of `data` the stream accepts now; its length.
    pub fn write_now(&self, data: &[u8]) -> Result<usize, ErrorCode> {
        self.check()?;
        if self.shut.get() {
            return Err(ErrorCode::Closed);
        }
        let permitted = self.output.check_write().map_err(|e| self.stream_failed(e))?;
        let n = data.len().min(usize::try_from(permitted).unwrap_or(usize::MAX));
        if n > 0 {
            self.output.write(&data[..n]).map_err(|e| self.stream_failed(e))?;
        }
        Ok(n)
    }

    /// Waits until every byte written so far is handed to the kernel.
    fn flush(&self) -> Result<(), ErrorCode> {
        self.output.flush().map_err(|e| self.stream_failed(e))?;
        loop {
            // After a flush, check-write answers 0 until it is complete.
            if self.output.check_write().map_err(|e| self.stream_failed(e))? > 0 {
                return Ok(());
            }
            self.wait_for(self.output.subscribe())?;
        }
    }

    /// Flushes, then shuts down the write side: the peer reads end of
    /// stream.
    pub fn shutdown_write(&self) -> Result<(), ErrorCode> {
        self.check()?;
        if self.shut.get() {
            return Ok(());
        }
        self.flush()?;
        self.shut.set(true);
        self.socket.shutdown(ShutdownType::Send).map_err(|_| self.fail(ErrorCode::Other))
    }

    fn stream_failed(&self, e: StreamError) -> ErrorCode {
        match e {
            StreamError::Closed => self.fail(ErrorCode::Closed),
            StreamError::LastOperationFailed(e) => self.fail(classify(&e.to_debug_string())),
        }
    }
}

/// The error code of a failed stream operation. WASI gives the reason only
/// as text here (its error-code accessor is unstable, and a stock runtime
/// does not link it by default).
fn classify(detail: &str) -> ErrorCode {
    let detail = detail.to_ascii_lowercase();
    if detail.contains("reset") {
        ErrorCode::Reset
    } else if detail.contains("broken pipe") {
        ErrorCode::Closed
    } else if detail.contains("timed out") {
        ErrorCode::TimedOut
    } else {
        ErrorCode::Other
    }
}

impl Drop for Connection {
    /// What the guest sent goes out before the socket closes, as the host's
    /// connections do; bounded by the idle timeout.
    fn drop(&mut self) {
        if self.failed.get().is_none() && !self.shut.get() {
            let _ = self.flush();
        }
    }
}

impl GuestConnection for Connection {
    fn send(&self, data: Vec<u8>) -> Result<(), ErrorCode> {
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = self.write_now(rest)?;
            if n == 0 {
                self.wait_for(self.output.subscribe())?;
            }
            rest = &rest[n..];
        }
        self.flush()
    }

    fn recv(&self, max: u32) -> Result<Vec<u8>, ErrorCode> {
        loop {
            if let Some(data) = self.read_now(max)? {
                return Ok(data);
            }
            self.wait_for(self.input.subscribe())?;
        }
    }

    fn shutdown(&self) -> Result<(), ErrorCode> {
        self.shutdown_write()
    }

    fn try_recv(&self, max: u32) -> Result<Option<Vec<u8>>, ErrorCode> {
        self.read_now(max)
    }

    fn try_send(&self, data: Vec<u8>) -> Result<u32, ErrorCode> {
        let n = self.write_now(&data)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn peer_address(&self) -> String {
        self.peer.clone()
    }

    fn local_address(&self) -> String {
        self.local.clone()
    }
}
