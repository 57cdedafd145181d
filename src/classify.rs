//! Upstream failure → [`FailureClass`] (+ Retry-After), and the decision table.
//!
//! Owns: reading an HTTP status, headers and error body (OpenAI, OpenRouter, Vertex/Gemini,
//! Anthropic shapes as they appear on OpenAI-compatible endpoints), a mid-stream error
//! event, a transport error or a timeout, and naming what kind of failure it is; and the
//! table that says, per class, whether to retry the group, fall back, and cool the
//! deployment. Pure: no I/O, the wall clock is a parameter.
//! Does not own how many retries a request has left (`policy`) or how long to wait (`route`).

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde_json::Value;

/// What kind of failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureClass {
    RateLimited,
    Transient,
    Timeout,
    ContextWindow,
    ContentPolicy,
    Auth,
    NotFound,
    BadRequest,
    Malformed,
}

impl FailureClass {
    pub const ALL: [FailureClass; 9] = [
        FailureClass::RateLimited,
        FailureClass::Transient,
        FailureClass::Timeout,
        FailureClass::ContextWindow,
        FailureClass::ContentPolicy,
        FailureClass::Auth,
        FailureClass::NotFound,
        FailureClass::BadRequest,
        FailureClass::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Transient => "transient",
            FailureClass::Timeout => "timeout",
            FailureClass::ContextWindow => "context_window",
            FailureClass::ContentPolicy => "content_policy",
            FailureClass::Auth => "auth",
            FailureClass::NotFound => "not_found",
            FailureClass::BadRequest => "bad_request",
            FailureClass::Malformed => "malformed",
        }
    }

    pub fn parse(s: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The decision table of DESIGN.md. `bad_request_falls_back` is the gateway's
    /// `fallback_on_bad_request`.
    pub const fn actions(self, bad_request_falls_back: bool) -> Actions {
        use CoolDown::*;
        use FallbackRoute::*;
        let (retry, fallback, cool_down) = match self {
            FailureClass::RateLimited => (true, Generic, Immediately),
            FailureClass::Transient => (true, Generic, AfterAllowedFails),
            FailureClass::Timeout => (true, Generic, AfterAllowedFails),
            FailureClass::ContextWindow => (false, ContextWindow, Never),
            FailureClass::ContentPolicy => (false, ContentPolicy, Never),
            // Retried on another deployment only (`Failure::retry_elsewhere_only`).
            FailureClass::Auth => (true, Generic, Immediately),
            FailureClass::NotFound => (false, Generic, Immediately),
            FailureClass::BadRequest => (
                false,
                if bad_request_falls_back {
                    Generic
                } else {
                    NoFallback
                },
                Never,
            ),
            FailureClass::Malformed => (true, Generic, AfterAllowedFails),
        };
        Actions {
            retry,
            fallback,
            cool_down,
        }
    }

    /// The status a client sees when this is the request's final failure and the upstream
    /// gave none (a transport error, a timeout, a mock).
    pub fn default_status(self) -> u16 {
        match self {
            FailureClass::RateLimited => 429,
            FailureClass::Transient | FailureClass::Malformed => 502,
            FailureClass::Timeout => 504,
            FailureClass::ContextWindow
            | FailureClass::ContentPolicy
            | FailureClass::BadRequest => 400,
            FailureClass::Auth => 401,
            FailureClass::NotFound => 404,
        }
    }

    /// OpenAI's error `type` for this class, as the client sees it. An upstream's auth or
    /// not-found error is the gateway's problem (`api_error`), never the client's.
    pub fn error_type(self) -> &'static str {
        match self {
            FailureClass::RateLimited => "rate_limit_error",
            FailureClass::Transient
            | FailureClass::Malformed
            | FailureClass::Auth
            | FailureClass::NotFound => "api_error",
            FailureClass::Timeout => "timeout_error",
            FailureClass::ContextWindow
            | FailureClass::ContentPolicy
            | FailureClass::BadRequest => "invalid_request_error",
        }
    }

    /// OpenAI's error `code` for this class, where it has one.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            FailureClass::ContextWindow => Some("context_length_exceeded"),
            FailureClass::ContentPolicy => Some("content_policy_violation"),
            FailureClass::RateLimited => Some("rate_limit_exceeded"),
            FailureClass::Timeout => Some("timeout"),
            FailureClass::Auth => Some("upstream_authentication_error"),
            FailureClass::NotFound => Some("upstream_model_not_found"),
            _ => None,
        }
    }
}

/// Which fallback list a failure walks, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackRoute {
    NoFallback,
    Generic,
    /// `context_window_fallbacks` if set (without falling through), else generic.
    ContextWindow,
    /// `content_policy_fallbacks` if set (without falling through), else generic.
    ContentPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoolDown {
    Never,
    /// Once the deployment's consecutive failures exceed `allowed_fails`.
    AfterAllowedFails,
    /// At once, for Retry-After if given, else `cooldown_time`.
    Immediately,
}

/// One row of the decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    pub retry: bool,
    pub fallback: FallbackRoute,
    pub cool_down: CoolDown,
}

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No response headers in time.
    FirstByte,
    /// Headers came, but no first chunk in time.
    FirstChunk,
    /// Too long a gap between two chunks.
    Idle,
    /// The attempt's whole `timeout`.
    Attempt,
}

impl TimeoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::FirstByte => "first_byte",
            TimeoutKind::FirstChunk => "first_chunk",
            TimeoutKind::Idle => "idle",
            TimeoutKind::Attempt => "attempt",
        }
    }
}

/// A transport-level failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFault {
    ConnectRefused,
    ConnectFailed,
    /// The TLS handshake with an `https` upstream failed (certificate, protocol).
    Tls,
    /// The gateway could not open a connection for want of a local resource (file
    /// descriptors, memory, ephemeral ports): not the upstream's fault.
    LocalResource,
    /// The connection broke (reset, closed) while the response was in flight.
    Reset,
}

/// What the upstream did, as the classifier sees it.
#[derive(Debug, Clone, Copy)]
pub enum Signal<'a> {
    /// A non-success HTTP status, before any chunk.
    Status {
        status: u16,
        headers: &'a HeaderMap,
        body: &'a [u8],
    },
    /// A `data: {"error": ...}` event inside a stream, or a 200 JSON body that is an error.
    ErrorEvent {
        error: &'a Value,
    },
    /// A choice finished with `finish_reason: content_filter`.
    ContentFiltered,
    Transport(TransportFault),
    Timeout(TimeoutKind),
    /// Unparsable upstream JSON or SSE.
    Malformed,
}

/// Who caused a failure. Only a deployment's own failures count against its health: a
/// deployment is shared by every tenant, so one request's tight timeout or the gateway's own
/// lack of file descriptors must never cool it for everyone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Blame {
    /// The deployment (or the network to it): counts towards cooling.
    #[default]
    Deployment,
    /// A timeout tighter than the deployment's own, set by the request, its key or its team,
    /// or the request's overall deadline.
    RequestTimeout,
    /// The gateway ran out of something local (file descriptors, memory, ports).
    LocalResource,
    /// The provider does not know the model the request named, served through a wildcard
    /// group (`openai/*`): the name is the client's, so the client gets the provider's 404
    /// as OpenAI sends one, and the deployment, which every tenant shares, is not cooled.
    RequestedModel,
}

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Deployment => "deployment",
            Blame::RequestTimeout => "request_timeout",
            Blame::LocalResource => "local_resource",
            Blame::RequestedModel => "requested_model",
        }
    }
}

