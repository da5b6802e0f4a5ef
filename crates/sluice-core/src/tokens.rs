//! Offline token counting: exact counts for OpenAI's `cl100k_base` and `o200k_base` encodings,
//! OpenAI's published chat-framing rule on top, and a documented conservative estimate for
//! models whose tokenizer is not public (Anthropic, Gemini, anything the registry does not know).
//!
//! # Why these choices
//!
//! - **Exact and offline.** The encoders are the `bpe-openai` crate's: the official `.tiktoken`
//!   vocabularies are compiled into the binary (nothing is downloaded at run time) and its
//!   pre-tokenizer reproduces tiktoken's split, so counts equal Python tiktoken's
//!   `len(enc.encode_ordinary(text))` — `tests/token_parity.rs` checks 1,212 committed vectors
//!   produced by tiktoken itself. Text that looks like a special token (`<|endoftext|>`) is
//!   ordinary text, as the API treats it.
//! - **Chat framing** follows the OpenAI cookbook (`num_tokens_from_messages`, reference §6.3):
//!   [`TOKENS_PER_MESSAGE`] per message, the tokens of every string field (`role`, `content`,
//!   `name`, `tool_call_id`), [`TOKENS_PER_NAME`] more when a message has a `name`, and
//!   [`REPLY_PRIMING`] once for the assistant reply. Tool definitions use the cookbook's
//!   `num_tokens_for_tools` constants. These reproduce the cookbook's published examples
//!   (129/124 and 101/105 tokens, tested).
//! - **What is not published is estimated, and says so.** The tokens of an assistant's
//!   `tool_calls` ([`TOKENS_PER_TOOL_CALL`] + name + arguments) and of non-text content parts
//!   ([`NON_TEXT_PART_TOKENS`] per image/audio/file part) are estimates; a count that includes
//!   any of them has `exact: false`.
//! - **Anthropic and unknown models** ([`TokenCounter::estimate`]): Claude's tokenizer is not
//!   public, so the count is the `cl100k_base` count with the same framing, times
//!   `1 + ESTIMATE_MARGIN_PERCENT / 100`, rounded up, and `exact: false`. Published comparisons
//!   put Claude 3.5 Sonnet at about +16% (English prose), +21% (maths) and +30% (Python code)
//!   tokens over GPT-4o's `o200k_base`; `cl100k_base` counts are themselves at or above
//!   `o200k_base`'s for almost all text, so 25% on top of `cl100k_base` errs on the safe side for
//!   prose and most code. A provider's `context_length` error remains the authority.
//!
//! # Cost and the async runtime
//!
//! Counting runs at roughly 45 MB/s (12 M tokens/s) per core on mixed text in release builds
//! (`BENCHMARKS.md`), so a 64 KB message takes about 1.5 ms and a 1 MB one over 20 ms. Async
//! callers should count inputs whose [`chat_text_len`] exceeds [`LARGE_TEXT_BYTES`] inside
//! `tokio::task::spawn_blocking` (every function here is pure and [`TokenCounter`] is
//! `Copy + 'static`), and call [`warm_up`] once at start-up: the first use of an encoder
//! deserializes its vocabulary (80–90 ms for both in a release build).

use serde_json::{Map, Value};

use crate::models::{Encoding, model_info};

/// Above this many bytes of text, async callers should count on the blocking pool.
pub const LARGE_TEXT_BYTES: usize = 64 * 1024;
/// Cookbook: framing tokens of every message (`<|start|>{role}<|message|>...<|end|>`).
pub const TOKENS_PER_MESSAGE: usize = 3;
/// Cookbook: extra tokens when a message has a `name`.
pub const TOKENS_PER_NAME: usize = 1;
/// Cookbook: every reply is primed with `<|start|>assistant<|message|>`.
pub const REPLY_PRIMING: usize = 3;
/// Estimate (not published): framing of one assistant tool call, on top of the tokens of its
/// function name and arguments.
pub const TOKENS_PER_TOOL_CALL: usize = 8;
/// Estimate: one non-text content part (image, audio, file). 765 is a 1024×1024 image at high
/// detail on GPT-4o; the real cost depends on size, detail and model.
pub const NON_TEXT_PART_TOKENS: usize = 765;
/// The safety margin of estimated counts (Anthropic and unknown models), in percent.
pub const ESTIMATE_MARGIN_PERCENT: usize = 25;
/// The encoding estimated counts are based on.
pub const ESTIMATE_ENCODING: Encoding = Encoding::Cl100kBase;

