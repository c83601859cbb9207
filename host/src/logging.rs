//! The host's own log: one line per event on stderr, each written with a
//! single `write` so lines from concurrent connections never interleave.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most detailed level that is written.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one log line: `LEVEL [source] message`. Newlines inside `message`
/// are escaped so that one event is always one line.
pub fn emit(level: Level, source: &str, message: &str) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(message.len() + source.len() + 16);
    line.push_str(level.label());
    line.push_str(" [");
    line.push_str(source);
    line.push_str("] ");
    for c in message.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c => line.push(c),
        }
    }
    line.push('\n');
    // A closed stderr must not take the host down.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

macro_rules! log_at {
    ($level:expr, $source:expr, $($arg:tt)+) => {
        if $crate::logging::enabled($level) {
            $crate::logging::emit($level, $source, &format!($($arg)+))
        }
    };
}
macro_rules! error { ($source:expr, $($arg:tt)+) => { log_at!($crate::logging::Level::Error, $source, $($arg)+) }; }
macro_rules! warn { ($source:expr, $($arg:tt)+) => { log_at!($crate::logging::Level::Warn, $source, $($arg)+) }; }
macro_rules! info { ($source:expr, $($arg:tt)+) => { log_at!($crate::logging::Level::Info, $source, $($arg)+) }; }
macro_rules! debug { ($source:expr, $($arg:tt)+) => { log_at!($crate::logging::Level::Debug, $source, $($arg)+) }; }
