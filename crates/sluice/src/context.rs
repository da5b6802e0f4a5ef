//! The context guard: counts a request's tokens for a target and, when it does not fit the
//! target's window, applies the route's [`OnOverflow`] policy — fail with the counts, move to a
//! later target with a larger window, or drop the oldest history until it fits.
//!
//! Counting runs on the blocking pool for long requests (over `LARGE_TEXT_BYTES` of text), so a
//! 1 MB prompt cannot stall the async workers that serve every other request.

use serde_json::Value;
use sluice_core::{
    ChatMessageView, ContextPolicy, ErrorClass, LARGE_TEXT_BYTES, OnOverflow, TokenCounter,
    WhenTooLarge, chat_text_len, model_info, truncate,
};
use sluice_providers::{ChatRequest, Message, UpstreamError};

use crate::client::Target;

/// What the guard did to a request, reported to the caller (`x-sluice-truncated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TruncationInfo {
    /// Messages dropped.
    pub dropped_messages: usize,
    /// Tokens removed by dropping and shortening.
    pub dropped_tokens: usize,
    /// Prompt tokens before.
    pub tokens_before: usize,
    /// Prompt tokens sent.
    pub tokens_after: usize,
}

/// The guard's verdict for one target.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Send this request (the original, or a truncated copy with what was dropped).
    Send(Option<(ChatRequest, TruncationInfo)>),
    /// Skip to a later target whose window is larger (`on_context_overflow = "fallback"`).
    Larger,
    /// Fail with a `context_length` error that gives the counts.
    Fail(UpstreamError),
}

fn views(messages: &[Message]) -> Vec<ChatMessageView<'_>> {
    messages
        .iter()
        .map(|m| ChatMessageView::from_parts(&m.role, m.content.as_ref(), &m.extra))
        .collect()
}

/// Prompt tokens of `req` for `model` (the estimate margin included for unknown tokenizers).
pub(crate) async fn count_prompt(model: &str, req: &ChatRequest) -> usize {
    let counter = TokenCounter::for_model(model);
    let tools = req.extra.get("tools");
    let large = chat_text_len(&views(&req.messages), tools) > LARGE_TEXT_BYTES;
    if !large {
        return counter.count_chat(&views(&req.messages), tools).tokens;
    }
    let messages = req.messages.clone();
    let tools = tools.cloned();
    tokio::task::spawn_blocking(move || {
        counter.count_chat(&views(&messages), tools.as_ref()).tokens
    })
    .await
    .unwrap_or(usize::MAX)
}

/// The window the guard checks against: the target's (configured or from the registry), else
/// the policy's default for unknown models.
pub(crate) fn window_of(target: &Target, policy: &ContextPolicy) -> Option<u32> {
    target.context_window().or(policy.default_window)
}

/// Output tokens to reserve: the request's own limit, else the policy's default capped at the
/// model's maximum output.
pub(crate) fn reserved_output(target: &Target, req: &ChatRequest, policy: &ContextPolicy) -> u32 {
    let requested = req.max_completion_tokens.or(req.max_tokens);
    match requested {
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        None => {
            let cap = model_info(target.model()).map_or(u32::MAX, |i| i.max_output);
            policy.default_output.min(cap)
        }
    }
}

