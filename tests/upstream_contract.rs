//! Contract tests of the upstream client (`switchback::upstream::client`) against a real HTTP
//! server (wiremock) on loopback, through the real [`TcpConnector`].
//!
//! Covers: the request an attempt sends (method, path, headers, and the body built by
//! [`ChatRequest::upstream_body`]); reading SSE streams (order, CRLF and CR line ends,
//! comments, multi-line `data:`, a missing `[DONE]` with and without a finish reason); a whole
//! JSON completion answering a stream request; every status and error shape of the README's
//! "Failure classes" table, with Retry-After in all its forms; error events and content
//! filtering mid-stream; malformed and oversized responses, at and just past their limits;
//! first-byte and whole-attempt timeouts; and a refused connection.
//!
//! Real sockets and the real clock: no test waits more than a few hundred milliseconds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};
use switchback::classify::{Failure, FailureClass, TimeoutKind, TransportFault};
use switchback::limits::Limits;
use switchback::request::{ChatRequest, UpstreamCall};
use switchback::transport::TcpConnector;
use switchback::upstream::Endpoint;
use switchback::upstream::chunk::{Chunk, ChunkLimits};
use switchback::upstream::client::{
    AttemptTimeouts, Call, ClientLimits, REQUEST_ID_HEADER, UpstreamClient, UpstreamError,
    UpstreamStream,
};
use tokio::time::Instant;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;

/// The model name the upstream is asked for (the client asks for `vertex_ai/...`).
const MODEL: &str = "gemini-2.5-flash";
const KEY: &str = "sk-upstream-test";
const REQUEST_ID: u64 = 4242;
const LIMITS: ClientLimits = ClientLimits {
    max_sse_line_bytes: 4096,
    max_body_bytes: 64 * 1024,
    chunks: ChunkLimits {
        max_choices: 8,
        max_tool_calls: 8,
        max_json_values: 100_000,
    },
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn messages() -> Value {
    json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "say ping"},
    ])
}

/// The upstream body the engine builds from a client request that asked for `stream: false`
/// and carries a passthrough field and a router setting.
fn upstream_body() -> Bytes {
    let client_body = json!({
        "model": "vertex_ai/gemini-2.5-flash",
        "messages": messages(),
        "stream": false,
        "max_tokens": 32,
        "num_retries": 1,
    });
    ChatRequest::parse(client_body.to_string().as_bytes(), &Limits::default())
        .expect("a valid client request")
        .upstream_body(
            &UpstreamCall {
                model: MODEL,
                stream: true,
                stream_options: true,
            },
            None,
        )
}

/// Timeouts no test here reaches.
fn relaxed() -> AttemptTimeouts {
    timeouts(Duration::from_secs(5), Duration::from_secs(10))
}

fn timeouts(stream_timeout: Duration, attempt: Duration) -> AttemptTimeouts {
    AttemptTimeouts {
        stream_timeout,
        until_output: stream_timeout,
        deadline: Instant::now() + attempt,
        request_deadline: Instant::now() + attempt,
    }
}

/// Opens one attempt against `base` (`http://host:port`, without `/v1`).
async fn attempt(
    base: &str,
    api_key: Option<&str>,
    limits: ClientLimits,
    timeouts: AttemptTimeouts,
) -> Result<UpstreamStream, UpstreamError> {
    attempt_as(base, api_key, limits, timeouts, true).await
}

/// [`attempt`], asking for a stream (`stream`) or for one JSON completion (a `fake_stream`
/// deployment's call).
async fn attempt_as(
    base: &str,
    api_key: Option<&str>,
    limits: ClientLimits,
    timeouts: AttemptTimeouts,
    stream: bool,
) -> Result<UpstreamStream, UpstreamError> {
    let endpoint = Endpoint::parse(&format!("{base}/v1")).expect("a valid api_base");
    let body = upstream_body();
    UpstreamClient::new(
        Arc::new(TcpConnector),
        limits,
        switchback::upstream::pool::Pool::new(
            switchback::limits::Limits::default().upstream_pool(),
        ),
    )
    .open(
        Call {
            endpoint: &endpoint,
            model: MODEL,
            api_key,
            body: &body,
            request_id: REQUEST_ID,
            stream,
            ca_bundle: None,
        },
        timeouts,
    )
    .await
}

/// An upstream that answers one chat completion request with `response`.
async fn upstream(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    server
}

/// Opens an attempt that must fail before the first chunk.
async fn open_err(
    server: &MockServer,
    limits: ClientLimits,
    timeouts: AttemptTimeouts,
) -> UpstreamError {
    attempt(&server.uri(), Some(KEY), limits, timeouts)
        .await
        .err()
        .expect("the attempt fails at open")
}

/// Reads a stream to its end: the chunks, then `Ok(())` for a clean end or the error.
async fn drain(stream: &mut UpstreamStream) -> (Vec<Chunk>, Result<(), UpstreamError>) {
    let mut chunks = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(chunk)) => chunks.push(chunk),
            Ok(None) => return (chunks, Ok(())),
            Err(e) => return (chunks, Err(e)),
        }
    }
}

/// Serves `response`, opens an attempt with `limits` and reads it to its end.
async fn read_with(
    limits: ClientLimits,
    response: ResponseTemplate,
) -> (Vec<Chunk>, Result<(), UpstreamError>) {
    let server = upstream(response).await;
    let mut stream = attempt(&server.uri(), Some(KEY), limits, relaxed())
        .await
        .expect("the response head is a success");
    drain(&mut stream).await
}

async fn read(response: ResponseTemplate) -> (Vec<Chunk>, Result<(), UpstreamError>) {
    read_with(LIMITS, response).await
}

fn classified(e: &UpstreamError) -> Failure {
    e.classify(SystemTime::now())
}

fn sse_response(body: impl Into<String>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.into(), "text/event-stream")
}

