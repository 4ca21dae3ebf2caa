"""Typed run configuration: defaults from configs/base.py, every field checked once, up front."""

import dataclasses

import pytest

from minillm_jax import config as C
from tests.conftest import REPO, tiny_config


@pytest.mark.parametrize("field,value,message", [
    ("lr", -1.0, "config.lr=-1.0 must be > 0"),
    ("warmup_percent", 1.5, "config.warmup_percent=1.5 must be in [0.0, 1.0)"),
    ("beta1", 1.0, "config.beta1=1.0 must be in [0.0, 1.0)"),
    ("beta2", -0.1, "config.beta2=-0.1 must be in [0.0, 1.0)"),
    ("eps", 0.0, "config.eps=0.0 must be > 0"),
    ("weight_decay", -0.1, "config.weight_decay=-0.1 must be >= 0"),
    ("dropout", 1.0, "config.dropout=1.0 must be in [0.0, 1.0)"),
    ("iterations", 0, "config.iterations=0 must be > 0"),
    ("eval_freq", 0, "config.eval_freq=0 must be > 0"),
    ("save_every", -5, "config.save_every=-5 must be >= 0"),
    ("save_every_minutes", -1.0, "config.save_every_minutes=-1.0 must be >= 0"),
    ("budget_minutes", -3.0, "config.budget_minutes=-3.0 must be >= 0"),
    ("mesh_fsdp", 0, "config.mesh_fsdp=0 must be > 0"),
    ("mesh_data", 0, "config.mesh_data=0 must be -1"),
    ("grad_clip", -1.0, "config.grad_clip=-1.0 must be >= 0"),
    ("residual_dtype", "float16", "config.residual_dtype='float16' is unknown"),
    ("compute_dtype", "fp16", "config.compute_dtype='fp16' is unknown: use one of ['auto', "),
    ("attention_impl", "flash", "config.attention_impl='flash' is unknown"),
    ("loss_chunk_size", -1, "config.loss_chunk_size=-1 must be >= 0"),
    ("opt", "adafactor", "config.opt='adafactor' is unknown"),
    ("nonfinite_rollback_after", 0, "config.nonfinite_rollback_after=0 must be > 0"),
    ("logit_softcap", -30.0, "config.logit_softcap=-30.0 must be >= 0"),
    ("mlp_activation", "swish", "config.mlp_activation='swish' is unknown"),
])
def test_bad_values_are_one_clear_line(field, value, message):
    config = tiny_config(**{field: value})
    with pytest.raises(C.ConfigError) as err:
        C.build_config(config)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_field_is_refused():
    with pytest.raises(C.ConfigError, match=r"config fields \['learning_rate'\] are unknown"):
        C.build_config({"learning_rate": 1e-3})


def test_defaults_come_from_base_and_aliases_resolve():
    base = C.base_defaults()
    C.base_defaults()["n_layer"] = -1  # a caller editing its copy changes nothing for others
    assert C.base_defaults()["n_layer"] == base["n_layer"] > 0
    typed = C.build_config({"model": "llama2", "scheduler": "none", "attention_impl": ""}, "x")
    assert typed.model.model == "llama" and typed.optim.scheduler == "constant"
    assert typed.execution.attention_impl == "xla"  # "" (older configs) was JAX's XLA path
    assert typed.model.n_layer == base["n_layer"] and typed.optim.lr == base["lr"]
    assert typed.data.data_dir == "data/slimpajama" and typed.run.workdir == "runs/x"
    assert typed.data.eval_batch_size == base["batch_size"]
    assert typed.model.attention_dropout == typed.model.dropout  # -1: same as dropout
    # every configs/base.py field belongs to exactly one part
    fields = [f.name for part in C.PARTS.values() for f in dataclasses.fields(part)]
    assert sorted(fields) == sorted(base) and len(fields) == len(set(fields))
    assert typed.to_dict().keys() == base.keys()


def test_every_config_file_builds():
    for path in sorted((REPO / "configs").glob("*.py")):
        C.build_config(C.load_config(path), path.stem)


def test_model_identity_ignores_training_only_fields():
    a = C.ModelConfig(model="llama", dropout=0.0)
    b = C.ModelConfig(model="llama", dropout=0.2, init_std=0.01)
    assert a.identity() == b.identity() and a != b
    assert C.ModelConfig(n_head=8).identity() != C.ModelConfig(n_head=12).identity()


def test_device_checks():
    typed = C.build_config(tiny_config(batch_size=8, mesh_fsdp=2))
    assert C.check_devices(typed, 4) == (2, 2)
    with pytest.raises(C.ConfigError, match="config.mesh_fsdp=2 must divide the 3 devices"):
        C.check_devices(typed, 3)
    with pytest.raises(C.ConfigError, match="config.batch_size=6 is not divisible by the 4"):
        C.check_devices(C.build_config(tiny_config(batch_size=6)), 4)


