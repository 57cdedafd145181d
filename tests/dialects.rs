//! Provider dialects: what real providers stream that OpenAI does not, read the same way in
//! both modes. Ollama and SGLang put `finish_reason: ""` on every chunk but the last;
//! Perplexity sends a running `message` beside each `delta`; Mistral's Magistral streams
//! `content` as a string, then as lists of `thinking` parts, then as a string again. Each
//! test was written to fail on the code before its fix, against the whole gateway in memory
//! (see `support`).

mod support;

use serde_json::{Value, json};
use support::*;

/// Streams `frames` (each already an SSE frame), pauses 20 s, then sends `tail`:
/// what the client had 5 s in, and in all.
async fn stream_with_pause(
    config: &str,
    frames: Vec<String>,
    tail: Vec<String>,
) -> (String, String) {
    let net = MemNet::new();
    let (tx, answer) = sse_channel();
    let answer = std::sync::Mutex::new(Some(answer));
    net.host("up", move |_| {
        answer.lock().unwrap().take().expect("one call")
    });
    let gw = Gw::start(config, &net);
    let upstream = tokio::spawn(async move {
        for f in frames {
            tx.send(Ok(f.into())).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        for f in tail {
            tx.send(Ok(f.into())).await.unwrap();
        }
    });
    let r = gw.chat(None, chat_body("g", true)).await;
    assert_eq!(r.status(), 200);
    let seen = read_early_then_all(r, std::time::Duration::from_secs(5)).await;
    upstream.await.unwrap();
    seen
}

/// Ollama (issue ollama/ollama#4357) and SGLang 0.4.3 (sgl-project/sglang#3912) send
/// `"finish_reason": ""` on every intermediate chunk. The stream delivery reads `""` as a
/// finish, holds the "tail" from the first chunk on, and so holds the WHOLE answer until
/// the upstream ends: the streaming client gets a 200 and then nothing.
#[tokio::test(start_paused = true)]
async fn empty_string_finish_reasons_do_not_hold_the_whole_stream() {
    let chunk = |delta: Value, finish: &str| {
        frame(
            &json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let frames = vec![
        chunk(json!({"role": "assistant", "content": ""}), ""),
        chunk(json!({"content": "EARLY"}), ""),
        chunk(json!({"content": " text"}), ""),
    ];
    let tail = vec![chunk(json!({}), "stop"), "data: [DONE]\n\n".to_string()];
    let (early, all) = stream_with_pause(ONE_GROUP, frames, tail).await;
    assert!(all.contains("EARLY"), "{all}");
    assert!(
        early.contains("EARLY"),
        "the content sent before the upstream's pause was held back; 5 s in the client had:\n{early:?}"
    );
}

/// Perplexity's streamed chunks carry the cumulative `message` beside the `delta`
/// (perplexityai/api-discussion#209). The chunk parser, the commit text and the SDKs read
/// only `delta`; the non-stream accumulator merges BOTH (it matches on the parsed variant,
/// not the key), so the non-streaming answer repeats the text while the streaming client
/// gets it once.
#[tokio::test(start_paused = true)]
async fn a_cumulative_message_beside_the_delta_is_not_merged_into_the_answer() {
    let net = MemNet::new();
    net.host("up", |_| {
        let chunk = |delta: &str, so_far: &str, finish: Value| {
            frame(
                &json!({"id": "p-1", "model": "sonar", "created": 1, "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": finish,
                    "message": {"role": "assistant", "content": so_far},
                    "delta": {"role": "assistant", "content": delta}}]}),
            )
        };
        let mut body = chunk("Hel", "Hel", Value::Null);
        body.push_str(&chunk("lo", "Hello", Value::Null));
        body.push_str(&chunk("", "Hello", json!("stop")));
        body.push_str("data: [DONE]\n\n");
        sse(body)
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let streamed = text(gw.chat(None, chat_body("g", true)).await).await;
    assert_eq!(streamed_text(&streamed), "Hello");
    let r = gw.chat(None, chat_body("g", false)).await;
    let v: Value = serde_json::from_str(&text(r).await).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"], "Hello",
        "non-stream answer differs from the streamed one: {v}"
    );
}

/// The same reading of `"finish_reason": ""` as a finish makes a body that ends cleanly in
/// the middle of the answer (no real finish reason, no `[DONE]`) a complete answer: with
/// `null` the same cut is a broken stream (502, or a retry/fallback), with `""` the client
/// gets 200 and half an answer.
#[tokio::test(start_paused = true)]
async fn a_cut_answer_with_empty_string_finish_reasons_is_not_complete() {
    for finish in [Value::Null, json!("")] {
        let net = MemNet::new();
        let f = finish.clone();
        net.host("up", move |_| {
            let chunk = |delta: Value| {
                frame(
                    &json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                    "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": f}]}),
                )
            };
            let mut body = chunk(json!({"role": "assistant", "content": ""}));
            body.push_str(&chunk(json!({"content": "The answer is"})));
            sse(body) // ends here: no finish reason, no [DONE]
        });
        let gw = Gw::start(ONE_GROUP, &net);
        let r = gw.chat(None, chat_body("g", false)).await;
        let status = r.status();
        let body = text(r).await;
        assert_ne!(
            status, 200,
            "finish_reason {finish}: a cut answer served as complete: {body}"
        );
    }
}

