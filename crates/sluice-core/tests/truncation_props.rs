//! Truncation properties over generated conversations (system prompts, developer messages,
//! user/assistant turns, assistant tool calls with their results), any budget, exact and
//! estimated counters, both overflow policies:
//!
//! - an `Ok` result fits the budget, and its stated count is the real count of what it builds;
//! - system/developer messages and the last user message are always kept;
//! - order is preserved (kept indices ascend; the output is a subsequence of the input);
//! - no tool result is left without its call, and no call without its results;
//! - what is dropped is the oldest droppable history (nothing dropped is newer than something
//!   kept that could have been dropped instead);
//! - shortening only happens when dropping everything droppable was not enough;
//! - an `Err` is a real overflow: more needed than the budget, and (`Fail`) exactly the count
//!   of the messages that must stay.

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_core::{
    ChatMessageView, Encoding, TokenCounter, WhenTooLarge, count_chat_json, truncate,
};

const WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "token", "sluice", "数据",
    "模型", "🙂", "\n", "fn", "main()", "{", "}", "0123", "don't", "  ",
];

fn text(max_words: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..max_words).prop_map(|w| w.join(" "))
}

/// One turn of history.
#[derive(Debug, Clone)]
enum Turn {
    User(String),
    Assistant(String),
    Developer(String),
    /// An assistant tool-call message with one result per call (`results.len()` calls).
    Tools(Vec<String>),
    /// A user message with text parts and an image.
    UserParts(String, String),
}

fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        4 => text(120).prop_map(Turn::User),
        4 => text(120).prop_map(Turn::Assistant),
        1 => text(20).prop_map(Turn::Developer),
        3 => prop::collection::vec(text(150), 1..4).prop_map(Turn::Tools),
        1 => (text(40), text(200)).prop_map(|(a, b)| Turn::UserParts(a, b)),
    ]
}

fn conversation() -> impl Strategy<Value = Vec<Value>> {
    (
        prop::option::of(text(60)),
        prop::collection::vec(turn(), 0..14),
        prop::option::of(text(300)),
    )
        .prop_map(|(system, turns, last_user)| {
            let mut out = Vec::new();
            if let Some(s) = system {
                out.push(json!({"role": "system", "content": s}));
            }
            let mut call = 0;
            for turn in turns {
                match turn {
                    Turn::User(t) => out.push(json!({"role": "user", "content": t})),
                    Turn::Assistant(t) => out.push(json!({"role": "assistant", "content": t})),
                    Turn::Developer(t) => out.push(json!({"role": "developer", "content": t})),
                    Turn::UserParts(a, b) => out.push(json!({"role": "user", "content": [
                        {"type": "text", "text": a},
                        {"type": "image_url", "image_url": {"url": "https://example.invalid/i.png"}},
                        {"type": "text", "text": b}
                    ]})),
                    Turn::Tools(results) => {
                        let ids: Vec<String> = results
                            .iter()
                            .map(|_| {
                                call += 1;
                                format!("call_{call}")
                            })
                            .collect();
                        let calls: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"id": id, "type": "function",
                                "function": {"name": "lookup", "arguments": format!("{{\"q\":\"{id}\"}}")}}))
                            .collect();
                        out.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
                        for (id, r) in ids.iter().zip(results) {
                            out.push(json!({"role": "tool", "tool_call_id": id, "content": r}));
                        }
                    }
                }
            }
            if let Some(u) = last_user {
                out.push(json!({"role": "user", "content": u}));
            }
            out
        })
}

fn views(messages: &[Value]) -> Vec<ChatMessageView<'_>> {
    messages.iter().map(ChatMessageView::from_json).collect()
}

fn role(m: &Value) -> &str {
    m["role"].as_str().unwrap()
}

/// Indices that must survive: system/developer and the last user message.
fn pinned(messages: &[Value]) -> Vec<usize> {
    let last_user = messages.iter().rposition(|m| role(m) == "user");
    (0..messages.len())
        .filter(|&i| matches!(role(&messages[i]), "system" | "developer") || Some(i) == last_user)
        .collect()
}

