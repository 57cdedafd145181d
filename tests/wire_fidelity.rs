//! Wire fidelity: through Switchback, a client gets what its provider sent, except the
//! failures. One test per defect of the wire-fidelity issue, each written to fail on the
//! code before its fix, against the whole gateway in memory (see `support`).
//!
//! "What the provider sent" is compared as bytes where the engine promises bytes (stream
//! frames modulo the fields it must set, a JSON completion passed on whole) and as JSON
//! values where it reassembles (a non-streaming answer built from a stream).

mod support;

use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::*;

/// Every `data:` payload of an SSE body, `[DONE]` included.
fn payloads(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn json_payloads(body: &str) -> Vec<Value> {
    payloads(body)
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{e}: {p}")))
        .collect()
}

/// An SSE answer made of exactly these chunk objects, then `[DONE]`.
fn sse_of(chunks: &[Value]) -> http::Response<UpBody> {
    let mut body: String = chunks.iter().map(frame).collect();
    body.push_str("data: [DONE]\n\n");
    sse(body)
}

async fn body_json(r: http::Response<hyper::body::Incoming>) -> Value {
    let t = text(r).await;
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"))
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

// 1. Key order survives, in both directions: a Structured Outputs schema reaches the
// provider with its properties in the client's order, and chunks reach the client with
// their keys in the provider's order.
#[tokio::test(start_paused = true)]
async fn key_order_survives_both_ways() {
    let net = MemNet::new();
    let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "system_fingerprint": "fp", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "{}"}, "logprobs": null, "finish_reason": null}]});
    let stop = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let (c, s) = (chunk.clone(), stop.clone());
    net.host("up", move |_| sse_of(&[c.clone(), s.clone()]));
    let gw = Gw::start(ONE_GROUP, &net);
    let mut body = chat_body("g", true);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "r", "strict": true,
        "schema": {"type": "object", "properties": {"steps": {"type": "array"}, "final_answer": {"type": "string"}},
                   "required": ["steps", "final_answer"]}}});
    let streamed = text(gw.chat(None, body.clone()).await).await;
    let sent = &net.calls("up")[0].body;
    assert_eq!(
        keys(&sent["response_format"]["json_schema"]["schema"]["properties"]),
        ["steps", "final_answer"],
        "the schema's order reaches the provider"
    );
    let first = &payloads(&streamed)[0];
    assert_eq!(
        first,
        &chunk.to_string(),
        "the chunk's bytes come through unchanged"
    );
}

// 2. Upstreams that repeat `index: 0` or omit it for every tool call: the non-streaming
// answer has two calls, with their own names and arguments.
#[tokio::test(start_paused = true)]
async fn tool_calls_without_distinct_indexes_stay_apart() {
    for with_index in [true, false] {
        let net = MemNet::new();
        net.host("up", move |_| {
            let call = |id: &str, city: &str| {
                let mut c = json!({"id": id, "type": "function",
                    "function": {"name": "get_weather", "arguments": format!("{{\"city\":\"{city}\"}}")}});
                if with_index {
                    c["index"] = json!(0);
                }
                json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": {"tool_calls": [c]}, "finish_reason": null}]})
            };
            sse_of(&[
                chunk_json("m", json!({"role": "assistant", "content": null}), None),
                call("call_a", "Oslo"),
                call("call_b", "Rome"),
                chunk_json("m", json!({}), Some("tool_calls")),
            ])
        });
        let gw = Gw::start(ONE_GROUP, &net);
        let v = body_json(gw.chat(None, chat_body("g", false)).await).await;
        let calls = &v["choices"][0]["message"]["tool_calls"];
        assert_eq!(calls.as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Rome\"}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }
}

/// Group `g` (host `up`) whose answer is continued by group `g2` (host `up2`), no retries.
const CONTINUED_ON_G2: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: g2, litellm_params: {model: openai/m2, api_base: "http://up2/v1"}, model_info: {id: d2}}
router_settings: {num_retries: 0, mid_stream: continue, fallbacks: [{g: [g2]}]}
"#;

/// A group whose first attempt delivers `delivered` chunks and then resets, with a second
/// deployment behind it.
fn fails_after(delivered: Vec<Value>) -> (MemNet, Gw) {
    fails_after_then(delivered, |_| sse_answer("m2", &["fresh"]))
}

/// [`fails_after`], the second deployment answering with `continuation`.
fn fails_after_then(
    delivered: Vec<Value>,
    continuation: impl Fn(UpCall) -> http::Response<UpBody> + Send + Sync + 'static,
) -> (MemNet, Gw) {
    let net = MemNet::new();
    net.host("up", move |_| {
        let (tx, r) = sse_channel();
        let frames: Vec<String> = delivered.iter().map(frame).collect();
        tokio::spawn(async move {
            for f in frames {
                let _ = tx.send(Ok(f.into())).await;
            }
            // Let the frames reach the gateway before the connection breaks.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let _ = tx
                .send(Err(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                )))
                .await;
        });
        r
    });
    net.host("up2", continuation);
    let gw = Gw::start(CONTINUED_ON_G2, &net);
    (net, gw)
}

// 3. `mid_stream: continue` continues only text of one choice. A partial tool call, or
// n = 2, ends as under `error`, in both modes, with no second call.
#[tokio::test(start_paused = true)]
async fn only_text_of_one_choice_is_continued() {
    let partial_tool = vec![
        chunk_json("m", json!({"role": "assistant", "content": null}), None),
        chunk_json(
            "m",
            json!({"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{\"ci"}}]}),
            None,
        ),
    ];
    let two_choices = vec![
        json!({"id": "x", "model": "m", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "A"}, "finish_reason": null},
            {"index": 1, "delta": {"role": "assistant", "content": "B"}, "finish_reason": null}]}),
    ];
    for delivered in [partial_tool, two_choices] {
        for stream in [false, true] {
            let (net, gw) = fails_after(delivered.clone());
            let r = gw.chat(None, chat_body("g", stream)).await;
            let body = text(r).await;
            assert!(
                gw.saw("continuation_refused"),
                "stream={stream}: {:#?}",
                gw.events()
            );
            assert!(net.calls("up2").is_empty(), "no continuation was asked");
            if stream {
                let last = json_payloads(&body).pop().unwrap();
                assert!(
                    last.get("error").is_some(),
                    "ends with an error event: {body}"
                );
                assert!(!body.contains("[DONE]"));
            } else {
                assert!(body.contains("\"error\""), "{body}");
            }
        }
    }
}