/// Mistral's Magistral streams `content` as a string (`""` on the first chunks), then as a
/// list of `thinking` parts, then as strings again (BerriAI/litellm#16272 shows the wire).
/// The accumulator replaces a value whose kind changes, so the non-streaming answer loses
/// every thinking part the streaming client received.
#[tokio::test(start_paused = true)]
async fn content_that_changes_kind_keeps_what_came_before() {
    let net = MemNet::new();
    net.host("up", |_| {
        let thinking =
            |t: &str| json!([{"type": "thinking", "thinking": [{"type": "text", "text": t}]}]);
        let mut body = frame(&chunk_json(
            "magistral",
            json!({"role": "assistant", "content": ""}),
            None,
        ));
        body.push_str(&frame(&chunk_json(
            "magistral",
            json!({"content": ""}),
            None,
        )));
        body.push_str(&frame(&chunk_json(
            "magistral",
            json!({"content": thinking("THINK-1")}),
            None,
        )));
        body.push_str(&frame(&chunk_json(
            "magistral",
            json!({"content": thinking("THINK-2")}),
            None,
        )));
        body.push_str(&frame(&chunk_json(
            "magistral",
            json!({"content": "Hello"}),
            None,
        )));
        body.push_str(&frame(&chunk_json(
            "magistral",
            json!({"content": "!"}),
            Some("stop"),
        )));
        body.push_str("data: [DONE]\n\n");
        sse(body)
    });
    let gw = Gw::start(ONE_GROUP, &net);
    let streamed = text(gw.chat(None, chat_body("g", true)).await).await;
    assert!(streamed.contains("THINK-1") && streamed.contains("THINK-2"));
    let r = gw.chat(None, chat_body("g", false)).await;
    let v: Value = serde_json::from_str(&text(r).await).unwrap();
    let content = v["choices"][0]["message"]["content"].to_string();
    assert!(
        content.contains("THINK-1") && content.contains("THINK-2") && content.contains("Hello!"),
        "the non-stream answer lost what the stream delivered: {v}"
    );
}