/// `data: <event>` blocks with LF line ends.
fn sse(events: &[String]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

const DONE: &str = "data: [DONE]\n\n";

fn chunk_json(delta: Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    })
    .to_string()
}

fn role() -> String {
    chunk_json(json!({"role": "assistant", "content": ""}), None)
}

fn content(text: &str) -> String {
    chunk_json(json!({"content": text}), None)
}

fn finish(reason: &str) -> String {
    chunk_json(json!({}), Some(reason))
}

fn usage() -> String {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    })
    .to_string()
}

/// A whole answer: role, two content chunks, finish, usage (no `[DONE]`).
fn answer() -> Vec<String> {
    vec![
        role(),
        content("Hel"),
        content("lo"),
        finish("stop"),
        usage(),
    ]
}

fn texts(chunks: &[Chunk]) -> Vec<&str> {
    chunks.iter().map(|c| c.text.as_str()).collect()
}

/// Asserts `chunks` are exactly [`answer`], in order.
fn assert_is_answer(chunks: &[Chunk]) {
    assert_eq!(texts(chunks), ["", "Hel", "lo", "", ""]);
    let finishes: Vec<_> = chunks.iter().map(|c| c.finish_reason.as_deref()).collect();
    assert_eq!(finishes, [None, None, None, Some("stop"), None]);
    let usage_only: Vec<_> = chunks.iter().map(|c| c.usage_only).collect();
    assert_eq!(usage_only, [false, false, false, false, true]);
    assert!(
        chunks.iter().all(|c| c.model.as_deref() == Some(MODEL)),
        "every chunk names the upstream model: {chunks:?}"
    );
    assert_eq!(
        chunks[4].object.to_value()["usage"]["total_tokens"],
        json!(11),
        "the usage chunk is kept whole"
    );
}

fn assert_class(result: Result<(), UpstreamError>, class: FailureClass) -> UpstreamError {
    let err = result.expect_err("the stream fails");
    assert_eq!(classified(&err).class, class, "{err:?}");
    err
}

// ---------------------------------------------------------------------------------------------
// 1. Request shape
// ---------------------------------------------------------------------------------------------

/// The body carries exactly the client's messages and no router setting.
fn body_is_exact(request: &Request) -> bool {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    body["messages"] == messages() && body.get("num_retries").is_none()
}

fn shaped_request() -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("content-type", "application/json"))
        .and(header("accept", "text/event-stream"))
        .and(header(REQUEST_ID_HEADER, REQUEST_ID.to_string().as_str()))
        .and(body_partial_json(json!({
            "model": MODEL,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 32,
        })))
        .and(body_is_exact)
}

#[tokio::test]
async fn request_is_a_streaming_post_with_bearer_key_and_request_id() {
    let server = MockServer::start().await;
    shaped_request()
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(sse_response(sse(&answer()) + DONE))
        .expect(1)
        .mount(&server)
        .await;
    let mut stream = attempt(&server.uri(), Some(KEY), LIMITS, relaxed())
        .await
        .expect("the request matched the contract");
    drain(&mut stream).await.1.expect("a clean end");
    server.verify().await;
}

#[tokio::test]
async fn request_without_api_key_sends_no_authorization() {
    let server = MockServer::start().await;
    shaped_request()
        .and(|r: &Request| !r.headers.contains_key("authorization"))
        .respond_with(sse_response(sse(&answer()) + DONE))
        .expect(1)
        .mount(&server)
        .await;
    let mut stream = attempt(&server.uri(), None, LIMITS, relaxed())
        .await
        .expect("the request matched the contract");
    drain(&mut stream).await.1.expect("a clean end");
    server.verify().await;
}

/// Every call, streamed or not, asks for its body as it is (`accept-encoding: identity`):
/// without it an upstream or a proxy on the way may compress the answer, which the client
/// does not decode. Before, no `accept-encoding` was sent at all.
#[tokio::test]
async fn every_request_asks_for_an_identity_body() {
    for stream in [true, false] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(header("accept-encoding", "identity"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(completion().to_string(), "application/json"),
            )
            .expect(1)
            .mount(&server)
            .await;
        let mut answer = attempt_as(&server.uri(), Some(KEY), LIMITS, relaxed(), stream)
            .await
            .unwrap_or_else(|e| panic!("stream: {stream}: the request asked for identity: {e:?}"));
        drain(&mut answer).await.1.expect("a clean end");
        server.verify().await;
    }
}

/// Azure OpenAI's deployments API (a deployment with `api_version`): the deployment is in
/// the path, the version in the query, and the key in `api-key`, as the `AzureOpenAI`
/// clients and LiteLLM's `azure/` provider send them; a Bearer there is for Entra tokens.
/// Before, the call went to `{api_base}/chat/completions` with a Bearer key: a 404 that
/// cooled the deployment on every request.
#[tokio::test]
async fn an_azure_deployment_is_called_at_its_path_with_its_version_and_api_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/deployments/gpt-4o-eu/chat/completions"))
        .and(wiremock::matchers::query_param("api-version", "2024-10-21"))
        .and(header("api-key", KEY))
        .and(|r: &Request| !r.headers.contains_key("authorization"))
        .respond_with(sse_response(sse(&answer()) + DONE))
        .expect(2)
        .mount(&server)
        .await;
    // LiteLLM's (and the SDKs') `api_base` is the resource's root; one ending in `/openai`
    // names the same.
    for base in [server.uri(), format!("{}/openai/", server.uri())] {
        let mut endpoint = Endpoint::parse(&base).expect("a valid api_base");
        endpoint.azure_api_version = Some("2024-10-21".to_string());
        let body = upstream_body();
        let client = UpstreamClient::new(
            Arc::new(TcpConnector),
            LIMITS,
            switchback::upstream::pool::Pool::new(Limits::default().upstream_pool()),
        );
        let mut stream = client
            .open(
                Call {
                    endpoint: &endpoint,
                    model: "gpt-4o-eu",
                    api_key: Some(KEY),
                    body: &body,
                    request_id: REQUEST_ID,
                    stream: true,
                    ca_bundle: None,
                },
                relaxed(),
            )
            .await
            .unwrap_or_else(|e| panic!("{base}: the request matched the contract: {e:?}"));
        drain(&mut stream).await.1.expect("a clean end");
    }
    server.verify().await;
}

