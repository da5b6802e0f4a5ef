//! `sluice bench`: measures what the gateway adds — latency, throughput, memory — against the
//! mock, by running the same load directly at the mock and through the gateway.
//!
//! Processes: this one (the load generator, [`crate::loadgen`]), one `sluice mock` answering
//! instantly and one `sluice serve --upstream <mock>` in front of it; the memory scenario adds a
//! second mock with long, slow streams and a second gateway in front of that one. All are
//! children of the current executable on loopback ports picked by binding port 0; they are
//! killed when the run ends or fails. See BENCHMARKS.md for the method and the caveats.
//!
//! The rate-limit scenario ([`ratelimit`]) starts its own children per run: a mock enforcing
//! `--rpm` / `--tpm`, 1 or 3 gateways configured with the same limits (or none) and, for 3, a
//! `redis-server` they share.

mod ratelimit;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::loadgen::{self, LoadReport, LoadSpec, ms, round3};

/// Flags of `sluice bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Requests per measured run of the latency and throughput scenarios.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Throughput scenario: requests in flight (closed loop).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Latency scenario: requests per second on a fixed timetable (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Memory scenario: concurrent long streams through the gateway (opened over the first
    /// quarter of a stream's length).
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Content chunks per answer of the instant mock (latency and throughput scenarios).
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,
    /// Memory scenario: content chunks per long stream.
    #[arg(long, default_value_t = 40)]
    pub stream_chunks: usize,
    /// Memory scenario: gap between two chunks of a long stream.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub stream_gap: Duration,
    /// Unmeasured requests sent before each measured run (same rate or concurrency), to open
    /// connections and warm caches.
    #[arg(long, default_value_t = 1000)]
    pub warmup: usize,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Scenarios to run (comma-separated): `latency` = open-loop latency, non-streaming then
    /// streaming; `streams` = only its streaming half; `throughput` = closed-loop req/s;
    /// `memory` = gateway RSS under --streams concurrent long streams; `all` = those four;
    /// `ratelimit` = provider 429s and goodput at twice a mock-enforced rate limit (not part
    /// of `all`: 9-13 minutes, about 2 with --quick).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,
    /// Extra arguments for every `sluice serve` child, split on whitespace
    /// (e.g. "--config gateway.toml").
    #[arg(long, allow_hyphen_values = true, value_name = "ARGS")]
    pub extra_gateway_args: Option<String>,
    /// Harness self-test: use the mock itself as the "gateway" (no `sluice serve` is started).
    #[arg(long, hide = true)]
    pub mock_as_gateway: bool,
    #[command(flatten)]
    pub ratelimit: ratelimit::RateLimitArgs,
}

/// A scenario of `sluice bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    All,
    Latency,
    Streams,
    Throughput,
    Memory,
    Ratelimit,
}

/// Exit codes: 0 everything ran and every request succeeded (targets missed are reported, not
/// failures); 1 some request failed or a check did not hold; 2 bad flags or a child process
/// did not start.
const EXIT_REQUESTS_FAILED: u8 = 1;
const EXIT_SETUP: u8 = 2;

/// Time allowed for a child to answer its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to every run's expected duration to bound it.
const SLACK: Duration = Duration::from_secs(30);
/// RSS sampling period of the memory scenario.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Pause between runs, so one run's connection teardown does not land in the next.
const SETTLE: Duration = Duration::from_millis(300);

const MODEL: &str = "mock-1";
const PROMPT: &str = "Benchmark: say something.";

