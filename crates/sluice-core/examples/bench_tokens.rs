//! Token-counting throughput: counts one text file with both encodings, repeatedly, and prints
//! one JSON line per encoding. Run by `scripts/bench_tokens.sh` next to Python tiktoken.
//!
//! ```sh
//! cargo run --release -p sluice-core --example bench_tokens -- FILE [ROUNDS]
//! ```

use std::io::Write;

use sluice_core::{Encoding, count_text, warm_up};
use tokio::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        let _ = writeln!(std::io::stderr(), "usage: bench_tokens FILE [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(10);
    let text = std::fs::read_to_string(&path).expect("readable UTF-8 file");

    let started = Instant::now();
    warm_up();
    let warm_up_ms = started.elapsed().as_secs_f64() * 1e3;

    let mut out = std::io::stdout().lock();
    for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
        let tokens = count_text(encoding, &text); // untimed warm-up round
        let mut times: Vec<f64> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                let n = count_text(encoding, std::hint::black_box(&text));
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(n, tokens);
                secs
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let line = serde_json::json!({
            "implementation": "sluice (bpe-openai)",
            "encoding": encoding.name(),
            "bytes": text.len(),
            "tokens": tokens,
            "rounds": rounds,
            "median_seconds": median,
            "best_seconds": times[0],
            "tokens_per_second": tokens as f64 / median,
            "mb_per_second": text.len() as f64 / median / 1e6,
            "warm_up_ms": warm_up_ms,
        });
        let _ = writeln!(out, "{line}");
    }
}
