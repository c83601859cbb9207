//! The `log` crate's macros, written to the host's log.
//!
//! [`serve!`](crate::serve) and [`client!`](crate::client) install the
//! logger before each call into the guest. Whether a level would appear is
//! asked of the host (`log.enabled`) at most once per level and call (a
//! connection, or a client's run), the first time a line at that level is
//! logged, and the answer is kept: a disabled level lowers
//! `log::max_level()`, so the macros skip it from then on without a host
//! call (and without evaluating their arguments). A guest that never logs
//! never asks. The host's levels are nested (a level is enabled when it
//! passes the host's `--log-level`, and the log budget applies to all
//! alike), so one answer decides the levels on one side of it too. The
//! answers are forgotten at the next call, since an instance the host
//! reuses serves the next connection with a fresh log budget.

use crate::bindings::server::netplug::protocol::log as host;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

struct HostLog;

static LOGGER: HostLog = HostLog;

/// Levels as `log::Level as usize`: Error 1 ... Trace 5. Every level up to
/// `ON` is known to be enabled, every level above `UNDECIDED_TO` known to
/// be disabled; those in between have not been asked about yet.
static ON: AtomicUsize = AtomicUsize::new(0);
static UNDECIDED_TO: AtomicUsize = AtomicUsize::new(Level::Trace as usize);

/// Whether `LOGGER` is the `log` crate's logger (not one the guest set).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the logger, the first time, and forgets the host's answers of
/// the last call. If the guest set a logger of its own, leaves it alone.
pub(crate) fn install() {
    if !INSTALLED.load(Relaxed) {
        if log::set_logger(&LOGGER).is_err() {
            return;
        }
        INSTALLED.store(true, Relaxed);
    }
    ON.store(0, Relaxed);
    UNDECIDED_TO.store(Level::Trace as usize, Relaxed);
    log::set_max_level(LevelFilter::Trace);
}

fn wit_level(level: Level) -> host::Level {
    match level {
        Level::Error => host::Level::Error,
        Level::Warn => host::Level::Warn,
        Level::Info => host::Level::Info,
        Level::Debug => host::Level::Debug,
        Level::Trace => host::Level::Trace,
    }
}

fn filter_of(n: usize) -> LevelFilter {
    match n {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Whether `level` would appear, asking the host only if no earlier answer
/// decides it.
fn enabled(level: Level) -> bool {
    enabled_asking(level, |level| host::enabled(wit_level(level)))
}

/// `enabled`, with `ask` standing for the host.
fn enabled_asking(level: Level, ask: impl FnOnce(Level) -> bool) -> bool {
    let n = level as usize;
    if n <= ON.load(Relaxed) {
        return true;
    }
    if n > UNDECIDED_TO.load(Relaxed) {
        return false;
    }
    if ask(level) {
        ON.store(n, Relaxed);
        true
    } else {
        UNDECIDED_TO.store(n - 1, Relaxed);
        log::set_max_level(filter_of(n - 1));
        false
    }
}

impl Log for HostLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        enabled(metadata.level())
    }

    fn log(&self, record: &Record<'_>) {
        if !enabled(record.level()) {
            return;
        }
        let level = wit_level(record.level());
        match record.args().as_str() {
            Some(message) => host::log(level, message),
            None => host::log(level, &record.args().to_string()),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// The host is asked about a level at most once, and about none that an
    /// earlier answer decides; a disabled level lowers `log::max_level()`.
    /// (The only test touching the logger's statics.)
    #[test]
    fn each_level_is_asked_about_at_most_once() {
        let asked = RefCell::new(Vec::new());
        // A host at `--log-level info`.
        let host = |level: Level| {
            asked.borrow_mut().push(level);
            level <= Level::Info
        };
        ON.store(0, Relaxed);
        UNDECIDED_TO.store(Level::Trace as usize, Relaxed);
        log::set_max_level(LevelFilter::Trace);
        assert!(enabled_asking(Level::Info, host));
        assert!(enabled_asking(Level::Warn, host));
        assert!(enabled_asking(Level::Error, host));
        assert!(enabled_asking(Level::Info, host));
        assert_eq!(*asked.borrow(), [Level::Info]);
        assert_eq!(log::max_level(), LevelFilter::Trace);
        assert!(!enabled_asking(Level::Trace, host));
        assert_eq!(log::max_level(), LevelFilter::Debug);
        assert!(!enabled_asking(Level::Debug, host));
        assert_eq!(log::max_level(), LevelFilter::Info);
        assert!(!enabled_asking(Level::Trace, host));
        assert!(!enabled_asking(Level::Debug, host));
        assert_eq!(*asked.borrow(), [Level::Info, Level::Trace, Level::Debug]);
        // A host at `--log-level warn`: one question settles Info and below.
        asked.borrow_mut().clear();
        let host = |level: Level| {
            asked.borrow_mut().push(level);
            level <= Level::Warn
        };
        ON.store(0, Relaxed);
        UNDECIDED_TO.store(Level::Trace as usize, Relaxed);
        assert!(!enabled_asking(Level::Info, host));
        assert_eq!(log::max_level(), LevelFilter::Warn);
        assert!(!enabled_asking(Level::Debug, host));
        assert!(enabled_asking(Level::Error, host));
        assert!(enabled_asking(Level::Warn, host));
        assert_eq!(*asked.borrow(), [Level::Info, Level::Error, Level::Warn]);
        assert_eq!(filter_of(0), LevelFilter::Off);
        log::set_max_level(LevelFilter::Off);
    }
}