@pytest.mark.parametrize("requested,platform,dtype", [
    ("auto", "gpu", "bfloat16"), ("auto", "cuda", "bfloat16"), ("auto", "rocm", "bfloat16"),
    ("auto", "tpu", "bfloat16"), ("auto", "cpu", "float32"), ("auto", "METAL", "float32"),
    ("float32", "gpu", "float32"), ("float32", "tpu", "float32"), ("bfloat16", "cpu", "bfloat16"),
])
def test_compute_dtype_resolution_per_platform(requested, platform, dtype):
    """auto: bfloat16 on accelerators, float32 on CPU (and anything unknown); an explicit dtype
    is kept everywhere, with a reason saying which rule chose it."""
    resolved, reason = C.resolve_compute_dtype(requested, platform)
    assert resolved == dtype and "\n" not in reason
    if requested == "auto":
        assert reason.startswith(f"auto: {dtype}") and platform in reason
        if dtype == "bfloat16":
            assert "--config.compute_dtype=float32" in reason  # how to force float32
    else:
        assert reason == f"compute_dtype={requested} in the config"
    execution = C.ExecutionConfig(compute_dtype=requested)
    assert execution.for_platform(platform).compute_dtype == dtype
    resolved_execution = execution.for_platform(platform)
    # nothing else changes but the other platform-resolved field (tests/test_dense.py)
    assert dataclasses.replace(resolved_execution, compute_dtype=requested,
                               dense_weight_grad="auto") == execution


def test_compute_dtype_defaults_to_auto_and_the_run_resolves_it_here():
    from minillm_jax.train.build import build_run

    assert C.base_defaults()["compute_dtype"] == "auto"
    run = build_run(C.build_config(tiny_config()))  # nothing is compiled
    assert run.config.execution.compute_dtype == "float32"  # this machine is a CPU
    assert run.compute_dtype_reason.startswith("auto: float32 on cpu")
    forced = build_run(C.build_config(tiny_config(compute_dtype="bfloat16")))
    assert forced.config.execution.compute_dtype == "bfloat16"
    assert forced.abstract_state.params["wte"]["embedding"].dtype == "float32"


@pytest.mark.parametrize("field", ["lr", "budget_minutes", "save_every_minutes", "grad_clip",
                                   "weight_decay", "rope_theta", "eps", "sample_temperature"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_are_refused(field, value):
    with pytest.raises(C.ConfigError, match=rf"^config\.{field}=-?(inf|nan) must"):
        C.build_config({**tiny_config().to_dict(), field: value})


def test_every_bad_field_is_reported_at_once():
    flat = {**tiny_config().to_dict(), "lr": -1.0, "beta1": 2.0, "iterations": 0,
            "batch_size": 0, "budget_minutes": float("inf"), "opt": "adafactor"}
    with pytest.raises(C.ConfigError) as err:
        C.build_config(flat)
    message = str(err.value)
    assert message.startswith("6 config values are invalid:")
    for expected in ("config.lr=-1.0 must be > 0", "config.beta1=2.0 must be in [0.0, 1.0)",
                     "config.iterations=0 must be > 0", "config.batch_size=0 must be > 0",
                     "config.budget_minutes=inf must be a finite number",
                     "config.opt='adafactor' is unknown"):
        assert expected in message, message


@pytest.mark.parametrize("field,value,message", [
    ("lr", "3e-4", "config.lr='3e-4' must be a number (got str)"),
    ("iterations", None, "config.iterations=None must be an integer (got NoneType)"),
    ("iterations", 2.5, "config.iterations=2.5 must be an integer (got float)"),
    ("resume", "yes", "config.resume='yes' must be True or False (got str)"),
    ("opt", 3, "config.opt=3 must be a string (got int)"),
])
def test_wrong_types_are_one_line(field, value, message):
    with pytest.raises(C.ConfigError) as err:
        C.build_config({**tiny_config().to_dict(), field: value})
    assert str(err.value) == message


def test_cli_reports_bad_values_in_one_message_exit_2(tmp_path, capsys):
    """Through the command line: every bad value in one message, exit 2, no traceback, nothing
    compiled."""
    from minillm_jax.main import main

    code = main(["--config", str(REPO / "configs" / "demo_2023.py"), "--config.lr=inf",
                 "--config.budget_minutes=nan", f"--config.workdir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: 2 config values are invalid:")
    assert "config.lr=inf" in err and "config.budget_minutes=nan" in err


def test_batch_larger_than_the_data_is_refused_before_compiling(tmp_path, shakespeare_dir,
                                                                monkeypatch):
    from minillm_jax.train import build
    from minillm_jax.data import DataError
    from minillm_jax.train.trainer import train

    def no_compile(self):
        raise AssertionError("compiled before checking the data")

    monkeypatch.setattr(build.Run, "compile_train_step", no_compile)
    with pytest.raises(DataError, match="shorten|fewer than one batch|longer than"):
        train(tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "a"),
                          batch_size=100_000))
    with pytest.raises(DataError, match="longer than the validation data"):
        train(tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "b"),
                          sequence_length=200_000, batch_size=1))
