//! Panic and hang hunt over every parser of untrusted input: a client's request (body,
//! key headers), an upstream's answer (SSE bytes, chunks, error bodies, Retry-After, whole
//! JSON completions, and the aggregation of odd but parseable chunks), and a config file.
//!
//! The rule: bad input gets an error, never a panic, a hang or memory without bound
//! (release builds abort on panic, so one panic on a client request takes the gateway
//! down). Each property runs a bounded number of cases so that the file stays fast in a
//! debug build; the hand-written inputs are the nasty ones random bytes rarely reach.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{Value, json};

use switchback::accumulate::{Accumulator, ToolCallCount};
use switchback::attempt::Delivery;
use switchback::catalog::Catalog;
use switchback::classify::{Signal, classify, retry_after};
use switchback::commit::CommitState;
use switchback::config::GatewayConfig;
use switchback::delivery::AggregateDelivery;
use switchback::engine::{Engine, WallClock};
use switchback::gateway::cors::CorsPolicy;
use switchback::limits::Limits;
use switchback::request::ChatRequest;
use switchback::trace::TraceLog;
use switchback::upstream::choices::ChoiceProgress;
use switchback::upstream::chunk::{ChunkLimits, Payload, from_completion, parse_data};
use switchback::upstream::sse::SseParser;

const NOW_SECS: u64 = 1_700_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

struct FixedWall;

impl WallClock for FixedWall {
    fn now(&self) -> SystemTime {
        now()
    }
}

const GATEWAY: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: a, litellm_params: {model: openai/a, api_base: "http://pa/v1"}, model_info: {id: a1}}
  - {model_name: b, litellm_params: {model: openai/b, api_base: "http://pb/v1"}, model_info: {id: b1}}
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://pw/v1"}}
keys:
  - {key: sk-a, models: [a, b]}
router_settings:
  fallbacks: [{a: [b]}]
"#;

fn engine() -> Engine {
    let config = GatewayConfig::load("fuzz.yaml", GATEWAY).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(
        Arc::new(Catalog::new(&config).unwrap()),
        Arc::new(switchback::transport::TcpConnector),
        Arc::new(TraceLog::default()),
        Arc::new(FixedWall),
    )
}

// ---------------------------------------------------------------------------------------
// Request admission
// ---------------------------------------------------------------------------------------

