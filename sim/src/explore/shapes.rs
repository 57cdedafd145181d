//! Generated answer shapes: the provider dialects and what a script answers besides text.
//!
//! Owns: the strategy for one provider's [`Shape`] (its dialect, how it numbers tool calls,
//! and the answer its scripts give: text, text then parallel tool calls, more choices,
//! reasoning then text, a refusal, audio, logprobs) and applying it to a generated provider,
//! with every fault offset kept inside the answer; and the draw of Azure's content-filter
//! streaming mode ([`content_filters`]), of which requests ask for a usage chunk
//! ([`usage_asked`]) and of which providers put a finish reason on every chunk
//! ([`finish_reasons`]), each made apart, at the end of a case, so that it changed no earlier
//! draw of a seed. Does not own the rest of a case (`explore`).

use proptest::prelude::*;

use crate::dialect;
use crate::scenario::{
    ContentFilterMode, Dialect, FaultKind, FinishReasons, Provider, RequestSpec, Script,
    ToolCallIndex, ToolCallSpec,
};

/// What one generated provider answers besides plain text.
#[derive(Debug, Clone)]
pub struct Shape {
    pub dialect: Dialect,
    pub tool_call_index: Option<ToolCallIndex>,
    pub answer: Answer,
    pub logprobs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Text,
    /// The text, then `calls` tool calls, arguments cut in `fragment`-character pieces.
    ToolCalls {
        calls: usize,
        fragment: Option<usize>,
    },
    /// n = 2, the second choice's text interleaved.
    TwoChoices,
    Reasoning,
    Refusal,
    Audio,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Text => "text",
            Answer::ToolCalls { .. } => "tool_calls",
            Answer::TwoChoices => "two_choices",
            Answer::Reasoning => "reasoning",
            Answer::Refusal => "refusal",
            Answer::Audio => "audio",
        }
    }
}

pub fn shape() -> impl Strategy<Value = Shape> {
    (
        proptest::sample::select(Dialect::ALL.to_vec()),
        proptest::option::weighted(
            0.3,
            proptest::sample::select(vec![
                ToolCallIndex::Sequential,
                ToolCallIndex::Omit,
                ToolCallIndex::Zero,
            ]),
        ),
        prop_oneof![
            3 => Just(Answer::Text),
            3 => (1usize..=3, proptest::option::of(2usize..=9))
                .prop_map(|(calls, fragment)| Answer::ToolCalls { calls, fragment }),
            2 => Just(Answer::TwoChoices),
            2 => Just(Answer::Reasoning),
            1 => Just(Answer::Refusal),
            1 => Just(Answer::Audio),
        ],
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(dialect, tool_call_index, answer, logprobs)| Shape {
            dialect,
            tool_call_index,
            answer,
            logprobs,
        })
}

/// `provider` answering in `shape`, every script's fault spread over its whole answer.
///
/// A fault's offset is drawn over the text's chunks, before the shape is known; it is
/// scaled to the shaped answer's pieces, so that it can fall anywhere in it: clamped
/// instead, no fault ever fell inside a tool call's fragments, after the last of them, or
/// at the end of an answer with reasoning or two choices, which the README says explore
/// covers.
pub fn apply(provider: &mut Provider, shape: &Shape) {
    provider.dialect = shape.dialect;
    provider.tool_call_index = shape.tool_call_index;
    let dialect = shape.dialect;
    for script in std::iter::once(&mut provider.default).chain(provider.calls.iter_mut()) {
        let drawn_over = dialect::pieces(dialect, script).len();
        shape_script(script, shape);
        let pieces = dialect::pieces(dialect, script).len();
        if let Some(f) = &mut script.fault {
            if f.kind != FaultKind::Http {
                f.after_chunks = match drawn_over {
                    0 => f.after_chunks.min(pieces),
                    n => (f.after_chunks.min(n) * pieces).div_ceil(n),
                };
                debug_assert!(f.after_chunks <= pieces);
            }
        }
    }
}

