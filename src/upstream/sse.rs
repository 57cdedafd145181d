//! An incremental Server-Sent Events parser.
//!
//! Owns: turning a byte stream, cut anywhere, into events, as the WHATWG rules say: LF, CRLF
//! or CR line ends (a CRLF split across two reads included), `:` comments, multi-line
//! `data:`, one optional space after the colon, and a byte-order mark at the very start
//! (UTF-8 decoding drops it, even cut across reads; some servers write one). Every line and
//! every event's data is bounded by `max_line_bytes`. Does not own what the data means
//! (`client`).

use crate::charset::UTF8_BYTE_ORDER_MARK;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (OpenAI does not use it; Anthropic-style streams do).
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("SSE line longer than max_sse_line_bytes = {limit}")]
    LineTooLong { limit: usize },
    /// An event's `data` lines joined (the same bound as one line).
    #[error("SSE event data longer than max_sse_line_bytes = {limit}")]
    DataTooLong { limit: usize },
    #[error("SSE data is not valid UTF-8")]
    NotUtf8,
}

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// The previous read ended on CR: a LF at the start of the next one is the same line end.
    after_cr: bool,
    /// While the stream may still begin with a byte-order mark: how many of its bytes have
    /// come so far (held back until it is clear whether they are one).
    mark: Option<usize>,
    max_line_bytes: usize,
}

impl SseError {
    /// The named limit the stream went over, if that is what it did.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            SseError::LineTooLong { .. } | SseError::DataTooLong { .. } => {
                Some("max_sse_line_bytes")
            }
            SseError::NotUtf8 => None,
        }
    }
}