/// A classified failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    /// The upstream's status, when there was one (for an error event, its numeric code).
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// Human-readable detail for the client's error message. Upstream text in it is
    /// redacted (`crate::redact`) before it can reach a client.
    pub message: String,
    pub blame: Blame,
    /// A quota or billing failure (class `rate_limited`, without a 429): the account behind
    /// the deployment is out of credit or quota. Waiting does not mend it, so it is retried
    /// only on another deployment (see [`Failure::retry_elsewhere_only`]).
    pub quota: bool,
    /// The words of the upstream's message that alone made this a quota failure (no 402,
    /// no billing `type` or `code`): a request's own words echoed back ("Unrecognized
    /// request argument supplied: ...") must not make it one (see
    /// [`Failure::unless_echoed`]).
    pub quota_words: Option<&'static str>,
    /// The upstream error's `param` (the request field it found fault with), passed on to
    /// the client as OpenAI sends it (`"param": "messages"` with a context-length error).
    pub param: Option<String>,
}

impl Failure {
    /// A 400 that refuses the call's streaming, not the request: OpenAI's for o3 and gpt-5
    /// in an organisation not verified (`param: "stream"`, "Your organization must be
    /// verified to stream this model"), and for audio output in a format but pcm16
    /// ("... does not support 'wav' when stream=true"). The same request without streaming
    /// is served (see `attempt`). The words count only where the request `sent` does not
    /// say them: many providers quote an unknown field back in a 400, and a client's own
    /// words must not buy a second call.
    pub fn refuses_streaming(&self, sent: &[u8]) -> bool {
        if self.class != FailureClass::BadRequest || self.status != Some(400) {
            return false;
        }
        if self.param.as_deref() == Some("stream") {
            return true;
        }
        let message = self.message.to_ascii_lowercase();
        ["when stream=true", "to stream this model"]
            .iter()
            .any(|words| message.contains(words) && !request_says(sent, words))
    }

    pub fn new(class: FailureClass, message: impl Into<String>) -> Failure {
        Failure {
            class,
            status: None,
            retry_after: None,
            message: message.into(),
            blame: Blame::Deployment,
            quota: false,
            quota_words: None,
            param: None,
        }
    }

    /// This failure, unless it is a quota failure only because the upstream's message
    /// says words the request itself sent (a field's name or a message's text, as many
    /// providers quote an unknown field back in a 400): a client must not be able to cool a
    /// deployment every tenant shares by naming a field "exceeded your current quota". Then
    /// it is what the status says without those words, a bad request.
    pub fn unless_echoed(mut self, sent: &[u8]) -> Failure {
        let Some(words) = self.quota_words else {
            return self;
        };
        if request_says(sent, words) {
            self.class = FailureClass::BadRequest;
            self.quota = false;
            self.quota_words = None;
        }
        self
    }

    /// Whether a retry in the group must go to a deployment this request has not tried in
    /// the group yet, never to the same one again: an `auth` failure (a key can be bad on
    /// one deployment and good on another, LiteLLM's reason to retry it) and a quota or
    /// billing failure (an empty account stays empty). None left: the group gives up.
    pub fn retry_elsewhere_only(&self) -> bool {
        self.quota || self.class == FailureClass::Auth
    }

    /// Status the client sees if this failure ends the request.
    ///
    /// An upstream's 401/403/404 says the *gateway's* credentials or model name are wrong,
    /// not the client's: the client gets a 502 it can tell from a refusal of its own key.
    /// A local resource error is the gateway's own trouble: 503.
    pub fn client_status(&self) -> u16 {
        match self.blame {
            Blame::LocalResource => return 503,
            Blame::RequestedModel => return 404,
            Blame::Deployment | Blame::RequestTimeout => {}
        }
        match self.class {
            FailureClass::Auth | FailureClass::NotFound => 502,
            // The upstream's 499 (it cancelled the call) would read, to a client, as its own
            // request closed: the gateway failed to get an answer.
            _ if self.status == Some(499) => 502,
            // Groq's 498 (flex tier at capacity) is no status a client knows: the
            // overload it is, as OpenAI says its own.
            _ if self.status == Some(498) => 503,
            _ => match self.status {
                Some(s) if (400..=599).contains(&s) => s,
                _ => self.class.default_status(),
            },
        }
    }

    /// OpenAI's error `type` for the client (see [`Failure::client_status`]).
    pub fn client_error_type(&self) -> &'static str {
        match (self.blame, self.class) {
            (Blame::LocalResource, _) => "api_error",
            (Blame::RequestedModel, _) => "invalid_request_error",
            _ => self.class.error_type(),
        }
    }

    /// OpenAI's error `code` for the client. An empty account is `insufficient_quota`, as
    /// OpenAI says it: clients give up on that code and wait out any other rate limit.
    pub fn client_error_code(&self) -> Option<&'static str> {
        match (self.blame, self.class) {
            (Blame::LocalResource, _) => Some(GATEWAY_OVERLOADED),
            (Blame::RequestedModel, _) => Some("model_not_found"),
            (_, FailureClass::RateLimited) if self.quota => Some("insufficient_quota"),
            _ => self.class.error_code(),
        }
    }
}

/// Classifies what the upstream did. `now` (wall clock) is only used to turn a Retry-After
/// HTTP-date into a delay when the response carries no `Date` header.
pub fn classify(signal: Signal<'_>, now: SystemTime) -> Failure {
    match signal {
        Signal::Status {
            status,
            headers,
            body,
        } => {
            let body = crate::charset::without_byte_order_mark(body);
            let parsed: Option<Value> = serde_json::from_slice(body)
                .ok()
                .or_else(|| first_event_object(body));
            let err = parsed.as_ref().map(error_object);
            let hints = err.map(ErrorHints::of).unwrap_or_default();
            let class = class_of(Some(status), &hints);
            let quota = is_quota(class, Some(status), &hints);
            let retry_after = retry_after(headers, now).or(hints.retry_after);
            let redirect = (300..=399).contains(&status).then(|| {
                format!(
                    "upstream answered with a redirect (HTTP {status}), which Switchback does \
                     not follow: set the deployment's api_base to the address the API is at"
                )
            });
            let message = redirect
                .or_else(|| hints.message.clone())
                .unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                        .trim()
                        .to_string();
                    if text.is_empty() {
                        format!("upstream returned HTTP {status}")
                    } else {
                        text
                    }
                });
            Failure {
                class,
                status: Some(status),
                retry_after,
                message,
                blame: Blame::Deployment,
                quota,
                quota_words: quota.then(|| quota_words(Some(status), &hints)).flatten(),
                param: hints.param.clone(),
            }
        }
        Signal::ErrorEvent { error } => {
            let hints = ErrorHints::of(error_object(error));
            let status = hints.numeric_code;
            let class = match (status, class_of(status, &hints)) {
                // An error event with no recognisable status or type is the server's fault.
                (None, FailureClass::BadRequest) => FailureClass::Transient,
                (_, c) => c,
            };
            let quota = is_quota(class, status, &hints);
            Failure {
                class,
                status,
                retry_after: hints.retry_after,
                quota,
                quota_words: quota.then(|| quota_words(status, &hints)).flatten(),
                param: hints.param.clone(),
                message: hints
                    .message
                    .unwrap_or_else(|| "upstream sent an error event".into()),
                blame: Blame::Deployment,
            }
        }
        Signal::ContentFiltered => Failure::new(
            FailureClass::ContentPolicy,
            "upstream stopped the answer with finish_reason: content_filter",
        ),
        Signal::Transport(fault) => {
            let mut f = Failure::new(
                FailureClass::Transient,
                match fault {
                    TransportFault::ConnectRefused => "connection refused by upstream",
                    TransportFault::ConnectFailed => "could not connect to upstream",
                    TransportFault::Tls => "the TLS handshake with upstream failed",
                    TransportFault::LocalResource => {
                        "the gateway is out of local resources (file descriptors, memory or \
                         ports) and could not open a connection"
                    }
                    TransportFault::Reset => "upstream connection broke mid-response",
                },
            );
            if fault == TransportFault::LocalResource {
                f.blame = Blame::LocalResource;
            }
            f
        }
        Signal::Timeout(kind) => Failure::new(
            FailureClass::Timeout,
            format!("upstream timed out ({} timeout)", kind.as_str()),
        ),
        Signal::Malformed => Failure::new(
            FailureClass::Malformed,
            "upstream sent a malformed response",
        ),
    }
}

