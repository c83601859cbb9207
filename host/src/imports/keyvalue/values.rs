//! The steps a backend runs under its lock or transaction: the
//! compare-and-swap, both versions' increment arithmetic, and `list-keys`
//! paging. Pure functions over `BucketOps`, shared by both backends.

use super::{BucketOps, Expiry, Page};
use std::fmt;
use std::str::FromStr;

/// A `list-keys` page ends after this many keys, or sooner once its keys
/// add up to `PAGE_BYTES`; its cursor leads to the next page.
const PAGE_KEYS: usize = 1000;
const PAGE_BYTES: usize = 1 << 20;

/// Replaces `current` with `value` if `current` is still `expected`; else
/// keeps it and says what it is now. `swap`'s step, under `update`; the
/// value written gets `deadline` (0: none).
pub(crate) fn compare_and_swap(
    ops: &dyn BucketOps,
    key: String,
    expected: Option<&[u8]>,
    value: Vec<u8>,
    deadline: u64,
) -> Result<Result<(), Option<Vec<u8>>>, String> {
    let mut value = Some(value);
    let mut outcome = Ok(());
    ops.update(key, Expiry::At(deadline), &mut |current| {
        if current == expected {
            Ok(value.take())
        } else {
            outcome = Err(current.map(<[u8]>::to_vec));
            Ok(None)
        }
    })?;
    Ok(outcome)
}

/// The stored value (none for a missing key) read as a decimal `N`.
fn number<N: FromStr>(current: Option<&[u8]>, key: &str, kind: &str) -> Result<Option<N>, String> {
    let Some(current) = current else { return Ok(None) };
    std::str::from_utf8(current)
        .ok()
        .and_then(|text| text.parse::<N>().ok())
        .map(Some)
        .ok_or_else(|| format!("the value of `{key}` is not a decimal {kind} 64-bit integer"))
}

/// draft's `increment` arithmetic: the stored value (none for a missing
/// key) read as a decimal `u64` (that version's type), plus `delta`,
/// checked.
pub(crate) fn incremented(current: Option<&[u8]>, key: &str, delta: u64) -> Result<u64, String> {
    let Some(value) = number::<u64>(current, key, "unsigned")? else { return Ok(delta) };
    value.checked_add(delta).ok_or_else(|| format!("incrementing `{key}` ({value}) by {delta} overflows 64 bits"))
}

/// draft2's: the value read as a decimal `i64` (that version's type).
pub(crate) fn incremented_signed(current: Option<&[u8]>, key: &str, delta: i64) -> Result<i64, String> {
    let Some(value) = number::<i64>(current, key, "signed")? else { return Ok(delta) };
    value.checked_add(delta).ok_or_else(|| format!("incrementing `{key}` ({value}) by {delta} overflows 64 bits"))
}

/// Either version's increment: `u64` (draft) or `i64` (draft2). Its
/// arithmetic in the host, and what it asks of a Redis store's `INCRBY`,
/// whose numbers are signed 64-bit.
pub(crate) trait Delta: fmt::Display + itoa::Integer + Copy + Send + 'static {
    /// The stored value (none for a missing key) plus this, checked.
    fn added_to(self, current: Option<&[u8]>, key: &str) -> Result<Self, String>;
    /// This, as `INCRBY`'s argument.
    fn signed(self, key: &str) -> Result<i64, String>;
    /// `INCRBY`'s sum, as this version's type.
    fn from_sum(sum: i64, key: &str) -> Result<Self, String>;
}

impl Delta for u64 {
    fn added_to(self, current: Option<&[u8]>, key: &str) -> Result<u64, String> {
        incremented(current, key, self)
    }

    fn signed(self, key: &str) -> Result<i64, String> {
        i64::try_from(self)
            .map_err(|_| format!("incrementing `{key}` by {self} passes a Redis store's 64-bit signed numbers"))
    }

    fn from_sum(sum: i64, key: &str) -> Result<u64, String> {
        u64::try_from(sum).map_err(|_| format!("the value of `{key}` is {sum}, not a decimal unsigned 64-bit integer"))
    }
}

