//! The text log line, as tracing-subscriber's default (`Full`) format
//! writes it without colors, for less:
//!
//! ```text
//! 2026-12-06T08:16:51.375869Z  INFO conn{listener=hello generation=1 peer=127.0.0.1:41126}: netplug::record: closed duration_ms=0.42 bytes_in=17 bytes_out=11 outcome=ok
//! ```
//!
//! The default styles every piece (the level, each span's name and braces,
//! the colons, the target) through `nu_ansi_term` even when colors are off,
//! some 26 formatted pieces per seed exchange: about 8,000 instructions of
//! its 150,000. This writes the same text directly. The fields are still
//! written by the default field formatter, which escapes what a guest
//! wrote; colors, on a terminal, are still the default's (`logging.rs`).

use crate::ops::log_time::LogTime;
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The `FormatEvent` of the host's text log without colors.
pub struct PlainText;

impl<S, N> FormatEvent<S, N> for PlainText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if LogTime.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        let meta = event.metadata();
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>().filter(|f| !f.is_empty()) {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Where a test's log lines go.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn emit(plain: bool) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let layer =
            tracing_subscriber::fmt::layer().with_timer(LogTime).with_ansi(false).with_writer(move || writer.clone());
        let subscriber = match plain {
            true => tracing_subscriber::registry().with(layer.event_format(PlainText).boxed()),
            false => tracing_subscriber::registry().with(layer.boxed()),
        };
        tracing::subscriber::with_default(subscriber, || {
            let listener = tracing::info_span!("listener", listener = "hello");
            let conn = tracing::info_span!(parent: &listener, "conn", listener = "hello", generation = 1, peer = %"127.0.0.1:1");
            tracing::info!(target: "netplug::record", parent: &conn, duration_ms = 0.42, outcome = %"ok", "closed");
            tracing::warn!(target: "guest", parent: &conn, "a guest's \u{1b}[31mline\u{1b}[0m");
            tracing::error!("no span");
            let empty = tracing::debug_span!("empty");
            tracing::info!(parent: &empty, n = 3, "in a span without fields");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        // The timestamps differ: compare what follows them.
        text.lines().map(|l| l.split_once('Z').unwrap().1.to_string() + "\n").collect()
    }

    use tracing_subscriber::Layer;

    #[test]
    fn lines_are_the_default_formats_without_colors() {
        let (plain, default) = (emit(true), emit(false));
        assert_eq!(plain, default);
        assert!(plain.contains("  INFO listener{listener=\"hello\"}:conn{"), "{plain}");
        assert!(!plain.contains('\u{1b}'), "a guest's escape sequence is escaped: {plain}");
    }
}