// ---------------------------------------------------------------------------------------------
// 2. SSE responses
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stream_yields_chunks_in_order_then_ends_at_done() {
    let server = upstream(sse_response(sse(&answer()) + DONE)).await;
    let mut stream = attempt(&server.uri(), Some(KEY), LIMITS, relaxed())
        .await
        .expect("a success");
    let (chunks, end) = drain(&mut stream).await;
    end.expect("a clean end");
    assert_is_answer(&chunks);
    assert!(
        matches!(stream.next().await, Ok(None)),
        "an ended stream stays ended"
    );
}

#[tokio::test]
async fn line_ends_comments_and_multi_line_data_do_not_change_the_chunks() {
    let events = answer();
    let mut body = String::from(": keep-alive\r\n\r\n");
    for (i, event) in events.iter().enumerate() {
        body.push_str(": keep-alive\r\n");
        match i {
            // One JSON object over two `data:` lines (joined with a newline), no space after
            // the colon, and fields clients ignore.
            1 => {
                let (head, tail) = event.split_at(event.find(',').expect("a JSON object") + 1);
                body.push_str(&format!(
                    "id: 1\r\nevent: message\r\ndata:{head}\r\ndata: {tail}\r\n\r\n"
                ));
            }
            // Bare CR line ends.
            2 => body.push_str(&format!("data: {event}\r\r")),
            _ => body.push_str(&format!("data: {event}\r\n\r\n")),
        }
    }
    body.push_str(": keep-alive\r\n\r\ndata: [DONE]\r\n\r\n");

    let (chunks, end) = read(sse_response(body)).await;
    end.expect("a clean end");
    assert_is_answer(&chunks);
}

#[tokio::test]
async fn missing_done_after_a_finish_reason_is_a_clean_end() {
    let (chunks, end) = read(sse_response(sse(&answer()))).await;
    end.expect("a finish reason then end of body is a complete answer");
    assert_is_answer(&chunks);
}

/// With `n: 2`, one choice's finish reason does not end the answer: a body that ends while
/// another named choice is unfinished is cut short, whichever choice finished first.
#[tokio::test]
async fn missing_done_while_another_choice_is_unfinished_is_transient() {
    let two = |first: &str, second: &str, finish: Option<(u64, &str)>| {
        let choice = |index: u64, text: &str| {
            let reason = finish.filter(|(i, _)| *i == index).map(|(_, r)| r);
            json!({"index": index, "delta": {"content": text}, "finish_reason": reason})
        };
        json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
               "choices": [choice(0, first), choice(1, second)]})
        .to_string()
    };
    for finished in [0, 1] {
        let body = sse(&[two("a", "b", None), two("", "", Some((finished, "stop")))]);
        let (chunks, end) = read(sse_response(body)).await;
        assert_eq!(chunks.len(), 2, "choice {finished} finished");
        assert_class(end, FailureClass::Transient);
    }
    // Both finished (in two chunks): a complete answer.
    let body = sse(&[
        two("a", "b", Some((1, "stop"))),
        two("", "", Some((0, "length"))),
    ]);
    let (chunks, end) = read(sse_response(body)).await;
    assert_eq!(chunks.len(), 2);
    end.expect("every choice finished");
}

#[tokio::test]
async fn missing_done_without_a_finish_reason_is_transient() {
    let (chunks, end) = read(sse_response(sse(&[role(), content("Hel")]))).await;
    assert_eq!(texts(&chunks), ["", "Hel"], "what came is delivered first");
    let err = assert_class(end, FailureClass::Transient);
    assert_eq!(classified(&err).status, None);
}

/// After the finish reason, a `[DONE]` whose blank line (or whole line end) never came is
/// the end it says it is: the stream is as complete as one with no `[DONE]` at all, which
/// is a clean end (openai-node dispatches such a last event too: openai/openai-node#2725).
#[tokio::test]
async fn a_done_without_its_line_ends_after_the_finish_reason_is_a_clean_end() {
    for tail in [
        "data: [DONE]\n",
        "data: [DONE]",
        "data:[DONE]\r\n",
        "data: [DONE]\r",
    ] {
        let body = sse(&answer()) + tail;
        let (chunks, end) = read(sse_response(body)).await;
        end.unwrap_or_else(|e| panic!("{tail:?}: {e:?}"));
        assert_is_answer(&chunks);
    }
}

/// A `[DONE]` without its line ends is `[DONE]` however the answer's finishes read: from a
/// provider that puts a finish reason on every chunk (complete only at `[DONE]`), or from
/// one that sends none. Both SDKs end such a stream without an error; read as a cut, the
/// whole answer was failed after commit and continued or ended with an error event.
#[tokio::test]
async fn a_done_without_its_line_ends_is_the_end_whatever_the_finishes() {
    let every_chunk = sse(&[
        chunk_json(json!({"role": "assistant", "content": "Hel"}), Some("stop")),
        chunk_json(json!({"content": "lo"}), Some("stop")),
    ]);
    let no_finish = sse(&[role(), content("Hel"), content("lo")]);
    for (what, body) in [("every chunk", every_chunk), ("no finish", no_finish)] {
        for tail in ["data: [DONE]\n", "data: [DONE]"] {
            let (chunks, end) = read(sse_response(body.clone() + tail)).await;
            end.unwrap_or_else(|e| panic!("{what} {tail:?}: {e:?}"));
            assert_eq!(texts(&chunks).concat(), "Hello", "{what} {tail:?}");
        }
        // Without `[DONE]`, neither is known to be whole.
        let (_, end) = read(sse_response(body.clone())).await;
        assert_class(end, FailureClass::Transient);
    }
}

