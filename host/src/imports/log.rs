//! What a guest writes (the `log` interface, stdout and stderr) becomes
//! events in the host's log, inside the connection's span (so each carries
//! the listener and peer), bounded per connection so a guest cannot flood
//! the host's log or disk.

use crate::imports::bindings::server::netplug::protocol::log;
use crate::imports::bindings::Level as GuestLevel;
use crate::imports::state::GuestState;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tracing::Level;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept; a longer one is split.
const MAX_LINE: usize = 4096;

/// What the host quotes of a string a guest chose (an address to dial, the
/// reason it returned) in its own log lines.
const MAX_QUOTED: usize = 256;

/// `text` cut to `MAX_QUOTED` bytes (at a character boundary), marked when
/// cut.
pub fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_QUOTED {
        return text.into();
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len()).into()
}

use crate::ops::logging::GUEST_TARGET as TARGET;

/// One connection's log budget.
#[derive(Debug)]
pub struct GuestLog {
    /// The connection's span, the parent of its guest's lines.
    pub span: Arc<crate::imports::state::ConnSpan>,
    lines_left: u32,
    bytes_left: u64,
    dropped: u64,
}

/// Whether the host log takes events at `level` from guests. Answered by
/// tracing's per-callsite interest cache: a disabled level costs a load.
fn level_enabled(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(target: TARGET, Level::ERROR),
        Level::WARN => tracing::enabled!(target: TARGET, Level::WARN),
        Level::INFO => tracing::enabled!(target: TARGET, Level::INFO),
        Level::DEBUG => tracing::enabled!(target: TARGET, Level::DEBUG),
        Level::TRACE => tracing::enabled!(target: TARGET, Level::TRACE),
    }
}

/// The line is the event's message as a string value, not a format string:
/// the text formatter writes it as it is (escaped), without core::fmt.
fn emit(span: &tracing::Span, level: Level, line: &str) {
    match level {
        Level::ERROR => tracing::error!(target: TARGET, parent: span, message = line),
        Level::WARN => tracing::warn!(target: TARGET, parent: span, message = line),
        Level::INFO => tracing::info!(target: TARGET, parent: span, message = line),
        Level::DEBUG => tracing::debug!(target: TARGET, parent: span, message = line),
        Level::TRACE => tracing::trace!(target: TARGET, parent: span, message = line),
    }
}

impl GuestLog {
    pub fn new(max_lines: u32, max_bytes: u64) -> Self {
        GuestLog { span: Arc::default(), lines_left: max_lines, bytes_left: max_bytes, dropped: 0 }
    }

    /// Starts a new connection's budget in place, so that stdio streams the
    /// guest already holds keep counting against the right budget when an
    /// instance serves another connection.
    pub fn reset(&mut self, max_lines: u32, max_bytes: u64) {
        let span = std::mem::take(&mut self.span);
        *self = GuestLog { span, ..GuestLog::new(max_lines, max_bytes) };
    }

    /// Whether a line at `level` would be written now. A guest that asks
    /// once the budget is spent gets `false`, and the log the same single
    /// notice as for a dropped line.
    pub fn would_write(&mut self, level: Level) -> bool {
        if !level_enabled(level) {
            return false;
        }
        if self.lines_left == 0 || self.bytes_left == 0 {
            self.drop_line();
            return false;
        }
        true
    }

    /// Writes one guest line if the level is enabled and the budget allows;
    /// the first line over the budget is replaced by a single notice.
    /// Returns whether the line was written.
    pub fn write(&mut self, level: Level, line: &str) -> bool {
        if !level_enabled(level) {
            return false;
        }
        let len = line.len() as u64;
        if self.lines_left == 0 || self.bytes_left < len {
            self.drop_line();
            return false;
        }
        self.lines_left -= 1;
        self.bytes_left -= len;
        emit(self.span.get(), level, line);
        true
    }

    fn drop_line(&mut self) {
        if self.dropped == 0 {
            tracing::warn!(parent: self.span.get(), "guest log limit reached (--max-log-lines/--max-log-bytes): dropping further guest output");
        }
        self.dropped += 1;
    }
}

pub fn level_of(level: GuestLevel) -> Level {
    match level {
        GuestLevel::Trace => Level::TRACE,
        GuestLevel::Debug => Level::DEBUG,
        GuestLevel::Info => Level::INFO,
        GuestLevel::Warn => Level::WARN,
        GuestLevel::Error => Level::ERROR,
    }
}

