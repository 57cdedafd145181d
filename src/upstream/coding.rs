//! What an upstream's answer is written in, and whether the gateway reads it.
//!
//! Owns: reading a response's `Content-Encoding` (the gateway asks for `identity` and
//! decodes nothing, so a body in any other coding is unreadable: a success is then a
//! malformed answer, and an error says only what its status and headers say) and, for a
//! streamed call, its `Content-Type` (JSON is read whole, anything else as an event
//! stream); and naming what it found within [`MAX_SHOWN_NAME_BYTES`], for a message. Pure: headers in, decision out, no I/O. The gateway reads a client's
//! `Content-Encoding` with the same [`applied_coding`]. Does not own reading the body
//! (`client`) nor what a failure means for routing (`classify`).

use http::{HeaderMap, header};

/// The longest coding or media type name a message repeats. Every registered one is far
/// shorter; a longer one, or one with characters a name cannot have, is shown as
/// [`UNSHOWN_NAME`]: the header is the sender's text, and a message is no place for it.
pub const MAX_SHOWN_NAME_BYTES: usize = 40;

/// What a message says instead of a name it does not repeat.
pub const UNSHOWN_NAME: &str = "<not a name>";

/// How a success's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyForm {
    /// An event stream, read as it comes.
    EventStream,
    /// One JSON document, read whole (a completion; or an event stream labelled as JSON,
    /// which `client` tells by its first bytes).
    Json,
}

/// Why a success's body is not read: the attempt fails as a malformed answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error(
        "the answer is in content-encoding `{0}`, which the gateway does not decode (it asks \
         for accept-encoding: identity)"
    )]
    Coded(String),
}

/// How to read the body of a success, or why it cannot be read. `streamed`: the call asked
/// for a stream; a call for one JSON completion reads its body as JSON whatever its label
/// (what is not JSON fails there, as malformed), as it always did.
pub fn success_body(headers: &HeaderMap, streamed: bool) -> Result<BodyForm, Unreadable> {
    if let Some(coding) = applied_coding(headers) {
        return Err(Unreadable::Coded(coding));
    }
    if !streamed {
        return Ok(BodyForm::Json);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // Media types are case-insensitive (RFC 9110 §8.3.1).
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    Ok(if json {
        BodyForm::Json
    } else {
        BodyForm::EventStream
    })
}

/// The first content coding `headers` say was applied to the body, other than `identity`
/// (which is none), as a message may show it (lower-case, or [`UNSHOWN_NAME`]); `None` when
/// the body is as it is. `Content-Encoding` lists codings in the order applied, in one
/// header or several (RFC 9110 §8.4): any one is one the gateway cannot undo.
pub fn applied_coding(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(list) = value.to_str() else {
            return Some(UNSHOWN_NAME.to_string());
        };
        let applied = list
            .split(',')
            .map(str::trim)
            .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        if let Some(coding) = applied {
            return Some(shown(coding));
        }
    }
    None
}

/// `name` in lower case if it is a name (a token, or `type/subtype`) within
/// [`MAX_SHOWN_NAME_BYTES`]; [`UNSHOWN_NAME`] otherwise.
fn shown(name: &str) -> String {
    let is_name_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b);
    if name.is_empty() || name.len() > MAX_SHOWN_NAME_BYTES || !name.bytes().all(is_name_char) {
        return UNSHOWN_NAME.to_string();
    }
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    #[test]
    fn identity_or_no_coding_is_the_body_as_it_is() {
        for h in [
            headers(&[]),
            headers(&[("content-encoding", b"identity")]),
            headers(&[("content-encoding", b"IDENTITY")]),
            headers(&[("content-encoding", b"")]),
            headers(&[("content-encoding", b" , identity ,")]),
        ] {
            assert_eq!(applied_coding(&h), None, "{h:?}");
        }
    }

    #[test]
    fn any_other_coding_is_named_in_lower_case() {
        let cases: [(&[(&str, &[u8])], &str); 5] = [
            (&[("content-encoding", b"gzip")], "gzip"),
            (&[("content-encoding", b"Br")], "br"),
            (&[("content-encoding", b"identity, zstd")], "zstd"),
            (&[("content-encoding", b"deflate, gzip")], "deflate"),
            (
                &[
                    ("content-encoding", b"identity"),
                    ("content-encoding", b"gzip"),
                ],
                "gzip",
            ),
        ];
        for (pairs, named) in cases {
            assert_eq!(applied_coding(&headers(pairs)).as_deref(), Some(named));
        }
    }

    #[test]
    fn a_name_that_is_not_one_is_not_repeated() {
        let long = "x".repeat(MAX_SHOWN_NAME_BYTES + 1);
        let at_bound = "x".repeat(MAX_SHOWN_NAME_BYTES);
        for (value, shown) in [
            (long.as_bytes(), UNSHOWN_NAME),
            (at_bound.as_bytes(), at_bound.as_str()),
            (b"gz\"ip", UNSHOWN_NAME),
            (b"gz ip", UNSHOWN_NAME),
            // obs-text: a header value may hold it, a name may not.
            (b"gz\xffip", UNSHOWN_NAME),
        ] {
            let h = headers(&[("content-encoding", value)]);
            assert_eq!(applied_coding(&h).as_deref(), Some(shown), "{value:?}");
        }
    }

    #[test]
    fn a_coded_success_is_unreadable_in_either_kind_of_call() {
        let h = headers(&[
            ("content-encoding", b"gzip"),
            ("content-type", b"text/event-stream"),
        ]);
        for streamed in [true, false] {
            let e = success_body(&h, streamed).unwrap_err();
            assert_eq!(e, Unreadable::Coded("gzip".into()));
            assert!(e.to_string().contains("content-encoding `gzip`"), "{e}");
        }
    }

    #[test]
    fn a_call_for_one_completion_reads_json_whatever_its_label() {
        for label in [&b"text/html"[..], b"text/plain", b"text/event-stream"] {
            let h = headers(&[("content-type", label)]);
            assert_eq!(success_body(&h, false), Ok(BodyForm::Json), "{label:?}");
        }
    }
}