/// The first event of an error body written as an event stream, when it holds a JSON
/// object: a LiteLLM proxy whose provider failed on the first read of a stream answers with
/// the error's status but writes the error as an SSE event
/// (`proxy/common_request_processing.py`, `create_streaming_response`). Text that is no
/// event stream (a proxy's HTML, `Bad Gateway`) has no `data` field, and gives none.
fn first_event_object(body: &[u8]) -> Option<Value> {
    let mut parser = crate::upstream::sse::SseParser::new(body.len() + 2);
    let mut events = Vec::new();
    parser.push(body, &mut events).ok()?;
    // The body's end ends its last event, blank line or not.
    parser.push(b"\n\n", &mut events).ok()?;
    events.iter().find_map(|e| {
        serde_json::from_str::<Value>(&e.data)
            .ok()
            .filter(Value::is_object)
    })
}

/// The error object inside a body: `{"error": {...}}` (OpenAI, OpenRouter, Anthropic's
/// `{"type": "error", "error": {...}}`), `[{"error": {...}}]` (Vertex), or the value itself.
fn error_object(v: &Value) -> &Value {
    let v = match v {
        Value::Array(items) if !items.is_empty() => &items[0],
        other => other,
    };
    v.get("error").unwrap_or(v)
}

/// What an error object says, normalised.
#[derive(Debug, Default, Clone)]
struct ErrorHints {
    /// Lower-cased `type`, `code` (when a string) and `status` values.
    tags: Vec<String>,
    numeric_code: Option<u16>,
    message: Option<String>,
    /// What the error a proxy passed on says (OpenRouter's `metadata.raw`): its message,
    /// never shown to the client (the proxy's own message is), and its lower-cased tags.
    /// Read only for the classes that cool nothing, context window and content policy:
    /// the proxy's own status and tags decide whether the proxy itself failed.
    passed_on: Option<String>,
    passed_on_tags: Vec<String>,
    /// `param`: the request field the upstream found fault with.
    param: Option<String>,
    retry_after: Option<Duration>,
}

/// The longest `param` passed on: OpenAI's name a field (`messages`, `tools[0].function.name`).
const MAX_PARAM_BYTES: usize = 256;

/// Whether an upstream's `param` reads as the path of a request field, the only thing it is
/// passed on to the client as. Free text there (an upstream echoing its headers, its key) is
/// dropped rather than trusted to the redactor.
fn is_field_path(param: &str) -> bool {
    !param.is_empty()
        && param.len() <= MAX_PARAM_BYTES
        && param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-[]".contains(&b))
}