/// The `log` interface.
impl log::Host for GuestState {
    async fn log(&mut self, level: GuestLevel, message: String) -> wasmtime::Result<()> {
        self.log.lock().unwrap().write(level_of(level), &message);
        Ok(())
    }

    async fn enabled(&mut self, level: GuestLevel) -> wasmtime::Result<bool> {
        Ok(self.log.lock().unwrap().would_write(level_of(level)))
    }
}

/// A guest's stdout or stderr, written to the host log line by line.
#[derive(Clone)]
pub struct LogStdio {
    log: Arc<Mutex<GuestLog>>,
    level: Level,
}

impl LogStdio {
    pub fn new(log: Arc<Mutex<GuestLog>>, level: Level) -> Self {
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
    fn emit(out: &LogStdio, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        out.log.lock().unwrap().write(out.level, text);
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        // A last line without a newline is still the guest's output.
        if !self.pending.is_empty() {
            LineWriter::emit(&self.out, &self.pending);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    /// Each line (or `MAX_LINE` bytes of a longer one) is logged, and what
    /// remains is kept once, at the end: a write of many short lines costs
    /// its length, not its length times its lines.
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.pending.extend_from_slice(&bytes);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            let end = match rest[..rest.len().min(MAX_LINE)].iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if rest.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            LineWriter::emit(&self.out, &rest[..end]);
            start += end;
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with a subscriber that takes every level.
    fn with_log<R>(f: impl FnOnce() -> R) -> R {
        let subscriber = tracing_subscriber::fmt().with_max_level(Level::TRACE).with_test_writer().finish();
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn the_line_budget_is_exact() {
        with_log(|| {
            let mut log = GuestLog::new(3, 1 << 20);
            let written = (0..10).filter(|i| log.write(Level::INFO, &format!("line {i}"))).count();
            assert_eq!(written, 3);
            assert_eq!(log.dropped, 7);
            assert!(!log.would_write(Level::INFO), "asking after the budget is spent");
        });
    }

    #[test]
    fn the_byte_budget_refuses_a_line_that_would_pass_it() {
        with_log(|| {
            let mut log = GuestLog::new(100, 10);
            assert!(log.write(Level::INFO, "12345678"));
            assert!(!log.write(Level::INFO, "123"), "8 + 3 bytes would pass 10");
            assert!(log.write(Level::INFO, "12"), "8 + 2 fits");
            assert!(!log.would_write(Level::INFO));
        });
    }

    #[test]
    fn disabled_levels_cost_no_budget() {
        let subscriber = tracing_subscriber::fmt().with_max_level(Level::WARN).with_test_writer().finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut log = GuestLog::new(1, 1 << 20);
            assert!(!log.would_write(Level::INFO));
            assert!(!log.write(Level::DEBUG, "dropped by level"));
            assert!(log.write(Level::WARN, "kept"));
            assert_eq!(log.dropped, 0, "a line below the level is not over budget");
        });
    }

    #[test]
    fn guest_strings_are_clipped() {
        assert_eq!(clipped("short"), "short");
        let long = "é".repeat(1000);
        let cut = clipped(&long);
        assert!(cut.len() < MAX_QUOTED + 20 && cut.ends_with("... (2000 bytes)"), "{cut}");
    }

    #[test]
    fn a_write_of_many_lines_is_linear() {
        with_log(|| {
            let log = Arc::new(Mutex::new(GuestLog::new(10, 1 << 20)));
            let mut writer = LineWriter { out: LogStdio::new(log.clone(), Level::INFO), pending: Vec::new() };
            let started = std::time::Instant::now();
            // 8 MiB of empty lines: quadratic, this took hours.
            writer.write(Bytes::from(vec![b'\n'; 8 << 20])).unwrap();
            writer.write(Bytes::from_static(b"partial")).unwrap();
            assert_eq!(writer.pending, b"partial");
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            assert_eq!(log.lock().unwrap().dropped, (8 << 20) - 10);
        });
    }

    #[test]
    fn a_reset_restores_the_budget() {
        with_log(|| {
            let mut log = GuestLog::new(1, 100);
            assert!(log.write(Level::INFO, "a"));
            assert!(!log.write(Level::INFO, "b"));
            log.reset(1, 100);
            assert!(log.write(Level::INFO, "c"));
        });
    }
}