impl Encoding {
    /// tiktoken's name of the encoding (`cl100k_base`, `o200k_base`).
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }
}

pub(crate) fn tokenizer(encoding: Encoding) -> &'static bpe_openai::Tokenizer {
    match encoding {
        Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        Encoding::O200kBase => bpe_openai::o200k_base(),
    }
}

/// The exact number of tokens of `text` in `encoding`, with no chat framing; equal to Python
/// tiktoken's `len(enc.encode_ordinary(text))`.
pub fn count_text(encoding: Encoding, text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    tokenizer(encoding).count(text)
}

/// Loads both encoders (the first use of each deserializes its vocabulary). Call once at
/// start-up, off the request path; later calls are free.
pub fn warm_up() {
    for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
        let _ = count_text(encoding, "warm up");
    }
}

/// One chat message as the counter and [`truncate`](crate::truncate()) see it: borrowed from an
/// OpenAI-format message (JSON, or any typed representation of it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChatMessageView<'a> {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: &'a str,
    /// A string, an array of content parts, or absent/null.
    pub content: Option<&'a Value>,
    /// The optional participant `name`.
    pub name: Option<&'a str>,
    /// An assistant message's `tool_calls` array.
    pub tool_calls: Option<&'a Value>,
    /// A `tool` message's `tool_call_id`.
    pub tool_call_id: Option<&'a str>,
}

impl<'a> ChatMessageView<'a> {
    /// A view of an OpenAI-format message object; missing or mistyped fields are absent.
    pub fn from_json(message: &'a Value) -> Self {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content");
        match message.as_object() {
            Some(fields) => Self::from_parts(role, content, fields),
            None => Self {
                role,
                ..Self::default()
            },
        }
    }

    /// A view of a typed message: its role, content, and the map holding its other fields
    /// (`name`, `tool_calls`, `tool_call_id`), as in `sluice_providers::Message`.
    pub fn from_parts(
        role: &'a str,
        content: Option<&'a Value>,
        extra: &'a Map<String, Value>,
    ) -> Self {
        Self {
            role,
            content: content.filter(|c| !c.is_null()),
            name: extra.get("name").and_then(Value::as_str),
            tool_calls: extra.get("tool_calls").filter(|c| !c.is_null()),
            tool_call_id: extra.get("tool_call_id").and_then(Value::as_str),
        }
    }
}

/// A token count before any estimate margin: the tokens and whether every one of them was
/// counted by a published rule (no estimated parts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tokens.
    pub tokens: usize,
    /// `false` when part of the count is an estimate (tool calls, non-text parts).
    pub exact: bool,
}

impl Tally {
    const fn exact(tokens: usize) -> Self {
        Self {
            tokens,
            exact: true,
        }
    }

    fn add(&mut self, other: Tally) {
        self.tokens += other.tokens;
        self.exact &= other.exact;
    }

    fn add_estimate(&mut self, tokens: usize) {
        self.tokens += tokens;
        self.exact = false;
    }
}

/// The tokens of a chat request (or a text) for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TokenCount {
    /// Tokens, including the estimate margin when `exact` is false because of the model.
    pub tokens: usize,
    /// The encoding counted with (for estimates, the one the estimate is based on).
    pub encoding: Encoding,
    /// `true` when counted with the model's own tokenizer under published rules only.
    pub exact: bool,
}

/// Counts tokens for one model: its encoding, or an estimate with a margin when the model's
/// tokenizer is unknown. Cheap to create and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCounter {
    encoding: Encoding,
    estimate: bool,
}

impl TokenCounter {
    /// The counter for `model`: exact when the registry ([`model_info`]) knows its encoding,
    /// else [`TokenCounter::estimate`]. A `provider/` prefix is ignored when the full name is
    /// unknown (`openai/gpt-4o` counts as `gpt-4o`).
    pub fn for_model(model: &str) -> Self {
        let info = model_info(model)
            .or_else(|| model.split_once('/').and_then(|(_, rest)| model_info(rest)));
        match info.and_then(|i| i.encoding) {
            Some(encoding) => Self::exact(encoding),
            None => Self::estimate(),
        }
    }

    /// An exact counter for an OpenAI encoding.
    pub const fn exact(encoding: Encoding) -> Self {
        Self {
            encoding,
            estimate: false,
        }
    }

