//! The model registry: context window, maximum output and tokenizer encoding of well-known
//! models, looked up by exact name first and then by the longest matching prefix, so dated
//! variants (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`) resolve to their family.
//!
//! This table is the one place these numbers live (source: the provider reference, §6.1 and
//! §6.2, itself from litellm's model table and tiktoken's model map). Configuration may override
//! any entry per target; callers use [`model_info`] and never hard-code a window.

/// A tokenizer encoding of OpenAI models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// GPT-3.5 / GPT-4 family.
    Cl100kBase,
    /// GPT-4o, GPT-4.1, GPT-5, o-series.
    O200kBase,
}

/// What Sluice knows about a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Context window (maximum input, or input + output where the provider counts it so).
    pub context_window: u32,
    /// Maximum output tokens.
    pub max_output: u32,
    /// The exact tokenizer, for OpenAI models; `None` when not public (Anthropic).
    pub encoding: Option<Encoding>,
}

const fn info(context_window: u32, max_output: u32, encoding: Option<Encoding>) -> ModelInfo {
    ModelInfo {
        context_window,
        max_output,
        encoding,
    }
}

const O200K: Option<Encoding> = Some(Encoding::O200kBase);
const CL100K: Option<Encoding> = Some(Encoding::Cl100kBase);

/// Names and name prefixes with their info. Lookup takes an exact match, else the longest
/// entry that prefixes the name.
const TABLE: &[(&str, ModelInfo)] = &[
    ("gpt-3.5-turbo", info(16_385, 4_096, CL100K)),
    ("gpt-35-turbo", info(16_385, 4_096, CL100K)),
    ("gpt-4", info(8_192, 4_096, CL100K)),
    ("gpt-4-32k", info(32_768, 4_096, CL100K)),
    ("gpt-4-turbo", info(128_000, 4_096, CL100K)),
    ("gpt-4o", info(128_000, 16_384, O200K)),
    ("gpt-4o-2024-05-13", info(128_000, 4_096, O200K)),
    ("gpt-4o-mini", info(128_000, 16_384, O200K)),
    ("chatgpt-4o", info(128_000, 16_384, O200K)),
    ("gpt-4.1", info(1_047_576, 32_768, O200K)),
    ("gpt-4.5", info(128_000, 16_384, O200K)),
    ("o1", info(200_000, 100_000, O200K)),
    ("o1-mini", info(128_000, 65_536, O200K)),
    ("o1-preview", info(128_000, 32_768, O200K)),
    ("o3", info(200_000, 100_000, O200K)),
    ("o4-mini", info(200_000, 100_000, O200K)),
    ("gpt-5", info(272_000, 128_000, O200K)),
    ("claude-3-opus", info(200_000, 4_096, None)),
    ("claude-3-haiku", info(200_000, 4_096, None)),
    ("claude-3-5-sonnet", info(200_000, 8_192, None)),
    ("claude-3-5-haiku", info(200_000, 8_192, None)),
    ("claude-3-7-sonnet", info(200_000, 64_000, None)),
    ("claude-sonnet-4", info(200_000, 64_000, None)),
    ("claude-opus-4", info(200_000, 32_000, None)),
    ("claude-opus-4-1", info(200_000, 32_000, None)),
    ("claude-sonnet-4-5", info(200_000, 64_000, None)),
    ("claude-haiku-4-5", info(200_000, 64_000, None)),
    ("claude-opus-4-5", info(200_000, 64_000, None)),
    ("claude-sonnet-4-6", info(1_000_000, 128_000, None)),
    ("claude-opus-4-6", info(1_000_000, 128_000, None)),
    ("claude-opus-4-7", info(1_000_000, 128_000, None)),
    ("gemini-2.5-pro", info(1_048_576, 65_536, None)),
    ("gemini-2.5-flash", info(1_048_576, 65_536, None)),
];

/// What the registry knows about `model` (a provider's model name, without `provider/`), or
/// `None` for an unknown model.
pub fn model_info(model: &str) -> Option<ModelInfo> {
    let model = model.strip_prefix("ft:").unwrap_or(model);
    if let Some((_, info)) = TABLE.iter().find(|(name, _)| *name == model) {
        return Some(*info);
    }
    TABLE
        .iter()
        .filter(|(name, _)| {
            model.len() > name.len()
                && model.starts_with(name)
                && matches!(model.as_bytes()[name.len()], b'-' | b':' | b'.' | b'@')
        })
        .max_by_key(|(name, _)| name.len())
        .map(|(_, info)| *info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_dated_names_resolve_to_their_family() {
        let window = |m: &str| model_info(m).map(|i| i.context_window);
        assert_eq!(window("gpt-4o"), Some(128_000));
        assert_eq!(window("gpt-4o-2024-08-06"), Some(128_000));
        assert_eq!(model_info("gpt-4o-2024-05-13").unwrap().max_output, 4_096);
        assert_eq!(window("gpt-4o-mini-2024-07-18"), Some(128_000));
        assert_eq!(window("gpt-4"), Some(8_192));
        assert_eq!(window("gpt-4-0613"), Some(8_192));
        assert_eq!(window("gpt-4-turbo-2024-04-09"), Some(128_000));
        assert_eq!(window("gpt-4.1-mini"), Some(1_047_576));
        assert_eq!(window("o3-mini"), Some(200_000));
        assert_eq!(window("gpt-5-nano"), Some(272_000));
        assert_eq!(window("claude-sonnet-4-5-20250929"), Some(200_000));
        assert_eq!(window("claude-sonnet-4-20250514"), Some(200_000));
        assert_eq!(window("claude-sonnet-4-6"), Some(1_000_000));
        assert_eq!(
            model_info("claude-opus-4-1-20250805").unwrap().max_output,
            32_000
        );
        assert_eq!(window("ft:gpt-4o-mini:org:custom:id"), Some(128_000));
    }

    #[test]
    fn encodings_follow_tiktoken() {
        let enc = |m: &str| model_info(m).and_then(|i| i.encoding);
        assert_eq!(enc("gpt-4o-mini"), Some(Encoding::O200kBase));
        assert_eq!(enc("gpt-4-turbo"), Some(Encoding::Cl100kBase));
        assert_eq!(enc("gpt-3.5-turbo-0125"), Some(Encoding::Cl100kBase));
        assert_eq!(enc("o1-preview"), Some(Encoding::O200kBase));
        assert_eq!(enc("claude-3-5-haiku-20241022"), None);
    }

    #[test]
    fn unknown_models_and_near_misses_are_unknown() {
        assert_eq!(model_info("mock-1"), None);
        assert_eq!(
            model_info("gpt-4x"),
            None,
            "a prefix must end at a separator"
        );
        assert_eq!(model_info(""), None);
    }
}