#[tokio::test]
async fn an_unterminated_event_after_the_finish_reason_is_transient() {
    let body = sse(&answer()) + "data: [DO";
    let (chunks, end) = read(sse_response(body)).await;
    assert_eq!(chunks.len(), 5);
    assert_class(end, FailureClass::Transient);
}

// ---------------------------------------------------------------------------------------------
// 3. A JSON completion answering a stream request
// ---------------------------------------------------------------------------------------------

fn completion() -> Value {
    json!({
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    })
}

#[tokio::test]
async fn json_completion_is_one_chunk_then_end() {
    for content_type in ["application/json", "application/json; charset=utf-8"] {
        let response =
            ResponseTemplate::new(200).set_body_raw(completion().to_string(), content_type);
        let (chunks, end) = read(response).await;
        end.expect("a clean end");
        assert_eq!(chunks.len(), 2, "{content_type}: {chunks:?}");
        let c = &chunks[0];
        assert_eq!(
            (
                c.text.as_str(),
                c.model.as_deref(),
                c.finish_reason.as_deref()
            ),
            ("Hello", Some(MODEL), Some("stop")),
            "{content_type}"
        );
        assert_eq!(c.object.to_value()["object"], "chat.completion.chunk");
        assert_eq!(
            c.object.to_value()["choices"][0]["delta"]["content"],
            "Hello"
        );
        assert!(c.whole.is_some(), "the completion itself travels with it");
        // The usage comes as a stream's usage chunk would.
        assert!(chunks[1].usage_only);
        assert_eq!(
            chunks[1].object.to_value()["usage"]["total_tokens"],
            json!(10)
        );
    }
}

/// Media types are case-insensitive (RFC 9110 §8.3.1).
#[tokio::test]
async fn json_completion_content_type_is_case_insensitive() {
    let response =
        ResponseTemplate::new(200).set_body_raw(completion().to_string(), "Application/JSON");
    let (chunks, end) = read(response).await;
    end.expect("a clean end");
    assert_eq!(texts(&chunks), ["Hello", ""]);
}

