"""The HF GPT-2 tokenizer derived from the vendored tiktoken ranks gives tiktoken's ids."""

import json

import numpy as np
import pytest

from minillm_jax import export
from minillm_jax.export.hf_tokenizer import bytes_to_unicode, vocab_and_merges
from minillm_jax.data.tokenizer import get_tokenizer
from tests.export.common import tiny_config

SAMPLES = [
    "Once upon a time, there was a model. It's the 3rd test; we'll see!",
    "  leading spaces,\ttabs\r\nand newlines\n\n\n trailing   ",
    "naïve café — 日本語のテキスト 🤖🚀 ½ €100,000.50 don't I'M You'VE",
    "def f(x):\n    return x**2  # comment\n",
    "<|endoftext|> is plain text here",
]


def test_vocab_and_merges_reproduce_tiktoken():
    vocab, merges = vocab_and_merges()
    enc = get_tokenizer()
    assert len(vocab) == 50257 and len(merges) == 50000
    assert merges[:3] == [("Ġ", "t"), ("Ġ", "a"), ("h", "e")]  # GPT-2's merges.txt
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    ids = sorted(vocab.values())
    assert ids == list(range(50257))
    for token, i in vocab.items():
        if i != 50256:
            assert bytes(decoder[c] for c in token) == enc.decode_single_token_bytes(i)


def test_exported_model_dir_tokenizer_matches_tiktoken(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = tiny_config("gpt", n_layer=1, vocab_size=50304)
    rng = np.random.default_rng(0)
    from minillm_jax.export.mapping import flatten, unflatten
    from minillm_jax.model.transformer import ModelConfig, Transformer, abstract_params

    shapes = flatten(abstract_params(Transformer(ModelConfig.from_flat(config.to_dict()))))
    params = unflatten({k: rng.standard_normal(v.shape).astype(np.float32) * 0.02
                        for k, v in shapes.items()})
    written, _ = export.hf.save(params, config, str(tmp_path), tokenizer=True)
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= set(written)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    enc = get_tokenizer()
    for text in SAMPLES:
        ids = tok(text)["input_ids"]
        assert ids == enc.encode_ordinary(text) or "<|endoftext|>" in text
        assert tok.decode(ids) == text
    assert tok("a<|endoftext|>b")["input_ids"] == enc.encode("a<|endoftext|>b",
                                                             allowed_special="all")
    assert tok.eos_token_id == 50256
    hf_config = json.loads((tmp_path / "config.json").read_text())
    assert hf_config["eos_token_id"] == 50256 and hf_config["vocab_size"] == 50304
