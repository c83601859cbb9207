//! The log lines' timestamp: RFC 3339 in UTC with microseconds
//! (`2026-12-06T05:13:36.267043Z`), as tracing-subscriber's own `SystemTime`
//! writes it, for less. That one works out the calendar date and time of
//! day for every line: about 4,000 instructions, twice per short
//! connection (its guest's line and its record), some 5% of a seed
//! exchange. Here each thread keeps the text of the current second and
//! writes only the microseconds anew.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The `FormatTime` of the host's log.
pub struct LogTime;

thread_local! {
    /// The second last formatted on this thread, and its text up to the
    /// seconds (`2026-12-06T05:13:36`).
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = now.as_secs();
        let (cached, mut text) = SECOND.get();
        if cached != secs {
            text = date_time(secs);
            SECOND.set((secs, text));
        }
        let mut micros = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
        let mut n = now.subsec_micros();
        for digit in micros[1..7].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        // Both are ASCII.
        w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
        w.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the unix epoch, in UTC.
fn date_time(secs: u64) -> [u8; 19] {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rest / 3600);
    put(14, 2, rest % 3600 / 60);
    put(17, 2, rest % 60);
    out
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_as_rfc_3339() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_164_799, "2024-02-28T23:59:59"),
            (1_796_534_016, "2026-12-06T05:13:36"),
            (4_102_444_800, "2100-01-01T00:00:00"),
        ] {
            assert_eq!(std::str::from_utf8(&date_time(secs)).unwrap(), text, "{secs}");
        }
    }

    #[test]
    fn the_same_text_as_tracing_subscriber_writes() {
        let format = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        // Retried if a second passes between the two.
        let same = (0..3).any(|_| {
            let (theirs, ours) = (format(&tracing_subscriber::fmt::time::SystemTime), format(&LogTime));
            assert_eq!(ours.len(), "2026-12-06T05:13:36.267043Z".len(), "{ours}");
            theirs[..20] == ours[..20] && theirs.len() == ours.len()
        });
        assert!(same);
    }

    #[test]
    fn every_day_follows_the_last() {
        // Every day of a whole Gregorian cycle (400 years).
        let mut last = (1969, 12, 31);
        for days in 0..146_097 {
            let (y, m, d) = civil_from_days(days);
            let next = if d == 1 { (y, m, 1) } else { (last.0, last.1, last.2 + 1) };
            assert_eq!((y, m, d), next, "day {days}");
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            last = (y, m, d);
        }
        assert_eq!(last, (2369, 12, 31));
    }
}
