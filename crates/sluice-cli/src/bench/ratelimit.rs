//! `sluice bench --scenario ratelimit`: does proactive rate limiting keep a provider's 429s
//! away while still using the whole limit?
//!
//! The mock enforces `--rpm` / `--tpm` itself (a provider's token buckets, 429 beyond them).
//! Each run starts fresh children: the mock with the limits, 1 or 3 `sluice serve` replicas in
//! front of it (3 share their buckets through a `redis-server` child) whose config sets the
//! same limits (`proactive`) or none (`retries_only`, Sluice only retries the 429s), then:
//!
//! 1. **Drain.** A burst of one minute's worth of the binding axis (e.g. 600 requests at
//!    600 rpm) through the gateways empties the buckets that start full, on both sides. Without
//!    it a run would first spend a full bucket and measure nothing.
//! 2. **Load.** An open loop at `--load-factor` (2) × the binding limit for `--duration`
//!    (60 s), round-robin over the replicas; every request has the same `max_tokens`, so its
//!    token cost at the mock (prompt estimate + `max_tokens`) is known in advance.
//! 3. **Read the mock.** Its `/stats` before the load and after the last answer give the
//!    upstream requests and the upstream 429s (`rate_limited`, the limit's own rejections);
//!    read a tenth into the load and at its end, they give the goodput: requests and tokens
//!    admitted per minute of that window, as a share of the limits (also reported from the
//!    start of the load to the last successful answer).
//!
//! Client 429s are expected (the load is twice the limit) and are not failures; transport
//! errors, timeouts, interrupted streams, unfinished requests and wrong content are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Bench, Proc, SETTLE, free_port, note, spawn};
use crate::loadgen::{
    ScanState, StreamScanner, classify_http_error, ms, parse_completion, percentile, round3,
};

/// Flags of the rate-limit scenario.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rate-limit scenario (--scenario ratelimit)")]
pub struct RateLimitArgs {
    /// Length of each run's open-loop load (default 60s; 10s with --quick).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Fewer, shorter runs: non-streaming only, 10 s each unless --duration is given.
    #[arg(long)]
    pub quick: bool,
    /// Requests per minute, set on the mock and (proactive runs) in the gateway config.
    #[arg(long, default_value_t = 600.0)]
    pub limit_rpm: f64,
    /// Tokens per minute, set on the mock and (proactive runs) in the gateway config.
    #[arg(long, default_value_t = 60_000.0)]
    pub limit_tpm: f64,
    /// `max_tokens` of every request (its token cost is the prompt estimate plus this).
    #[arg(long, default_value_t = 50)]
    pub max_tokens: u64,
    /// Offered load as a multiple of the binding limit.
    #[arg(long, default_value_t = 2.0)]
    pub load_factor: f64,
    /// The redis-server executable for the 3-replica runs.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Diagnostic: start the mock with --no-limit-headers (no `x-ratelimit-*` headers, 429s
    /// keep `retry-after`), so the gateway's configured limits act without what it would learn
    /// from those headers. Real providers always send them.
    #[arg(long)]
    pub no_limit_headers: bool,
    /// The gateways' `[rate_limit] max_queue_wait`: how long a request may wait for capacity
    /// before the gateway refuses it with a 429.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_queue_wait: Duration,
}

impl Default for RateLimitArgs {
    fn default() -> Self {
        RateLimitArgs {
            duration: None,
            quick: false,
            limit_rpm: 600.0,
            limit_tpm: 60_000.0,
            max_tokens: 50,
            load_factor: 2.0,
            redis_server: PathBuf::from("redis-server"),
            no_limit_headers: false,
            max_queue_wait: Duration::from_secs(30),
        }
    }
}

/// The scenario's prompt: 28 characters, a mock estimate of 7 tokens.
const PROMPT: &str = "Rate-limit bench: say hello.";
/// Model requested through the gateway: provider `mock` of the generated config, routed as is.
const MODEL: &str = "mock/mock-1";
/// Content chunks per mock answer.
const CHUNKS: usize = 8;
/// The gateway's `[policy] max_retries`.
const MAX_RETRIES: u32 = 5;
/// Requests in flight during the drain burst.
const DRAIN_CONCURRENCY: usize = 32;
/// Per-request bound: queueing, retries and their waits included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Added to the load window to bound a run's wait for its last answers.
const RUN_SLACK: Duration = Duration::from_secs(150);
/// Time allowed for redis-server to answer PING.
const REDIS_READY: Duration = Duration::from_secs(10);

/// Upstream 429s as a share of upstream requests, at most (proactive runs).
pub(super) const TARGET_429_SHARE_PCT: f64 = 0.5;
/// Goodput on the binding axis as a share of the limit, at least (proactive runs).
pub(super) const TARGET_GOODPUT_PCT: f64 = 95.0;

