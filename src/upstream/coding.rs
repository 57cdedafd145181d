//! What an upstream's answer is written in, and whether the gateway reads it.
//!
//! Owns: what a success's headers and first bytes say of its body: a compression the
//! gateway asked not to get (it asks for `identity` and decodes nothing, so such a success
//! is a malformed answer; an error says only what its status and headers say); for a
//! streamed call, its `Content-Type` (JSON is read whole, an event stream as it comes, an
//! unlabelled body as its first bytes say, anything else only if its first bytes are an
//! event stream's: the SDKs read a streamed answer whatever its label, but a proxy's HTML
//! page is no answer); and
//! naming what it found within [`MAX_SHOWN_NAME_BYTES`], for a message. Pure: headers and
//! first bytes in, decision out, no I/O. Does not own which `Content-Encoding` names a
//! compression (`content_encoding`, shared with clients' bodies), reading the body
//! (`client`) nor what a failure means for routing (`classify`).

use http::{HeaderMap, header};

use crate::charset::UTF8_BYTE_ORDER_MARK;
use crate::content_encoding::applied_coding;

/// The longest coding or media type name a message repeats: room for every content coding
/// and the media types pages and errors come in. A longer one, or one with characters a
/// name cannot have, is shown as [`UNSHOWN_NAME`]: the header is the sender's text, and a
/// message is no place for it.
pub const MAX_SHOWN_NAME_BYTES: usize = 64;

/// What a message says instead of a name it does not repeat.
pub const UNSHOWN_NAME: &str = "<not a name>";

/// Most bytes of a streamed answer labelled as something else held to learn from its
/// first bytes whether it is an event stream ([`stream_start`]). Blank space is not held
/// (see [`leading_blank`]), so only a byte-order mark and a field's name cut across reads
/// keep it undecided, never that long; past it the answer is read as an event stream,
/// which will have to prove itself as any stream does.
pub const MAX_STREAM_START_BYTES: usize = 1024;

/// How a success's body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyForm {
    /// An event stream, read as it comes.
    EventStream,
    /// One JSON document, read whole (a completion; or an event stream labelled as JSON,
    /// which `client` tells by its first bytes: [`reads_as_event_stream`]).
    Json,
    /// Labelled as something else (shown as a message shows it): read as an event stream
    /// if its first bytes are one ([`stream_start`]), else unreadable
    /// ([`Unreadable::Labelled`]).
    /// (A JSON completion under such a label is not read: the label says it is something
    /// else, as a proxy's page does.)
    Labelled(String),
    /// No `Content-Type` at all (servers that build their responses by hand, FastAPI's
    /// `StreamingResponse` or `Response` without a `media_type`): told by its first bytes.
    /// An event stream's ([`stream_start`]) is read as it comes; a JSON object's
    /// ([`starts_as_json_object`]) is read whole as one completion, as a JSON-labelled
    /// answer to a streamed call is (an upstream that ignores `stream: true`); anything
    /// else is unreadable ([`Unreadable::Unlabelled`]).
    Unlabelled,
}

/// What the first bytes of a body say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// They begin an event stream: a `data:`, `event:`, `id:` or `retry:` field, or a `:`
    /// comment, after any byte-order mark and blank space.
    EventStream,
    /// They cannot begin one (a page's `<`, a text's first word).
    NotOne,
    /// Not enough of them yet: blank space, or the start of a field's name.
    Undecided,
}

/// Why a success's body is not read: the attempt fails as a malformed answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error(
        "the answer is in content-encoding `{0}`, which the gateway does not decode (it asks \
         for accept-encoding: identity)"
    )]
    Coded(String),
    #[error("a streamed answer labelled `{0}` that is not an event stream (a proxy's page?)")]
    Labelled(String),
    #[error(
        "a streamed answer with no content-type that is neither an event stream nor a JSON \
         completion"
    )]
    Unlabelled,
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
    let Some(label) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyForm::Unlabelled);
    };
    let essence = label
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        // Media types are case-insensitive (RFC 9110 §8.3.1).
        .map(|t| t.trim().to_ascii_lowercase());
    Ok(match essence.as_deref() {
        // `Content-Type:` with nothing (or only parameters) after it names no media type:
        // no label, as without the header.
        Some("") => BodyForm::Unlabelled,
        Some("text/event-stream") => BodyForm::EventStream,
        Some(t) if is_json(t) => BodyForm::Json,
        Some(t) => BodyForm::Labelled(shown(t)),
        None => BodyForm::Labelled(UNSHOWN_NAME.to_string()),
    })
}

/// `application/json`, or a `+json` type (RFC 6839 §3.1); `t` is lower-case.
fn is_json(t: &str) -> bool {
    t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
}

/// The fields an event stream's first line may name (besides a `:` comment). A field's
/// name ends at its colon, or at the line's end for a field with no value (WHATWG HTML
/// §9.2.6).
const EVENT_STREAM_FIELDS: [&[u8]; 4] = [b"data", b"event", b"id", b"retry"];

/// What `first`, the first bytes of a body (as many as have come), say it is.
pub fn stream_start(first: &[u8]) -> StreamStart {
    // A mark cut across reads.
    if !first.is_empty()
        && first.len() < UTF8_BYTE_ORDER_MARK.len()
        && UTF8_BYTE_ORDER_MARK.starts_with(first)
    {
        return StreamStart::Undecided;
    }
    let start = first
        .strip_prefix(UTF8_BYTE_ORDER_MARK)
        .unwrap_or(first)
        .trim_ascii_start();
    if start.starts_with(b":") {
        return StreamStart::EventStream;
    }
    for name in EVENT_STREAM_FIELDS {
        match start.strip_prefix(name).map(|rest| rest.first()) {
            Some(Some(b':' | b'\n' | b'\r')) => return StreamStart::EventStream,
            Some(None) => return StreamStart::Undecided,
            // Another name that begins alike (`datum`), or not this one.
            Some(Some(_)) => {}
            None if name.starts_with(start) => return StreamStart::Undecided,
            None => {}
        }
    }
    StreamStart::NotOne
}

