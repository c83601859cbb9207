//! The keyspace commands: `DBSIZE`, `KEYS pattern` and `SCAN cursor [MATCH
//! pattern] [COUNT n] [TYPE type]`, over the store's `list-keys` pages. A
//! `SCAN` cursor is the store's own (the offset of the next page, in
//! decimal), and `0` starts and ends an iteration, as redis-server's does;
//! `COUNT` is a hint, as there: a page holds what the store returns. Every
//! key is a string, so `TYPE string` lists them all and another type none.

use crate::protocol::Store;

/// A client's key from the store's key (the inverse of `store_key`).
pub fn client_key(stored: &str) -> Vec<u8> {
    match stored.strip_prefix('\0') {
        Some(hex) => (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect(),
        None => stored.as_bytes().to_vec(),
    }
}

/// Every key of the selected database, page by page.
pub fn all_keys(store: &mut dyn Store) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store.list_keys(cursor.as_deref())?;
        keys.extend(page.iter().map(|key| client_key(key)));
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

/// What `SCAN`'s options ask for.
pub struct ScanOptions<'a> {
    pub pattern: Option<&'a [u8]>,
    pub strings: bool,
}

/// Reads `SCAN`'s options (after the cursor), or redis-server's error.
pub fn scan_options<'a>(options: &[&'a [u8]]) -> Result<ScanOptions<'a>, String> {
    let mut scan = ScanOptions { pattern: None, strings: true };
    let mut rest = options.iter();
    while let Some(option) = rest.next() {
        let value = rest.next().ok_or("syntax error")?;
        if option.eq_ignore_ascii_case(b"match") {
            scan.pattern = Some(value);
        } else if option.eq_ignore_ascii_case(b"count") {
            let count = std::str::from_utf8(value).ok().and_then(|v| v.parse::<i64>().ok());
            match count {
                None => return Err("value is not an integer or out of range".into()),
                Some(count) if count < 1 => return Err("syntax error".into()),
                Some(_) => {}
            }
        } else if option.eq_ignore_ascii_case(b"type") {
            scan.strings = value.eq_ignore_ascii_case(b"string");
        } else {
            return Err("syntax error".into());
        }
    }
    Ok(scan)
}

/// Whether `text` matches the glob `pattern` as redis-server's
/// `stringmatchlen` does: `*`, `?`, `[abc]`, `[^a-z]` and `\` escapes.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&c, text_rest)) = text.split_first() else { return false };
            let (negate, mut class) = match rest.split_first() {
                Some((b'^', class)) => (true, class),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match class {
                    [] => break,
                    [b']', after @ ..] => {
                        class = after;
                        break;
                    }
                    [b'\\', escaped, after @ ..] => {
                        matched |= *escaped == c;
                        class = after;
                    }
                    [low, b'-', high, after @ ..] if *high != b']' => {
                        let (low, high) = if low <= high { (*low, *high) } else { (*high, *low) };
                        matched |= (low..=high).contains(&c);
                        class = after;
                    }
                    [one, after @ ..] => {
                        matched |= *one == c;
                        class = after;
                    }
                }
            }
            matched != negate && glob(class, text_rest)
        }
        Some((b'\\', [escaped, rest @ ..])) => text.first() == Some(escaped) && glob(rest, &text[1..]),
        Some((&literal, rest)) => text.first() == Some(&literal) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_redis_server() {
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("user:*", "user:1", true),
            ("user:*", "session:1", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hallo", false),
            ("*:*:*", "a:b:c", true),
            ("", "", true),
        ] {
            assert_eq!(glob(pattern.as_bytes(), text.as_bytes()), expected, "{pattern} {text}");
        }
    }

    #[test]
    fn client_keys_round_trip() {
        for key in [&b"plain"[..], b"\xff\x00binary", b"\0starts with nul"] {
            assert_eq!(client_key(&crate::protocol::store_key(key)), key);
        }
    }
}
