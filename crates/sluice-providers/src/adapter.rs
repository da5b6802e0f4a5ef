//! The provider seam: what a provider must implement, and the configured [`Endpoint`].

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use sluice_core::SseEvent;

use crate::{ApiKey, ChatChunk, ChatRequest, ChatResponse, UpstreamError};

/// A provider's wire protocol. Implementations are stateless; per-stream state lives in the
/// [`StreamDecoder`] they create.
pub trait Adapter: Send + Sync + Debug {
    /// The config `kind` of this adapter (`openai`).
    fn kind(&self) -> &'static str;

    /// Builds the HTTP request for `req`, whose `model` is already the provider's model name.
    /// `stream` says whether to ask for SSE.
    fn build(
        &self,
        http: &reqwest::Client,
        endpoint: &Endpoint,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, UpstreamError>;

    /// Parses a successful non-streaming body into the canonical response.
    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, UpstreamError>;

    /// Turns an error status, its headers and body into a classified error.
    fn parse_error(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> UpstreamError;

    /// A decoder for one SSE response.
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;
}

/// One canonical stream event decoded from the provider's SSE.
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk in OpenAI's `chat.completion.chunk` shape.
    Chunk(ChatChunk),
    /// The provider's end-of-stream marker (`[DONE]`); the answer is complete.
    Done,
    /// An in-band error event (HTTP status was 200), classified.
    Error(UpstreamError),
}

/// Decodes one SSE response, event by event.
pub trait StreamDecoder: Send + Debug {
    /// Decodes `event`, appending zero or more canonical events to `out`. A frame that cannot
    /// be decoded is an error of class `transport` (malformed frame).
    fn decode(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), UpstreamError>;
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Unique name (`openai`), the first half of a target name `openai/gpt-4o-mini`.
    pub name: Arc<str>,
    /// Base URL up to and including the API version (`https://api.openai.com/v1`).
    pub base_url: String,
    /// The provider's key, if it needs one.
    pub api_key: Option<ApiKey>,
    /// Headers added to every request (organization, project, test fault scripts, ...).
    pub headers: HeaderMap,
    /// The wire protocol.
    pub adapter: Arc<dyn Adapter>,
}

impl Endpoint {
    /// `base_url` joined with `path`, without doubling the slash.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }
}
