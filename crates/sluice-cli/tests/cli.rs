//! The `sluice` binary as a user runs it: `check`, `chat` against the mock, and `serve`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_mock::{MockConfig, MockServer, mock_text};

fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env_remove("RUST_LOG")
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_BASE_URL");
    cmd
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[test]
fn check_accepts_the_minimal_example() {
    let out = sluice()
        .args(["check", "--config"])
        .arg(example("minimal.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 providers, 1 models)"));
}

#[test]
fn check_reports_every_problem_with_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[policy]\nbase_delay = \"2s\"\nmax_delay = \"1s\"\n\n[[models]]\nname = \"m\"\ntargets = [\"nowhere/x\"]\n",
    )
    .unwrap();
    let out = sluice()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:3:")) && err.contains("policy.max_delay"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:7:")) && err.contains("models[0].targets[0]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_retries_through_faults_and_prints_the_answer() {
    let mock = MockServer::start(MockConfig {
        p_429: 0.5,
        seed: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let url = mock.base_url();
    let out = tokio::task::spawn_blocking(move || {
        sluice()
            .args([
                "chat",
                "--base-url",
                &url,
                "--model",
                "mock-1",
                "--stream",
                "--base-delay",
                "1ms",
                "--max-delay",
                "2ms",
                "--seed",
                "1",
                "hello",
            ])
            .env("OPENAI_API_KEY", "sk-cli-secret")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim_end(), mock_text(8).trim_end());
    assert!(
        mock.stats().requests > 1,
        "the seeded faults forced at least one retry"
    );
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert!(!stderr.contains("sk-cli-secret") && !stdout.contains("sk-cli-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_exits_non_zero_with_the_classified_error() {
    let mock = MockServer::start(MockConfig {
        p_quota: 1.0,
        ..Default::default()
    })
    .await
    .unwrap();
    let url = mock.base_url();
    let out = tokio::task::spawn_blocking(move || {
        sluice()
            .args(["chat", "--base-url", &url, "--model", "m", "hi"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quota_exhausted after 1 attempt"),
        "{stderr}"
    );
    assert_eq!(mock.stats().requests, 1);
}

#[test]
fn serve_without_config_starts_the_embedded_default_and_prints_how_to_call_it() {
    let mut child = sluice()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("Sluice gateway listening on http://127.0.0.1:"),
        "{first}"
    );
    assert!(first.contains("embedded default"), "{first}");
    assert!(
        second.contains("curl") && second.contains("mock/mock-1"),
        "{second}"
    );
    let addr = first
        .trim_start_matches("Sluice gateway listening on http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let body = r#"{"model":"mock/mock-1","messages":[{"role":"user","content":"hi"}]}"#;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer: serde_json::Value = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(answer["choices"][0]["message"]["content"], mock_text(8));
    child.kill().unwrap();
    child.wait().unwrap();
}
