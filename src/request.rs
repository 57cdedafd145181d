//! A client's chat completion request: parsed, checked, and turned into upstream bodies.
//!
//! Owns: reading `POST /v1/chat/completions` bodies (`model`, `messages`, `stream`, the
//! router settings a request may override, the `mock_testing_*` flags), refusing bad ones
//! with a message that names the field, and building each attempt's upstream body, including
//! the continuation body after a mid-stream failure. Everything the engine does not
//! interpret is passed upstream unchanged.
//!
//! Upstream requests always stream (`stream: true` with usage), whatever the client asked:
//! the engine reads every answer the same way, so timeouts, mid-answer failures and the
//! commit point are identical for both modes. Only the delivery to the client differs.

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
    // Gateway-only: read so that they are refused with a clear message.
    "cooldown_time",
    "allowed_fails",
    "routing_strategy",
    "continuation_prompt",
    "retry_backoff_base",
    "retry_backoff_max",
    "fallback_on_bad_request",
    "rng_seed",
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

/// A request that could not be parsed; becomes a 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    pub message: String,
    /// The offending field, OpenAI's `param`.
    pub param: Option<String>,
}

fn bad(param: &str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        message: message.into(),
        param: Some(param.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk in its stream (`stream_options.include_usage`).
    pub include_usage: bool,
    pub messages: Vec<Value>,
    pub settings: RouterSettings,
    pub mock: Option<FailureClass>,
    /// Everything else in the body, forwarded upstream.
    pub passthrough: Map<String, Value>,
}

impl ChatRequest {
    pub fn parse(body: &[u8], limits: &Limits) -> Result<ChatRequest, BadRequest> {
        let value: Value = serde_json::from_slice(body).map_err(|e| BadRequest {
            message: format!("request body is not valid JSON: {e}"),
            param: None,
        })?;
        let Value::Object(mut body) = value else {
            return Err(BadRequest {
                message: "request body must be a JSON object".into(),
                param: None,
            });
        };
        let model = match body.remove("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m,
            Some(Value::String(_)) | None => return Err(bad("model", "`model` is required")),
            Some(_) => return Err(bad("model", "`model` must be a string")),
        };
        let stream = match body.remove("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(bad("stream", "`stream` must be a boolean")),
        };
        let include_usage = match body.remove("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("stream_options.include_usage", "must be a boolean")),
            },
            Some(_) => return Err(bad("stream_options", "`stream_options` must be an object")),
        };
        let messages = match body.remove("messages") {
            Some(Value::Array(m)) => m,
            None => return Err(bad("messages", "`messages` is required")),
            Some(_) => return Err(bad("messages", "`messages` must be an array")),
        };
        if messages.is_empty() {
            return Err(bad("messages", "`messages` must not be empty"));
        }
        if messages.len() > limits.max_messages {
            return Err(bad(
                "messages",
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
                    &format!("messages[{i}]"),
                    format!("messages[{i}] needs a string `role`"),
                ));
            }
        }
        let mut mock = None;
        for (flag, class) in MOCK_FLAGS {
            match body.remove(*flag) {
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
        let settings = Self::settings(&mut body, &model)?;
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            messages,
            settings,
            mock,
            passthrough: body,
        })
    }

    fn settings(body: &mut Map<String, Value>, model: &str) -> Result<RouterSettings, BadRequest> {
        let mut fields = Map::new();
        for name in SETTINGS_FIELDS {
            if let Some(v) = body.remove(*name) {
                fields.insert((*name).to_string(), v);
            }
        }
        // LiteLLM's request form `fallbacks: ["b", "c"]` means: fallbacks of the requested model.
        if let Some(Value::Array(list)) = fields.get("fallbacks") {
            if !list.is_empty() && list.iter().all(Value::is_string) {
                let list = list.clone();
                fields.insert("fallbacks".into(), json!([{ model: list }]));
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
        Ok(settings)
    }

    /// The upstream body of an attempt at `upstream_model`. With `continuation`, the
    /// partial answer is sent as an assistant message followed by the instruction.
    pub fn upstream_body(&self, upstream_model: &str, continuation: Option<(&str, &str)>) -> Bytes {
        let mut body = self.passthrough.clone();
        body.insert("model".into(), Value::String(upstream_model.to_string()));
        let mut messages = self.messages.clone();
        if let Some((prefix, instruction)) = continuation {
            messages.push(json!({"role": "assistant", "content": prefix}));
            messages.push(json!({"role": "user", "content": instruction}));
        }
        body.insert("messages".into(), Value::Array(messages));
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        Bytes::from(serde_json::to_vec(&body).expect("a JSON map always serialises"))
    }
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
    fn upstream_body_always_streams_and_continues() {
        let r =
            parse(r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#)
                .unwrap();
        let body: Value = serde_json::from_slice(&r.upstream_body("m-up", None)).unwrap();
        assert_eq!(body["model"], "m-up");
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], 0.5);
        let body: Value =
            serde_json::from_slice(&r.upstream_body("m2", Some(("Hel", "go on")))).unwrap();
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1], json!({"role": "assistant", "content": "Hel"}));
        assert_eq!(messages[2], json!({"role": "user", "content": "go on"}));
    }
}
