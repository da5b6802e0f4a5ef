//! `sluice count-tokens`: count the tokens of a chat request (or plain text) offline, and show
//! what truncation would do to it for the model's context window.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use sluice_core::{
    ChatMessageView, DEFAULT_BUFFER, ESTIMATE_MARGIN_PERCENT, ModelInfo, TokenCount, TokenCounter,
    WhenTooLarge, model_info, reserved_output, truncate,
};

/// Exit code for unreadable input or a missing model.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Args)]
pub struct CountTokensArgs {
    /// Model whose tokenizer and context window to use (`gpt-4o`, `openai/gpt-4o`,
    /// `claude-sonnet-4-5`). Default: the request's `model`.
    #[arg(long, short)]
    model: Option<String>,
    /// Count the input as plain text, with no chat framing (also the fallback when the input is
    /// not a chat request).
    #[arg(long)]
    text: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Output tokens to reserve in the window. Default: the request's `max_completion_tokens`
    /// or `max_tokens`, else 4096 capped at the model's maximum output.
    #[arg(long)]
    reserve_output: Option<u64>,
    /// Tokens kept free besides the reserved output.
    #[arg(long, default_value_t = DEFAULT_BUFFER)]
    buffer: usize,
    /// A chat request JSON (`{"messages": [...], "tools": [...]}`, or a bare messages array), or
    /// any text. `-` or absent: stdin.
    input: Option<PathBuf>,
}

/// What was counted.
enum Input {
    Chat { request: Value },
    Text(String),
}

impl Input {
    fn parse(raw: String, force_text: bool) -> Self {
        if force_text {
            return Input::Text(raw);
        }
        match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(fields)) if fields.get("messages").is_some_and(Value::is_array) => {
                Input::Chat {
                    request: Value::Object(fields),
                }
            }
            Ok(Value::Array(items))
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|m| m.get("role").is_some_and(Value::is_string)) =>
            {
                Input::Chat {
                    request: json!({ "messages": items }),
                }
            }
            _ => Input::Text(raw),
        }
    }
}

/// The registry entry for `model`, ignoring a `provider/` prefix the registry does not know.
fn info_for(model: &str) -> Option<ModelInfo> {
    model_info(model).or_else(|| model.split_once('/').and_then(|(_, m)| model_info(m)))
}

pub fn run(args: CountTokensArgs) -> ExitCode {
    let raw = match read_input(args.input.as_deref()) {
        Ok(raw) => raw,
        Err(e) => return usage(&e),
    };
    let input = Input::parse(raw, args.text);
    let request_model = match &input {
        Input::Chat { request } => request.get("model").and_then(Value::as_str),
        Input::Text(_) => None,
    };
    let Some(model) = args.model.as_deref().or(request_model).map(str::to_owned) else {
        return usage("no model: pass --model (or a request with a \"model\" field)");
    };
    let counter = TokenCounter::for_model(&model);
    let info = info_for(&model);

    let (kind, count, messages_len) = match &input {
        Input::Chat { request } => {
            let views = message_views(request);
            let count = counter.count_chat(&views, request.get("tools"));
            ("chat", count, views.len())
        }
        Input::Text(text) => ("text", counter.count_plain(text), 0),
    };
    let requested_output = args.reserve_output.or_else(|| match &input {
        Input::Chat { request } => request
            .get("max_completion_tokens")
            .or_else(|| request.get("max_tokens"))
            .and_then(Value::as_u64),
        Input::Text(_) => None,
    });

    let mut report = json!({
        "model": model,
        "kind": kind,
        "tokens": count.tokens,
        "encoding": count.encoding.name(),
        "exact": count.exact,
        "estimate_margin_percent": counter.is_estimate().then_some(ESTIMATE_MARGIN_PERCENT),
        "messages": (kind == "chat").then_some(messages_len),
        "context_window": info.map(|i| i.context_window),
        "max_output": info.map(|i| i.max_output),
        "reserved_output": Value::Null,
        "buffer": args.buffer,
        "budget": Value::Null,
        "fits": Value::Null,
        "would_drop": Value::Null,
        "overflow": Value::Null,
    });
    if let Some(info) = info {
        let reserved = reserved_output(requested_output, &info);
        let budget = sluice_core::budget(info.context_window as usize, reserved, args.buffer);
        report["reserved_output"] = json!(reserved);
        report["budget"] = json!(budget);
        report["fits"] = json!(count.tokens <= budget);
        match &input {
            Input::Chat { request } => {
                let views = message_views(request);
                match truncate(
                    counter,
                    &views,
                    request.get("tools"),
                    budget,
                    WhenTooLarge::Shorten,
                ) {
                    Ok(t) => {
                        let dropped: Vec<usize> =
                            (0..views.len()).filter(|i| !t.keep.contains(i)).collect();
                        report["would_drop"] = json!({
                            "messages": t.dropped_messages,
                            "tokens": t.dropped_tokens,
                            "indices": dropped,
                            "shortened": t.shortened.iter().map(|s| json!({
                                "index": s.index,
                                "part": s.part,
                                "cut_tokens": s.cut_tokens,
                            })).collect::<Vec<_>>(),
                            "tokens_after": t.tokens,
                        });
                    }
                    Err(o) => {
                        report["overflow"] = json!({
                            "needed": o.needed,
                            "budget": o.budget,
                            "message": o.to_string(),
                        });
                    }
                }
            }
            Input::Text(_) => {
                let cut = count.tokens.saturating_sub(budget);
                report["would_drop"] = json!({
                    "messages": 0,
                    "tokens": cut,
                    "tokens_after": count.tokens - cut,
                });
            }
        }
    }

    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{report}")
    } else {
        write_table(&mut out, &report, &count, counter)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => usage(&format!("cannot write the output: {e}")),
    }
}