// 3b. Text is continued, and both modes ask the same continuation.
#[tokio::test(start_paused = true)]
async fn text_is_continued_the_same_way_in_both_modes() {
    let mut bodies = Vec::new();
    let mut answers = Vec::new();
    for stream in [false, true] {
        let (net, gw) = fails_after(vec![chunk_json(
            "m",
            json!({"role": "assistant", "content": "fre"}),
            None,
        )]);
        let r = gw.chat(None, chat_body("g", stream)).await;
        let body = text(r).await;
        let sent = net.calls("up2")[0].body.clone();
        assert_eq!(
            sent["messages"][1],
            json!({"role": "assistant", "content": "fre"})
        );
        bodies.push(sent);
        answers.push(if stream {
            json_payloads(&body)
                .iter()
                .filter_map(|c| {
                    c.pointer("/choices/0/delta/content")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect::<String>()
        } else {
            serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        });
    }
    assert_eq!(bodies[0], bodies[1], "identical upstream requests");
    assert_eq!(answers[0], answers[1], "the same text in both modes");
}

/// What one mode's answer says: the text and the reasoning of choice 0, and its finish.
async fn text_reasoning_finish(
    r: http::Response<hyper::body::Incoming>,
    stream: bool,
) -> [String; 3] {
    let body = text(r).await;
    let pick = |v: &Value, path: &str| v.pointer(path).and_then(Value::as_str).map(str::to_string);
    if stream {
        let chunks = json_payloads(&body);
        let joined = |path: &str| {
            chunks
                .iter()
                .filter_map(|c| pick(c, path))
                .collect::<String>()
        };
        [
            joined("/choices/0/delta/content"),
            joined("/choices/0/delta/reasoning_content"),
            joined("/choices/0/finish_reason"),
        ]
    } else {
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let m = |path: &str| pick(&v, path).unwrap_or_default();
        [
            m("/choices/0/message/content"),
            m("/choices/0/message/reasoning_content"),
            m("/choices/0/finish_reason"),
        ]
    }
}

fn with_stop(stream: bool, stop: &str) -> Value {
    let mut body = chat_body("g", stream);
    body["stop"] = json!(stop);
    body
}

// 3c. While a continuation's first text may complete a stop sequence the delivered text
// began, what comes before that text is no part of the decision and is not held: a thinking
// model's reasoning reaches the client, in both modes, even when the answer then ends at
// the seam (before, it was held and dropped with the continuation's text).
#[tokio::test(start_paused = true)]
async fn what_comes_before_a_continuations_text_is_not_held_at_the_seam() {
    for stream in [false, true] {
        let (_net, gw) = fails_after_then(
            vec![chunk_json(
                "m",
                json!({"role": "assistant", "content": "alpha EN"}),
                None,
            )],
            |_| {
                sse_of(&[
                    chunk_json("m2", json!({"role": "assistant", "content": ""}), None),
                    chunk_json("m2", json!({"reasoning_content": "They stopped "}), None),
                    chunk_json("m2", json!({"reasoning_content": "mid-word."}), None),
                    chunk_json("m2", json!({"content": "D omega"}), None),
                    chunk_json("m2", json!({}), Some("stop")),
                ])
            },
        );
        let r = gw.chat(None, with_stop(stream, "END")).await;
        let [content, reasoning, finish] = text_reasoning_finish(r, stream).await;
        assert!(gw.saw("stop_sequence_at_seam"), "stream={stream}");
        assert_eq!(content, "alpha EN", "stream={stream}");
        assert_eq!(reasoning, "They stopped mid-word.", "stream={stream}");
        assert_eq!(finish, "stop", "stream={stream}");
    }
}

// 3c-2. A continuation from a provider that puts a finish reason on every chunk (Open
// WebUI, Gemini relays): its first chunk's `stop` is no end, and the seam went unguarded
// after it, so a stop sequence completed by its second chunk ("N" then "D") was served, in
// both modes.
#[tokio::test(start_paused = true)]
async fn a_finish_on_every_chunk_does_not_unguard_the_seam() {
    for stream in [false, true] {
        let (_net, gw) = fails_after_then(
            vec![chunk_json(
                "m",
                json!({"role": "assistant", "content": "alpha E"}),
                None,
            )],
            |_| {
                sse_of(&[
                    chunk_json("m2", json!({"content": "N"}), Some("stop")),
                    chunk_json("m2", json!({"content": "D omega"}), Some("stop")),
                ])
            },
        );
        let r = gw.chat(None, with_stop(stream, "END")).await;
        let [content, _, finish] = text_reasoning_finish(r, stream).await;
        assert!(gw.saw("stop_sequence_at_seam"), "stream={stream}");
        assert_eq!(content, "alpha E", "stream={stream}");
        assert_eq!(finish, "stop", "stream={stream}");
    }
}

// 3c-3. Before commit, a finish with nothing of the answer before it, then a broken stream
// (a provider with a finish on every chunk, cut after its role chunk): nothing was
// delivered, so the next deployment is asked, where it was served as an empty answer.
#[tokio::test(start_paused = true)]
async fn a_finish_before_any_output_then_a_break_is_retried_elsewhere() {
    for stream in [false, true] {
        let (_net, gw) = fails_after(vec![chunk_json(
            "m",
            json!({"role": "assistant", "content": ""}),
            Some("stop"),
        )]);
        let r = gw.chat(None, chat_body("g", stream)).await;
        let [content, _, finish] = text_reasoning_finish(r, stream).await;
        assert_eq!(content, "fresh", "stream={stream}: {:#?}", gw.events());
        assert_eq!(finish, "stop", "stream={stream}");
    }
}

// 3c-5. The same in a continuation: its first chunk a role chunk with `stop` (a provider
// with a finish reason on every chunk), then a reset. Nothing of it was delivered, so its
// finish is no end of the answer: served, the cut answer read as complete.
#[tokio::test(start_paused = true)]
async fn a_continuations_finish_before_any_output_then_a_break_ends_nothing() {
    for stream in [false, true] {
        let (_net, gw) = fails_after_then(
            vec![chunk_json(
                "m",
                json!({"role": "assistant", "content": "The answer is"}),
                None,
            )],
            |_| {
                let (tx, r) = sse_channel();
                let role = frame(&chunk_json(
                    "m2",
                    json!({"role": "assistant", "content": ""}),
                    Some("stop"),
                ));
                tokio::spawn(async move {
                    let _ = tx.send(Ok(role.into())).await;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    let _ = tx
                        .send(Err(std::io::Error::from(
                            std::io::ErrorKind::ConnectionReset,
                        )))
                        .await;
                });
                r
            },
        );
        let r = gw.chat(None, chat_body("g", stream)).await;
        let status = r.status();
        let text = text(r).await;
        let served_as_complete = status == 200
            && !text.contains("\"error\"")
            && answered_text(&text, stream) == "The answer is";
        assert!(
            !served_as_complete,
            "stream={stream}: a cut answer served as complete: {text}"
        );
    }
}

// 3c-4. With `n: 2`, an answer whose two choices have both finished is complete: a break
// after it (a reset before `[DONE]`) took the whole answer away, a 502 or an error event.
#[tokio::test(start_paused = true)]
async fn every_choice_asked_for_finished_then_a_break_is_served() {
    let choice = |index: u64, delta: Value, finish: Option<&str>| {
        json!({"id": "x", "model": "m", "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})
    };
    for stream in [false, true] {
        let (net, gw) = fails_after(vec![
            choice(0, json!({"role": "assistant", "content": "A"}), None),
            choice(1, json!({"role": "assistant", "content": "B"}), None),
            choice(0, json!({}), Some("stop")),
            choice(1, json!({}), Some("stop")),
        ]);
        let mut body = chat_body("g", stream);
        body["n"] = json!(2);
        let r = gw.chat(None, body).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let text = text(r).await;
        assert!(
            !text.contains("\"error\""),
            "stream={stream}: the answer was complete: {text}"
        );
        assert!(net.calls("up2").is_empty(), "stream={stream}");
        if !stream {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["choices"][1]["message"]["content"], "B", "{v}");
            assert_eq!(v["choices"][1]["finish_reason"], "stop", "{v}");
        }
    }
}

// 3d. What is held at a seam is bounded by `max_precommit_buffer_bytes`: past it, the
// continuation is delivered as sent and the seam goes unguarded, where before an upstream
// that sent text and then content-less chunks without end had all of them held.
#[tokio::test(start_paused = true)]
async fn what_a_seam_holds_is_bounded() {
    // "D", then `empties` empty deltas of about 100 bytes each, then "! more".
    let answer = |empties: usize| {
        move |_| {
            let mut chunks = vec![chunk_json("m2", json!({"content": "D"}), None)];
            chunks.extend((0..empties).map(|_| chunk_json("m2", json!({"content": ""}), None)));
            chunks.push(chunk_json("m2", json!({"content": "! more"}), None));
            chunks.push(chunk_json("m2", json!({}), Some("stop")));
            sse_of(&chunks)
        }
    };
    // 400 of them: 40 KB, over the default 16 KiB; 10: under it, and the answer ends at
    // the seam.
    for (empties, stopped, expected) in [(400, false, "alpha END! more"), (10, true, "alpha EN")] {
        for stream in [false, true] {
            let delivered = json!({"role": "assistant", "content": "alpha EN"});
            let (_net, gw) =
                fails_after_then(vec![chunk_json("m", delivered, None)], answer(empties));
            let r = gw.chat(None, with_stop(stream, "END!")).await;
            let [content, _, finish] = text_reasoning_finish(r, stream).await;
            let case = format!("{empties} empty chunks, stream={stream}");
            assert_eq!(gw.saw("stop_sequence_at_seam"), stopped, "{case}");
            assert_eq!(content, expected, "{case}");
            assert_eq!(finish, "stop", "{case}");
        }
    }
}

// 4. Azure opens its stream with `choices: []` and `prompt_filter_results`: an answer, not a
// malformed response, and the chunk reaches a streaming client as Azure sent it.
#[tokio::test(start_paused = true)]
async fn azure_prompt_filter_chunks_pass() {
    let azure = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}]});
    let net = MemNet::new();
    let a = azure.clone();
    net.host("up", move |_| {
        let mut chunks = vec![a.clone()];
        chunks.push(json!({"id": "az-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null,
                         "content_filter_results": {}}]}));
        chunks.push(chunk_json("gpt-4o", json!({}), Some("stop")));
        sse_of(&chunks)
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let v = body_json(gw.chat(None, chat_body("g", false)).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hi", "{v}");
    assert!(
        v.get("prompt_filter_results").is_some(),
        "provider fields survive: {v}"
    );
    let s = text(gw.chat(None, chat_body("g", true)).await).await;
    let first: Value = serde_json::from_str(&payloads(&s)[0]).unwrap();
    assert_eq!(
        first["prompt_filter_results"],
        azure["prompt_filter_results"]
    );
}

const FAKE_STREAM: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/o3, api_base: "http://up/v1", fake_stream: true}, model_info: {id: d}}
"#;