#[tokio::test]
async fn json_error_body_with_status_200_is_an_error_event() {
    let body =
        json!({"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min"}});
    let server = upstream(ResponseTemplate::new(200).set_body_json(body)).await;
    let err = open_err(&server, LIMITS, relaxed()).await;
    let f = classified(&err);
    assert_eq!(
        (f.class, f.status),
        (FailureClass::RateLimited, Some(429)),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Error statuses and shapes (README, "Failure classes")
// ---------------------------------------------------------------------------------------------

struct StatusCase {
    name: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    class: FailureClass,
    retry_after: Option<Duration>,
}

const fn case(
    name: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    class: FailureClass,
    retry_after: Option<Duration>,
) -> StatusCase {
    StatusCase {
        name,
        status,
        headers,
        body,
        class,
        retry_after,
    }
}

const OPENAI_RATE_LIMIT: &str = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
const OPENAI_SERVER_ERROR: &str = r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
const GOOGLE_UNAVAILABLE: &str =
    r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#;
const ANTHROPIC_OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const OPENAI_BAD_KEY: &str = r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
const GOOGLE_FORBIDDEN: &str = r#"{"error":{"code":403,"message":"Permission denied on resource.","status":"PERMISSION_DENIED"}}"#;
const OPENAI_NO_MODEL: &str = r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
const OPENAI_BAD_PARAM: &str = r#"{"error":{"message":"Invalid value for 'temperature': expected a number.","type":"invalid_request_error","param":"temperature","code":null}}"#;
const OPENAI_CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
const AZURE_FILTER: &str = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#;
const OPENROUTER_RATE_LIMIT: &str = r#"{"error":{"code":429,"message":"Rate limit exceeded: free-models-per-min.","metadata":{"headers":{"X-RateLimit-Limit":"20"}}}}"#;
const VERTEX_QUOTA: &str = r#"[{"error":{"code":429,"message":"Resource exhausted. Please try again later.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}}]"#;

const fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

const fn millis(ms: u64) -> Option<Duration> {
    Some(Duration::from_millis(ms))
}

const STATUS_CASES: &[StatusCase] = {
    use FailureClass::*;
    &[
        case(
            "429 retry-after seconds",
            429,
            &[("retry-after", "3")],
            OPENAI_RATE_LIMIT,
            RateLimited,
            secs(3),
        ),
        case(
            "429 retry-after-ms",
            429,
            &[("retry-after-ms", "1500")],
            OPENAI_RATE_LIMIT,
            RateLimited,
            millis(1500),
        ),
        case(
            "429 retry-after-ms beats retry-after",
            429,
            &[("retry-after-ms", "250"), ("retry-after", "9")],
            "",
            RateLimited,
            millis(250),
        ),
        case(
            "429 retry-after HTTP-date against the response's Date",
            429,
            &[
                ("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT"),
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ],
            OPENAI_RATE_LIMIT,
            RateLimited,
            secs(10),
        ),
        case(
            "429 without body or header",
            429,
            &[],
            "",
            RateLimited,
            None,
        ),
        case(
            "500 OpenAI server_error",
            500,
            &[],
            OPENAI_SERVER_ERROR,
            Transient,
            None,
        ),
        case(
            "502 HTML",
            502,
            &[],
            "<html><body>502 Bad Gateway</body></html>",
            Transient,
            None,
        ),
        case(
            "503 Google UNAVAILABLE",
            503,
            &[("retry-after", "3")],
            GOOGLE_UNAVAILABLE,
            Transient,
            secs(3),
        ),
        case("504 empty", 504, &[], "", Transient, None),
        case(
            "529 Anthropic overloaded_error",
            529,
            &[],
            ANTHROPIC_OVERLOADED,
            Transient,
            None,
        ),
        case(
            "401 OpenAI invalid_api_key",
            401,
            &[],
            OPENAI_BAD_KEY,
            Auth,
            None,
        ),
        case(
            "403 Google PERMISSION_DENIED",
            403,
            &[],
            GOOGLE_FORBIDDEN,
            Auth,
            None,
        ),
        case(
            "404 OpenAI model_not_found",
            404,
            &[],
            OPENAI_NO_MODEL,
            NotFound,
            None,
        ),
        case("408 empty", 408, &[], "", Timeout, None),
        case("400 plain text", 400, &[], "Bad Request", BadRequest, None),
        case(
            "400 OpenAI invalid parameter",
            400,
            &[],
            OPENAI_BAD_PARAM,
            BadRequest,
            None,
        ),
        case(
            "400 OpenAI context_length_exceeded",
            400,
            &[],
            OPENAI_CONTEXT,
            ContextWindow,
            None,
        ),
        case(
            "400 Azure content_filter",
            400,
            &[],
            AZURE_FILTER,
            ContentPolicy,
            None,
        ),
        case(
            "413 plain text",
            413,
            &[],
            "Request Entity Too Large",
            BadRequest,
            None,
        ),
        case(
            "422 validation",
            422,
            &[],
            r#"{"detail":[{"loc":["body","messages"],"msg":"field required"}]}"#,
            BadRequest,
            None,
        ),
        case(
            "429 OpenRouter numeric code",
            429,
            &[],
            OPENROUTER_RATE_LIMIT,
            RateLimited,
            None,
        ),
        case(
            "429 Vertex list with RetryInfo",
            429,
            &[],
            VERTEX_QUOTA,
            RateLimited,
            secs(7),
        ),
    ]
};

#[tokio::test]
async fn error_statuses_classify_as_the_readme_table_says() {
    for c in STATUS_CASES {
        let mime = if c.body.starts_with(['{', '[']) {
            "application/json"
        } else {
            "text/plain"
        };
        let mut response = ResponseTemplate::new(c.status).set_body_raw(c.body, mime);
        for (name, value) in c.headers {
            response = response.insert_header(*name, *value);
        }
        let server = upstream(response).await;
        let err = open_err(&server, LIMITS, relaxed()).await;
        assert!(
            matches!(&err, UpstreamError::Status { status, .. } if *status == c.status),
            "{}: {err:?}",
            c.name
        );
        let f = classified(&err);
        assert_eq!(
            (f.class, f.status, f.retry_after),
            (c.class, Some(c.status), c.retry_after),
            "{}: {}",
            c.name,
            f.message
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Failures mid-stream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn error_events_after_two_chunks_classify_by_their_shape() {
    let cases = [
        (
            "OpenRouter 429",
            r#"data: {"error":{"code":429,"message":"Rate limit exceeded","retry_after":2}}"#,
            FailureClass::RateLimited,
            Some(429),
            secs(2),
        ),
        (
            "Vertex RESOURCE_EXHAUSTED",
            r#"data: {"error":{"status":"RESOURCE_EXHAUSTED","message":"Quota exceeded"}}"#,
            FailureClass::RateLimited,
            None,
            None,
        ),
        (
            "Anthropic overloaded_error with an event name",
            concat!(
                "event: error\n",
                r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            FailureClass::Transient,
            None,
            None,
        ),
    ];
    for (name, event, class, status, retry_after) in cases {
        let body = format!("{}{event}\n\n{DONE}", sse(&[role(), content("Hel")]));
        let (chunks, end) = read(sse_response(body)).await;
        assert_eq!(texts(&chunks), ["", "Hel"], "{name}");
        let err = end.expect_err("the stream fails");
        assert!(
            matches!(err, UpstreamError::ErrorEvent(_)),
            "{name}: {err:?}"
        );
        let f = classified(&err);
        assert_eq!(
            (f.class, f.status, f.retry_after),
            (class, status, retry_after),
            "{name}"
        );
    }
}

/// The client reads `finish_reason: content_filter` as part of the answer; whether it is a
/// failure to route around is the request's plan's business (`attempt`).
#[tokio::test]
async fn content_filter_finish_reason_is_read_as_an_answer() {
    let body = sse(&[role(), content("Hel"), finish("content_filter"), usage()]) + DONE;
    let (chunks, end) = read(sse_response(body)).await;
    assert_eq!(texts(&chunks), ["", "Hel", "", ""]);
    assert_eq!(chunks[2].finish_reason.as_deref(), Some("content_filter"));
    end.expect("a clean end");
}

// ---------------------------------------------------------------------------------------------
// 6. Malformed and oversized responses
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unparsable_chunk_is_malformed() {
    let body = sse(&[role()]) + "data: {not json\n\n" + DONE;
    let (chunks, end) = read(sse_response(body)).await;
    assert_eq!(chunks.len(), 1, "the chunk before is delivered");
    assert_class(end, FailureClass::Malformed);
}

#[tokio::test]
async fn sse_line_at_the_limit_is_read_and_one_byte_over_is_malformed() {
    let long = content(&"x".repeat(300));
    let line = format!("data: {long}").len();
    let body = sse(&[long.clone(), finish("stop")]) + DONE;

    let at_limit = ClientLimits {
        max_sse_line_bytes: line,
        ..LIMITS
    };
    let (chunks, end) = read_with(at_limit, sse_response(body.clone())).await;
    end.expect("a line of exactly max_sse_line_bytes is accepted");
    assert_eq!(chunks[0].text.len(), 300);

    let over = ClientLimits {
        max_sse_line_bytes: line - 1,
        ..LIMITS
    };
    let (_, end) = read_with(over, sse_response(body)).await;
    let err = assert_class(end, FailureClass::Malformed);
    assert_eq!(
        err.limit(),
        Some("max_sse_line_bytes"),
        "a limit hit is reported as one (a `limit_hit` event), like the other limits: {err:?}"
    );
}

/// Whether the chunks before an over-long line are delivered must not depend on how the
/// bytes were cut into reads (they are when the long line comes in a later read).
#[tokio::test]
async fn chunks_before_an_over_long_line_are_delivered() {
    let body = sse(&[role(), content("Hel"), content(&"x".repeat(300))]) + DONE;
    let limits = ClientLimits {
        max_sse_line_bytes: 256,
        ..LIMITS
    };
    let (chunks, end) = read_with(limits, sse_response(body)).await;
    assert_eq!(texts(&chunks), ["", "Hel"]);
    assert_class(end, FailureClass::Malformed);
}

#[tokio::test]
async fn json_body_at_the_limit_is_read_and_one_byte_over_is_malformed() {
    let body = completion().to_string();
    let response = || ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json");

    let at_limit = ClientLimits {
        max_body_bytes: body.len(),
        ..LIMITS
    };
    let (chunks, end) = read_with(at_limit, response()).await;
    end.expect("a body of exactly max_body_bytes is accepted");
    assert_eq!(texts(&chunks), ["Hello", ""]);

    let over = ClientLimits {
        max_body_bytes: body.len() - 1,
        ..LIMITS
    };
    let server = upstream(response()).await;
    let err = open_err(&server, over, relaxed()).await;
    assert!(
        matches!(&err, UpstreamError::Limit(l) if l.name == "max_upstream_body_bytes"),
        "{err:?}"
    );
    assert_eq!(classified(&err).class, FailureClass::Malformed);
}

#[tokio::test]
async fn every_byte_of_a_stream_counts_against_max_body_bytes() {
    // Comments and role-only chunks carry no content, but they are bytes all the same.
    let mut body = sse(&[chunk_json(
        json!({"role": "assistant", "content": "Hi"}),
        None,
    )]);
    for _ in 0..200 {
        body.push_str(": keep-alive padding padding padding\n\n");
        body.push_str(&sse(&[chunk_json(json!({"role": "assistant"}), None)]));
    }
    body.push_str("data: [DONE]\n\n");
    let limits = ClientLimits {
        max_body_bytes: 4096,
        ..LIMITS
    };
    let (chunks, end) = read_with(limits, sse_response(body)).await;
    assert!(chunks.len() < 40, "{} chunks read", chunks.len());
    let err = end.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Limit(l) if l.name == "max_upstream_body_bytes"),
        "{err:?}"
    );
}

/// Every chunk's JSON values count against `max_upstream_json_values`, across the answer:
/// a non-streaming client's answer is merged from them all, and an upstream streaming
/// `logprobs` arrays of zeros in lines within `max_sse_line_bytes` would grow it by about
/// 80 bytes per two bytes sent. Both modes read the answer through this stream, so both
/// fail it alike.
#[tokio::test]
async fn every_chunks_json_values_count_against_the_answers_bound() {
    let padded = |n: usize| {
        let mut c: Value = serde_json::from_str(&content("x")).unwrap();
        c["choices"][0]["logprobs"] = json!({"content": vec![0; n]});
        c.to_string()
    };
    let answer: Vec<String> = (0..10).map(|_| padded(40)).collect();
    let body = sse(&answer) + DONE;
    let limits = |values: usize| ClientLimits {
        chunks: ChunkLimits {
            max_json_values: values,
            ..LIMITS.chunks
        },
        ..LIMITS
    };
    let (chunks, end) = read_with(limits(100_000), sse_response(body.clone())).await;
    end.expect("well within the bound");
    assert_eq!(chunks.len(), 10);
    let (chunks, end) = read_with(limits(300), sse_response(body)).await;
    assert!(chunks.len() < 10, "{} chunks read", chunks.len());
    let err = end.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Limit(l) if l.name == "max_upstream_json_values"),
        "{err:?}"
    );
    assert_eq!(classified(&err).class, FailureClass::Malformed);
}

// ---------------------------------------------------------------------------------------------
// 7. Timeouts (real clock: 50 ms budgets against a 200 ms slow upstream)
// ---------------------------------------------------------------------------------------------

const SLOW: Duration = Duration::from_millis(200);
const SHORT: Duration = Duration::from_millis(50);

async fn slow_upstream() -> MockServer {
    upstream(sse_response(sse(&answer()) + DONE).set_delay(SLOW)).await
}

#[tokio::test]
async fn slow_response_head_is_a_first_byte_timeout() {
    let server = slow_upstream().await;
    let started = Instant::now();
    let err = open_err(&server, LIMITS, timeouts(SHORT, Duration::from_secs(5))).await;
    assert!(started.elapsed() >= SHORT, "not before stream_timeout");
    assert_eq!(err.timeout_kind(), Some(TimeoutKind::FirstByte), "{err:?}");
    assert_eq!(classified(&err).class, FailureClass::Timeout);
}

#[tokio::test]
async fn deadline_before_stream_timeout_is_an_attempt_timeout() {
    let server = slow_upstream().await;
    let started = Instant::now();
    let err = open_err(&server, LIMITS, timeouts(Duration::from_secs(5), SHORT)).await;
    assert!(started.elapsed() >= SHORT, "not before the deadline");
    assert_eq!(err.timeout_kind(), Some(TimeoutKind::Attempt), "{err:?}");
    assert_eq!(classified(&err).class, FailureClass::Timeout);
}

/// An error status whose body stalls is still that status: a 429 whose body never ends
/// was a timeout, its class and its `Retry-After` lost (routing read it as a slow
/// deployment, not a rate-limited one). The body's wait is the gap rule's, and what came
/// of the body is kept.
#[tokio::test]
async fn an_error_status_whose_body_stalls_keeps_its_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "the request's head came whole");
            request.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\n\
                  content-type: application/json\r\ncontent-length: 500\r\n\r\n\
                  {\"error\":{\"message\":\"Rate limit reached",
            )
            .await
            .expect("write");
        // Held open, the rest never sent, until the client is gone.
        let _ = socket.read(&mut buf).await;
    });
    let started = Instant::now();
    let err = attempt(
        &format!("http://127.0.0.1:{port}"),
        Some(KEY),
        LIMITS,
        timeouts(SHORT, Duration::from_secs(5)),
    )
    .await
    .err()
    .expect("a 429");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not the deadline"
    );
    let UpstreamError::Status { status, body, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*status, 429);
    assert!(body.starts_with(b"{\"error\""), "{body:?}");
    let f = classified(&err);
    assert_eq!(f.class, FailureClass::RateLimited);
    assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
    server.await.expect("the fake upstream");
}