    /// The conservative estimate for models without a public tokenizer: [`ESTIMATE_ENCODING`]
    /// counts plus [`ESTIMATE_MARGIN_PERCENT`].
    pub const fn estimate() -> Self {
        Self {
            encoding: ESTIMATE_ENCODING,
            estimate: true,
        }
    }

    /// The encoding counted with.
    pub const fn encoding(self) -> Encoding {
        self.encoding
    }

    /// Whether counts are estimates with a margin (the model's tokenizer is not known).
    pub const fn is_estimate(self) -> bool {
        self.estimate
    }

    /// Tokens of `text` in this counter's encoding, without framing or margin.
    pub fn text(self, text: &str) -> usize {
        count_text(self.encoding, text)
    }

    /// Tokens of one message under the cookbook framing, without the margin (these add up:
    /// a chat's raw total is the sum over its messages plus [`TokenCounter::fixed`]).
    pub fn message(self, message: &ChatMessageView<'_>) -> Tally {
        let mut tally = Tally::exact(TOKENS_PER_MESSAGE + self.text(message.role));
        if let Some(content) = message.content {
            tally.add(self.content(content));
        }
        if let Some(name) = message.name {
            tally.add(Tally::exact(self.text(name) + TOKENS_PER_NAME));
        }
        if let Some(id) = message.tool_call_id {
            tally.add(Tally::exact(self.text(id)));
        }
        if let Some(calls) = message.tool_calls {
            tally.add(self.tool_calls(calls));
        }
        tally
    }

    /// Tokens of a message's content: a string, or the text of its parts plus an estimate
    /// for every non-text part.
    pub fn content(self, content: &Value) -> Tally {
        match content {
            Value::Null => Tally::exact(0),
            Value::String(s) => Tally::exact(self.text(s)),
            Value::Array(parts) => {
                let mut tally = Tally::exact(0);
                for part in parts {
                    match part_text(part) {
                        Some(text) => tally.add(Tally::exact(self.text(text))),
                        None => tally.add_estimate(NON_TEXT_PART_TOKENS),
                    }
                }
                tally
            }
            other => Tally {
                tokens: self.text(&other.to_string()),
                exact: false,
            },
        }
    }

    fn tool_calls(self, calls: &Value) -> Tally {
        let mut tally = Tally::exact(0);
        let Some(calls) = calls.as_array() else {
            tally.add_estimate(self.text(&calls.to_string()));
            return tally;
        };
        for call in calls {
            let tokens = match call.get("function") {
                Some(f) => {
                    let name = f.get("name").and_then(Value::as_str).unwrap_or("");
                    let args = match f.get("arguments") {
                        Some(Value::String(s)) => self.text(s),
                        Some(other) => self.text(&other.to_string()),
                        None => 0,
                    };
                    self.text(name) + args
                }
                None => self.text(&call.to_string()),
            };
            tally.add_estimate(TOKENS_PER_TOOL_CALL + tokens);
        }
        tally
    }

    /// Tokens of the `tools` array of a request, by the cookbook's `num_tokens_for_tools`:
    /// per function `func_init` (7 for `o200k_base` models, 10 for `cl100k_base`) plus
    /// `name:description`; per function with properties 3, per property 3 plus
    /// `key:type:description`, per enum -3 plus 3 and the value per item; 12 once at the end.
    /// A trailing period of a description is not counted. Beyond the cookbook, schema keys it
    /// ignores (nested `properties`, `items`, ...) count as their JSON text, and a tool that is
    /// not a function counts as its JSON text.
    pub fn tools(self, tools: &Value) -> Tally {
        let Some(tools) = tools.as_array() else {
            return Tally::exact(0);
        };
        if tools.is_empty() {
            return Tally::exact(0);
        }
        let func_init = match self.encoding {
            Encoding::O200kBase => 7,
            Encoding::Cl100kBase => 10,
        };
        const PROP_INIT: usize = 3;
        const PROP_KEY: usize = 3;
        const ENUM_ITEM: usize = 3;
        const FUNC_END: usize = 12;
        let mut tally = Tally::exact(FUNC_END);
        for tool in tools {
            let Some(function) = tool.get("function").and_then(Value::as_object) else {
                tally.add_estimate(func_init + self.text(&tool.to_string()));
                continue;
            };
            let name = function.get("name").and_then(Value::as_str).unwrap_or("");
            let desc = description(function.get("description"));
            tally.add(Tally::exact(
                func_init + self.text(&format!("{name}:{desc}")),
            ));
            let properties = function
                .get("parameters")
                .and_then(|p| p.get("properties"))
                .and_then(Value::as_object);
            let Some(properties) = properties.filter(|p| !p.is_empty()) else {
                continue;
            };
            tally.add(Tally::exact(PROP_INIT));
            for (key, schema) in properties {
                // Cookbook: prop_key per property; enum_init (-3) when it has an enum, then
                // enum_item plus the value's tokens per item.
                let mut tokens = PROP_KEY;
                if let Some(items) = schema.get("enum").and_then(Value::as_array) {
                    tokens -= 3;
                    for item in items {
                        tokens += ENUM_ITEM + self.text(&scalar_text(item));
                    }
                }
                let ty = schema.get("type").map(scalar_text).unwrap_or_default();
                let desc = description(schema.get("description"));
                tokens += self.text(&format!("{key}:{ty}:{desc}"));
                tally.add(Tally::exact(tokens));
                if let Some(fields) = schema.as_object() {
                    let rest: Map<String, Value> = fields
                        .iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "type" | "description" | "enum"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if !rest.is_empty() {
                        tally.add_estimate(self.text(&Value::Object(rest).to_string()));
                    }
                }
            }
        }
        tally
    }