impl RateLimitArgs {
    pub(super) fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("--limit-rpm", self.limit_rpm),
            ("--limit-tpm", self.limit_tpm),
            ("--load-factor", self.load_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        if self.max_tokens == 0 {
            return Err("--max-tokens must be at least 1".into());
        }
        if self.max_queue_wait > Duration::from_secs(3600) {
            return Err("--max-queue-wait must be at most 1h".into());
        }
        if self.duration.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err("--duration must be at least 1s".into());
        }
        if self.cost() as f64 > self.limit_tpm {
            return Err(format!(
                "one request costs {} tokens, more than --limit-tpm {}: nothing could be admitted",
                self.cost(),
                self.limit_tpm
            ));
        }
        Ok(())
    }

    fn duration(&self) -> Duration {
        self.duration.unwrap_or(if self.quick {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(60)
        })
    }

    /// The mock's token cost of one request: its prompt estimate (characters / 4, rounded up)
    /// plus `max_tokens`.
    fn cost(&self) -> u64 {
        (PROMPT.chars().count() as u64).div_ceil(4).max(1) + self.max_tokens
    }

    /// Requests per minute the limits admit (the smaller of both axes), and the binding axis.
    fn admitted_rpm(&self) -> (f64, &'static str) {
        let by_tokens = self.limit_tpm / self.cost() as f64;
        if self.limit_rpm <= by_tokens {
            (self.limit_rpm, "requests")
        } else {
            (by_tokens, "tokens")
        }
    }

    fn runs(&self) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for (replicas, redis) in [(1, false), (3, true)] {
            for stream in [false, true] {
                if stream && self.quick {
                    continue;
                }
                for proactive in [false, true] {
                    runs.push(RunSpec {
                        proactive,
                        replicas,
                        redis,
                        stream,
                    });
                }
            }
        }
        runs
    }
}

/// One run's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunSpec {
    /// The gateway config sets rpm/tpm (else it only retries).
    proactive: bool,
    replicas: usize,
    /// Replicas share their buckets in a redis-server child.
    redis: bool,
    stream: bool,
}

impl RunSpec {
    fn mode(self) -> &'static str {
        if self.proactive {
            "proactive"
        } else {
            "retries_only"
        }
    }

    fn backend(self) -> &'static str {
        if self.redis { "redis" } else { "local" }
    }

    fn label(self) -> String {
        format!(
            "{}, {} replica{} ({}), {}",
            self.mode().replace('_', "-"),
            self.replicas,
            if self.replicas == 1 { "" } else { "s" },
            self.backend(),
            if self.stream {
                "streaming"
            } else {
                "non-streaming"
            }
        )
    }
}

/// The gateway config of one run.
fn gateway_config(spec: RunSpec, args: &RateLimitArgs, mock: &str, redis: Option<&str>) -> String {
    let mut out = String::from("# Written by `sluice bench --scenario ratelimit`.\n[rate_limit]\n");
    match redis {
        Some(url) => {
            out.push_str("backend = \"redis\"\n");
            out.push_str(&format!("redis_url = \"{url}\"\n"));
        }
        None => out.push_str("backend = \"local\"\n"),
    }
    out.push_str(&format!(
        "expected_replicas = {}\nmax_queue_wait = \"{}ms\"\nexpected_output_tokens = 256\n",
        spec.replicas,
        args.max_queue_wait.as_millis()
    ));
    // Retries only means no proactive limiting at all: limits learned from the provider's
    // headers would be proactive limiting too.
    out.push_str(&format!("learn_from_headers = {}\n\n", spec.proactive));
    out.push_str(&format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}/v1\"\n"
    ));
    if spec.proactive {
        out.push_str(&format!(
            "rpm = {}\ntpm = {}\n",
            toml_number(args.limit_rpm),
            toml_number(args.limit_tpm)
        ));
    }
    out.push_str(&format!("\n[policy]\nmax_retries = {MAX_RETRIES}\n"));
    out
}

/// The stderr log of gateway `k` of the run whose config is at `config`.
fn log_path(config: &Path, k: usize) -> PathBuf {
    config.with_extension(format!("gw{k}.log"))
}

/// A float as TOML: integers without a fraction, others as they print.
fn toml_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// What happened to one client request.
#[derive(Debug, Clone)]
struct Outcome {
    ok: bool,
    class: Option<String>,
    status: Option<u16>,
    /// From the scheduled start to the whole answer (or the failure).
    latency: Duration,
    /// `x-sluice-attempts` of the answer.
    attempts: Option<u64>,
    /// When the answer (or the failure) was complete.
    finished: Instant,
    text_len: usize,
    detail: Option<String>,
}

/// Everything a request needs, built once per run.
#[derive(Debug)]
struct Target {
    urls: Vec<reqwest::Url>,
    body: Bytes,
    stream: bool,
}