impl SseParser {
    pub fn new(max_line_bytes: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event: None,
            after_cr: false,
            mark: Some(0),
            max_line_bytes,
        }
    }

    /// Feeds bytes; complete events are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(seen) = self.mark {
            let rest = &UTF8_BYTE_ORDER_MARK[seen..];
            let n = rest.len().min(bytes.len());
            if bytes[..n] == rest[..n] {
                bytes = &bytes[n..];
                if seen + n < UTF8_BYTE_ORDER_MARK.len() {
                    self.mark = Some(seen + n);
                    return Ok(());
                }
                self.mark = None;
            } else {
                // Not a mark: what was held back begins the first line (it has no line end).
                self.mark = None;
                self.extend_line(&UTF8_BYTE_ORDER_MARK[..seen])?;
            }
            if bytes.is_empty() {
                return Ok(());
            }
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', bytes) {
            let part = &bytes[..i];
            // A line that starts and ends in this read is read where it lies; only a line
            // cut across reads is copied (into `line`), and that buffer is reused.
            let pending = !self.line.is_empty();
            if pending {
                self.extend_line(part)?;
            } else {
                self.check_line(part.len())?;
            }
            let cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if pending {
                let line = std::mem::take(&mut self.line);
                let ended = self.end_line(&line, out);
                self.line = line;
                self.line.clear();
                ended?;
            } else {
                self.end_line(part, out)?;
            }
        }
        self.extend_line(bytes)
    }

    /// Whether a partial line or an undispatched event is pending (a truncated stream).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.mark.is_some_and(|seen| seen > 0)
    }

    /// At the end of the stream: whether what is pending is exactly one `data: [DONE]`
    /// event whose blank line, or whole line end, never came.
    pub fn pending_is_done(&self) -> bool {
        let done_line = |line: &[u8]| matches!(line, b"data: [DONE]" | b"data:[DONE]");
        match (self.has_data, self.line.is_empty()) {
            (true, true) => self.data == "[DONE]",
            (false, false) => done_line(&self.line),
            _ => false,
        }
    }

    fn extend_line(&mut self, part: &[u8]) -> Result<(), SseError> {
        self.check_line(self.line.len() + part.len())?;
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn check_line(&self, len: usize) -> Result<(), SseError> {
        if len > self.max_line_bytes {
            return Err(SseError::LineTooLong {
                limit: self.max_line_bytes,
            });
        }
        Ok(())
    }

    fn end_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
                self.has_data = false;
            } else {
                self.event = None;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // Only the fields read need be text: an `id:` or `retry:` line of bad bytes is
        // ignored like any field not used.
        let text = |value| std::str::from_utf8(value).map_err(|_| SseError::NotUtf8);
        match field {
            // llama.cpp's server before 2025-10 sent a failure as a field of its own,
            // `error: {...}`, in a 200's stream: an event named `error` with that data.
            b"data" | b"error" => {
                if field == b"error" {
                    self.event = Some("error".to_string());
                }
                let value = text(value)?;
                if self.data.len() + value.len() + 1 > self.max_line_bytes {
                    return Err(SseError::DataTooLong {
                        limit: self.max_line_bytes,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(text(value)?.to_string()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out)?;
        }
        Ok(out)
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn basic_events_comments_and_done() {
        let e = parse_all(&[b": keep-alive\n\ndata: {\"a\":1}\n\ndata: [DONE]\n\n"]).unwrap();
        assert_eq!(data(&e), ["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn crlf_cr_and_split_frames() {
        let e = parse_all(&[b"data: one\r", b"\n\r\ndata: two\r\rdata:three\n", b"\n"]).unwrap();
        assert_eq!(data(&e), ["one", "two", "three"]);
    }

    #[test]
    fn multi_line_data_and_event_names() {
        let e = parse_all(&[b"event: error\ndata: a\ndata: b\n\n"]).unwrap();
        assert_eq!(
            e,
            [SseEvent {
                event: Some("error".into()),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn an_error_field_is_the_data_of_an_error_event() {
        let e = parse_all(&[b"error: {\"code\":400}\n\ndata: [DONE]\n\n"]).unwrap();
        assert_eq!(
            e,
            [
                SseEvent {
                    event: Some("error".into()),
                    data: "{\"code\":400}".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                }
            ]
        );
    }

    #[test]
    fn an_event_without_its_blank_line_is_pending_not_lost() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.push(b"data: partial", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.has_partial());
    }

    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_first_line() {
        let text = b"\xEF\xBB\xBFdata: a\n\ndata: b\n\n";
        for cut in 0..=text.len() {
            let e = parse_all(&[&text[..cut], &text[cut..]]).unwrap();
            assert_eq!(data(&e), ["a", "b"], "cut at {cut}");
        }
        let one_at_a_time: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(data(&parse_all(&one_at_a_time).unwrap()), ["a", "b"]);
        // Only at the very start: later, and a lone first byte, are the line's own bytes.
        let later = parse_all(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]).unwrap();
        assert_eq!(data(&later), ["a"]);
        let not_a_mark = parse_all(&[b"\xEF", b"data: a\n\ndata: b\n\n"]).unwrap();
        assert_eq!(data(&not_a_mark), ["b"]);
        let mut p = SseParser::new(64);
        p.push(b"\xEF\xBB", &mut Vec::new()).unwrap();
        assert!(
            p.has_partial(),
            "a stream cut inside its first bytes is truncated"
        );
    }

    #[test]
    fn line_limit_and_utf8() {
        let mut p = SseParser::new(8);
        let mut out = Vec::new();
        assert_eq!(
            p.push(b"data: 0123456789", &mut out),
            Err(SseError::LineTooLong { limit: 8 })
        );
        let mut p = SseParser::new(10);
        let joined = p.push(b"data: 0123\ndata: 4567\ndata: 89ab\n", &mut out);
        assert_eq!(joined, Err(SseError::DataTooLong { limit: 10 }));
        assert_eq!(joined.unwrap_err().limit(), Some("max_sse_line_bytes"));
        let mut p = SseParser::new(64);
        assert_eq!(
            p.push(b"data: \xff\xfe\n\n", &mut out),
            Err(SseError::NotUtf8)
        );
        assert_eq!(SseError::NotUtf8.limit(), None);
        let ignored = parse_all(&[b"id: \xff\nretry: \xfe\ndata: a\n\n"]).unwrap();
        assert_eq!(
            data(&ignored),
            ["a"],
            "bad bytes in a field not read change nothing"
        );
    }

    /// `bytes` cut at the given offsets (taken modulo its length, in any order).
    fn pieces(bytes: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in points {
            pieces.push(&bytes[last..p]);
            last = p;
        }
        pieces.push(&bytes[last..]);
        pieces
    }

    /// Every event and every error of `bytes` read in the given pieces.
    fn outcome(pieces: &[&[u8]], max: usize) -> (Vec<SseEvent>, Option<SseError>, bool) {
        let mut p = SseParser::new(max);
        let mut out = Vec::new();
        for piece in pieces {
            if let Err(e) = p.push(piece, &mut out) {
                return (out, Some(e), true);
            }
        }
        let partial = p.has_partial();
        (out, None, partial)
    }

    proptest! {
        /// Lines cut across reads (kept in the parser's buffer) and lines read in place
        /// give the same events, the same errors and the same pending state, for any bytes
        /// made of the characters SSE gives meaning to.
        #[test]
        fn any_bytes_any_cuts_same_outcome(
            text in proptest::collection::vec(
                proptest::sample::select(&b"data:ev nt\r\n\r\nx:\xff\xEF\xBB\xBF"[..]), 0..120),
            cuts in proptest::collection::vec(0usize..120, 0..10),
            max in 4usize..40,
        ) {
            let whole = outcome(&[&text], max);
            let cut = outcome(&pieces(&text, cuts), max);
            // An error may come earlier or later in the reads, but it is the same error,
            // after the same events.
            prop_assert_eq!(cut.0, whole.0);
            prop_assert_eq!(&cut.1, &whole.1);
            if whole.1.is_none() {
                prop_assert_eq!(cut.2, whole.2);
            }
        }

        /// However the bytes are cut, the same events come out.
        #[test]
        fn splitting_never_changes_the_events(cuts in proptest::collection::vec(0usize..200, 0..12), crlf in any::<bool>()) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let text = format!("data: alpha{nl}{nl}: c{nl}data: be{nl}data: ta{nl}{nl}data: [DONE]{nl}{nl}");
            let bytes = text.as_bytes();
            let whole = parse_all(&[bytes]).unwrap();
            prop_assert_eq!(parse_all(&pieces(bytes, cuts)).unwrap(), whole);
        }
    }
}
