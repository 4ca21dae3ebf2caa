"""The GPT-2 BPE tokenizer, built offline from the vendored rank file.

tiktoken would download `gpt2.tiktoken` on first use; we ship the file and
verify its hash instead, so tokenization works on machines without network.
"""

from __future__ import annotations

import functools
from importlib import resources

import tiktoken
from tiktoken.load import load_tiktoken_bpe

GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT_TOKEN = 50256
GPT2_VOCAB = 50257
# The pre-tokenisation regex of GPT-2, in tiktoken's faster equivalent form (r50k_base).
_R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def tiktoken_file() -> str:
    """Path of the vendored GPT-2 rank file."""
    return str(resources.files("minillm_jax") / "assets" / "gpt2.tiktoken")


@functools.lru_cache(maxsize=None)
def get_tokenizer(name: str = "gpt2") -> tiktoken.Encoding:
    """Returns the named encoding; only `gpt2` ships with the package."""
    if name != "gpt2":
        raise ValueError(f"unknown tokenizer {name!r}: only 'gpt2' is available offline")
    ranks = load_tiktoken_bpe(tiktoken_file(), expected_hash=GPT2_TIKTOKEN_SHA256)
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=_R50K_PAT,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN},
        explicit_n_vocab=GPT2_VOCAB,
    )
