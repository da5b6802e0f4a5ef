//! The two wire dialects the mock speaks over one fault engine.
//!
//! The server decides *what* happens to a request (validation, the fault step, the plan of an
//! answer, the stats) once, for both APIs; [`Dialect`] and [`Render`] only decide *how it
//! looks on the wire*: request validation and error bodies per dialect, and a stream as
//! `head` events, one `item` per content chunk (or tool-argument fragment), `tail` events, or
//! an in-band error event.
//!
//! | | OpenAI (`/v1/chat/completions`) | Anthropic (`/v1/messages`) |
//! |---|---|---|
//! | head | role chunk (with the tool call's first fragment for `tool`) | `message_start`, `content_block_start`, `ping` |
//! | item | content chunk / `function.arguments` fragment | `text_delta` / `input_json_delta` (`""` first) |
//! | tail | finish chunk, usage chunk if asked, `[DONE]` | `content_block_stop`, `message_delta`, `message_stop` |
//! | in-band | `data: {"error":{..}}` | `event: error` |

use bytes::Bytes;
use http::HeaderName;

use crate::anthropic::{self, Message};
use crate::limits::Rejection;
use crate::script::Step;
use crate::stats::Api;
use crate::wire::{
    self, Answer, ChatRequest, DONE_EVENT, ErrorContext, Invalid, Kind, StreamTemplate,
    openai_error, tool_fragments,
};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Dialect {
    pub(crate) fn api(self) -> Api {
        match self {
            Dialect::OpenAi => Api::OpenAi,
            Dialect::Anthropic => Api::Anthropic,
        }
    }

    /// `x-request-id` (OpenAI) or `request-id` (Anthropic).
    pub(crate) fn request_id_header(self) -> &'static HeaderName {
        match self {
            Dialect::OpenAi => &X_REQUEST_ID,
            Dialect::Anthropic => &REQUEST_ID,
        }
    }

    pub(crate) fn parse_request(self, body: &[u8]) -> Result<ChatRequest, Invalid> {
        match self {
            Dialect::OpenAi => wire::parse_chat_request(body),
            Dialect::Anthropic => anthropic::parse_request(body),
        }
    }

    /// The body of a 400 `invalid_request_error`.
    pub(crate) fn invalid_body(self, invalid: &Invalid) -> Bytes {
        match self {
            Dialect::OpenAi => openai_error(
                &invalid.message,
                "invalid_request_error",
                invalid.param.as_deref(),
                None,
            ),
            Dialect::Anthropic => anthropic::error_body("invalid_request_error", &invalid.message),
        }
    }

    /// The body of a 413.
    pub(crate) fn too_large_body(self, message: &str) -> Bytes {
        match self {
            Dialect::OpenAi => openai_error(message, "invalid_request_error", None, None),
            Dialect::Anthropic => anthropic::error_body("request_too_large", message),
        }
    }

    /// The status and body of an error step.
    pub(crate) fn error_parts(self, step: &Step, cx: &ErrorContext<'_>) -> (u16, Bytes) {
        match self {
            Dialect::OpenAi => wire::error_parts(step, cx),
            Dialect::Anthropic => anthropic::error_parts(step, cx),
        }
    }

    /// The body of a `--rpm` / `--tpm` rejection (status 429).
    pub(crate) fn limit_body(self, rejection: &Rejection, model: &str) -> Bytes {
        match self {
            Dialect::OpenAi => wire::limit_error(rejection, model),
            Dialect::Anthropic => anthropic::limit_error(rejection),
        }
    }

    /// Stream items of a tool-call answer.
    pub(crate) fn tool_items(self) -> usize {
        match self {
            Dialect::OpenAi => tool_fragments().len(),
            Dialect::Anthropic => Message::tool_items(),
        }
    }

    /// The writer of answer `n`.
    pub(crate) fn render(self, n: u64, model: &str, request: &ChatRequest, kind: Kind) -> Render {
        match self {
            Dialect::OpenAi => {
                let answer = Answer::new(n, model, request.prompt_tokens);
                Render::OpenAi {
                    template: answer.stream_template(request.include_usage),
                    include_usage: request.include_usage,
                    answer,
                    kind,
                }
            }
            Dialect::Anthropic => {
                Render::Anthropic(Message::new(n, model, request.prompt_tokens, kind))
            }
        }
    }
}

/// Writes one answer, whole or as stream events, in its dialect.
#[derive(Debug, Clone)]
pub(crate) enum Render {
    OpenAi {
        answer: Answer,
        template: StreamTemplate,
        include_usage: bool,
        kind: Kind,
    },
    Anthropic(Message),
}

impl Render {
    /// The non-streaming body with `items` chunks of text (a tool answer ignores `items`).
    pub(crate) fn full(&self, items: usize) -> Bytes {
        match self {
            Render::OpenAi { answer, kind, .. } => match kind {
                Kind::Text => answer.completion(items),
                Kind::Tool(name) => answer.tool_completion(name),
            },
            Render::Anthropic(m) => m.full(items),
        }
    }

    /// Events sent before the first item.
    pub(crate) fn head_len(&self) -> usize {
        match self {
            Render::OpenAi { .. } => 1,
            Render::Anthropic(_) => Message::HEAD_LEN,
        }
    }

    /// Head event `k < head_len()`.
    pub(crate) fn head(&self, k: usize) -> Bytes {
        match self {
            Render::OpenAi {
                answer,
                template,
                kind,
                ..
            } => match kind {
                Kind::Text => template.preamble(),
                Kind::Tool(name) => template.tool_preamble(answer.id, name),
            },
            Render::Anthropic(m) => m.head(k),
        }
    }

    /// Item `i`: a content chunk or a tool-argument fragment.
    pub(crate) fn item(&self, i: usize) -> Bytes {
        match self {
            Render::OpenAi { template, kind, .. } => match kind {
                Kind::Text => template.content(i),
                Kind::Tool(_) => template.tool_fragment(i),
            },
            Render::Anthropic(m) => m.item(i),
        }
    }

    /// Events that end a complete stream.
    pub(crate) fn tail_len(&self) -> usize {
        match self {
            Render::OpenAi { include_usage, .. } => 2 + usize::from(*include_usage),
            Render::Anthropic(_) => Message::TAIL_LEN,
        }
    }

    /// Tail event `k < tail_len()` of a stream that sent `items` items.
    pub(crate) fn tail(&self, k: usize, items: usize) -> Bytes {
        match self {
            Render::OpenAi {
                answer,
                template,
                include_usage,
                kind,
            } => match (k, kind) {
                (0, Kind::Text) => template.finish(),
                (0, Kind::Tool(_)) => template.tool_finish(),
                (1, _) if *include_usage => {
                    let tokens = match kind {
                        Kind::Text => items,
                        Kind::Tool(_) => tool_fragments().len(),
                    };
                    answer.usage_event(tokens as u64)
                }
                _ => Bytes::from_static(DONE_EVENT),
            },
            Render::Anthropic(m) => m.tail(k, items),
        }
    }

    /// The in-band error event; `None` is the dialect's default type (`server_error` /
    /// `overloaded_error`).
    pub(crate) fn inband(&self, error_type: Option<&str>) -> Bytes {
        match self {
            Render::OpenAi { .. } => wire::inband_event(error_type.unwrap_or("server_error")),
            Render::Anthropic(_) => {
                anthropic::inband_event(error_type.unwrap_or("overloaded_error"))
            }
        }
    }
}
