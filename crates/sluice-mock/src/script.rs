//! Fault scripts (`x-sluice-mock-fault`) and the seeded random fault draw.
//!
//! A script is a comma-separated list of steps, each `NAME[:ARG][*N]`. The k-th request
//! (0-based) carrying the same script (and the same `x-sluice-mock-scenario` value) gets step k;
//! requests past the end are answered normally. Scripts make tests deterministic even when the
//! client under test retries concurrently: the counter lives in the server, keyed by
//! (scenario, script), so "`429*2` then success" holds no matter which connection each attempt
//! uses. Steps are kept run-length encoded, so `429*1000000` costs one entry, not a million.
//!
//! Random faults (benchmarks, `sluice demo`) use one uniform draw per request from a SplitMix64
//! generator: one atomic add plus a few multiplications, and the same seed gives the same
//! outcome sequence for the same order of requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::MockConfig;

/// One scripted (or randomly drawn) behaviour for a single request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A normal answer.
    Ok,
    /// A normal answer whose first token comes after this delay (overrides `ttft`).
    Delay(Duration),
    /// A normal answer with this many chunks.
    Chunks(usize),
    /// 429 `rate_limit_exceeded`; `retry-after` seconds and/or `retry-after-ms` hints.
    RateLimited {
        retry_after_secs: Option<u64>,
        retry_after_ms: Option<Duration>,
    },
    /// 429 `insufficient_quota`.
    Quota,
    /// 401 `invalid_api_key`.
    Unauthorized,
    /// 400 generic `invalid_request_error`.
    BadRequest,
    /// 404 `model_not_found`.
    NotFound,
    /// 400 `context_length_exceeded`.
    Context,
    /// 400 `content_policy_violation`.
    Policy,
    /// 500, 502, 503, 504 or 529.
    Status(u16),
    /// Close the connection without a response byte.
    Reset,
    /// Stop abruptly after this many content chunks (`None`: half of the configured chunks).
    Cut(Option<usize>),
    /// Go silent after this many content chunks (`None`: half of the configured chunks).
    Stall(Option<usize>),
    /// An in-band error event of this type (`None`: the dialect's default, `server_error` for
    /// OpenAI, `overloaded_error` for Anthropic); `after: None` sends it as the very first
    /// event, `Some(n)` after the preamble and n content chunks.
    Inband {
        error_type: Option<String>,
        after: Option<usize>,
    },
    /// A complete answer carrying one tool call to this function/tool name (`None`:
    /// [`DEFAULT_TOOL`]) with the arguments [`TOOL_ARGUMENTS`](crate::TOOL_ARGUMENTS).
    Tool(Option<String>),
}

/// The tool name of a bare `tool` step.
pub(crate) const DEFAULT_TOOL: &str = "get_weather";

impl Step {
    /// Whether this step (before the context check) would produce model output.
    pub(crate) fn answers(&self) -> bool {
        matches!(
            self,
            Step::Ok
                | Step::Delay(_)
                | Step::Chunks(_)
                | Step::Cut(_)
                | Step::Stall(_)
                | Step::Inband { .. }
                | Step::Tool(_)
        )
    }
}

/// Every step name, for error messages.
const STEP_NAMES: &str = "ok, 429, 429:ra=S, 429:ms=M, quota, 401, 400, 404, context, policy, \
     500, 502, 503, 504, 529, reset, cut[:N], stall[:N], inband[:TYPE], inband_after:N[:TYPE], \
     delay:MS, chunks:N, tool[:NAME]";

/// The longest accepted script; longer headers are almost certainly a mistake.
const MAX_SCRIPT_LEN: usize = 4096;

/// A parsed fault script: run-length encoded steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Script {
    runs: Vec<(Step, u64)>,
}

impl Script {
    /// Parses `NAME[:ARG][*N](,NAME[:ARG][*N])*`. The error names the offending step.
    pub(crate) fn parse(script: &str) -> Result<Script, String> {
        if script.len() > MAX_SCRIPT_LEN {
            return Err(format!("the script is longer than {MAX_SCRIPT_LEN} bytes"));
        }
        let mut runs = Vec::new();
        for raw in script.split(',') {
            let item = raw.trim();
            if item.is_empty() {
                return Err("empty step (two commas in a row, or a trailing comma?)".to_owned());
            }
            let (step_text, repeat) = match item.rsplit_once('*') {
                Some((step, n)) => {
                    let n: u64 = n.trim().parse().map_err(|_| {
                        format!("bad step `{item}`: the repeat count after `*` must be a number")
                    })?;
                    if n == 0 {
                        return Err(format!(
                            "bad step `{item}`: the repeat count must be at least 1"
                        ));
                    }
                    (step.trim(), n)
                }
                None => (item, 1),
            };
            let step = parse_step(step_text).map_err(|why| format!("bad step `{item}`: {why}"))?;
            runs.push((step, repeat));
        }
        Ok(Script { runs })
    }

    /// The step for the k-th request (0-based); `Ok` past the end of the script.
    pub(crate) fn step(&self, mut k: u64) -> Step {
        for (step, n) in &self.runs {
            if k < *n {
                return step.clone();
            }
            k -= n;
        }
        Step::Ok
    }
}

