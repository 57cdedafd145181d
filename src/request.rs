//! A client's chat completion request: parsed, checked, and turned into upstream bodies.
//!
//! Owns: reading `POST /v1/chat/completions` bodies (UTF-8 JSON, see [`crate::charset`]:
//! `model`, `messages`, `stream`, the router settings a request may override, the
//! `mock_testing_*` flags), refusing bad ones with a message that names the field, and
//! building each attempt's upstream body, including the continuation body after a
//! mid-stream failure. Everything the engine does not interpret is passed upstream
//! unchanged.
//!
//! How an upstream is called is a property of the deployment, never of the client: by
//! default `stream: true` with `stream_options.include_usage` merged into whatever
//! `stream_options` the client sent; for a deployment with `fake_stream: true`, one JSON
//! completion. Either way both modes send the same upstream request, so they meet the same
//! timeouts, mid-answer failures and commit point. Only the delivery to the client differs.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::classify::FailureClass;
use crate::config::RouterSettings;
use crate::limits::Limits;

/// Body fields read as request-level router settings.
const SETTINGS_FIELDS: &[&str] = &[
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
    // Gateway-only: read so that they are refused with a clear message.
    "cooldown_time",
    "allowed_fails",
    "routing_strategy",
    "continuation_prompt",
    "retry_backoff_base",
    "retry_backoff_max",
    "fallback_on_bad_request",
    "rng_seed",
    "allowed_fails_policy",
    "cooldown_by_failure_rate",
    "cooldown_lone_deployment",
];

/// `mock_testing_*` flags and the failure class each one injects.
pub const MOCK_FLAGS: &[(&str, FailureClass)] = &[
    ("mock_testing_fallbacks", FailureClass::Transient),
    ("mock_testing_rate_limit_error", FailureClass::RateLimited),
    (
        "mock_testing_context_fallbacks",
        FailureClass::ContextWindow,
    ),
    (
        "mock_testing_content_policy_fallbacks",
        FailureClass::ContentPolicy,
    ),
];

/// Body fields that carry a client's own provider credentials or endpoint (LiteLLM's
/// "client-side credentials", `user_config`). Switchback calls each deployment with its own
/// key at its own address: passed through, these would carry the client's provider key in
/// the body to whichever deployment or fallback served (a third-party host, a server that
/// logs bodies), and a server that ignores them would answer from the operator's model
/// as if it were the one the client named. Refused with a 400 naming the field, as LiteLLM
/// refuses `api_base` and `base_url` unless `allow_client_side_credentials` is set.
const CLIENT_CREDENTIAL_FIELDS: &[&str] = &["api_key", "api_base", "base_url", "user_config"];

/// LiteLLM's mocked answers: given one of these, LiteLLM answers (or times out, or waits)
/// by itself and calls no model. Switchback never makes an answer up: forwarded, OpenAI
/// refuses the unknown field with a 400, and a server that ignores it answers for real, and
/// bills it, to a test that meant to call nothing. Refused with a 400 naming the field
/// (a `null` is no mock, as for the `mock_testing_*` flags, which inject failures here too).
const MOCK_ANSWER_FIELDS: &[&str] = &[
    "mock_response",
    "mock_tool_calls",
    "mock_timeout",
    "mock_delay",
];

/// Body fields that are LiteLLM's own (request tags and trace metadata for its logging and
/// tag routing; its response cache's controls; its trace and session ids): read by the
/// gateway or of no meaning to it, never forwarded. LiteLLM keeps `metadata` for itself
/// (it reaches OpenAI only under `enable_preview_features`); forwarded, OpenAI refuses a
/// `metadata` of LiteLLM's shape (a `tags` array, not a string) and Azure one of more keys
/// than it takes, and any of the others as an "Unrecognized request argument": a 400 for a
/// request that works on LiteLLM. Switchback has no response cache, so a request that
/// asks to skip or bound one (`cache: {"no-cache": true}`, `ttl`) has what it asked for.
const GATEWAY_METADATA_FIELDS: &[&str] = &[
    "metadata",
    "litellm_metadata",
    "tags",
    "cache",
    "caching",
    "ttl",
    "no-log",
    "cache_key",
    "litellm_trace_id",
    "litellm_session_id",
    "litellm_call_id",
];

/// A request that could not be parsed; becomes a 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    pub message: String,
    /// The offending field, OpenAI's `param`.
    pub param: Option<String>,
    /// The named limit the request is over, if that is what is wrong with it.
    pub limit: Option<&'static str>,
}

/// The body is not JSON, as `serde_json` says of `body`.
/// `body` is what the parser read: the body as sent less `skipped` leading bytes (a
/// byte-order mark), so that an offset named counts the bytes as sent.
fn not_json(e: serde_json::Error, body: &[u8], skipped: usize) -> BadRequest {
    // serde_json names a lone surrogate by what it expected next, and a byte that is not
    // UTF-8 "an invalid unicode code point" (only then is the byte the error).
    let said = e.to_string();
    let hint = if said.contains("surrogate") || said.contains("end of hex escape") {
        " (a `\\u` escape there is a lone UTF-16 surrogate, half of a character, \
             which JSON text cannot carry: was a string cut between the two halves \
             of a pair?)"
            .to_string()
    } else if said.contains("invalid unicode code point")
        && let Err(bad) = std::str::from_utf8(body)
    {
        let at = bad.valid_up_to();
        format!(
            " (byte 0x{:02X} at offset {} is not UTF-8: JSON is sent as UTF-8, and a \
             body in ISO-8859-1 or Windows-1252, as Windows PowerShell 5.1 sends one, \
             must be encoded as UTF-8 first)",
            body[at],
            skipped + at
        )
    } else {
        String::new()
    };
    BadRequest {
        message: format!("request body is not valid JSON: {said}{hint}"),
        param: None,
        limit: None,
    }
}

fn over_json_values(limits: &Limits) -> BadRequest {
    BadRequest {
        message: format!(
            "request body has more than {} JSON values, over the limit \
             max_request_json_values = {}",
            limits.max_request_json_values, limits.max_request_json_values
        ),
        param: None,
        limit: Some("max_request_json_values"),
    }
}

fn bad(param: &str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        message: message.into(),
        param: Some(param.to_string()),
        limit: None,
    }
}

/// A model name the request gives (`param` says where) must be at most
/// `max_model_name_bytes` long; the refusal says how long it is, never what it says.
pub fn check_model_name(name: &str, param: &str, limits: &Limits) -> Result<(), BadRequest> {
    let max = limits.max_model_name_bytes;
    if name.len() <= max {
        return Ok(());
    }
    Err(over(
        param,
        "max_model_name_bytes",
        format!(
            "`{param}`: a model name of {} bytes, over the limit max_model_name_bytes = {max}",
            name.len()
        ),
    ))
}

