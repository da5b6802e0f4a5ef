//! Canonical (OpenAI) request → Anthropic Messages request. The table is in the module docs.

use serde_json::{Map, Value, json};

use super::TranslateError;
use crate::{ChatRequest, Message};

/// `max_tokens` sent when the canonical request sets neither `max_completion_tokens` nor
/// `max_tokens`. Anthropic requires a value and OpenAI's default is "as much as fits"; 4096 is
/// the largest output every current Claude model accepts (older Claude 3 models cap there),
/// enough for ordinary answers, and small enough to stay far below the SDKs' 10-minute
/// non-streaming guard. Set `max_completion_tokens` for longer outputs.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Translates a canonical request into an Anthropic Messages request body.
///
/// `stream` says whether the call streams (the request's own `stream` field is ignored, as in
/// every adapter). Fields without an Anthropic equivalent are rejected with a
/// [`TranslateError`] naming the field, and none is dropped silently: the field-by-field table
/// (mapped, dropped and why, rejected) is the doc comment of `src/anthropic/mod.rs`.
pub fn to_anthropic_request(req: &ChatRequest, stream: bool) -> Result<Value, TranslateError> {
    let (system, messages) = translate_messages(&req.messages)?;

    let mut temperature = None;
    let mut top_p = None;
    let mut stop = None;
    let mut tools: Option<Vec<Value>> = None;
    let mut tool_choice: Option<Map<String, Value>> = None;
    let mut parallel_tool_calls = None;
    let mut user = None;
    for (key, value) in &req.extra {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "temperature" => {
                let t = value
                    .as_f64()
                    .ok_or_else(|| TranslateError::invalid(key, "must be a number"))?;
                temperature = Some(if (0.0..=1.0).contains(&t) {
                    value.clone()
                } else {
                    json!(t.clamp(0.0, 1.0))
                });
            }
            "top_p" => {
                if !value.is_number() {
                    return Err(TranslateError::invalid(key, "must be a number"));
                }
                top_p = Some(value.clone());
            }
            "stop" => stop = stop_sequences(value)?,
            "tools" => tools = Some(translate_tools(value)?),
            "tool_choice" => tool_choice = Some(translate_tool_choice(value)?),
            "parallel_tool_calls" => {
                parallel_tool_calls = Some(
                    value
                        .as_bool()
                        .ok_or_else(|| TranslateError::invalid(key, "must be a boolean"))?,
                );
            }
            "user" => {
                user = Some(
                    value
                        .as_str()
                        .ok_or_else(|| TranslateError::invalid(key, "must be a string"))?
                        .to_owned(),
                );
            }
            // Dropped: see the module docs for why each is safe to leave out.
            "stream_options" | "seed" | "store" | "metadata" => {}
            "service_tier" => {
                if !matches!(value.as_str(), Some("auto" | "default")) {
                    return Err(TranslateError::unsupported(
                        key,
                        "only the default tier (\"auto\" or \"default\") can be translated",
                    ));
                }
            }
            "n" => {
                if value.as_u64() != Some(1) {
                    return Err(TranslateError::unsupported(
                        key,
                        "Anthropic returns exactly one choice per request (n must be 1)",
                    ));
                }
            }
            "logprobs" => {
                if value != &Value::Bool(false) {
                    return Err(TranslateError::unsupported(
                        key,
                        "Anthropic does not return log-probabilities",
                    ));
                }
            }
            "top_logprobs" => {
                if value.as_u64() != Some(0) {
                    return Err(TranslateError::unsupported(
                        key,
                        "Anthropic does not return log-probabilities",
                    ));
                }
            }
            "logit_bias" => {
                if !value.as_object().is_some_and(Map::is_empty) {
                    return Err(TranslateError::unsupported(
                        key,
                        "Anthropic has no token bias",
                    ));
                }
            }
            "presence_penalty" | "frequency_penalty" => {
                if value.as_f64() != Some(0.0) {
                    return Err(TranslateError::unsupported(
                        key,
                        "Anthropic has no repetition penalties (only 0 can be translated)",
                    ));
                }
            }
            "response_format" => {
                if value != &json!({"type": "text"}) {
                    return Err(TranslateError::unsupported(
                        key,
                        "Anthropic Messages has no JSON mode or JSON schema output",
                    ));
                }
            }
            "modalities" => {
                if value != &json!(["text"]) {
                    return Err(TranslateError::unsupported(
                        key,
                        "Anthropic Messages produces text only",
                    ));
                }
            }
            "audio" => {
                return Err(TranslateError::unsupported(
                    key,
                    "Anthropic Messages produces text only",
                ));
            }
            "prediction" => {
                return Err(TranslateError::unsupported(
                    key,
                    "Anthropic has no predicted outputs",
                ));
            }
            "reasoning_effort" => {
                return Err(TranslateError::unsupported(
                    key,
                    "Anthropic extended thinking needs an explicit token budget; there is no 1:1 mapping",
                ));
            }
            _ => {
                return Err(TranslateError::unsupported(
                    key,
                    "it has no Anthropic equivalent",
                ));
            }
        }
    }

    // `parallel_tool_calls: false` rides on tool_choice, and only means something with tools.
    let has_tools = tools.as_ref().is_some_and(|t| !t.is_empty());
    if parallel_tool_calls == Some(false) && has_tools {
        let choice = tool_choice.get_or_insert_with(|| {
            let mut auto = Map::new();
            auto.insert("type".into(), "auto".into());
            auto
        });
        if choice.get("type").and_then(Value::as_str) != Some("none") {
            choice.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }

    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);

    let mut out = Map::new();
    out.insert("model".into(), Value::String(req.model.clone()));
    out.insert("max_tokens".into(), max_tokens.into());
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        out.insert("tool_choice".into(), Value::Object(choice));
    }
    if let Some(stop) = stop {
        out.insert("stop_sequences".into(), stop);
    }
    if let Some(t) = temperature {
        out.insert("temperature".into(), t);
    }
    if let Some(p) = top_p {
        out.insert("top_p".into(), p);
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(user) = user {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    Ok(Value::Object(out))
}

fn stop_sequences(value: &Value) -> Result<Option<Value>, TranslateError> {
    match value {
        Value::String(s) => Ok(Some(json!([s]))),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then(|| value.clone()))
        }
        _ => Err(TranslateError::invalid(
            "stop",
            "must be a string or an array of strings",
        )),
    }
}

