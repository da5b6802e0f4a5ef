//! History truncation: fit a chat into a model's context window before sending it, instead of
//! letting the provider answer `context_length_exceeded`.
//!
//! The budget is the context window minus the output the request reserves (its `max_tokens`, or
//! a configured default) minus a small [`DEFAULT_BUFFER`] for framing the counting rule does
//! not see ([`budget`]). [`truncate`] then decides what to send, by these rules:
//!
//! 1. **Kept always:** `system` and `developer` messages (the instructions), and the last
//!    `user` message (the question being asked).
//! 2. **Dropped oldest first:** everything else, in units. An assistant message with
//!    `tool_calls` and the `tool` messages answering those calls (matched by `tool_call_id`)
//!    are one unit, dropped together — a tool result never outlives its call, and a call never
//!    loses its results (both are API errors). Dropping stops as soon as the chat fits.
//! 3. **Still too large** once only the kept messages remain: with
//!    [`WhenTooLarge::Shorten`], the longest remaining text (by tokens) is cut in the middle —
//!    its head and tail are kept around a `[... N tokens cut by sluice ...]` marker — and again
//!    with the next longest until the chat fits; with [`WhenTooLarge::Fail`], or when even that
//!    cannot fit, the answer is an [`Overflow`] carrying the counts (a `context_length` error).
//!
//! The result is a plan over the caller's messages ([`Truncation`]: indices kept, texts
//! replaced), so it works on any message representation; [`Truncation::apply`] builds the new
//! list. Everything here is pure and deterministic.

use serde_json::Value;

use crate::models::ModelInfo;
use crate::tokens::{ChatMessageView, TokenCounter, part_text, tokenizer};

/// Tokens kept free besides the reserved output: a margin for framing the published counting
/// rule does not model.
pub const DEFAULT_BUFFER: usize = 100;

/// Output reserved when a request sets no `max_tokens` (capped at the model's maximum output).
pub const DEFAULT_RESERVED_OUTPUT: usize = 4_096;

/// The input budget: `context_window − reserved_output − buffer`, or 0 when those exceed the
/// window.
pub const fn budget(context_window: usize, reserved_output: usize, buffer: usize) -> usize {
    context_window
        .saturating_sub(reserved_output)
        .saturating_sub(buffer)
}

/// The output to reserve for a request to a model: the request's own limit
/// (`max_completion_tokens` or `max_tokens`) when it sets one, else
/// [`DEFAULT_RESERVED_OUTPUT`] capped at the model's maximum output.
pub fn reserved_output(requested: Option<u64>, info: &ModelInfo) -> usize {
    match requested {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => DEFAULT_RESERVED_OUTPUT.min(info.max_output as usize),
    }
}

/// What to do when the messages that must be kept do not fit by themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenTooLarge {
    /// Cut the longest remaining texts in the middle until the chat fits.
    #[default]
    Shorten,
    /// Give up with an [`Overflow`].
    Fail,
}

/// The chat cannot fit the budget: `needed` tokens for what must be kept, `budget` available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "context_length: the messages that must be kept need {needed} tokens, over the budget of {budget} (the whole request counts {total})"
)]
pub struct Overflow {
    /// Tokens of the messages that must be kept (system/developer and the last user message),
    /// framing and tools included, before any shortening.
    pub needed: usize,
    /// The budget.
    pub budget: usize,
    /// Tokens of the whole request as given.
    pub total: usize,
}

/// One text replaced by its shortened form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortened {
    /// Index of the message in the input.
    pub index: usize,
    /// `None`: the content is a string and this is its new value; `Some(i)`: the content is an
    /// array of parts and this replaces the text of part `i`.
    pub part: Option<usize>,
    /// The new text (head, marker, tail).
    pub text: String,
    /// Tokens the cut removed from the original text.
    pub cut_tokens: usize,
}