// 5. A deployment called without streaming (`fake_stream`): both modes call it with
// `stream: false`; a non-streaming client gets its JSON as it came, a streaming one gets it
// re-chunked.
#[tokio::test(start_paused = true)]
async fn fake_stream_deployments_are_called_without_streaming() {
    let completion = r#"{"id":"o3-1","object":"chat.completion","created":7,"model":"o3","choices":[{"index":0,"message":{"role":"assistant","content":"done","refusal":null,"annotations":[]},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},"service_tier":"default"}"#;
    let net = MemNet::new();
    net.host("up", move |_| {
        let mut r = sse(completion);
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    });
    let gw = Gw::start(FAKE_STREAM, &net);
    let whole = text(gw.chat(None, chat_body("g", false)).await).await;
    assert_eq!(whole, completion, "byte for byte");
    let streamed = text(gw.chat(None, chat_body("g", true)).await).await;
    let chunks = json_payloads(&streamed);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "done");
    assert!(streamed.ends_with("data: [DONE]\n\n"));
    for call in net.calls("up") {
        assert_eq!(call.body["stream"], false);
        assert!(call.body.get("stream_options").is_none());
    }
}

// 6. `stream_options`: the client's own fields are kept and `include_usage` merged in; a
// deployment with `send_stream_options: false` gets none.
#[tokio::test(start_paused = true)]
async fn stream_options_are_merged_or_left_out() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["a"]));
    net.host("up2", |_| sse_answer("m", &["a"]));
    let gw = Gw::start(
        r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
  - {model_name: h, litellm_params: {model: openai/m, api_base: "http://up2/v1", send_stream_options: false}}
"#,
        &net,
    );
    let mut body = chat_body("g", true);
    body["stream_options"] = json!({"include_obfuscation": false});
    let _ = text(gw.chat(None, body.clone()).await).await;
    assert_eq!(
        net.calls("up")[0].body["stream_options"],
        json!({"include_obfuscation": false, "include_usage": true})
    );
    body["model"] = json!("h");
    let _ = text(gw.chat(None, body).await).await;
    assert!(net.calls("up2")[0].body.get("stream_options").is_none());
}

