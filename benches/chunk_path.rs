//! The per-chunk work of one answer, without any I/O: the SSE parser, the chunk parser and
//! the commit stamp; then, for a non-streaming client, the aggregation and the final JSON
//! body. The answer is what OpenAI streams for a 10-chunk text answer with `include_usage`
//! (13 events: role, 10 content, finish, usage), in OpenAI's own shape (`service_tier`,
//! `system_fingerprint`, `obfuscation`, ...). Measured with the allocator the `switchback`
//! binary uses.
//!
//! Run: `cargo bench --bench chunk_path`. Figures are in the README.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use switchback::attempt::Delivery;
use switchback::commit::CommitState;
use switchback::delivery::AggregateDelivery;
use switchback::upstream::chunk::{ChunkLimits, Payload, parse_event_data};
use switchback::upstream::sse::SseParser;

/// The upstream body of one answer, as the wire carries it.
fn answer() -> Vec<u8> {
    let head = r#"{"id":"chatcmpl-A1b2C3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0123456789","#;
    let mut body = String::new();
    body.push_str(&format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null,\"obfuscation\":\"x\"}}\n\n"
    ));
    for word in [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ] {
        body.push_str(&format!(
            "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" {word}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null,\"obfuscation\":\"x7Qv\"}}\n\n"
        ));
    }
    body.push_str(&format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null,\"obfuscation\":\"x\"}}\n\n"
    ));
    body.push_str(&format!(
        "data: {head}\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":10,\"total_tokens\":15,\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}}}\n\n"
    ));
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

/// Parses and stamps every chunk of `body`, handing each to `deliver`.
fn chunks(body: &[u8], mut deliver: impl FnMut(switchback::upstream::chunk::Chunk)) {
    let limits = ChunkLimits::default();
    let mut parser = SseParser::new(256 * 1024);
    let mut events = Vec::new();
    parser.push(body, &mut events).expect("well-formed SSE");
    let mut commit = CommitState::new();
    let mut ids = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for event in events {
        match parse_event_data(event.data, &limits).expect("a chunk") {
            Payload::Chunk(chunk) => {
                // The upstream reader counts every chunk's values (max_upstream_json_values).
                std::hint::black_box(chunk.object.value_count());
                if !commit.is_committed() {
                    commit.commit(Some("chatcmpl-A1b2C3"), &mut ids);
                }
                deliver(commit.stamp_and_record(chunk, "gpt-4o-mini"));
            }
            Payload::Done => break,
            Payload::Error(e) => panic!("unexpected error event {e}"),
        }
    }
}

fn benches(c: &mut Criterion) {
    let body = answer();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");

    let mut out = AggregateDelivery::new();
    chunks(&body, |chunk| {
        runtime.block_on(out.chunk(chunk)).expect("kept")
    });
    out.end();
    let text = out.response("chatcmpl-A1b2C3")["choices"][0]["message"]["content"].clone();
    assert_eq!(text, " one two three four five six seven eight nine ten");

    // `CHUNK_PATH_ANSWERS=N`: just build N non-streaming answers and exit, for counting
    // instructions (timings on a shared machine are noisy; counts are not):
    //   CHUNK_PATH_ANSWERS=600 valgrind --tool=callgrind target/release/deps/chunk_path-* --bench
    // less the same with 100, divided by 500.
    if let Some(n) = std::env::var("CHUNK_PATH_ANSWERS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut bytes = 0;
        for _ in 0..n {
            let mut out = AggregateDelivery::new();
            chunks(&body, |chunk| {
                runtime.block_on(out.chunk(chunk)).expect("kept")
            });
            out.end();
            bytes += serde_json::to_vec(&out.response("chatcmpl-A1b2C3"))
                .expect("serialises")
                .len();
        }
        println!("{n} answers, {bytes} bytes");
        return;
    }
    c.bench_function("chunk_path_parse_13_chunks", |b| {
        b.iter(|| {
            let mut n = 0;
            chunks(&body, |chunk| n += chunk.payload_bytes);
            n
        })
    });
    c.bench_function("chunk_path_non_stream_answer_13_chunks", |b| {
        b.iter(|| {
            let mut out = AggregateDelivery::new();
            chunks(&body, |chunk| {
                runtime.block_on(out.chunk(chunk)).expect("kept")
            });
            out.end();
            serde_json::to_vec(&out.response("chatcmpl-A1b2C3")).expect("serialises")
        })
    });
}

criterion_group!(chunk_path, benches);
criterion_main!(chunk_path);