fn translate_tools(value: &Value) -> Result<Vec<Value>, TranslateError> {
    let tools = value
        .as_array()
        .ok_or_else(|| TranslateError::invalid("tools", "must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let obj = object(tool, &path)?;
        match obj.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "function" => {}
            Some(_) => {
                return Err(TranslateError::unsupported(
                    format!("{path}.type"),
                    "only function tools can be translated",
                ));
            }
        }
        check_keys(obj, &path, &["type", "function"])?;
        let fpath = format!("{path}.function");
        let function = object(
            obj.get("function")
                .ok_or_else(|| TranslateError::invalid(&fpath, "is required"))?,
            &fpath,
        )?;
        check_keys(
            function,
            &fpath,
            &["name", "description", "parameters", "strict"],
        )?;
        let name = string_field(function, "name", &fpath)?;
        let mut t = Map::new();
        t.insert("name".into(), Value::String(name.to_owned()));
        if let Some(d) = function.get("description").filter(|d| !d.is_null()) {
            if !d.is_string() {
                return Err(TranslateError::invalid(
                    format!("{fpath}.description"),
                    "must be a string",
                ));
            }
            t.insert("description".into(), d.clone());
        }
        let schema = match function.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) => p.clone(),
        };
        t.insert("input_schema".into(), schema);
        out.push(Value::Object(t));
    }
    Ok(out)
}

fn translate_tool_choice(value: &Value) -> Result<Map<String, Value>, TranslateError> {
    let ty = match value {
        Value::String(s) => match s.as_str() {
            "auto" => "auto",
            "required" => "any",
            "none" => "none",
            _ => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    "must be \"auto\", \"required\", \"none\" or a function choice",
                ));
            }
        },
        Value::Object(obj)
            if obj.get("type").and_then(Value::as_str) == Some("function")
                && obj.get("function").and_then(|f| f.get("name")).is_some() =>
        {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    TranslateError::invalid("tool_choice.function.name", "must be a string")
                })?;
            let mut choice = Map::new();
            choice.insert("type".into(), "tool".into());
            choice.insert("name".into(), name.into());
            return Ok(choice);
        }
        _ => {
            return Err(TranslateError::unsupported(
                "tool_choice",
                "only \"auto\", \"required\", \"none\" and {\"type\":\"function\",...} can be translated",
            ));
        }
    };
    let mut choice = Map::new();
    choice.insert("type".into(), ty.into());
    Ok(choice)
}

