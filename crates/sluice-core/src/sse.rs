//! Incremental Server-Sent Events parser (the WHATWG HTML "event stream" interpretation).
//!
//! Network reads split a stream anywhere: inside a line, inside a UTF-8 character, between the
//! CR and LF of one line ending. [`SseParser`] takes bytes as they arrive ([`SseParser::push`])
//! and hands out complete items ([`SseParser::next_item`]), and the items are the same however
//! the bytes were split. That property is what lets the gateway treat streaming and
//! non-streaming calls alike and is tested with arbitrary chunkings.
//!
//! Rules, following the spec:
//! - Lines end with CRLF, LF or CR. A CR that ends one push and an LF that starts the next are
//!   one line ending, not two.
//! - One UTF-8 byte-order mark at the very start of the stream is skipped.
//! - `field:value` with one optional space after the colon removed; a line without a colon is a
//!   field with an empty value. Unknown fields are ignored.
//! - `data` lines accumulate, joined with `\n`; `event` sets the event's type; `id` sets the
//!   last event ID (ignored if it contains NUL), which persists across events as the spec
//!   says; `retry` with ASCII digits only sets the reconnection time.
//! - A line starting with `:` is a comment, surfaced immediately as [`SseItem::Comment`]
//!   (keep-alives matter to idle timers).
//! - A blank line dispatches the event if at least one `data` line was seen; either way the
//!   data and type are reset. An `event:` without `data` is therefore never dispatched.
//!
//! Deliberate departures from a browser's `EventSource`: a line that is not valid UTF-8 is
//! reported as [`SseError::InvalidUtf8`] instead of being decoded with replacement characters
//! (an LLM provider sending broken UTF-8 is a fault worth seeing), and a line longer than a
//! limit is reported as [`SseError::LineTooLong`] and dropped, so a hostile or broken upstream
//! cannot make the parser buffer without bound. After either error parsing continues with the
//! next line. `retry` has no reconnection logic to feed here, so its latest value rides on the
//! next dispatched event.
//!
//! Cost: input is appended to one byte buffer; a scan cursor remembers how far the search for
//! a line ending got, so each byte is examined once no matter how the input is chunked, and
//! consumed bytes are dropped in bulk when they make up most of the buffer (amortised O(1)).