impl ErrorHints {
    /// What `err` says, and what the provider's error it passed on says: OpenRouter's
    /// "Provider returned error" carries the provider's whole error body as a string in
    /// `metadata.raw`, and only that says whether it was a context window, a moderation
    /// refusal. One level only: the passed-on error is not read for errors it passed on.
    fn of(err: &Value) -> ErrorHints {
        let mut hints = ErrorHints::own(err);
        let passed_on = err
            .get("metadata")
            .and_then(|m| m.get("raw"))
            .and_then(Value::as_str)
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok());
        if let Some(raw) = passed_on {
            let inner = ErrorHints::own(error_object(&raw));
            hints.passed_on_tags = inner.tags;
            hints.passed_on = inner.message;
        }
        hints
    }

    fn own(err: &Value) -> ErrorHints {
        let mut hints = ErrorHints::default();
        for field in ["type", "code", "status"] {
            match err.get(field) {
                Some(Value::String(s)) => {
                    if let Ok(n) = s.parse::<u16>() {
                        hints.numeric_code.get_or_insert(n);
                    }
                    hints.tags.push(s.to_ascii_lowercase());
                }
                Some(Value::Number(n)) => {
                    if let Some(n) = n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                        hints.numeric_code.get_or_insert(n);
                    }
                }
                _ => {}
            }
        }
        // Google's structured reasons (`details: [{"@type": ".../ErrorInfo", "reason":
        // "API_KEY_INVALID"}]`): the provider's own word, which no request can put there.
        if let Some(details) = err.get("details").and_then(Value::as_array) {
            hints.tags.extend(
                details
                    .iter()
                    .filter_map(|d| d.get("reason")?.as_str())
                    .map(str::to_ascii_lowercase),
            );
        }
        hints.param = err
            .get("param")
            .and_then(Value::as_str)
            .filter(|p| is_field_path(p))
            .map(str::to_string);
        hints.message = match err {
            // `{"error": "..."}`: the error is its message.
            Value::String(message) => Some(message.clone()),
            _ => err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        // Switchback's own convention for error events, and Vertex's RetryInfo detail.
        hints.retry_after = err
            .get("retry_after")
            .and_then(Value::as_f64)
            .and_then(duration_from_secs)
            .or_else(|| {
                err.get("details")?.as_array()?.iter().find_map(|d| {
                    let delay = d.get("retryDelay")?.as_str()?;
                    duration_from_secs(delay.strip_suffix('s')?.parse().ok()?)
                })
            });
        hints
    }

    fn has_tag(&self, any: &[&str]) -> bool {
        self.tags.iter().any(|t| any.contains(&t.as_str()))
    }

    fn message_mentions(&self, any: &[&'static str]) -> bool {
        self.mention_of(any).is_some()
    }

    /// The first of `any` the message says.
    fn mention_of(&self, any: &[&'static str]) -> Option<&'static str> {
        let m = self.message.as_ref()?.to_ascii_lowercase();
        any.iter().copied().find(|p| m.contains(p))
    }

    /// Whether this error, or the one it passed on (when `read_passed_on`), says it with a
    /// tag of `tags` or one of the `phrases`: only for the classes that cool nothing (see
    /// `passed_on`).
    fn says(&self, tags: &[&str], phrases: &[&'static str], read_passed_on: bool) -> bool {
        let passed_on = || {
            self.passed_on_tags
                .iter()
                .any(|t| tags.contains(&t.as_str()))
                || self.passed_on.as_ref().is_some_and(|m| {
                    let m = m.to_ascii_lowercase();
                    phrases.iter().any(|p| m.contains(p))
                })
        };
        self.has_tag(tags) || self.message_mentions(phrases) || read_passed_on && passed_on()
    }

    /// The one-request-over-the-whole-TPM wording (see `class_of`), here or passed on
    /// (when `read_passed_on`).
    fn says_request_over_tpm(&self, read_passed_on: bool) -> bool {
        let says = |m: &Option<String>| {
            m.as_ref().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("request too large for") && m.contains("tokens per min")
            })
        };
        says(&self.message) || read_passed_on && says(&self.passed_on)
    }
}

const RATE_LIMIT_TAGS: &[&str] = &[
    "rate_limit_error",
    "rate_limit_exceeded",
    "insufficient_quota",
    "resource_exhausted",
    "quota_exceeded",
    "too_many_requests",
];
const CONTEXT_TAGS: &[&str] = &[
    "context_length_exceeded",
    "context_window_exceeded",
    "string_above_max_length",
    // llama.cpp's server.
    "exceed_context_size_error",
    // GitHub Models and Azure AI Inference, as a 413 ("Request body too large for gpt-4o
    // model. Max size: 8000 tokens.").
    "tokens_limit_reached",
];
const CONTEXT_PHRASES: &[&str] = &[
    "context length",
    "context window",
    "maximum context",
    "context_length_exceeded",
    "too many tokens",
    "prompt is too long",
    "input is too long",
    "exceeds the maximum number of tokens",
    "reduce the length of the messages",
    // vLLM ("... is longer than the maximum model length of 8192"), llama.cpp.
    "maximum model length",
    "exceeds the available context size",
    // Anthropic, when the input and `max_tokens` together pass the window ("input length
    // and `max_tokens` exceed context limit: 199759 + 8192 > 200000"); LiteLLM reads it so.
    "exceed context limit",
    // xAI ("This model's maximum prompt length is 131072 but the request contains ...").
    "maximum prompt length",
    // Hugging Face's TGI, as a 422 ("Input validation error: `inputs` tokens +
    // `max_new_tokens` must be <= 4096", "`inputs` must have less than 4096 tokens").
    "`max_new_tokens` must be <=",
    "`inputs` must have less than",
];
const CONTENT_TAGS: &[&str] = &[
    // OpenAI's moderation refusing a reasoning model's prompt.
    "invalid_prompt",
    "content_filter",
    "content_policy_violation",
    "safety",
    "content_filtered",
];
const CONTENT_PHRASES: &[&str] = &[
    "content management policy",
    "content policy",
    "content filter",
    "safety system",
    "flagged by",
    "usage policy",
    // OpenRouter's moderation, sent as a 403 ("... requires moderation on Amazon Bedrock.
    // Your input was flagged for ..."): the prompt's problem, not the key's.
    "requires moderation",
    "your input was flagged",
    // DeepSeek's moderation, a 400 whose type and code say only `invalid_request_error`.
    "content exists risk",
];
/// A 404 that names the request's parameters, not the model: OpenRouter's "No endpoints
/// found that support tool use" when `tools` go to a model without them. Read as the
/// model's absence it cooled a shared deployment for one request's choice of parameters.
const UNSUPPORTED_REQUEST_PHRASES: &[&str] = &[
    "no endpoints found that support",
    "no endpoints found that can handle",
];
/// A bad key in a provider's structured reason, whatever the status: Gemini sends one as
/// a 400 `INVALID_ARGUMENT` with `details: [{"reason": "API_KEY_INVALID"}]`.
const AUTH_TAGS: &[&str] = &["api_key_invalid"];
/// Gemini's refusal of the caller's region or of a free tier without billing, a 400
/// `FAILED_PRECONDITION`: the deployment's account cannot serve anyone from here. Read as
/// the client's bad request, every request weighted onto such a deployment failed, where
/// another deployment or a fallback would have served it. Only in these words: Google also
/// says `FAILED_PRECONDITION` of a request's own state (a file still being processed).
const ACCOUNT_REFUSED_PHRASES: &[&str] = &[
    "user location is not supported",
    "not available in your country",
];
/// Billing and credit errors that providers send as a 400 (or 402), not a 429: Anthropic's
/// "Your credit balance is too low to access the Anthropic API", OpenAI's
/// `billing_hard_limit_reached`, OpenRouter's "Insufficient credits".
const BILLING_TAGS: &[&str] = &[
    "billing_hard_limit_reached",
    "billing_not_active",
    "insufficient_credits",
    "credit_balance_too_low",
    "payment_required",
];
/// Whole provider wordings, not single words: "billing" alone is also the name of a field
/// a 400 quotes back ("Unrecognized request argument supplied: billing_info").
const BILLING_PHRASES: &[&str] = &[
    "credit balance is too low",
    "insufficient credit",
    "insufficient_credits",
    "out of credits",
    "exceeded your current quota",
];
const OVERLOADED_TAGS: &[&str] = &[
    "overloaded_error",
    "unavailable",
    "internal",
    "server_error",
    "api_error",
];

fn class_of(status: Option<u16>, h: &ErrorHints) -> FailureClass {
    // OpenAI's 429 for one request larger than the organisation's whole tokens-per-minute
    // ("Request too large for gpt-4o ... on tokens per min (TPM): Limit 30000, Requested
    // 48211. The input or output tokens must be reduced"): no wait mends it, and it says
    // nothing of the deployment's load. Read as a rate limit, one tenant's prompt cooled
    // every deployment it was retried on; like a context window, it goes where a larger
    // request fits (`context_window_fallbacks`, else `fallbacks`), cooling nothing.
    // Groq sends the same case as a 413 ("... on tokens per minute (TPM): Limit 6000,
    // Requested 14368"), tagged `rate_limit_exceeded` like OpenAI's, and OpenRouter passes
    // it on under a 400.
    // What a proxy passes on is read only where its own status says the request failed,
    // not the proxy: never under its own 401/402/403/404/429, which stay its own failures.
    let passed_on = matches!(status, Some(400 | 413 | 422) | None);
    if matches!(status, Some(400..=499) | None) && h.says_request_over_tpm(passed_on) {
        return FailureClass::ContextWindow;
    }
    if status == Some(429) || h.has_tag(RATE_LIMIT_TAGS) {
        return FailureClass::RateLimited;
    }
    let client_error = matches!(status, Some(400..=499));
    if (client_error || status.is_none()) && h.says(CONTEXT_TAGS, CONTEXT_PHRASES, passed_on) {
        return FailureClass::ContextWindow;
    }
    if (client_error || status.is_none()) && h.says(CONTENT_TAGS, CONTENT_PHRASES, passed_on) {
        return FailureClass::ContentPolicy;
    }
    // A billing or credit error is a quota failure whatever its 4xx status. LiteLLM 1.83.0
    // has no such rule (`litellm_core_utils/exception_mapping_utils.py`, `exception_type`,
    // maps any 400 to `BadRequestError`); issue 17 and the README's differences list say
    // why Switchback cools it (an empty account fails every request until it is topped up).
    if matches!(status, Some(400 | 402) | None) && is_billing(status, h) {
        return FailureClass::RateLimited;
    }
    if client_error
        && (h.has_tag(AUTH_TAGS)
            || h.has_tag(&["failed_precondition"]) && h.message_mentions(ACCOUNT_REFUSED_PHRASES))
    {
        return FailureClass::Auth;
    }
    match status {
        Some(401 | 403) => FailureClass::Auth,
        Some(404) if h.message_mentions(UNSUPPORTED_REQUEST_PHRASES) => FailureClass::BadRequest,
        Some(404) => FailureClass::NotFound,
        Some(408) => FailureClass::Timeout,
        // A redirect: the deployment's `api_base` is not where the API is (http:// behind
        // an ingress that sends https://). Every retry gets the same answer; like a 404 it
        // is the deployment's configuration. Not followed: a hop to another origin would
        // carry the deployment's key there.
        Some(300..=399) => FailureClass::NotFound,
        // Gemini and Vertex's `CANCELLED` under load (and a proxy's "client closed
        // request"): the server gave up on the call, not on the request. Groq's 498: its
        // flex tier is at capacity, "try again later".
        Some(498 | 499) => FailureClass::Transient,
        Some(500..=599) => FailureClass::Transient,
        Some(400..=499) => FailureClass::BadRequest,
        _ if h.has_tag(OVERLOADED_TAGS) => FailureClass::Transient,
        Some(_) => FailureClass::Transient,
        None => FailureClass::BadRequest,
    }
}

fn is_billing(status: Option<u16>, h: &ErrorHints) -> bool {
    status == Some(402) || h.has_tag(BILLING_TAGS) || h.message_mentions(BILLING_PHRASES)
}

/// The billing phrase that alone makes a quota failure: none when the status or a tag says
/// so (the provider's own structured word, which no request can put there).
fn quota_words(status: Option<u16>, h: &ErrorHints) -> Option<&'static str> {
    if status == Some(402) || h.has_tag(BILLING_TAGS) || h.has_tag(RATE_LIMIT_TAGS) {
        return None;
    }
    h.mention_of(BILLING_PHRASES)
}

/// Whether any key or string in `v` contains `words` (lowercase), ASCII case aside.
/// Whether the request `sent` says `words` (lower case) anywhere, a field's name included,
/// as the upstream read it: JSON escapes decoded, so that `\u0062illing` is the same words.
fn request_says(sent: &[u8], words: &str) -> bool {
    match serde_json::from_slice::<Value>(sent) {
        Ok(v) => mentions(&v, words),
        Err(_) => String::from_utf8_lossy(sent)
            .to_ascii_lowercase()
            .contains(words),
    }
}