/// `param` is over the named limit `limit`.
fn over(param: &str, limit: &'static str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        limit: Some(limit),
        ..bad(param, message)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk in its stream (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The client's own `stream_options`, merged into what a streaming upstream is sent.
    pub stream_options: Option<Map<String, Value>>,
    pub messages: Vec<Value>,
    pub settings: RouterSettings,
    /// For request-level fallback entries with their own `messages`: the messages each
    /// fallback target is sent instead of the request's (see [`ChatRequest::messages_for`]).
    pub fallback_messages: Vec<(String, std::sync::Arc<Vec<Value>>)>,
    pub mock: Option<FailureClass>,
    /// Everything else in the body, forwarded upstream. Private so that nothing but
    /// [`ChatRequest::parse_as`] fills it: it never holds a key the gateway writes itself
    /// (`SET_BY_THE_GATEWAY`), which the upstream body would otherwise carry twice (a
    /// release build does not check).
    passthrough: Map<String, Value>,
    /// JSON values the body held as parsed: what its tree takes in memory is about
    /// [`PARSED_VALUE_BYTES`] each, whatever its text's size (see `gateway::routes`).
    pub json_values: usize,
}

/// Bytes one parsed JSON value takes in memory, about (`max_request_json_values`).
pub const PARSED_VALUE_BYTES: usize = 80;

impl ChatRequest {
    pub fn parse(body: &[u8], limits: &Limits) -> Result<ChatRequest, BadRequest> {
        ChatRequest::parse_as(body, limits, None)
    }

    /// [`ChatRequest::parse`], for the group `model` when the request's path names one (Azure
    /// OpenAI's `/openai/deployments/{model}/chat/completions`): the path's name is the
    /// model, whatever the body says, as LiteLLM reads it.
    pub fn parse_as(
        body: &[u8],
        limits: &Limits,
        model: Option<&str>,
    ) -> Result<ChatRequest, BadRequest> {
        // UTF-8 only (a byte-order mark skipped): a UTF-16 body is told as one, not as a
        // syntax error at its first byte.
        let sent = body.len();
        let body = crate::charset::utf8_json(body).map_err(|e| BadRequest {
            message: e.to_string(),
            param: None,
            limit: None,
        })?;
        let (value, json_values) =
            crate::json::from_slice_counted(body, limits.max_request_json_values).map_err(|e| {
                match e {
                    crate::json::BoundedError::TooManyValues => over_json_values(limits),
                    crate::json::BoundedError::Json(e) => not_json(e, body, sent - body.len()),
                }
            })?;
        let Value::Object(mut body) = value else {
            return Err(BadRequest {
                message: "request body must be a JSON object".into(),
                param: None,
                limit: None,
            });
        };
        // `shift_remove` keeps the order of the fields passed through.
        let model = match (model, body.shift_remove("model")) {
            (Some(m), _) if !m.trim().is_empty() => m.to_string(),
            (Some(_), _) => return Err(bad("model", "the path names an empty deployment")),
            (None, Some(Value::String(m))) if !m.trim().is_empty() => m,
            (None, Some(Value::String(_)) | None) => {
                return Err(bad("model", "`model` is required"));
            }
            (None, Some(_)) => return Err(bad("model", "`model` must be a string")),
        };
        check_model_name(&model, "model", limits)?;
        let stream = match body.shift_remove("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(bad("stream", "`stream` must be a boolean")),
        };
        let stream_options = match body.shift_remove("stream_options") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => return Err(bad("stream_options", "`stream_options` must be an object")),
        };
        let include_usage = match stream_options.as_ref().and_then(|o| o.get("include_usage")) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("stream_options.include_usage", "must be a boolean")),
        };
        for field in ["max_tokens", "max_completion_tokens"] {
            match body.get(field) {
                None | Some(Value::Null) => {}
                Some(v) if v.as_u64().is_some() => {}
                Some(_) => {
                    return Err(bad(
                        field,
                        format!("`{field}` must be a non-negative integer"),
                    ));
                }
            }
        }
        // `stop` is forwarded as sent, and read by the gateway too (see `seam`): a shape no
        // provider takes is refused here rather than guessed at.
        match body.get("stop") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(stops)) => {
                if let Some(i) = stops.iter().position(|s| !s.is_string()) {
                    let place = format!("stop[{i}]");
                    let message = format!("`{place}` must be a string (a stop sequence)");
                    return Err(bad(&place, message));
                }
            }
            Some(_) => {
                return Err(bad(
                    "stop",
                    "`stop` must be a string or an array of strings",
                ));
            }
        }
        // An answer of more choices than `max_choices` is refused when it comes (a malformed
        // answer, blamed on the deployment): asked for by the client, it is refused here, so
        // that the client's own request cannot count against every deployment it reaches.
        match body.get("n") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64().filter(|n| *n >= 1) {
                Some(n) if n > limits.max_choices as u64 => {
                    return Err(over(
                        "n",
                        "max_choices",
                        format!(
                            "n = {n} is over the limit max_choices = {}",
                            limits.max_choices
                        ),
                    ));
                }
                Some(_) => {}
                None => return Err(bad("n", "`n` must be a positive integer")),
            },
        }
        let messages = match body.shift_remove("messages") {
            Some(Value::Array(m)) => m,
            None => return Err(bad("messages", "`messages` is required")),
            Some(_) => return Err(bad("messages", "`messages` must be an array")),
        };
        if messages.is_empty() {
            return Err(bad("messages", "`messages` must not be empty"));
        }
        if messages.len() > limits.max_messages {
            return Err(over(
                "messages",
                "max_messages",
                format!(
                    "{} messages is over the limit max_messages = {}",
                    messages.len(),
                    limits.max_messages
                ),
            ));
        }
        check_messages(&messages, "messages", limits)?;
        let mut mock = None;
        for (flag, class) in MOCK_FLAGS {
            match body.shift_remove(*flag) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                Some(Value::Bool(true)) => {
                    if let Some(other) = mock.replace(*class) {
                        return Err(bad(
                            flag,
                            format!(
                                "only one mock_testing_* flag per request (also set: {})",
                                mock_flag(other)
                            ),
                        ));
                    }
                }
                Some(_) => return Err(bad(flag, format!("`{flag}` must be a boolean"))),
            }
        }
        if let Some(field) = CLIENT_CREDENTIAL_FIELDS
            .iter()
            .find(|f| body.contains_key(**f))
        {
            return Err(bad(
                field,
                format!(
                    "`{field}` is not allowed in the request body: Switchback calls each \
                     deployment with its own credentials at its own address; remove it, or \
                     configure a deployment for that provider"
                ),
            ));
        }
        for field in MOCK_ANSWER_FIELDS {
            match body.shift_remove(*field) {
                None | Some(Value::Null) => {}
                Some(_) => {
                    return Err(bad(
                        field,
                        format!(
                            "`{field}` (LiteLLM's mocked answer) is not supported: Switchback \
                             always calls a deployment and never makes an answer up; the \
                             mock_testing_* flags inject a failure, and `switchback run` \
                             scripts whole answers in simulation"
                        ),
                    ));
                }
            }
        }
        for field in GATEWAY_METADATA_FIELDS {
            body.shift_remove(*field);
        }
        let (settings, fallback_messages) = Self::settings(&mut body, &model, limits)?;
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            stream_options,
            messages,
            settings,
            fallback_messages,
            mock,
            passthrough: body,
            json_values,
        })
    }

    /// The request-level router settings, and the messages of request-level fallback
    /// entries that carry their own.
    #[allow(clippy::type_complexity)]
    fn settings(
        body: &mut Map<String, Value>,
        model: &str,
        limits: &Limits,
    ) -> Result<(RouterSettings, Vec<(String, std::sync::Arc<Vec<Value>>)>), BadRequest> {
        let mut fields = Map::new();
        for name in SETTINGS_FIELDS {
            if let Some(v) = body.shift_remove(*name) {
                fields.insert((*name).to_string(), v);
            }
        }
        let mut fallback_messages = Vec::new();
        for field in [
            "fallbacks",
            "context_window_fallbacks",
            "content_policy_fallbacks",
            "default_fallbacks",
        ] {
            if let Some(list) = fields.get(field) {
                check_fallback_list_sizes(field, list, limits)?;
            }
        }
        // Its keys are group names too; the param does not repeat the key (it may be huge).
        if let Some(Value::Object(map)) = fields.get("model_group_retry_policy") {
            for group in map.keys() {
                check_model_name(group, "model_group_retry_policy", limits)?;
            }
        }
        if let Some(Value::Array(list)) = fields.get("fallbacks") {
            if let Some((targets, messages)) = client_side_fallbacks(list, limits)? {
                fallback_messages = messages;
                fields.insert("fallbacks".into(), json!([{ model: targets }]));
            }
        }
        let settings: RouterSettings = serde_path_to_error::deserialize(Value::Object(fields))
            .map_err(|e| {
                let path = e.path().to_string();
                bad(&path, format!("`{path}`: {}", e.into_inner()))
            })?;
        if let Some(field) = settings.gateway_only_fields_set().first() {
            return Err(bad(
                field,
                format!("`{field}` is a gateway-wide setting and cannot be set per request"),
            ));
        }
        Ok((settings, fallback_messages))
    }

    /// The messages an attempt on the group or deployment id `target` is sent: those of
    /// the request-level fallback entry that reached it, when that entry (or one before it)
    /// carried `messages`, else the request's own.
    pub fn messages_for(&self, target: &str) -> &[Value] {
        self.fallback_messages
            .iter()
            .find(|(name, _)| name == target)
            .map_or(&self.messages, |(_, m)| m.as_slice())
    }

    /// The upstream body of an attempt. A continuation sends the partial answer as an
    /// assistant message followed by the instruction, and asks for what is left of the
    /// client's token budget.
    pub fn upstream_body(
        &self,
        to: &UpstreamCall<'_>,
        continuation: Option<&Continuation<'_>>,
    ) -> Bytes {
        self.upstream_body_with(to, continuation, &self.messages)
    }

    /// [`ChatRequest::upstream_body`] with `messages` instead of the request's (a
    /// request-level fallback entry's own).
    pub fn upstream_body_with(
        &self,
        to: &UpstreamCall<'_>,
        continuation: Option<&Continuation<'_>>,
        messages: &[Value],
    ) -> Bytes {
        let stream_options = (to.stream && to.stream_options).then(|| {
            let mut options = self.stream_options.clone().unwrap_or_default();
            options.insert("include_usage".into(), Value::Bool(true));
            options
        });
        let body = UpstreamBody {
            model: to.model,
            messages,
            continuation,
            passthrough: &self.passthrough,
            stream: to.stream,
            stream_options,
        };
        Bytes::from(serde_json::to_vec(&body).expect("an upstream body always serialises"))
    }

    /// The client's `stop` sequences (one string or an array of them, as parsed).
    pub fn stop_sequences(&self) -> Vec<&str> {
        match self.passthrough.get("stop") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(stops)) => stops.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// How many choices the request asks for (`n`, 1 when absent).
    pub fn choices_asked(&self) -> u64 {
        self.passthrough
            .get("n")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1)
    }

    /// The client asked for one choice (`n` absent, null or 1).
    pub fn one_choice(&self) -> bool {
        self.passthrough
            .get("n")
            .and_then(Value::as_u64)
            .is_none_or(|n| n <= 1)
    }

    /// Why no answer to this request can be continued after a failure past commit, however
    /// little it delivered; `None` when one can (see `CommitState::after_failure`).
    ///
    /// - `n > 1`: a continuation asks for the one choice delivered so far, and its `n`
    ///   answers would each go on from that one; a choice that had sent only its role would
    ///   get a fragment of another answer.
    /// - `response_format` `json_object` or `json_schema`: the provider holds every answer to
    ///   the format from its first token, so a continuation starts a whole new object after
    ///   the half one (`{"name": "Al{"name": "Alice"}`), which no client can parse.
    pub fn unfit_for_continuation(&self) -> Option<&'static str> {
        if !self.one_choice() {
            return Some("the client asked for several choices (n > 1)");
        }
        let format = self
            .passthrough
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str);
        match format {
            Some("json_object" | "json_schema") => {
                Some("the answer must be JSON from its first token (response_format)")
            }
            _ => None,
        }
    }

    /// The client's token budget (`max_completion_tokens`, else `max_tokens`), if it set one.
    pub fn token_budget(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|f| self.passthrough.get(*f).and_then(Value::as_u64))
    }
}