/// Some gateways label their event stream `application/json` (openclaw/openclaw#96497);
/// the official SDKs read a streamed answer whatever its label. Switchback read the body
/// as one JSON completion and failed the attempt ("not JSON"). A streamed call's body that
/// is an event stream is read as one, in both modes; a JSON body is still a completion.
#[tokio::test(start_paused = true)]
async fn an_event_stream_labelled_json_is_read_as_a_stream() {
    let net = MemNet::new();
    net.host("up", |_| {
        let mut r = sse_answer("m", &["Hel", "lo"]);
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        assert_eq!(r.status(), 200, "stream: {stream}");
        let body = text(r).await;
        let answer: String = if stream {
            streamed_text(&body)
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(answer, "Hello", "stream: {stream}: {body}");
    }
}

/// Azure OpenAI's Asynchronous Filter (Microsoft's `content-filter-streaming.md`, its
/// sample streams): content chunks carry no `content_filter_results`; annotation chunks
/// (`id: ""`, `object: ""`, `model: ""`, `created: 0`, a choice with no `delta`, its
/// `content_filter_offsets`) come between them and one more comes AFTER the finish chunk,
/// with `finish_reason: null`.
fn azure_async_filter_stream(blocked: bool) -> String {
    let safe = json!({"hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"}});
    let content = |delta: Value, finish: Value| {
        frame(
            &json!({"id": "chatcmpl-az", "object": "chat.completion.chunk",
            "created": 1692913344, "model": "gpt-35-turbo",
            "choices": [{"index": 0, "finish_reason": finish, "delta": delta}], "usage": null}),
        )
    };
    let annotation = |finish: Value, results: Value, check: u64| {
        frame(&json!({"id": "", "object": "", "created": 0, "model": "",
            "choices": [{"index": 0, "finish_reason": finish, "content_filter_results": results,
                "content_filter_offsets": {"check_offset": check, "start_offset": 44, "end_offset": 198}}],
            "usage": null}))
    };
    let mut body = frame(&json!({"id": "", "object": "", "created": 0, "model": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": safe}],
        "choices": [], "usage": null}));
    body.push_str(&content(json!({"role": "assistant"}), Value::Null));
    body.push_str(&content(json!({"content": "Color"}), Value::Null));
    body.push_str(&annotation(Value::Null, safe.clone(), 44));
    body.push_str(&content(json!({"content": " is"}), Value::Null));
    if blocked {
        body.push_str(&annotation(
            json!("content_filter"),
            json!({"protected_material_text": {"detected": true, "filtered": true}}),
            65,
        ));
    } else {
        body.push_str(&content(json!({}), json!("stop")));
        body.push_str(&annotation(Value::Null, safe, 506));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// The annotation that comes after Azure's finish chunk has `finish_reason: null`; the
/// answer's finish reason is still the finish chunk's, in both modes, and the annotation
/// reaches a streaming client (it is part of the answer the provider sent).
#[tokio::test(start_paused = true)]
async fn azure_async_filter_annotations_after_the_finish_keep_the_finish_reason() {
    let net = MemNet::new();
    net.host("up", |_| sse(azure_async_filter_stream(false)));
    let gw = Gw::start(ONE_GROUP, &net);
    let r = gw.chat(None, chat_body("g", false)).await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&text(r).await).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Color is", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(v["id"], "chatcmpl-az", "{v}");
    // The annotations' `model: ""` is no model: it must not erase the content chunks' own.
    assert_eq!(v["model"], "gpt-35-turbo", "{v}");
    // Azure filters a non-stream answer whole: its choices carry the verdict, never the
    // offsets only an async-filtered stream has.
    assert_eq!(
        v["choices"][0]["content_filter_results"]["hate"]["severity"], "safe",
        "{v}"
    );
    assert!(
        v["choices"][0].get("content_filter_offsets").is_none(),
        "{v}"
    );
    let r = gw.chat(None, chat_body("g", true)).await;
    assert_eq!(r.status(), 200);
    let streamed = text(r).await;
    assert_eq!(streamed_text(&streamed), "Color is");
    assert!(streamed.contains("\"check_offset\":506"), "{streamed}");
    assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");
    // DESIGN: the last chunk's model is the non-stream answer's, so a client that takes
    // the model from the last chunk (as the oracle does) reads the same in both modes.
    assert_eq!(models_after_the_first(&streamed), ["gpt-35-turbo"; 6]);
    let completed: Vec<String> = gw
        .events()
        .into_iter()
        .filter(|e| e.contains("completed"))
        .collect();
    assert_eq!(completed.len(), 2, "{completed:?}");
    for line in &completed {
        assert!(line.contains("model=gpt-35-turbo"), "{line}");
    }
}

/// Azure's Asynchronous Filter blocks after content was sent: the last chunk is an
/// annotation whose choice has `finish_reason: "content_filter"` and no `delta`. Both
/// modes end with that finish reason and the content sent before it.
#[tokio::test(start_paused = true)]
async fn azure_async_filter_block_ends_the_answer_with_content_filter() {
    let net = MemNet::new();
    net.host("up", |_| sse(azure_async_filter_stream(true)));
    let gw = Gw::start(ONE_GROUP, &net);
    let r = gw.chat(None, chat_body("g", false)).await;
    let status = r.status();
    let body = text(r).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Color is", "{v}");
    assert_eq!(v["model"], "gpt-35-turbo", "{v}");
    let r = gw.chat(None, chat_body("g", true)).await;
    assert_eq!(r.status(), 200);
    let streamed = text(r).await;
    assert!(
        streamed.contains("\"finish_reason\":\"content_filter\""),
        "{streamed}"
    );
    assert_eq!(models_after_the_first(&streamed), ["gpt-35-turbo"; 5]);
}

/// The `model` of every chunk of an SSE body but the first (Azure's prompt-filter chunk,
/// before any model was named, keeps its `""`).
fn models_after_the_first(sse_body: &str) -> Vec<String> {
    sse_body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("choices").is_some())
        .skip(1)
        .map(|v| v["model"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

/// A stream cut after commit is continued by a fallback whose server names no model (`""`
/// on every chunk). The stream's last chunk and the non-stream answer must name the same
/// model, the fallback's: the non-stream answer kept the failed attempt's (an empty model
/// never erases a real one) while the stream's last chunk said `""`.
#[tokio::test(start_paused = true)]
async fn a_continuation_whose_server_names_no_model_is_named_alike_in_both_modes() {
    let config = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/ma, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: g2, litellm_params: {model: openai/mb, api_base: "http://up2/v1"}, model_info: {id: d2}}
router_settings: {num_retries: 0, fallbacks: [{g: [g2]}], mid_stream: continue}
"#;
    let net = MemNet::new();
    // Content, then the body ends: no finish reason, no [DONE] (a cut stream).
    net.host("up", |_| {
        sse(frame(&chunk_json(
            "ma",
            json!({"role": "assistant", "content": "Hel"}),
            None,
        )))
    });
    net.host("up2", |_| {
        sse(frame(&chunk_json(
            "",
            json!({"role": "assistant", "content": "lo"}),
            None,
        )) + &frame(&chunk_json("", json!({}), Some("stop")))
            + "data: [DONE]\n\n")
    });
    let gw = Gw::start(config, &net);
    let r = gw.chat(None, chat_body("g", false)).await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&text(r).await).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello", "{v}");
    let r = gw.chat(None, chat_body("g", true)).await;
    assert_eq!(r.status(), 200);
    let streamed = text(r).await;
    assert_eq!(streamed_text(&streamed), "Hello");
    let models = models_after_the_first(&format!("data: {{\"choices\":[]}}\n\n{streamed}"));
    assert_eq!(models.last().map(String::as_str), Some("mb"), "{models:?}");
    assert_eq!(v["model"], "mb", "{v}");
}

/// llama.cpp's server (builds before its PR 16486, 2025-10) answers a request over the
/// context size with a 200 whose event stream holds one line in a field of its own,
/// `error: {...}`, and then `data: [DONE]` (llama.cpp issue 14566). SSE ignores a field it
/// does not know, so the answer read as an empty one: a 200 with nothing in it, the
/// deployment counted healthy, and no context-window fallback. Any upstream that answers
/// a bare `[DONE]` did the same. Now the `error` field is an error event, classified by
/// its body (here: the context window), and `[DONE]` before any chunk is a malformed
/// answer, in both modes.
#[tokio::test(start_paused = true)]
async fn an_error_field_or_a_bare_done_is_no_empty_answer() {
    const LLAMA_CPP: &str = "error: {\"code\":400,\"message\":\"the request exceeds the available context size. try increasing the context size or enable context shift\",\"type\":\"invalid_request_error\"}\n\ndata: [DONE]\n\n";
    const CONFIG: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: big, litellm_params: {model: openai/m2, api_base: "http://up2/v1"}, model_info: {id: d2}}
  - {model_name: other, litellm_params: {model: openai/m3, api_base: "http://up3/v1"}, model_info: {id: d3}}
router_settings: {num_retries: 0, context_window_fallbacks: [{g: [big]}], fallbacks: [{g: [other]}]}
"#;
    for (upstream, served_by, class) in [
        (LLAMA_CPP, "big", "context_window"),
        ("data: [DONE]\n\n", "other", "malformed"),
    ] {
        for stream in [false, true] {
            let net = MemNet::new();
            net.host("up", move |_| sse(upstream));
            net.host("up2", |_| sse_answer("m2", &["long enough"]));
            net.host("up3", |_| sse_answer("m3", &["another"]));
            let gw = Gw::start(CONFIG, &net);
            let r = gw.chat(None, chat_body("g", stream)).await;
            let case = format!("{upstream:?}, stream={stream}");
            assert_eq!(r.status(), 200, "{case}");
            let body = text(r).await;
            let answer = if stream {
                streamed_text(&body)
            } else {
                answered_text(&body, false)
            };
            let expected = if served_by == "big" {
                "long enough"
            } else {
                "another"
            };
            assert_eq!(answer, expected, "{case}: {body}");
            assert!(
                gw.saw(&format!("class={class}")),
                "{case}: {:#?}",
                gw.events()
            );
        }
    }
}

/// Perplexity's running copy of the message beside every delta grows with the answer, so
/// its bytes on the wire grow with the square of the answer's length: counted whole
/// against `max_upstream_body_bytes`, a healthy answer of about 4,000 tokens went past the
/// default of the time (16 MiB) and failed as malformed (blamed on the deployment, and continued or cut).
/// The copy is not the answer (the delta is; neither mode keeps the copy), and is not
/// counted; everything else still is. Here with a limit of 256 KiB and an answer of 600
/// pieces of 8 bytes: 1.5 MB on the wire, 4.8 KB of answer.
#[tokio::test(start_paused = true)]
async fn a_running_copy_of_the_message_does_not_count_against_the_answers_size() {
    let config = format!("{ONE_GROUP}limits: {{max_upstream_body_bytes: 262144}}\n");
    let net = MemNet::new();
    net.host("up", |_| {
        let body = perplexity_answer(PIECES);
        assert!(body.len() > 1_000_000, "{}", body.len());
        sse(body)
    });
    let gw = Gw::start(&config, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        let status = r.status();
        let body = text(r).await;
        assert_eq!(status, 200, "stream={stream}: {body}");
        let answer = answered_text(&body, stream);
        assert_eq!(answer.len(), PIECES * 8, "stream={stream}");
        assert!(answer.starts_with("word000 word001 "), "stream={stream}");
    }
    assert!(!gw.saw("class=malformed"), "{:#?}", gw.events());
}

const PIECES: usize = 600;

/// The credit a running copy of the message earns (above) is for a copy neither mode
/// keeps. After the answer's last finish reason every chunk that does not go on is held
/// as the answer's possible end, its copy and raw text with it: an upstream that, past its
/// finish, sends content-less chunks with a large `message` beside an empty `delta` had
/// them all held, uncounted, until the deadline (here 100 chunks of 64 KiB against a limit
/// of 1 MiB: 6.4 MB held). A copy beside a delta without output is counted: the limit is
/// hit, and the answer, which had ended, is served whole in both modes.
#[tokio::test(start_paused = true)]
async fn copies_held_after_the_answers_end_are_counted() {
    let config = format!("{ONE_GROUP}limits: {{max_upstream_body_bytes: 1048576}}\n");
    let net = MemNet::new();
    net.host("up", |_| {
        let chunk = |delta: Value, finish: Value, message: &str| {
            frame(
                &json!({"id": "c-1", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                "message": {"role": "assistant", "content": message}}]}),
            )
        };
        let mut body = chunk(
            json!({"role": "assistant", "content": "Hi"}),
            Value::Null,
            "Hi",
        );
        body.push_str(&chunk(json!({}), json!("stop"), "Hi"));
        let copy = "x".repeat(64 * 1024);
        for _ in 0..100 {
            body.push_str(&chunk(json!({}), Value::Null, &copy));
        }
        body.push_str("data: [DONE]\n\n");
        sse(body)
    });
    let gw = Gw::start(&config, &net);
    for stream in [false, true] {
        let r = gw.chat(None, chat_body("g", stream)).await;
        let status = r.status();
        let body = text(r).await;
        assert_eq!(
            status,
            200,
            "stream={stream}: {}",
            &body[..body.len().min(300)]
        );
        assert_eq!(answered_text(&body, stream), "Hi", "stream={stream}");
        assert!(
            body.len() < 1 << 20,
            "stream={stream}: {} bytes",
            body.len()
        );
    }
    assert!(
        gw.saw("limit_hit limit=max_upstream_body_bytes"),
        "{:#?}",
        gw.events()
    );
}

