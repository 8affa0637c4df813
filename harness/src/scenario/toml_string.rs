//! Where a character of a TOML string's value is written: the walk from the decoded value back
//! to its raw literal (quotes, escapes, the line-ending backslash of a multi-line basic string,
//! the newline dropped right after an opening `"""`), so an error inside an expression points
//! at the exact line and column of the file.

/// The byte offset, inside the raw TOML string literal `raw` (its quotes included, as the
/// document's span gives it), where the character `index` (0-based, in characters) of its
/// decoded value is written; an index at or past the value's end gives the closing quote.
/// `None` if `raw` is not a string literal.
pub(crate) fn raw_offset(raw: &str, index: usize) -> Option<usize> {
    let (delim, basic) = match raw.as_bytes() {
        [b'"', b'"', b'"', ..] if raw.len() >= 6 => ("\"\"\"", true),
        [b'\'', b'\'', b'\'', ..] if raw.len() >= 6 => ("'''", false),
        [b'"', ..] if raw.len() >= 2 => ("\"", true),
        [b'\'', ..] if raw.len() >= 2 => ("'", false),
        _ => return None,
    };
    let multi = delim.len() == 3;
    let end = raw.len() - delim.len();
    let mut at = delim.len();
    if multi {
        // A newline right after the opening delimiter is not part of the value.
        at += [("\r\n", 2), ("\n", 1)].iter().find(|(nl, _)| raw[at..].starts_with(nl)).map_or(0, |(_, n)| *n);
    }
    let mut left = index;
    loop {
        let rest = raw.get(at..end)?;
        if basic && multi {
            if let Some(n) = continuation(rest) {
                at += n;
                continue;
            }
        }
        if left == 0 || rest.is_empty() {
            return Some(at);
        }
        at += match rest.as_bytes() {
            [b'\\', b'u', ..] if basic => 6,
            [b'\\', b'U', ..] if basic => 10,
            [b'\\', b'x', ..] if basic => 4,
            [b'\\', ..] if basic => 1 + rest[1..].chars().next().map_or(0, char::len_utf8),
            _ => rest.chars().next().map_or(1, char::len_utf8),
        }
        .min(rest.len());
        left -= 1;
    }
}

/// The length of a line-ending backslash at the start of `rest` (the backslash, spaces and
/// tabs, a newline, and every space, tab and newline after it), which the value leaves out.
fn continuation(rest: &str) -> Option<usize> {
    let after = rest.strip_prefix('\\')?;
    let blank = after.len() - after.trim_start_matches([' ', '\t']).len();
    let tail = &after[blank..];
    if !(tail.starts_with('\n') || tail.starts_with("\r\n")) {
        return None;
    }
    Some(rest.len() - tail.trim_start_matches([' ', '\t', '\r', '\n']).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character of the value decoded by the toml crate is found where `raw_offset` says
    /// (an escape at its backslash): the walk is checked against the crate's own decoding.
    fn agrees(raw: &str, escapes: &[(usize, char)]) {
        let value: toml::Table = toml::from_str(&format!("v = {raw}")).unwrap();
        let decoded = value["v"].as_str().unwrap();
        for (i, c) in decoded.chars().enumerate() {
            let at = raw_offset(raw, i).unwrap();
            match escapes.iter().find(|(j, _)| *j == i) {
                Some((_, first)) => assert_eq!(raw[at..].chars().next(), Some(*first), "{raw:?} char {i}"),
                None if c == '\n' && raw[at..].starts_with("\r\n") => {}
                None => assert_eq!(raw[at..].chars().next(), Some(c), "{raw:?} char {i} ({decoded:?})"),
            }
        }
        let closing = raw_offset(raw, decoded.chars().count()).unwrap();
        assert!(raw[closing..].starts_with(['"', '\'']), "{raw:?}: past the end is the closing quote");
    }

    #[test]
    fn basic_strings_count_escapes_as_one_character() {
        agrees(r#""x + \u0061bs(x) + lgo(x)""#, &[(4, '\\')]);
        agrees(r#""x +\tlgo(x)""#, &[(3, '\\')]);
        agrees(r#""\U0001F600 é \\ \" x""#, &[(0, '\\'), (4, '\\'), (6, '\\')]);
        // `\u0061bs` is `abs`: `lgo` is the 14th character, at byte 19 of the literal.
        assert_eq!(raw_offset(r#""x + \u0061bs(x) + lgo(x)""#, 13), Some(19));
    }

    #[test]
    fn literal_strings_have_no_escapes() {
        agrees(r"'x + \u0061bs(x)'", &[]);
        agrees("'''\nx +\n  \\tlgo(x)'''", &[]);
    }

    #[test]
    fn multi_line_basic_strings_drop_the_first_newline_and_continuations() {
        agrees("\"\"\"\nmean((p - y) ** 2)\n  + 0.1 * mean(lgo(abs(p) + 1))\n\"\"\"", &[]);
        agrees("\"\"\"x + \\\n     \n   lgo(x)\"\"\"", &[]);
        agrees("\"\"\"x + \\  \r\n   lgo(x)\r\n\"\"\"", &[]);
        // After `x + ` (4 characters) the continuation is skipped: `l` is the value's 5th.
        assert_eq!(raw_offset("\"\"\"x + \\\n   lgo(x)\"\"\"", 4), Some(12));
    }

    #[test]
    fn what_is_not_a_string_gives_none() {
        assert_eq!(raw_offset("12", 0), None);
        assert_eq!(raw_offset("", 0), None);
        assert_eq!(raw_offset("\"", 0), None);
        // Cut short after an opening `"""` and its newline: no value to walk, and no panic.
        assert_eq!(raw_offset("\"\"\"\n\"\"", 0), None);
    }
}
