#!/usr/bin/env python3
"""Generate crates/sluice-core/tests/data/token_vectors.jsonl: (text, encoding, tokens) triples
counted by Python tiktoken, which `crates/sluice-core/tests/token_parity.rs` checks Sluice against.

    pip install tiktoken && python3 scripts/gen_token_vectors.py

tiktoken cannot download its vocabularies here, so the encodings are built offline from the
official files shipped in the bpe-openai crate (see scripts/tiktoken_local.py); tiktoken itself
checks their SHA-256 against the hashes it pins for the official downloads. Counts are
`len(enc.encode_ordinary(text))`: special-token text such as `<|endoftext|>` in a message is
ordinary text, exactly as the API treats it. Deterministic: the same tiktoken gives the same file.
"""

from __future__ import annotations

import base64
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiktoken_local  # noqa: E402

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "crates",
    "sluice-core",
    "tests",
    "data",
    "token_vectors.jsonl",
)

ENGLISH = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'll be there at 5 o'clock; don't wait up. It's the dog's ball, they're sure, we've seen it.",
    "SHOUTING: I'LL DO IT, DON'T STOP, IT'S FINE, THEY'RE HERE, WE'VE WON, I'M OUT, YOU'D KNOW.",
    "Mixed CamelCase and snake_case: parseHTTPResponse, XMLHttpRequest, getURLForID, iPhone.",
    "Numbers: 1 12 123 1234 12345 123456 3.14159 -42 1e10 0x1F 2024-08-06 1,000,000 $19.99 50%",
    "Sluice makes calls to LLM provider APIs survive the ways those APIs fail: 429 rate limits, "
    "503/529 overload, 504 timeouts, dropped connections, streams that stall or die half-way.",
    "Special-token text is ordinary text: <|endoftext|> <|fim_prefix|><|fim_middle|><|fim_suffix|> <|endofprompt|>",
    "URLs and paths: https://api.openai.com/v1/chat/completions?stream=true /usr/local/bin//x a/b/c\\d",
    "Punctuation!!! ??? ... --- *** ### @@@ ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}} <<< >>> ''' \"\"\"",
    "e-mail: someone+tag@example.co.uk, phone +1 (555) 010-9999, ISBN 978-3-16-148410-0.",
    "Café naïve résumé façade coöperate Ångström Zürich São Paulo Kraków Dvořák Øresund.",
]

CODE = [
    'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{v:?}");\n}\n',
    "def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(20)])\n",
    '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 256}',
    "<!DOCTYPE html>\n<html lang=\"en\">\n  <head><meta charset=\"utf-8\"><title>T</title></head>\n  <body>\n    <div class=\"a b\">x &amp; y</div>\n  </body>\n</html>\n",
    "SELECT u.id, COUNT(*) AS n FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE u.created_at >= '2024-01-01' GROUP BY u.id HAVING n > 3;",
    "#include <stdio.h>\r\nint main(void) {\r\n\tprintf(\"%d\\n\", 42);\r\n\treturn 0;\r\n}\r\n",
    "const x = async () => { await fetch(`/api/${id}?q=${encodeURIComponent(q)}`); };\n// TODO: handle errors\n",
    "    indented = 4\n        deeper = 8\n            deepest = 12\n\n\n\n    back = 4\n",
    "diff --git a/x.rs b/x.rs\n@@ -1,3 +1,4 @@\n-let a = 1;\n+let a = 2;\n+let b = 3;\n",
    "x=1;y=2;z=x+y*3/4-5%6**7//8|9&10^~11<<12>>13==14!=15<=16>=17&&18||19",
]

OTHER_SCRIPTS = [
    "机器学习是人工智能的一个分支。今天天气很好，我们去公园散步吧！",
    "日本語のテキスト：東京は日本の首都です。ひらがな、カタカナ、漢字が混ざっています。",
    "한국어 텍스트입니다. 서울은 대한민국의 수도입니다.",
    "Русский текст: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "العربية: نص عربي للاختبار مع أرقام ١٢٣ و 456.",
    "עברית: טקסט לבדיקה.",
    "हिन्दी: यह एक परीक्षण वाक्य है।",
    "ภาษาไทย: นี่คือประโยคทดสอบ",
    "Tiếng Việt: Đây là một câu thử nghiệm có dấu.",
    "Combining marks: e\u0301 a\u0308 n\u0303 o\u0302\u0323 Z\u0351\u0352\u0353A\u0354L\u0355G\u0356O",
    "Mixed 中文 English 日本語 한국어 русский 123 ！？。、",
    "Fullwidth: ＡＢＣ１２３ａｂｃ　（全角スペース）",
]

EMOJI = [
    "😀😃😄😁😆😅🤣😂🙂🙃",
    "👨‍👩‍👧‍👦 👩🏽‍💻 🧑🏿‍🚀 🏳️‍🌈 🇺🇸🇯🇵🇩🇪 ❤️‍🔥 👍🏻👍🏼👍🏽👍🏾👍🏿",
    "Text with emoji 🚀 in the middle 🎉 and at the end 🔥",
    "🦀🐍☕️🐳 keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ and ©️®️™️",
    "𝓜𝓪𝓽𝓱 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 𝕯𝖔𝖚𝖇𝖑𝖊 ∀x∈ℝ: x²≥0 ∑∫∂∇ ≤≥≠≈",
]