fn mentions(v: &Value, words: &str) -> bool {
    let has = |s: &str| s.to_ascii_lowercase().contains(words);
    match v {
        Value::String(s) => has(s),
        Value::Array(a) => a.iter().any(|v| mentions(v, words)),
        Value::Object(o) => o.iter().any(|(k, v)| has(k) || mentions(v, words)),
        _ => false,
    }
}

/// A rate-limited failure that is no 429: a quota or billing error (`insufficient_quota`
/// sent as a 400, a credit balance too low). See [`Failure::quota`].
fn is_quota(class: FailureClass, status: Option<u16>, h: &ErrorHints) -> bool {
    if class != FailureClass::RateLimited {
        return false;
    }
    if status == Some(429) {
        // OpenAI sends an empty account as a 429 `insufficient_quota`: waiting does not
        // mend it, where it mends a rate limit or Google's per-minute `RESOURCE_EXHAUSTED`.
        return h.has_tag(&["insufficient_quota"]);
    }
    matches!(status, Some(400..=499)) || is_billing(status, h)
}

/// Longest Retry-After read as such (ten years); anything longer, a date in the year 9999
/// included, reads as this. The engine caps it again, much lower, with `limits.max_cooldown`
/// and `limits.max_retry_after`: a longer wait asked for must never turn into a *shorter*
/// one (dropping an out-of-range value would fall back to `cooldown_time`).
/// The error `code` of a request the gateway could not serve for want of its own
/// resources (file descriptors, memory, ports): its overload, not its upstreams'.
pub const GATEWAY_OVERLOADED: &str = "gateway_overloaded";

pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(10 * 365 * 86_400);

fn duration_from_secs(s: f64) -> Option<Duration> {
    if !s.is_finite() || s < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        s.min(RETRY_AFTER_CEILING.as_secs_f64()),
    ))
}

/// Retry-After from headers: `retry-after-ms` (milliseconds) first, then `retry-after` as
/// seconds or an HTTP-date. A date is measured against the response's own `Date` header
/// when present (so the delay does not depend on clock skew), else against `now`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // A number that is no duration (negative, NaN) is as good as absent.
    let ms = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok());
    if let Some(wait) = ms.and_then(|ms| duration_from_secs(ms / 1000.0)) {
        return Some(wait);
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return duration_from_secs(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let reference = text("date")
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);
    Some(
        at.duration_since(reference)
            .unwrap_or(Duration::ZERO)
            .min(RETRY_AFTER_CEILING),
    )
}

#[cfg(test)]
mod tests {

    /// OpenAI refuses streaming, not the request, for o3 and gpt-5 in an organisation not
    /// verified, and for audio output but pcm16; any other 400 is the request's.
    #[test]
    fn a_400_that_refuses_streaming_is_told_apart() {
        let status = |body: &str| {
            classify(
                Signal::Status {
                    status: 400,
                    headers: &HeaderMap::new(),
                    body: body.as_bytes(),
                },
                SystemTime::UNIX_EPOCH,
            )
        };
        for refusal in [
            r#"{"error":{"message":"Your organization must be verified to stream this model. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization.","type":"invalid_request_error","param":"stream","code":"unsupported_value"}}"#,
            r#"{"error":{"message":"Unsupported value: 'audio.format' does not support 'wav' when stream=true. Supported values are: 'pcm16'.","type":"invalid_request_error","param":"audio.format","code":"unsupported_value"}}"#,
        ] {
            assert!(status(refusal).refuses_streaming(b"{}"), "{refusal}");
        }
        for other in [
            r#"{"error":{"message":"Invalid value for 'max_tokens'","type":"invalid_request_error","param":"max_tokens","code":null}}"#,
            r#"{"error":{"message":"'messages' must contain the word 'json'","type":"invalid_request_error","param":"messages","code":null}}"#,
        ] {
            assert!(!status(other).refuses_streaming(b"{}"), "{other}");
        }
        // A provider quoting the client's own field back says the words, not a refusal; a
        // `param: "stream"` is one whatever the request said.
        let sent = br#"{"model":"o3","stream":true,"when stream\u003dtrue":1}"#;
        let echo = r#"{"error":{"message":"Unrecognized request argument supplied: when stream=true","type":"invalid_request_error","param":null,"code":null}}"#;
        assert!(status(echo).refuses_streaming(b"{}"), "the words alone");
        assert!(!status(echo).refuses_streaming(sent), "{echo}");
        let verified = r#"{"error":{"message":"Your organization must be verified to stream this model.","type":"invalid_request_error","param":"stream","code":"unsupported_value"}}"#;
        assert!(status(verified).refuses_streaming(sent), "{verified}");
    }
    use super::*;
    use http::HeaderValue;

    /// A LiteLLM proxy upstream whose provider failed on the first read answers with the
    /// error's status but writes the error as an SSE event (`text/event-stream`): it is
    /// read as the error it is (a context-window error, here, for its fallbacks), and its
    /// message is the error's, not `data: {...` (a 400 refused as a bad request before).
    #[test]
    fn an_error_written_as_an_sse_event_is_read_as_its_error() {
        let body = "data: {\"error\": {\"message\": \"litellm.ContextWindowExceededError: AnthropicException - prompt is too long: 215000 tokens > 200000 maximum\", \"type\": null, \"param\": null, \"code\": \"400\"}}\n\n";
        let f = status_h(
            400,
            &[("content-type", "text/event-stream; charset=utf-8")],
            body,
        );
        assert_eq!(f.class, FailureClass::ContextWindow, "{f:?}");
        assert!(
            f.message.starts_with("litellm.ContextWindow"),
            "{}",
            f.message
        );
        // Without the blank line that ends the event, and after a comment.
        let quota = ": ping\r\ndata: {\"error\": {\"message\": \"You exceeded your current quota\", \"type\": \"insufficient_quota\", \"code\": \"429\"}}";
        let f = status(429, quota);
        assert_eq!(f.message, "You exceeded your current quota", "{f:?}");
        assert!(f.quota, "{f:?}");
        // Text that is no event stream is still its own first 200 bytes.
        assert_eq!(status(502, "Bad Gateway").message, "Bad Gateway");
    }

    fn status(code: u16, body: &str) -> Failure {
        status_h(code, &[], body)
    }

