"""lm-eval-harness runs on an exported directory (its `hf` model type, custom code) and its
per-example log-likelihoods equal the JAX model's scoring of the same continuations
(minillm_jax.model.loglikelihood): a tiny multiple-choice task from this repository, fully offline."""

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
from tests.export.common import random_params, tiny_config
from tests.export.test_hf_options import MODERN

TASK_DIR = "tests/export/lm_eval_tiny"


def test_encode_pair_moves_trailing_spaces_and_splits_whole_encodings():
    assert encode_pair("Hello", " world") == ([15496], [995])
    assert encode_pair("Hello ", "world") == ([15496], [995])  # the space joins the word
    assert encode_pair("", " world") == ([50256], [995])


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                    reason="lm_eval is not installed (pip install -e '.[test]' installs it)")
def test_lm_eval_loglikelihoods_equal_ours(tmp_path):
    config = tiny_config("llama", tied=False, n_layer=2, vocab_size=50304, sequence_length=64,
                         **{k: v for k, v in MODERN.items() if k != "tie_embeddings"},
                         logit_softcap=10.0)
    params = random_params(config, seed=4)
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
    worst = 0.0
    for sample in samples:
        pairs = [(a["arg_0"], a["arg_1"]) for _, a in sorted(sample["arguments"].items(),
                                                              key=lambda kv: int(kv[0][9:]))]
        theirs = [(float(ll), greedy == "True") for ll, greedy in sample["filtered_resps"]]
        ours = continuation_logprobs(net, params, pairs)
        for (ll, greedy), (our_ll, our_greedy) in zip(theirs, ours):
            worst = max(worst, abs(ll - our_ll) / abs(our_ll))
            assert greedy == our_greedy
        assert sample["acc"] == float(int(np.argmax([o[0] for o in ours])) == sample["doc"]["answer"])
    assert worst <= 1e-5, worst
    print(f"lm_eval vs JAX log-likelihood: worst relative difference {worst:.2e}")