/// One attempt's upstream body, written from the request's own values: nothing is copied
/// (a 45 MiB image request was copied whole before it was written, 30 ms of a gateway
/// worker's time in a release build, and its size again in memory). Fields in this
/// order: `model`, `messages` (a continuation's two after the request's), everything
/// passed through in the client's order (a continuation's token budget in place of each
/// token field the client gave a number), `stream`, `stream_options`.
struct UpstreamBody<'a> {
    model: &'a str,
    messages: &'a [Value],
    continuation: Option<&'a Continuation<'a>>,
    passthrough: &'a Map<String, Value>,
    stream: bool,
    stream_options: Option<Map<String, Value>>,
}

/// The fields an upstream body sets itself: [`ChatRequest::parse`] takes them out of what
/// it passes through.
const SET_BY_THE_GATEWAY: [&str; 4] = ["model", "messages", "stream", "stream_options"];

impl serde::Serialize for UpstreamBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Messages<'b>(&'b [Value], Option<&'b Continuation<'b>>);
        impl serde::Serialize for Messages<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                for m in self.0 {
                    seq.serialize_element(m)?;
                }
                if let Some(c) = self.1 {
                    seq.serialize_element(&json!({"role": "assistant", "content": c.prefix}))?;
                    seq.serialize_element(&json!({"role": "user", "content": c.instruction}))?;
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("messages", &Messages(self.messages, self.continuation))?;
        let tokens_left = self.continuation.and_then(|c| c.tokens_left);
        for (k, v) in self.passthrough {
            debug_assert!(
                !SET_BY_THE_GATEWAY.contains(&k.as_str()),
                "`{k}` is the gateway's to set, never passed through"
            );
            match tokens_left {
                // Only a field that holds a number: a client's `null` stays unset.
                Some(left)
                    if (k == "max_tokens" || k == "max_completion_tokens") && v.is_number() =>
                {
                    map.serialize_entry(k, &left)?;
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.serialize_entry("stream", &self.stream)?;
        if let Some(options) = &self.stream_options {
            map.serialize_entry("stream_options", options)?;
        }
        map.end()
    }
}

/// How one deployment is called.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamCall<'a> {
    /// The model name sent upstream.
    pub model: &'a str,
    /// `stream: true` (the default), or one JSON completion (`fake_stream`).
    pub stream: bool,
    /// Send `stream_options` (with `include_usage`) to a streaming upstream.
    pub stream_options: bool,
}

/// What a continuation attempt is asked.
#[derive(Debug, Clone, Copy)]
pub struct Continuation<'a> {
    /// The answer so far.
    pub prefix: &'a str,
    /// The instruction that follows it (`continuation_prompt`).
    pub instruction: &'a str,
    /// What is left of the client's token budget, if it set one.
    pub tokens_left: Option<u64>,
}