impl Delta for i64 {
    fn added_to(self, current: Option<&[u8]>, key: &str) -> Result<i64, String> {
        incremented_signed(current, key, self)
    }

    fn signed(self, _key: &str) -> Result<i64, String> {
        Ok(self)
    }

    fn from_sum(sum: i64, _key: &str) -> Result<i64, String> {
        Ok(sum)
    }
}

/// Adds `delta` with `add` (one of the above) and stores the sum in decimal,
/// as one atomic step on the backend; the entry keeps its deadline.
pub(crate) fn increment<N: itoa::Integer + Copy>(
    ops: &dyn BucketOps,
    key: String,
    add: impl Fn(Option<&[u8]>, &str) -> Result<N, String>,
) -> Result<N, String> {
    let mut sum = None;
    let name = key.clone();
    ops.update(key, Expiry::Keep, &mut |current| {
        let next = add(current, &name)?;
        sum = Some(next);
        // Without core::fmt: a pipelined INCR's one write.
        Ok(Some(itoa::Buffer::new().format(next).as_bytes().to_vec()))
    })?;
    sum.ok_or_else(|| "the store did not run the increment".to_string())
}

/// One page of `keys` (sorted) from `cursor`, an offset into them, with the
/// cursor of the next page if there is one.
pub(crate) fn page(keys: impl Iterator<Item = String>, cursor: Option<u64>) -> Page {
    let start = cursor.unwrap_or(0);
    let mut taken = Vec::new();
    let mut bytes = 0;
    let mut keys = keys.skip(usize::try_from(start).unwrap_or(usize::MAX));
    for key in keys.by_ref() {
        bytes += key.len();
        taken.push(key);
        if taken.len() >= PAGE_KEYS || bytes >= PAGE_BYTES {
            break;
        }
    }
    let more = keys.next().is_some();
    let next = start + taken.len() as u64;
    Page { keys: taken, cursor: more.then_some(next) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_arithmetic() {
        assert_eq!(incremented(None, "k", 5), Ok(5));
        assert_eq!(incremented(Some(b"41"), "k", 1), Ok(42));
        assert!(incremented(Some(b"x"), "k", 1).unwrap_err().contains("not a decimal"));
        assert!(incremented(Some(b"-1"), "k", 1).is_err());
        let max = u64::MAX.to_string();
        assert!(incremented(Some(max.as_bytes()), "k", 1).unwrap_err().contains("overflows"));
        assert_eq!(incremented(Some(max.as_bytes()), "k", 0), Ok(u64::MAX));
    }

    #[test]
    fn signed_increment_arithmetic() {
        assert_eq!(incremented_signed(None, "k", -5), Ok(-5));
        assert_eq!(incremented_signed(Some(b"-1"), "k", 3), Ok(2));
        assert_eq!(incremented_signed(Some(b"10"), "k", -20), Ok(-10));
        assert!(incremented_signed(Some(b"x"), "k", 1).unwrap_err().contains("not a decimal signed"));
        let max = i64::MAX.to_string();
        assert!(incremented_signed(Some(max.as_bytes()), "k", 1).unwrap_err().contains("overflows"));
        assert!(incremented_signed(Some(u64::MAX.to_string().as_bytes()), "k", 0).is_err());
    }

    #[test]
    fn pages_carry_a_cursor_until_the_last() {
        let keys = |n: usize| (0..n).map(|i| format!("{i:05}"));
        let first = page(keys(2500), None);
        assert_eq!(first.keys.len(), PAGE_KEYS);
        assert_eq!(first.cursor, Some(1000));
        let last = page(keys(2500), Some(2000));
        assert_eq!(last.keys.len(), 500);
        assert_eq!(last.keys[0], "02000");
        assert_eq!(last.cursor, None);
        assert!(page(keys(3), Some(u64::MAX)).keys.is_empty());
        assert_eq!(page(keys(1000), None).cursor, None);
    }
}