/// Long answers fit the default limits. gpt-5 writes up to 128,000 output tokens, one
/// chunk of about 250 bytes and 16 JSON values each (`service_tier`, `obfuscation`...),
/// and Qwen3's thinking models stream 80,000 tokens of reasoning: the old defaults
/// (16 MiB of body, 1,000,000 values) failed such an answer near its end, after commit,
/// in both modes (the upstream call streams in both), about 62,000 tokens in. Gemini's
/// OpenAI endpoint sends each tool call whole in one event: an agent's `write_file` of a
/// 1 MiB file was one line over the old 256 KiB `max_sse_line_bytes`.
#[tokio::test(start_paused = true)]
async fn long_answers_fit_the_default_limits() {
    const TOKENS: usize = 80_000;
    let net = MemNet::new();
    net.host("up", |req| {
        let asked = req.body;
        let mut body = String::new();
        let head = |delta: Value, finish: Value| {
            frame(
                &json!({"id": "chatcmpl-long", "object": "chat.completion.chunk",
                "created": 1, "model": "gpt-5-2025-08-07", "service_tier": "default",
                "system_fingerprint": null, "choices": [{"index": 0, "delta": delta,
                "logprobs": null, "finish_reason": finish}], "obfuscation": "Zx9"}),
            )
        };
        if asked["messages"][0]["content"] == "tool" {
            let arguments = json!({"path": "big.txt", "content": "x".repeat(1 << 20)});
            body.push_str(&head(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1",
                    "type": "function", "function": {"name": "write_file",
                    "arguments": arguments.to_string()}}]}),
                Value::Null,
            ));
            body.push_str(&head(json!({}), json!("tool_calls")));
        } else {
            body.push_str(&head(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for _ in 0..TOKENS {
                body.push_str(&head(json!({"content": " tok"}), Value::Null));
            }
            body.push_str(&head(json!({}), json!("stop")));
        }
        body.push_str("data: [DONE]\n\n");
        sse(body)
    });
    let gw = Gw::start(ONE_GROUP, &net);
    for stream in [false, true] {
        let mut ask = chat_body("g", stream);
        let r = gw.chat(None, ask.clone()).await;
        let status = r.status();
        let body = text(r).await;
        assert_eq!(
            status,
            200,
            "stream={stream}: {}",
            &body[..body.len().min(500)]
        );
        assert_eq!(
            answered_text(&body, stream).len(),
            TOKENS * 4,
            "stream={stream}"
        );
        ask["messages"][0]["content"] = json!("tool");
        let r = gw.chat(None, ask).await;
        let status = r.status();
        let body = text(r).await;
        assert_eq!(
            status,
            200,
            "stream={stream}: {}",
            &body[..body.len().min(500)]
        );
        assert!(body.contains("write_file"), "stream={stream}");
        assert!(body.len() > 1 << 20, "stream={stream}: {}", body.len());
    }
    assert!(!gw.saw("limit_hit"), "{:#?}", gw.events());
}