/// Writes one line to stderr (progress and the human summary; stdout carries only the JSON).
fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Runs `sluice bench`.
pub async fn run(args: BenchArgs) -> ExitCode {
    if let Err(e) = validate(&args) {
        note(&format!("sluice bench: {e}"));
        return ExitCode::from(EXIT_SETUP);
    }
    let mut bench = Bench::new(args);
    let outcome = bench.run_all().await;
    bench.shutdown().await;
    let scenarios = match outcome {
        Ok(s) => s,
        Err(e) => {
            note(&format!("sluice bench: {e}"));
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let report = bench.report(scenarios);
    let text = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".to_owned());
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
    if let Some(path) = &bench.args.out
        && let Err(e) = std::fs::write(path, format!("{text}\n"))
    {
        note(&format!(
            "sluice bench: cannot write {}: {e}",
            path.display()
        ));
        return ExitCode::from(EXIT_SETUP);
    }
    bench.print_summary(&report);
    if bench.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        note("sluice bench: FAILED:");
        for p in &bench.problems {
            note(&format!("  - {p}"));
        }
        ExitCode::from(EXIT_REQUESTS_FAILED)
    }
}

fn validate(args: &BenchArgs) -> Result<(), String> {
    if args.requests == 0 {
        return Err("--requests must be at least 1".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be a positive number".into());
    }
    if args.streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    if args.chunks == 0 || args.stream_chunks == 0 {
        return Err("--chunks and --stream-chunks must be at least 1".into());
    }
    if args.scenario.contains(&Scenario::Ratelimit) {
        args.ratelimit.validate()?;
        if args.mock_as_gateway {
            return Err("--mock-as-gateway does not apply to the ratelimit scenario".into());
        }
    }
    Ok(())
}

/// A child `sluice` process serving HTTP on `addr`.
struct Proc {
    name: &'static str,
    child: Child,
    pid: Option<u32>,
    addr: SocketAddr,
}

impl Proc {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Bench {
    args: BenchArgs,
    client: reqwest::Client,
    procs: Vec<Proc>,
    problems: Vec<String>,
    started: Instant,
    machine: Value,
}

impl Bench {
    fn new(args: BenchArgs) -> Self {
        let conns = args.streams.max(args.concurrency).max(64) + 64;
        Bench {
            client: loadgen::http_client(conns),
            args,
            procs: Vec::new(),
            problems: Vec::new(),
            started: Instant::now(),
            machine: machine(),
        }
    }

    fn wants(&self, s: Scenario) -> bool {
        let list = &self.args.scenario;
        (list.contains(&Scenario::All) && s != Scenario::Ratelimit)
            || list.contains(&s)
            || (s == Scenario::Streams && list.contains(&Scenario::Latency))
    }

    async fn run_all(&mut self) -> Result<BTreeMap<&'static str, Value>, String> {
        if cfg!(debug_assertions) {
            note("warning: this is a debug build; figures are not representative (use --release)");
        }
        check_fd_limit(self.args.streams);
        let mut scenarios = BTreeMap::new();
        let need_instant = [Scenario::Latency, Scenario::Streams, Scenario::Throughput]
            .into_iter()
            .any(|s| self.wants(s));
        if need_instant {
            let (direct, gateway) = self
                .start_pair("instant", self.args.chunks, Duration::ZERO)
                .await?;
            let mut latency = serde_json::Map::new();
            if self.wants(Scenario::Latency) {
                latency.insert(
                    "non_streaming".into(),
                    self.latency(&direct, &gateway, false).await,
                );
            }
            if self.wants(Scenario::Streams) {
                latency.insert(
                    "streaming".into(),
                    self.latency(&direct, &gateway, true).await,
                );
            }
            if !latency.is_empty() {
                scenarios.insert("latency", Value::Object(latency));
            }
            if self.wants(Scenario::Throughput) {
                let value = self.throughput(&direct, &gateway).await;
                scenarios.insert("throughput", value);
            }
            self.stop_all().await;
        }
        if self.wants(Scenario::Memory) {
            let (direct, gateway) = self
                .start_pair("long-stream", self.args.stream_chunks, self.args.stream_gap)
                .await?;
            let value = self.memory(&direct, &gateway).await;
            scenarios.insert("memory", value);
            self.stop_all().await;
        }
        if self.wants(Scenario::Ratelimit) {
            let value = self.ratelimit().await?;
            scenarios.insert("ratelimit", value);
        }
        Ok(scenarios)
    }

    /// Starts a mock (no first-token delay, `chunks` chunks `gap` apart) and a gateway in front
    /// of it; returns (direct base URL, gateway base URL), both ending in `/v1`.
    async fn start_pair(
        &mut self,
        label: &str,
        chunks: usize,
        gap: Duration,
    ) -> Result<(String, String), String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the current executable: {e}"))?;
        let mock_addr = free_port()?;
        let args: Vec<String> = vec![
            "mock".into(),
            "--listen".into(),
            mock_addr.to_string(),
            "--ttft".into(),
            "0ms".into(),
            "--chunk-gap".into(),
            format!("{}us", gap.as_micros()),
            "--chunks".into(),
            chunks.to_string(),
            "--log".into(),
            "warn".into(),
        ];
        note(&format!("starting {label} mock on {mock_addr}"));
        let mock = spawn("mock", &exe, &args, mock_addr)?;
        let mock = self.wait_ready(mock, "/stats").await?;
        let direct = format!("{}/v1", mock.url());
        self.procs.push(mock);
        if self.args.mock_as_gateway {
            note("harness self-test: the mock stands in for the gateway");
            return Ok((direct.clone(), direct));
        }
        let gw_addr = free_port()?;
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--upstream".into(),
            direct.clone(),
            "--listen".into(),
            gw_addr.to_string(),
            "--log".into(),
            "warn".into(),
        ];
        if let Some(extra) = &self.args.extra_gateway_args {
            args.extend(extra.split_whitespace().map(str::to_owned));
        }
        note(&format!(
            "starting gateway on {gw_addr} (upstream {direct})"
        ));
        let gateway = spawn("gateway", &exe, &args, gw_addr)?;
        let gateway = self.wait_ready(gateway, "/healthz").await?;
        let gateway_url = format!("{}/v1", gateway.url());
        self.procs.push(gateway);
        Ok((direct, gateway_url))
    }

    /// Polls `path` until it answers 200; fails if the child exits or 10 s pass.
    async fn wait_ready(&self, mut proc: Proc, path: &str) -> Result<Proc, String> {
        let url = format!("{}{path}", proc.url());
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!(
                    "the {} child ({}) exited with {status} before becoming ready (its stderr is above)",
                    proc.name, proc.addr
                ));
            }
            let probe = self
                .client
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if let Ok(resp) = probe
                && resp.status().is_success()
            {
                return Ok(proc);
            }
            if Instant::now() >= until {
                let _ = proc.child.kill().await;
                return Err(format!(
                    "the {} child did not answer GET {url} with 200 within {READY_TIMEOUT:?}",
                    proc.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills every child and waits for it.
    async fn stop_all(&mut self) {
        for mut p in self.procs.drain(..) {
            let _ = p.child.kill().await;
        }
    }

    async fn shutdown(&mut self) {
        self.stop_all().await;
    }

    fn pid_of(&self, base_url: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| base_url.starts_with(&p.url()))
            .and_then(|p| p.pid)
    }

    /// Warm-up (unmeasured) then the measured run; records problems.
    async fn measure(&mut self, label: &str, spec: &LoadSpec, expected_len: usize) -> LoadReport {
        if self.args.warmup > 0 {
            let warm = LoadSpec {
                requests: self.args.warmup,
                max_duration: Some(expected_duration(spec, self.args.warmup)),
                ..spec.clone()
            };
            let report = loadgen::run_load(&self.client, &warm, None).await;
            if report.failed > 0 {
                self.problems.push(format!(
                    "{label} (warm-up): {} of {} requests failed {:?}; e.g. {:?}",
                    report.failed, report.requests, report.failed_by_class, report.failure_samples
                ));
            }
            tokio::time::sleep(SETTLE).await;
        }
        let total = spec.requests;
        note(&format!(
            "{label}: {total} requests{}",
            match spec.rate {
                Some(r) => format!(" at {r} req/s (open loop)"),
                None => format!(", {} in flight (closed loop)", spec.concurrency),
            }
        ));
        let tty = std::io::stderr().is_terminal();
        let show = |done: usize, total: usize| {
            if tty {
                let _ = write!(std::io::stderr().lock(), "\r  {done}/{total}   ");
            }
        };
        let report = loadgen::run_load(&self.client, spec, Some(&show)).await;
        if tty {
            let _ = write!(std::io::stderr().lock(), "\r");
        }
        note(&format!(
            "  done in {:.2}s: {} ok, p50 {:.3} ms, p99 {:.3} ms{}",
            report.elapsed.as_secs_f64(),
            report.succeeded,
            ms(report.latency_p50),
            ms(report.latency_p99),
            if report.failed > 0 {
                format!(", {} FAILED {:?}", report.failed, report.failed_by_class)
            } else {
                String::new()
            }
        ));
        if report.failed > 0 {
            self.problems.push(format!(
                "{label}: {} of {} requests failed {:?}; e.g. {:?}",
                report.failed, report.requests, report.failed_by_class, report.failure_samples
            ));
        }
        let wrong = report
            .outcomes
            .iter()
            .filter(|o| o.ok && o.text_len != expected_len)
            .count();
        if wrong > 0 {
            self.problems.push(format!(
                "{label}: {wrong} answers did not carry the expected {expected_len} bytes of content"
            ));
        }
        tokio::time::sleep(SETTLE).await;
        report
    }

    fn base_spec(&self, base_url: &str, stream: bool) -> LoadSpec {
        LoadSpec {
            base_url: base_url.to_owned(),
            model: MODEL.to_owned(),
            requests: self.args.requests,
            concurrency: self.args.concurrency,
            rate: None,
            stream,
            headers: Vec::new(),
            api_key: None,
            prompt: PROMPT.to_owned(),
            timeout: SLACK,
            max_duration: None,
        }
    }

    async fn latency(&mut self, direct: &str, gateway: &str, stream: bool) -> Value {
        let kind = if stream { "streaming" } else { "non-streaming" };
        let expected = sluice_mock::mock_text(self.args.chunks).len();
        let mut reports = Vec::new();
        for (target, url) in [("direct", direct), ("gateway", gateway)] {
            let mut spec = self.base_spec(url, stream);
            spec.rate = Some(self.args.rate);
            spec.max_duration = Some(expected_duration(&spec, spec.requests));
            let label = format!("latency {kind} {target}");
            reports.push(self.measure(&label, &spec, expected).await);
        }
        let (d, g) = (&reports[0], &reports[1]);
        let mut value = json!({
            "direct": d,
            "gateway": g,
            "added_p50_ms": diff_ms(g.latency_p50, d.latency_p50),
            "added_p90_ms": diff_ms(g.latency_p90, d.latency_p90),
            "added_p99_ms": diff_ms(g.latency_p99, d.latency_p99),
        });
        if stream
            && let (Some(gt50), Some(dt50), Some(gt99), Some(dt99)) =
                (g.ttfb_p50, d.ttfb_p50, g.ttfb_p99, d.ttfb_p99)
        {
            value["added_ttfb_p50_ms"] = json!(diff_ms(gt50, dt50));
            value["added_ttfb_p99_ms"] = json!(diff_ms(gt99, dt99));
        }
        value
    }

    async fn throughput(&mut self, direct: &str, gateway: &str) -> Value {
        let expected = sluice_mock::mock_text(self.args.chunks).len();
        let mut reports = Vec::new();
        for (target, url) in [("direct", direct), ("gateway", gateway)] {
            let mut spec = self.base_spec(url, false);
            spec.max_duration = Some(expected_duration_at(self.args.rate, spec.requests));
            let label = format!("throughput {target}");
            reports.push(self.measure(&label, &spec, expected).await);
        }
        let (d, g) = (&reports[0], &reports[1]);
        json!({
            "direct": d,
            "gateway": g,
            "gateway_rps": g.achieved_rps,
            "direct_rps": d.achieved_rps,
        })
    }

    async fn memory(&mut self, direct: &str, gateway: &str) -> Value {
        let expected = sluice_mock::mock_text(self.args.stream_chunks).len();
        let stream_time = self.args.stream_gap * self.args.stream_chunks as u32;
        // Streams open on a timetable over a quarter of a stream's length (500 ms for the
        // default 2 s streams), so every stream is still open when the last one starts. Opening
        // all of them in the same millisecond would overflow the listeners' accept queues and
        // measure the kernel's 1 s SYN retransmission instead of the gateway.
        let ramp = (stream_time / 4).max(Duration::from_millis(1));
        let spec_for = |url: &str| LoadSpec {
            requests: self.args.streams,
            concurrency: self.args.streams,
            rate: Some(self.args.streams as f64 / ramp.as_secs_f64()),
            timeout: stream_time + SLACK,
            max_duration: Some(ramp + stream_time + SLACK),
            ..self.base_spec(url, true)
        };
        let (direct_spec, gateway_spec) = (spec_for(direct), spec_for(gateway));
        let mock_stats = format!("{}/stats", direct.trim_end_matches("/v1"));
        let gateway_pid = self.pid_of(gateway);
        let warmup = std::mem::take(&mut self.args.warmup);

        let d = self
            .measure("memory direct (reference)", &direct_spec, expected)
            .await;

        let idle_rss = gateway_pid.and_then(|pid| proc_status_kib(pid, "VmRSS"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let sampler = tokio::spawn(sample(
            gateway_pid,
            self.client.clone(),
            mock_stats,
            stop_rx,
        ));
        let g = self
            .measure("memory gateway", &gateway_spec, expected)
            .await;
        let _ = stop_tx.send(());
        let samples = sampler.await.unwrap_or_default();
        let hwm = gateway_pid.and_then(|pid| proc_status_kib(pid, "VmHWM"));
        self.args.warmup = warmup;

        let all_completed = g.succeeded == self.args.streams;
        if gateway_pid.is_none() {
            self.problems
                .push("memory: the gateway's pid is unknown; RSS not measured".into());
        }
        if samples.peak_upstream_in_flight < self.args.streams as u64 {
            note(&format!(
                "note: at most {} streams were open upstream at once (of {})",
                samples.peak_upstream_in_flight, self.args.streams
            ));
        }
        json!({
            "direct": d,
            "gateway": g,
            "streams": self.args.streams,
            "stream_chunks": self.args.stream_chunks,
            "stream_gap_ms": ms(self.args.stream_gap),
            "ramp_ms": ms(ramp),
            "all_streams_completed": all_completed,
            "peak_streams_in_flight_upstream": samples.peak_upstream_in_flight,
            "gateway_idle_rss_mib": idle_rss.map(kib_to_mib),
            "gateway_peak_rss_mib": samples.peak_rss_kib.map(kib_to_mib),
            "gateway_vmhwm_mib": hwm.map(kib_to_mib),
            "rss_samples": samples.count,
            "rss_sample_period_ms": ms(SAMPLE_EVERY),
        })
    }

    fn report(&self, scenarios: BTreeMap<&'static str, Value>) -> Value {
        let targets = targets(&self.args, &scenarios);
        json!({
            "machine": self.machine,
            "git": git_head(),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "gateway": if self.args.mock_as_gateway { "mock (harness self-test, not the gateway)" } else { "sluice serve" },
            "args": {
                "requests": self.args.requests,
                "concurrency": self.args.concurrency,
                "rate": self.args.rate,
                "streams": self.args.streams,
                "chunks": self.args.chunks,
                "stream_chunks": self.args.stream_chunks,
                "stream_gap_ms": ms(self.args.stream_gap),
                "warmup": self.args.warmup,
                "scenario": self.args.scenario.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>(),
                "extra_gateway_args": self.args.extra_gateway_args,
                "ratelimit": {
                    "duration_s": self.args.ratelimit.duration.map(|d| d.as_secs_f64()),
                    "quick": self.args.ratelimit.quick,
                    "limit_rpm": self.args.ratelimit.limit_rpm,
                    "limit_tpm": self.args.ratelimit.limit_tpm,
                    "max_tokens": self.args.ratelimit.max_tokens,
                    "load_factor": self.args.ratelimit.load_factor,
                    "no_limit_headers": self.args.ratelimit.no_limit_headers,
                    "max_queue_wait_s": self.args.ratelimit.max_queue_wait.as_secs_f64(),
                },
            },
            "scenarios": scenarios,
            "targets": targets,
            "ok": self.problems.is_empty(),
            "problems": self.problems,
            "total_elapsed_s": round3(self.started.elapsed().as_secs_f64()),
        })
    }

    fn print_summary(&self, report: &Value) {
        let f = |v: &Value| match v.as_f64() {
            Some(x) => format!("{x:.3}"),
            None => "-".to_owned(),
        };
        let s = &report["scenarios"];
        note("");
        note("summary (ms unless noted; added = gateway percentile - direct percentile):");
        for kind in ["non_streaming", "streaming"] {
            let l = &s["latency"][kind];
            if l.is_null() {
                continue;
            }
            note(&format!(
                "  latency {kind:<13} direct p50 {} p99 {} | gateway p50 {} p99 {} | added p50 {} p99 {}",
                f(&l["direct"]["latency_p50_ms"]),
                f(&l["direct"]["latency_p99_ms"]),
                f(&l["gateway"]["latency_p50_ms"]),
                f(&l["gateway"]["latency_p99_ms"]),
                f(&l["added_p50_ms"]),
                f(&l["added_p99_ms"]),
            ));
            if kind == "streaming" {
                note(&format!(
                    "  ttfb    {kind:<13} added p50 {} p99 {}",
                    f(&l["added_ttfb_p50_ms"]),
                    f(&l["added_ttfb_p99_ms"]),
                ));
            }
        }
        let t = &s["throughput"];
        if !t.is_null() {
            note(&format!(
                "  throughput              direct {} req/s | gateway {} req/s",
                f(&t["direct_rps"]),
                f(&t["gateway_rps"])
            ));
        }
        if let Some(runs) = s["ratelimit"]["runs"].as_array() {
            note(&format!(
                "  ratelimit ({} binds; goodput = admitted per minute of the load window):",
                s["ratelimit"]["binding_axis"].as_str().unwrap_or("?")
            ));
            for r in runs {
                if let Some(e) = r["error"].as_str() {
                    note(&format!(
                        "    {:<48} FAILED: {e}",
                        r["name"].as_str().unwrap_or("?")
                    ));
                    continue;
                }
                note(&format!(
                    "    {:<48} client {}/{} ok, {} 429s, p50 {} ms | upstream {} req, {} 429s ({}%) | goodput {}% of the limit (whole run {}%)",
                    r["name"].as_str().unwrap_or("?"),
                    r["client"]["succeeded"],
                    r["client"]["requests"],
                    r["client"]["rate_limited_429"],
                    f(&r["client"]["latency_p50_ms"]),
                    r["upstream"]["requests"],
                    r["upstream"]["rate_limited_429"],
                    f(&r["upstream"]["rate_limited_share_pct"]),
                    f(&r["goodput"]["binding_pct_of_limit"]),
                    f(&r["goodput"]["whole_run"]["binding_pct_of_limit"]),
                ));
            }
        }
        let m = &s["memory"];
        if !m.is_null() {
            note(&format!(
                "  memory                  gateway RSS idle {} MiB, peak {} MiB, VmHWM {} MiB; all streams completed: {}",
                f(&m["gateway_idle_rss_mib"]),
                f(&m["gateway_peak_rss_mib"]),
                f(&m["gateway_vmhwm_mib"]),
                m["all_streams_completed"]
            ));
        }
        if let Some(targets) = report["targets"].as_array() {
            for t in targets {
                let met = match t["met"].as_bool() {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "not measured",
                };
                note(&format!(
                    "  target {}: {} (measured {} {})",
                    t["target"].as_str().unwrap_or("?"),
                    met,
                    f(&t["measured"]),
                    t["unit"].as_str().unwrap_or("")
                ));
            }
        }
    }
}

fn spawn(
    name: &'static str,
    exe: &std::path::Path,
    args: &[String],
    addr: SocketAddr,
) -> Result<Proc, String> {
    let child = Command::new(exe)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
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

/// A loopback address with a port that was free a moment ago.
fn free_port() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot bind a free loopback port: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

/// How long `requests` of `spec` should take at its rate, plus [`SLACK`].
fn expected_duration(spec: &LoadSpec, requests: usize) -> Duration {
    match spec.rate {
        Some(rate) => expected_duration_at(rate, requests),
        None => SLACK + Duration::from_secs(60),
    }
}

fn expected_duration_at(rate: f64, requests: usize) -> Duration {
    Duration::from_secs_f64(requests as f64 / rate) + SLACK
}

fn diff_ms(gateway: Duration, direct: Duration) -> f64 {
    round3(gateway.as_secs_f64() * 1e3 - direct.as_secs_f64() * 1e3)
}

fn kib_to_mib(kib: u64) -> f64 {
    round3(kib as f64 / 1024.0)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[derive(Debug, Default)]
struct Samples {
    peak_rss_kib: Option<u64>,
    count: u64,
    peak_upstream_in_flight: u64,
}

/// Samples the gateway's VmRSS and the mock's `in_flight` every [`SAMPLE_EVERY`] until `stop`.
async fn sample(
    pid: Option<u32>,
    client: reqwest::Client,
    mock_stats: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Samples {
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if let Some(kib) = pid.and_then(|pid| proc_status_kib(pid, "VmRSS")) {
            samples.count += 1;
            samples.peak_rss_kib = Some(samples.peak_rss_kib.unwrap_or(0).max(kib));
        }
        let stats = client
            .get(&mock_stats)
            .timeout(SAMPLE_EVERY * 4)
            .send()
            .await;
        if let Ok(resp) = stats
            && let Ok(v) = resp.json::<Value>().await
            && let Some(n) = v.get("in_flight").and_then(Value::as_u64)
        {
            samples.peak_upstream_in_flight = samples.peak_upstream_in_flight.max(n);
        }
    }
    samples
}

fn targets(args: &BenchArgs, s: &BTreeMap<&'static str, Value>) -> Value {
    let null = Value::Null;
    let get = |scenario: &str, path: &[&str]| -> Option<f64> {
        let mut v = s.get(scenario).unwrap_or(&null);
        for p in path {
            v = &v[*p];
        }
        v.as_f64()
    };
    let entry =
        |target: &str, measured: Option<f64>, unit: &str, limit: f64, upper: bool, at: bool| {
            json!({
                "target": target,
                "measured": measured,
                "unit": unit,
                "met": measured.map(|m| if upper { m <= limit } else { m >= limit }),
                "at_target_load": at,
            })
        };
    let at_rate = (args.rate - 1000.0).abs() < f64::EPSILON;
    let peak_mb = get("memory", &["gateway_peak_rss_mib"]).map(|mib| round3(mib * 1.048_576));
    let mut list = json!([
        entry(
            "added p99 latency <= 1 ms at 1,000 req/s (non-streaming)",
            get("latency", &["non_streaming", "added_p99_ms"]),
            "ms",
            1.0,
            true,
            at_rate,
        ),
        entry(
            "added p99 latency <= 1 ms at 1,000 req/s (streaming, to [DONE])",
            get("latency", &["streaming", "added_p99_ms"]),
            "ms",
            1.0,
            true,
            at_rate,
        ),
        entry(
            ">= 5,000 req/s non-streaming through the gateway",
            get("throughput", &["gateway_rps"]),
            "req/s",
            5000.0,
            false,
            true,
        ),
        entry(
            "gateway peak RSS <= 50 MB (10^6 bytes) at 1,000 concurrent streams",
            peak_mb,
            "MB",
            50.0,
            true,
            args.streams == 1000,
        ),
    ]);
    // The rate-limit targets hold for proactive runs at twice the limit for 60 s.
    let rl = &args.ratelimit;
    let rl_at = (rl.load_factor - 2.0).abs() < f64::EPSILON
        && rl.duration.is_none_or(|d| d >= Duration::from_secs(60))
        && !rl.quick;
    let runs = s.get("ratelimit").and_then(|v| v["runs"].as_array());
    if let (Some(list), Some(runs)) = (list.as_array_mut(), runs) {
        for r in runs.iter().filter(|r| r["mode"] == "proactive") {
            let name = r["name"].as_str().unwrap_or("?");
            list.push(entry(
                &format!(
                    "upstream 429s <= {}% of upstream requests ({name})",
                    ratelimit::TARGET_429_SHARE_PCT
                ),
                r["upstream"]["rate_limited_share_pct"].as_f64(),
                "%",
                ratelimit::TARGET_429_SHARE_PCT,
                true,
                rl_at,
            ));
            list.push(entry(
                &format!(
                    "goodput >= {}% of the binding limit ({name})",
                    ratelimit::TARGET_GOODPUT_PCT
                ),
                r["goodput"]["binding_pct_of_limit"].as_f64(),
                "%",
                ratelimit::TARGET_GOODPUT_PCT,
                false,
                rl_at,
            ));
        }
    }
    list
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned());
    // Other work on the machine skews every figure; record how busy it was.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_at_start": loadavg,
        "cpu": model,
        "memory_mib": parse_status_kib(&meminfo, "MemTotal").map(|k| k / 1024),
        "kernel": kernel,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

fn git_head() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let head = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!head.is_empty()).then_some(head)
}

/// Warns when the open-file limit is too low for the memory scenario (each stream holds a
/// connection in the generator and two in the gateway).
fn check_fd_limit(streams: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < streams * 2 + 256
    {
        note(&format!(
            "warning: the open-file limit is {soft}; {streams} streams need about {} (raise it with `ulimit -n`)",
            streams * 2 + 256
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse() {
        let status = "Name:\tsluice\nVmPeak:\t  100 kB\nVmHWM:\t   5120 kB\nVmRSS:\t   4096 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(4096));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(5120));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(kib_to_mib(4096), 4.0);
    }

    #[test]
    fn own_rss_is_readable() {
        let pid = std::process::id();
        assert!(proc_status_kib(pid, "VmRSS").is_some_and(|k| k > 0));
    }

    #[test]
    fn differences_and_targets() {
        assert_eq!(
            diff_ms(Duration::from_micros(1500), Duration::from_micros(400)),
            1.1
        );
        assert_eq!(
            diff_ms(Duration::from_micros(400), Duration::from_micros(500)),
            -0.1
        );
        let args = BenchArgs {
            requests: 1,
            concurrency: 1,
            rate: 1000.0,
            streams: 1000,
            chunks: 8,
            stream_chunks: 40,
            stream_gap: Duration::from_millis(50),
            warmup: 0,
            out: None,
            scenario: vec![Scenario::All],
            extra_gateway_args: None,
            mock_as_gateway: false,
            ratelimit: ratelimit::RateLimitArgs::default(),
        };
        let mut s = BTreeMap::new();
        s.insert(
            "latency",
            json!({"non_streaming": {"added_p99_ms": 0.4}, "streaming": {"added_p99_ms": 1.5}}),
        );
        s.insert("memory", json!({"gateway_peak_rss_mib": 40.0}));
        let t = targets(&args, &s);
        assert_eq!(t[0]["met"], json!(true));
        assert_eq!(t[1]["met"], json!(false));
        assert_eq!(t[2]["met"], Value::Null);
        assert_eq!(t[3]["measured"], json!(41.943));
        assert_eq!(t[3]["met"], json!(true));
        assert_eq!(t.as_array().unwrap().len(), 4);
        s.insert(
            "ratelimit",
            json!({"runs": [
                {"mode": "retries_only", "name": "r",
                 "upstream": {"rate_limited_share_pct": 40.0}, "goodput": {"binding_pct_of_limit": 99.0}},
                {"mode": "proactive", "name": "p",
                 "upstream": {"rate_limited_share_pct": 0.2}, "goodput": {"binding_pct_of_limit": 94.0}},
            ]}),
        );
        let t = targets(&args, &s);
        assert_eq!(t.as_array().unwrap().len(), 6);
        assert_eq!(t[4]["met"], json!(true));
        assert_eq!(t[5]["met"], json!(false));
        assert_eq!(t[5]["at_target_load"], json!(true));
        assert!(t[4]["target"].as_str().unwrap().ends_with("(p)"));
    }

    #[test]
    fn scenario_selection() {
        let mut args = BenchArgs {
            requests: 1,
            concurrency: 1,
            rate: 1.0,
            streams: 1,
            chunks: 1,
            stream_chunks: 1,
            stream_gap: Duration::ZERO,
            warmup: 0,
            out: None,
            scenario: vec![Scenario::Latency],
            extra_gateway_args: None,
            mock_as_gateway: true,
            ratelimit: ratelimit::RateLimitArgs::default(),
        };
        assert!(validate(&args).is_ok());
        let b = Bench::new(args.clone());
        assert!(b.wants(Scenario::Latency) && b.wants(Scenario::Streams));
        assert!(!b.wants(Scenario::Memory));
        args.scenario = vec![Scenario::Streams, Scenario::Memory];
        let b = Bench::new(args.clone());
        assert!(
            !b.wants(Scenario::Latency) && b.wants(Scenario::Streams) && b.wants(Scenario::Memory)
        );
        args.scenario = vec![Scenario::All];
        let b = Bench::new(args.clone());
        assert!(b.wants(Scenario::Memory) && !b.wants(Scenario::Ratelimit));
        args.scenario = vec![Scenario::Ratelimit];
        assert!(validate(&args).is_err(), "--mock-as-gateway does not apply");
        args.mock_as_gateway = false;
        assert!(validate(&args).is_ok());
        let b = Bench::new(args.clone());
        assert!(b.wants(Scenario::Ratelimit) && !b.wants(Scenario::Latency));
        args.rate = 0.0;
        assert!(validate(&args).is_err());
    }
}