/// Every message needs a string `role`; at most `max_messages` of them, none missing.
fn check_messages(messages: &[Value], param: &str, limits: &Limits) -> Result<(), BadRequest> {
    if messages.is_empty() {
        return Err(bad(param, format!("`{param}` must not be empty")));
    }
    if messages.len() > limits.max_messages {
        return Err(over(
            param,
            "max_messages",
            format!(
                "{} messages is over the limit max_messages = {}",
                messages.len(),
                limits.max_messages
            ),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(bad(
                &format!("{param}[{i}]"),
                format!("{param}[{i}] needs a string `role`"),
            ));
        }
    }
    Ok(())
}

/// The messages each target of client-side fallbacks is sent, by target name.
type TargetMessages = Vec<(String, std::sync::Arc<Vec<Value>>)>;

/// A request's fallback list, and each `{group: [...]}` entry's list of targets, hold at
/// most `max_request_fallbacks` items. Why every level: the plan visits each target of an
/// entry and reports each one it skips, so one entry of a million repeated names was a
/// million log lines from one request. Every name in them (a target, an entry's group, a
/// client-side object's `model`) is bounded by `max_model_name_bytes`, as the request's own
/// `model` is: each is matched against wildcard groups and may be repeated in an error.
/// Shapes are checked later; this only counts and measures.
fn check_fallback_list_sizes(field: &str, list: &Value, limits: &Limits) -> Result<(), BadRequest> {
    let max = limits.max_request_fallbacks;
    let too_long = |at: &str, n: usize, what: &str| {
        over(
            at,
            "max_request_fallbacks",
            format!("`{at}`: {n} {what} is over the limit max_request_fallbacks = {max}"),
        )
    };
    let name_ok = |at: &str, name: &Value| match name {
        Value::String(name) => check_model_name(name, at, limits),
        _ => Ok(()),
    };
    let Value::Array(items) = list else {
        return Ok(());
    };
    if items.len() > max {
        return Err(too_long(field, items.len(), "fallback entries"));
    }
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        name_ok(&at, item)?;
        let Value::Object(entry) = item else { continue };
        // A client-side `{model: "b", messages: [...]}` object of `fallbacks`: its messages
        // are bounded by max_messages. Anywhere else, `model` or `messages` with a list is a
        // group's entry like any other.
        let client_side = field == "fallbacks" && entry.get("model").is_some_and(Value::is_string);
        for (group, targets) in entry {
            if client_side {
                if group == "model" {
                    name_ok(&format!("{at}.model"), targets)?;
                }
                if group == "messages" {
                    continue;
                }
            }
            // Checked before it is part of a `param` of its own.
            check_model_name(group, &at, limits)?;
            if let Value::Array(targets) = targets {
                let at = format!("{at}.{group}");
                if targets.len() > max {
                    return Err(too_long(&at, targets.len(), "fallback targets"));
                }
                for (j, target) in targets.iter().enumerate() {
                    name_ok(&format!("{at}[{j}]"), target)?;
                }
            }
        }
    }
    Ok(())
}

/// LiteLLM's client-side fallback forms (`litellm/router_utils/fallback_event_handlers.py`,
/// `_check_non_standard_fallback_format`): a list of names (`["b", "c"]`), or of objects
/// naming a `model` and optionally its own `messages` (`[{"model": "b", "messages":
/// [...]}]`); anything else is the `[{group: [...]}]` form (`None` here). Both mean: the
/// fallbacks of the requested model, in this order. LiteLLM applies an object by
/// `kwargs.update(entry)` in `run_async_fallback`, on the kwargs its later entries reuse: an
/// entry's `messages` replace the request's for that fallback **and every later one**, until
/// another entry sets its own. Only `model` and `messages` are accepted in an object (LiteLLM
/// would apply any parameter; refused here rather than ignored).
fn client_side_fallbacks(
    list: &[Value],
    limits: &Limits,
) -> Result<Option<(Vec<String>, TargetMessages)>, BadRequest> {
    let names = list.iter().all(Value::is_string);
    let objects = list.iter().all(Value::is_object)
        && list
            .first()
            .and_then(Value::as_object)
            .is_some_and(|o| o.contains_key("model") || o.contains_key("messages"));
    if list.is_empty() || !(names || objects) {
        if list.iter().any(Value::is_string) && list.iter().any(Value::is_object) {
            return Err(bad(
                "fallbacks",
                "`fallbacks` mixes model names and objects; use one form",
            ));
        }
        return Ok(None);
    }
    let mut targets = Vec::with_capacity(list.len());
    let mut carried: Option<std::sync::Arc<Vec<Value>>> = None;
    let mut messages = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = format!("fallbacks[{i}]");
        let target = match item {
            Value::String(name) => name.clone(),
            Value::Object(entry) => {
                if let Some(key) = entry.keys().find(|k| *k != "model" && *k != "messages") {
                    return Err(bad(
                        &format!("{at}.{key}"),
                        format!(
                            "`{at}.{key}`: a request-level fallback entry takes only `model` \
                             and `messages`"
                        ),
                    ));
                }
                let name = match entry.get("model") {
                    Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
                    _ => {
                        return Err(bad(
                            &format!("{at}.model"),
                            format!("`{at}.model` is required and must be a model name"),
                        ));
                    }
                };
                match entry.get("messages") {
                    None => {}
                    Some(Value::Array(m)) => {
                        check_messages(m, &format!("{at}.messages"), limits)?;
                        carried = Some(std::sync::Arc::new(m.clone()));
                    }
                    Some(_) => {
                        return Err(bad(
                            &format!("{at}.messages"),
                            format!("`{at}.messages` must be an array"),
                        ));
                    }
                }
                name
            }
            _ => unreachable!("checked: every item is a name or an object"),
        };
        // A target named twice is reached (at most once) through its first entry.
        if let (Some(m), false) = (&carried, targets.contains(&target)) {
            messages.push((target.clone(), m.clone()));
        }
        targets.push(target);
    }
    Ok(Some((targets, messages)))
}

pub fn mock_flag(class: FailureClass) -> &'static str {
    MOCK_FLAGS
        .iter()
        .find(|(_, c)| *c == class)
        .map(|(f, _)| *f)
        .unwrap_or("mock_testing_fallbacks")
}