use std::mem;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` when absent or empty (the spec's default type `message`).
    pub event: Option<String>,
    /// All `data:` lines of the event joined with `\n`.
    pub data: String,
    /// The last event ID at dispatch time (set by this or an earlier event); `None` if never
    /// set or reset with an empty `id:`.
    pub id: Option<String>,
    /// The latest `retry:` value (milliseconds) seen since the previous dispatched event.
    pub retry: Option<u64>,
}

/// One thing the parser recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A complete event.
    Event(SseEvent),
    /// A comment line, without the leading `:` and one optional space.
    Comment(String),
}

/// A line the parser had to drop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// The line's bytes are not UTF-8.
    #[error("SSE line is not valid UTF-8")]
    InvalidUtf8,
    /// The line exceeds the configured limit; the rest of it is skipped.
    #[error("SSE line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in bytes, excluding the line ending.
        limit: usize,
    },
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Consumed bytes are only moved out once there are at least this many, so small streams
/// never pay for compaction.
const COMPACT_MIN: usize = 8 * 1024;

/// The incremental parser; see the module docs.
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Start of the first unconsumed line.
    start: usize,
    /// Everything in `start..scan` is known to contain no line ending.
    scan: usize,
    max_line: usize,
    /// The stream's first bytes have not yet been checked for a BOM.
    bom_pending: bool,
    /// The last line ended with a CR at the very end of the buffer; an LF arriving next
    /// belongs to that line ending.
    skip_lf: bool,
    /// Inside a too-long line: drop bytes up to the next line ending.
    discarding: bool,
    pending: Pending,
}

/// The event being assembled, plus the stream state that outlives events.
#[derive(Debug, Default)]
struct Pending {
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    retry: Option<u64>,
}

impl Pending {
    fn line(&mut self, line: &str) -> Option<SseItem> {
        if line.is_empty() {
            return self.dispatch();
        }
        if let Some(comment) = line.strip_prefix(':') {
            let text = comment.strip_prefix(' ').unwrap_or(comment);
            return Some(SseItem::Comment(text.to_owned()));
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "id" if !value.contains('\0') => {
                self.last_id = Some(value.to_owned()).filter(|v| !v.is_empty());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // More digits than a u64 holds is not a usable delay; ignore like junk.
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseItem> {
        let event = self.event.take();
        if !mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseItem::Event(SseEvent {
            event,
            data: mem::take(&mut self.data),
            id: self.last_id.clone(),
            retry: self.retry.take(),
        }))
    }
}

impl SseParser {
    /// Default line limit: far above any real provider event, low enough to bound memory.
    pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

    /// A parser with [`Self::DEFAULT_MAX_LINE`].
    pub fn new() -> Self {
        Self::with_max_line(Self::DEFAULT_MAX_LINE)
    }

    /// A parser that rejects lines longer than `limit` bytes (excluding the line ending).
    pub fn with_max_line(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            max_line: limit,
            bom_pending: true,
            skip_lf: false,
            discarding: false,
            pending: Pending::default(),
        }
    }

    /// Appends input. Nothing is parsed until [`Self::next_item`] is called.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scan = 0;
        } else if self.start >= COMPACT_MIN && self.start * 2 >= self.buf.len() {
            // Moving the live tail costs at most as much as the bytes already consumed, so
            // compaction is amortised O(1) per byte.
            self.buf.drain(..self.start);
            self.scan -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete item, or `None` when more input is needed.
    pub fn next_item(&mut self) -> Option<Result<SseItem, SseError>> {
        loop {
            if self.discarding {
                let eol = self.find_line_end();
                let Some(eol) = eol else {
                    self.start = self.buf.len();
                    self.scan = self.start;
                    return None;
                };
                self.consume_through(eol);
                self.discarding = false;
                continue;
            }
            if self.bom_pending {
                let head = &self.buf[self.start..];
                if head.len() < BOM.len() && BOM.starts_with(head) {
                    // Could still become a BOM (or is empty): wait for more bytes.
                    return None;
                }
                if head.starts_with(BOM) {
                    self.start += BOM.len();
                    self.scan = self.scan.max(self.start);
                }
                self.bom_pending = false;
            }
            if self.skip_lf {
                match self.buf.get(self.start) {
                    None => return None,
                    Some(b'\n') => {
                        self.start += 1;
                        self.scan = self.scan.max(self.start);
                    }
                    Some(_) => {}
                }
                self.skip_lf = false;
            }
            let Some(eol) = self.find_line_end() else {
                if self.scan - self.start > self.max_line {
                    self.discarding = true;
                    self.start = self.scan;
                    return Some(Err(SseError::LineTooLong {
                        limit: self.max_line,
                    }));
                }
                return None;
            };
            let line_start = self.start;
            self.consume_through(eol);
            if eol - line_start > self.max_line {
                return Some(Err(SseError::LineTooLong {
                    limit: self.max_line,
                }));
            }
            let Ok(line) = std::str::from_utf8(&self.buf[line_start..eol]) else {
                return Some(Err(SseError::InvalidUtf8));
            };
            if let Some(item) = self.pending.line(line) {
                return Some(Ok(item));
            }
        }
    }

    /// Call at the end of input, repeatedly, until it returns `None`.
    ///
    /// It first yields any item still parseable from complete lines (exactly like
    /// [`Self::next_item`]). Then, as the spec requires, it discards whatever is left: an
    /// unterminated last line and an event that was never closed by a blank line are *not*
    /// dispatched, because a stream cut mid-event must not look like a complete event. Finally
    /// the parser is reset, ready for a new stream.
    pub fn finish(&mut self) -> Option<Result<SseItem, SseError>> {
        if let Some(item) = self.next_item() {
            return Some(item);
        }
        *self = Self::with_max_line(self.max_line);
        None
    }

    /// Input bytes pushed but not yet consumed as complete lines (the event being assembled
    /// is not counted).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Absolute index of the next CR or LF at or after `scan`; advances `scan` past the bytes
    /// searched so they are never searched again.
    fn find_line_end(&mut self) -> Option<usize> {
        match self.buf[self.scan..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            Some(i) => Some(self.scan + i),
            None => {
                self.scan = self.buf.len();
                None
            }
        }
    }

    /// Moves past the line ending at `eol`, remembering a CR that may pair with a later LF.
    fn consume_through(&mut self, eol: usize) {
        let mut next = eol + 1;
        if self.buf[eol] == b'\r' {
            match self.buf.get(next) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                None => self.skip_lf = true,
            }
        }
        self.start = next;
        self.scan = next;
    }
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RandomSource, SplitMix64};
    use proptest::prelude::*;

    fn drain(parser: &mut SseParser, out: &mut Vec<Result<SseItem, SseError>>) {
        while let Some(item) = parser.next_item() {
            out.push(item);
        }
    }

    fn finish(parser: &mut SseParser, out: &mut Vec<Result<SseItem, SseError>>) {
        while let Some(item) = parser.finish() {
            out.push(item);
        }
    }

    fn parse_chunks<'a>(
        max_line: usize,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<SseItem, SseError>> {
        let mut parser = SseParser::with_max_line(max_line);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            drain(&mut parser, &mut out);
        }
        finish(&mut parser, &mut out);
        out
    }

    fn parse_all(input: &[u8]) -> Vec<Result<SseItem, SseError>> {
        parse_chunks(SseParser::DEFAULT_MAX_LINE, [input])
    }

    fn parse_bytewise(input: &[u8]) -> Vec<Result<SseItem, SseError>> {
        parse_chunks(SseParser::DEFAULT_MAX_LINE, input.chunks(1))
    }

    /// Splits `input` at random points; chunk sizes from 1 to 16 bytes, sometimes larger.
    fn random_chunks(input: &[u8], seed: u64) -> Vec<&[u8]> {
        let mut rng = SplitMix64::seeded(seed);
        let mut chunks = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let u = rng.next_f64();
            let size = if u < 0.3 {
                1
            } else if u < 0.9 {
                1 + (rng.next_f64() * 16.0) as usize
            } else {
                1 + (rng.next_f64() * 256.0) as usize
            };
            let (head, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(head);
            rest = tail;
        }
        chunks
    }

    fn event(name: Option<&str>, data: &str) -> Result<SseItem, SseError> {
        Ok(SseItem::Event(SseEvent {
            event: name.map(str::to_owned),
            data: data.to_owned(),
            ..SseEvent::default()
        }))
    }

    fn comment(text: &str) -> Result<SseItem, SseError> {
        Ok(SseItem::Comment(text.to_owned()))
    }

    /// Checks whole, byte-by-byte and randomly chunked parsing all give `want`.
    fn assert_parses(input: &[u8], want: &[Result<SseItem, SseError>]) {
        assert_eq!(parse_all(input), want, "whole");
        assert_eq!(parse_bytewise(input), want, "byte by byte");
        for seed in 0..8 {
            let chunks = random_chunks(input, seed);
            assert_eq!(
                parse_chunks(SseParser::DEFAULT_MAX_LINE, chunks),
                want,
                "seed {seed}"
            );
        }
    }

    const OPENAI_STREAM: &str = r#"data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"r4N7vQ2m"}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}

data: [DONE]

"#;

    const ANTHROPIC_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

event: message_stop
data: {"type":"message_stop"}

"#;

    #[test]
    fn openai_reference_stream() {
        let want: Vec<_> = OPENAI_STREAM
            .split("\n\n")
            .filter(|block| !block.is_empty())
            .map(|block| event(None, block.strip_prefix("data: ").unwrap()))
            .collect();
        assert_eq!(want.len(), 5);
        assert_eq!(want[4], event(None, "[DONE]"));
        assert_parses(OPENAI_STREAM.as_bytes(), &want);
        // Every data payload but the terminator is JSON.
        for item in &want[..4] {
            let Ok(SseItem::Event(e)) = item else {
                unreachable!()
            };
            serde_json::from_str::<serde_json::Value>(&e.data).unwrap();
        }
    }

    #[test]
    fn anthropic_reference_stream() {
        let want: Vec<_> = ANTHROPIC_STREAM
            .split("\n\n")
            .filter(|block| !block.is_empty())
            .map(|block| {
                let (name, data) = block.split_once('\n').unwrap();
                event(
                    name.strip_prefix("event: "),
                    data.strip_prefix("data: ").unwrap(),
                )
            })
            .collect();
        assert_eq!(want.len(), 8);
        assert_eq!(want[2], event(Some("ping"), r#"{"type": "ping"}"#));
        assert_parses(ANTHROPIC_STREAM.as_bytes(), &want);
        // The same stream with CRLF and with bare CR line endings.
        assert_parses(ANTHROPIC_STREAM.replace('\n', "\r\n").as_bytes(), &want);
        assert_parses(ANTHROPIC_STREAM.replace('\n', "\r").as_bytes(), &want);
    }

    #[test]
    fn anthropic_mid_stream_error_event() {
        let input = "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let want = [event(
            Some("error"),
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        )];
        assert_parses(input.as_bytes(), &want);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        assert_parses(
            b"data: a\ndata: b\ndata:\ndata: c\n\n",
            &[event(None, "a\nb\n\nc")],
        );
        assert_parses(b"data\n\n", &[event(None, "")]);
        assert_parses(b"data:\ndata:\n\n", &[event(None, "\n")]);
    }

    #[test]
    fn all_line_endings_and_mixtures() {
        let want = [event(Some("x"), "1"), event(None, "2")];
        for input in [
            "event: x\ndata: 1\n\ndata: 2\n\n",
            "event: x\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
            "event: x\rdata: 1\r\rdata: 2\r\r",
            "event: x\r\ndata: 1\r\rdata: 2\n\r\n",
        ] {
            assert_parses(input.as_bytes(), &want);
        }
    }

    #[test]
    fn cr_at_the_end_of_a_push_pairs_with_lf_at_the_start_of_the_next() {
        let out = parse_chunks(
            SseParser::DEFAULT_MAX_LINE,
            [&b"data: a\r"[..], b"\n", b"\r", b"\n"],
        );
        assert_eq!(out, [event(None, "a")]);
        // Without the pairing the LF would be a blank line dispatching too early.
        let out = parse_chunks(
            SseParser::DEFAULT_MAX_LINE,
            [&b"data: a\r"[..], b"\ndata: b\n\n"],
        );
        assert_eq!(out, [event(None, "a\nb")]);
    }

    #[test]
    fn comments_are_emitted_immediately() {
        let mut parser = SseParser::new();
        parser.push(b": keep-alive\n");
        assert_eq!(parser.next_item(), Some(comment("keep-alive")));
        assert_eq!(parser.next_item(), None);
        assert_parses(
            b":ping\n:  two spaces\n:\ndata: x\n: inside\n\n",
            &[
                comment("ping"),
                comment(" two spaces"),
                comment(""),
                comment("inside"),
                event(None, "x"),
            ],
        );
    }

    #[test]
    fn only_one_space_after_the_colon_is_removed() {
        assert_parses(b"data:x\n\n", &[event(None, "x")]);
        assert_parses(b"data:  x \n\n", &[event(None, " x ")]);
        assert_parses(b"data: a:b: c\n\n", &[event(None, "a:b: c")]);
        assert_parses(b"event:ping\ndata:{}\n\n", &[event(Some("ping"), "{}")]);
    }

    #[test]
    fn leading_bom_is_skipped_once() {
        assert_parses(b"\xEF\xBB\xBFdata: x\n\n", &[event(None, "x")]);
        // Only at the start of the stream; a second BOM makes the field name unknown.
        assert_parses(
            b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n",
            &[event(None, "y")],
        );
        // A partial BOM at the end of the input is just an incomplete line.
        assert_parses(b"\xEF\xBB", &[]);
        assert_parses(b"\xEF\n", &[Err(SseError::InvalidUtf8)]);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert_parses(b"event: ping\n\ndata: x\n\n", &[event(None, "x")]);
        assert_parses(b"\n\n\n", &[]);
        assert_parses(b"id: 1\n\n", &[]);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_parses(
            b"foo: bar\ndata: x\nDATA: y\nevent\n\n",
            &[event(None, "x")],
        );
    }

    #[test]
    fn id_persists_and_retry_rides_on_the_next_event() {
        let input = b"id: 1\ndata: a\n\ndata: b\n\nid\nretry: 3000\ndata: c\n\nid: x\0y\nretry: 12ms\ndata: d\n\n";
        let e = |data: &str, id: Option<&str>, retry: Option<u64>| {
            Ok(SseItem::Event(SseEvent {
                event: None,
                data: data.into(),
                id: id.map(str::to_owned),
                retry,
            }))
        };
        assert_parses(
            input,
            &[
                e("a", Some("1"), None),
                e("b", Some("1"), None),
                e("c", None, Some(3000)),
                // The NUL-containing id is ignored; the id stays reset; the bad retry is ignored.
                e("d", None, None),
            ],
        );
        assert_parses(b"retry: 5\n\ndata: x\n\n", &[e("x", None, Some(5))]);
        assert_parses(
            b"retry: 99999999999999999999999\ndata: x\n\n",
            &[e("x", None, None)],
        );
    }

    #[test]
    fn done_sentinel_is_plain_data() {
        assert_parses(b"data: [DONE]\n\n", &[event(None, "[DONE]")]);
    }

    #[test]
    fn incomplete_event_is_discarded_at_finish() {
        let mut parser = SseParser::new();
        parser.push(b"data: complete\n\ndata: cut off\n");
        assert_eq!(parser.next_item(), Some(event(None, "complete")));
        assert_eq!(parser.next_item(), None);
        assert_eq!(parser.finish(), None);
        assert_eq!(parser.buffered_len(), 0);
        // Reset: usable for a new stream.
        parser.push(b"data: new\n\n");
        assert_eq!(parser.next_item(), Some(event(None, "new")));

        // finish still yields complete lines the caller has not drained yet.
        let mut parser = SseParser::new();
        parser.push(b": hi\ndata: x\n\ndata: partial");
        assert_eq!(parser.finish(), Some(comment("hi")));
        assert_eq!(parser.finish(), Some(event(None, "x")));
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn invalid_utf8_drops_only_that_line() {
        assert_parses(
            b"data: a\ndata: \xff\xfe\ndata: b\n\n",
            &[Err(SseError::InvalidUtf8), event(None, "a\nb")],
        );
        // A character split across pushes is fine.
        let out = parse_chunks(
            SseParser::DEFAULT_MAX_LINE,
            [&b"data: \xc3"[..], b"\xa9\n\n"],
        );
        assert_eq!(out, [event(None, "é")]);
    }

    #[test]
    fn long_lines_are_rejected_and_skipped() {
        let limit = 8;
        let input = b"data: ok\ndata: far too long\ndata: b\n\n";
        let want = [Err(SseError::LineTooLong { limit }), event(None, "ok\nb")];
        assert_eq!(parse_chunks(limit, [&input[..]]), want);
        assert_eq!(parse_chunks(limit, input.chunks(1)), want);
        assert_eq!(parse_chunks(limit, input.chunks(3)), want);
        // The error arrives before the line ends, so memory stays bounded.
        let mut parser = SseParser::with_max_line(limit);
        parser.push(b"data: 0123456789");
        assert_eq!(
            parser.next_item(),
            Some(Err(SseError::LineTooLong { limit }))
        );
        parser.push(&[b'x'; 1000]);
        assert_eq!(parser.next_item(), None);
        assert_eq!(parser.buffered_len(), 0);
        parser.push(b"\r\ndata: y\n\n");
        assert_eq!(parser.next_item(), Some(event(None, "y")));
        assert_eq!(
            SseError::LineTooLong { limit }.to_string(),
            "SSE line longer than 8 bytes"
        );
    }

    #[test]
    fn buffered_len_counts_unconsumed_input() {
        let mut parser = SseParser::new();
        assert_eq!(parser.buffered_len(), 0);
        parser.push(b"data: x");
        assert_eq!(parser.next_item(), None);
        assert_eq!(parser.buffered_len(), 7);
        parser.push(b"\n\ndata");
        assert_eq!(parser.next_item(), Some(event(None, "x")));
        assert_eq!(parser.buffered_len(), 4);
    }

    #[test]
    fn one_byte_pushes_of_a_huge_line_stay_linear() {
        // Quadratic rescanning would take minutes here; the cursor keeps it instant.
        let mut input = b"data: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 1_000_000));
        input.extend_from_slice(b"\n\n");
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for byte in input.chunks(1) {
            parser.push(byte);
            drain(&mut parser, &mut out);
        }
        assert_eq!(out.len(), 1);
        let Ok(SseItem::Event(e)) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(e.data.len(), 1_000_000);
    }

    #[test]
    fn many_small_events_compact_the_buffer() {
        let mut parser = SseParser::new();
        // A partial line is always left behind, so the buffer is never simply cleared and
        // only compaction keeps it small.
        parser.push(b"da");
        for i in 0..10_000 {
            parser.push(format!("ta: {i}\n\nda").as_bytes());
            assert_eq!(parser.next_item(), Some(event(None, &i.to_string())));
            assert_eq!(parser.next_item(), None);
            assert_eq!(parser.buffered_len(), 2);
            assert!(
                parser.buf.len() < 2 * COMPACT_MIN + 64,
                "{}",
                parser.buf.len()
            );
        }
    }

    // ---- property tests --------------------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Block {
        Comment(String),
        Event {
            name: Option<String>,
            id: Option<String>,
            retry: Option<u32>,
            data: Vec<String>,
        },
    }

    fn block() -> impl Strategy<Value = Block> {
        let line = "[^\r\n]{0,20}";
        prop_oneof![
            line.prop_map(Block::Comment),
            (
                proptest::option::of("[a-z_]{1,12}"),
                proptest::option::of("[a-z0-9]{0,6}"),
                proptest::option::of(any::<u32>()),
                proptest::collection::vec(line, 1..4),
            )
                .prop_map(|(name, id, retry, data)| Block::Event {
                    name,
                    id,
                    retry,
                    data
                }),
        ]
    }

    /// Serialises `blocks` with line endings and spacing chosen by `seed`, and returns the
    /// items a correct parser must produce.
    fn serialize(
        blocks: &[Block],
        bom: bool,
        seed: u64,
    ) -> (Vec<u8>, Vec<Result<SseItem, SseError>>) {
        let mut rng = SplitMix64::seeded(seed);
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(BOM);
        }
        let mut previous_ending = "";
        let mut emit_line = |out: &mut Vec<u8>, line: String, rng: &mut SplitMix64| {
            let mut ending = ["\n", "\r", "\r\n"][(rng.next_f64() * 3.0) as usize];
            // "\r" followed by an empty "\n"-terminated line would read as one CRLF.
            if previous_ending == "\r" && line.is_empty() && ending == "\n" {
                ending = "\r\n";
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(ending.as_bytes());
            previous_ending = ending;
        };
        let field = |name: &str, value: &str, rng: &mut SplitMix64| {
            if value.starts_with(' ') || rng.next_f64() < 0.5 {
                format!("{name}: {value}")
            } else {
                format!("{name}:{value}")
            }
        };
        let mut want = Vec::new();
        let mut last_id = None;
        for block in blocks {
            match block {
                Block::Comment(text) => {
                    let line = field("", text, &mut rng);
                    emit_line(&mut out, line, &mut rng);
                    want.push(comment(text));
                }
                Block::Event {
                    name,
                    id,
                    retry,
                    data,
                } => {
                    if let Some(name) = name {
                        emit_line(&mut out, field("event", name, &mut rng), &mut rng);
                    }
                    if let Some(id) = id {
                        emit_line(&mut out, field("id", id, &mut rng), &mut rng);
                        last_id = Some(id.clone()).filter(|id| !id.is_empty());
                    }
                    if let Some(retry) = retry {
                        emit_line(
                            &mut out,
                            field("retry", &retry.to_string(), &mut rng),
                            &mut rng,
                        );
                    }
                    if rng.next_f64() < 0.2 {
                        emit_line(&mut out, field("unknown", "ignored", &mut rng), &mut rng);
                    }
                    for line in data {
                        emit_line(&mut out, field("data", line, &mut rng), &mut rng);
                    }
                    emit_line(&mut out, String::new(), &mut rng);
                    want.push(Ok(SseItem::Event(SseEvent {
                        event: name.clone(),
                        data: data.join("\n"),
                        id: last_id.clone(),
                        retry: retry.map(u64::from),
                    })));
                }
            }
        }
        (out, want)
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_items(
            blocks in proptest::collection::vec(block(), 0..12),
            bom in any::<bool>(),
            seed in any::<u64>(),
            chunk_seed in any::<u64>(),
        ) {
            let (bytes, want) = serialize(&blocks, bom, seed);
            let whole = parse_all(&bytes);
            prop_assert_eq!(&whole, &want);
            prop_assert_eq!(&parse_chunks(SseParser::DEFAULT_MAX_LINE, random_chunks(&bytes, chunk_seed)), &want);
            prop_assert_eq!(&parse_bytewise(&bytes), &want);
        }

        #[test]
        fn arbitrary_bytes_parse_the_same_whole_and_chunked(
            bytes in proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'\n'),
                    Just(b'\r'),
                    Just(b':'),
                    Just(b'a'),
                    Just(0xEF),
                    Just(0xBB),
                    Just(0xBF),
                ],
                0..200,
            ),
            data_prefix in any::<bool>(),
            max_line in 0usize..24,
            chunk_seed in any::<u64>(),
        ) {
            let mut input = if data_prefix { b"data:".to_vec() } else { Vec::new() };
            input.extend_from_slice(&bytes);
            let whole = parse_chunks(max_line, [&input[..]]);
            prop_assert_eq!(&parse_chunks(max_line, random_chunks(&input, chunk_seed)), &whole);
            prop_assert_eq!(&parse_chunks(max_line, input.chunks(1)), &whole);
        }
    }
}