// 7. The non-streaming answer keeps every field: logprobs, service_tier, a legacy
// function_call, audio, annotations, reasoning_content, metadata, a provider's own.
#[tokio::test(start_paused = true)]
async fn the_aggregate_keeps_every_field() {
    let net = MemNet::new();
    net.host("up", |_| {
        let c = |choice: Value| {
            json!({"id": "r1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "service_tier": "default", "system_fingerprint": "fp", "x_provider": {"a": 1},
                "choices": [choice]})
        };
        sse_of(&[
            c(json!({"index": 0, "delta": {"role": "assistant", "reasoning_content": "think "}, "logprobs": {"content": [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}]}, "finish_reason": null})),
            c(json!({"index": 0, "delta": {"reasoning_content": "hard", "content": "a", "annotations": [{"type": "url_citation", "url_citation": {"url": "u"}}]}, "logprobs": {"content": [{"token": "b", "logprob": -0.25, "bytes": [98], "top_logprobs": []}]}, "finish_reason": null})),
            c(json!({"index": 0, "delta": {"function_call": {"name": "f", "arguments": "{"}}, "finish_reason": null})),
            c(json!({"index": 0, "delta": {"function_call": {"arguments": "}"}, "audio": {"id": "au", "transcript": "hi"}}, "finish_reason": null})),
            c(json!({"index": 0, "delta": {}, "finish_reason": "function_call"})),
        ])
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let v = body_json(gw.chat(None, chat_body("g", false)).await).await;
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "think hard");
    assert_eq!(m["function_call"], json!({"name": "f", "arguments": "{}"}));
    assert_eq!(m["audio"]["transcript"], "hi");
    assert_eq!(m["annotations"][0]["type"], "url_citation");
    assert_eq!(
        v["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        v["choices"][0]["logprobs"]["content"][1]["logprob"],
        json!(-0.25)
    );
    assert_eq!(v["choices"][0]["finish_reason"], "function_call");
    assert_eq!(v["service_tier"], "default");
    assert_eq!(v["system_fingerprint"], "fp");
    assert_eq!(v["x_provider"], json!({"a": 1}));
    assert_eq!(v["id"], "r1");
}

// 8. `role` is stripped only for a choice that already had one: with n = 2, each choice's
// first delta keeps its role.
#[tokio::test(start_paused = true)]
async fn role_is_kept_once_per_choice() {
    let net = MemNet::new();
    net.host("up", |_| {
        let c = |i: u64, d: Value| {
            json!({"id": "n2", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": i, "delta": d, "finish_reason": null}]})
        };
        sse_of(&[
            c(0, json!({"role": "assistant", "content": "A"})),
            c(1, json!({"role": "assistant", "content": "B"})),
            c(0, json!({"content": "a"})),
            c(1, json!({"content": "b"})),
        ])
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let s = text(gw.chat(None, chat_body("g", true)).await).await;
    let chunks = json_payloads(&s);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["role"], "assistant",
        "choice 1's first"
    );
    let v = body_json(gw.chat(None, chat_body("g", false)).await).await;
    assert_eq!(v["choices"][1]["message"]["content"], "Bb");
}

// 9. After a retry past commit, the metadata never comes as a `choices: []` chunk (the
// canonical `chunk.choices[0].delta.content` loop would raise IndexError); it rides on the
// last chunk.
#[tokio::test(start_paused = true)]
async fn post_commit_metadata_never_arrives_without_choices() {
    let (_net, gw) = fails_after(vec![chunk_json(
        "m",
        json!({"role": "assistant", "content": "fre"}),
        None,
    )]);
    let s = text(gw.chat(None, chat_body("g", true)).await).await;
    let chunks = json_payloads(&s);
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "{s}"
    );
    let meta = chunks
        .iter()
        .find_map(|c| c.get("switchback"))
        .expect("metadata sent");
    assert_eq!(meta["attempted_fallbacks"], 1);
}

// 10. A JSON answer to a stream request reaches a streaming client as chunks.
#[tokio::test(start_paused = true)]
async fn a_json_answer_to_a_stream_request_is_rechunked() {
    let net = MemNet::new();
    net.host("up", |_| {
        json_response(200, &json!({"id": "j1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]}))
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let s = text(gw.chat(None, chat_body("g", true)).await).await;
    let chunks = json_payloads(&s);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{s}"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "whole");
}

// 11. `finish_reason: content_filter` is an answer, unless a content-policy fallback list
// applies to the group.
#[tokio::test(start_paused = true)]
async fn content_filter_is_an_answer_without_a_content_policy_list() {
    let net = MemNet::new();
    net.host("up", |_| {
        sse_of(&[
            chunk_json(
                "m",
                json!({"role": "assistant", "content": "partial"}),
                None,
            ),
            chunk_json("m", json!({}), Some("content_filter")),
        ])
    });
    net.host("up2", |_| sse_answer("m2", &["clean"]));
    let config = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}}
  - {model_name: g2, litellm_params: {model: openai/m2, api_base: "http://up2/v1"}}
router_settings: {num_retries: 0, fallbacks: [{g: [g2]}]}
"#;
    let gw = Gw::start(config, &net);
    let r = gw.chat(None, chat_body("g", false)).await;
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert!(net.calls("up2").is_empty());
    let with_list = config.replace(
        "fallbacks: [{g: [g2]}]",
        "content_policy_fallbacks: [{g: [g2]}]",
    );
    let gw = Gw::start(&with_list, &net);
    let v = body_json(gw.chat(None, chat_body("g", false)).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "partialclean", "{v}");
}

// 12. Headers and ids: the provider's request id and rate-limit headers come through; the
// response id is the provider's; without one, generated ids differ between gateways.
#[tokio::test(start_paused = true)]
async fn provider_headers_and_ids_come_through() {
    let net = MemNet::new();
    net.host("up", |_| {
        let mut r = sse_of(&[json!({"id": "chatcmpl-provider-9", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]})]);
        let h = r.headers_mut();
        h.insert("x-request-id", "req_abc".parse().unwrap());
        h.insert("x-ratelimit-remaining-requests", "99".parse().unwrap());
        h.insert("openai-processing-ms", "12".parse().unwrap());
        h.insert("set-cookie", "secret=1".parse().unwrap());
        // Names that only begin like a listed one are not on the list.
        h.insert("x-request-id-evil", "leak".parse().unwrap());
        h.insert("openai-processing-ms-x", "leak".parse().unwrap());
        r
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        let h = r.headers().clone();
        assert_eq!(h["x-request-id"], "req_abc", "stream={stream}");
        assert_eq!(h["x-ratelimit-remaining-requests"], "99");
        assert_eq!(h["openai-processing-ms"], "12");
        assert!(h.get("set-cookie").is_none(), "only the allow-list");
        assert!(
            h.get("x-request-id-evil").is_none(),
            "x-request-id is a name"
        );
        assert!(h.get("openai-processing-ms-x").is_none(), "so is this");
        let t = text(r).await;
        assert!(t.contains("chatcmpl-provider-9"), "{t}");
        assert!(!t.contains("chatcmpl-switchback"), "{t}");
    }
    // No id from the provider: each gateway (seeded from the OS by `serve`) makes its own.
    let net = MemNet::new();
    net.host("up", |_| {
        sse_of(&[json!({"object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]})])
    });
    let mut ids = Vec::new();
    for seed in [1, 2] {
        let gw = Gw::start(
            &format!("{ONE_GROUP}  rng_seed: {seed}\n").replace(
                "router_settings: {num_retries: 0}\n  rng_seed",
                "router_settings:\n  num_retries: 0\n  rng_seed",
            ),
            &net,
        );
        let v = body_json(gw.chat(None, chat_body("g", false)).await).await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_ne!(ids[0], ids[1]);
    assert_ne!(switchback::engine::os_seed(), switchback::engine::os_seed());
}

// 13. Across a continuation, `max_tokens` stays a bound and `usage` covers both attempts.
#[tokio::test(start_paused = true)]
async fn a_continuation_keeps_the_token_budget_and_counts_all_usage() {
    let (net, gw) = fails_after(vec![
        chunk_json("m", json!({"role": "assistant", "content": "a"}), None),
        chunk_json("m", json!({"content": "b"}), None),
    ]);
    net.host("up2", |_| {
        sse_of(&[
            chunk_json("m2", json!({"role": "assistant", "content": "c"}), None),
            chunk_json("m2", json!({}), Some("stop")),
            json!({"id": "u", "object": "chat.completion.chunk", "model": "m2", "choices": [],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}),
        ])
    });
    let mut body = chat_body("g", false);
    body["max_tokens"] = json!(5);
    let v = body_json(gw.chat(None, body).await).await;
    assert_eq!(
        net.calls("up2")[0].body["max_tokens"],
        3,
        "5 less the 2 delivered"
    );
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
}

// 14. An error that ends an exhausted plan says `x-should-retry: false`: the SDK's own
// retries must not multiply the gateway's.
#[tokio::test(start_paused = true)]
async fn final_errors_tell_sdks_not_to_retry() {
    let net = MemNet::new();
    net.host("up", |_| {
        json_response(503, &json!({"error": {"message": "down"}}))
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-should-retry"], "false", "stream={stream}");
    }
}

// 14a. The official SDKs say how long they wait for a response to begin:
// `X-Stainless-Read-Timeout` (openai-python, seconds, the httpx read timeout, which starts
// once the body is sent) and `X-Stainless-Timeout` (openai-node, seconds, the whole call).
// Both default to 600 s, the gateway's own `request_deadline` and `timeout`: against a
// silent upstream the SDK gave up first, a moment before the gateway's error with
// `x-should-retry: false`, and retried twice (three times the upstream's time, 30 minutes
// before the client heard anything). The gateway now ends the request in time for its
// error to be read: before the client's time is up, less a margin. Only until the response
// begins: a stream that has begun is read chunk by chunk (the Python SDK's timeout is per
// read), and goes on past it.
#[tokio::test(start_paused = true)]
async fn an_sdks_timeout_is_met_with_the_gateways_error_not_its_own() {
    use std::time::Duration;
    let net = MemNet::new();
    let silent: std::sync::Arc<std::sync::Mutex<Vec<_>>> = Default::default();
    let keep = silent.clone();
    net.host("up", move |req| {
        let (tx, response) = sse_channel();
        let content = req.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // "slow": begins at once, then a piece every 10 s (five pieces; for "slower" eight,
        // 70 s, past the deployment's own `timeout` of 60 s: the stream fails there);
        // "hang": silent; anything else: a piece at once.
        let pieces = match content.as_str() {
            "slow" => 5,
            "slower" => 8,
            "hang" => 0,
            _ => 1,
        };
        if pieces == 0 {
            keep.lock().unwrap().push(tx);
            return response;
        }
        tokio::spawn(async move {
            for i in 0..pieces {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                let finish = (i + 1 == pieces).then_some("stop");
                let piece = ((b'a' + i as u8) as char).to_string();
                let f = frame(&chunk_json("m", json!({"content": piece}), finish));
                if tx.send(Ok(f.into())).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok("data: [DONE]\n\n".into())).await;
        });
        response
    });
    let config = ONE_GROUP.replace(
        "api_base: \"http://up/v1\"",
        "api_base: \"http://up/v1\", timeout: 60",
    );
    assert_ne!(config, ONE_GROUP, "the deployment's own timeout is set");
    let gw = Gw::start(&config, &net);
    let ask = |stream: bool, header: Option<(&'static str, &'static str)>, content: &str| {
        let mut body = chat_body("g", stream);
        body["messages"][0]["content"] = json!(content);
        let mut request = chat_request(None, &body);
        if let Some((name, value)) = header {
            request
                .headers_mut()
                .insert(name, http::HeaderValue::from_static(value));
        }
        request
    };
    let request_events = |gw: &Gw| {
        let events = gw.events();
        let last = events
            .iter()
            .rev()
            .find_map(|l| {
                l.strip_prefix("req=")?
                    .split_once(' ')
                    .map(|(n, _)| n.to_string())
            })
            .unwrap();
        events
            .into_iter()
            .filter(|l| l.starts_with(&format!("req={last} ")))
            .collect::<Vec<_>>()
    };
    for stream in [false, true] {
        for header in ["x-stainless-read-timeout", "x-stainless-timeout"] {
            let started = tokio::time::Instant::now();
            let r = gw
                .connect()
                .await
                .send_request(ask(stream, Some((header, "20")), "hang"))
                .await
                .unwrap();
            let waited = started.elapsed();
            let status = r.status();
            let should_retry = r.headers().get("x-should-retry").cloned();
            let body = text(r).await;
            assert!(
                waited >= Duration::from_secs(18) && waited < Duration::from_secs(20),
                "stream={stream}, {header}: answered after {waited:?}: {status} {body}"
            );
            assert_eq!(status, 504, "{body}");
            assert_eq!(
                should_retry.as_ref().map(|v| v.to_str().unwrap()),
                Some("false")
            );
            assert!(
                body.contains(&format!("client's own timeout ({header}: 20 s")),
                "the error says whose time ran out: {body}"
            );
            // The time was the client's: never counted against the deployment.
            let events = request_events(&gw);
            assert!(
                events
                    .iter()
                    .any(|l| l.contains("failure_not_counted")
                        && l.contains("reason=request_timeout")),
                "{events:#?}"
            );
            assert!(
                events
                    .iter()
                    .any(|l| l.contains("limit_hit limit=client_timeout")),
                "{events:#?}"
            );
        }
    }
    // A stream that has begun goes on past the client's time.
    let r = gw
        .connect()
        .await
        .send_request(ask(true, Some(("x-stainless-read-timeout", "20")), "slow"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(streamed_text(&text(r).await), "abcde");
    // ... and the deployment's own `timeout` (60 s) cutting it there is the deployment's,
    // as it is without the header: the client's wait no longer caps the attempt.
    for header in [Some(("x-stainless-timeout", "20")), None] {
        let r = gw
            .connect()
            .await
            .send_request(ask(true, header, "slower"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        text(r).await;
        let events = request_events(&gw);
        assert!(
            events
                .iter()
                .any(|l| l.contains("attempt_failed") && l.contains("class=timeout")),
            "{header:?}: {events:#?}"
        );
        assert!(
            !events.iter().any(|l| l.contains("failure_not_counted")),
            "{header:?}: {events:#?}"
        );
    }
    // httpx's read timeout starts once the body is sent: a 40 s upload under a 30 s read
    // timeout is served. Node's covers the upload: that client has given up, and the
    // gateway's error says so without calling anyone.
    for (header, served) in [
        ("x-stainless-read-timeout", true),
        ("x-stainless-timeout", false),
    ] {
        let body = json!({"model": "g", "stream": false,
            "messages": [{"role": "user", "content": "a".repeat(1 << 20)}]})
        .to_string()
        .into_bytes();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n\
             {header}: 30\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut pipe = gw.raw().await;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        pipe.write_all(head.as_bytes()).await.unwrap();
        for piece in body.chunks(body.len() / 40 + 1) {
            pipe.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut first = [0u8; 64];
        let n = pipe.read(&mut first).await.unwrap();
        let first = String::from_utf8_lossy(&first[..n]);
        let expected = if served {
            "HTTP/1.1 200"
        } else {
            "HTTP/1.1 504"
        };
        assert!(first.starts_with(expected), "{header}: {first}");
    }
    // A value that is no time is not one: the gateway's own deadline holds.
    for value in ["0", "-5", "nan", "inf", "soon", "1e400"] {
        let pending = gw.connect().await.send_request(ask(
            false,
            Some(("x-stainless-read-timeout", value)),
            "hang",
        ));
        assert!(
            tokio::time::timeout(Duration::from_secs(60), pending)
                .await
                .is_err(),
            "{value}: still waiting at 60 s"
        );
    }
}

// 14b. An error that called no upstream at all (every deployment cooling) costs nothing to
// retry: it leaves the SDK's own retries alone (they wait out `retry-after-ms`, which the
// SDKs read before `retry-after`) where `x-should-retry: false` made them give up at once.
// One that did call an upstream still says `false`.
#[tokio::test(start_paused = true)]
async fn an_error_that_called_no_upstream_leaves_retries_to_the_sdk() {
    let net = MemNet::new();
    for host in ["up", "up2"] {
        net.host(host, |_| {
            let mut r = json_response(
                429,
                &json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}),
            );
            r.headers_mut().insert("retry-after", "2".parse().unwrap());
            r
        });
    }
    let config = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up2/v1"}, model_info: {id: e}}
router_settings: {num_retries: 1}
"#;
    let gw = Gw::start(config, &net);
    let first = gw.chat(None, chat_body("g", false)).await;
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["x-should-retry"], "false");
    let calls = || net.calls("up").len() + net.calls("up2").len();
    assert_eq!(calls(), 2, "both deployments were called, and cooled");
    // Effects of one instant are seen by others only after it (see `CooldownBook`).
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 429, "stream={stream}");
        assert_eq!(
            calls(),
            2,
            "stream={stream}: nothing was called: {:#?}",
            gw.events()
        );
        assert_eq!(
            r.headers().get("x-should-retry"),
            None,
            "stream={stream}: {:?}",
            r.headers()
        );
        let ms: u64 = r.headers()["retry-after-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2000).contains(&ms), "stream={stream}: {ms}");
        assert_eq!(r.headers()["retry-after"], "2", "stream={stream}");
    }
}

// 14c. OpenAI tells an empty account by `code: insufficient_quota` on its 429, and clients
// branch on it (`except RateLimitError as e: if e.code == "insufficient_quota": raise`, else
// wait and retry): told as `rate_limit_exceeded`, such a client retried an empty account
// for ever.
#[tokio::test(start_paused = true)]
async fn an_empty_account_is_told_as_openai_tells_it() {
    let net = MemNet::new();
    net.host("up", |_| {
        json_response(
            429,
            &json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
        )
    });
    let gw = Gw::start(
        &ONE_GROUP.replace("{num_retries: 0}", "{num_retries: 0, cooldown_time: 0}"),
        &net,
    );
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 429, "stream={stream}");
        let body: Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(
            body["error"]["code"], "insufficient_quota",
            "stream={stream}: {body}"
        );
    }
}

// 15. `GET /v1/models/{id}` answers (group names may contain `/`), and `created` is real.
#[tokio::test(start_paused = true)]
async fn models_by_id_and_their_created_time() {
    let net = MemNet::new();
    let gw = Gw::start(
        &ONE_GROUP.replace("model_name: g,", "model_name: vertex_ai/gemini-2.5-flash,"),
        &net,
    );
    let mut sender = gw.connect().await;
    let r = sender
        .send_request(
            http::Request::get("/v1/models/vertex_ai/gemini-2.5-flash")
                .header("host", "g")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["id"], "vertex_ai/gemini-2.5-flash");
    assert_eq!(v["created"], json!(WALL_EPOCH_SECS));
    let mut sender = gw.connect().await;
    let r = sender
        .send_request(
            http::Request::get("/v1/models/nope")
                .header("host", "g")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

// 16. A model id in the path is percent-decoded: the Node SDK's `models.retrieve(id)`
// escapes `/` (`encodeURIPath`), and httpx escapes spaces and non-ASCII.
#[tokio::test(start_paused = true)]
async fn models_by_percent_encoded_id() {
    let net = MemNet::new();
    let gw = Gw::start(
        &ONE_GROUP.replace("model_name: g,", "model_name: \"vertex_ai/gemini 2.5\","),
        &net,
    );
    let get = |path: &'static str| {
        let gw = &gw;
        async move {
            let mut sender = gw.connect().await;
            let r = sender
                .send_request(
                    http::Request::get(path)
                        .header("host", "g")
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = r.status();
            (status, text(r).await)
        }
    };
    let (status, body) = get("/v1/models/vertex_ai%2Fgemini%202.5").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "vertex_ai/gemini 2.5");
    // Not UTF-8 once decoded: no such model, said plainly.
    let (status, body) = get("/v1/models/%FF").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not UTF-8"), "{body}");
}

/// `GET /v1/models/{id}` knows a name a wildcard group serves as chat does: openai-node's
/// `models.retrieve("openai/gpt-4o")` before a chat got a 404 "not a model group this key
/// may use" for a model the chat then served. A key whose lists do not admit the name
/// still gets the 404, as it does for any model it may not use.
#[tokio::test(start_paused = true)]
async fn a_model_a_wildcard_group_serves_can_be_retrieved() {
    let net = MemNet::new();
    let gw = Gw::start(
        r#"
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://up/v1"}}
  - {model_name: "*", litellm_params: {model: "openai/*", api_base: "http://up/v1"}, model_info: {id: catchall}}
keys:
  - {key: sk-all}
  - {key: sk-anthropic, models: ["anthropic/*"]}
"#,
        &net,
    );
    let get = |path: &'static str, key: &'static str| {
        let gw = &gw;
        async move {
            let mut sender = gw.connect().await;
            let r = sender
                .send_request(
                    http::Request::get(path)
                        .header("host", "g")
                        .header("authorization", format!("Bearer {key}"))
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = r.status();
            (status, text(r).await)
        }
    };
    let (status, body) = get("/v1/models/openai%2Fgpt-4o", "sk-all").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "openai/gpt-4o");
    let (status, body) = get("/v1/models/openai%2Fgpt-4o", "sk-anthropic").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get("/v1/models/catchall", "sk-all").await;
    assert_eq!(
        status, 404,
        "a wildcard deployment's id, which chat refuses: {body}"
    );
}

// 17. With `n: 2`, a choice that finishes first does not hold back the others: only the
// answer's last finish (and what follows it) waits for the upstream's `[DONE]`. Whether
// the provider interleaves its choices or sends them one after the other.
#[tokio::test(start_paused = true)]
async fn a_choice_that_finishes_first_does_not_hold_back_the_others() {
    let choice = |index: u64, delta: Value, finish: Option<&str>| json!({"index": index, "delta": delta, "finish_reason": finish});
    let interleaved = vec![
        choice(0, json!({"role": "assistant", "content": "A"}), None),
        choice(1, json!({"role": "assistant", "content": "B"}), None),
        choice(0, json!({}), Some("stop")),
        choice(1, json!({"content": "LATE"}), None),
    ];
    let one_after_the_other = vec![
        choice(0, json!({"role": "assistant", "content": "A"}), None),
        choice(0, json!({}), Some("stop")),
        choice(1, json!({"role": "assistant", "content": "B"}), None),
        choice(1, json!({"content": "LATE"}), None),
    ];
    for before in [interleaved, one_after_the_other] {
        let last = choice(1, json!({}), Some("stop"));
        let mut expected: Vec<(Value, Value)> = before
            .iter()
            .chain([&last])
            .map(|c| (c["index"].clone(), c["finish_reason"].clone()))
            .collect();
        let (early, all) = two_choices_then_a_pause(before, last).await;
        assert!(
            early.contains("LATE"),
            "choice 1's content was held back; before the pause the client had:\n{early}"
        );
        let got: Vec<(Value, Value)> = json_payloads(&all)
            .iter()
            .map(|c| {
                let choice = &c["choices"][0];
                (choice["index"].clone(), choice["finish_reason"].clone())
            })
            .collect();
        assert_eq!(
            got,
            std::mem::take(&mut expected),
            "in the upstream's order:\n{all}"
        );
        assert!(all.ends_with("data: [DONE]\n\n"), "{all}");
    }
}

/// A stream of `n: 2` whose upstream sends one chunk per choice in `before`, then nothing
/// for 20 s, then `last` and `[DONE]`: what the client had 5 s in, and in all.
async fn two_choices_then_a_pause(before: Vec<Value>, last: Value) -> (String, String) {
    let net = MemNet::new();
    let (tx, answer) = sse_channel();
    let answer = std::sync::Mutex::new(Some(answer));
    net.host("up", move |_| {
        answer.lock().unwrap().take().expect("one call")
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let mut body = chat_body("g", true);
    body["n"] = json!(2);
    let chunk = |choice: Value| {
        frame(
            &json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                      "model": "m", "choices": [choice]}),
        )
    };
    let upstream = tokio::spawn(async move {
        for choice in before {
            tx.send(Ok(chunk(choice).into())).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        tx.send(Ok(chunk(last).into())).await.unwrap();
        tx.send(Ok("data: [DONE]\n\n".into())).await.unwrap();
    });
    let r = gw.chat(None, body).await;
    assert_eq!(r.status(), 200);
    let seen = read_early_then_all(r, std::time::Duration::from_secs(5)).await;
    upstream.await.unwrap();
    seen
}

// 18. Metadata of a retry after commit, on an answer that had no finish chunk to carry
// it, rides on a chunk of its own that is a whole chunk: with `created`, as the SDKs'
// chunk type requires, taken from the answer's chunks.
#[tokio::test(start_paused = true)]
async fn a_metadata_chunk_of_its_own_has_created() {
    let (net, gw) = fails_after(vec![chunk_json(
        "m",
        json!({"role": "assistant", "content": "fre"}),
        None,
    )]);
    // The fallback ends its answer without a finish reason.
    net.host("up2", |_| {
        sse_of(&[chunk_json("m2", json!({"content": "sh"}), None)])
    });
    let s = text(gw.chat(None, chat_body("g", true)).await).await;
    let chunks = json_payloads(&s);
    let carrier = chunks
        .iter()
        .find(|c| c.get("switchback").is_some())
        .unwrap_or_else(|| panic!("metadata sent: {s}"));
    assert_eq!(carrier["created"], 1, "{s}");
    assert_eq!(carrier["object"], "chat.completion.chunk", "{s}");
}

// A provider may cut one chunk's JSON over several `data:` lines (pretty-printing SSE
// emitters do): the client gets that payload whole, and every line of the stream is a
// `data:` field or blank, so the SDKs (which join `data:` lines with `\n`) read the same
// JSON the provider sent.
#[tokio::test(start_paused = true)]
async fn a_chunk_over_several_data_lines_reaches_the_client_whole() {
    let net = MemNet::new();
    let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": null}]});
    let stop = chunk_json("m", json!({}), Some("stop"));
    let pretty = serde_json::to_string_pretty(&chunk).unwrap();
    let mut body: String = pretty.lines().map(|l| format!("data: {l}\n")).collect();
    body.push('\n');
    body.push_str(&frame(&stop));
    body.push_str("data: [DONE]\n\n");
    net.host("up", move |_| sse(body.clone()));
    let gw = Gw::start(ONE_GROUP, &net);
    let streamed = text(gw.chat(None, chat_body("g", true)).await).await;
    for line in streamed.lines() {
        assert!(
            line.is_empty() || line.starts_with("data: "),
            "a line no SSE client reads as data: {line:?}\n{streamed}"
        );
    }
    // The SDKs' reading: `data:` lines of an event joined with `\n`.
    let events: Vec<String> = streamed
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.lines()
                .map(|l| l.strip_prefix("data: ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert_eq!(events[0], pretty, "the provider's payload, whole");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first, chunk);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

/// An attempt that sent its finish chunk and its usage chunk, then broke before `[DONE]`,
/// is continued by a fallback that reports no usage: neither client gets usage (the
/// streaming one never got the held usage chunk; the non-streaming one got the failed
/// attempt's before the fix).
#[tokio::test(start_paused = true)]
async fn usage_of_a_superseded_tail_is_the_same_in_both_modes() {
    let mut usages = Vec::new();
    for stream in [false, true] {
        let (_net, gw) = fails_after(vec![
            chunk_json("m", json!({"role": "assistant", "content": "fre"}), None),
            chunk_json("m", json!({}), Some("stop")),
            json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}),
        ]);
        let mut body = chat_body("g", stream);
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let t = text(gw.chat(None, body).await).await;
        let usage = if stream {
            t.split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter(|p| *p != "[DONE]")
                .map(|p| serde_json::from_str::<Value>(p).unwrap())
                .filter_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned())
                .last()
        } else {
            serde_json::from_str::<Value>(&t)
                .unwrap()
                .get("usage")
                .cloned()
        };
        usages.push((stream, usage, t));
    }
    assert_eq!(
        usages[0].1, usages[1].1,
        "usage differs between modes:\n{usages:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Content coding and charset: what the gateway reads and asks for is plain JSON and SSE.
// ---------------------------------------------------------------------------------------------

/// A chat request to the gateway with these extra headers, and `body` as its exact bytes.
fn chat_request_with(
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = http::Request::post("/v1/chat/completions")
        .header("host", "gateway")
        .header("content-type", "application/json");
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(http_body_util::Full::new(body.into())).unwrap()
}

async fn send(
    gw: &Gw,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    gw.connect()
        .await
        .send_request(request)
        .await
        .expect("response")
}

/// Upstreams are asked for an identity body in both modes, whatever the client accepts: a
/// client's `accept-encoding: gzip, br` (every SDK's HTTP library sends one) is the client's
/// business with the gateway, never forwarded. Before, no `accept-encoding` went upstream.
#[tokio::test(start_paused = true)]
async fn upstreams_are_asked_for_identity_whatever_the_client_accepts() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let request = chat_request_with(
            &[("accept-encoding", "gzip, deflate, br")],
            chat_body("g", stream).to_string(),
        );
        let r = send(&gw, request).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        text(r).await;
    }
    let calls = net.calls("up");
    assert_eq!(calls.len(), 2);
    for call in calls {
        let asked: Vec<_> = call.headers.get_all("accept-encoding").iter().collect();
        assert_eq!(asked, ["identity"], "call {}", call.n);
    }
}

/// `fails_after`'s two groups, `g` served by `up` and its fallback `g2` by `up2`.
/// The gateway's trace has two failed attempts (one per mode), each saying `what`.
fn assert_two_failed_attempts(gw: &Gw, what: &str) {
    let failed: Vec<_> = gw
        .events()
        .into_iter()
        .filter(|e| e.contains("attempt_failed"))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed.iter().all(|e| e.contains(what)), "{failed:#?}");
}

const FALLS_BACK_TO_G2: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: g2, litellm_params: {model: openai/m2, api_base: "http://up2/v1"}, model_info: {id: d2}}
router_settings: {num_retries: 0, fallbacks: [{g: [g2]}]}
"#;

/// A 200 whose body is gzip-compressed, labelled as an event stream.
fn gzipped_answer() -> http::Response<UpBody> {
    let mut r = sse(GZIPPED_SSE_ANSWER);
    r.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    r
}

/// A compressed answer is a malformed attempt in both modes: its fallback serves the
/// request, and without one the client's 502 names the coding. Not a byte of it reaches
/// the client. Before, the stream mode read it as an event stream cut short (a transient
/// failure saying "stream ended before [DONE]"), and nothing said it was compressed.
#[tokio::test(start_paused = true)]
async fn a_compressed_answer_is_a_malformed_attempt_in_both_modes() {
    let net = MemNet::new();
    net.host("up", |_| gzipped_answer());
    net.host("up2", |_| sse_answer("m2", &["fresh"]));
    let gw = Gw::start(FALLS_BACK_TO_G2, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let t = text(r).await;
        let served = answered_text(&t, stream);
        assert_eq!(served, "fresh", "stream={stream}: {t}");
    }
    assert_two_failed_attempts(&gw, "deployment=d class=malformed status=-");

    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 502, "stream={stream}");
        assert!(r.headers().get("content-encoding").is_none());
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("stream={stream}: {e}: {bytes:?}"));
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("content-encoding `gzip`"),
            "stream={stream}: {message}"
        );
        assert_eq!(v["error"]["type"], "api_error");
    }
}

/// An error status in a coding keeps its class and Retry-After: a compressed 429 is a rate
/// limit in both modes, its Retry-After reaches the client, and the message says why the
/// provider's own words are missing instead of repeating compressed bytes.
#[tokio::test(start_paused = true)]
async fn a_compressed_error_keeps_its_status_and_retry_after_in_both_modes() {
    let net = MemNet::new();
    net.host("up", |_| {
        let mut r = gzipped_answer();
        *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r.headers_mut().insert("retry-after", "7".parse().unwrap());
        r
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 429, "stream={stream}");
        assert_eq!(r.headers()["retry-after"], "7", "stream={stream}");
        let v = body_json(r).await;
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("gzip"), "stream={stream}: {message}");
        assert!(!message.contains('\u{FFFD}'), "stream={stream}: {message}");
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}

/// A proxy's HTML page answering a streamed call is a malformed attempt in both modes, and
/// the fallback serves the request. Before, it failed as a stream cut short (transient).
#[tokio::test(start_paused = true)]
async fn a_proxy_page_is_a_malformed_attempt_in_both_modes() {
    let net = MemNet::new();
    net.host("up", |_| {
        let mut r = sse("<html><body>Sign in to continue</body></html>\n");
        r.headers_mut()
            .insert("content-type", "text/html".parse().unwrap());
        r
    });
    net.host("up2", |_| sse_answer("m2", &["fresh"]));
    let gw = Gw::start(FALLS_BACK_TO_G2, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let t = text(r).await;
        assert!(t.contains("fresh"), "stream={stream}: {t}");
        assert!(!t.contains("Sign in"), "stream={stream}: {t}");
    }
    assert_two_failed_attempts(&gw, "deployment=d class=malformed");
}

/// A page whose connection stays open (a captive portal that never ends its body) is told
/// by its first bytes, at once: it timed out before (the first-chunk timeout, 30 s
/// here), as a stream that never said a word.
#[tokio::test(start_paused = true)]
async fn a_page_whose_connection_stays_open_is_malformed_at_once() {
    let net = MemNet::new();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    net.host("up", move |_| {
        let (tx, mut r) = sse_channel();
        r.headers_mut()
            .insert("content-type", "text/html".parse().unwrap());
        tx.try_send(Ok(bytes::Bytes::from_static(b"<html><body>Sign in")))
            .unwrap();
        // Kept, so the body never ends.
        keep.lock().unwrap().push(tx);
        r
    });
    net.host("up2", |_| sse_answer("m2", &["fresh"]));
    let config = FALLS_BACK_TO_G2.replace(
        "router_settings: {",
        "router_settings: {stream_timeout: 30, timeout: 30, ",
    );
    let gw = Gw::start(&config, &net);
    for stream in [false, true] {
        let started = tokio::time::Instant::now();
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let t = text(r).await;
        assert!(t.contains("fresh"), "stream={stream}: {t}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "stream={stream}: told at its first bytes, not by a timeout: {:?}",
            started.elapsed()
        );
    }
    assert_two_failed_attempts(&gw, "deployment=d class=malformed");
    assert_eq!(held.lock().unwrap().len(), 2);
}

/// An event stream labelled `text/plain`, its first bytes cut anywhere (a blank line, then
/// `da` and `ta: ...` apart), is read as the event stream it is, in both modes: held only
/// until its first bytes say so.
#[tokio::test(start_paused = true)]
async fn a_mislabelled_event_stream_cut_anywhere_is_read_in_both_modes() {
    let net = MemNet::new();
    net.host("up", |_| {
        let (tx, mut r) = sse_channel();
        r.headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        let answer = frame(&chunk_json(
            "m",
            json!({"role": "assistant", "content": "hi"}),
            Some("stop"),
        ));
        tokio::spawn(async move {
            for part in [
                "\n",
                "da",
                answer.strip_prefix("da").unwrap(),
                "data: [DONE]\n\n",
            ] {
                if tx
                    .send(Ok(bytes::Bytes::from(part.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        r
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let t = text(r).await;
        let served = answered_text(&t, stream);
        assert_eq!(served, "hi", "stream={stream}: {t}");
    }
}

/// One key, `sk-good`, for group `g` at `up`.
const ONE_KEY: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
keys:
  - {key: sk-good}
"#;

/// A request body in a content coding (`content-encoding: gzip`, as some HTTP libraries
/// send when told to compress uploads) gets a 415 that names the coding and says what
/// the gateway reads (`accept-encoding: identity`, RFC 9110 §15.5.16), whatever its mode,
/// and no upstream is called. Before, its bytes went to the JSON parser: a 400 "request
/// body is not valid JSON" that never said why, or, for a body labelled `gzip` that was
/// not compressed, a request served as if the label were not there.
#[tokio::test(start_paused = true)]
async fn a_compressed_request_body_gets_a_415_naming_its_coding() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(ONE_KEY, &net);
    let auth = ("authorization", "Bearer sk-good");
    let cases: [(&str, bytes::Bytes, &str); 4] = [
        ("gzip", GZIPPED_SSE_ANSWER.into(), "gzip"),
        ("br", chat_body("g", true).to_string().into(), "br"),
        (
            "Deflate",
            chat_body("g", false).to_string().into(),
            "deflate",
        ),
        (
            "identity, gzip",
            chat_body("g", true).to_string().into(),
            "gzip",
        ),
    ];
    for (coding, body, named) in cases {
        let r = send(
            &gw,
            chat_request_with(&[auth, ("content-encoding", coding)], body),
        )
        .await;
        assert_eq!(r.status(), 415, "{coding}");
        assert_eq!(r.headers()["accept-encoding"], "identity", "{coding}");
        let v = body_json(r).await;
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("content-encoding `{named}`")),
            "{coding}: {message}"
        );
        assert_eq!(
            v["error"],
            json!({"message": message, "type": "invalid_request_error",
                   "code": "unsupported_content_encoding", "param": null}),
            "{coding}"
        );
    }
    assert!(net.calls("up").is_empty());
    // `identity` is no coding at all.
    for stream in [false, true] {
        let body = chat_body("g", stream).to_string();
        let request = chat_request_with(&[auth, ("content-encoding", "identity")], body);
        let r = send(&gw, request).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        text(r).await;
    }
}

/// A body in a transfer coding besides `chunked` (`Transfer-Encoding: gzip, chunked`):
/// hyper takes off the `chunked`, and the compressed bytes reached the JSON parser, a 400
/// "not valid JSON" that never said why. It gets the 501 RFC 9112 §6.1 asks for, naming
/// the coding; plain `chunked` is served. The SDKs retry any 5xx: this one is the same
/// every time, and says `x-should-retry: false`.
#[tokio::test(start_paused = true)]
async fn a_transfer_coding_besides_chunked_gets_a_501_naming_it() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(ONE_KEY, &net);
    let auth = ("authorization", "Bearer sk-good");
    let r = send(
        &gw,
        chat_request_with(
            &[auth, ("transfer-encoding", "gzip, chunked")],
            GZIPPED_SSE_ANSWER,
        ),
    )
    .await;
    assert_eq!(r.status(), 501);
    assert_eq!(
        r.headers().get("x-should-retry").map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );
    let v = body_json(r).await;
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("transfer-encoding `gzip`"), "{message}");
    assert_eq!(v["error"]["code"], "unsupported_transfer_encoding");
    assert!(net.calls("up").is_empty());
    let body = chat_body("g", false).to_string();
    let r = send(
        &gw,
        chat_request_with(&[auth, ("transfer-encoding", "chunked")], body),
    )
    .await;
    assert_eq!(r.status(), 200);
    text(r).await;
}

/// A `Content-Encoding` that names no compression (`UTF-8`, `none`, `binary`: a
/// misconfigured server or client that means a charset) changes nothing about the bytes,
/// and the SDKs read such a body as it is (httpx skips a coding it does not know; urllib3
/// and undici too). It was taken for a compression: every answer of such an upstream a
/// malformed attempt, every such request a 415.
#[tokio::test(start_paused = true)]
async fn a_content_encoding_that_names_no_compression_is_read_as_it_is() {
    let net = MemNet::new();
    net.host("up", |_| {
        let mut r = sse_answer("m", &["hi"]);
        r.headers_mut()
            .insert("content-encoding", "UTF-8".parse().unwrap());
        r
    });
    let gw = Gw::start(ONE_KEY, &net);
    let auth = ("authorization", "Bearer sk-good");
    for label in ["utf-8", "none", "binary"] {
        for stream in [false, true] {
            let body = chat_body("g", stream).to_string();
            let request = chat_request_with(&[auth, ("content-encoding", label)], body);
            let r = send(&gw, request).await;
            assert_eq!(r.status(), 200, "{label} stream={stream}");
            let t = text(r).await;
            let served = answered_text(&t, stream);
            assert_eq!(served, "hi", "{label} stream={stream}: {t}");
        }
    }
    assert!(!gw.saw("attempt_failed"), "{:#?}", gw.events());
}

/// The key is checked first, as for any body: without a usable key a compressed body gets
/// the 401, not a 415 that would tell a stranger what the gateway reads.
#[tokio::test(start_paused = true)]
async fn a_compressed_request_body_without_a_usable_key_gets_the_401() {
    let net = MemNet::new();
    let gw = Gw::start(ONE_KEY, &net);
    let body = || chat_body("g", false).to_string();
    for headers in [
        &[("content-encoding", "gzip")][..],
        &[
            ("content-encoding", "gzip"),
            ("authorization", "Bearer sk-bad"),
        ],
    ] {
        let r = send(&gw, chat_request_with(headers, body())).await;
        assert_eq!(r.status(), 401, "{headers:?}");
    }
}

/// A body that begins with UTF-8's byte-order mark (Windows PowerShell 5's
/// `Invoke-RestMethod -Body (Get-Content body.json)` on a file saved "UTF-8 with BOM") is
/// served in both modes, and the upstream is sent the same request as without the mark.
/// Before, a 400 "not valid JSON ... at line 1 column 1".
#[tokio::test(start_paused = true)]
async fn a_body_with_a_utf8_byte_order_mark_is_served_in_both_modes() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let json = chat_body("g", stream).to_string();
        let marked = [&b"\xEF\xBB\xBF"[..], json.as_bytes()].concat();
        let r = send(&gw, chat_request_with(&[], marked)).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let t = text(r).await;
        assert!(t.contains("hi"), "stream={stream}: {t}");
    }
    let calls = net.calls("up");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].body["messages"], calls[1].body["messages"]);
    assert_eq!(calls[0].body["messages"][0]["content"], "say ping");
}

/// A UTF-16 body (PowerShell's and .NET's "Unicode") is a 400 that says the body must be
/// UTF-8 JSON and which encoding it looks like, in both modes, and no upstream is called.
/// Before, a JSON syntax error at column 1 that never said why.
#[tokio::test(start_paused = true)]
async fn a_utf16_body_is_refused_naming_its_encoding_in_both_modes() {
    let net = MemNet::new();
    net.host("up", |_| sse_answer("m", &["hi"]));
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let utf16: Vec<u8> = chat_body("g", stream)
            .to_string()
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let body = [&b"\xFF\xFE"[..], &utf16].concat();
        let r = send(&gw, chat_request_with(&[], body)).await;
        assert_eq!(r.status(), 400, "stream={stream}");
        let v = body_json(r).await;
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("must be UTF-8 JSON") && message.contains("UTF-16LE"),
            "stream={stream}: {message}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert!(net.calls("up").is_empty());
}

/// Every frame of a streamed answer, with the time it reached the client.
async fn timed_frames(
    r: http::Response<hyper::body::Incoming>,
) -> Vec<(std::time::Duration, String)> {
    let start = tokio::time::Instant::now();
    let mut body = r.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the stream is not cut").into_data() {
            out.push((start.elapsed(), String::from_utf8_lossy(&data).into_owned()));
        }
    }
    out
}

/// The longest the client went without a byte, from the first frame to the last.
fn longest_silence(frames: &[(std::time::Duration, String)]) -> std::time::Duration {
    frames
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default()
}

// A provider that keeps its stream alive with SSE comments while it thinks (OpenRouter's
// `: OPENROUTER PROCESSING`, every few seconds) is not silent, and its client through the
// gateway must not be either: the comments kept the gateway's own idle timer alive but
// none reached the client, so openai-python with `timeout=20` gave up at 20 s where it
// would have finished talking to the provider directly. While the provider sends bytes
// that are no chunk, the gateway keeps the client alive as it does for its own waits.
#[tokio::test(start_paused = true)]
async fn a_provider_that_keeps_its_stream_alive_keeps_the_client_alive_too() {
    use std::time::Duration;
    let net = MemNet::new();
    net.host("up", move |_| {
        let (tx, r) = sse_channel();
        tokio::spawn(async move {
            let first = frame(&chunk_json(
                "m",
                json!({"role": "assistant", "content": "fre"}),
                None,
            ));
            let _ = tx.send(Ok(first.into())).await;
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = tx.send(Ok(": OPENROUTER PROCESSING\n\n".into())).await;
            }
            let rest = frame(&chunk_json("m", json!({"content": "sh"}), Some("stop")));
            let _ = tx.send(Ok(format!("{rest}data: [DONE]\n\n").into())).await;
        });
        r
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for (read_timeout, every) in [(None, 15u64), (Some("6"), 3)] {
        let mut request = chat_request(None, &chat_body("g", true));
        if let Some(value) = read_timeout {
            request.headers_mut().insert(
                "x-stainless-read-timeout",
                http::HeaderValue::from_static(value),
            );
        }
        let r = gw.connect().await.send_request(request).await.unwrap();
        assert_eq!(r.status(), 200);
        let frames = timed_frames(r).await;
        let body: String = frames.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(streamed_text(&body), "fresh", "{body}");
        assert!(
            // The first comment comes 5 s in: a client with a 3 s interval hears nothing
            // before it.
            longest_silence(&frames) <= Duration::from_secs(every.max(5)),
            "{read_timeout:?}: the client went {:?} without a byte while its provider \
             kept talking: {frames:?}",
            longest_silence(&frames)
        );
        for (_, f) in frames.iter().filter(|(_, f)| f.starts_with(':')) {
            assert_eq!(f, ": keep-alive\n\n", "a whole SSE comment, between events");
        }
    }
}

// A stream that has begun goes quiet while the gateway waits on its own account after a
// failure: a backoff, a Retry-After, a continuation's connect and first byte. openai-python's
// read timeout bounds every read (httpx), so a client with `timeout=20` gave up there,
// mid-stream, though the gateway would have finished the answer. The gateway now writes SSE
// comments (`: keep-alive`, which both SDKs skip) while it waits, every
// `limits.stream_keep_alive` and at least twice per read timeout the client advertises; a
// provider's own silence is passed on as it is.
#[tokio::test(start_paused = true)]
async fn a_stream_is_kept_alive_while_the_gateway_waits_but_not_while_its_provider_thinks() {
    use std::time::Duration;
    let net = MemNet::new();
    net.host("up", move |req| {
        let (tx, r) = sse_channel();
        let thinks = req.body["messages"][0]["content"] == "think";
        tokio::spawn(async move {
            let first = frame(&chunk_json(
                "m",
                json!({"role": "assistant", "content": "fre"}),
                None,
            ));
            let _ = tx.send(Ok(first.into())).await;
            // "think": the provider itself is silent for 40 s, then ends its answer.
            tokio::time::sleep(
                Duration::from_secs(if thinks { 40 } else { 0 }) + Duration::from_millis(10),
            )
            .await;
            if thinks {
                let rest = frame(&chunk_json("m", json!({"content": "sh"}), Some("stop")));
                let _ = tx.send(Ok(format!("{rest}data: [DONE]\n\n").into())).await;
            } else {
                let _ = tx
                    .send(Err(std::io::Error::from(
                        std::io::ErrorKind::ConnectionReset,
                    )))
                    .await;
            }
        });
        r
    });
    // The continuation's provider answers 40 s after it is called; asked to continue
    // "ends", it ends the answer at once and then is silent for 40 s before its `[DONE]`.
    net.host("up2", |req| {
        let (tx, r) = sse_channel();
        let ends = req.body["messages"][0]["content"] == "ends";
        tokio::spawn(async move {
            if ends {
                let end = frame(&chunk_json("m2", json!({}), Some("stop")));
                let _ = tx.send(Ok(end.into())).await;
            }
            tokio::time::sleep(Duration::from_secs(40)).await;
            let rest = if ends {
                String::new()
            } else {
                frame(&chunk_json("m2", json!({"content": "sh"}), Some("stop")))
            };
            let _ = tx.send(Ok(format!("{rest}data: [DONE]\n\n").into())).await;
        });
        r
    });
    let gw = Gw::start(CONTINUED_ON_G2, &net);
    let ask = |content: &str, read_timeout: Option<&'static str>| {
        let mut body = chat_body("g", true);
        body["messages"][0]["content"] = json!(content);
        let mut request = chat_request(None, &body);
        if let Some(value) = read_timeout {
            request.headers_mut().insert(
                "x-stainless-read-timeout",
                http::HeaderValue::from_static(value),
            );
        }
        request
    };
    for (read_timeout, every) in [(None, 15u64), (Some("6"), 3)] {
        let r = gw
            .connect()
            .await
            .send_request(ask("continue me", read_timeout))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let frames = timed_frames(r).await;
        let body: String = frames.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(streamed_text(&body), "fresh", "{body}");
        let comments = frames.iter().filter(|(_, f)| f.starts_with(':')).count();
        assert!(
            comments as u64 >= 40 / every - 1,
            "{read_timeout:?}: {comments} keep-alive(s) in a 40 s wait: {frames:?}"
        );
        for (_, f) in frames.iter().filter(|(_, f)| f.starts_with(':')) {
            assert_eq!(f, ": keep-alive\n\n", "a whole SSE comment, between events");
        }
        assert!(
            longest_silence(&frames) <= Duration::from_secs(every),
            "{read_timeout:?}: the client went {:?} without a byte: {frames:?}",
            longest_silence(&frames)
        );
    }
    // The provider's own silence mid-answer is the provider's: passed on, not papered over.
    let r = gw
        .connect()
        .await
        .send_request(ask("think", None))
        .await
        .unwrap();
    let frames = timed_frames(r).await;
    let body: String = frames.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(streamed_text(&body), "fresh", "{body}");
    assert!(
        !body.contains(": keep-alive"),
        "no keep-alive while the serving provider is silent: {frames:?}"
    );
    assert!(longest_silence(&frames) >= Duration::from_secs(40));
    // Once the continuation has begun (here with the answer's finish, which the gateway
    // holds back for its metadata), the silence is its provider's too.
    let r = gw
        .connect()
        .await
        .send_request(ask("ends", None))
        .await
        .unwrap();
    let frames = timed_frames(r).await;
    let body: String = frames.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(streamed_text(&body), "fre", "{body}");
    assert!(
        !body.contains(": keep-alive"),
        "no keep-alive once the continuation has begun: {frames:?}"
    );
}