#[cfg(test)]
mod tests {
    /// The upstream body as it was built before [`UpstreamBody`]: a copy of every field in a
    /// new map, serialised. The reference the borrowing serialiser must equal, byte for byte.
    fn copied_upstream_body(
        r: &ChatRequest,
        to: &UpstreamCall<'_>,
        continuation: Option<&Continuation<'_>>,
        messages: &[Value],
    ) -> Bytes {
        let mut body = Map::new();
        body.insert("model".into(), Value::String(to.model.to_string()));
        let mut messages = messages.to_vec();
        if let Some(c) = continuation {
            messages.push(json!({"role": "assistant", "content": c.prefix}));
            messages.push(json!({"role": "user", "content": c.instruction}));
        }
        body.insert("messages".into(), Value::Array(messages));
        for (k, v) in &r.passthrough {
            body.insert(k.clone(), v.clone());
        }
        if let Some(c) = continuation {
            for field in ["max_tokens", "max_completion_tokens"] {
                if let (Some(Value::Number(_)), Some(left)) = (body.get(field), c.tokens_left) {
                    body.insert(field.into(), Value::from(left));
                }
            }
        }
        body.insert("stream".into(), Value::Bool(to.stream));
        if to.stream && to.stream_options {
            let mut options = r.stream_options.clone().unwrap_or_default();
            options.insert("include_usage".into(), Value::Bool(true));
            body.insert("stream_options".into(), Value::Object(options));
        }
        Bytes::from(serde_json::to_vec(&body).unwrap())
    }

