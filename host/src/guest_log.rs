//! What a guest writes (the `log` interface, stdout and stderr) goes to the
//! host's log, each line prefixed with its connection's peer address, and
//! bounded per connection so a guest cannot flood the host's log or disk.

use crate::bindings::Level as GuestLevel;
use crate::logging::{self, Level};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept; a longer one is split.
const MAX_LINE: usize = 4096;

/// One connection's log budget and the source name its lines carry.
pub struct GuestLog {
    source: String,
    lines_left: u32,
    bytes_left: u64,
    dropped: u64,
}

pub type SharedLog = Arc<Mutex<GuestLog>>;

impl GuestLog {
    pub fn new(source: String, max_lines: u32, max_bytes: u64) -> SharedLog {
        Arc::new(Mutex::new(GuestLog {
            source,
            lines_left: max_lines,
            bytes_left: max_bytes,
            dropped: 0,
        }))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Starts a new connection's budget in place, so that stdio streams the
    /// guest already holds keep writing to the right place when an instance
    /// serves another connection.
    pub fn reset(&mut self, source: String, max_lines: u32, max_bytes: u64) {
        *self = GuestLog { source, lines_left: max_lines, bytes_left: max_bytes, dropped: 0 };
    }

    /// Whether a line at `level` would be written now. A guest that asks
    /// once the budget is spent gets `false`, and the log the same single
    /// notice as for a dropped line.
    pub fn would_write(&mut self, level: Level) -> bool {
        if !logging::enabled(level) {
            return false;
        }
        if self.lines_left == 0 || self.bytes_left == 0 {
            self.drop_line();
            return false;
        }
        true
    }

    /// Writes one guest line if the budget allows; the first line over it
    /// is replaced by a single notice.
    pub fn write(&mut self, level: Level, line: &str) {
        if !logging::enabled(level) {
            return;
        }
        let len = line.len() as u64;
        if self.lines_left == 0 || self.bytes_left < len {
            self.drop_line();
            return;
        }
        self.lines_left -= 1;
        self.bytes_left -= len;
        logging::emit(level, &self.source, line);
    }

    fn drop_line(&mut self) {
        if self.dropped == 0 {
            logging::emit(
                Level::Warn,
                &self.source,
                "guest log limit reached (--max-log-lines/--max-log-bytes): dropping further guest output",
            );
        }
        self.dropped += 1;
    }
}

pub fn level_of(level: GuestLevel) -> Level {
    match level {
        GuestLevel::Trace | GuestLevel::Debug => Level::Debug,
        GuestLevel::Info => Level::Info,
        GuestLevel::Warn => Level::Warn,
        GuestLevel::Error => Level::Error,
    }
}

/// A guest's stdout or stderr, written to the host log line by line.
#[derive(Clone)]
pub struct LogStdio {
    log: SharedLog,
    level: Level,
}

impl LogStdio {
    pub fn new(log: SharedLog, level: Level) -> Self {
        LogStdio { log, level }
    }
}

impl IsTerminal for LogStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter { out: self.clone(), pending: Vec::new() })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp2 streams are linked; this path is never taken by a
        // wasip2 guest, so it discards rather than bypassing the budget.
        Box::new(tokio::io::sink())
    }
}

/// Collects bytes until a newline, then logs the line.
struct LineWriter {
    out: LogStdio,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.pending.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        self.out.log.lock().unwrap().write(self.out.level, text);
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        // A last line without a newline is still the guest's output.
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.emit(n);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.pending.extend_from_slice(&bytes);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            self.emit(i + 1);
        }
        while self.pending.len() >= MAX_LINE {
            self.emit(MAX_LINE);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}
