//! A client's request body in a content coding: refused with a 415.
//!
//! Owns: the decision that a request whose `Content-Encoding` names a compression is
//! refused before a byte of its body is read, and the 415 that says so: OpenAI-shaped,
//! naming the coding, with `accept-encoding: identity` to say what the gateway reads (RFC
//! 9110 §15.5.16). The gateway decodes no coding, so a compressed body would otherwise
//! reach the JSON parser and come back as a syntax error that never says why. A name that
//! is no compression (`utf-8`, `none`) changes no byte and is read past, as the SDKs' HTTP
//! clients read it. A transfer coding other than `chunked` (`Transfer-Encoding: gzip,
//! chunked`; hyper takes off the `chunked` and hands the rest on) is refused likewise, with
//! the 501 RFC 9112 §6.1 asks of a server that does not understand one. Does not own reading
//! the header's list
//! ([`crate::content_encoding::applied_coding`], shared with upstream answers) nor when
//! the check runs (`routes`: after the key, as every check of a body).

use http::{HeaderMap, HeaderValue, Response, header};

use crate::content_encoding::applied_coding;
use crate::error::ApiError;

/// The 415 for a body in a content coding; `None` for a body as it is.
pub fn refusal(headers: &HeaderMap) -> Option<ApiError> {
    let coding = applied_coding(headers)?;
    Some(
        ApiError::new(
            415,
            "invalid_request_error",
            format!(
                "request body in content-encoding `{coding}`: the gateway reads request bodies \
                 as they are; send the JSON uncompressed (no content-encoding, or identity)"
            ),
        )
        .code("unsupported_content_encoding"),
    )
}

/// The 501 for a body in a transfer coding other than `chunked`; `None` for a body framed
/// by `Content-Length` or plain `chunked`. hyper refuses a `Transfer-Encoding` whose last
/// coding is not `chunked` itself (a 400); one that is ends here.
pub fn transfer_refusal(headers: &HeaderMap) -> Option<ApiError> {
    let coding = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))?;
    let shown: String = coding.chars().take(32).collect();
    Some(
        ApiError::new(
            501,
            "invalid_request_error",
            format!(
                "request body in transfer-encoding `{shown}`: the gateway reads `chunked` \
                 only; send the JSON with Content-Length or plain chunked"
            ),
        )
        .code("unsupported_transfer_encoding"),
    )
}

/// Says on a 415 what the gateway reads: `accept-encoding: identity`.
pub fn name_what_is_read<B>(response: &mut Response<B>) {
    response.headers_mut().insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn a_body_as_it_is_passes() {
        assert_eq!(refusal(&HeaderMap::new()), None);
        assert_eq!(refusal(&coded("identity")), None);
        assert_eq!(refusal(&coded("Identity")), None);
    }

    #[test]
    fn only_chunked_is_a_transfer_coding_read() {
        let mut h = HeaderMap::new();
        assert_eq!(transfer_refusal(&h), None);
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("Chunked"),
        );
        assert_eq!(transfer_refusal(&h), None);
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        let e = transfer_refusal(&h).expect("refused");
        assert_eq!(e.status, 501);
        assert_eq!(e.code, Some("unsupported_transfer_encoding"));
        assert!(
            e.message.contains("transfer-encoding `gzip`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_coded_body_is_a_415_naming_its_coding() {
        for (value, named) in [("gzip", "gzip"), ("BR", "br"), ("identity, zstd", "zstd")] {
            let e = refusal(&coded(value)).expect("refused");
            assert_eq!(e.status, 415, "{value}");
            assert_eq!(e.error_type, "invalid_request_error");
            assert_eq!(e.code, Some("unsupported_content_encoding"));
            assert!(
                e.message.contains(&format!("content-encoding `{named}`")),
                "{value}: {}",
                e.message
            );
        }
    }
}