    /// The body an attempt sends is the one the copying builder made, byte for byte (key
    /// order, a continuation's messages and token budget, `stream_options` merged), for
    /// every kind of call.
    #[test]
    fn the_borrowing_upstream_body_is_the_copied_one() {
        let bodies = [
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"temperature":0.5,"model":"g","max_tokens":100,"messages":[{"role":"system","content":"be \"brief\"\n"},{"role":"user","content":[{"type":"text","text":"é"}]}],"stream":true,"response_format":{"type":"json_schema","json_schema":{"z":1,"a":2}},"stream_options":{"include_usage":false,"x":1},"max_completion_tokens":null,"user":"u"}"#,
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"n":2,"tools":[],"seed":1E-5}"#,
        ];
        for text in bodies {
            let r = ChatRequest::parse(text.as_bytes(), &Limits::default()).unwrap();
            for (stream, stream_options) in [(true, true), (true, false), (false, true)] {
                let to = UpstreamCall {
                    model: "up-model",
                    stream,
                    stream_options,
                };
                for tokens_left in [None, Some(7)] {
                    let c = Continuation {
                        prefix: "The answer",
                        instruction: "continue",
                        tokens_left,
                    };
                    for continuation in [None, Some(&c)] {
                        let want = copied_upstream_body(&r, &to, continuation, &r.messages);
                        let got = r.upstream_body(&to, continuation);
                        assert_eq!(
                            std::str::from_utf8(&got).unwrap(),
                            std::str::from_utf8(&want).unwrap(),
                            "{text} stream={stream} options={stream_options} {continuation:?}"
                        );
                    }
                }
            }
        }
    }

    /// A continuation's token budget replaces only a token field that holds a number: the
    /// client's `null` (an SDK's unset field, sent as such) stays `null`. Written as a
    /// number, it sent `max_tokens` beside `max_completion_tokens` to reasoning models,
    /// which refuse `max_tokens`, so only the continuation failed.
    #[test]
    fn a_continuation_leaves_a_token_field_that_is_not_a_number_as_it_was() {
        let r = parse(
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":500,"max_tokens":null,"stream":true}"#,
        )
        .unwrap();
        assert_eq!(r.token_budget(), Some(500));
        let c = Continuation {
            prefix: "The answer",
            instruction: "continue",
            tokens_left: Some(480),
        };
        let to = UpstreamCall {
            model: "o3",
            stream: true,
            stream_options: true,
        };
        let body: Value = serde_json::from_slice(&r.upstream_body(&to, Some(&c))).unwrap();
        assert_eq!(body["max_completion_tokens"], json!(480));
        assert_eq!(body["max_tokens"], Value::Null, "{body}");
    }

    use super::*;
    use crate::config::FallbackEntry;

    fn parse(body: &str) -> Result<ChatRequest, BadRequest> {
        ChatRequest::parse(body.as_bytes(), &Limits::default())
    }

    #[test]
    fn parses_the_known_bug_request() {
        let r = parse(
            r#"{"model":"vertex_ai/gemini-3.1-flash-lite-preview","messages":[{"role":"user","content":"say ping"}],
                "mock_testing_fallbacks":true,"stream":true,"max_tokens":32}"#,
        )
        .unwrap();
        assert!(r.stream);
        assert_eq!(r.mock, Some(FailureClass::Transient));
        assert_eq!(r.passthrough.get("max_tokens"), Some(&json!(32)));
        assert!(
            !r.passthrough.contains_key("mock_testing_fallbacks"),
            "mock flags are not forwarded"
        );
    }

    /// LiteLLM's tags and trace metadata are the gateway's, never forwarded (OpenAI and Azure
    /// refuse them); a client's own provider credentials are refused, never carried to a
    /// deployment.
    #[test]
    fn litellm_metadata_stays_and_client_credentials_are_refused() {
        let r = parse(
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"temperature":0.2,
                "metadata":{"tags":["team-a"],"trace_id":"t1"},"tags":["x"],"litellm_metadata":{}}"#,
        )
        .unwrap();
        assert_eq!(r.passthrough.keys().collect::<Vec<_>>(), ["temperature"]);
        // LiteLLM's cache controls and trace ids, as its docs tell clients to send them
        // (`extra_body`): OpenAI refused each with a 400 "Unrecognized request argument".
        let r = parse(
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"temperature":0.2,
                "cache":{"no-cache":true},"caching":false,"ttl":600,"no-log":true,"cache_key":"k",
                "litellm_trace_id":"t","litellm_session_id":"s","litellm_call_id":"c"}"#,
        )
        .unwrap();
        assert_eq!(r.passthrough.keys().collect::<Vec<_>>(), ["temperature"]);
        for field in ["api_key", "api_base", "base_url", "user_config"] {
            let body = format!(
                r#"{{"model":"g","messages":[{{"role":"user","content":"hi"}}],"{field}":"sk-user"}}"#
            );
            let e = parse(&body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field));
            assert!(e.message.contains("not allowed"), "{}", e.message);
            assert!(
                !e.message.contains("sk-user"),
                "the key is not echoed: {}",
                e.message
            );
        }
    }

    /// LiteLLM's mocked answers are refused, never forwarded to a real provider (which
    /// would refuse the field, or ignore it and answer for real, billed).
    #[test]
    fn litellm_mocked_answers_are_refused() {
        for (field, value) in [
            ("mock_response", r#""It's simple to use""#),
            ("mock_tool_calls", r#"[{"type":"function"}]"#),
            ("mock_timeout", "true"),
            ("mock_delay", "1"),
        ] {
            let body = format!(
                r#"{{"model":"g","messages":[{{"role":"user","content":"hi"}}],"{field}":{value}}}"#
            );
            let e = parse(&body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{}", e.message);
            assert!(e.message.contains("mock_testing_"), "{}", e.message);
        }
        // A null is no mock, as for the mock_testing_* flags.
        let r = parse(
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"mock_response":null}"#,
        )
        .unwrap();
        assert!(r.passthrough.is_empty(), "{:?}", r.passthrough);
    }

    /// An answer to several choices, or one bound to a JSON format, is never continued.
    #[test]
    fn what_a_continuation_cannot_keep() {
        let with = |extra: &str| {
            parse(&format!(
                r#"{{"model":"g","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#
            ))
            .unwrap()
            .unfit_for_continuation()
        };
        assert_eq!(with(""), None);
        assert_eq!(with(r#","n":1,"response_format":{"type":"text"}"#), None);
        assert!(with(r#","n":2"#).is_some());
        assert!(with(r#","response_format":{"type":"json_object"}"#).is_some());
        assert!(with(r#","response_format":{"type":"json_schema","json_schema":{}}"#).is_some());
    }

    /// A UTF-8 byte-order mark (Windows PowerShell's `Out-File`, .NET's `UTF8Encoding(true)`)
    /// is skipped, as RFC 8259 §8.1 lets a parser do: the body parses as it would without.
    /// Before, it was a 400 "not valid JSON ... at line 1 column 1".
    #[test]
    fn a_utf8_byte_order_mark_is_skipped() {
        let text = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let marked = [&b"\xEF\xBB\xBF"[..], text.as_bytes()].concat();
        let r = ChatRequest::parse(&marked, &Limits::default()).expect("parsed");
        assert_eq!(r, parse(text).unwrap());
        // Only one mark, at the very start: a second is no JSON.
        let twice = [&b"\xEF\xBB\xBF\xEF\xBB\xBF"[..], text.as_bytes()].concat();
        let e = ChatRequest::parse(&twice, &Limits::default()).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    /// UTF-16 and UTF-32 bodies, with a byte-order mark or without (RFC 4627 §3's pattern of
    /// zero bytes in the first characters), are a 400 that says the body must be UTF-8 and
    /// which encoding it looks like. Before, a JSON syntax error at column 1.
    #[test]
    fn utf16_and_utf32_bodies_are_refused_naming_their_encoding() {
        let text = r#" {"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let utf16 = |big: bool| -> Vec<u8> {
            text.encode_utf16()
                .flat_map(|u| {
                    if big {
                        u.to_be_bytes()
                    } else {
                        u.to_le_bytes()
                    }
                })
                .collect()
        };
        let utf32 = |big: bool| -> Vec<u8> {
            text.chars()
                .flat_map(|c| {
                    let c = c as u32;
                    if big {
                        c.to_be_bytes()
                    } else {
                        c.to_le_bytes()
                    }
                })
                .collect()
        };
        let cases = [
            ([&b"\xFF\xFE"[..], &utf16(false)].concat(), "UTF-16LE", true),
            ([&b"\xFE\xFF"[..], &utf16(true)].concat(), "UTF-16BE", true),
            (
                [&b"\xFF\xFE\x00\x00"[..], &utf32(false)].concat(),
                "UTF-32LE",
                true,
            ),
            (
                [&b"\x00\x00\xFE\xFF"[..], &utf32(true)].concat(),
                "UTF-32BE",
                true,
            ),
            (utf16(false), "UTF-16LE", false),
            (utf16(true), "UTF-16BE", false),
            (utf32(false), "UTF-32LE", false),
            (utf32(true), "UTF-32BE", false),
        ];
        for (body, encoding, marked) in cases {
            let e = ChatRequest::parse(&body, &Limits::default()).unwrap_err();
            assert!(
                e.message.contains("must be UTF-8 JSON") && e.message.contains(encoding),
                "{encoding} (marked: {marked}): {}",
                e.message
            );
            assert_eq!(
                e.message.contains("byte-order mark"),
                marked,
                "{}",
                e.message
            );
            assert_eq!((e.param, e.limit), (None, None));
        }
        // Short bodies are judged without reading past their end.
        for short in [&b""[..], b"\xFF", b"\x00", b"{\x00", b"\xFE"] {
            assert!(ChatRequest::parse(short, &Limits::default()).is_err());
        }
    }

    #[test]
    fn stop_is_a_string_or_strings_and_is_read_either_way() {
        let with = |stop: &str| {
            parse(&format!(
                r#"{{"model":"m","messages":[{{"role":"user"}}],"stop":{stop}}}"#
            ))
        };
        assert_eq!(with(r#""END""#).unwrap().stop_sequences(), ["END"]);
        assert_eq!(with(r#"["a","b"]"#).unwrap().stop_sequences(), ["a", "b"]);
        assert!(with("null").unwrap().stop_sequences().is_empty());
        assert!(with("[]").unwrap().stop_sequences().is_empty());
        let e = with(r#"["a",7]"#).unwrap_err();
        assert_eq!(
            (e.param.as_deref(), e.message.as_str()),
            (
                Some("stop[1]"),
                "`stop[1]` must be a string (a stop sequence)"
            )
        );
        let e = with(r#"{"a":1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stop"));
        // Forwarded as sent.
        let r = with(r#"["a","b"]"#).unwrap();
        let body: Value = serde_json::from_slice(&r.upstream_body_with(
            &UpstreamCall {
                model: "m",
                stream: true,
                stream_options: true,
            },
            None,
            &r.messages,
        ))
        .unwrap();
        assert_eq!(body["stop"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn bad_input_names_the_field() {
        assert!(parse("{").unwrap_err().message.contains("not valid JSON"));
        assert_eq!(
            parse("[]").unwrap_err().message,
            "request body must be a JSON object"
        );
        assert_eq!(
            parse(r#"{"messages":[{"role":"user"}]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("model")
        );
        assert_eq!(
            parse(r#"{"model":"m"}"#).unwrap_err().param.as_deref(),
            Some("messages")
        );
        assert_eq!(
            parse(r#"{"model":"m","messages":[]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("messages")
        );
        assert_eq!(
            parse(r#"{"model":"m","messages":[{}]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("messages[0]")
        );
        let e = parse(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#).unwrap_err();
        assert_eq!(
            (e.param.as_deref(), e.message.as_str()),
            (Some("stream"), "`stream` must be a boolean")
        );
        let e =
            parse(r#"{"model":"m","messages":[{"role":"user"}],"num_retries":"x"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("num_retries"));
        let e =
            parse(r#"{"model":"m","messages":[{"role":"user"}],"cooldown_time":1}"#).unwrap_err();
        assert!(e.message.contains("gateway-wide"));
        let e = parse(r#"{"model":"m","messages":[{"role":"user"}],"mock_testing_fallbacks":true,"mock_testing_rate_limit_error":true}"#)
            .unwrap_err();
        assert!(e.message.contains("only one"));
        let e =
            parse(r#"{"model":"m","messages":[{"role":"user"}],"cooldown_lone_deployment":true}"#)
                .unwrap_err();
        assert!(e.message.contains("gateway-wide"), "{}", e.message);
    }

    /// `n` is the client's own: more choices than `max_choices` is refused here, before any
    /// deployment answers with them and is blamed for it; `n` must be a positive integer.
    /// JavaScript clients that cut a string between the two halves of a UTF-16 pair send a
    /// lone surrogate escape (`\ud83d`), which JSON text cannot carry: the error says so,
    /// rather than only serde_json's "unexpected end of hex escape".
    #[test]
    fn a_lone_surrogate_escape_is_named_as_such() {
        for text in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi \ud83d"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"\ud83dx"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"\ude00"}]}"#,
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.message.contains("lone UTF-16 surrogate") && e.message.contains("column"),
                "{text}: {}",
                e.message
            );
        }
    }

    /// Windows PowerShell 5.1 sends a JSON body as ISO-8859-1: `café` arrives as
    /// `caf\xE9`. The error names the byte and the encoding to use, where serde_json alone
    /// said only "invalid unicode code point".
    #[test]
    fn a_latin1_body_is_told_to_be_sent_as_utf8() {
        let body = b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}";
        let e = ChatRequest::parse(body, &Limits::default()).unwrap_err();
        assert!(
            e.message.contains("byte 0xE9 at offset 54 is not UTF-8")
                && e.message.contains("encoded as UTF-8"),
            "{}",
            e.message
        );
        // The offset counts the bytes as sent, a byte-order mark included.
        let marked = [&b"\xEF\xBB\xBF"[..], &body[..]].concat();
        let e = ChatRequest::parse(&marked, &Limits::default()).unwrap_err();
        assert!(
            e.message.contains("byte 0xE9 at offset 57 is not UTF-8"),
            "{}",
            e.message
        );
        // A syntax error before the byte is that error, with no word about encodings.
        let broken = b"{\"model\":\"m\",,\"c\":\"caf\xe9\"}";
        let e = ChatRequest::parse(broken, &Limits::default()).unwrap_err();
        assert!(
            e.message.contains("key must be a string") && !e.message.contains("UTF-8"),
            "{}",
            e.message
        );
    }

    #[test]
    fn n_is_bounded_by_max_choices() {
        let with_n = |n: &str| {
            parse(&format!(
                r#"{{"model":"m","messages":[{{"role":"user"}}],"n":{n}}}"#
            ))
        };
        let max = Limits::default().max_choices;
        assert!(with_n(&max.to_string()).is_ok());
        assert!(with_n("null").is_ok());
        let e = with_n(&(max + 1).to_string()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        assert!(e.message.contains("max_choices"), "{}", e.message);
        assert_eq!(e.limit, Some("max_choices"), "the refusal names its limit");
        for bad in ["0", "-1", "1.5", "\"2\"", "true"] {
            let e = with_n(bad).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("n"), "{bad}");
        }
    }

    #[test]
    fn request_level_fallbacks_in_both_forms() {
        let r =
            parse(r#"{"model":"a","messages":[{"role":"user"}],"fallbacks":["b","c"]}"#).unwrap();
        assert_eq!(
            r.settings.fallbacks,
            Some(vec![FallbackEntry::new("a", &["b", "c"])])
        );
        let r = parse(r#"{"model":"a","messages":[{"role":"user"}],"fallbacks":[{"a":["b"]}],"mid_stream":"error"}"#).unwrap();
        assert_eq!(
            r.settings.fallbacks,
            Some(vec![FallbackEntry::new("a", &["b"])])
        );
        assert_eq!(
            r.settings.mid_stream,
            Some(crate::config::MidStreamPolicy::Error)
        );
    }

    #[test]
    fn client_side_fallback_objects_carry_their_messages_forward() {
        let r = parse(
            r#"{"model":"a","messages":[{"role":"user","content":"long"}],"fallbacks":[
                {"model":"b"},
                {"model":"c","messages":[{"role":"user","content":"short"}]},
                {"model":"d"},
                {"model":"b","messages":[{"role":"user","content":"other"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.settings.fallbacks,
            Some(vec![FallbackEntry::new("a", &["b", "c", "d", "b"])])
        );
        let first = |target: &str| r.messages_for(target)[0]["content"].clone();
        assert_eq!(
            first("b"),
            "long",
            "before any entry with messages; first b wins"
        );
        assert_eq!(first("c"), "short");
        assert_eq!(
            first("d"),
            "short",
            "carried forward, as kwargs.update does"
        );
        assert_eq!(first("a"), "long");
    }

    #[test]
    fn every_request_fallback_list_is_bounded_not_only_the_outer_one() {
        // One `{group: [...]}` entry passed the outer bound with any number of targets, and
        // each repeated target was logged as a skip: one request, millions of log lines.
        let limits = Limits {
            max_request_fallbacks: 2,
            ..Limits::default()
        };
        for (field, value, param) in [
            ("fallbacks", r#"[{"a":["b","b","b"]}]"#, "fallbacks[0].a"),
            (
                "context_window_fallbacks",
                r#"[{"a":["b"]},{"a":["c"]},{"a":["d"]}]"#,
                "context_window_fallbacks",
            ),
            (
                "context_window_fallbacks",
                r#"[{"a":["b","c","d"]}]"#,
                "context_window_fallbacks[0].a",
            ),
            (
                "content_policy_fallbacks",
                r#"[{"a":["b","c","d"]}]"#,
                "content_policy_fallbacks[0].a",
            ),
            ("default_fallbacks", r#"["b","c","d"]"#, "default_fallbacks"),
            // A group named like a client-side object's fields is bounded as any other.
            (
                "context_window_fallbacks",
                r#"[{"model":["b","c","d"]}]"#,
                "context_window_fallbacks[0].model",
            ),
            (
                "fallbacks",
                r#"[{"a":["b"]},{"messages":["b","c","d"]}]"#,
                "fallbacks[1].messages",
            ),
        ] {
            let body =
                format!(r#"{{"model":"a","messages":[{{"role":"user"}}],"{field}":{value}}}"#);
            let e = ChatRequest::parse(body.as_bytes(), &limits).unwrap_err();
            assert_eq!(
                e.limit,
                Some("max_request_fallbacks"),
                "{field} {value}: {e:?}"
            );
            assert_eq!(e.param.as_deref(), Some(param), "{e:?}");
            assert!(e.message.contains("max_request_fallbacks = 2"), "{e:?}");
        }
        let ok = r#"{"model":"a","messages":[{"role":"user"}],"fallbacks":[{"a":["b","c"]},{"b":["c"]}],"default_fallbacks":["b","c"]}"#;
        ChatRequest::parse(ok.as_bytes(), &limits).expect("within the bound at every level");
        let carried = r#"{"model":"a","messages":[{"role":"user"}],"fallbacks":[{"model":"b","messages":[{"role":"user"},{"role":"user"},{"role":"user"}]}]}"#;
        ChatRequest::parse(carried.as_bytes(), &limits)
            .expect("an entry's messages are bounded by max_messages, not here");
    }

    #[test]
    fn every_model_name_a_request_gives_is_bounded() {
        let limits = Limits {
            max_model_name_bytes: 8,
            ..Limits::default()
        };
        let with = |model: &str, extra: &str| {
            let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user"}}]{extra}}}"#);
            ChatRequest::parse(body.as_bytes(), &limits)
        };
        with("12345678", "").expect("at the bound");
        let path = |name: &str| {
            let body = r#"{"model":"x","messages":[{"role":"user"}]}"#;
            ChatRequest::parse_as(body.as_bytes(), &limits, Some(name))
        };
        path("12345678").expect("a path's name at the bound");
        for (e, param) in [
            (with("123456789", "").unwrap_err(), "model"),
            (path("123456789").unwrap_err(), "model"),
            (
                with("a", r#","fallbacks":["b","123456789"]"#).unwrap_err(),
                "fallbacks[1]",
            ),
            (
                with("a", r#","fallbacks":[{"model":"123456789"}]"#).unwrap_err(),
                "fallbacks[0].model",
            ),
            (
                with("a", r#","fallbacks":[{"a":["b","123456789"]}]"#).unwrap_err(),
                "fallbacks[0].a[1]",
            ),
            (
                with("a", r#","context_window_fallbacks":[{"123456789":["b"]}]"#).unwrap_err(),
                "context_window_fallbacks[0]",
            ),
            (
                with("a", r#","default_fallbacks":["123456789"]"#).unwrap_err(),
                "default_fallbacks[0]",
            ),
            // A group's name as a key: the 400 for an unknown group repeated it three times.
            (
                with(
                    "a",
                    r#","model_group_retry_policy":{"a":{},"123456789":{}}"#,
                )
                .unwrap_err(),
                "model_group_retry_policy",
            ),
        ] {
            assert_eq!(e.limit, Some("max_model_name_bytes"), "{e:?}");
            assert_eq!(e.param.as_deref(), Some(param), "{e:?}");
            assert!(
                e.message.contains("9 bytes") && !e.message.contains("123456789"),
                "says how long, not what: {e:?}"
            );
        }
    }

    #[test]
    fn a_body_of_too_many_json_values_is_refused_before_it_is_built() {
        // Two bytes of `0,` became a value of about 80 bytes: a 50 MiB body, 2 GiB of tree.
        let limits = Limits {
            max_request_json_values: 1_000,
            ..Limits::default()
        };
        let body = |n: usize| {
            format!(
                r#"{{"model":"a","messages":[{{"role":"user","content":"hi"}}],"x":[{}]}}"#,
                vec!["0"; n].join(",")
            )
        };
        // The body's object, `model`, `messages` and its message (3), `x`: 7 values.
        ChatRequest::parse(body(1_000 - 7).as_bytes(), &limits).expect("at the bound");
        let e = ChatRequest::parse(body(1_000 - 6).as_bytes(), &limits).unwrap_err();
        assert_eq!(e.limit, Some("max_request_json_values"), "{e:?}");
        assert!(
            e.message.contains("more than 1000 JSON values")
                && e.message.contains("max_request_json_values"),
            "{e:?}"
        );
        let e = ChatRequest::parse(b"{\"model\": [1,", &limits).unwrap_err();
        assert_eq!(e.limit, None, "a broken body is still just not JSON: {e:?}");
    }

    #[test]
    fn client_side_fallbacks_are_bounded_and_checked() {
        let body = |fallbacks: &str| {
            format!(r#"{{"model":"a","messages":[{{"role":"user"}}],"fallbacks":{fallbacks}}}"#)
        };
        let limits = Limits {
            max_request_fallbacks: 2,
            ..Limits::default()
        };
        let e = ChatRequest::parse(body(r#"["b","c","d"]"#).as_bytes(), &limits).unwrap_err();
        assert!(e.message.contains("max_request_fallbacks = 2"), "{e:?}");
        assert_eq!(e.limit, Some("max_request_fallbacks"));
        for (fallbacks, param, says) in [
            (
                r#"[{"model":"b","temperature":0}]"#,
                "fallbacks[0].temperature",
                "only `model`",
            ),
            (
                r#"[{"messages":[{"role":"user"}]}]"#,
                "fallbacks[0].model",
                "required",
            ),
            (
                r#"[{"model":"b","messages":[]}]"#,
                "fallbacks[0].messages",
                "must not be empty",
            ),
            (
                r#"[{"model":"b","messages":[{}]}]"#,
                "fallbacks[0].messages[0]",
                "string `role`",
            ),
            (
                r#"[{"model":"b","messages":{}}]"#,
                "fallbacks[0].messages",
                "must be an array",
            ),
            (r#"["b",{"model":"c"}]"#, "fallbacks", "mixes"),
        ] {
            let e = parse(&body(fallbacks)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{fallbacks}: {e:?}");
            assert!(e.message.contains(says), "{fallbacks}: {e:?}");
        }
        // The `{group: [...]}` form is unchanged.
        let r = parse(&body(r#"[{"a":["b"]}]"#)).unwrap();
        assert_eq!(
            r.settings.fallbacks,
            Some(vec![FallbackEntry::new("a", &["b"])])
        );
        assert!(r.fallback_messages.is_empty());
    }

    const STREAMED: UpstreamCall<'static> = UpstreamCall {
        model: "m-up",
        stream: true,
        stream_options: true,
    };

    #[test]
    fn upstream_body_streams_by_default_and_continues() {
        let r = parse(
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"max_tokens":10,"stream_options":{"include_obfuscation":false}}"#,
        )
        .unwrap();
        let body: Value = serde_json::from_slice(&r.upstream_body(&STREAMED, None)).unwrap();
        assert_eq!(body["model"], "m-up");
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(
            body["stream_options"],
            json!({"include_obfuscation": false, "include_usage": true}),
            "the client's stream_options are kept, include_usage merged in"
        );
        let c = Continuation {
            prefix: "Hel",
            instruction: "go on",
            tokens_left: Some(7),
        };
        let body: Value = serde_json::from_slice(&r.upstream_body(&STREAMED, Some(&c))).unwrap();
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1], json!({"role": "assistant", "content": "Hel"}));
        assert_eq!(messages[2], json!({"role": "user", "content": "go on"}));
        assert_eq!(body["max_tokens"], 7, "only what is left of the budget");
    }

    #[test]
    fn how_a_deployment_is_called_is_its_own_setting() {
        let r = parse(r#"{"model":"a","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#)
            .unwrap();
        let whole = UpstreamCall {
            stream: false,
            ..STREAMED
        };
        let body: Value = serde_json::from_slice(&r.upstream_body(&whole, None)).unwrap();
        assert_eq!(body["stream"], false);
        assert!(
            body.get("stream_options").is_none(),
            "never with stream: false"
        );
        let no_options = UpstreamCall {
            stream_options: false,
            ..STREAMED
        };
        let body: Value = serde_json::from_slice(&r.upstream_body(&no_options, None)).unwrap();
        assert_eq!(body["stream"], true);
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn passthrough_fields_keep_their_order() {
        let r = parse(r#"{"zeta":1,"model":"a","alpha":2,"messages":[{"role":"user"}],"mid":3}"#)
            .unwrap();
        let body = String::from_utf8(r.upstream_body(&STREAMED, None).to_vec()).unwrap();
        let (z, a, m) = (
            body.find("zeta").unwrap(),
            body.find("alpha").unwrap(),
            body.find("mid").unwrap(),
        );
        assert!(z < a && a < m, "{body}");
    }
}