fn parse_step(text: &str) -> Result<Step, String> {
    let (name, arg) = match text.split_once(':') {
        Some((name, arg)) => (name.trim(), Some(arg.trim())),
        None => (text, None),
    };
    let no_arg = |step: Step| match arg {
        None => Ok(step),
        Some(_) => Err(format!("`{name}` takes no argument")),
    };
    match name {
        "ok" => no_arg(Step::Ok),
        "quota" => no_arg(Step::Quota),
        "401" => no_arg(Step::Unauthorized),
        "400" => no_arg(Step::BadRequest),
        "404" => no_arg(Step::NotFound),
        "context" => no_arg(Step::Context),
        "policy" => no_arg(Step::Policy),
        "500" => no_arg(Step::Status(500)),
        "502" => no_arg(Step::Status(502)),
        "503" => no_arg(Step::Status(503)),
        "504" => no_arg(Step::Status(504)),
        "529" => no_arg(Step::Status(529)),
        "reset" => no_arg(Step::Reset),
        "429" => match arg {
            None => Ok(Step::RateLimited {
                retry_after_secs: None,
                retry_after_ms: None,
            }),
            Some(a) => {
                if let Some(s) = a.strip_prefix("ra=") {
                    let secs = parse_count(s, "ra=S")?;
                    Ok(Step::RateLimited {
                        retry_after_secs: Some(secs),
                        retry_after_ms: None,
                    })
                } else if let Some(m) = a.strip_prefix("ms=") {
                    let ms = parse_count(m, "ms=M")?;
                    Ok(Step::RateLimited {
                        retry_after_secs: Some(ms.div_ceil(1000)),
                        retry_after_ms: Some(Duration::from_millis(ms)),
                    })
                } else {
                    Err("`429` takes `ra=SECONDS` or `ms=MILLISECONDS`".to_owned())
                }
            }
        },
        "cut" => Ok(Step::Cut(arg.map(|a| parse_usize(a, "cut:N")).transpose()?)),
        "stall" => Ok(Step::Stall(
            arg.map(|a| parse_usize(a, "stall:N")).transpose()?,
        )),
        "inband" => Ok(Step::Inband {
            error_type: arg.map(parse_error_type).transpose()?,
            after: None,
        }),
        "inband_after" => {
            let arg = arg.ok_or("`inband_after` needs a chunk count: inband_after:N")?;
            let (n, ty) = match arg.split_once(':') {
                Some((n, ty)) => (n.trim(), Some(parse_error_type(ty.trim())?)),
                None => (arg, None),
            };
            Ok(Step::Inband {
                error_type: ty,
                after: Some(parse_usize(n, "inband_after:N")?),
            })
        }
        "delay" => {
            let arg = arg.ok_or("`delay` needs milliseconds: delay:MS")?;
            let delay = match arg.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => humantime::parse_duration(arg)
                    .map_err(|_| "`delay:MS` needs a number of milliseconds".to_owned())?,
            };
            Ok(Step::Delay(delay))
        }
        "chunks" => {
            let arg = arg.ok_or("`chunks` needs a count: chunks:N")?;
            Ok(Step::Chunks(parse_usize(arg, "chunks:N")?))
        }
        "tool" => Ok(Step::Tool(arg.map(parse_tool_name).transpose()?)),
        _ => Err(format!(
            "unknown step name `{name}`; known steps: {STEP_NAMES}"
        )),
    }
}

fn parse_count(s: &str, form: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{form}` needs a non-negative integer, got `{s}`"))
}

fn parse_usize(s: &str, form: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{form}` needs a non-negative integer, got `{s}`"))
}

/// Error types are echoed into JSON unescaped, so keep them to identifier characters.
fn parse_error_type(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "bad error type `{s}` (letters, digits, `_`, `-`, `.` only)"
        ))
    }
}

