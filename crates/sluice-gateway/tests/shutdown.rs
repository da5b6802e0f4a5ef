//! Graceful shutdown: the listener closes, in-flight streams finish within the drain timeout,
//! and a stream still running when it ends gets a terminal error event, never a silent cut.

mod common;

use std::time::Duration;

use common::{chat_body, sse_data, sse_text};
use sluice_mock::{MockConfig, mock_text};

fn long_streams(chunks: usize) -> MockConfig {
    MockConfig {
        chunks,
        chunk_gap: Duration::from_millis(20),
        ..Default::default()
    }
}

#[tokio::test]
async fn in_flight_streams_finish_during_the_drain() {
    let s = common::setup_with(long_streams(25), common::fast_policy(), |c| {
        c.server.drain_timeout = Duration::from_secs(10);
    })
    .await;
    let mut resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .json(&chat_body("fast", true))
        .send()
        .await
        .unwrap();
    let mut body = String::from_utf8(resp.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let addr = s.gateway.addr();
    let common::Setup { gateway, mock, .. } = s;
    let shutdown = tokio::spawn(gateway.shutdown());
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(sse_text(&body), mock_text(25));
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
    shutdown.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
    drop(mock);
}

#[tokio::test]
async fn streams_outliving_the_drain_end_with_an_error_event() {
    let s = common::setup_with(long_streams(10_000), common::fast_policy(), |c| {
        c.server.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let mut resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .json(&chat_body("fast", true))
        .send()
        .await
        .unwrap();
    let mut body = String::from_utf8(resp.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let common::Setup { gateway, mock, .. } = s;
    let shutdown = tokio::spawn(gateway.shutdown());
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let data = sse_data(&body);
    assert!(
        !data.iter().any(|d| d == "[DONE]"),
        "not presented as complete"
    );
    let last: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "gateway_shutdown", "{last}");
    shutdown.await.unwrap().unwrap();
    drop(mock);
}