/// Perplexity's stream of `pieces` pieces of 8 bytes, each chunk with the running copy.
fn perplexity_answer(pieces: usize) -> String {
    let mut body = String::new();
    let mut so_far = String::new();
    for i in 0..=pieces {
        let (delta, finish) = match i {
            i if i == pieces => (String::new(), json!("stop")),
            _ => (format!("word{:03} ", i % 1000), Value::Null),
        };
        so_far.push_str(&delta);
        body.push_str(&frame(&json!({"id": "p-1", "model": "sonar", "created": 1,
            "object": "chat.completion", "choices": [{"index": 0, "finish_reason": finish,
            "message": {"role": "assistant", "content": so_far},
            "delta": {"role": "assistant", "content": delta}}]})));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// Where `max_upstream_body_bytes` cuts an answer with running copies does not depend on
/// how its bytes were cut into reads: the same text reaches the client before the error.
#[tokio::test(start_paused = true)]
async fn where_the_size_limit_falls_does_not_depend_on_the_reads() {
    let config = format!("{ONE_GROUP}limits: {{max_upstream_body_bytes: 61440}}\n");
    let mut seen = Vec::new();
    for write in [977, 4096, 65_536, usize::MAX] {
        let net = MemNet::new();
        net.host("up", move |_| {
            let (tx, r) = sse_channel();
            let body = bytes::Bytes::from(perplexity_answer(PIECES));
            tokio::spawn(async move {
                let mut at = 0;
                while at < body.len() {
                    let end = body.len().min(at.saturating_add(write));
                    if tx.send(Ok(body.slice(at..end))).await.is_err() {
                        return;
                    }
                    at = end;
                }
            });
            r
        });
        let gw = Gw::start(&config, &net);
        let body = text(gw.chat(None, chat_body("g", true)).await).await;
        assert!(
            gw.saw("limit_hit limit=max_upstream_body_bytes"),
            "writes of {write}: {:#?}",
            gw.events()
        );
        seen.push(streamed_text(&body));
    }
    let cut = &seen[0];
    assert!(cut.len() > 1000 && cut.len() < PIECES * 8, "{}", cut.len());
    assert!(
        seen.iter().all(|s| s == cut),
        "{:?}",
        seen.iter().map(String::len).collect::<Vec<_>>()
    );
}

/// Moonshot's Kimi puts its usage in the finishing choice (`choices[0].usage`; ENTERPILOT/
/// GoModel's recorded Kimi stream), and Groq, asked for none, in `x_groq.usage` on its
/// last chunk (vercel/ai#1651). Read only at the top, the usage was never counted: the
/// non-stream answer had no `usage`, a streaming client that asked for usage got none, and
/// a continuation summed nothing. Where a chunk has no `usage` of its own, the one it
/// reports elsewhere is read as its usage (and put at its top; the provider's own stays).
#[tokio::test(start_paused = true)]
async fn usage_reported_inside_the_choice_or_under_x_groq_is_counted() {
    let kimi_finish = json!({"id": "k-1", "object": "chat.completion.chunk", "created": 1,
        "model": "kimi-k2", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
        "usage": {"prompt_tokens": 18, "completion_tokens": 50, "total_tokens": 68}}]});
    let groq_finish = json!({"id": "g-1", "object": "chat.completion.chunk", "created": 1,
        "model": "llama3-8b-8192", "system_fingerprint": "fp_179b0f92c9",
        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}],
        "x_groq": {"id": "req_01hy8ppkajfqk987jv2vx88m9r", "usage": {"queue_time": 0.07,
            "prompt_tokens": 18, "prompt_time": 0.006, "completion_tokens": 50,
            "completion_time": 0.022, "total_tokens": 68, "total_time": 0.028}}});
    for finish in [kimi_finish, groq_finish] {
        let net = MemNet::new();
        let f = finish.clone();
        net.host("up", move |_| {
            let mut body = frame(&chunk_json(
                "m",
                json!({"role": "assistant", "content": "Hi"}),
                None,
            ));
            body.push_str(&frame(&f));
            body.push_str("data: [DONE]\n\n");
            sse(body)
        });
        let gw = Gw::start(ONE_GROUP, &net);
        let v: Value =
            serde_json::from_str(&text(gw.chat(None, chat_body("g", false)).await).await).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi", "{v}");
        assert_eq!(v["usage"]["total_tokens"], 68, "non-stream, {finish}: {v}");
        assert_eq!(v["usage"]["prompt_tokens"], 18, "{v}");
        let mut body = chat_body("g", true);
        body["stream_options"] = json!({"include_usage": true});
        let streamed = text(gw.chat(None, body).await).await;
        let reported: Vec<Value> = streamed
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|p| serde_json::from_str::<Value>(p).ok())
            .filter_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned())
            .collect();
        assert!(
            reported.iter().any(|u| u["completion_tokens"] == 50),
            "stream, {finish}: {streamed}"
        );
    }
}