/// Tool names are echoed into JSON unescaped; both providers allow `^[a-zA-Z0-9_-]{1,64}$`.
fn parse_tool_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "bad tool name `{s}` (1 to 64 letters, digits, `_` or `-`)"
        ))
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014) over an atomic state: lock-free and reproducible.
#[derive(Debug)]
pub(crate) struct SplitMix64 {
    state: AtomicU64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn reseed(&self, seed: u64) {
        self.state.store(seed, Ordering::Relaxed);
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub(crate) fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Maps one uniform draw `u` in `[0, 1)` to a fault, walking the probabilities in order.
/// Cut and stall happen halfway through the answer; the in-band error comes first.
pub(crate) fn random_step(config: &MockConfig, u: f64) -> Step {
    let mut acc = 0.0;
    for (name, p) in config.fault_probabilities() {
        acc += p;
        if u < acc {
            return match name {
                "p_429" => Step::RateLimited {
                    retry_after_secs: config
                        .retry_after
                        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                    retry_after_ms: config.retry_after,
                },
                "p_quota" => Step::Quota,
                "p_500" => Step::Status(500),
                "p_502" => Step::Status(502),
                "p_503" => Step::Status(503),
                "p_504" => Step::Status(504),
                "p_529" => Step::Status(529),
                "p_reset" => Step::Reset,
                "p_cut" => Step::Cut(None),
                "p_stall" => Step::Stall(None),
                _ => Step::Inband {
                    error_type: None,
                    after: None,
                },
            };
        }
    }
    Step::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(script: &str, n: u64) -> Vec<Step> {
        let s = Script::parse(script).unwrap();
        (0..n).map(|k| s.step(k)).collect()
    }

    #[test]
    fn repeats_then_ok() {
        let rl = Step::RateLimited {
            retry_after_secs: None,
            retry_after_ms: None,
        };
        assert_eq!(
            steps("429*3", 5),
            vec![rl.clone(), rl.clone(), rl, Step::Ok, Step::Ok]
        );
        assert_eq!(
            steps("503, reset ,ok,500", 5),
            vec![
                Step::Status(503),
                Step::Reset,
                Step::Ok,
                Step::Status(500),
                Step::Ok
            ]
        );
        // Huge repeat counts are run-length encoded.
        let s = Script::parse("500*1000000000000,quota").unwrap();
        assert_eq!(s.step(999_999_999_999), Step::Status(500));
        assert_eq!(s.step(1_000_000_000_000), Step::Quota);
    }

    #[test]
    fn arguments() {
        assert_eq!(
            steps("429:ms=1500*2", 1)[0],
            Step::RateLimited {
                retry_after_secs: Some(2),
                retry_after_ms: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            steps("429:ra=3", 1)[0],
            Step::RateLimited {
                retry_after_secs: Some(3),
                retry_after_ms: None
            }
        );
        assert_eq!(steps("cut:2", 1)[0], Step::Cut(Some(2)));
        assert_eq!(steps("cut", 1)[0], Step::Cut(None));
        assert_eq!(steps("stall:0", 1)[0], Step::Stall(Some(0)));
        assert_eq!(
            steps("inband:overloaded_error", 1)[0],
            Step::Inband {
                error_type: Some("overloaded_error".into()),
                after: None
            }
        );
        assert_eq!(
            steps("inband_after:3", 1)[0],
            Step::Inband {
                error_type: None,
                after: Some(3)
            }
        );
        assert_eq!(
            steps("inband_after:1:overloaded_error", 1)[0],
            Step::Inband {
                error_type: Some("overloaded_error".into()),
                after: Some(1)
            }
        );
        assert_eq!(
            steps("delay:250", 1)[0],
            Step::Delay(Duration::from_millis(250))
        );
        assert_eq!(steps("delay:2s", 1)[0], Step::Delay(Duration::from_secs(2)));
        assert_eq!(steps("chunks:3*2", 3)[1], Step::Chunks(3));
        assert_eq!(
            steps("inband", 1)[0],
            Step::Inband {
                error_type: None,
                after: None
            }
        );
        assert_eq!(steps("tool", 1)[0], Step::Tool(None));
        assert_eq!(
            steps("tool:lookup_stock-2*2", 2)[1],
            Step::Tool(Some("lookup_stock-2".into()))
        );
        assert!(Step::Tool(None).answers());
    }

    #[test]
    fn errors_name_the_bad_step() {
        for (script, needle) in [
            ("429,oops", "`oops`"),
            ("429*x", "`429*x`"),
            ("500*0", "at least 1"),
            ("ok,,ok", "empty step"),
            ("ok,", "empty step"),
            ("cut:x", "`cut:x`"),
            ("429:wait=1", "ra=SECONDS"),
            ("ok:1", "no argument"),
            ("inband:bad\"type", "bad error type"),
            ("delay", "delay:MS"),
            ("chunks", "chunks:N"),
            ("inband_after", "inband_after:N"),
            ("tool:", "bad tool name"),
            ("tool:a b", "bad tool name"),
            ("tool:x\"y", "bad tool name"),
        ] {
            let err = Script::parse(script).unwrap_err();
            assert!(err.contains(needle), "{script}: {err}");
        }
        assert!(Script::parse(&"ok,".repeat(2000)).is_err());
    }

    #[test]
    fn splitmix_is_reproducible_and_uniform_enough() {
        let a = SplitMix64::new(42);
        let b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        // Reference value of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let r = SplitMix64::new(7);
        let n = 10_000;
        let below_half = (0..n).filter(|_| r.next_f64() < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
        r.reseed(42);
        assert_eq!(r.next_u64(), xs[0]);
    }

    #[test]
    fn random_step_walks_the_probabilities_in_order() {
        let c = MockConfig {
            p_429: 0.25,
            p_500: 0.25,
            p_inband: 0.25,
            retry_after: Some(Duration::from_millis(1500)),
            ..MockConfig::default()
        };
        assert_eq!(
            random_step(&c, 0.1),
            Step::RateLimited {
                retry_after_secs: Some(2),
                retry_after_ms: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(random_step(&c, 0.3), Step::Status(500));
        assert!(matches!(random_step(&c, 0.6), Step::Inband { .. }));
        assert_eq!(random_step(&c, 0.8), Step::Ok);
    }
}
