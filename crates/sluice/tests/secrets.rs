//! API keys never reach logs or errors (invariant 8), whatever the call does: retries, a final
//! failure, an interrupted stream.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{client, collect, mock, policy, request};
use parking_lot::Mutex;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_key_never_appears_in_logs_or_errors() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = mock().await;
    let mut errors = Vec::new();
    for (i, script) in ["429,503,ok", "401", "503*10", "cut:2"]
        .into_iter()
        .enumerate()
    {
        let (c, _) = client(&mock, script, &format!("s{i}"), policy(), 1);
        if let Err(e) = c.chat(request()).await {
            errors.push(format!("{e} {e:?}"));
        }
        match c.chat_stream(request()).await {
            Ok(s) => {
                if let (_, Some(e), _) = collect(s).await {
                    errors.push(format!("{e} {e:?}"));
                }
            }
            Err(e) => errors.push(format!("{e} {e:?}")),
        }
        errors.push(format!("{c:?}"));
    }
    let logs = String::from_utf8(captured.0.lock().clone()).unwrap();
    assert!(logs.contains("retrying in"), "the capture works");
    assert!(errors.len() > 4);
    for text in errors.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains("sk-test-key"), "the key leaked: {text}");
    }
}