/// Checks `req` (with `prompt` tokens) against `target`; `larger_later` says whether a later
/// target of the chain has a larger window.
pub(crate) async fn guard(
    target: &Target,
    req: &ChatRequest,
    prompt: usize,
    policy: &ContextPolicy,
    larger_later: bool,
    force: Option<usize>,
) -> Verdict {
    // `force` is a budget the provider itself dictated; it applies even to unknown windows.
    let window = window_of(target, policy);
    let output = reserved_output(target, req, policy);
    let budget = match (force, window) {
        (Some(b), _) => b,
        (None, Some(w)) => policy.prompt_budget(w, Some(output)) as usize,
        (None, None) => return Verdict::Send(None),
    };
    if prompt <= budget && force.is_none() {
        return Verdict::Send(None);
    }
    let window = window.map_or_else(|| "unknown".to_owned(), |w| w.to_string());
    let overflow_message = |needed: usize| {
        format!(
            "the prompt needs {needed} tokens but {} allows {budget} (context window {window} − output {output} − buffer {})",
            target.name(),
            policy.buffer
        )
    };
    match policy.on_overflow {
        OnOverflow::Error if force.is_none() => {
            return Verdict::Fail(UpstreamError::new(
                ErrorClass::ContextLength,
                overflow_message(prompt),
            ));
        }
        OnOverflow::Fallback if larger_later && force.is_none() => return Verdict::Larger,
        _ => {}
    }
    let counter = TokenCounter::for_model(target.model());
    let tools: Option<Value> = req.extra.get("tools").cloned();
    let messages = req.messages.clone();
    let run = move || {
        truncate(
            counter,
            &views(&messages),
            tools.as_ref(),
            budget,
            WhenTooLarge::Shorten,
        )
        .map(|t| (t, messages))
    };
    let result = if chat_text_len(&views(&req.messages), req.extra.get("tools")) > LARGE_TEXT_BYTES
    {
        match tokio::task::spawn_blocking(run).await {
            Ok(r) => r,
            Err(e) => {
                return Verdict::Fail(UpstreamError::new(
                    ErrorClass::ContextLength,
                    format!("truncation failed: {e}"),
                ));
            }
        }
    } else {
        run()
    };
    match result {
        Ok((t, messages)) => {
            let mut truncated = req.clone();
            truncated.messages = t.apply(&messages, |m: &mut Message| m.content.as_mut());
            let info = TruncationInfo {
                dropped_messages: t.dropped_messages,
                dropped_tokens: t.dropped_tokens,
                tokens_before: t.tokens_before,
                tokens_after: t.tokens,
            };
            tracing::warn!(
                upstream = %target.name(),
                dropped_messages = info.dropped_messages,
                dropped_tokens = info.dropped_tokens,
                "prompt over the context budget of {budget} tokens: truncated {} → {} tokens",
                info.tokens_before,
                info.tokens_after
            );
            Verdict::Send(Some((truncated, info)))
        }
        Err(overflow) => Verdict::Fail(UpstreamError::new(
            ErrorClass::ContextLength,
            format!("{}: {overflow}", overflow_message(overflow.total)),
        )),
    }
}

/// The context window a provider's `context_length` message names, if it names one
/// (`maximum context length is 128000 tokens`, `… > 200000 maximum`, `… allowed (1048576)`).
pub(crate) fn window_from_message(message: &str) -> Option<usize> {
    let lower = message.to_ascii_lowercase();
    let number_after = |marker: &str| -> Option<usize> {
        let start = lower.find(marker)? + marker.len();
        let digits: String = lower[start..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    number_after("maximum context length is")
        .or_else(|| number_after("tokens >"))
        .or_else(|| number_after("maximum number of tokens allowed"))
        .or_else(|| number_after("configured limit of"))
}

/// The prompt size a provider's `context_length` message reports, if it reports one
/// (`your messages resulted in 204308 tokens`, `prompt is too long: 208310 tokens`, `The input
/// token count (1200293)`).
pub(crate) fn prompt_from_message(message: &str) -> Option<usize> {
    let lower = message.to_ascii_lowercase();
    let number_after = |marker: &str| -> Option<usize> {
        let start = lower.find(marker)? + marker.len();
        let digits: String = lower[start..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    number_after("resulted in")
        .or_else(|| number_after("prompt is too long:"))
        .or_else(|| number_after("input token count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_read_from_provider_messages() {
        assert_eq!(
            window_from_message(
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 204308 tokens."
            ),
            Some(128_000)
        );
        assert_eq!(
            window_from_message("prompt is too long: 208310 tokens > 200000 maximum"),
            Some(200_000)
        );
        assert_eq!(
            window_from_message(
                "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."
            ),
            Some(1_048_576)
        );
        assert_eq!(window_from_message("something else"), None);
        assert_eq!(
            prompt_from_message("However, your messages resulted in 204308 tokens."),
            Some(204_308)
        );
        assert_eq!(
            prompt_from_message("prompt is too long: 208310 tokens > 200000 maximum"),
            Some(208_310)
        );
        assert_eq!(prompt_from_message("nothing here"), None);
    }
}
