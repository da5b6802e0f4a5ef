#!/usr/bin/env python3
"""Token-counting benchmark helpers for scripts/bench_tokens.sh.

    bench_tokens.py gen FILE        write the deterministic 1 MiB mixed text to FILE
    bench_tokens.py run FILE [N]    time Python tiktoken on FILE (JSON line per encoding)

The text mixes English prose, source code, JSON, CJK, other scripts, emoji, numbers, base64 and
whitespace runs, from a fixed seed, so every run counts the same bytes. tiktoken runs single
threaded (`encode_ordinary`, as Sluice counts), built offline from the official vocabulary files
(see tiktoken_local.py).
"""

from __future__ import annotations

import base64
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SIZE = 1 << 20

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there one all we their can has more would when will been "
    "if no what so out up about into than them only other new some could time these two may then "
    "do first any my now such like our over man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people how "
    "too little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since "
    "against go came right used take three request response retry backoff stream token provider "
    "gateway latency deadline budget circuit breaker fallback timeout overload quota context window"
).split()

CODE = [
    "fn {a}(&mut self, {b}: usize) -> Result<{C}, Error> {{\n    let {c} = self.{b}.get({b}).ok_or(Error::Missing)?;\n    Ok({C}::new({c}))\n}}\n",
    "def {a}({b}, {c}=None):\n    \"\"\"Return the {b} of {c}.\"\"\"\n    if {c} is None:\n        return [{b} * i for i in range(10)]\n    return {{'{b}': {b}, '{c}': {c}}}\n",
    "const {a} = async ({b}) => {{\n  const res = await fetch(`/api/{b}/${{{b}.id}}`);\n  if (!res.ok) throw new Error(res.statusText);\n  return res.json();\n}};\n",
    "SELECT {a}.id, {b}.name FROM {a} JOIN {b} ON {b}.{a}_id = {a}.id WHERE {c} > 42 ORDER BY 1;\n",
]

CJK = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。東京は日本の首都であり、多くの人々が住んでいます。서울은 대한민국의 수도입니다。"
OTHER = "Съешь же ещё этих мягких французских булок, да выпей чаю. Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. نص عربي للاختبار. यह एक परीक्षण वाक्य है।"
EMOJI = "😀🚀🎉🔥👍🏽👨‍👩‍👧‍👦🇯🇵❤️🦀🐍"


def mixed_text(seed: int = 1) -> str:
    rng = random.Random(seed)
    ident = lambda: rng.choice(WORDS) + rng.choice(["", "_" + rng.choice(WORDS), rng.choice(WORDS).title()])  # noqa: E731
    parts: list[str] = []
    size = 0
    while size < SIZE:
        kind = rng.choices(
            ["prose", "code", "json", "cjk", "other", "emoji", "numbers", "base64", "space"],
            [45, 20, 8, 8, 5, 3, 4, 4, 3],
        )[0]
        if kind == "prose":
            words = [rng.choice(WORDS) for _ in range(rng.randint(20, 120))]
            words[0] = words[0].title()
            s = " ".join(w + (rng.choice([",", ".", ";", ""]) if rng.random() < 0.1 else "") for w in words)
            piece = s + ".\n\n"
        elif kind == "code":
            piece = rng.choice(CODE).format(a=ident(), b=ident(), c=ident(), C=rng.choice(WORDS).title())
        elif kind == "json":
            piece = json.dumps({ident(): rng.randint(0, 10**6), ident(): [rng.random() for _ in range(3)], "role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(8))}) + "\n"
        elif kind == "cjk":
            start = rng.randrange(len(CJK) - 20)
            piece = CJK[start : start + rng.randint(10, 60)] + "\n"
        elif kind == "other":
            piece = OTHER[rng.randrange(len(OTHER) // 2) :] + "\n"
        elif kind == "emoji":
            piece = " ".join(rng.choice(EMOJI) for _ in range(rng.randint(3, 12))) + "\n"
        elif kind == "numbers":
            piece = " ".join(str(rng.randint(0, 10**rng.randint(1, 9))) for _ in range(rng.randint(5, 30))) + "\n"
        elif kind == "base64":
            piece = base64.b64encode(bytes(rng.randrange(256) for _ in range(rng.randint(30, 400)))).decode() + "\n"
        else:
            piece = rng.choice([" ", "\t", "\n", "  \n"]) * rng.randint(2, 40)
        parts.append(piece)
        size += len(piece.encode())
    data = "".join(parts).encode()[:SIZE]
    return data.decode("utf-8", errors="ignore")


def run(path: str, rounds: int) -> None:
    import tiktoken
    import tiktoken_local

    with open(path, encoding="utf-8") as f:
        text = f.read()
    started = time.perf_counter()
    encodings = {name: tiktoken_local.local_encoding(name) for name in tiktoken_local.ENCODINGS}
    load_ms = (time.perf_counter() - started) * 1e3
    for name, enc in encodings.items():
        tokens = len(enc.encode_ordinary(text))  # untimed warm-up round
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            n = len(enc.encode_ordinary(text))
            times.append(time.perf_counter() - t)
            assert n == tokens
        median = statistics.median(times)
        print(json.dumps({
            "implementation": f"python tiktoken {tiktoken.__version__}",
            "encoding": name,
            "bytes": len(text.encode()),
            "tokens": tokens,
            "rounds": rounds,
            "median_seconds": median,
            "best_seconds": min(times),
            "tokens_per_second": tokens / median,
            "mb_per_second": len(text.encode()) / median / 1e6,
            "load_ms": load_ms,
        }))


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "gen":
        with open(sys.argv[2], "w", encoding="utf-8", newline="") as f:
            f.write(mixed_text())
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
