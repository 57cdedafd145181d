//! The character encoding of a client's JSON body: UTF-8, or refused naming what it is;
//! and UTF-8's byte-order mark, which every reader of a body (a client's, an upstream's
//! completion or event stream) drops.
//!
//! Owns: telling, from a body's first four bytes at most, whether it is UTF-8 (a UTF-8
//! byte-order mark, which Windows tools write, is dropped: RFC 8259 §8.1 lets a parser
//! ignore one) or UTF-16 / UTF-32 (by their byte-order marks, or without one by the zero
//! bytes of their first characters, RFC 4627 §3), so that such a body is refused with a
//! message that says so instead of a JSON syntax error at column 1. A prefix check: the
//! rest of the body is the JSON parser's. Does not own parsing the JSON (`json`,
//! `request`).

/// An encoding a JSON body may arrive in that is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf16Le,
    Utf16Be,
    Utf32Le,
    Utf32Be,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf16Le => "UTF-16LE",
            Encoding::Utf16Be => "UTF-16BE",
            Encoding::Utf32Le => "UTF-32LE",
            Encoding::Utf32Be => "UTF-32BE",
        }
    }
}

/// A body in an encoding other than UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct NotUtf8 {
    pub encoding: Encoding,
    /// Told by its byte-order mark (else by its zero bytes).
    pub marked: bool,
}

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let told_by = if self.marked {
            "it begins with that encoding's byte-order mark"
        } else {
            "its first characters have zero bytes"
        };
        write!(
            f,
            "request body must be UTF-8 JSON; it looks like {} ({told_by}): send it encoded \
             as UTF-8",
            self.encoding.as_str()
        )
    }
}

/// UTF-8's byte-order mark, which may begin a client's body, an upstream's completion or
/// its event stream: every reader of those drops it.
pub const UTF8_BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// `body` without UTF-8's byte-order mark, if it begins with one (RFC 8259 §8.1 lets a
/// JSON parser ignore it).
pub fn without_byte_order_mark(body: &[u8]) -> &[u8] {
    body.strip_prefix(UTF8_BYTE_ORDER_MARK).unwrap_or(body)
}

/// The byte-order marks of the other encodings, the longer first: UTF-32LE's begins with
/// UTF-16LE's.
const MARKS: [(&[u8], Encoding); 4] = [
    (b"\xFF\xFE\x00\x00", Encoding::Utf32Le),
    (b"\x00\x00\xFE\xFF", Encoding::Utf32Be),
    (b"\xFF\xFE", Encoding::Utf16Le),
    (b"\xFE\xFF", Encoding::Utf16Be),
];

/// `body` as UTF-8 JSON text: without its UTF-8 byte-order mark if it has one, or the
/// encoding it is in when its first bytes show it is not UTF-8. Anything else, valid or
/// not, is left to the JSON parser.
pub fn utf8_json(body: &[u8]) -> Result<&[u8], NotUtf8> {
    if let Some(rest) = body.strip_prefix(UTF8_BYTE_ORDER_MARK) {
        return Ok(rest);
    }
    if let Some(&(_, encoding)) = MARKS.iter().find(|(mark, _)| body.starts_with(mark)) {
        return Err(NotUtf8 {
            encoding,
            marked: true,
        });
    }
    // JSON text begins with ASCII (blank space or a value's first character), and UTF-8
    // JSON holds no zero byte anywhere: zeros among the first bytes are the high bytes of
    // those ASCII characters in a wider encoding.
    let unmarked = match *body {
        [0, 0, 0, b, ..] if b != 0 => Encoding::Utf32Be,
        [a, 0, 0, 0, ..] if a != 0 => Encoding::Utf32Le,
        [0, b, ..] if b != 0 => Encoding::Utf16Be,
        [a, 0, ..] if a != 0 => Encoding::Utf16Le,
        _ => return Ok(body),
    };
    Err(NotUtf8 {
        encoding: unmarked,
        marked: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_passes_and_its_mark_is_dropped() {
        assert_eq!(utf8_json(b"{}"), Ok(&b"{}"[..]));
        assert_eq!(utf8_json(b"\xEF\xBB\xBF{}"), Ok(&b"{}"[..]));
        assert_eq!(utf8_json(b"\xEF\xBB\xBF"), Ok(&b""[..]));
        assert_eq!(
            utf8_json(b" \n{\"a\":\"\xC3\xA9\"}"),
            Ok(&b" \n{\"a\":\"\xC3\xA9\"}"[..])
        );
        // What is not UTF-8 JSON for another reason is the parser's to refuse.
        for other in [
            &b""[..],
            b"\xEF\xBB",
            b"\xFF",
            b"\xFE",
            b"\x00",
            b"\x00\x00",
            b"\xC3(",
        ] {
            assert_eq!(utf8_json(other), Ok(other), "{other:?}");
        }
    }

    #[test]
    fn wider_encodings_are_named_by_their_mark() {
        use Encoding::*;
        for (body, encoding) in [
            (&b"\xFF\xFE{\x00"[..], Utf16Le),
            (b"\xFE\xFF\x00{", Utf16Be),
            (b"\xFF\xFE\x00\x00{\x00\x00\x00", Utf32Le),
            (b"\x00\x00\xFE\xFF\x00\x00\x00{", Utf32Be),
            // A mark alone still says what the body is.
            (b"\xFF\xFE", Utf16Le),
        ] {
            let e = utf8_json(body).unwrap_err();
            assert_eq!((e.encoding, e.marked), (encoding, true), "{body:?}");
            let said = e.to_string();
            assert!(said.contains(encoding.as_str()), "{said}");
            assert!(said.contains("must be UTF-8 JSON"), "{said}");
        }
    }

    #[test]
    fn wider_encodings_are_named_by_their_zero_bytes() {
        use Encoding::*;
        for (body, encoding) in [
            (&b"{\x00\"\x00"[..], Utf16Le),
            (b" \x00", Utf16Le),
            (b"\x00{\x00\"", Utf16Be),
            (b"{\x00\x00\x00", Utf32Le),
            (b"\x00\x00\x00{", Utf32Be),
        ] {
            let e = utf8_json(body).unwrap_err();
            assert_eq!((e.encoding, e.marked), (encoding, false), "{body:?}");
            assert!(e.to_string().contains("zero bytes"), "{e}");
        }
    }
}