/// Numbers and values that break naive code: overflow, NaN-adjacent, huge, negative,
/// fractions where integers are expected, and every JSON kind.
fn nasty_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1".to_string()),
        Just("0.5".to_string()),
        Just("1e-10".to_string()),
        Just("1e300".to_string()),
        Just("1e308".to_string()),
        Just("-1e308".to_string()),
        Just("1.7976931348623157e308".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("86400".to_string()),
        Just("86400.0000001".to_string()),
        Just("-0.0".to_string()),
        Just(r#""""#.to_string()),
        Just(r#"" ""#.to_string()),
        Just(r#""\ud83d\ude00""#.to_string()),
        Just(r#""é€😀""#.to_string()),
        Just(r#""a""#.to_string()),
        Just(r#""b""#.to_string()),
        Just(r#""openai/x""#.to_string()),
        Just(r#""error""#.to_string()),
        Just(r#""continue""#.to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just(r#"["b","b","a"]"#.to_string()),
        Just(r#"[{"a":["b"]}]"#.to_string()),
        Just(r#"[{"a":["a"]},{"b":["a"]}]"#.to_string()),
        Just(r#"[{"model":"b"}]"#.to_string()),
        Just(r#"[{"model":"b","messages":[{"role":"user"}]}]"#.to_string()),
        Just(r#"[{"model":"b","messages":[]}]"#.to_string()),
        Just(r#"[{"*":["b"]}]"#.to_string()),
        Just(r#"[{"":[""]}]"#.to_string()),
        Just(r#"[{"a":"b"}]"#.to_string()),
        Just(r#"[{"a":[1]}]"#.to_string()),
        Just(r#"{"a":{"RateLimitErrorRetries":4294967295}}"#.to_string()),
        Just(r#"{"RateLimitErrorRetries":4294967295,"TimeoutErrorRetries":-1}"#.to_string()),
        Just(r#"{"include_usage":true}"#.to_string()),
        Just(r#"{"include_usage":"yes"}"#.to_string()),
        Just(r#"[{"role":"user","content":"hi"}]"#.to_string()),
        Just(r#"[{"role":1}]"#.to_string()),
        Just(r#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#.to_string()),
    ]
}

const REQUEST_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "default_fallbacks",
    "num_retries",
    "retry_policy",
    "timeout",
    "stream_timeout",
    "max_fallbacks",
    "mid_stream",
    "disable_fallbacks",
    "num_retries_per_request",
    "model_group_retry_policy",
    "cooldown_time",
    "allowed_fails",
    "retry_backoff_base",
    "rng_seed",
    "mock_testing_fallbacks",
    "mock_testing_rate_limit_error",
    "temperature",
    "",
];

fn request_body() -> impl Strategy<Value = String> {
    let field = (proptest::sample::select(REQUEST_FIELDS), nasty_value());
    (
        any::<bool>(),
        proptest::collection::vec(field, 0..10),
        any::<bool>(),
    )
        .prop_map(|(base, fields, messages)| {
            let mut parts = Vec::new();
            if base {
                parts.push(r#""model":"a""#.to_string());
            }
            if messages {
                parts.push(r#""messages":[{"role":"user","content":"hi"}]"#.to_string());
            }
            for (k, v) in fields {
                parts.push(format!("{}:{v}", serde_json::to_string(k).unwrap()));
            }
            format!("{{{}}}", parts.join(","))
        })
}

/// Admits `body` as every kind of client would send it; any panic fails the test.
fn admit_every_way(engine: &Engine, body: &[u8]) {
    for key in [None, Some("sk-a"), Some("sk-unknown"), Some("")] {
        for path in [None, Some("a"), Some(" "), Some("openai/x"), Some("b1")] {
            let _ = engine.admit_as(key, body, path);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Admission of any mix of known fields with nasty values gives a result, never a
    /// panic; and a refusal names a param or a limit or says what is wrong.
    #[test]
    fn admission_of_nasty_fields_never_panics(body in request_body()) {
        let engine = engine();
        admit_every_way(&engine, body.as_bytes());
        if let Err(e) = engine.admit(None, body.as_bytes()) {
            prop_assert!(!e.message.is_empty(), "an empty error message for {body}");
        }
    }

    /// Arbitrary bytes, and valid requests cut anywhere, never panic the request parser.
    #[test]
    fn request_parser_takes_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        body in request_body(),
        cut in any::<prop::sample::Index>(),
    ) {
        let limits = Limits::default();
        let _ = ChatRequest::parse(&bytes, &limits);
        let at = cut.index(body.len() + 1);
        let _ = ChatRequest::parse(&body.as_bytes()[..at], &limits);
    }
}

/// Hand-written request bodies each aimed at one suspected weak spot.
#[test]
fn nasty_request_bodies_are_refused_or_served_never_panic() {
    let engine = engine();
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let bodies: Vec<String> = vec![
        String::new(),
        "\u{feff}{}".into(),
        "\"\\ud800\"".into(),
        format!(r#"{{"model":"a",{msgs},"timeout":1e308}}"#),
        format!(r#"{{"model":"a",{msgs},"timeout":1e400}}"#),
        format!(r#"{{"model":"a",{msgs},"timeout":-1}}"#),
        format!(r#"{{"model":"a",{msgs},"timeout":0}}"#),
        format!(r#"{{"model":"a",{msgs},"timeout":1e-300}}"#),
        format!(r#"{{"model":"a",{msgs},"stream_timeout":18446744073709551616}}"#),
        format!(r#"{{"model":"a",{msgs},"num_retries":4294967295}}"#),
        format!(r#"{{"model":"a",{msgs},"num_retries_per_request":4294967295}}"#),
        format!(r#"{{"model":"a",{msgs},"max_fallbacks":4294967295}}"#),
        format!(r#"{{"model":"a",{msgs},"max_tokens":18446744073709551615}}"#),
        format!(r#"{{"model":"a",{msgs},"max_tokens":1e400}}"#),
        format!(r#"{{"model":"a",{msgs},"n":18446744073709551615}}"#),
        format!(r#"{{"model":"a",{msgs},"n":0}}"#),
        format!(r#"{{"model":"a",{msgs},"retry_policy":{{"RateLimitErrorRetries":4294967295}}}}"#),
        format!(
            r#"{{"model":"a",{msgs},"model_group_retry_policy":{{"a":{{"TimeoutErrorRetries":4294967295}}}}}}"#
        ),
        format!(r#"{{"model":"a",{msgs},"fallbacks":[{{"a":["a","a","a"]}}]}}"#),
        format!(r#"{{"model":"a",{msgs},"fallbacks":[{{"b":["a"]}},{{"a":["b"]}}]}}"#),
        format!(r#"{{"model":"a",{msgs},"fallbacks":["openai/x","openai/*","*"]}}"#),
        format!(r#"{{"model":"a",{msgs},"fallbacks":[{{"a":["openai/\u0000"]}}]}}"#),
        format!(r#"{{"model":"a",{msgs},"default_fallbacks":["a"]}}"#),
        format!(r#"{{"model":"a",{msgs},"mid_stream":"\ud800"}}"#),
        format!(r#"{{"model":"a",{msgs},"model":"b"}}"#),
        format!(r#"{{"model":"a",{msgs},"messages":"x"}}"#),
        format!(r#"{{"model":"a",{msgs},"x":{}}}"#, deep(127)),
        format!(r#"{{"model":"a",{msgs},"x":{}}}"#, deep(100_000)),
        format!(r#"{{"model":"a","messages":{}}}"#, deep(100_000)),
        format!(r#"{{"model":"openai/{}",{msgs}}}"#, "é".repeat(10_000)),
        format!(r#"{{"model":"openai/{}",{msgs}}}"#, "*".repeat(10_000)),
        format!(r#"{{"model":"{}",{msgs}}}"#, "\\u0000".repeat(100)),
        format!(
            r#"{{"model":"a",{msgs},"stream":true,"stream_options":{{"include_usage":null}}}}"#
        ),
        format!(r#"{{"model":"a",{msgs},"mock_testing_fallbacks":true}}"#),
        format!(r#"{{"model":"a",{msgs},"{}":1}}"#, "k".repeat(100_000)),
    ];
    for body in &bodies {
        admit_every_way(&engine, body.as_bytes());
    }
    let mut bad_utf8 = format!(r#"{{"model":"a",{msgs},"x":"#).into_bytes();
    bad_utf8.extend_from_slice(b"\"\xff\xfe\"}");
    admit_every_way(&engine, &bad_utf8);
}

/// A request of more values than the limit is refused before it is built, however the
/// values are spelled (a wide array, wide objects, many short strings).
#[test]
fn a_wide_request_is_refused_by_the_value_limit() {
    let limits = Limits::default();
    let n = limits.max_request_json_values + 10;
    let wide = format!(
        r#"{{"model":"a","messages":[{{"role":"user"}}],"x":[{}]}}"#,
        vec!["0"; n].join(",")
    );
    let Err(e) = ChatRequest::parse(wide.as_bytes(), &limits) else {
        panic!("a request over max_request_json_values was accepted");
    };
    assert_eq!(e.limit, Some("max_request_json_values"), "{}", e.message);
}

// ---------------------------------------------------------------------------------------
// Key headers and CORS
// ---------------------------------------------------------------------------------------

/// Header values of every awkward shape: obs-text bytes, tabs, lone schemes, many spaces.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            proptest::sample::select(&b"Bearer bearer\t sk-a,;:\x80\xff\xe9=\"*/."[..]),
            0..24
        ),
        proptest::collection::vec(0x20u8..0x7f, 0..24),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// CORS origin matching of any configured origins against any `Origin` header.
    #[test]
    fn cors_takes_any_origin(
        origins in proptest::collection::vec("[a-z*:/.é-]{0,12}", 0..4),
        origin in header_value(),
    ) {
        let policy = CorsPolicy::new(&origins);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&origin) {
            headers.insert(http::header::ORIGIN, v);
        }
        let _ = policy.allowed(&headers);
    }

    /// Retry-After and retry-after-ms of any text, with or without a `Date`.
    #[test]
    fn retry_after_takes_any_header_text(
        ms in "[-+0-9.eEinfatyNI ]{0,24}",
        secs in "[-+0-9.eEinfatyNI ]{0,24}",
        date in any::<bool>(),
    ) {
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_str(&ms).unwrap());
        h.insert("retry-after", HeaderValue::from_str(&secs).unwrap());
        if date {
            h.insert("date", HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        }
        if let Some(d) = retry_after(&h, now()) {
            prop_assert!(d <= switchback::classify::RETRY_AFTER_CEILING);
        }
    }
}

#[test]
fn nasty_retry_after_values_never_panic() {
    let values = [
        "1e400",
        "-1e400",
        "1e308",
        "18446744073709551616",
        "18446744073709551615",
        "NaN",
        "nan",
        "inf",
        "-inf",
        "infinity",
        "-0",
        "-0.0",
        "0x10",
        "1e-400",
        "4.9e-324",
        " 5 ",
        "",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Mon, 01 Jan 0001 00:00:00 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ];
    for name in ["retry-after", "retry-after-ms"] {
        for v in values {
            for date in [None, Some("Fri, 31 Dec 9999 23:59:59 GMT"), Some("garbage")] {
                let mut h = HeaderMap::new();
                h.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(v).unwrap(),
                );
                if let Some(d) = date {
                    h.insert("date", HeaderValue::from_str(d).unwrap());
                }
                for now in [
                    now(),
                    SystemTime::UNIX_EPOCH,
                    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799),
                ] {
                    let _ = retry_after(&h, now);
                }
                let _ = classify(
                    Signal::Status {
                        status: 429,
                        headers: &h,
                        body: b"{}",
                    },
                    now(),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Upstream: error bodies, SSE, chunks and their aggregation
// ---------------------------------------------------------------------------------------

/// Error bodies as providers write them, and as they must not be trusted to.
fn error_body() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("429".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("18446744073709551616".to_string()),
        Just(r#""rate_limit_exceeded""#.to_string()),
        Just(r#""insufficient_quota""#.to_string()),
        Just(r#""context_length_exceeded""#.to_string()),
        Just(r#""content_filter""#.to_string()),
        Just(r#""RESOURCE_EXHAUSTED""#.to_string()),
        Just(r#""maximum context length""#.to_string()),
        Just(r#""retryDelay""#.to_string()),
        Just(r#""1e400s""#.to_string()),
        Just(r#""-5s""#.to_string()),
        Just(r#""99999999999999999999s""#.to_string()),
        Just(r#""é😀\u0000""#.to_string()),
        Just(r#""""#.to_string()),
    ];
    let key = proptest::sample::select(
        &[
            "error",
            "message",
            "code",
            "type",
            "status",
            "param",
            "details",
            "retryDelay",
            "@type",
            "metadata",
            "innererror",
            "content_filter_result",
            "reason",
            "x",
        ][..],
    );
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((key.clone(), inner), 0..5).prop_map(|v| {
                let fields: Vec<String> = v
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any status with any error body and Retry-After classifies, never panics.
    #[test]
    fn classify_takes_any_error_body(
        status in prop_oneof![Just(0u16), 100u16..600, Just(u16::MAX)],
        body in error_body(),
        junk in proptest::collection::vec(any::<u8>(), 0..16),
        ra in "[-0-9.e]{0,8}",
    ) {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_str(&ra).unwrap());
        let _ = classify(Signal::Status { status, headers: &h, body: body.as_bytes() }, now());
        let _ = classify(Signal::Status { status, headers: &h, body: &junk }, now());
        if let Ok(v) = serde_json::from_str::<Value>(&body) {
            let f = classify(Signal::ErrorEvent { error: &v }, now());
            let _ = (f.client_status(), f.client_error_type(), f.client_error_code());
            let _ = f.unless_echoed(body.as_bytes());
        }
    }

    /// The SSE parser takes any bytes, cut anywhere, with any line limit.
    #[test]
    fn sse_parser_takes_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        cuts in proptest::collection::vec(0usize..256, 0..8),
        max in 0usize..64,
    ) {
        let mut p = SseParser::new(max);
        let mut out = Vec::new();
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut last = 0;
        for at in points.into_iter().chain([bytes.len()]) {
            if p.push(&bytes[last..at], &mut out).is_err() {
                break;
            }
            last = at;
        }
        let _ = (p.has_partial(), p.pending_is_done());
        for e in &out {
            prop_assert!(e.data.len() <= max, "event data over the line limit");
        }
    }
}

/// A chunk's value: odd but parseable JSON in the places a chunk's reader looks.
fn odd_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("1e300".to_string()),
        Just("4294967295".to_string()),
        Just("18446744073709551615".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("true".to_string()),
        Just(r#""""#.to_string()),
        Just(r#""hé""#.to_string()),
        Just(r#""\ud83d\ude00""#.to_string()),
        Just(r#""stop""#.to_string()),
        Just(r#""content_filter""#.to_string()),
        Just(r#""function""#.to_string()),
        Just(r#""call_1""#.to_string()),
        Just(r#""call_2""#.to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just(r#"[{"index":0,"type":"text","text":"a"}]"#.to_string()),
        Just(r#"[{"index":1,"text":"b"},{"index":0}]"#.to_string()),
        Just(r#"[{"type":"thinking","thinking":"t"}]"#.to_string()),
        Just(r#"{"name":"f","arguments":"{"}"#.to_string()),
        Just(r#"{"arguments":[{"index":0}]}"#.to_string()),
    ]
}

const CHUNK_KEYS: &[&str] = &[
    "index",
    "id",
    "type",
    "content",
    "role",
    "refusal",
    "tool_calls",
    "function",
    "arguments",
    "name",
    "text",
    "logprobs",
    "annotations",
    "audio",
    "0",
    "a/b",
    "~",
    "",
];

fn odd_value() -> impl Strategy<Value = String> {
    odd_leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((proptest::sample::select(CHUNK_KEYS), inner), 0..5)
                .prop_map(|v| {
                    let fields: Vec<String> = v
                        .iter()
                        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
        ]
    })
}

fn odd_index() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..4).prop_map(|i| i.to_string()),
        1 => Just("4294967295".to_string()),
        1 => Just("18446744073709551615".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("0.0".to_string()),
        1 => Just("null".to_string()),
        1 => Just(r#""0""#.to_string()),
    ]
}

fn tool_call() -> impl Strategy<Value = String> {
    (
        proptest::option::of(odd_index()),
        proptest::option::of(proptest::sample::select(
            &[r#""call_1""#, r#""call_2""#, r#""""#, "null", "7"][..],
        )),
        proptest::option::of(odd_value()),
    )
        .prop_map(|(index, id, function)| {
            let mut f = Vec::new();
            if let Some(i) = index {
                f.push(format!(r#""index":{i}"#));
            }
            if let Some(id) = id {
                f.push(format!(r#""id":{id}"#));
            }
            if let Some(func) = function {
                f.push(format!(r#""function":{func}"#));
            }
            format!("{{{}}}", f.join(","))
        })
}

fn delta() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(
            (
                proptest::sample::select(&["content", "role", "refusal", "x", "audio"][..]),
                odd_value(),
            ),
            0..3,
        ),
        proptest::option::of(proptest::collection::vec(tool_call(), 0..3)),
    )
        .prop_map(|(fields, calls)| {
            let mut f: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                .collect();
            if let Some(calls) = calls {
                f.push(format!(r#""tool_calls":[{}]"#, calls.join(",")));
            }
            format!("{{{}}}", f.join(","))
        })
}

fn choice() -> impl Strategy<Value = String> {
    (
        proptest::option::of(odd_index()),
        prop_oneof![3 => delta(), 1 => odd_value()],
        any::<bool>(),
        proptest::option::of(odd_leaf()),
        proptest::option::of(odd_value()),
    )
        .prop_map(|(index, delta, message, finish, logprobs)| {
            let mut f = Vec::new();
            if let Some(i) = index {
                f.push(format!(r#""index":{i}"#));
            }
            f.push(format!(
                r#""{}":{delta}"#,
                if message { "message" } else { "delta" }
            ));
            if let Some(r) = finish {
                f.push(format!(r#""finish_reason":{r}"#));
            }
            if let Some(l) = logprobs {
                f.push(format!(r#""logprobs":{l}"#));
            }
            format!("{{{}}}", f.join(","))
        })
}

fn chunk_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            4 => proptest::collection::vec(choice(), 0..3).prop_map(|c| format!("[{}]", c.join(","))),
            1 => odd_value(),
        ],
        proptest::option::of(odd_value()),
        proptest::option::of(odd_leaf()),
        any::<bool>(),
    )
        .prop_map(|(choices, usage, model, twice)| {
            let mut f = vec![format!(r#""choices":{choices}"#)];
            if twice {
                f.push(r#""choices":[{"index":0,"delta":{"content":"dup"}}]"#.to_string());
            }
            if let Some(u) = usage {
                f.push(format!(r#""usage":{u}"#));
            }
            if let Some(m) = model {
                f.push(format!(r#""model":{m}"#));
            }
            format!("{{{}}}", f.join(","))
        })
}

/// Runs `texts` through every consumer of upstream chunks: the chunk parser, the choice
/// tracker, the tool-call counter, the accumulator, the commit stamping and both deliveries'
/// aggregate (the non-streaming client's answer).
fn consume(texts: &[String]) {
    let limits = ChunkLimits::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut progress = ChoiceProgress::default();
    let mut count = ToolCallCount::default();
    let mut acc = Accumulator::new();
    let mut commit = CommitState::new();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    commit.commit(Some("up"), &mut rng);
    let mut aggregate = AggregateDelivery::new();
    for text in texts {
        let Ok(Payload::Chunk(chunk)) = parse_data(text, &limits) else {
            continue;
        };
        progress.note(&chunk);
        let _ = (progress.complete(), progress.all_finished());
        count.push(&chunk.object);
        acc.push(&chunk.object);
        let chunk = commit.stamp_and_record(chunk, "m");
        let _ = serde_json::to_string(&chunk.object).unwrap();
        rt.block_on(aggregate.chunk(chunk)).unwrap();
    }
    let _ = (acc.choices(), acc.text());
    let _ = commit.after_failure(Some(u64::MAX), 16, None);
    let _ = commit.after_failure(Some(0), usize::MAX, None);
    aggregate.end();
    let _ = aggregate.response("r");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Odd but parseable chunks (index gaps, huge and negative indexes, values of the wrong
    /// kind, null anywhere, repeated keys, content changing kind) never panic any consumer.
    #[test]
    fn odd_chunks_never_panic_any_consumer(texts in proptest::collection::vec(chunk_text(), 1..6)) {
        consume(&texts);
    }

    /// A whole JSON completion of odd shape never panics its reading as chunks.
    #[test]
    fn odd_completions_never_panic(choices in proptest::collection::vec(choice(), 0..3), usage in proptest::option::of(odd_value())) {
        let mut body = format!(r#"{{"object":"chat.completion","choices":[{}]"#, choices.join(","));
        if let Some(u) = usage {
            body.push_str(&format!(r#","usage":{u}"#));
        }
        body.push('}');
        let limits = ChunkLimits::default();
        if let Ok(payloads) = from_completion(body.as_bytes(), &limits) {
            let texts: Vec<String> = payloads
                .into_iter()
                .filter_map(|p| match p {
                    Payload::Chunk(c) => Some(serde_json::to_string(&c.object).unwrap()),
                    _ => None,
                })
                .collect();
            consume(&texts);
        }
    }
}

/// Hand-written chunk streams, each aimed at one suspected weak spot of the accumulator.
#[test]
fn nasty_chunk_streams_never_panic() {
    let c = |choices: Value| json!({"choices": choices}).to_string();
    let streams: Vec<Vec<String>> = vec![
        vec![c(
            json!([{"index": 4294967295u64, "delta": {"content": "a"}}]),
        )],
        vec![c(json!([{"index": u64::MAX, "delta": {"content": "a"}}]))],
        vec![c(json!([{"index": -1, "delta": {"content": "a"}}]))],
        vec![c(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 4294967295u64, "id": "x"}]}}]),
        )],
        vec![c(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": -1}]}}]),
        )],
        // content: text, then parts by index, then text, then a number, then parts again.
        vec![
            c(json!([{"delta": {"content": "a"}}])),
            c(json!([{"delta": {"content": [{"index": 0, "type": "text", "text": "b"}]}}])),
            c(json!([{"delta": {"content": "c"}}])),
            c(json!([{"delta": {"content": 5}}])),
            c(json!([{"delta": {"content": [{"index": 0, "text": "d"}]}}])),
            c(json!([{"delta": {"content": [{"index": 0, "text": "e"}]}}])),
        ],
        // A list item's `index` changes kind, a nested list under a key named like a position.
        vec![
            c(json!([{"delta": {"x": [{"index": 0, "0": [{"index": 1}]}]}}])),
            c(json!([{"delta": {"x": [{"index": 0, "0": [{"index": 1, "a": "b"}]}]}}])),
            c(json!([{"delta": {"x": {"0": [{"index": 1, "c": "d"}]}}}])),
            c(json!([{"delta": {"x": [{"index": 0, "0": [{"index": 1, "e": "f"}]}]}}])),
        ],
        // Lists under `type` and `index` (set-once keys that are replaced).
        vec![
            c(json!([{"delta": {"type": [{"index": 0, "a": "b"}]}}])),
            c(json!([{"delta": {"type": [{"index": 0, "a": "c"}]}}])),
            c(json!([{"delta": {"index": [{"index": 0}]}}])),
            c(json!([{"delta": {"index": [{"index": 0, "z": 1}]}}])),
        ],
        // Tool calls: ids changing under one index, missing indexes, arguments of every kind.
        vec![
            c(
                json!([{"delta": {"tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "{"}}]}}]),
            ),
            c(
                json!([{"delta": {"tool_calls": [{"index": 0, "id": "b", "function": {"arguments": [{"index": 0}]}}]}}]),
            ),
            c(json!([{"delta": {"tool_calls": [{"function": {"arguments": {"a": 1}}}]}}])),
            c(json!([{"delta": {"tool_calls": [{"index": 0, "function": null}]}}])),
            c(json!([{"delta": {"tool_calls": [{"index": 0, "function": "x"}]}}])),
        ],
        // Logprobs merged as lists, then replaced by a scalar, then a list again.
        vec![
            c(json!([{"delta": {}, "logprobs": {"content": [{"index": 0, "token": "a"}]}}])),
            c(json!([{"delta": {}, "logprobs": 1}])),
            c(json!([{"delta": {}, "logprobs": {"content": [{"index": 0, "token": "b"}]}}])),
        ],
    ];
    for stream in &streams {
        consume(stream);
    }
    let raw = [
        r#"{"choices":[{"index":0,"delta":{"content":"\ud800"}}]}"#,
        r#"{"choices":[{"index":1e400,"delta":{}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a"},"delta":{"content":"b"}}]}"#,
        r#"{"choices":[],"choices":null,"usage":{"completion_tokens":18446744073709551615}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615,"total_tokens":18446744073709551615}}"#,
        "[DONE]",
        " [DONE] ",
        "{}",
        "null",
        r#"{"error":null,"choices":[]}"#,
        r#"{"error":0.0,"choices":[]}"#,
        r#"{"error":-0.0,"choices":[]}"#,
    ];
    consume(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let deep = format!(
        r#"{{"choices":[{{"index":0,"delta":{{"content":"a","x":{}1{}}}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    consume(&[deep]);
}

// ---------------------------------------------------------------------------------------
// Config files
// ---------------------------------------------------------------------------------------

/// A valid config, and lines to splice into it anywhere.
const CONFIG: &str = r#"allow_anonymous: true
model_list:
  - model_name: a
    litellm_params: {model: openai/a, api_base: "http://pa/v1", timeout: 30, rpm: 10}
    model_info: {id: a1}
  - model_name: b
    litellm_params: {model: openai/b, api_base: "http://pb/v1"}
keys:
  - {key: sk-a, models: [a, b], router_settings: {num_retries: 2}}
router_settings:
  fallbacks: [{a: [b]}]
  num_retries: 1
  timeout: 60
  cooldown_time: 5
limits:
  max_cooldown: 60
"#;

const CONFIG_SPLICES: &[&str] = &[
    "  timeout: 1e400",
    "  timeout: .nan",
    "  timeout: -.inf",
    "  timeout: 99999999999999h",
    "  num_retries: 18446744073709551616",
    "  num_retries: -1",
    "  cooldown_time: 1e-400",
    "  retry_backoff_base: 1e308",
    "  retry_backoff_max: 0",
    "  max_fallbacks: 4294967295",
    "  allowed_fails: 4294967295",
    "  rng_seed: 18446744073709551615",
    "  max_request_body_bytes: 18446744073709551615",
    "  max_sse_line_bytes: 0",
    "  max_attempts: 4294967295",
    "  max_choices: 18446744073709551615",
    "  request_deadline: 1e400",
    "  fallbacks: [{a: [a]}, {b: [a]}]",
    "  fallbacks: [{'*': [b]}]",
    "  x: &a [1, *a]",
    "  x: *undefined",
    "  x: !!binary aGk=",
    "  x: !custom 1",
    "  <<: {timeout: 5}",
    "  ? [a, b]\n  : c",
    "  é😀: 1",
    "\t- tab",
    "---",
    "...",
    "%YAML 1.2",
    "\u{feff}",
    "  \"\\ud800\": 1",
    "  - {model_name: c, litellm_params: {model: \"azure/\", api_base: \"http://[::1]:99999/v1\", api_version: \"\"}}",
    "  - {model_name: \"\", litellm_params: {model: \"\"}}",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// A config with a line spliced in, or cut short, or with bytes replaced, loads or
    /// fails with an error; a catalog is built from whatever loads.
    #[test]
    fn mutated_configs_load_or_fail_cleanly(
        line in any::<prop::sample::Index>(),
        splice in proptest::sample::select(CONFIG_SPLICES),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in proptest::sample::select(&b"[]{}:-,&*!|>'\"#% \t\n"[..]),
    ) {
        let lines: Vec<&str> = CONFIG.lines().collect();
        let at = line.index(lines.len() + 1);
        let mut spliced: Vec<&str> = lines[..at].to_vec();
        spliced.push(splice);
        spliced.extend_from_slice(&lines[at..]);
        let spliced = spliced.join("\n");
        for text in [spliced.clone(), {
            let mut cut_text = spliced.clone();
            let mut n = cut.index(cut_text.len() + 1);
            while !cut_text.is_char_boundary(n) {
                n -= 1;
            }
            cut_text.truncate(n);
            cut_text
        }, {
            let mut bytes = CONFIG.as_bytes().to_vec();
            let i = flip.index(bytes.len());
            bytes[i] = byte;
            String::from_utf8(bytes).unwrap_or_default()
        }] {
            match GatewayConfig::load("m.yaml", &text) {
                Ok(config) => {
                    let _ = Catalog::new(&config);
                }
                Err(e) => {
                    let shown = e.to_string();
                    prop_assert!(shown.contains("m.yaml"), "the error names the file: {shown}");
                }
            }
        }
    }
}

/// Loads `text` as a config: an error or a catalog, never a panic or a crash.
fn load_hostile(name: &str, text: &str) {
    match GatewayConfig::load("h.yaml", text) {
        Ok(config) => {
            let _ = Catalog::new(&config);
        }
        Err(e) => eprintln!("{name}: refused: {e}"),
    }
}

#[test]
fn config_billion_laughs_fails_cleanly() {
    let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..20 {
        let prev = format!("*a{}", i - 1);
        s.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    s.push_str("model_list: *a19\n");
    load_hostile("billion laughs", &s);
}

#[test]
fn config_deep_flow_fails_cleanly() {
    let text = format!("model_list: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    load_hostile("deep flow", &text);
}

#[test]
fn config_deep_block_fails_cleanly() {
    let mut s = String::from("model_list:\n");
    for i in 0..5_000 {
        s.push_str(&" ".repeat(i + 1));
        s.push_str("- \n");
    }
    load_hostile("deep block", &s);
}

#[test]
fn config_huge_numbers_fail_cleanly() {
    load_hostile(
        "huge number",
        &format!("router_settings:\n  num_retries: {}\n", "9".repeat(100_000)),
    );
    load_hostile(
        "huge float",
        &format!("router_settings:\n  timeout: 1{}.0\n", "0".repeat(400)),
    );
}

/// A config of many deployments (well under MAX_YAML_BYTES) loads, and every deployment
/// gets the id it always had: `model_info.id`, else `group#n` for the n-th deployment of
/// its group, counting those with an id of their own. The ids are counted in one pass
/// (`GatewayConfig::deployment_ids`): counting the deployments before each one took
/// 16,000 deployments 12 s to load in a debug build. What it takes now is a figure for a
/// benchmark (`cargo bench --bench config_load`), not for a test.
#[test]
fn config_of_many_deployments_keeps_its_ids() {
    const DEPLOYMENTS: usize = 16_000;
    const GROUPS: usize = 4_000;
    let mut s = String::from("allow_anonymous: true\nmodel_list:\n");
    let mut expected = Vec::new();
    for i in 0..DEPLOYMENTS {
        let (group, n) = (i % GROUPS, i / GROUPS + 1);
        // Every third deployment names itself, in the middle of the others' count.
        let own = (i % 3 == 0).then(|| format!("d{i}"));
        s.push_str(&format!(
            "  - {{model_name: g{group}, litellm_params: {{model: openai/m, api_base: \"http://p{i}/v1\"}}{}}}\n",
            own.as_ref()
                .map_or(String::new(), |id| format!(", model_info: {{id: {id}}}"))
        ));
        expected.push(own.unwrap_or(format!("g{group}#{n}")));
    }
    let config = GatewayConfig::load("h.yaml", &s).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.deployment_ids(), expected);
    for i in [0, 1, 2, GROUPS, GROUPS + 1, DEPLOYMENTS - 1] {
        assert_eq!(config.deployment_id(i), expected[i], "model_list[{i}]");
    }
    let catalog = Catalog::new(&config).unwrap();
    let ids: Vec<&str> = catalog.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, expected);
}

#[test]
fn config_errors_at_multibyte_text_fail_cleanly() {
    load_hostile(
        "multibyte error",
        "model_list:\n  - {model_name: é😀é, litellm_params: {model: openai/m, api_base: \"http://pa/v1\", rpm: é😀}}\n",
    );
    load_hostile(
        "multibyte unclosed",
        "model_list: [é😀, {model_name: 'é😀\n",
    );
}
