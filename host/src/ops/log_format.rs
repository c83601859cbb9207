//! The text log line, as tracing-subscriber's default (`Full`) format
//! writes it without colors, for less:
//!
//! ```text
//! 2026-12-06T08:16:51.375869Z  INFO conn{listener=hello generation=1 peer=127.0.0.1:41126}: netplug::record: closed duration_ms=0.42 bytes_in=17 bytes_out=11 outcome=ok
//! ```
//!
//! The default styles every piece (the level, each span's name and braces,
//! the colons, the target, each field's name and `=`) through `nu_ansi_term`
//! even when colors are off: 26 styled pieces per seed exchange, about
//! 8,000 of its 154,000 instructions. This writes the same text directly,
//! and escapes a message's terminal control characters as the default does
//! (a guest's line is a message). Colors, on a terminal, are still the
//! default's (`logging.rs`).

use crate::ops::log_time::LogTime;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
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

/// The `FormatFields` of the host's text log without colors: an event's or
/// span's fields as the default writes them, `message` first without its
/// name, the others as `name=value` (`Debug`), separated by spaces.
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor { writer, empty: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    empty: bool,
    result: fmt::Result,
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `log` records' metadata, written by the formatter itself.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        if !std::mem::take(&mut self.empty) {
            self.result = self.writer.write_char(' ');
        }
        self.result = self.result.and_then(|()| match field.name() {
            "message" => write!(Escaping(&mut self.writer), "{value:?}"),
            name => write!(self.writer, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
        });
    }
}

/// Writes through to `0`, with the control characters a terminal acts on
/// escaped (ESC, BEL, BS, FF, DEL and the C1 controls), as the default
/// formatter escapes a message: a guest must not drive an operator's
/// terminal through the log.
struct Escaping<'a, 'writer>(&'a mut Writer<'writer>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let needs = |c: char| matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}');
        if !text.contains(needs) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            match c {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                c if needs(c) => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
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
            true => tracing_subscriber::registry().with(layer.event_format(PlainText).fmt_fields(PlainFields).boxed()),
            false => tracing_subscriber::registry().with(layer.boxed()),
        };
        tracing::subscriber::with_default(subscriber, || {
            let listener = tracing::info_span!("listener", listener = "hello");
            let conn = tracing::info_span!(parent: &listener, "conn", listener = "hello", generation = 1, peer = %"127.0.0.1:1");
            tracing::info!(target: "netplug::record", parent: &conn, duration_ms = 0.42, outcome = %"ok", "closed");
            tracing::warn!(target: "guest", parent: &conn, "a guest's \u{1b}[31mline\u{1b}[0m");
            tracing::error!(r#type = "raw", flag = true, n = -3i64, big = 7u64, text = "q\"uoted", "no span");
            tracing::info!(target: "guest", "C1 \u{9b}31m and DEL \u{7f} and a tab\t");
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