/// Config for the tests below: `g` falls back to `other`; a content filter on `g` goes to
/// `safe`.
const FALLBACK_CONFIG: &str = r#"
allow_anonymous: true
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "http://up/v1"}, model_info: {id: d}}
  - {model_name: other, litellm_params: {model: openai/m3, api_base: "http://up3/v1"}, model_info: {id: d3}}
  - {model_name: safe, litellm_params: {model: openai/m4, api_base: "http://up4/v1"}, model_info: {id: d4}}
router_settings: {num_retries: 0, fallbacks: [{g: [other]}], content_policy_fallbacks: [{g: [safe]}]}
"#;

/// The text of an answer in either mode, and which deployment served it.
async fn answer_and_server(gw: &Gw, stream: bool) -> (u16, String, String) {
    let r = gw.chat(None, chat_body("g", stream)).await;
    let status = r.status().as_u16();
    let server = r
        .headers()
        .get("x-switchback-deployment")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = text(r).await;
    let answer = if status != 200 {
        body
    } else if stream {
        streamed_text(&body)
    } else {
        answered_text(&body, false)
    };
    (status, answer, server)
}

/// A finish reason that says the answer FAILED, in an HTTP 200: vLLM's `abort` (the engine
/// aborted the request: shut down, scaled down, preempted), Mistral's, OpenRouter's and
/// Cloudflare's `error`, DeepSeek's `insufficient_system_resource` ("the request is
/// interrupted due to insufficient resource of the inference system"), Zhipu's
/// `network_error` ("model inference failed"); and OpenRouter's per-choice `error` object.
/// Read as finishes, each was served as a complete answer (empty, or cut), with no retry or
/// fallback, and the deployment counted healthy. Each is an error event now, in both modes:
/// before commit the fallback answers.
#[tokio::test(start_paused = true)]
async fn a_finish_reason_that_says_the_answer_failed_is_a_failure() {
    let failing = |reason: Value, error: Option<Value>| {
        let mut last = json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]});
        if let Some(e) = error {
            last["choices"][0]["error"] = e;
        }
        let mut body = frame(&chunk_json(
            "m",
            json!({"role": "assistant", "content": ""}),
            None,
        ));
        body.push_str(&frame(&last));
        body.push_str("data: [DONE]\n\n");
        body
    };
    let cases = [
        failing(json!("abort"), None),
        failing(json!("error"), None),
        failing(json!("insufficient_system_resource"), None),
        failing(json!("network_error"), None),
        failing(
            json!("error"),
            Some(json!({"code": 502, "message": "Provider returned error"})),
        ),
        failing(
            Value::Null,
            Some(json!({"code": 502, "message": "Provider returned error"})),
        ),
    ];
    for upstream in cases {
        for stream in [false, true] {
            let net = MemNet::new();
            let body = upstream.clone();
            net.host("up", move |_| sse(body.clone()));
            net.host("up3", |_| sse_answer("m3", &["another"]));
            let gw = Gw::start(FALLBACK_CONFIG, &net);
            let (status, answer, server) = answer_and_server(&gw, stream).await;
            assert_eq!(
                (status, answer.as_str(), server.as_str()),
                (200, "another", "d3"),
                "stream={stream}, {upstream}"
            );
        }
    }
}