impl Shortened {
    /// Writes the new text into the message's content.
    pub fn apply_to(&self, content: &mut Value) {
        match self.part {
            None => *content = Value::String(self.text.clone()),
            Some(i) => {
                if let Some(part) = content.get_mut(i) {
                    let key = if part.get("type").and_then(Value::as_str) == Some("refusal") {
                        "refusal"
                    } else {
                        "text"
                    };
                    match part {
                        Value::String(s) => *s = self.text.clone(),
                        Value::Object(fields) => {
                            fields.insert(key.to_owned(), Value::String(self.text.clone()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// What to send: which messages to keep, in order, and which texts to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Indices of the kept messages, ascending.
    pub keep: Vec<usize>,
    /// Texts to replace in kept messages (empty unless the kept messages alone were too large).
    pub shortened: Vec<Shortened>,
    /// Tokens of the request as given.
    pub tokens_before: usize,
    /// Tokens of the request after truncation (at most the budget).
    pub tokens: usize,
    /// Messages dropped.
    pub dropped_messages: usize,
    /// `tokens_before − tokens`: what dropping and shortening removed.
    pub dropped_tokens: usize,
}

impl Truncation {
    /// Whether nothing changes (the request already fits).
    pub fn is_noop(&self) -> bool {
        self.dropped_messages == 0 && self.shortened.is_empty()
    }

    /// The truncated list: the kept messages, cloned, with shortened texts written through
    /// `content_of` (which returns a message's content, if any).
    pub fn apply<T: Clone>(
        &self,
        messages: &[T],
        mut content_of: impl FnMut(&mut T) -> Option<&mut Value>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(self.keep.len());
        for &i in &self.keep {
            let mut message = messages[i].clone();
            for s in self.shortened.iter().filter(|s| s.index == i) {
                if let Some(content) = content_of(&mut message) {
                    s.apply_to(content);
                }
            }
            out.push(message);
        }
        out
    }

    /// [`Truncation::apply`] for OpenAI-format JSON messages.
    pub fn apply_json(&self, messages: &[Value]) -> Vec<Value> {
        self.apply(messages, |m| m.get_mut("content"))
    }
}

/// A group of messages kept or dropped together.
struct Unit {
    members: Vec<usize>,
    pinned: bool,
}

/// Messages grouped into units, oldest first: each message alone, except that a `tool` message
/// joins the unit of the assistant message whose `tool_calls` hold its `tool_call_id`. A unit is
/// pinned when it holds a system/developer message or the last user message.
fn units(messages: &[ChatMessageView<'_>]) -> Vec<Unit> {
    let last_user = messages.iter().rposition(|m| m.role == "user");
    let mut units: Vec<Unit> = Vec::new();
    let mut call_owner: Vec<(&str, usize)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let pinned = matches!(m.role, "system" | "developer") || Some(i) == last_user;
        if m.role == "tool" {
            let owner = m.tool_call_id.and_then(|id| {
                call_owner
                    .iter()
                    .rev()
                    .find(|(call, _)| *call == id)
                    .map(|&(_, unit)| unit)
            });
            if let Some(unit) = owner {
                units[unit].members.push(i);
                units[unit].pinned |= pinned;
                continue;
            }
        }
        if m.role == "assistant" {
            if let Some(calls) = m.tool_calls.and_then(Value::as_array) {
                for call in calls {
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_owner.push((id, units.len()));
                    }
                }
            }
        }
        units.push(Unit {
            members: vec![i],
            pinned,
        });
    }
    units
}

/// A text that may be shortened: a string content or one text part of a kept message.
struct Slot<'a> {
    index: usize,
    part: Option<usize>,
    original: &'a str,
    tokens: usize,
    replaced: Option<(String, usize)>,
    exhausted: bool,
}

fn slots<'a>(
    messages: &[ChatMessageView<'a>],
    kept: &[bool],
    counter: TokenCounter,
) -> Vec<Slot<'a>> {
    let mut out = Vec::new();
    for (index, m) in messages.iter().enumerate() {
        if !kept[index] {
            continue;
        }
        let mut push = |part, original: &'a str| {
            out.push(Slot {
                index,
                part,
                original,
                tokens: counter.text(original),
                replaced: None,
                exhausted: false,
            });
        };
        match m.content {
            Some(Value::String(s)) => push(None, s),
            Some(Value::Array(parts)) => {
                for (i, part) in parts.iter().enumerate() {
                    if let Some(text) = part_text(part) {
                        push(Some(i), text);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Fits `messages` (plus `tools`) into `budget` tokens as counted by `counter`, by the rules in
/// the module docs. `Ok` is always within the budget; `Err` says what would not fit.
pub fn truncate(
    counter: TokenCounter,
    messages: &[ChatMessageView<'_>],
    tools: Option<&Value>,
    budget: usize,
    when_too_large: WhenTooLarge,
) -> Result<Truncation, Overflow> {
    let per_message: Vec<usize> = messages.iter().map(|m| counter.message(m).tokens).collect();
    let mut raw = counter.fixed(tools).tokens + per_message.iter().sum::<usize>();
    let tokens_before = counter.total(raw);
    let raw_budget = counter.raw_budget(budget);
    let mut kept = vec![true; messages.len()];
    let mut dropped_messages = 0;

    if raw > raw_budget {
        for unit in units(messages).iter().filter(|u| !u.pinned) {
            if raw <= raw_budget {
                break;
            }
            for &i in &unit.members {
                kept[i] = false;
                raw -= per_message[i];
                dropped_messages += 1;
            }
        }
    }

    let mut shortened = Vec::new();
    if raw > raw_budget {
        let overflow = Overflow {
            needed: counter.total(raw),
            budget,
            total: tokens_before,
        };
        if when_too_large == WhenTooLarge::Fail {
            return Err(overflow);
        }
        let mut slots = slots(messages, &kept, counter);
        while raw > raw_budget {
            let Some(slot) = slots
                .iter_mut()
                .filter(|s| !s.exhausted && s.tokens > 0)
                .max_by_key(|s| (s.tokens, std::cmp::Reverse(s.index)))
            else {
                return Err(overflow);
            };
            let target = slot.tokens.saturating_sub(raw - raw_budget);
            let (text, tokens, cut) = shorten_text(counter, slot.original, target);
            if tokens >= slot.tokens {
                slot.exhausted = true;
                continue;
            }
            raw -= slot.tokens - tokens;
            slot.tokens = tokens;
            slot.exhausted = tokens > target;
            slot.replaced = Some((text, cut));
        }
        shortened = slots
            .into_iter()
            .filter_map(|s| {
                s.replaced.map(|(text, cut_tokens)| Shortened {
                    index: s.index,
                    part: s.part,
                    text,
                    cut_tokens,
                })
            })
            .collect();
    }

    let tokens = counter.total(raw);
    Ok(Truncation {
        keep: (0..messages.len()).filter(|&i| kept[i]).collect(),
        shortened,
        tokens_before,
        tokens,
        dropped_messages,
        dropped_tokens: tokens_before - tokens,
    })
}

/// The marker that replaces the middle of a shortened text.
pub fn cut_marker(cut_tokens: usize) -> String {
    format!("\n[... {cut_tokens} tokens cut by sluice ...]\n")
}

/// `text` cut to at most `max_tokens` tokens (in `counter`'s encoding, no margin) where
/// possible: its head and tail around [`cut_marker`], cut at pre-tokenizer boundaries (never
/// inside a character or a word piece). Returns the new text, its tokens and the tokens cut.
/// The text comes back unchanged when it already fits, and as the bare marker when even head
/// and tail of zero tokens do not fit (then the returned tokens exceed `max_tokens`).
pub fn shorten_text(
    counter: TokenCounter,
    text: &str,
    max_tokens: usize,
) -> (String, usize, usize) {
    let total = counter.text(text);
    if total <= max_tokens {
        return (text.to_owned(), total, 0);
    }
    let tok = tokenizer(counter.encoding());
    // Pieces as (end offset, tokens), in order; they tile the text.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut offset = 0;
    for piece in tok.split(text) {
        offset += piece.len();
        pieces.push((offset, tok.bpe.count(piece.as_bytes())));
    }
    let marker_tokens = counter.text(&cut_marker(total));
    let mut keep = max_tokens.saturating_sub(marker_tokens);
    for _ in 0..16 {
        if keep == 0 {
            break;
        }
        // Head: the longest prefix of pieces within half of `keep`; tail: the longest suffix
        // within the rest, never overlapping the head.
        let (mut head_end, mut head_tokens, mut head_pieces) = (0, 0, 0);
        for &(end, n) in &pieces {
            if head_tokens + n > keep.div_ceil(2) {
                break;
            }
            head_end = end;
            head_tokens += n;
            head_pieces += 1;
        }
        let (mut tail_start, mut tail_tokens) = (text.len(), 0);
        for k in (head_pieces..pieces.len()).rev() {
            let n = pieces[k].1;
            if head_tokens + tail_tokens + n > keep {
                break;
            }
            tail_tokens += n;
            tail_start = if k == 0 { 0 } else { pieces[k - 1].0 };
        }
        let cut = total - head_tokens - tail_tokens;
        let candidate = format!(
            "{}{}{}",
            &text[..head_end],
            cut_marker(cut),
            &text[tail_start..]
        );
        let tokens = counter.text(&candidate);
        if tokens <= max_tokens {
            return (candidate, tokens, cut);
        }
        // Re-tokenizing at the joins can differ from the pieces' sum: keep less and retry.
        keep = keep.saturating_sub((tokens - max_tokens).max(1));
    }
    let marker = cut_marker(total);
    let tokens = counter.text(&marker);
    (marker, tokens, total)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::models::Encoding;

    fn views(messages: &[Value]) -> Vec<ChatMessageView<'_>> {
        messages.iter().map(ChatMessageView::from_json).collect()
    }

    const COUNTER: TokenCounter = TokenCounter::exact(Encoding::O200kBase);

    #[test]
    fn budget_subtracts_and_saturates() {
        assert_eq!(budget(8_192, 4_096, DEFAULT_BUFFER), 3_996);
        assert_eq!(budget(100, 4_096, DEFAULT_BUFFER), 0);
        let info = crate::model_info("gpt-4o").unwrap();
        assert_eq!(reserved_output(None, &info), 4_096);
        assert_eq!(reserved_output(Some(123), &info), 123);
        let small = crate::model_info("gpt-4o-2024-05-13").unwrap();
        assert_eq!(
            reserved_output(None, &small),
            4_096.min(small.max_output as usize)
        );
    }

    #[test]
    fn a_chat_that_fits_is_untouched() {
        let messages = vec![json!({"role": "user", "content": "hi"})];
        let t = truncate(COUNTER, &views(&messages), None, 1_000, WhenTooLarge::Fail).unwrap();
        assert!(t.is_noop());
        assert_eq!(t.keep, vec![0]);
        assert_eq!(t.tokens, COUNTER.count_chat(&views(&messages), None).tokens);
    }

    #[test]
    fn oldest_messages_go_first_and_tool_groups_go_together() {
        let long = "word ".repeat(200);
        let messages = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": long}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "a", "content": long}),
            json!({"role": "tool", "tool_call_id": "b", "content": "ok"}),
            json!({"role": "assistant", "content": "done"}),
            json!({"role": "user", "content": "and now?"}),
        ];
        let v = views(&messages);
        let full = COUNTER.count_chat(&v, None).tokens;
        // Room for everything but the first user message: only it goes.
        let without_first = full - COUNTER.message(&v[1]).tokens;
        let t = truncate(COUNTER, &v, None, without_first, WhenTooLarge::Fail).unwrap();
        assert_eq!(t.keep, vec![0, 2, 3, 4, 5, 6]);
        assert_eq!(t.dropped_messages, 1);
        assert_eq!(t.tokens, without_first);
        // One token less: the whole tool unit (call + both results) goes too.
        let t = truncate(COUNTER, &v, None, without_first - 1, WhenTooLarge::Fail).unwrap();
        assert_eq!(t.keep, vec![0, 5, 6]);
        assert_eq!(t.dropped_messages, 4);
        assert_eq!(t.dropped_tokens, t.tokens_before - t.tokens);
        let out = t.apply_json(&messages);
        assert_eq!(COUNTER.count_chat(&views(&out), None).tokens, t.tokens);
    }

    #[test]
    fn what_must_stay_is_shortened_or_fails_with_the_counts() {
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        let messages = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "assistant", "content": "earlier"}),
            json!({"role": "user", "content": long}),
        ];
        let v = views(&messages);
        let err = truncate(COUNTER, &v, None, 300, WhenTooLarge::Fail).unwrap_err();
        assert_eq!(err.budget, 300);
        assert_eq!(
            err.needed,
            COUNTER.count_chat(&[v[0], v[2]], None).tokens,
            "needed counts the kept messages"
        );
        assert!(err.to_string().starts_with("context_length:"));

        let t = truncate(COUNTER, &v, None, 300, WhenTooLarge::Shorten).unwrap();
        assert_eq!(t.keep, vec![0, 2]);
        assert_eq!(t.shortened.len(), 1);
        let s = &t.shortened[0];
        assert_eq!((s.index, s.part), (2, None));
        assert!(s.text.starts_with("The quick brown fox"));
        assert!(s.text.ends_with("lazy dog. "));
        assert!(
            s.text
                .contains(&format!("[... {} tokens cut by sluice ...]", s.cut_tokens))
        );
        assert!(t.tokens <= 300);
        let out = t.apply_json(&messages);
        assert_eq!(COUNTER.count_chat(&views(&out), None).tokens, t.tokens);
        assert!(t.tokens > 280, "uses the budget: {}", t.tokens);
    }

    #[test]
    fn text_parts_are_shortened_in_place() {
        let long = "lorem ipsum dolor sit amet ".repeat(200);
        let messages = vec![json!({"role": "user", "content": [
            {"type": "text", "text": "short"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            {"type": "text", "text": long}
        ]})];
        let v = views(&messages);
        let t = truncate(COUNTER, &v, None, 1_000, WhenTooLarge::Shorten).unwrap();
        assert_eq!(t.shortened.len(), 1);
        assert_eq!(t.shortened[0].part, Some(2));
        let out = t.apply_json(&messages);
        assert_eq!(out[0]["content"][0]["text"], "short");
        assert_eq!(out[0]["content"][1]["type"], "image_url");
        assert_eq!(COUNTER.count_chat(&views(&out), None).tokens, t.tokens);
        assert!(t.tokens <= 1_000);
    }

    #[test]
    fn impossible_budgets_overflow_even_when_shortening() {
        let messages = vec![json!({"role": "system", "content": "x ".repeat(50)})];
        let v = views(&messages);
        let err = truncate(COUNTER, &v, None, 5, WhenTooLarge::Shorten).unwrap_err();
        assert_eq!(err.budget, 5);
    }

    #[test]
    fn shorten_text_keeps_head_and_tail_within_the_limit() {
        let text = format!("HEAD {} TAIL", "middle ".repeat(500));
        for max in [20, 50, 100, 400] {
            let (short, tokens, cut) = shorten_text(COUNTER, &text, max);
            assert!(tokens <= max, "{max}: {tokens}");
            assert_eq!(tokens, COUNTER.text(&short));
            assert!(short.starts_with("HEAD"), "{short}");
            assert!(short.ends_with("TAIL"), "{short}");
            assert!(cut > 0);
        }
        let (same, tokens, cut) = shorten_text(COUNTER, "fits", 10);
        assert_eq!((same.as_str(), tokens, cut), ("fits", 1, 0));
    }
}