WHITESPACE = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "\t",
    "a  b   c    d     e",
    "trailing spaces   ",
    "   leading spaces",
    "trailing newline\n",
    "trailing mixed \t \n \t ",
    "line1\nline2\n\nline4\n\n\nline7",
    "tabs\t\tand\t\t\tspaces   mixed \t \t",
    "windows\r\nline\r\nendings\r\n\r\n",
    "old mac\rline\rendings",
    "spaces before newline    \n    and after",
    "nbsp:\u00a0\u00a0x thin:\u2009y em:\u2003z ideographic:\u3000w zwsp:\u200bv",
    " " * 50 + "x",
    "x" + " " * 50,
    "\n" * 30,
    " \n" * 20,
    "\t" * 40,
    "a\u2028b\u2029c\u0085d\u000be\u000cf",
]

REPEATS = [
    "a" * 1000,
    "ab" * 500,
    "abc " * 300,
    " " * 1000,
    "." * 500,
    "1" * 500,
    "0123456789" * 50,
    "the " * 400,
    "😀" * 200,
    "中" * 300,
    "!?" * 250,
    "=" * 200 + "\n" + "-" * 200,
    "lorem ipsum dolor sit amet, " * 40,
    "AAAAaaaaAAAAaaaa" * 40,
]


def base64_samples(rng: random.Random) -> list[str]:
    out = []
    for n in (3, 16, 57, 300, 1500):
        raw = bytes(rng.randrange(256) for _ in range(n))
        out.append(base64.b64encode(raw).decode())
        out.append(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    blob = base64.encodebytes(bytes(rng.randrange(256) for _ in range(600))).decode()
    out.append("data:image/png;base64," + blob)
    out.append(bytes(rng.randrange(256) for _ in range(200)).hex())
    return out


# Code-point ranges for random text: ASCII, Latin-1 and Extended, Greek/Cyrillic, CJK, Hangul,
# emoji and astral symbols, combining marks, assorted whitespace.
RANGES = [
    (0x20, 0x7E, 30),
    (0x0A, 0x0A, 3),
    (0x09, 0x09, 1),
    (0x0D, 0x0D, 1),
    (0xA0, 0x24F, 6),
    (0x300, 0x36F, 2),
    (0x370, 0x4FF, 4),
    (0x600, 0x6FF, 2),
    (0x900, 0x97F, 1),
    (0x2000, 0x206F, 2),
    (0x3000, 0x30FF, 3),
    (0x4E00, 0x9FFF, 6),
    (0xAC00, 0xD7A3, 3),
    (0x1F300, 0x1FAFF, 4),
    (0x1D400, 0x1D7FF, 1),
    (0x10000, 0x10FFFF, 1),
]


def random_text(rng: random.Random, length: int) -> str:
    weights = [w for _, _, w in RANGES]
    chars = []
    while len(chars) < length:
        lo, hi, _ = rng.choices(RANGES, weights)[0]
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        chars.append(chr(cp))
    return "".join(chars)


def random_words(rng: random.Random, n: int) -> str:
    vocab = ENGLISH[1].split() + ["I'm", "isn't", "X", "42", "3.5", "\n", "\t", "  ", "—", "—", "it's"]
    return " ".join(rng.choice(vocab) for _ in range(n))


def texts() -> list[str]:
    rng = random.Random(20240806)
    out: list[str] = []
    out += ENGLISH + CODE + OTHER_SCRIPTS + EMOJI + WHITESPACE + REPEATS
    out += base64_samples(rng)
    # Concatenations across categories exercise the boundaries between pre-tokenizer pieces.
    groups = [ENGLISH, CODE, OTHER_SCRIPTS, EMOJI, WHITESPACE]
    for _ in range(40):
        out.append("".join(rng.choice(rng.choice(groups)) for _ in range(rng.randint(2, 5))))
    for _ in range(60):
        out.append(random_text(rng, rng.choice([1, 2, 3, 5, 8, 13, 40, 120, 400])))
    for _ in range(20):
        out.append(random_words(rng, rng.randint(5, 200)))
    # Every short ASCII whitespace/letter/apostrophe combination up to length 3: the corners
    # of the contraction and look-ahead rules.
    alphabet = [" ", "\n", "\t", "a", "A", "'", "s", "1", "/", "!"]
    for a in alphabet:
        for b in alphabet:
            out.append(a + b)
            for c in (" ", "s", "\n"):
                out.append(a + b + c)
    seen = set()
    unique = []
    for t in out:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    return unique


def main() -> None:
    encodings = {name: tiktoken_local.local_encoding(name) for name in tiktoken_local.ENCODINGS}
    all_texts = texts()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        header = {
            "comment": "Token-count parity vectors: one (text, encoding, tokens) triple per line "
            "after this header. tokens = len(enc.encode_ordinary(text)) by Python tiktoken. "
            "Generated by scripts/gen_token_vectors.py; do not edit by hand.",
            "generator": tiktoken_local.describe(),
            "encodings": list(encodings),
            "texts": len(all_texts),
        }
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for text in all_texts:
            for name, enc in encodings.items():
                row = {"encoding": name, "tokens": len(enc.encode_ordinary(text)), "text": text}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {2 * len(all_texts)} vectors ({len(all_texts)} texts) to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