/// A whole JSON answer with `finish_reason: "error"` fails alike.
#[tokio::test(start_paused = true)]
async fn a_whole_answer_whose_finish_reason_says_it_failed_is_a_failure() {
    let net = MemNet::new();
    net.host("up", |_| {
        json_response(
            200,
            &json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Par"}, "finish_reason": "error"}]}),
        )
    });
    net.host("up3", |_| sse_answer("m3", &["another"]));
    let gw = Gw::start(FALLBACK_CONFIG, &net);
    for stream in [false, true] {
        let (status, answer, server) = answer_and_server(&gw, stream).await;
        assert_eq!(
            (status, answer.as_str(), server.as_str()),
            (200, "another", "d3")
        );
    }
}

/// A 200 that names no choice at all (`choices: []` with only a usage, as OpenRouter's free
/// endpoints, Gemini's empty turns and some vLLM builds answer): served, the SDKs fail on
/// `choices[0]` and the deployment counted healthy. It is a malformed answer now, in both
/// modes. Azure's leading `choices: []` chunk still opens an answer.
#[tokio::test(start_paused = true)]
async fn an_answer_that_names_no_choice_is_malformed() {
    let usage = json!({"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5});
    let whole = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [], "usage": usage});
    let streamed = format!(
        "{}{}data: [DONE]\n\n",
        frame(
            &json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []})
        ),
        frame(
            &json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": usage})
        )
    );
    for json_body in [true, false] {
        for stream in [false, true] {
            let net = MemNet::new();
            let (w, s) = (whole.clone(), streamed.clone());
            net.host("up", move |_| {
                if json_body {
                    json_response(200, &w)
                } else {
                    sse(s.clone())
                }
            });
            net.host("up3", |_| sse_answer("m3", &["another"]));
            let gw = Gw::start(FALLBACK_CONFIG, &net);
            let (status, answer, server) = answer_and_server(&gw, stream).await;
            assert_eq!(
                (status, answer.as_str(), server.as_str()),
                (200, "another", "d3"),
                "json={json_body} stream={stream}"
            );
            assert!(gw.saw("class=malformed"), "{:#?}", gw.events());
        }
    }
}

