//! `sluice count-tokens` as a user runs it: chat requests and text, from a file or stdin,
//! table and JSON output, and the truncation preview.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_remove("RUST_LOG");
    cmd
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = sluice()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The OpenAI cookbook's six-message example (129 tokens on gpt-4, 124 on gpt-4o).
fn cookbook_request(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
        {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
        {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
    ]})
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-count-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn counts_a_chat_request_file_with_the_requests_model() {
    let path = temp_file("cookbook.json", &cookbook_request("gpt-4").to_string());
    let out = sluice()
        .args(["count-tokens", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    let report = json_out(&out);
    assert_eq!(report["tokens"], 129);
    assert_eq!(report["encoding"], "cl100k_base");
    assert_eq!(report["exact"], true);
    assert_eq!(report["model"], "gpt-4");
    assert_eq!(report["kind"], "chat");
    assert_eq!(report["context_window"], 8_192);
    assert_eq!(report["max_output"], 4_096);
    assert_eq!(report["budget"], 8_192 - 4_096 - 100);
    assert_eq!(report["fits"], true);
    assert_eq!(report["would_drop"]["messages"], 0);
}

#[test]
fn model_flag_overrides_and_stdin_works() {
    let out = run_with_stdin(
        &["count-tokens", "--model", "gpt-4o", "--json", "-"],
        &cookbook_request("gpt-4").to_string(),
    );
    let report = json_out(&out);
    assert_eq!(report["tokens"], 124);
    assert_eq!(report["encoding"], "o200k_base");
    assert_eq!(report["model"], "gpt-4o");
}

#[test]
fn text_mode_counts_without_framing() {
    let out = run_with_stdin(
        &["count-tokens", "--model", "gpt-4o", "--text", "--json"],
        "Hello, world!",
    );
    let report = json_out(&out);
    assert_eq!(report["tokens"], 4);
    assert_eq!(report["kind"], "text");
    // A chat request counted as text is just its JSON text.
    let request = cookbook_request("gpt-4").to_string();
    let out = run_with_stdin(
        &["count-tokens", "-m", "gpt-4", "--text", "--json"],
        &request,
    );
    let report = json_out(&out);
    assert_eq!(report["kind"], "text");
    assert_ne!(report["tokens"], 129);
    // Input that is not a chat request falls back to text.
    let out = run_with_stdin(&["count-tokens", "-m", "gpt-4o", "--json"], "{\"a\": 1}");
    assert_eq!(json_out(&out)["kind"], "text");
}

#[test]
fn anthropic_models_get_a_marked_estimate() {
    let request = cookbook_request("claude-sonnet-4-5").to_string();
    let out = run_with_stdin(&["count-tokens", "--json"], &request);
    let report = json_out(&out);
    assert_eq!(report["exact"], false);
    assert_eq!(report["estimate_margin_percent"], 25);
    assert_eq!(report["tokens"], (129_u64 * 125).div_ceil(100));
    assert_eq!(report["context_window"], 200_000);
    let out = run_with_stdin(&["count-tokens"], &request);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("estimate (anthropic: cl100k_base +25%)"),
        "{table}"
    );
}

#[test]
fn shows_what_truncation_would_drop() {
    let mut messages = vec![json!({"role": "system", "content": "be brief"})];
    for i in 0..12 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": "word ".repeat(800)}));
    }
    let request = json!({"model": "gpt-4", "max_tokens": 1000, "messages": messages}).to_string();
    let out = run_with_stdin(&["count-tokens", "--json"], &request);
    let report = json_out(&out);
    assert_eq!(report["reserved_output"], 1_000);
    let budget = report["budget"].as_u64().unwrap();
    assert_eq!(budget, 8_192 - 1_000 - 100);
    assert_eq!(report["fits"], false);
    let drop = &report["would_drop"];
    assert!(drop["messages"].as_u64().unwrap() > 0);
    assert!(drop["tokens_after"].as_u64().unwrap() <= budget);
    assert_eq!(
        drop["indices"][0], 1,
        "the oldest non-system message goes first"
    );
    assert_eq!(
        drop["tokens"].as_u64().unwrap() + drop["tokens_after"].as_u64().unwrap(),
        report["tokens"].as_u64().unwrap()
    );

    let out = run_with_stdin(&["count-tokens"], &request);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("context window  8,192"), "{table}");
    assert!(table.contains("would drop"), "{table}");
}

#[test]
fn a_too_large_last_message_is_reported() {
    let request = json!({"model": "gpt-4", "messages": [
        {"role": "user", "content": "word ".repeat(5_000)}
    ]})
    .to_string();
    let out = run_with_stdin(&["count-tokens", "--json"], &request);
    let report = json_out(&out);
    let shortened = report["would_drop"]["shortened"].as_array().unwrap();
    assert_eq!(shortened.len(), 1);
    assert_eq!(shortened[0]["index"], 0);
    assert!(report["would_drop"]["tokens_after"].as_u64().unwrap() <= 3_996);
}

#[test]
fn unknown_models_count_but_cannot_preview_truncation() {
    let out = run_with_stdin(&["count-tokens", "-m", "mock-1", "--json"], "hello");
    let report = json_out(&out);
    assert_eq!(report["exact"], false);
    assert!(report["context_window"].is_null());
    assert!(report["would_drop"].is_null());
}

#[test]
fn missing_model_and_missing_file_are_usage_errors() {
    let out = run_with_stdin(&["count-tokens"], "just text");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
    let out = sluice()
        .args(["count-tokens", "-m", "gpt-4o", "/nonexistent/file.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