    /// The raw tokens every request has besides its messages: [`REPLY_PRIMING`] and the tools.
    pub fn fixed(self, tools: Option<&Value>) -> Tally {
        let mut tally = Tally::exact(REPLY_PRIMING);
        if let Some(tools) = tools {
            tally.add(self.tools(tools));
        }
        tally
    }

    /// The reported count of a raw total: itself, or with the estimate margin, rounded up.
    pub const fn total(self, raw: usize) -> usize {
        if self.estimate {
            (raw * (100 + ESTIMATE_MARGIN_PERCENT)).div_ceil(100)
        } else {
            raw
        }
    }

    /// The largest raw total whose [`TokenCounter::total`] fits `budget`.
    pub const fn raw_budget(self, budget: usize) -> usize {
        if self.estimate {
            budget * 100 / (100 + ESTIMATE_MARGIN_PERCENT)
        } else {
            budget
        }
    }

    /// Tokens of a chat request: its messages under the cookbook framing, the reply priming,
    /// and its `tools` (the request's `tools` array).
    pub fn count_chat(self, messages: &[ChatMessageView<'_>], tools: Option<&Value>) -> TokenCount {
        let mut tally = self.fixed(tools);
        for message in messages {
            tally.add(self.message(message));
        }
        self.report(tally)
    }

    /// Tokens of plain text, with no chat framing.
    pub fn count_plain(self, text: &str) -> TokenCount {
        self.report(Tally::exact(self.text(text)))
    }

    fn report(self, tally: Tally) -> TokenCount {
        TokenCount {
            tokens: self.total(tally.tokens),
            encoding: self.encoding,
            exact: tally.exact && !self.estimate,
        }
    }
}

/// Tokens of a chat request for `model` (see [`TokenCounter::for_model`] and
/// [`TokenCounter::count_chat`]).
pub fn count_chat(
    model: &str,
    messages: &[ChatMessageView<'_>],
    tools: Option<&Value>,
) -> TokenCount {
    TokenCounter::for_model(model).count_chat(messages, tools)
}

/// [`count_chat`] over OpenAI-format JSON messages.
pub fn count_chat_json(model: &str, messages: &[Value], tools: Option<&Value>) -> TokenCount {
    let views: Vec<ChatMessageView<'_>> = messages.iter().map(ChatMessageView::from_json).collect();
    count_chat(model, &views, tools)
}

/// Bytes of text a count of these messages and tools will tokenize (roughly): compare with
/// [`LARGE_TEXT_BYTES`] to decide whether to count on the blocking pool.
pub fn chat_text_len(messages: &[ChatMessageView<'_>], tools: Option<&Value>) -> usize {
    let value_len = |v: &Value| match v {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts.iter().map(|p| part_text(p).map_or(0, str::len)).sum(),
        _ => 0,
    };
    let messages: usize = messages
        .iter()
        .map(|m| {
            m.content.map_or(0, value_len)
                + m.tool_calls.map_or(0, |c| c.to_string().len())
                + m.role.len()
                + m.name.map_or(0, str::len)
        })
        .sum();
    messages + tools.map_or(0, |t| t.to_string().len())
}

/// The text of a content part: `text` of a text part, `refusal` of a refusal part; `None` for
/// non-text parts (images, audio, files).
pub(crate) fn part_text(part: &Value) -> Option<&str> {
    match part {
        Value::String(s) => Some(s),
        Value::Object(fields) => match fields.get("type").and_then(Value::as_str) {
            Some("text" | "input_text" | "output_text") | None => {
                fields.get("text").and_then(Value::as_str)
            }
            Some("refusal") => fields.get("refusal").and_then(Value::as_str),
            Some(_) => None,
        },
        _ => None,
    }
}

/// A description without one trailing period (cookbook).
fn description(value: Option<&Value>) -> &str {
    let desc = value.and_then(Value::as_str).unwrap_or("");
    desc.strip_suffix('.').unwrap_or(desc)
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_counts_are_exact_and_empty_is_zero() {
        assert_eq!(count_text(Encoding::Cl100kBase, ""), 0);
        assert_eq!(count_text(Encoding::Cl100kBase, "Hello, world!"), 4);
        assert_eq!(count_text(Encoding::O200kBase, "hello world"), 2);
        // Special-token text is ordinary text (tiktoken's encode_ordinary).
        assert_eq!(
            count_text(Encoding::Cl100kBase, "hello world <|endoftext|>"),
            8
        );
    }

    #[test]
    fn models_pick_their_counter() {
        assert_eq!(
            TokenCounter::for_model("gpt-4o-mini"),
            TokenCounter::exact(Encoding::O200kBase)
        );
        assert_eq!(
            TokenCounter::for_model("openai/gpt-4-0613"),
            TokenCounter::exact(Encoding::Cl100kBase)
        );
        assert!(TokenCounter::for_model("claude-sonnet-4-5").is_estimate());
        assert!(TokenCounter::for_model("mock-1").is_estimate());
        assert_eq!(Encoding::O200kBase.name(), "o200k_base");
    }

    #[test]
    fn estimates_add_the_margin_rounded_up_and_are_not_exact() {
        let counter = TokenCounter::estimate();
        let raw = count_text(
            ESTIMATE_ENCODING,
            "The quick brown fox jumps over the lazy dog.",
        );
        let count = counter.count_plain("The quick brown fox jumps over the lazy dog.");
        assert_eq!(count.tokens, (raw * 125).div_ceil(100));
        assert!(!count.exact);
        for budget in 0..500 {
            let raw = counter.raw_budget(budget);
            assert!(counter.total(raw) <= budget);
            assert!(counter.total(raw + 1) > budget);
        }
    }

    #[test]
    fn message_framing_follows_the_cookbook_rule() {
        let counter = TokenCounter::exact(Encoding::O200kBase);
        let m = json!({"role": "user", "name": "bob", "content": "hi there"});
        let tally = counter.message(&ChatMessageView::from_json(&m));
        let expected =
            3 + counter.text("user") + counter.text("bob") + 1 + counter.text("hi there");
        assert_eq!(tally, Tally::exact(expected));
        let parts = json!({"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
        ]});
        let tally = counter.message(&ChatMessageView::from_json(&parts));
        assert_eq!(
            tally.tokens,
            3 + 1 + counter.text("look") + NON_TEXT_PART_TOKENS
        );
        assert!(!tally.exact);
    }

    #[test]
    fn tool_calls_count_name_and_arguments_as_an_estimate() {
        let counter = TokenCounter::exact(Encoding::O200kBase);
        let m = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]});
        let view = ChatMessageView::from_json(&m);
        assert_eq!(view.content, None);
        let tally = counter.message(&view);
        let expected = 3
            + counter.text("assistant")
            + TOKENS_PER_TOOL_CALL
            + counter.text("get_weather")
            + counter.text("{\"city\":\"Paris\"}");
        assert_eq!(tally.tokens, expected);
        assert!(!tally.exact);
        let result = json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"});
        let tally = counter.message(&ChatMessageView::from_json(&result));
        assert_eq!(
            tally,
            Tally::exact(3 + counter.text("tool") + counter.text("call_1") + counter.text("18C"))
        );
    }

    #[test]
    fn chat_text_len_measures_the_text() {
        let m = json!({"role": "user", "content": "abcd"});
        let views = [ChatMessageView::from_json(&m)];
        assert_eq!(chat_text_len(&views, None), 8);
    }
}
