//! Bad input never panics the gateway or harms other requests: each case gets a clear OpenAI
//! error while a long stream is in flight, and that stream still completes whole.

mod common;

use std::time::Duration;

use common::{chat_body, sse_data, sse_text};
use serde_json::Value;
use sluice_mock::{MockConfig, mock_text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_bad_request_gets_a_clear_error_while_a_stream_completes() {
    let s = common::setup_with(
        MockConfig {
            chunks: 40,
            chunk_gap: Duration::from_millis(25),
            ..Default::default()
        },
        common::fast_policy(),
        |c| {
            c.server.max_body = 64 * 1024;
            c.server.body_read_timeout = Duration::from_millis(300);
        },
    )
    .await;

    // A 1-second stream that must survive everything below.
    let long = {
        let http = s.http.clone();
        let url = s.url("/v1/chat/completions");
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .json(&chat_body("fast", true))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        })
    };

    let url = s.url("/v1/chat/completions");
    let raw = |body: Vec<u8>| {
        s.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        (
            "malformed JSON",
            raw(b"{\"model\": \"fast\", \"messages\": [".to_vec())
                .await
                .unwrap(),
            400,
            "not valid JSON",
        ),
        ("empty body", raw(Vec::new()).await.unwrap(), 400, "empty"),
        (
            "not an object",
            raw(b"[1,2]".to_vec()).await.unwrap(),
            400,
            "JSON object",
        ),
        (
            "missing messages",
            raw(br#"{"model":"fast"}"#.to_vec()).await.unwrap(),
            400,
            "'messages'",
        ),
        (
            "missing model",
            raw(br#"{"messages":[{"role":"user","content":"x"}]}"#.to_vec())
                .await
                .unwrap(),
            400,
            "'model'",
        ),
        (
            "wrong type",
            raw(br#"{"model":"fast","messages":"hi"}"#.to_vec())
                .await
                .unwrap(),
            400,
            "array",
        ),
        (
            "wrong nested type",
            raw(br#"{"model":"fast","messages":[{"role":5}]}"#.to_vec())
                .await
                .unwrap(),
            400,
            "Invalid request",
        ),
        (
            "bad utf-8",
            raw(
                b"{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"
                    .to_vec(),
            )
            .await
            .unwrap(),
            400,
            "UTF-8",
        ),
        (
            "huge body",
            raw(vec![b' '; 200 * 1024]).await.unwrap(),
            413,
            "larger than",
        ),
        (
            "unknown model",
            raw(serde_json::to_vec(&chat_body("nope", false)).unwrap())
                .await
                .unwrap(),
            404,
            "does not exist",
        ),
        (
            "unknown path",
            s.http.post(s.url("/v1/nothing")).send().await.unwrap(),
            404,
            "Unknown path",
        ),
        (
            "wrong method",
            s.http.get(&url).send().await.unwrap(),
            405,
            "not allowed",
        ),
    ];
    for (name, resp, status, needle) in cases {
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {v}"));
        assert!(message.contains(needle), "{name}: {message}");
        assert!(v["error"]["type"].is_string(), "{name}: {v}");
    }

    // A body that never finishes: the body read timeout answers 408.
    let mut sock = tokio::net::TcpStream::connect(s.gateway.addr())
        .await
        .unwrap();
    sock.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    let body = long.await.unwrap();
    assert_eq!(
        sse_text(&body),
        mock_text(40),
        "the stream in flight is unaffected"
    );
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let s = common::setup_with(MockConfig::default(), common::fast_policy(), |c| {
        c.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut sock = tokio::net::TcpStream::connect(s.gateway.addr())
        .await
        .unwrap();
    sock.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway closed the connection");
    // The gateway still serves others.
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