impl Target {
    fn new(gateways: &[String], stream: bool, max_tokens: u64) -> Result<Target, String> {
        let urls = gateways
            .iter()
            .map(|g| {
                let text = format!("{g}/v1/chat/completions");
                reqwest::Url::parse(&text).map_err(|e| format!("bad URL {text}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "stream": stream,
        });
        Ok(Target {
            urls,
            body: Bytes::from(body.to_string()),
            stream,
        })
    }
}

/// Sends request `i` (to replica `i % replicas`) and reads the whole answer.
async fn send(
    client: reqwest::Client,
    target: Arc<Target>,
    i: usize,
    scheduled: Instant,
) -> Outcome {
    let url = target.urls[i % target.urls.len()].clone();
    let mut out = Outcome {
        ok: false,
        class: None,
        status: None,
        latency: Duration::ZERO,
        attempts: None,
        finished: scheduled,
        text_len: 0,
        detail: None,
    };
    let work = async {
        let resp = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(target.body.clone())
            .send()
            .await
            .map_err(|e| ("transport".to_owned(), e.to_string()))?;
        let status = resp.status();
        out.status = Some(status.as_u16());
        out.attempts = resp
            .headers()
            .get("x-sluice-attempts")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if !status.is_success() || !target.stream {
            let body = resp
                .bytes()
                .await
                .map_err(|e| ("transport".to_owned(), e.to_string()))?;
            if !status.is_success() {
                return Err(classify_http_error(status.as_u16(), &body));
            }
            return parse_completion(&body);
        }
        let mut resp = resp;
        let mut scanner = StreamScanner::new();
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    scanner.push(&bytes);
                }
                Ok(None) => scanner.finish(),
                Err(e) => scanner.fail_read(&e.to_string(), e.is_timeout()),
            }
            match scanner.state() {
                ScanState::Open => {}
                ScanState::Done => return Ok(scanner.text_len()),
                ScanState::Failed { class, detail } => return Err((class.clone(), detail.clone())),
            }
        }
    };
    let result = match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err((
            "timeout".to_owned(),
            format!("no complete answer within {REQUEST_TIMEOUT:?}"),
        )),
    };
    out.finished = Instant::now();
    out.latency = out.finished.saturating_duration_since(scheduled);
    match result {
        Ok(len) => {
            out.ok = true;
            out.text_len = len;
        }
        Err((class, detail)) => {
            out.class = Some(class);
            out.detail = Some(detail);
        }
    }
    out
}

