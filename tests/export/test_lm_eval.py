"""lm-eval-harness runs on an exported directory (its `hf` model type, custom code) and its
per-example log-likelihoods and greedy flags equal the JAX model's scoring of the same
continuations (minillm_jax.model.loglikelihood): a tiny multiple-choice task from this
repository, fully offline."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minillm_jax import export
from minillm_jax.model.loglikelihood import continuation_logprobs, encode_pair
from minillm_jax.model.transformer import ModelConfig, Transformer
from tests.conftest import REPO
from tests.export.common import MODERN, random_params, tiny_config

TASK_DIR = "tests/export/lm_eval_tiny"


def _task_pairs() -> tuple[list[list[tuple[str, str]]], list[dict]]:
    """(each question's (context, continuation) requests as lm-eval makes them, the questions)."""
    docs = [json.loads(line) for line in open(REPO / TASK_DIR / "tiny_mc.jsonl")]
    return [[(d["question"], " " + c) for c in d["choices"]] for d in docs], docs


def _plant_successors(params: dict, successors: dict[int, int], seed: int = 0) -> dict:
    """A copy of the weights in which token b is the clear argmax after token a, for each
    a -> b: a's embedding is a long vector along its own direction (orthogonal to the other
    planted tokens', so it dominates the residual stream over the random blocks), and b's
    lm_head column lies along that direction. Random weights alone make no continuation
    greedy: lm-eval's is_greedy flags would all be False and comparing them would compare
    nothing."""
    params = {k: dict(v) if isinstance(v, dict) else v for k, v in params.items()}
    wte = np.array(params["wte"]["embedding"])
    head = np.array(params["lm_head"]["kernel"])  # (C, V)
    sources = sorted(successors)
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.standard_normal((wte.shape[1], len(sources))))
    for a, u in zip(sources, directions.T):
        wte[a] = 30.0 * u  # |block outputs| ~ 7 over 2 layers of random weights
        head[:, successors[a]] = u
    params["wte"] = {"embedding": wte.astype(np.float32)}
    params["lm_head"] = {"kernel": head.astype(np.float32)}
    return params


def test_encode_pair_moves_trailing_spaces_and_splits_whole_encodings():
    assert encode_pair("Hello", " world") == ([15496], [995])
    assert encode_pair("Hello ", "world") == ([15496], [995])  # the space joins the word
    assert encode_pair("", " world") == ([50256], [995])


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None
                    or importlib.util.find_spec("transformers") is None,
                    reason="lm_eval[hf] is not installed (pip install -e '.[test]' installs it)")
def test_lm_eval_loglikelihoods_equal_ours(tmp_path):
    config = tiny_config("llama", tied=False, n_layer=2, vocab_size=50304, sequence_length=64,
                         **{k: v for k, v in MODERN.items() if k != "tie_embeddings"},
                         logit_softcap=10.0)
    # the right answers' tokens follow each other greedily (where a token has two successors,
    # the first wins): some continuations are greedy, the others not
    questions, docs = _task_pairs()
    successors = {}
    for pairs, doc in zip(questions, docs):
        context_ids, continuation_ids = encode_pair(*pairs[doc["answer"]])
        ids = context_ids + continuation_ids
        for t in range(len(context_ids) - 1, len(ids) - 1):
            successors.setdefault(ids[t], ids[t + 1])
    params = _plant_successors(random_params(config, seed=4), successors)
    model_dir = str(tmp_path / "hf")
    written, notes = export.hf.save(params, config, model_dir)
    assert "modeling_minillm.py" in written and "tokenizer.json" in written

    out = tmp_path / "lm_eval_out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf_home"), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={model_dir},trust_remote_code=True,dtype=float32", "--include_path",
           TASK_DIR, "--tasks", "minillm_tiny_mc", "--batch_size", "4", "--device", "cpu",
           "--log_samples", "--output_path", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (samples_file,) = glob.glob(str(out / "*" / "samples_minillm_tiny_mc_*.jsonl"))
    samples = [json.loads(line) for line in open(samples_file)]
    assert len(samples) == 4

    net = Transformer(ModelConfig.from_flat(config.to_dict()))
    worst, flags = 0.0, []
    for sample in samples:
        pairs = [(a["arg_0"], a["arg_1"]) for _, a in sorted(sample["arguments"].items(),
                                                              key=lambda kv: int(kv[0][9:]))]
        theirs = [(float(ll), greedy == "True") for ll, greedy in sample["filtered_resps"]]
        ours = continuation_logprobs(net, params, pairs)
        for (ll, greedy), (our_ll, our_greedy) in zip(theirs, ours):
            worst = max(worst, abs(ll - our_ll) / abs(our_ll))
            assert greedy == our_greedy
            flags.append(greedy)
        assert sample["acc"] == float(int(np.argmax([o[0] for o in ours])) == sample["doc"]["answer"])
    assert worst <= 1e-5, worst
    assert True in flags and False in flags, flags  # the greedy comparison compared both
    print(f"lm_eval vs JAX log-likelihood: worst relative difference {worst:.2e}")