/// One Anthropic turn under construction.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// Splits the canonical messages into the `system` pieces and the Anthropic `messages`.
fn translate_messages(messages: &[Message]) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                check_keys(&m.extra, &path, &["name"])?;
                system.extend(system_pieces(m, &path)?);
                continue;
            }
            "user" => {
                check_keys(&m.extra, &path, &["name"])?;
                ("user", user_blocks(m, &path)?)
            }
            "assistant" => {
                reject_message_key(&m.extra, &path, "function_call", "use `tool_calls`")?;
                reject_message_key(&m.extra, &path, "audio", "Anthropic Messages has no audio")?;
                check_keys(
                    &m.extra,
                    &path,
                    &["name", "tool_calls", "refusal", "annotations"],
                )?;
                ("assistant", assistant_blocks(m, &path)?)
            }
            "tool" => {
                check_keys(&m.extra, &path, &["tool_call_id", "name"])?;
                ("user", vec![tool_result_block(m, &path)?])
            }
            "function" => {
                return Err(TranslateError::unsupported(
                    format!("{path}.role"),
                    "the deprecated `function` role cannot be translated; use `tool` messages",
                ));
            }
            _ => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    "must be system, developer, user, assistant or tool",
                ));
            }
        };
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.extend(blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    let messages = turns.into_iter().map(finish_turn).collect();
    Ok((system, messages))
}

fn finish_turn(mut turn: Turn) -> Value {
    if turn.role == "user" {
        // Anthropic wants the tool results of a turn before anything else in it.
        let (mut results, rest): (Vec<Value>, Vec<Value>) = turn
            .blocks
            .into_iter()
            .partition(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
        results.extend(rest);
        turn.blocks = results;
    }
    let content = match turn.blocks.as_slice() {
        [] => Value::String(String::new()),
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => only["text"].clone(),
        _ => Value::Array(turn.blocks),
    };
    json!({"role": turn.role, "content": content})
}

fn system_pieces(m: &Message, path: &str) -> Result<Vec<String>, TranslateError> {
    let mut pieces = Vec::new();
    match &m.content {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => pieces.push(s.clone()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                let obj = object(part, &ppath)?;
                match obj.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        check_keys(obj, &ppath, &["type", "text"])?;
                        pieces.push(string_field(obj, "text", &ppath)?.to_owned());
                    }
                    _ => {
                        return Err(TranslateError::unsupported(
                            format!("{ppath}.type"),
                            "system messages can only hold text",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "must be a string or an array of content parts",
            ));
        }
    }
    pieces.retain(|p| !p.is_empty());
    Ok(pieces)
}

/// Walks a message's `content` (a string, an array of parts, or absent) into Anthropic blocks.
/// Text parts are handled here; every other part type goes to `part` with its object and path,
/// which pushes blocks or rejects it. User and assistant messages differ only in that callback.
fn content_blocks(
    m: &Message,
    path: &str,
    mut part: impl FnMut(&str, &Map<String, Value>, &str, &mut Vec<Value>) -> Result<(), TranslateError>,
) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    match &m.content {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_text(&mut blocks, s),
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                let obj = object(p, &ppath)?;
                match obj.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        check_keys(obj, &ppath, &["type", "text"])?;
                        push_text(&mut blocks, string_field(obj, "text", &ppath)?);
                    }
                    Some(kind) => part(kind, obj, &ppath, &mut blocks)?,
                    None => {
                        return Err(TranslateError::invalid(
                            format!("{ppath}.type"),
                            "is required",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "must be a string or an array of content parts",
            ));
        }
    }
    Ok(blocks)
}

fn user_blocks(m: &Message, path: &str) -> Result<Vec<Value>, TranslateError> {
    content_blocks(m, path, |kind, obj, ppath, blocks| match kind {
        "image_url" => {
            check_keys(obj, ppath, &["type", "image_url"])?;
            blocks.push(image_block(obj.get("image_url"), ppath)?);
            Ok(())
        }
        "input_audio" => Err(TranslateError::unsupported(
            format!("{ppath}.type"),
            "Anthropic Messages does not accept audio input",
        )),
        other => Err(TranslateError::unsupported(
            format!("{ppath}.type"),
            &format!("content parts of type `{other}` have no Anthropic equivalent here"),
        )),
    })
}

fn image_block(image_url: Option<&Value>, ppath: &str) -> Result<Value, TranslateError> {
    let field = format!("{ppath}.image_url");
    let url = match image_url {
        Some(Value::String(url)) => url.as_str(),
        Some(Value::Object(obj)) => {
            check_keys(obj, &field, &["url", "detail"])?;
            string_field(obj, "url", &field)?
        }
        _ => {
            return Err(TranslateError::invalid(
                field,
                "must be an object with a `url`",
            ));
        }
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| {
            TranslateError::invalid(format!("{field}.url"), "is a data: URL without data")
        })?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
            TranslateError::unsupported(
                format!("{field}.url"),
                "only base64 data: URLs can be sent as Anthropic images",
            )
        })?;
        // `data:image/png;charset=x;base64,` → image/png
        let media_type = media_type.split(';').next().unwrap_or(media_type);
        return Ok(json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type, "data": data}}));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(TranslateError::unsupported(
        format!("{field}.url"),
        "only data: and http(s) image URLs can be translated",
    ))
}

