"""Hugging Face files for the GPT-2 tokenizer, derived offline from the vendored tiktoken ranks.

tiktoken stores byte strings with merge ranks; HF's byte-level BPE stores the same vocabulary as
unicode strings (GPT-2's bytes_to_unicode map) plus an ordered merges list. Each token of rank
r >= 256 is the merge of exactly two tokens: the pair left after running BPE on its bytes using
only merges of rank < r (so the merges come out in rank order and reproduce GPT-2's merges.txt).
"""

from __future__ import annotations

import functools
import json
import os

from minillm_jax.data.tokenizer import EOT_TOKEN, get_tokenizer

EOT_TEXT = "<|endoftext|>"
FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json")


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _to_str(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _split(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """tiktoken's BPE on `token` with merges of rank < max_rank only."""
    parts = [bytes([b]) for b in token]
    while True:
        best, best_rank = None, None
        for j in range(len(parts) - 1):
            rank = ranks.get(parts[j] + parts[j + 1])
            if rank is not None and rank < max_rank and (best_rank is None or rank < best_rank):
                best, best_rank = j, rank
        if best is None:
            return parts
        parts[best:best + 2] = [parts[best] + parts[best + 1]]


@functools.lru_cache(maxsize=None)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab {token string: id} including <|endoftext|>, merges in rank order)."""
    enc = get_tokenizer("gpt2")
    ranks: dict[bytes, int] = enc._mergeable_ranks  # noqa: SLF001 (public in all versions)
    vocab, merges = {}, []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[_to_str(token)] = rank
        if len(token) == 1:
            continue
        parts = _split(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not a single merge: {parts}")
        merges.append((_to_str(parts[0]), _to_str(parts[1])))
    vocab[EOT_TEXT] = EOT_TOKEN
    return vocab, merges


def _tokenizer_json(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str | None:
    """tokenizer.json (the fast tokenizer), when the `tokenizers` library is installed."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        return None
    bpe_vocab = {k: v for k, v in vocab.items() if k != EOT_TEXT}
    tok = Tokenizer(models.BPE(vocab=bpe_vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOT_TEXT, special=True, normalized=False)])
    if tok.token_to_id(EOT_TEXT) != EOT_TOKEN:
        raise ValueError(f"{EOT_TEXT} got id {tok.token_to_id(EOT_TEXT)}, expected {EOT_TOKEN}")
    return tok.to_str(pretty=False)


def write_gpt2_tokenizer(out_dir: str, model_max_length: int) -> list[str]:
    """Writes vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (and
    tokenizer.json when `tokenizers` is installed); returns the file names written.
    `AutoTokenizer.from_pretrained(out_dir)` then gives ids equal to tiktoken's GPT-2 encoding."""
    os.makedirs(out_dir, exist_ok=True)
    vocab, merges = vocab_and_merges()
    written = []

    def write(name: str, text: str) -> None:
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(text)
        written.append(name)

    write("vocab.json", json.dumps(vocab, ensure_ascii=False))
    write("merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    fast = _tokenizer_json(vocab, merges)
    if fast is not None:
        write("tokenizer.json", fast)
    special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    write("special_tokens_map.json", json.dumps(special, indent=2))
    write("tokenizer_config.json", json.dumps({
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "added_tokens_decoder": {str(EOT_TOKEN): {
            "content": EOT_TEXT, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}},
        **special,
    }, indent=2))
    return written