// ---------------------------------------------------------------------------------------------
// 8. Connection refused
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_connection_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("bound").port()
    };
    let err = attempt(
        &format!("http://127.0.0.1:{port}"),
        Some(KEY),
        LIMITS,
        relaxed(),
    )
    .await
    .err()
    .expect("nothing listens there");
    assert!(
        matches!(
            err,
            UpstreamError::Transport(TransportFault::ConnectRefused, _)
        ),
        "{err:?}"
    );
    let f = classified(&err);
    assert_eq!((f.class, f.status), (FailureClass::Transient, None));
}

/// An `https` api_base goes through TLS: against a plain-HTTP server the handshake fails,
/// as a transient transport failure that says so (and no request reaches the server).
#[tokio::test]
async fn https_endpoints_speak_tls() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let uri = server.uri().replace("http://", "https://");
    let err = attempt(&uri, Some(KEY), LIMITS, relaxed())
        .await
        .err()
        .expect("a plain HTTP server cannot complete a TLS handshake");
    let f = classified(&err);
    assert_eq!(f.class, FailureClass::Transient);
    assert!(f.message.contains("TLS"), "{}", f.message);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Content codings and labels
// ---------------------------------------------------------------------------------------------

/// Opens an attempt on `response` and reads it to its end: the chunks, and the error it
/// failed with, at open or on the way.
async fn outcome(
    response: ResponseTemplate,
    stream: bool,
) -> (Vec<Chunk>, Result<(), UpstreamError>) {
    let server = upstream(response).await;
    match attempt_as(&server.uri(), Some(KEY), LIMITS, relaxed(), stream).await {
        Ok(mut answer) => drain(&mut answer).await,
        Err(e) => (Vec::new(), Err(e)),
    }
}

