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
use std::net::SocketAddr;
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

impl PlainVisitor<'_> {
    /// Starts a field: false if it is not written (an earlier write failed,
    /// or it is a `log` record's metadata, written by the formatter itself).
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        if !std::mem::take(&mut self.empty) {
            self.result = self.writer.write_char(' ');
        }
        self.result.is_ok()
    }

    /// A field whose `Debug` text is `text`, written without core::fmt:
    /// numbers and flags, which the record has several of per connection.
    fn record_text(&mut self, field: &Field, text: &str) {
        if !self.start(field) {
            return;
        }
        self.result = match field.name() {
            "message" => self.writer.write_str(text),
            name => self
                .writer
                .write_str(name.strip_prefix("r#").unwrap_or(name))
                .and_then(|()| self.writer.write_char('='))
                .and_then(|()| self.writer.write_str(text)),
        };
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" {
            return self.record_debug(field, &value);
        }
        // A message given as a string (a guest's line), escaped as any other.
        if self.start(field) {
            self.result = Escaping(&mut self.writer).write_str(value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_text(field, itoa::Buffer::new().format(value))
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_text(field, itoa::Buffer::new().format(value))
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_text(field, if value { "true" } else { "false" })
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let mut text = [0u8; 24];
        match thousandths(value, &mut text) {
            Some(text) => self.record_text(field, text),
            None => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = match field.name() {
            "message" => write!(Escaping(&mut self.writer), "{value:?}"),
            name => write!(self.writer, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
        };
    }
}

/// `value`'s `Debug` text, if it is a whole number of thousandths below
/// 10^12 (a record's `duration_ms`). `Debug` writes the shortest digits that
/// read back as the same `f64`: for such a value, the decimal itself, since
/// every other number of at most three decimals is at least 0.001 away, far
/// more than the spacing of `f64`s there (under 0.0003).
fn thousandths(value: f64, text: &mut [u8; 24]) -> Option<&str> {
    let scaled = (value.abs() * 1000.0).round();
    // (NaN fails the first test.)
    if scaled.partial_cmp(&1e15) != Some(std::cmp::Ordering::Less) || scaled as u64 as f64 / 1000.0 != value.abs() {
        return None;
    }
    let scaled = scaled as u64;
    let (whole, mut fraction) = (scaled / 1000, scaled % 1000);
    let mut len = 0;
    let mut put = |part: &[u8]| {
        text[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    };
    if value.is_sign_negative() {
        put(b"-");
    }
    put(itoa::Buffer::new().format(whole).as_bytes());
    put(b".");
    if fraction == 0 {
        put(b"0");
    } else {
        let mut digits = 3;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        let mut decimals = [b'0'; 3];
        for digit in decimals[..digits].iter_mut().rev() {
            *digit = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        put(&decimals[..digits]);
    }
    // Digits, a sign and a point.
    std::str::from_utf8(&text[..len]).ok()
}

/// A socket address that writes as its `Display` does, an IPv4 one without
/// core::fmt: std's takes about 1,500 instructions, and a connection writes
/// its peer twice (its span, and the guest's `peer-address` call).
pub struct Addr(pub SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SocketAddr::V4(addr) = self.0 else { return self.0.fmt(f) };
        if f.width().is_some() || f.precision().is_some() {
            return self.0.fmt(f);
        }
        // "255.255.255.255:65535" is 21 bytes.
        let mut text = [0u8; 21];
        let mut len = 0;
        let mut put = |part: &[u8]| {
            text[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        };
        for (i, octet) in addr.ip().octets().into_iter().enumerate() {
            if i > 0 {
                put(b".");
            }
            put(itoa::Buffer::new().format(octet).as_bytes());
        }
        put(b":");
        put(itoa::Buffer::new().format(addr.port()).as_bytes());
        // Digits, dots and a colon.
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
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
        // Most text has none: looked for byte by byte, which is several
        // times cheaper than decoding characters. A C1 control is 0xC2 and
        // a second byte in UTF-8; other characters starting with 0xC2 take
        // the exact path below.
        if !text.bytes().any(|b| matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f | 0xc2)) {
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
            tracing::info!(target: "guest", parent: &conn, message = "a string message \u{1b}[31mescaped\u{7f}");
            let peer = Addr("10.0.255.7:65535".parse().unwrap());
            let v6 = Addr("[::1]:80".parse().unwrap());
            let addrs = tracing::info_span!(parent: None, "conn", %peer, %v6);
            tracing::info!(parent: &addrs, a = 0.42, b = 5.0, c = 1234.567, d = 1e-4, e = 9.9e15, f = 1e16, g = 1e-5, h = -0.0, i = f64::NAN, j = f64::INFINITY, k = -2.5, "floats");
            tracing::info!(u = u64::MAX, i = i64::MIN, z = 0u64, t = false, "numbers");
            tracing::error!(r#type = "raw", flag = true, n = -3i64, big = 7u64, text = "q\"uoted", "no span");
            tracing::info!(target: "guest", "C1 \u{9b}31m and DEL \u{7f} and a tab\t");
            tracing::info!(target: "guest", "a copyright sign \u{a9}, NEL \u{85} and \u{a0}");
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
        assert!(plain.contains("conn{peer=10.0.255.7:65535 v6=[::1]:80}"), "{plain}");
        assert!(
            plain.contains("a=0.42 b=5.0 c=1234.567 d=0.0001 e=9900000000000000.0 f=1e16 g=1e-5 h=-0.0"),
            "{plain}"
        );
    }

    #[test]
    fn addresses_and_floats_as_display_and_debug_write_them() {
        let mut floats = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..10_000 {
            let bits = next();
            let addr = std::net::SocketAddr::from(((bits as u32).to_be_bytes(), (bits >> 32) as u16));
            assert_eq!(Addr(addr).to_string(), addr.to_string());
            assert_eq!(format!("{:>30}", Addr(addr)), format!("{addr:>30}"));
            // Durations in milliseconds as the record computes them, and
            // arbitrary values.
            floats.extend([(bits % 10_000_000_000) as f64 / 1000.0, f64::from_bits(bits)]);
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(PlainText)
            .fmt_fields(PlainFields)
            .with_writer(move || writer.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            for value in &floats {
                tracing::info!(v = *value);
            }
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let written: Vec<&str> = text.lines().map(|line| line.rsplit_once(" v=").unwrap().1).collect();
        assert_eq!(written.len(), floats.len());
        for (value, written) in floats.iter().zip(written) {
            assert_eq!(written, format!("{value:?}"), "{value}");
        }
    }
}
