//! What to do when a prompt does not fit a target's context window: the knobs of the context
//! guard, with their defaults (the one place each default lives).
//!
//! The guard runs before each target of a chain is tried and again when a provider answers
//! `context_length` anyway. The budget for the prompt is
//! `context window − reserved output − buffer`, where the reserved output is the request's own
//! `max_tokens`/`max_completion_tokens`, else [`ContextPolicy::default_output`].

use std::fmt;

/// The action when a prompt is over budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOverflow {
    /// Fail with a `context_length` error that gives the counts (no upstream call). The
    /// default: a prompt is never changed unless the configuration asks for it, and the chain
    /// still moves on to a target with a larger window.
    #[default]
    Error,
    /// Drop the oldest history (and shorten what must stay) until it fits, then send.
    Truncate,
    /// Move to a later target with a larger window; truncate only when none is left.
    Fallback,
}

impl fmt::Display for OnOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Truncate => "truncate",
            Self::Fallback => "fallback",
        })
    }
}

/// The context guard's settings for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextPolicy {
    /// What to do when a prompt is over budget.
    pub on_overflow: OnOverflow,
    /// Output tokens reserved when the request sets no `max_tokens`.
    pub default_output: u32,
    /// Safety margin kept free besides the output.
    pub buffer: u32,
    /// Window assumed for models the registry does not know; `None`: unknown models are not
    /// checked before sending (the provider's own `context_length` answer still is).
    pub default_window: Option<u32>,
}

impl ContextPolicy {
    /// Default `default_output` (the truncation module's reserved output).
    pub const DEFAULT_OUTPUT: u32 = crate::truncate::DEFAULT_RESERVED_OUTPUT as u32;
    /// Default `buffer` (the truncation module's buffer).
    pub const DEFAULT_BUFFER: u32 = crate::truncate::DEFAULT_BUFFER as u32;

    /// Tokens available to the prompt in `window` when `max_output` tokens are asked for.
    pub fn prompt_budget(&self, window: u32, max_output: Option<u32>) -> u32 {
        let output = max_output.unwrap_or(self.default_output) as usize;
        crate::truncate::budget(window as usize, output, self.buffer as usize) as u32
    }
}

impl Default for ContextPolicy {
    fn default() -> Self {
        Self {
            on_overflow: OnOverflow::default(),
            default_output: Self::DEFAULT_OUTPUT,
            buffer: Self::DEFAULT_BUFFER,
            default_window: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_subtracts_output_and_buffer() {
        let p = ContextPolicy::default();
        assert_eq!(p.prompt_budget(128_000, Some(1_000)), 126_900);
        assert_eq!(p.prompt_budget(128_000, None), 128_000 - 4096 - 100);
        assert_eq!(p.prompt_budget(1_000, Some(5_000)), 0);
    }
}