/// A success in a content coding the gateway did not ask for (a proxy that compresses
/// whatever it is asked) is a malformed answer that names the coding, in both kinds of
/// call, and not one chunk of it is read. Before, its bytes went to the SSE or JSON parser,
/// and the attempt failed as unreadable SSE, unreadable JSON or a stream cut short, with a
/// message that never said why.
#[tokio::test]
async fn a_success_in_a_content_coding_is_malformed_and_says_which() {
    let cases = [
        ("gzip", "gzip"),
        ("br", "br"),
        ("GZip", "gzip"),
        // Codings are listed in the order applied: any one but identity is one too many.
        ("identity, gzip", "gzip"),
    ];
    for stream in [true, false] {
        let mime = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        for (coding, named) in cases {
            let response = ResponseTemplate::new(200)
                .set_body_raw(support::GZIPPED_SSE_ANSWER, mime)
                .insert_header("content-encoding", coding);
            let (chunks, end) = outcome(response, stream).await;
            let case = format!("stream: {stream}, content-encoding: {coding}");
            assert!(chunks.is_empty(), "{case}: {chunks:?}");
            let err = assert_class(end, FailureClass::Malformed);
            let message = classified(&err).message;
            assert!(
                message.contains(&format!("content-encoding `{named}`")),
                "{case}: {message}"
            );
            assert!(!message.contains('\u{FFFD}'), "{case}: {message}");
        }
    }
}

/// `content-encoding: identity` is no coding at all: the answer is read as usual.
#[tokio::test]
async fn an_identity_content_coding_is_read_as_usual() {
    let response =
        sse_response(sse(&answer()) + DONE).insert_header("content-encoding", "identity");
    let (chunks, end) = read(response).await;
    end.expect("a clean end");
    assert_is_answer(&chunks);
}

/// An error status in a content coding is still what its status says, with its
/// Retry-After; only its body cannot be read for a message, and the message says so rather
/// than repeating compressed bytes. Before, the message was the body's first 200 bytes as
/// text: binary garbage, which reached the client.
#[tokio::test]
async fn an_error_status_in_a_content_coding_keeps_its_class_and_retry_after() {
    let cases = [
        (429, Some("7"), FailureClass::RateLimited, secs(7)),
        (503, None, FailureClass::Transient, None),
        (400, None, FailureClass::BadRequest, None),
    ];
    for (status, retry_after, class, wait) in cases {
        let mut response = ResponseTemplate::new(status)
            .set_body_raw(support::GZIPPED_SSE_ANSWER, "application/json")
            .insert_header("content-encoding", "gzip");
        if let Some(after) = retry_after {
            response = response.insert_header("retry-after", after);
        }
        let server = upstream(response).await;
        let err = open_err(&server, LIMITS, relaxed()).await;
        let f = classified(&err);
        assert_eq!(
            (f.class, f.status, f.retry_after),
            (class, Some(status), wait),
            "{status}: {}",
            f.message
        );
        assert!(f.message.contains("gzip"), "{status}: {}", f.message);
        assert!(!f.message.contains('\u{FFFD}'), "{status}: {}", f.message);
    }
}

/// A captive portal's or a proxy's page, answering a streamed call with a 200.
const PROXY_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>Accept the terms to use this network.</body></html>\n";