/// Where the blank space at the start of `first` lies, after any byte-order mark.
pub fn leading_blank(first: &[u8]) -> std::ops::Range<usize> {
    let from = if first.starts_with(UTF8_BYTE_ORDER_MARK) {
        UTF8_BYTE_ORDER_MARK.len()
    } else {
        0
    };
    let blank = first[from..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    from..from + blank
}

/// Whether `first`, a body's first bytes, begin a JSON object (after any byte-order mark
/// and blank space): what an unlabelled answer that is no event stream must be.
pub fn starts_as_json_object(first: &[u8]) -> bool {
    first
        .strip_prefix(UTF8_BYTE_ORDER_MARK)
        .unwrap_or(first)
        .trim_ascii_start()
        .starts_with(b"{")
}

/// Whether a whole body begins as an event stream does, where a JSON completion begins
/// with `{`.
pub fn reads_as_event_stream(body: &[u8]) -> bool {
    stream_start(body) == StreamStart::EventStream
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
    fn a_stream_is_read_as_its_label_says() {
        let cases: [(&[u8], BodyForm); 6] = [
            (b"text/event-stream", BodyForm::EventStream),
            (b"Text/Event-Stream; charset=utf-8", BodyForm::EventStream),
            (b"text/event-stream ;x=1", BodyForm::EventStream),
            (b"application/json", BodyForm::Json),
            (b" Application/JSON;charset=utf-8", BodyForm::Json),
            (b"application/vnd.api+json", BodyForm::Json),
        ];
        for (label, form) in cases {
            let h = headers(&[("content-type", label)]);
            assert_eq!(success_body(&h, true), Ok(form), "{label:?}");
        }
        assert_eq!(
            success_body(&headers(&[]), true),
            Ok(BodyForm::Unlabelled),
            "no label: told by its first bytes"
        );
        assert_eq!(success_body(&headers(&[]), false), Ok(BodyForm::Json));
    }

    #[test]
    fn a_stream_under_another_label_is_told_by_its_first_bytes() {
        for (label, named) in [
            (&b"text/html; charset=utf-8"[..], "text/html"),
            (b"text/plain", "text/plain"),
            (b"application/jsonl", "application/jsonl"),
            (b"text/\xffhtml", UNSHOWN_NAME),
        ] {
            let h = headers(&[("content-type", label)]);
            assert_eq!(
                success_body(&h, true),
                Ok(BodyForm::Labelled(named.into())),
                "{label:?}"
            );
        }
        let e = Unreadable::Labelled("text/html".into()).to_string();
        assert!(e.contains("labelled `text/html`"), "{e}");
    }

    #[test]
    fn first_bytes_say_whether_a_body_is_an_event_stream() {
        use StreamStart::*;
        for (first, says) in [
            (&b"data: {}"[..], EventStream),
            (b"\n\r\n  data:", EventStream),
            (b": keep-alive", EventStream),
            (b"event: error", EventStream),
            (b"id:1", EventStream),
            (b"retry: 10", EventStream),
            (b"\xEF\xBB\xBFdata:", EventStream),
            (b"", Undecided),
            (b"\n\n ", Undecided),
            (b"da", Undecided),
            (b"\nretr", Undecided),
            (b"\xEF", Undecided),
            (b"\xEF\xBB", Undecided),
            (b"\xEF\xBB\xBF", Undecided),
            (b"<!DOCTYPE html>", NotOne),
            (b"Access denied", NotOne),
            (b"{\"id\": 1}", NotOne),
            (b"dat x", NotOne),
            (b"\xEFx", NotOne),
            // A field with no value has no colon either.
            (b"data\n", EventStream),
            (b"data", Undecided),
            (b"datum:", NotOne),
        ] {
            assert_eq!(
                stream_start(first),
                says,
                "{:?}",
                String::from_utf8_lossy(first)
            );
        }
        assert_eq!(leading_blank(b" \r\n\t{"), 0..4);
        assert_eq!(leading_blank(b"\xEF\xBB\xBF \n:"), 3..5, "after the mark");
        assert_eq!(leading_blank(b"\xEF\xBB"), 0..0, "a mark cut across reads");
        assert_eq!(leading_blank(b"data: \n"), 0..0);
        assert!(starts_as_json_object(b"{\"id\": 1}"));
        assert!(starts_as_json_object(b"\xEF\xBB\xBF \r\n{"));
        assert!(
            !starts_as_json_object(b"[{\"id\": 1}]"),
            "an array is no completion"
        );
        assert!(!starts_as_json_object(b"<html>{"));
        assert!(!starts_as_json_object(b""));
        assert!(reads_as_event_stream(b"data: [DONE]"));
        assert!(!reads_as_event_stream(b"da"), "a whole body is what it is");
    }

    #[test]
    fn a_call_for_one_completion_reads_json_whatever_its_label() {
        for label in [&b"text/html"[..], b"text/plain", b"text/event-stream"] {
            let h = headers(&[("content-type", label)]);
            assert_eq!(success_body(&h, false), Ok(BodyForm::Json), "{label:?}");
        }
    }
}