fn shape_script(s: &mut Script, shape: &Shape) {
    s.logprobs = shape.logprobs;
    match shape.answer {
        Answer::Text => {}
        Answer::ToolCalls { calls, fragment } => {
            s.tool_calls = (0..calls)
                .map(|i| ToolCallSpec {
                    id: None,
                    name: "get_weather".into(),
                    arguments: format!(r#"{{"city":"city number {i}"}}"#),
                })
                .collect();
            s.arguments_chunk_size = fragment;
        }
        Answer::TwoChoices => s.more_choices = vec!["another choice, in other words".into()],
        Answer::Reasoning => s.reasoning = Some("first think, then answer".into()),
        Answer::Refusal => {
            s.refusal = s.text.take();
        }
        Answer::Audio => {
            s.audio = s.text.take();
        }
    }
}

/// The most providers a case has (5 groups of 2 deployments, and the wildcard group's).
const MAX_PROVIDERS: usize = 11;

/// For each provider of a case, by position: the content filter it streams with if it speaks
/// Azure's dialect (half of them Azure's Asynchronous Filter).
pub fn content_filters() -> impl Strategy<Value = Vec<ContentFilterMode>> {
    proptest::collection::vec(
        proptest::sample::select(vec![ContentFilterMode::Default, ContentFilterMode::Async]),
        MAX_PROVIDERS,
    )
}

/// Gives each Azure provider its drawn content filter; the others have none to give.
pub fn apply_content_filters(providers: &mut [Provider], drawn: &[ContentFilterMode]) {
    for (p, mode) in providers.iter_mut().zip(drawn) {
        if p.dialect == Dialect::Azure {
            p.content_filter = *mode;
        }
    }
}

/// For each provider of a case, by position: whether it puts the finish reason on every
/// chunk (about 1 in 7), as Open WebUI and several Gemini relays do.
pub fn finish_reasons() -> impl Strategy<Value = Vec<FinishReasons>> {
    proptest::collection::vec(
        proptest::bool::weighted(0.15).prop_map(|every| {
            if every {
                FinishReasons::EveryChunk
            } else {
                FinishReasons::Last
            }
        }),
        MAX_PROVIDERS,
    )
}

/// Gives each provider its drawn [`finish_reasons`].
pub fn apply_finish_reasons(providers: &mut [Provider], drawn: &[FinishReasons]) {
    for (p, finish_reasons) in providers.iter_mut().zip(drawn) {
        p.finish_reasons = *finish_reasons;
    }
}

/// Which providers refuse streamed calls with a 400 naming `stream` (OpenAI's for o3 and
/// gpt-5 in an organisation not verified): about one in fifteen.
pub fn streaming_refused() -> impl Strategy<Value = Vec<bool>> {
    proptest::collection::vec(proptest::bool::weighted(0.07), MAX_PROVIDERS)
}

/// Gives each provider its drawn [`streaming_refused`].
pub fn apply_streaming_refused(providers: &mut [Provider], drawn: &[bool]) {
    for (p, refuses) in providers.iter_mut().zip(drawn) {
        p.refuses_streaming = *refuses;
    }
}

/// Which providers send their answers with no `Content-Type` (servers that build their
/// responses by hand): about one in ten.
pub fn unlabelled() -> impl Strategy<Value = Vec<bool>> {
    proptest::collection::vec(proptest::bool::weighted(0.1), MAX_PROVIDERS)
}

/// Gives each provider its drawn [`unlabelled`].
pub fn apply_unlabelled(providers: &mut [Provider], drawn: &[bool]) {
    for (p, unlabelled) in providers.iter_mut().zip(drawn) {
        p.unlabelled = *unlabelled;
    }
}

/// A token budget for a case's requests: in about 1 case in 6, a budget of 1 to 12 tokens
/// (the fakes write one per chunk) in `max_tokens`, or in `max_completion_tokens` when the
/// flag is set. Without it no generated answer ever ended at `length`, and no continuation
/// was ever asked for less than the whole budget.
pub fn token_budget() -> impl Strategy<Value = Option<(u64, bool)>> {
    proptest::option::weighted(0.17, (1u64..=12, any::<bool>()))
}

/// Sets the drawn [`token_budget`] on every request.
pub fn apply_token_budget(requests: &mut [RequestSpec], drawn: Option<(u64, bool)>) {
    let Some((budget, completion_field)) = drawn else {
        return;
    };
    let field = if completion_field {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    for r in requests {
        r.body.insert(field.into(), serde_json::json!(budget));
    }
}

/// Which of a case's requests ask for a usage chunk (`stream_options.include_usage`): in
/// about 1 case in 3, those whose bit is set in the drawn mask (request `i`, bit `i % 8`).
/// Without it no generated stream ever carried usage, and neither the passthrough check
/// nor the modes' equal usage after a continuation was ever put to the test.
pub fn usage_asked() -> impl Strategy<Value = Option<u8>> {
    proptest::option::weighted(0.35, any::<u8>())
}

/// Asks for the usage chunk in the requests `mask` picks (see [`usage_asked`]).
pub fn apply_usage_asked(requests: &mut [RequestSpec], mask: Option<u8>) {
    let Some(mask) = mask else {
        return;
    };
    for (i, r) in requests.iter_mut().enumerate() {
        if mask & (1 << (i % 8)) != 0 {
            r.body.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
    }
}
