//! The W3C `tracestate` header: validated and passed on unchanged, or dropped whole.
//!
//! The library adds no member of its own. A list that breaks the rules (a bad key or
//! value, more than 32 members) is discarded, as the specification asks; a valid list is
//! passed on with empty members and surrounding whitespace removed, and a key that comes
//! again is dropped after its first member (the W3C suite's strict level accepts either).
//! Keys follow the suite's grammar: a lower-case letter or digit, then up to 255 of
//! `a-z 0-9 _ - * / @` (which covers `tenant@system` keys).

/// The header's name.
pub const TRACESTATE: &str = "tracestate";

/// Most members a list may hold.
pub const TRACESTATE_MEMBERS_MAX: usize = 32;

/// Validates every `tracestate` value of a request (several are one list) and returns the
/// list to pass on, or `None` if there is nothing valid to pass.
pub fn parse_tracestate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut out = String::new();
    let mut keys: Vec<&str> = Vec::new();
    let texts: Vec<&str> = values.into_iter().map(std::str::from_utf8).collect::<Result<_, _>>().ok()?;
    for text in texts {
        for member in text.split(',') {
            let member = member.trim_matches(|c| c == ' ' || c == '\t');
            if member.is_empty() {
                continue;
            }
            let (key, value) = member.split_once('=')?;
            if !valid_key(key) || !valid_value(value) {
                return None;
            }
            if keys.contains(&key) {
                continue;
            }
            keys.push(key);
            if keys.len() > TRACESTATE_MEMBERS_MAX {
                return None;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(member);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 256
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| key_char(b) || b == b'@')
}

fn valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let printable = |b: u8| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=';
    !bytes.is_empty()
        && bytes.len() <= 256
        && bytes.iter().all(|&b| printable(b))
        && bytes[bytes.len() - 1] != b' '
}