/// Runs `count` requests at `rate` per second (open loop) or, with `rate: None`, as fast as
/// `DRAIN_CONCURRENCY` in flight allow; stops waiting at `bound`.
async fn load(
    client: &reqwest::Client,
    target: &Arc<Target>,
    count: usize,
    rate: Option<f64>,
    start: Instant,
    bound: Duration,
) -> (Vec<Outcome>, usize, Duration) {
    let deadline = start + bound;
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut outcomes = Vec::with_capacity(count);
    let mut next = 0usize;
    loop {
        // Start whatever is due.
        while next < count {
            let at = match rate {
                Some(r) => start + Duration::from_secs_f64(next as f64 / r),
                None if tasks.len() < DRAIN_CONCURRENCY => Instant::now(),
                None => break,
            };
            if at > Instant::now() {
                break;
            }
            tasks.spawn(send(client.clone(), target.clone(), next, at));
            next += 1;
        }
        if next >= count && tasks.is_empty() {
            break;
        }
        let wake = match rate {
            Some(r) if next < count => start + Duration::from_secs_f64(next as f64 / r),
            _ => deadline,
        };
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(o) = joined {
                    outcomes.push(o);
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    let unfinished = count - outcomes.len();
    tasks.abort_all();
    (outcomes, unfinished, start.elapsed())
}

/// The mock's `/stats`.
async fn mock_stats(client: &reqwest::Client, mock: &str) -> Result<Value, String> {
    let url = format!("{mock}/stats");
    let resp = client
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    resp.json::<Value>()
        .await
        .map_err(|e| format!("GET {url}: {e}"))
}

fn counter(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

/// `after - before` of a mock counter.
fn delta(before: &Value, after: &Value, key: &str) -> u64 {
    counter(after, key).saturating_sub(counter(before, key))
}

/// Upstream outcome counts between two snapshots (non-zero only).
fn outcome_delta(before: &Value, after: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Some(map) = after["by_outcome"].as_object() {
        for (k, v) in map {
            let n = v
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(before["by_outcome"][k].as_u64().unwrap_or(0));
            if n > 0 {
                out.insert(k.clone(), n);
            }
        }
    }
    out
}

fn pct(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| round3(part / whole * 100.0))
}

/// Client-side summary of a batch of outcomes.
fn client_summary(outcomes: &[Outcome], planned: usize, unfinished: usize) -> Value {
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples: Vec<String> = Vec::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut attempts = 0u64;
    let mut with_attempts = 0u64;
    for o in outcomes {
        let status = o.status.map_or("none".to_owned(), |s| s.to_string());
        *by_status.entry(status).or_default() += 1;
        if let Some(a) = o.attempts {
            attempts += a;
            with_attempts += 1;
        }
        if o.ok {
            latencies.push(o.latency);
        } else {
            let class = o.class.clone().unwrap_or_else(|| "unknown".into());
            if samples.len() < 5 {
                let s = format!("{class}: {}", o.detail.as_deref().unwrap_or("-"));
                if !samples.contains(&s) {
                    samples.push(s);
                }
            }
            *by_class.entry(class).or_default() += 1;
        }
    }
    if unfinished > 0 {
        by_class.insert("unfinished".into(), unfinished as u64);
    }
    latencies.sort_unstable();
    let succeeded = latencies.len();
    json!({
        "requests": planned,
        "succeeded": succeeded,
        "failed": planned - succeeded,
        "failed_by_class": by_class,
        "by_status": by_status,
        "rate_limited_429": by_status.get("429").copied().unwrap_or(0),
        "failure_samples": samples,
        "attempts_reported": attempts,
        "mean_attempts": (with_attempts > 0).then(|| round3(attempts as f64 / with_attempts as f64)),
        "latency_p50_ms": ms(percentile(&latencies, 50.0)),
        "latency_p99_ms": ms(percentile(&latencies, 99.0)),
        "latency_max_ms": ms(latencies.last().copied().unwrap_or_default()),
    })
}

/// Starts a `sluice` child like [`spawn`], its stderr going to `log` (a gateway logs every
/// retried 429 at `warn`: thousands of lines per run).
fn spawn_logged(
    name: &'static str,
    exe: &Path,
    args: &[String],
    addr: std::net::SocketAddr,
    log: &Path,
) -> Result<Proc, String> {
    let file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let child = Command::new(exe)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the {name} child ({}): {e}", exe.display()))?;
    let pid = child.id();
    Ok(Proc {
        name,
        child,
        pid,
        addr,
    })
}

/// What the gateways logged: lines per level and a few examples of each level.
#[derive(Debug, Default)]
struct GatewayLogs {
    warn: u64,
    error: u64,
    other: u64,
    examples: Vec<String>,
}

impl GatewayLogs {
    fn read(&mut self, path: &Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (counter, level) = if line.contains(" WARN ") {
                (&mut self.warn, "WARN")
            } else if line.contains(" ERROR ") {
                (&mut self.error, "ERROR")
            } else {
                (&mut self.other, "")
            };
            *counter += 1;
            let seen = self.examples.iter().filter(|e| e.contains(level)).count();
            if seen < 2 {
                let mut end = line.len().min(300);
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                self.examples.push(line[..end].to_owned());
            }
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "warn_lines": self.warn,
            "error_lines": self.error,
            "other_lines": self.other,
            "examples": self.examples,
        })
    }
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Fails with a clear message when redis-server cannot be run.
async fn check_redis(path: &Path) -> Result<(), String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match out {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "`{} --version` exited with {status}",
            path.display()
        )),
        Err(e) => Err(format!(
            "cannot run {} ({e}); the 3-replica ratelimit runs need redis-server (scripts/test \
             installs it; or `apt-get install redis-server`, or --redis-server PATH)",
            path.display()
        )),
    }
}

