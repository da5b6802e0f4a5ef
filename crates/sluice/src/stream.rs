//! Reading an SSE response: [`EventReader`] (shared by the pre-commit and post-commit phases)
//! and [`ChatStream`] (what the caller holds after commit).
//!
//! The same reader runs before and after the commit point; only the timeout passed to it and
//! the consequence of a failure differ. Before commit a failure is an ordinary attempt failure
//! (the executor retries or falls back); after commit it ends the stream with one
//! [`StreamInterrupted`] item, and nothing is replayed.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sluice_core::{CallEvent, Deadline, ErrorClass, Observer, SseItem, SseParser};
use sluice_providers::{ChatChunk, StreamDecoder, StreamEvent, UpstreamError, Usage};
use std::time::Duration;
use tokio::time::Instant;

use crate::error::{Interruption, StreamInterrupted};

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Why reading the next event failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Nothing arrived before the given instant.
    TimedOut,
    /// The body failed (reset, cut with a broken chunk, ...).
    Body(reqwest::Error),
    /// The bytes were not a valid SSE frame or event.
    Malformed(UpstreamError),
}

/// Turns a response body into canonical stream events.
pub(crate) struct EventReader {
    body: BodyStream,
    parser: SseParser,
    decoder: Box<dyn StreamDecoder>,
    queue: VecDeque<StreamEvent>,
    body_done: bool,
}

impl fmt::Debug for EventReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReader")
            .field("queued", &self.queue.len())
            .field("body_done", &self.body_done)
            .finish_non_exhaustive()
    }
}

impl EventReader {
    pub(crate) fn new(response: reqwest::Response, decoder: Box<dyn StreamDecoder>) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            decoder,
            queue: VecDeque::new(),
            body_done: false,
        }
    }

    /// The next event, or `Ok(None)` when the body ended. Fails with `TimedOut` if no event is
    /// complete by `until`; SSE comments (keep-alives) are consumed but never count as an
    /// event, so they cannot keep a dead stream alive.
    pub(crate) async fn next(&mut self, until: Instant) -> Result<Option<StreamEvent>, ReadError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            while let Some(item) = self.parser.next_item() {
                match item {
                    Ok(SseItem::Event(event)) => self
                        .decoder
                        .decode(event, &mut self.queue)
                        .map_err(ReadError::Malformed)?,
                    Ok(SseItem::Comment(_)) => {}
                    Err(e) => {
                        return Err(ReadError::Malformed(UpstreamError::new(
                            ErrorClass::Transport,
                            format!("malformed SSE: {e}"),
                        )));
                    }
                }
                if !self.queue.is_empty() {
                    break;
                }
            }
            if !self.queue.is_empty() {
                continue;
            }
            if self.body_done {
                return Ok(None);
            }
            match tokio::time::timeout_at(until, self.body.next()).await {
                Err(_) => return Err(ReadError::TimedOut),
                Ok(Some(Ok(bytes))) => self.parser.push(&bytes),
                Ok(Some(Err(e))) => return Err(ReadError::Body(e)),
                Ok(None) => {
                    self.body_done = true;
                    if let Some(Ok(SseItem::Event(event))) = self.parser.finish() {
                        self.decoder
                            .decode(event, &mut self.queue)
                            .map_err(ReadError::Malformed)?;
                    }
                }
            }
        }
    }
}

/// A committed stream of chunks in OpenAI's `chat.completion.chunk` shape.
///
/// Yields the held-back preamble and the first content chunk first, then each upstream event as
/// it arrives. Ends with `None` after the provider's end marker, or with exactly one
/// `Err(StreamInterrupted)` when the stream broke after commit. Dropping it closes the upstream
/// connection at once.
pub struct ChatStream {
    inner: Pin<Box<dyn Stream<Item = Result<ChatChunk, StreamInterrupted>> + Send>>,
    info: crate::CallInfo,
    usage: Arc<parking_lot::Mutex<Option<Usage>>>,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// `provider/model` that is answering.
    pub fn target(&self) -> &Arc<str> {
        &self.info.target
    }

    /// Attempts the call made, this one included.
    pub fn attempts(&self) -> u32 {
        self.info.attempts
    }

    /// Which target answered, after how many attempts, and where the time to first token went.
    pub fn info(&self) -> &crate::CallInfo {
        &self.info
    }

    /// The provider's usage totals, once the final usage chunk has been read.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.lock().clone()
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, StreamInterrupted>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Everything the post-commit phase needs.
pub(crate) struct Committed {
    pub(crate) info: crate::CallInfo,
    pub(crate) reservation: Option<crate::limiter::Reservations>,
    pub(crate) reader: EventReader,
    pub(crate) held: VecDeque<ChatChunk>,
    pub(crate) finished: bool,
    pub(crate) target: Arc<str>,
    pub(crate) idle_timeout: Duration,
    pub(crate) deadline: Deadline,
    pub(crate) forward_usage: bool,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) health: Arc<parking_lot::Mutex<crate::health::TargetHealth>>,
}