/// A streamed call answered with something labelled neither an event stream nor JSON, whose
/// first bytes are no event stream either (a proxy's page), is a malformed answer that
/// names its label, at its first bytes. Before, its lines were read as SSE fields nobody
/// knows and skipped, and the attempt failed as a stream cut short (transient), or timed
/// out when the page's connection stayed open.
#[tokio::test]
async fn a_streamed_answer_that_is_a_page_is_malformed_and_says_which() {
    for (label, body) in [
        ("text/html; charset=utf-8", PROXY_PAGE),
        ("text/plain", "Access denied by policy\n"),
        ("application/octet-stream", "\u{1}\u{2}binary"),
    ] {
        let response = ResponseTemplate::new(200).set_body_raw(body, label);
        let (chunks, end) = outcome(response, true).await;
        assert!(chunks.is_empty(), "{label}: {chunks:?}");
        let err = assert_class(end, FailureClass::Malformed);
        let message = classified(&err).message;
        let essence = label.split(';').next().unwrap();
        assert!(
            message.contains(&format!("`{essence}`")),
            "{label}: {message}"
        );
    }
}

/// An event stream is read as one whatever its label, as the SDKs read a streamed answer
/// (and as before): under another label or none, its first bytes say what it is.
#[tokio::test]
async fn an_event_stream_under_another_label_or_none_is_read_as_one() {
    let body = sse(&answer()) + DONE;
    for label in [Some("text/plain; charset=utf-8"), Some("text/html"), None] {
        let response = match label {
            Some(label) => ResponseTemplate::new(200).set_body_raw(body.clone(), label),
            None => ResponseTemplate::new(200).set_body_bytes(body.clone()),
        };
        let (chunks, end) = read(response).await;
        end.unwrap_or_else(|e| panic!("{label:?}: {e:?}"));
        assert_is_answer(&chunks);
    }
}

/// A streamed call answered with no `Content-Type` (a server that builds its responses by
/// hand) whose first bytes are a JSON object: the completion of an upstream that ignores
/// `stream: true`, read whole as a JSON-labelled one is, within `max_upstream_body_bytes`.
/// Before, it was read as an event stream of no events, and its end taken for a reset
/// connection (transient: a retry, then a fallback, for an answer that had come).
#[tokio::test]
async fn an_unlabelled_json_completion_to_a_streamed_call_is_read_as_one() {
    let body = format!("\u{FEFF}\n{}", completion());
    let (chunks, end) = read(ResponseTemplate::new(200).set_body_bytes(body.clone())).await;
    end.expect("an unlabelled completion is an answer");
    assert_eq!(texts(&chunks), ["Hello", ""]);
    assert_over_body_limit(body.len() - 1, body).await;
}

/// Asserts that `body`, unlabelled, is refused whole under a `max_body_bytes` of `max`.
async fn assert_over_body_limit(max: usize, body: String) {
    let over = ClientLimits {
        max_body_bytes: max,
        ..LIMITS
    };
    let (chunks, end) = read_with(over, ResponseTemplate::new(200).set_body_bytes(body)).await;
    assert!(chunks.is_empty(), "{chunks:?}");
    let err = assert_class(end, FailureClass::Malformed);
    assert!(
        matches!(&err, UpstreamError::Limit(l) if l.name == "max_upstream_body_bytes"),
        "{err:?}"
    );
}

/// Blank space before an answer's first bytes says nothing of what it is, however much of
/// it comes: servers that keep a slow connection alive send it (OpenRouter, before a
/// completion that is not streamed). Held as the first bytes, more than
/// `MAX_STREAM_START_BYTES` of it had an unlabelled JSON completion read as an event stream
/// and refused. It counts against `max_upstream_body_bytes` all the same.
#[tokio::test]
async fn blank_space_before_an_answer_does_not_decide_what_it_is() {
    let blank = " \n".repeat(4 * 1024);
    let json = format!("{blank}{}", completion());
    let (chunks, end) = read(ResponseTemplate::new(200).set_body_bytes(json.clone())).await;
    end.expect("an unlabelled completion after blank space is an answer");
    assert_eq!(texts(&chunks), ["Hello", ""]);

    let events = format!("{blank}{}{DONE}", sse(&[content("Hello")]));
    let labelled = ResponseTemplate::new(200).set_body_raw(events.clone(), "text/plain");
    let (chunks, end) = read(labelled).await;
    end.expect("an event stream after blank space is read as one");
    assert_eq!(texts(&chunks), ["Hello"]);

    for body in [json, events] {
        assert_over_body_limit(blank.len() - 1, body).await;
    }
}

/// `Content-Type:` with nothing after it names no media type: the answer is told by its
/// first bytes, as one with no such header. Read as a label that is not a name, a JSON
/// completion under it was refused.
#[tokio::test]
async fn an_empty_content_type_is_no_label() {
    for label in ["", " ", ";charset=utf-8"] {
        let template = ResponseTemplate::new(200)
            .set_body_bytes(completion().to_string())
            .insert_header("content-type", label);
        let (chunks, end) = read(template).await;
        end.unwrap_or_else(|e| panic!("{label:?}: {e:?}"));
        assert_eq!(texts(&chunks), ["Hello", ""], "{label:?}");
    }
}

/// An unlabelled answer that is neither an event stream nor JSON (a page, plain text, no
/// bytes at all) is a malformed answer that says it had no label.
#[tokio::test]
async fn an_unlabelled_answer_that_is_no_stream_nor_json_is_malformed() {
    for body in [PROXY_PAGE, "Access denied\n", "", "[{\"id\": 1}]"] {
        let (chunks, end) = read(ResponseTemplate::new(200).set_body_bytes(body)).await;
        assert!(chunks.is_empty(), "{body:?}: {chunks:?}");
        let err = assert_class(end, FailureClass::Malformed);
        let message = classified(&err).message;
        assert!(message.contains("no content-type"), "{body:?}: {message}");
    }
}