fn call_ids(m: &Value) -> Vec<&str> {
    m["tool_calls"]
        .as_array()
        .map(|calls| calls.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default()
}

const MODELS: &[&str] = &["gpt-4o", "gpt-4", "claude-sonnet-4-5"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn truncation_keeps_its_promises(
        messages in conversation(),
        with_tools in any::<bool>(),
        model in prop::sample::select(MODELS),
        budget_fraction in 0.0f64..1.3,
        fail in any::<bool>(),
    ) {
        let tools = with_tools.then(|| json!([{"type": "function", "function": {
            "name": "lookup", "description": "Look something up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "query"}}}
        }}]));
        let counter = TokenCounter::for_model(model);
        let v = views(&messages);
        let full = counter.count_chat(&v, tools.as_ref()).tokens;
        let budget = (full as f64 * budget_fraction) as usize;
        let policy = if fail { WhenTooLarge::Fail } else { WhenTooLarge::Shorten };
        let must_keep = pinned(&messages);
        let pinned_only: Vec<Value> = must_keep.iter().map(|&i| messages[i].clone()).collect();
        let pinned_tokens = count_chat_json(model, &pinned_only, tools.as_ref()).tokens;

        match truncate(counter, &v, tools.as_ref(), budget, policy) {
            Ok(t) => {
                let out = t.apply_json(&messages);
                let recount = counter.count_chat(&views(&out), tools.as_ref()).tokens;
                prop_assert_eq!(recount, t.tokens, "stated count is the real count");
                prop_assert!(t.tokens <= budget, "fits: {} > {}", t.tokens, budget);
                prop_assert_eq!(t.tokens_before, full);
                prop_assert_eq!(t.dropped_tokens, full - t.tokens);
                prop_assert_eq!(t.dropped_messages, messages.len() - t.keep.len());
                // Order: strictly ascending indices.
                prop_assert!(t.keep.windows(2).all(|w| w[0] < w[1]));
                // Pinned messages are kept.
                for i in &must_keep {
                    prop_assert!(t.keep.contains(i), "pinned {} dropped", i);
                }
                // No orphan results, no calls without their results.
                for (pos, m) in out.iter().enumerate() {
                    if role(m) == "tool" {
                        let id = m["tool_call_id"].as_str().unwrap();
                        prop_assert!(out[..pos].iter().any(|c| call_ids(c).contains(&id)), "orphan {}", id);
                    }
                    for id in call_ids(m) {
                        prop_assert!(
                            out[pos + 1..].iter().any(|r| r["tool_call_id"].as_str() == Some(id)),
                            "call {} lost its result", id
                        );
                    }
                }
                // Oldest first: every dropped message is older than every kept droppable one.
                let kept_droppable = t.keep.iter().copied().filter(|i| !must_keep.contains(i)).min();
                let newest_dropped = (0..messages.len()).filter(|i| !t.keep.contains(i)).max();
                if let (Some(kept), Some(dropped)) = (kept_droppable, newest_dropped) {
                    prop_assert!(dropped < kept, "dropped {} but kept older {}", dropped, kept);
                }
                // Shortening only as a last resort, and only under the Shorten policy.
                if !t.shortened.is_empty() {
                    prop_assert_eq!(policy, WhenTooLarge::Shorten);
                    prop_assert_eq!(&t.keep, &must_keep);
                    prop_assert!(pinned_tokens > budget);
                }
                if full <= budget {
                    prop_assert!(t.is_noop());
                }
            }
            Err(o) => {
                prop_assert!(full > budget);
                prop_assert_eq!(o.budget, budget);
                prop_assert_eq!(o.total, full);
                prop_assert!(o.needed > budget);
                prop_assert_eq!(o.needed, pinned_tokens, "needed = what must stay");
            }
        }
    }
}

#[test]
fn estimated_counts_truncate_against_the_margin() {
    // For an estimate, the budget applies to the count with the margin.
    let counter = TokenCounter::for_model("claude-haiku-4-5");
    assert!(counter.is_estimate());
    assert_eq!(counter.encoding(), Encoding::Cl100kBase);
    let messages: Vec<Value> = (0..20)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "word ".repeat(50)}))
        .collect();
    let v = views(&messages);
    let t = truncate(counter, &v, None, 500, WhenTooLarge::Fail).unwrap();
    assert!(t.tokens <= 500);
    assert!(
        t.tokens > 500 - 80,
        "drops no more than needed: {}",
        t.tokens
    );
    assert_eq!(t.keep.last(), Some(&19), "the newest messages stay");
    assert!(t.keep.contains(&18), "the last user message stays");
}
