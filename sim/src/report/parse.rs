//! Reading the canonical trace back: `<ms>ms <host> <text>` lines, and the `key=value`
//! fields of their text.
//!
//! Owns: the inverse of the line format in [`crate::trace`] and of the engine's event
//! rendering (fields in a fixed order, quoted values in Rust's debug form). Does not own
//! what the lines mean (`timeline`).

/// One trace line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at_ms: u64,
    pub host: String,
    /// Everything after the host.
    pub text: String,
}

/// `   89ms gateway   req=1 ...` → its parts; `None` for a line of another shape (the
/// truncation notice).
pub fn line(raw: &str) -> Option<Line> {
    let (at, rest) = raw.trim_start().split_once("ms ")?;
    let at_ms = at.parse().ok()?;
    let rest = rest.trim_start();
    let (host, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Line {
        at_ms,
        host: host.to_string(),
        text: text.trim_start().to_string(),
    })
}

/// The words of a line's text: `key=value` pairs, and bare words with an empty value.
/// A value in double quotes may hold spaces and `\"`, `\\`, `\n`, `\t`, `\r` escapes.
pub fn fields(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some('t') => value.push('\t'),
                            Some('r') => value.push('\r'),
                            Some(other) => value.push(other),
                            None => {}
                        },
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key, value));
    }
}

/// The value of `key` among `fields`.
pub fn get<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_into_time_host_and_text() {
        let l = line("    89ms gateway   req=1 attempt_failed attempt=1").unwrap();
        assert_eq!(l.at_ms, 89);
        assert_eq!(l.host, "gateway");
        assert_eq!(l.text, "req=1 attempt_failed attempt=1");
        assert_eq!(line("... truncated at MAX_TRACE_LINES = 50000"), None);
    }

    #[test]
    fn quoted_values_keep_spaces_and_escapes() {
        let f = fields(r#"r0.0 chunk model=m text="a \"b\" c\\d\n""#);
        assert_eq!(get(&f, "r0.0"), Some(""));
        assert_eq!(get(&f, "chunk"), Some(""));
        assert_eq!(get(&f, "model"), Some("m"));
        assert_eq!(get(&f, "text"), Some("a \"b\" c\\d\n"));
    }
}