/// Open WebUI's `/api/chat/completions` and several Gemini relays put `finish_reason:
/// "stop"` on EVERY chunk (open-webui#16377, one-hub#402). Read as a finish, the first one
/// made the stream delivery hold everything after it until the upstream ended, and a reset
/// after it was served as a complete answer. A choice that goes on after its finish did not
/// finish: its chunks go as they come, without the finish reasons that were none (OpenAI
/// sends one per choice, and clients read it as the choice's end), and only `[DONE]` ends
/// it.
#[tokio::test(start_paused = true)]
async fn a_finish_reason_on_every_chunk_does_not_hold_the_stream() {
    let chunk = |delta: Value| {
        frame(
            &json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}]}),
        )
    };
    let frames = vec![
        chunk(json!({"role": "assistant", "content": ""})),
        chunk(json!({"content": "EARLY"})),
        chunk(json!({"content": " text"})),
    ];
    let tail = vec![chunk(json!({"content": " end"})), "data: [DONE]\n\n".into()];
    let (early, all) = stream_with_pause(ONE_GROUP, frames, tail).await;
    assert_eq!(streamed_text(&all), "EARLY text end", "{all}");
    assert_eq!(
        all.matches(r#""finish_reason":"stop""#).count(),
        1,
        "clients read a finish reason as the choice's end: one, on the last chunk: {all}"
    );
    assert!(
        early.contains("EARLY"),
        "the content sent before the upstream's pause was held back; 5 s in the client had:\n{early:?}"
    );
}

/// The same stream, cut after a few chunks without `[DONE]`: not complete.
#[tokio::test(start_paused = true)]
async fn a_cut_answer_with_a_finish_reason_on_every_chunk_is_not_complete() {
    let net = MemNet::new();
    net.host("up", |_| {
        let chunk = |delta: Value| {
            frame(
                &json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}]}),
            )
        };
        let mut body = chunk(json!({"role": "assistant", "content": "The"}));
        body.push_str(&chunk(json!({"content": " answer is"})));
        sse(body) // ends here: no [DONE]
    });
    net.host("up3", |_| sse_answer("m3", &["another"]));
    let gw = Gw::start(FALLBACK_CONFIG, &net);
    let (status, answer, _) = answer_and_server(&gw, false).await;
    assert_ne!(
        (status, answer.as_str()),
        (200, "The answer is"),
        "a cut answer served as complete"
    );
}

/// Zhipu's `finish_reason: "sensitive"` is its content filter ("blocked by the safety
/// review"): with a content-policy fallback list it is routed around as `content_filter`
/// is, and without one it is the answer, as the provider said it.
#[tokio::test(start_paused = true)]
async fn zhipus_sensitive_finish_is_a_content_filter() {
    let net = MemNet::new();
    net.host("up", |_| {
        let mut body = frame(&chunk_json(
            "glm",
            json!({"role": "assistant", "content": ""}),
            None,
        ));
        body.push_str(&frame(&chunk_json("glm", json!({}), Some("sensitive"))));
        body.push_str("data: [DONE]\n\n");
        sse(body)
    });
    net.host("up4", |_| sse_answer("m4", &["safe answer"]));
    let gw = Gw::start(FALLBACK_CONFIG, &net);
    for stream in [false, true] {
        let (status, answer, server) = answer_and_server(&gw, stream).await;
        assert_eq!(
            (status, answer.as_str(), server.as_str()),
            (200, "safe answer", "d4"),
            "stream={stream}"
        );
    }
}