fn assistant_blocks(m: &Message, path: &str) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = content_blocks(m, path, |kind, obj, ppath, blocks| match kind {
        "refusal" => {
            check_keys(obj, ppath, &["type", "refusal"])?;
            push_text(blocks, string_field(obj, "refusal", ppath)?);
            Ok(())
        }
        _ => Err(TranslateError::unsupported(
            format!("{ppath}.type"),
            "assistant messages can only hold text and refusal parts",
        )),
    })?;
    match m.extra.get("refusal") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_text(&mut blocks, s),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.refusal"),
                "must be a string",
            ));
        }
    }
    match m.extra.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                blocks.push(tool_use_block(call, &format!("{path}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.tool_calls"),
                "must be an array",
            ));
        }
    }
    Ok(blocks)
}

fn tool_use_block(call: &Value, path: &str) -> Result<Value, TranslateError> {
    let obj = object(call, path)?;
    // `index` is left over by clients that accumulate streamed tool calls.
    check_keys(obj, path, &["id", "type", "function", "index"])?;
    match obj.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "function" => {}
        Some(_) => {
            return Err(TranslateError::unsupported(
                format!("{path}.type"),
                "only function tool calls can be translated",
            ));
        }
    }
    let id = string_field(obj, "id", path)?;
    let fpath = format!("{path}.function");
    let function = object(
        obj.get("function")
            .ok_or_else(|| TranslateError::invalid(&fpath, "is required"))?,
        &fpath,
    )?;
    check_keys(function, &fpath, &["name", "arguments"])?;
    let name = string_field(function, "name", &fpath)?;
    let apath = format!("{fpath}.arguments");
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(TranslateError::invalid(apath, "must be a JSON string")),
    };
    let input = if arguments.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        let parsed: Value = serde_json::from_str(arguments)
            .map_err(|e| TranslateError::invalid(&apath, &format!("is not valid JSON ({e})")))?;
        if !parsed.is_object() {
            return Err(TranslateError::invalid(
                apath,
                "must encode a JSON object (Anthropic tool inputs are objects)",
            ));
        }
        parsed
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn tool_result_block(m: &Message, path: &str) -> Result<Value, TranslateError> {
    let id = match m.extra.get("tool_call_id") {
        Some(Value::String(id)) => id,
        _ => {
            return Err(TranslateError::invalid(
                format!("{path}.tool_call_id"),
                "is required on tool messages",
            ));
        }
    };
    let mut block = Map::new();
    block.insert("type".into(), "tool_result".into());
    block.insert("tool_use_id".into(), Value::String(id.clone()));
    match &m.content {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            block.insert("content".into(), Value::String(s.clone()));
        }
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                let obj = object(part, &ppath)?;
                if obj.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(TranslateError::unsupported(
                        format!("{ppath}.type"),
                        "tool messages can only hold text",
                    ));
                }
                check_keys(obj, &ppath, &["type", "text"])?;
                let text = string_field(obj, "text", &ppath)?;
                if !text.is_empty() {
                    texts.push(json!({"type": "text", "text": text}));
                }
            }
            block.insert("content".into(), Value::Array(texts));
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "must be a string or an array of text parts",
            ));
        }
    }
    Ok(Value::Object(block))
}

fn push_text(blocks: &mut Vec<Value>, text: &str) {
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
}

/// `value` as a JSON object, or an error naming `path` (both translation directions use it).
pub(super) fn object<'v>(
    value: &'v Value,
    path: &str,
) -> Result<&'v Map<String, Value>, TranslateError> {
    value
        .as_object()
        .ok_or_else(|| TranslateError::invalid(path, "must be an object"))
}

/// The string field `key` of `obj`, required.
pub(super) fn string_field<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'v str, TranslateError> {
    obj.get(key).and_then(Value::as_str).ok_or_else(|| {
        TranslateError::invalid(format!("{path}.{key}"), "is required and must be a string")
    })
}

/// Rejects every non-null key of `obj` that is not in `allowed`.
fn check_keys(
    obj: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), TranslateError> {
    for (key, value) in obj {
        if !value.is_null() && !allowed.contains(&key.as_str()) {
            return Err(TranslateError::unsupported(
                format!("{path}.{key}"),
                "it has no Anthropic equivalent",
            ));
        }
    }
    Ok(())
}

fn reject_message_key(
    extra: &Map<String, Value>,
    path: &str,
    key: &str,
    why: &str,
) -> Result<(), TranslateError> {
    match extra.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(TranslateError::unsupported(format!("{path}.{key}"), why)),
    }
}