struct LiveState {
    c: Committed,
    delivered: u64,
    usage: Arc<parking_lot::Mutex<Option<Usage>>>,
}

impl ChatStream {
    pub(crate) fn start(committed: Committed) -> Self {
        let usage = Arc::new(parking_lot::Mutex::new(None));
        let info = committed.info.clone();
        let state = LiveState {
            c: committed,
            delivered: 0,
            usage: usage.clone(),
        };
        let inner = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next_item().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(state))),
                Ok(None) => None,
                Err(interrupted) => {
                    // A stream that breaks after commit says the target is unhealthy, exactly
                    // like a failed attempt would.
                    let transition = state
                        .c
                        .health
                        .lock()
                        .breaker
                        .on_failure(ErrorClass::StreamInterrupted, Instant::now());
                    if let Some(t) = transition {
                        state.c.observer.on_event(&CallEvent::BreakerTransition {
                            target: state.c.target.clone(),
                            from: t.from,
                            to: t.to,
                        });
                    }
                    state.c.observer.on_event(&CallEvent::StreamInterrupted {
                        target: state.c.target.clone(),
                        cause: interrupted
                            .upstream_class
                            .unwrap_or(ErrorClass::StreamInterrupted),
                    });
                    tracing::error!(
                        target: "sluice::stream",
                        upstream = %state.c.target,
                        kind = interrupted.kind.metric_label(),
                        delivered = interrupted.delivered,
                        "stream interrupted after commit: {}",
                        interrupted.message
                    );
                    Some((Err(interrupted), None))
                }
            }
        });
        Self {
            inner: Box::pin(inner),
            info,
            usage,
        }
    }
}

impl LiveState {
    async fn next_item(&mut self) -> Result<Option<ChatChunk>, StreamInterrupted> {
        loop {
            if let Some(chunk) = self.c.held.pop_front() {
                if let Some(chunk) = self.filter(chunk) {
                    return Ok(Some(chunk));
                }
                continue;
            }
            if self.c.finished {
                self.reconcile().await;
                return Ok(None);
            }
            let now = Instant::now();
            let until = self.c.deadline.cap(now, self.c.idle_timeout);
            match self.c.reader.next(until).await {
                Ok(Some(StreamEvent::Chunk(chunk))) => {
                    if let Some(chunk) = self.filter(chunk) {
                        return Ok(Some(chunk));
                    }
                }
                Ok(Some(StreamEvent::Done)) => {
                    self.c.finished = true;
                    self.reconcile().await;
                    return Ok(None);
                }
                Ok(Some(StreamEvent::Error(e))) => {
                    return Err(self.interrupted(
                        Interruption::InBandError,
                        e.message,
                        Some(e.class),
                    ));
                }
                Ok(None) => {
                    return Err(self.interrupted(
                        Interruption::Cut,
                        "the upstream closed the stream before its end marker".into(),
                        None,
                    ));
                }
                Err(ReadError::TimedOut) => {
                    let (kind, message) = if self.c.deadline.is_expired(Instant::now()) {
                        (
                            Interruption::DeadlineExceeded,
                            "the call's deadline expired".to_owned(),
                        )
                    } else {
                        (
                            Interruption::Stalled,
                            format!(
                                "no stream event for {:.3}s (idle_timeout)",
                                self.c.idle_timeout.as_secs_f64()
                            ),
                        )
                    };
                    return Err(self.interrupted(kind, message, None));
                }
                Err(ReadError::Body(e)) => {
                    let e = sluice_providers::transport_error(e);
                    return Err(self.interrupted(Interruption::Cut, e.message, None));
                }
                Err(ReadError::Malformed(e)) => {
                    return Err(self.interrupted(Interruption::MalformedFrame, e.message, None));
                }
            }
        }
    }

    /// Corrects the rate limiter by the stream's final usage (once). Without a usage chunk the
    /// estimate stays spent, the safe side.
    async fn reconcile(&mut self) {
        if let Some(r) = self.c.reservation.take() {
            let usage = self.usage.lock().as_ref().map(|u| u.total_tokens as f64);
            if let Some(total) = usage {
                r.reconcile(total).await;
            }
        }
    }

    /// Records usage and content; drops the usage chunk when the caller did not ask for it.
    fn filter(&mut self, chunk: ChatChunk) -> Option<ChatChunk> {
        if let Some(usage) = &chunk.usage {
            *self.usage.lock() = Some(usage.clone());
        }
        if chunk.is_usage_only() && !self.c.forward_usage {
            return None;
        }
        if chunk.has_content() {
            self.delivered += 1;
        }
        Some(chunk)
    }

    fn interrupted(
        &self,
        kind: Interruption,
        message: String,
        upstream_class: Option<ErrorClass>,
    ) -> StreamInterrupted {
        StreamInterrupted {
            kind,
            message,
            upstream_class,
            target: self.c.target.clone(),
            delivered: self.delivered,
        }
    }
}