/// Waits until redis answers PING on `addr`.
async fn wait_redis(proc: &mut Proc) -> Result<(), String> {
    let until = Instant::now() + REDIS_READY;
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!(
                "redis-server ({}) exited with {status} before answering PING",
                proc.addr
            ));
        }
        let ping = async {
            let mut s = tokio::net::TcpStream::connect(proc.addr).await.ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).await.ok()?;
            buf[..n].starts_with(b"+PONG").then_some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(500), ping).await {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "redis-server did not answer PING on {} within {REDIS_READY:?}",
                proc.addr
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Bench {
    /// The whole scenario: every run of [`RateLimitArgs::runs`], each with fresh children.
    pub(super) async fn ratelimit(&mut self) -> Result<Value, String> {
        let args = self.args.ratelimit.clone();
        let runs = args.runs();
        if runs.iter().any(|r| r.redis) {
            check_redis(&args.redis_server).await?;
        }
        let (admitted_rpm, binding) = args.admitted_rpm();
        let rate = admitted_rpm * args.load_factor / 60.0;
        let duration = args.duration();
        note(&format!(
            "ratelimit: mock limits {} rpm / {} tpm, {} tokens per request ({} binds: {:.1} \
             requests/min admitted); open loop at {:.2} req/s for {:?} per run, {} runs",
            args.limit_rpm,
            args.limit_tpm,
            args.cost(),
            binding,
            admitted_rpm,
            rate,
            duration,
            runs.len()
        ));
        let mut results = Vec::new();
        for (k, spec) in runs.iter().enumerate() {
            note(&format!(
                "ratelimit run {}/{}: {}",
                k + 1,
                runs.len(),
                spec.label()
            ));
            let result = self.ratelimit_run(*spec, &args, rate, duration).await;
            self.stop_all().await;
            tokio::time::sleep(SETTLE).await;
            let value = match result {
                Ok(v) => v,
                Err(e) => {
                    note(&format!("  failed: {e}"));
                    self.problems
                        .push(format!("ratelimit {}: {e}", spec.label()));
                    json!({"name": spec.label(), "mode": spec.mode(), "replicas": spec.replicas,
                           "backend": spec.backend(), "stream": spec.stream, "error": e})
                }
            };
            results.push(value);
        }
        Ok(json!({
            "limit_rpm": args.limit_rpm,
            "limit_tpm": args.limit_tpm,
            "max_tokens": args.max_tokens,
            "prompt_tokens_estimate": args.cost() - args.max_tokens,
            "tokens_per_request": args.cost(),
            "binding_axis": binding,
            "mock_sends_limit_headers": !args.no_limit_headers,
            "admitted_requests_per_min": round3(admitted_rpm),
            "load_factor": args.load_factor,
            "offered_rps": round3(rate),
            "duration_s": duration.as_secs_f64(),
            "gateway": {
                "max_queue_wait_s": args.max_queue_wait.as_secs_f64(),
                "max_retries": MAX_RETRIES,
                "expected_output_tokens": 256,
            },
            "targets": {
                "upstream_429_share_pct_max": TARGET_429_SHARE_PCT,
                "goodput_pct_min": TARGET_GOODPUT_PCT,
                "applies_to": "proactive runs",
            },
            "runs": results,
        }))
    }

    async fn ratelimit_run(
        &mut self,
        spec: RunSpec,
        args: &RateLimitArgs,
        rate: f64,
        duration: Duration,
    ) -> Result<Value, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the current executable: {e}"))?;

        let redis_url = if spec.redis {
            let addr = free_port()?;
            let port = addr.port().to_string();
            let child = Command::new(&args.redis_server)
                .args([
                    "--port",
                    port.as_str(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", args.redis_server.display()))?;
            let pid = child.id();
            let mut proc = Proc {
                name: "redis",
                child,
                pid,
                addr,
            };
            let ready = wait_redis(&mut proc).await;
            self.procs.push(proc);
            ready?;
            Some(format!("redis://{addr}"))
        } else {
            None
        };

        let mock_addr = free_port()?;
        let mut mock_args: Vec<String> = vec![
            "mock".into(),
            "--listen".into(),
            mock_addr.to_string(),
            "--ttft".into(),
            "0ms".into(),
            "--chunk-gap".into(),
            "0ms".into(),
            "--chunks".into(),
            CHUNKS.to_string(),
            "--rpm".into(),
            args.limit_rpm.to_string(),
            "--tpm".into(),
            args.limit_tpm.to_string(),
            "--log".into(),
            "warn".into(),
        ];
        if args.no_limit_headers {
            mock_args.push("--no-limit-headers".into());
        }
        let mock = spawn("mock", &exe, &mock_args, mock_addr)?;
        let mock = self.wait_ready(mock, "/stats").await?;
        let mock_url = mock.url();
        self.procs.push(mock);

        let config = gateway_config(spec, args, &mock_url, redis_url.as_deref());
        let config_path = std::env::temp_dir().join(format!(
            "sluice-bench-ratelimit-{}-{}.toml",
            std::process::id(),
            mock_addr.port()
        ));
        std::fs::write(&config_path, &config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let result = self
            .ratelimit_measure(spec, args, rate, duration, &exe, &config_path, &mock_url)
            .await;
        // The children are stopped by the caller; their logs are read (if the run got that far)
        // and removed here.
        self.stop_all().await;
        let mut logs = GatewayLogs::default();
        for k in 0..spec.replicas {
            let log = log_path(&config_path, k);
            logs.read(&log);
            let _ = std::fs::remove_file(&log);
        }
        let _ = std::fs::remove_file(&config_path);
        result.map(|mut v| {
            v["gateway_logs"] = logs.to_json();
            v
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn ratelimit_measure(
        &mut self,
        spec: RunSpec,
        args: &RateLimitArgs,
        rate: f64,
        duration: Duration,
        exe: &Path,
        config_path: &Path,
        mock_url: &str,
    ) -> Result<Value, String> {
        let mut gateways = Vec::new();
        for k in 0..spec.replicas {
            let addr = free_port()?;
            let log = log_path(config_path, k);
            let gw_args: Vec<String> = vec![
                "serve".into(),
                "--config".into(),
                config_path.display().to_string(),
                "--listen".into(),
                addr.to_string(),
                "--log".into(),
                "warn".into(),
            ];
            let gw = spawn_logged("gateway", exe, &gw_args, addr, &log)?;
            let gw = self
                .wait_ready(gw, "/healthz")
                .await
                .map_err(|e| format!("{e}; its log ends with:\n{}", log_tail(&log)))?;
            gateways.push(gw.url());
            self.procs.push(gw);
        }
        let target = Arc::new(Target::new(&gateways, spec.stream, args.max_tokens)?);
        let expected_len = sluice_mock::mock_text(CHUNKS).len();

        // 1. Drain the buckets that start full (one minute's worth of the binding axis).
        let (admitted_rpm, _) = args.admitted_rpm();
        let drain = admitted_rpm.floor().max(1.0) as usize;
        let before_drain = mock_stats(&self.client, mock_url).await?;
        let drain_bound = args.max_queue_wait + RUN_SLACK;
        let (drained, drain_unfinished, drain_time) = load(
            &self.client,
            &target,
            drain,
            None,
            Instant::now(),
            drain_bound,
        )
        .await;
        tokio::time::sleep(SETTLE).await;
        let s0 = mock_stats(&self.client, mock_url).await?;
        let drain_ok = drained.iter().filter(|o| o.ok).count();
        note(&format!(
            "  drain: {drain} requests in {:.2}s, {drain_ok} ok; upstream {} requests, {} 429s",
            drain_time.as_secs_f64(),
            delta(&before_drain, &s0, "requests"),
            delta(&before_drain, &s0, "rate_limited"),
        ));

        // 2. The open loop; the mock is read again when the load window closes.
        let count = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
        note(&format!(
            "  load: {count} requests at {rate:.2} req/s over {} replica(s)",
            spec.replicas
        ));
        // Goodput is measured from a tenth into the load: by then what the drain left in the
        // buckets (and what refilled since) is spent, and only the refill rate remains.
        let start = Instant::now() + Duration::from_millis(5);
        let skip = duration / 10;
        let window_client = self.client.clone();
        let window_mock = mock_url.to_owned();
        let window = tokio::spawn(async move {
            tokio::time::sleep_until(start + skip).await;
            let first = mock_stats(&window_client, &window_mock).await;
            let first_at = Instant::now();
            tokio::time::sleep_until(start + duration).await;
            let last = mock_stats(&window_client, &window_mock).await;
            (
                first,
                last,
                Instant::now().saturating_duration_since(first_at),
            )
        });
        let (outcomes, unfinished, elapsed) = load(
            &self.client,
            &target,
            count,
            Some(rate),
            start,
            duration + RUN_SLACK,
        )
        .await;
        let (w0, w1, window_len) = window
            .await
            .map_err(|e| format!("the stats sampler failed: {e}"))?;
        let (w0, w1) = (w0?, w1?);
        let s2 = mock_stats(&self.client, mock_url).await?;

        // 3. Figures.
        let client = client_summary(&outcomes, count, unfinished);
        let wrong_len = outcomes
            .iter()
            .filter(|o| o.ok && o.text_len != expected_len)
            .count();
        if wrong_len > 0 {
            self.problems.push(format!(
                "ratelimit {}: {wrong_len} answers did not carry the expected {expected_len} \
                 bytes of content",
                spec.label()
            ));
        }
        let broken: u64 = client["failed_by_class"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        matches!(
                            k.as_str(),
                            "transport" | "timeout" | "stream_interrupted" | "unfinished"
                        )
                    })
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        if broken > 0 {
            self.problems.push(format!(
                "ratelimit {}: {broken} requests broke (transport, timeout, interrupted or \
                 unfinished): {}",
                spec.label(),
                client["failure_samples"]
            ));
        }
        let up_requests = delta(&s0, &s2, "requests");
        let up_429 = delta(&s0, &s2, "rate_limited");
        let window_min = window_len.as_secs_f64() / 60.0;
        let win_ok = delta(&w0, &w1, "ok");
        let win_tokens = delta(&w0, &w1, "tokens_admitted");
        let req_per_min = win_ok as f64 / window_min;
        let tok_per_min = win_tokens as f64 / window_min;
        let (_, binding) = args.admitted_rpm();
        let binding_pct = match binding {
            "requests" => pct(req_per_min, args.limit_rpm),
            _ => pct(tok_per_min, args.limit_tpm),
        };
        // The whole run: from the start of the load to the last successful answer.
        let last_ok = outcomes
            .iter()
            .filter(|o| o.ok)
            .map(|o| o.finished.saturating_duration_since(start))
            .max()
            .unwrap_or_default();
        let run_min = last_ok.as_secs_f64() / 60.0;
        let run_ok = delta(&s0, &s2, "ok");
        let run_tokens = delta(&s0, &s2, "tokens_admitted");
        let (run_req_per_min, run_tok_per_min) = if run_min > 0.0 {
            (run_ok as f64 / run_min, run_tokens as f64 / run_min)
        } else {
            (0.0, 0.0)
        };
        let run_binding_pct = match binding {
            "requests" => pct(run_req_per_min, args.limit_rpm),
            _ => pct(run_tok_per_min, args.limit_tpm),
        };
        let share = pct(up_429 as f64, up_requests as f64);
        let share_met = share.map(|s| s <= TARGET_429_SHARE_PCT);
        let goodput_met = binding_pct.map(|g| g >= TARGET_GOODPUT_PCT);
        note(&format!(
            "  done in {:.1}s: client {} ok of {} ({} 429s); upstream {} requests, {} 429s \
             ({}%); goodput {:.1} req/min, {:.0} tokens/min ({}% of the {binding} limit; whole \
             run {}%); client p50/p99 {:.0}/{:.0} ms",
            elapsed.as_secs_f64(),
            client["succeeded"],
            count,
            client["rate_limited_429"],
            up_requests,
            up_429,
            share.map_or("-".to_owned(), |s| s.to_string()),
            req_per_min,
            tok_per_min,
            binding_pct.map_or("-".to_owned(), |s| s.to_string()),
            run_binding_pct.map_or("-".to_owned(), |s| s.to_string()),
            client["latency_p50_ms"].as_f64().unwrap_or(0.0),
            client["latency_p99_ms"].as_f64().unwrap_or(0.0),
        ));
        Ok(json!({
            "name": spec.label(),
            "mode": spec.mode(),
            "replicas": spec.replicas,
            "backend": spec.backend(),
            "stream": spec.stream,
            "elapsed_s": round3(elapsed.as_secs_f64()),
            "drain": {
                "requests": drain,
                "succeeded": drain_ok,
                "unfinished": drain_unfinished,
                "elapsed_s": round3(drain_time.as_secs_f64()),
                "upstream_requests": delta(&before_drain, &s0, "requests"),
                "upstream_429": delta(&before_drain, &s0, "rate_limited"),
            },
            "client": client,
            "upstream": {
                "requests": up_requests,
                "ok": delta(&s0, &s2, "ok"),
                "rate_limited_429": up_429,
                "rate_limited_share_pct": share,
                "by_outcome": outcome_delta(&s0, &s2),
                "tokens_admitted": delta(&s0, &s2, "tokens_admitted"),
            },
            "goodput": {
                "window_start_s": round3(skip.as_secs_f64()),
                "window_s": round3(window_len.as_secs_f64()),
                "requests_admitted": win_ok,
                "tokens_admitted": win_tokens,
                "requests_per_min": round3(req_per_min),
                "requests_pct_of_rpm": pct(req_per_min, args.limit_rpm),
                "tokens_per_min": round3(tok_per_min),
                "tokens_pct_of_tpm": pct(tok_per_min, args.limit_tpm),
                "binding_axis": binding,
                "binding_pct_of_limit": binding_pct,
                "whole_run": {
                    "until_last_success_s": round3(last_ok.as_secs_f64()),
                    "requests_admitted": run_ok,
                    "tokens_admitted": run_tokens,
                    "requests_per_min": round3(run_req_per_min),
                    "tokens_per_min": round3(run_tok_per_min),
                    "binding_pct_of_limit": run_binding_pct,
                },
            },
            "targets": {
                "upstream_429_share_met": share_met,
                "goodput_met": goodput_met,
                "applies": spec.proactive,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_binding_axis_and_runs() {
        let args = RateLimitArgs::default();
        assert!(args.validate().is_ok());
        // 28 characters: 7 tokens, plus 50.
        assert_eq!(args.cost(), 57);
        assert_eq!(args.admitted_rpm(), (600.0, "requests"));
        let tokens_bind = RateLimitArgs {
            limit_tpm: 5700.0,
            ..RateLimitArgs::default()
        };
        assert_eq!(tokens_bind.admitted_rpm(), (100.0, "tokens"));
        assert_eq!(args.duration(), Duration::from_secs(60));
        let runs = args.runs();
        assert_eq!(runs.len(), 8);
        assert_eq!(runs.iter().filter(|r| r.proactive).count(), 4);
        assert!(runs.iter().all(|r| r.redis == (r.replicas == 3)));
        let quick = RateLimitArgs {
            quick: true,
            ..RateLimitArgs::default()
        };
        assert_eq!(quick.duration(), Duration::from_secs(10));
        assert_eq!(quick.runs().len(), 4);
        assert!(quick.runs().iter().all(|r| !r.stream));
        let bad = RateLimitArgs {
            limit_tpm: 10.0,
            ..RateLimitArgs::default()
        };
        assert!(bad.validate().unwrap_err().contains("57 tokens"));
        let bad = RateLimitArgs {
            load_factor: 0.0,
            ..RateLimitArgs::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn gateway_configs() {
        let args = RateLimitArgs::default();
        let spec = RunSpec {
            proactive: true,
            replicas: 3,
            redis: true,
            stream: false,
        };
        let text = gateway_config(
            spec,
            &args,
            "http://127.0.0.1:9",
            Some("redis://127.0.0.1:7"),
        );
        let v: toml_probe::Table = toml_probe::parse(&text);
        assert_eq!(v.get("rate_limit.backend"), Some("\"redis\""));
        assert_eq!(
            v.get("rate_limit.redis_url"),
            Some("\"redis://127.0.0.1:7\"")
        );
        assert_eq!(v.get("rate_limit.expected_replicas"), Some("3"));
        assert_eq!(v.get("rate_limit.max_queue_wait"), Some("\"30000ms\""));
        assert_eq!(
            v.get("providers.base_url"),
            Some("\"http://127.0.0.1:9/v1\"")
        );
        assert_eq!(v.get("providers.rpm"), Some("600"));
        assert_eq!(v.get("providers.tpm"), Some("60000"));
        assert_eq!(v.get("policy.max_retries"), Some("5"));
        assert_eq!(spec.label(), "proactive, 3 replicas (redis), non-streaming");

        let retries = RunSpec {
            proactive: false,
            replicas: 1,
            redis: false,
            stream: true,
        };
        let text = gateway_config(retries, &args, "http://127.0.0.1:9", None);
        let v = toml_probe::parse(&text);
        assert_eq!(v.get("rate_limit.backend"), Some("\"local\""));
        assert_eq!(v.get("rate_limit.redis_url"), None);
        assert_eq!(v.get("providers.rpm"), None);
        assert_eq!(v.get("providers.tpm"), None);
        assert_eq!(
            retries.label(),
            "retries-only, 1 replica (local), streaming"
        );
        assert_eq!(toml_number(0.5), "0.5");
    }

    /// Just enough TOML reading for the generated configs: `[table]` / `[[array]]` headers and
    /// `key = value` lines, flattened to "table.key" (the gateway's own parser checks the real
    /// thing in the end-to-end run).
    mod toml_probe {
        use std::collections::BTreeMap;

        pub(super) struct Table(BTreeMap<String, String>);

        impl Table {
            pub(super) fn get(&self, key: &str) -> Option<&str> {
                self.0.get(key).map(String::as_str)
            }
        }

        pub(super) fn parse(text: &str) -> Table {
            let mut out = BTreeMap::new();
            let mut table = String::new();
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(name) = line.strip_prefix('[') {
                    table = name.trim_matches(|c| c == '[' || c == ']').to_owned();
                    continue;
                }
                let (k, v) = line.split_once('=').expect("key = value");
                out.insert(format!("{table}.{}", k.trim()), v.trim().to_owned());
            }
            Table(out)
        }
    }

    #[test]
    fn deltas_and_summaries() {
        let before =
            json!({"requests": 10, "rate_limited": 1, "by_outcome": {"ok": 9, "429_limit": 1}});
        let after =
            json!({"requests": 30, "rate_limited": 4, "by_outcome": {"ok": 26, "429_limit": 4}});
        assert_eq!(delta(&before, &after, "requests"), 20);
        assert_eq!(delta(&before, &after, "missing"), 0);
        assert_eq!(
            outcome_delta(&before, &after),
            BTreeMap::from([("429_limit".to_owned(), 3), ("ok".to_owned(), 17)])
        );
        assert_eq!(pct(1.0, 200.0), Some(0.5));
        assert_eq!(pct(1.0, 0.0), None);
        let ok = Outcome {
            ok: true,
            class: None,
            status: Some(200),
            latency: Duration::from_millis(5),
            attempts: Some(2),
            finished: Instant::now(),
            text_len: 3,
            detail: None,
        };
        let limited = Outcome {
            ok: false,
            class: Some("rate_limited".into()),
            status: Some(429),
            attempts: Some(6),
            detail: Some("HTTP 429: slow down".into()),
            ..ok.clone()
        };
        let s = client_summary(&[ok.clone(), limited, ok], 4, 1);
        assert_eq!(s["succeeded"], 2);
        assert_eq!(s["failed"], 2);
        assert_eq!(s["rate_limited_429"], 1);
        assert_eq!(s["failed_by_class"]["rate_limited"], 1);
        assert_eq!(s["failed_by_class"]["unfinished"], 1);
        assert_eq!(s["attempts_reported"], 10);
        assert_eq!(s["mean_attempts"], json!(3.333));
        assert_eq!(s["latency_p50_ms"], json!(5.0));
    }
}
