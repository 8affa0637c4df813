//! A Rust source as the import graph reads it: identifiers and punctuation, with
//! comments (doc comments too), string, byte and char literals left out, so a
//! path named in a doc link or a message is no import.

/// The tokens of `src`: identifiers (keywords, numbers and `$crate` among them), `::`, and
/// every other punctuation character on its own.
pub fn tokens(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            i = block_comment_end(&c, i);
        } else if ch == '"' {
            i = string_end(&c, i + 1);
        } else if ch == '\'' {
            i = quote_end(&c, i);
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".to_string());
            i += 2;
        } else if ch == '$' && c[i + 1..].starts_with(&['c', 'r', 'a', 't', 'e']) {
            out.push("$crate".to_string());
            i += 6;
        } else if ch.is_alphanumeric() || ch == '_' {
            i = word(&c, i, &mut out);
        } else {
            out.push(ch.to_string());
            i += 1;
        }
    }
    out
}

/// Past a `/* … */` comment starting at `i` (they nest).
fn block_comment_end(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Past the closing quote of a string whose text starts at `i` (escapes skipped).
fn string_end(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i] != '"' {
        i += if c[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// Past a char literal at `i` (`'a'`, `'\n'`, `'\''`), or past the quote of a lifetime (`'a`).
fn quote_end(c: &[char], i: usize) -> usize {
    if c.get(i + 1) == Some(&'\\') {
        let mut j = i + 3;
        while j < c.len() && c[j] != '\'' {
            j += 1;
        }
        j + 1
    } else if c.get(i + 2) == Some(&'\'') {
        i + 3
    } else {
        i + 1
    }
}

/// Reads the word at `i` into `out`, or skips the literal it prefixes (`b"…"`, `r#"…"#`);
/// `r#ident` is the identifier.
fn word(c: &[char], mut i: usize, out: &mut Vec<String>) -> usize {
    let start = i;
    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
        i += 1;
    }
    let w: String = c[start..i].iter().collect();
    let raw = matches!(w.as_str(), "r" | "br" | "cr");
    if matches!(w.as_str(), "b" | "c" | "r" | "br" | "cr") && c.get(i) == Some(&'"') {
        return if raw { raw_end(c, i, 0) } else { string_end(c, i + 1) };
    }
    if w == "b" && c.get(i) == Some(&'\'') {
        return quote_end(c, i);
    }
    if raw && c.get(i) == Some(&'#') {
        let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
        if c.get(i + hashes) == Some(&'"') {
            return raw_end(c, i + hashes, hashes);
        }
        return word(c, i + 1, out); // a raw identifier
    }
    out.push(w);
    i
}

/// Past a raw string whose opening quote is at `i`, closed by a quote and `hashes` `#`s.
fn raw_end(c: &[char], mut i: usize, hashes: usize) -> usize {
    i += 1;
    while i < c.len() {
        if c[i] == '"' && c[i + 1..].iter().take(hashes).filter(|&&h| h == '#').count() == hashes {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

#[test]
fn comments_strings_and_chars_are_left_out() {
    let src = "/// [`crate::a::B`]\nuse crate::c::{D, e::*}; /* crate::x /* nested */ */ let s = \"crate::y\"; let r = r#\"crate::z\"#; let q = '\"'; fn f<'a>() {} $crate::k";
    let t = tokens(src);
    assert_eq!(t.join(" "), "use crate :: c :: { D , e :: * } ; let s = ; let r = ; let q = ; fn f < a > ( ) { } $crate :: k", "only code remains, and lifetimes do not open a char literal");
}