fn message_views(request: &Value) -> Vec<ChatMessageView<'_>> {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(ChatMessageView::from_json).collect())
        .unwrap_or_default()
}

fn read_input(path: Option<&std::path::Path>) -> Result<String, String> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(s)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "sluice count-tokens: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn num(v: &Value) -> String {
    v.as_u64().map_or_else(|| "unknown".to_owned(), thousands)
}

fn write_table(
    out: &mut impl Write,
    report: &Value,
    count: &TokenCount,
    counter: TokenCounter,
) -> std::io::Result<()> {
    let model = report["model"].as_str().unwrap_or("");
    let encoding = if counter.is_estimate() {
        let family = if model.contains("claude") {
            "anthropic"
        } else {
            "tokenizer not public or model unknown"
        };
        format!(
            "estimate ({family}: {} +{ESTIMATE_MARGIN_PERCENT}%)",
            count.encoding.name()
        )
    } else if count.exact {
        format!("{} (exact)", count.encoding.name())
    } else {
        format!(
            "{} (exact text; tool calls or non-text parts estimated)",
            count.encoding.name()
        )
    };
    let what = match report["messages"].as_u64() {
        Some(n) => format!("chat request, {n} messages, framing included"),
        None => "plain text, no chat framing".to_owned(),
    };
    writeln!(out, "tokens          {}", num(&report["tokens"]))?;
    writeln!(out, "counted as      {what}")?;
    writeln!(out, "encoding        {encoding}")?;
    writeln!(out, "model           {model}")?;
    writeln!(out, "context window  {}", num(&report["context_window"]))?;
    writeln!(out, "max output      {}", num(&report["max_output"]))?;
    if report["budget"].is_null() {
        writeln!(
            out,
            "truncation      cannot tell (the model's context window is not in the registry)"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "budget          {} (window - {} reserved output - {} buffer)",
        num(&report["budget"]),
        num(&report["reserved_output"]),
        num(&report["buffer"])
    )?;
    let drop = &report["would_drop"];
    let line = if let Some(o) = report["overflow"].as_object() {
        format!(
            "cannot fit: what must be kept needs {} tokens, over the budget of {}",
            num(&o["needed"]),
            num(&o["budget"])
        )
    } else if report["fits"] == true {
        "nothing to drop (fits)".to_owned()
    } else if report["kind"] == "text" {
        format!("would cut {} tokens", num(&drop["tokens"]))
    } else {
        let mut line = format!(
            "would drop {} message(s) ({} tokens): indices {}",
            num(&drop["messages"]),
            num(&drop["tokens"]),
            drop["indices"]
        );
        if let Some(s) = drop["shortened"].as_array().filter(|s| !s.is_empty()) {
            let cut: u64 = s.iter().filter_map(|x| x["cut_tokens"].as_u64()).sum();
            line.push_str(&format!(
                "; shorten {} text(s) by {} tokens",
                s.len(),
                thousands(cut)
            ));
        }
        line.push_str(&format!("; {} tokens left", num(&drop["tokens_after"])));
        line
    };
    writeln!(out, "truncation      {line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_047_576), "1,047,576");
    }

    #[test]
    fn input_detection() {
        assert!(matches!(
            Input::parse(r#"{"messages": []}"#.into(), false),
            Input::Chat { .. }
        ));
        assert!(matches!(
            Input::parse(r#"[{"role": "user", "content": "x"}]"#.into(), false),
            Input::Chat { .. }
        ));
        assert!(matches!(
            Input::parse(r#"{"messages": []}"#.into(), true),
            Input::Text(_)
        ));
        assert!(matches!(
            Input::parse(r#"{"foo": 1}"#.into(), false),
            Input::Text(_)
        ));
        assert!(matches!(
            Input::parse("hello".into(), false),
            Input::Text(_)
        ));
    }
}
