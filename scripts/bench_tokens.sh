#!/usr/bin/env bash
# Token-counting throughput, Sluice vs Python tiktoken, on the same machine in the same run:
# both count the same deterministic 1 MiB of mixed text (prose, code, JSON, CJK, other scripts,
# emoji, numbers, base64, whitespace) with cl100k_base and o200k_base, single-threaded,
# median of ROUNDS timed rounds after one untimed round. Prints the JSON lines and a table.
#
#   scripts/bench_tokens.sh [ROUNDS]        (default 10; needs python3, installs tiktoken if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
out=target/bench-tokens
mkdir -p "$out"

python3 -c "import tiktoken" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check tiktoken
cargo fetch --quiet  # the vocabulary files tiktoken is built from come with the bpe-openai crate
python3 scripts/bench_tokens.py gen "$out/mixed-1mib.txt"
cargo build --quiet --release -p sluice-core --example bench_tokens

target/release/examples/bench_tokens "$out/mixed-1mib.txt" "$rounds" | tee "$out/sluice.jsonl"
python3 scripts/bench_tokens.py run "$out/mixed-1mib.txt" "$rounds" | tee "$out/tiktoken.jsonl"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for name in ("sluice", "tiktoken"):
    for line in open(f"{out}/{name}.jsonl"):
        r = json.loads(line)
        rows[(name, r["encoding"])] = r
print()
print(f"{'encoding':<12} {'tokens':>9} {'sluice tok/s':>14} {'tiktoken tok/s':>15} {'sluice MB/s':>12} {'tiktoken MB/s':>14} {'ratio':>6} {'best/best':>10}")
for enc in ("cl100k_base", "o200k_base"):
    s, t = rows[("sluice", enc)], rows[("tiktoken", enc)]
    assert s["tokens"] == t["tokens"], f"{enc}: counts differ: sluice {s['tokens']} tiktoken {t['tokens']}"
    print(f"{enc:<12} {s['tokens']:>9,} {s['tokens_per_second']:>14,.0f} {t['tokens_per_second']:>15,.0f} "
          f"{s['mb_per_second']:>12.2f} {t['mb_per_second']:>14.2f} {s['tokens_per_second'] / t['tokens_per_second']:>5.2f}x "
          f"{t['best_seconds'] / s['best_seconds']:>9.2f}x")
print(f"(equal counts on both; {s['bytes']:,} bytes; throughput and ratio from the median of {s['rounds']} rounds, "
      f"best/best from the fastest round of each; {t['implementation']})")
PY