    fn status_h(code: u16, headers: &[(&'static str, &str)], body: &str) -> Failure {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        classify(
            Signal::Status {
                status: code,
                headers: &h,
                body: body.as_bytes(),
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    /// Real providers' answers that the status alone misreads (found by review). Each one
    /// either cooled a shared deployment for a request's own problem, or kept calling a
    /// deployment that cannot serve.
    #[test]
    fn provider_answers_the_status_alone_misreads() {
        // OpenRouter's moderation refusal comes as a 403: the prompt's problem, not the key's.
        let f = status(
            403,
            r#"{"error":{"message":"anthropic/claude-3-5-haiku requires moderation on Amazon Bedrock. Your input was flagged for \"self-harm/intent\". No credits were charged.","code":403,"metadata":{"reasons":["self-harm/intent"],"flagged_input":"...","provider_name":"Amazon Bedrock","model_slug":"anthropic/claude-3-5-haiku"}}}"#,
        );
        assert_eq!(f.class, FailureClass::ContentPolicy, "{f:?}");
        // OpenRouter's 404 when no provider of the model takes the request's parameters
        // (`tools` to a model without tool use): the request's problem.
        for message in [
            "No endpoints found that support tool use. To learn more about provider routing, visit: https://openrouter.ai/docs/provider-routing",
            "No endpoints found that can handle the requested parameters.",
        ] {
            let body = serde_json::json!({"error": {"message": message, "code": 404}}).to_string();
            let f = status(404, &body);
            assert_eq!(f.class, FailureClass::BadRequest, "{message}");
        }
        // ...where a model OpenRouter does not have at all is the deployment's.
        let f = status(
            404,
            r#"{"error":{"message":"No endpoints found for nonexistent/model.","code":404}}"#,
        );
        assert_eq!(f.class, FailureClass::NotFound);
        // Gemini sends a bad key as a 400 INVALID_ARGUMENT, its reason in `details`.
        let f = status(
            400,
            r#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}]"#,
        );
        assert_eq!(f.class, FailureClass::Auth, "{f:?}");
        assert_eq!(
            f.client_status(),
            502,
            "the gateway's key, not the client's"
        );
        // Gemini and Vertex under load: 499 CANCELLED is the server's, and passes.
        let f = status(
            499,
            r#"[{"error":{"code":499,"message":"The operation was cancelled.","errors":[{"message":"The operation was cancelled.","domain":"global","reason":"backendError"}],"status":"CANCELLED"}}]"#,
        );
        assert_eq!(f.class, FailureClass::Transient, "{f:?}");
        assert_eq!(
            f.client_status(),
            502,
            "a 499 is no status to hand a client"
        );
        // OpenAI's empty account is a 429 `insufficient_quota`: waiting does not mend it,
        // so it is retried only on another deployment, as a 400 quota error is.
        let f = status(
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        );
        assert_eq!((f.class, f.quota), (FailureClass::RateLimited, true));
        assert!(f.retry_elsewhere_only());
        assert_eq!(f.client_status(), 429);
        // OpenAI's 429 for one request larger than the organisation's tokens-per-minute:
        // no wait mends it, and it says nothing of the deployment's load. As a rate limit it
        // cooled every deployment it was retried on, for every tenant, for one prompt.
        let f = status(
            429,
            r#"{"error":{"message":"Request too large for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Requested 48211. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(f.class, FailureClass::ContextWindow, "{f:?}");
        assert_eq!(
            f.client_status(),
            429,
            "the client sees OpenAI's own status"
        );
        // ...where the same organisation's ordinary TPM limit is a rate limit.
        let f = status(
            429,
            r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29500, Requested 900. Please try again in 0.8s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(f.class, FailureClass::RateLimited);
    }

    /// Wordings of real providers that read as the client's bad request, or as an empty
    /// account, where they say something else.
    #[test]
    fn provider_wordings_read_for_what_they_say() {
        // Groq sends a request larger than the whole tokens-per-minute limit as a 413
        // tagged `rate_limit_exceeded`: the same case as OpenAI's 429, one prompt too big,
        // which must cool no deployment (as an empty account it cooled every Groq
        // deployment of the group for every tenant).
        let f = status(
            413,
            r#"{"error":{"message":"Request too large for model `llama-3.3-70b-versatile` in organization `org_01` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 14368, please reduce your message size and try again. Visit https://console.groq.com/docs/rate-limits for more information.","type":"tokens","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            (f.class, f.quota),
            (FailureClass::ContextWindow, false),
            "{f:?}"
        );
        assert_eq!(f.client_status(), 413);
        // Gemini refusing the gateway's region, or a free tier where billing is off: the
        // deployment's account cannot serve anyone from here, whatever the request.
        for message in [
            "User location is not supported for the API use.",
            "Gemini API free tier is not available in your country. Please enable billing on your project in Google AI Studio.",
        ] {
            let body = serde_json::json!([{"error": {"code": 400, "message": message, "status": "FAILED_PRECONDITION"}}]).to_string();
            let f = status(400, &body);
            assert_eq!(f.class, FailureClass::Auth, "{message}");
            assert!(f.retry_elsewhere_only());
            assert_eq!(
                f.client_status(),
                502,
                "the gateway's account, not the client's"
            );
        }
        // DeepSeek's moderation refusal.
        let f = status(
            400,
            r#"{"error":{"message":"Content Exists Risk","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
        );
        assert_eq!(f.class, FailureClass::ContentPolicy);
        // Context overflows in the words of Hugging Face's TGI (and providers serving it)
        // and of GitHub Models / Azure AI Inference.
        for (code, body) in [
            (
                422,
                r#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`","error_type":"validation"}"#,
            ),
            (
                422,
                r#"{"error":"Input validation error: `inputs` must have less than 4096 tokens. Given: 5000","error_type":"validation"}"#,
            ),
            (
                413,
                r#"{"error":{"code":"tokens_limit_reached","message":"Request body too large for gpt-4o model. Max size: 8000 tokens.","details":null}}"#,
            ),
        ] {
            assert_eq!(
                status(code, body).class,
                FailureClass::ContextWindow,
                "{body}"
            );
        }
        // OpenRouter passing a provider's error on: the provider's own words are in
        // `metadata.raw`, the message only says that there was one.
        let raw = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}).to_string();
        let body = serde_json::json!({"error": {"message": "Provider returned error", "code": 400, "metadata": {"raw": raw, "provider_name": "Anthropic"}}}).to_string();
        assert_eq!(status(400, &body).class, FailureClass::ContextWindow);
        let body = serde_json::json!({"error": {"message": "Provider returned error", "code": 400, "metadata": {"raw": "User location is not supported for the API use.", "provider_name": "Google AI Studio"}}}).to_string();
        assert_eq!(
            status(400, &body).class,
            FailureClass::BadRequest,
            "no structured word, no reading"
        );
        // What OpenRouter passes on only ever makes a class that cools nothing: Groq's TPM
        // refusal passed on under a 400 is the context window it is, never an empty account
        // of OpenRouter's; a provider's rate limit, precondition or billing error passed on
        // under a 400 stays OpenRouter's bad request.
        let groq = r#"{"error":{"message":"Request too large for model `llama-3.3-70b-versatile` in organization `org_01` on tokens per minute (TPM): Limit 6000, Requested 14368.","type":"tokens","code":"rate_limit_exceeded"}}"#;
        let body = serde_json::json!({"error": {"message": "Provider returned error", "code": 400, "metadata": {"raw": groq, "provider_name": "Groq"}}}).to_string();
        let f = status(400, &body);
        assert_eq!(
            (f.class, f.quota),
            (FailureClass::ContextWindow, false),
            "{f:?}"
        );
        for raw in [
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
            r#"[{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}]"#,
            r#"{"error":{"message":"Your credit balance is too low to access the Anthropic API.","type":"invalid_request_error"}}"#,
        ] {
            let body = serde_json::json!({"error": {"message": "Provider returned error", "code": 400, "metadata": {"raw": raw}}}).to_string();
            let f = status(400, &body);
            assert_eq!(
                (f.class, f.quota),
                (FailureClass::BadRequest, false),
                "{raw}"
            );
        }
        // ...and what it passes on never undoes the proxy's own word for its own failure:
        // its bad key, its missing route, its empty account stay its own, and cool it.
        let raw = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        for (code, class) in [
            (401, FailureClass::Auth),
            (403, FailureClass::Auth),
            (404, FailureClass::NotFound),
            (402, FailureClass::RateLimited),
        ] {
            let body = serde_json::json!({"error": {"message": "Provider returned error", "code": code, "metadata": {"raw": raw}}}).to_string();
            assert_eq!(status(code, &body).class, class, "{code}");
        }
        // Google's FAILED_PRECONDITION is also a request's own state (a file the user
        // uploaded, still being processed): only the refusal of the account is the
        // deployment's.
        let body = r#"[{"error":{"code":400,"message":"The File abc123 is not in an ACTIVE state and usage is not allowed.","status":"FAILED_PRECONDITION"}}]"#;
        assert_eq!(status(400, body).class, FailureClass::BadRequest);
        // Groq's 498: its flex tier is at capacity, "try again later". Not a status to hand
        // a client.
        let f = status(
            498,
            r#"{"error":{"message":"Flex tier capacity exceeded. This model is currently at capacity for the flex tier, please try again later.","type":"invalid_request_error","code":"capacity_exceeded"}}"#,
        );
        assert_eq!(f.class, FailureClass::Transient, "{f:?}");
        assert_eq!(f.client_status(), 503);
    }

    /// OpenAI's moderation refusal of a reasoning model's prompt is a content-policy
    /// failure (LiteLLM maps "Invalid prompt" with "violating our usage policy" the same).
    #[test]
    fn openai_invalid_prompt_is_content_policy() {
        let f = status(
            400,
            r#"{"error":{"message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}"#,
        );
        assert_eq!(f.class, FailureClass::ContentPolicy);
    }

    /// vLLM's and llama.cpp's words for a prompt over the context window.
    #[test]
    fn vllm_and_llama_cpp_context_overflows_are_context_window() {
        for body in [
            r#"{"object":"error","message":"The decoder prompt (length 8825) is longer than the maximum model length of 8192. Make sure that `max_model_len` is no smaller than the number of text tokens.","type":"BadRequestError","param":null,"code":400}"#,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}}"#,
        ] {
            assert_eq!(
                status(400, body).class,
                FailureClass::ContextWindow,
                "{body}"
            );
        }
    }

    /// A retry-after-ms that is a number but no duration (negative, NaN) is not there: the
    /// `retry-after` beside it still counts.
    #[test]
    fn an_unusable_retry_after_ms_leaves_retry_after() {
        for ms in ["-1", "NaN", "inf"] {
            assert_eq!(
                status_h(429, &[("retry-after-ms", ms), ("retry-after", "9")], "").retry_after,
                Some(Duration::from_secs(9)),
                "{ms}"
            );
        }
    }

    /// `{"error": "..."}`: an error that is only its message (some proxies, LiteLLM's own
    /// older events) is read like one with a `message`.
    #[test]
    fn an_error_that_is_a_string_is_its_message() {
        let f = status(
            400,
            r#"{"error":"This model's maximum context length is 8192 tokens"}"#,
        );
        assert_eq!(f.class, FailureClass::ContextWindow);
        let event = serde_json::json!({"error": "Your credit balance is too low"});
        assert_eq!(
            classify(Signal::ErrorEvent { error: &event }, SystemTime::UNIX_EPOCH).class,
            FailureClass::RateLimited
        );
    }

    #[test]
    fn decision_table_rows() {
        use CoolDown::*;
        use FallbackRoute::*;
        let row = |c: FailureClass| {
            let a = c.actions(false);
            (a.retry, a.fallback, a.cool_down)
        };
        assert_eq!(row(FailureClass::RateLimited), (true, Generic, Immediately));
        assert_eq!(
            row(FailureClass::Transient),
            (true, Generic, AfterAllowedFails)
        );
        assert_eq!(
            row(FailureClass::Timeout),
            (true, Generic, AfterAllowedFails)
        );
        assert_eq!(
            row(FailureClass::ContextWindow),
            (false, ContextWindow, Never)
        );
        assert_eq!(
            row(FailureClass::ContentPolicy),
            (false, ContentPolicy, Never)
        );
        assert_eq!(row(FailureClass::Auth), (true, Generic, Immediately));
        assert_eq!(row(FailureClass::NotFound), (false, Generic, Immediately));
        assert_eq!(row(FailureClass::BadRequest), (false, NoFallback, Never));
        assert_eq!(FailureClass::BadRequest.actions(true).fallback, Generic);
        assert_eq!(
            row(FailureClass::Malformed),
            (true, Generic, AfterAllowedFails)
        );
    }

    #[test]
    fn statuses_map_to_classes() {
        for (code, class) in [
            (429, FailureClass::RateLimited),
            (500, FailureClass::Transient),
            (502, FailureClass::Transient),
            (503, FailureClass::Transient),
            (504, FailureClass::Transient),
            (529, FailureClass::Transient),
            (401, FailureClass::Auth),
            (403, FailureClass::Auth),
            (404, FailureClass::NotFound),
            (408, FailureClass::Timeout),
            (400, FailureClass::BadRequest),
            (413, FailureClass::BadRequest),
            (422, FailureClass::BadRequest),
        ] {
            let f = status(code, "");
            assert_eq!(f.class, class, "HTTP {code}");
            assert_eq!(f.status, Some(code));
        }
    }

    /// A .NET proxy's writer that puts UTF-8's byte-order mark before its completions puts
    /// one before its errors too: the error is read as without it (it was not JSON, so a
    /// context-window 400 was a plain bad request, and the client's message began with
    /// the mark and the raw JSON).
    #[test]
    fn an_error_with_a_byte_order_mark_is_read() {
        let ctx = "\u{FEFF}{\"error\":{\"message\":\"maximum context length is 8192 tokens\",\"code\":\"context_length_exceeded\"}}";
        let f = status(400, ctx);
        assert_eq!(f.class, FailureClass::ContextWindow);
        assert_eq!(f.message, "maximum context length is 8192 tokens");
    }

    /// An `api_base` behind an ingress that redirects: a configuration fault of the
    /// deployment, said so, and not a transient failure to retry.
    #[test]
    fn a_redirect_is_the_deployments_configuration_not_a_transient_failure() {
        for code in [301, 302, 307, 308] {
            let f = status(code, "<html><body>Permanent Redirect</body></html>");
            assert_eq!(f.class, FailureClass::NotFound, "{code}");
            assert!(
                f.message.contains("redirect") && f.message.contains("api_base"),
                "{code}: {}",
                f.message
            );
            assert_eq!(f.client_status(), 502);
        }
    }

    #[test]
    fn provider_error_shapes() {
        let openai_ctx = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        assert_eq!(status(400, openai_ctx).class, FailureClass::ContextWindow);
        let anthropic_ctx = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(
            status(400, anthropic_ctx).class,
            FailureClass::ContextWindow
        );
        // Anthropic when input and `max_tokens` together pass the window, and xAI's prompt
        // limit: both 400s a context-window fallback can serve.
        for (who, ctx) in [
            (
                "anthropic",
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 199759 + 8192 > 200000, decrease input length or `max_tokens` and try again"}}"#,
            ),
            (
                "xai",
                r#"{"code":"Client specified an invalid argument","error":"This model's maximum prompt length is 131072 but the request contains 537812 tokens."}"#,
            ),
        ] {
            assert_eq!(status(400, ctx).class, FailureClass::ContextWindow, "{who}");
        }
        let azure_filter = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","code":"content_filter"}}"#;
        assert_eq!(status(400, azure_filter).class, FailureClass::ContentPolicy);
        let vertex_quota = r#"[{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED","details":[{"retryDelay":"7s"}]}}]"#;
        let f = status(429, vertex_quota);
        assert_eq!(
            (f.class, f.retry_after),
            (FailureClass::RateLimited, Some(Duration::from_secs(7)))
        );
        let openai_quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(
            status(400, openai_quota).class,
            FailureClass::RateLimited,
            "quota errors are rate limits whatever the status"
        );
        let anthropic_overloaded =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            status(529, anthropic_overloaded).class,
            FailureClass::Transient
        );
        let f = status(502, "<html>bad gateway</html>");
        assert_eq!(f.class, FailureClass::Transient);
        assert!(f.message.contains("bad gateway"));
    }

    /// The upstream's `param` reaches the client as OpenAI sends it, for an error about the
    /// request; a gateway-side status carries none.
    #[test]
    fn the_upstream_param_reaches_the_client() {
        let f = status(
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(f.class, FailureClass::ContextWindow);
        let e = crate::error::ApiError::from_failure(&f, "summary");
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert_eq!(e.body_json()["error"]["param"], "messages");
        for not_a_path in ["Bearer sk-1", "headers: a=b", "", &"m".repeat(257)] {
            let body =
                serde_json::json!({"error": {"message": "x", "param": not_a_path}}).to_string();
            assert_eq!(status(400, &body).param, None, "{not_a_path:?}");
        }
        let path = "tools[0].function.name";
        let body = serde_json::json!({"error": {"message": "x", "param": path}}).to_string();
        assert_eq!(status(400, &body).param.as_deref(), Some(path));
        let f = status(500, r#"{"error":{"message":"x","param":"messages"}}"#);
        assert_eq!(crate::error::ApiError::from_failure(&f, "s").param, None);
    }

    /// A client's own words quoted back in a 400 never make a quota failure, which would cool
    /// a deployment every tenant shares: not the word "billing" in a field's name, not a
    /// provider's whole wording sent as a field's name (escaped or not) or as text.
    #[test]
    fn a_request_quoted_back_is_no_quota_failure() {
        let f = status(
            400,
            r#"{"error":{"message":"Unrecognized request argument supplied: billing_info","type":"invalid_request_error","param":null,"code":null}}"#,
        );
        assert_eq!((f.class, f.quota), (FailureClass::BadRequest, false));
        let quoted = r#"{"error":{"message":"Unrecognized request argument supplied: Exceeded your current quota","type":"invalid_request_error"}}"#;
        let f = status(400, quoted);
        assert_eq!(f.quota_words, Some("exceeded your current quota"));
        for sent in [
            r#"{"model":"m","Exceeded your current quota":1}"#,
            r#"{"model":"m","\u0065xceeded your current quota":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"say: you exceeded your current quota"}]}"#,
        ] {
            let f = status(400, quoted).unless_echoed(sent.as_bytes());
            assert_eq!(
                (f.class, f.quota),
                (FailureClass::BadRequest, false),
                "{sent}"
            );
        }
        // Words the request did not send are the provider's own: still a quota failure.
        let f = status(400, quoted).unless_echoed(br#"{"model":"m","messages":[]}"#);
        assert_eq!((f.class, f.quota), (FailureClass::RateLimited, true));
        // A provider's structured word cannot be a request's echo: it stands.
        let tagged =
            r#"{"error":{"message":"exceeded your current quota","type":"insufficient_quota"}}"#;
        let f = status(400, tagged).unless_echoed(br#"{"exceeded your current quota":1}"#);
        assert_eq!((f.class, f.quota), (FailureClass::RateLimited, true));
    }

    #[test]
    fn billing_and_credit_errors_are_quota_failures() {
        for body in [
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
            r#"{"error":{"message":"Billing hard limit has been reached","type":"invalid_request_error","code":"billing_hard_limit_reached","param":null}}"#,
            r#"{"error":{"code":400,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}"#,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota"}}"#,
        ] {
            let f = status(400, body);
            assert_eq!(
                (f.class, f.quota),
                (FailureClass::RateLimited, true),
                "{body}"
            );
            assert!(f.retry_elsewhere_only());
            assert_eq!(f.client_status(), 400, "the client sees the real status");
        }
        let f = status(402, "");
        assert_eq!((f.class, f.quota), (FailureClass::RateLimited, true));
        // A 429 is a rate limit (waiting mends it), unless it says the account is empty
        // (above); a plain 400 a bad request, and a context-window message that happens to
        // say "billing" stays a context failure.
        let f = status(
            429,
            r#"{"error":{"status":"RESOURCE_EXHAUSTED","message":"quota"}}"#,
        );
        assert_eq!((f.class, f.quota), (FailureClass::RateLimited, false));
        assert!(!f.retry_elsewhere_only());
        let f = status(400, r#"{"error":{"message":"bad `temperature`"}}"#);
        assert_eq!((f.class, f.quota), (FailureClass::BadRequest, false));
        let f = status(
            400,
            r#"{"error":{"message":"prompt is too long for your billing tier"}}"#,
        );
        assert_eq!(f.class, FailureClass::ContextWindow);
        let event = serde_json::json!({"error": {"message": "Your credit balance is too low"}});
        let f = classify(Signal::ErrorEvent { error: &event }, SystemTime::UNIX_EPOCH);
        assert_eq!((f.class, f.quota), (FailureClass::RateLimited, true));
        assert!(
            status(401, "").retry_elsewhere_only(),
            "auth: another deployment"
        );
    }

    #[test]
    fn error_events_mid_stream() {
        let openrouter = serde_json::json!({"error": {"code": 429, "message": "Rate limit exceeded", "retry_after": 2}});
        let f = classify(
            Signal::ErrorEvent { error: &openrouter },
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            (f.class, f.status, f.retry_after),
            (
                FailureClass::RateLimited,
                Some(429),
                Some(Duration::from_secs(2))
            )
        );
        let vertex =
            serde_json::json!({"error": {"status": "RESOURCE_EXHAUSTED", "message": "quota"}});
        assert_eq!(
            classify(
                Signal::ErrorEvent { error: &vertex },
                SystemTime::UNIX_EPOCH
            )
            .class,
            FailureClass::RateLimited
        );
        let overloaded = serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(
            classify(
                Signal::ErrorEvent { error: &overloaded },
                SystemTime::UNIX_EPOCH
            )
            .class,
            FailureClass::Transient
        );
        let unknown = serde_json::json!({"error": {"message": "???"}});
        assert_eq!(
            classify(
                Signal::ErrorEvent { error: &unknown },
                SystemTime::UNIX_EPOCH
            )
            .class,
            FailureClass::Transient
        );
        let ctx = serde_json::json!({"error": {"code": "context_length_exceeded", "message": "too long"}});
        assert_eq!(
            classify(Signal::ErrorEvent { error: &ctx }, SystemTime::UNIX_EPOCH).class,
            FailureClass::ContextWindow
        );
    }

    #[test]
    fn other_signals() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            classify(Signal::ContentFiltered, now).class,
            FailureClass::ContentPolicy
        );
        assert_eq!(
            classify(Signal::Transport(TransportFault::Reset), now).class,
            FailureClass::Transient
        );
        assert_eq!(
            classify(Signal::Timeout(TimeoutKind::Idle), now).class,
            FailureClass::Timeout
        );
        assert_eq!(
            classify(Signal::Malformed, now).class,
            FailureClass::Malformed
        );
    }

    #[test]
    fn retry_after_in_all_three_forms() {
        assert_eq!(
            status_h(429, &[("retry-after", "3")], "").retry_after,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            status_h(429, &[("retry-after-ms", "1500")], "").retry_after,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            status_h(429, &[("retry-after-ms", "250"), ("retry-after", "9")], "").retry_after,
            Some(Duration::from_millis(250)),
            "the finer header wins"
        );
        // HTTP-date against the response's Date header.
        let f = status_h(
            429,
            &[
                ("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT"),
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ],
            "",
        );
        assert_eq!(f.retry_after, Some(Duration::from_secs(10)));
        // HTTP-date against `now` when there is no Date header (now = 1_700_000_000).
        let f = status_h(429, &[("retry-after", "Tue, 14 Nov 2023 22:13:25 GMT")], "");
        assert_eq!(f.retry_after, Some(Duration::from_secs(5)));
        // A date in the past means "now", garbage means "not given".
        let f = status_h(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], "");
        assert_eq!(f.retry_after, Some(Duration::ZERO));
        assert_eq!(
            status_h(429, &[("retry-after", "soon")], "").retry_after,
            None
        );
        assert_eq!(
            status_h(429, &[("retry-after", "-4")], "").retry_after,
            None
        );
        // Longer than a day is still a wait asked for (capped later by max_cooldown), never
        // dropped in favour of a shorter default.
        assert_eq!(
            status_h(429, &[("retry-after", "100000")], "").retry_after,
            Some(Duration::from_secs(100_000))
        );
        assert_eq!(
            status_h(429, &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")], "").retry_after,
            Some(RETRY_AFTER_CEILING)
        );
    }

    #[test]
    fn client_status_prefers_the_upstream_status() {
        assert_eq!(status(503, "").client_status(), 503);
        assert_eq!(
            status(401, "").client_status(),
            502,
            "the upstream refused the gateway's key, not the client's"
        );
        assert_eq!(status(404, "").client_status(), 502);
        assert_eq!(
            Failure::new(FailureClass::Timeout, "x").client_status(),
            504
        );
    }
}
