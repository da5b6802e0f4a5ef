"""Python tiktoken, offline: the real `tiktoken.Encoding` built from local vocabulary files.

tiktoken downloads its `.tiktoken` vocabulary files from openaipublic.blob.core.windows.net on
first use; that host is not reachable from where Sluice is built. The same files ship inside the
`bpe-openai` crate that Sluice itself uses (`data/<name>.tiktoken.gz` in its crates.io source),
so this module:

1. finds them in the local cargo registry (`$CARGO_HOME/registry/src/*/bpe-openai-*/data/`),
2. calls the installed tiktoken's own `tiktoken_ext.openai_public.<name>()` constructor with its
   `load_tiktoken_bpe` redirected from the URL to the decompressed local file, keeping
   tiktoken's `expected_hash`, so tiktoken itself verifies the SHA-256 of the file against the
   hash it pins for the official download, and the pattern string and special tokens are
   exactly the installed tiktoken's,
3. returns `tiktoken.Encoding(**that)`.

The result is byte-for-byte the encoding `tiktoken.get_encoding(name)` would build online.
"""

from __future__ import annotations

import glob
import gzip
import os
import tempfile

import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

ENCODINGS = ("cl100k_base", "o200k_base")


def _vocab_gz(name: str) -> str:
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(f"{cargo_home}/registry/src/*/bpe-openai-*/data/{name}.tiktoken.gz"))
    if not found:
        raise SystemExit(
            f"{name}.tiktoken.gz not found under {cargo_home}/registry/src: "
            "run `cargo fetch` in the workspace first (bpe-openai ships the vocabularies)"
        )
    return found[-1]


def local_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken Encoding `name`, built from the local copy of its official vocabulary."""
    source = _vocab_gz(name)
    with gzip.open(source, "rb") as f:
        data = f.read()
    tmp = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".tiktoken", delete=False)
    try:
        tmp.write(data)
        tmp.close()
        real_loader = openai_public.load_tiktoken_bpe
        os.environ["TIKTOKEN_CACHE_DIR"] = ""  # read the file itself, no cache copy

        def local_loader(url: str, expected_hash: str | None = None):
            assert url.endswith(f"/{name}.tiktoken"), url
            # tiktoken checks the SHA-256 against the hash it pins for the official file.
            return tiktoken.load.load_tiktoken_bpe(tmp.name, expected_hash=expected_hash)

        openai_public.load_tiktoken_bpe = local_loader
        try:
            spec = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = real_loader
    finally:
        os.unlink(tmp.name)
    return tiktoken.Encoding(**spec)


def describe() -> str:
    return (
        f"Python tiktoken {tiktoken.__version__}, encodings built by tiktoken's own "
        "tiktoken_ext.openai_public constructors from the vocabulary files shipped in the "
        f"bpe-openai crate ({os.path.basename(os.path.dirname(os.path.dirname(_vocab_gz('cl100k_base'))))}), "
        "SHA-256-checked by tiktoken against its pinned hashes for the official downloads"
    )
