"""minillm_jax/config/cli.py (--config FILE --config.FIELD=VALUE for argparse, typed by ml_collections)
and the shape every command line shares: `python -m minillm_jax.X` with argparse, tools/*.py
thin wrappers around the same `main`."""

import argparse
import importlib
import importlib.util
import textwrap

import pytest

from minillm_jax.config.cli import parse_config_args
from tests.conftest import REPO

CONFIG = textwrap.dedent("""
    import ml_collections

    def get_config():
        return ml_collections.ConfigDict(dict(n_layer=4, lr=1e-3, resume=True, model="llama"))
""")


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(CONFIG)
    return str(path)


def _parser():
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.tool")
    parser.add_argument("--steps", type=int, default=5)
    return parser


def _error(capsys, argv):
    """(exit status, stderr) of a command line the parser refuses."""
    with pytest.raises(SystemExit) as exit_info:
        parse_config_args(_parser(), argv)
    return exit_info.value.code, capsys.readouterr().err


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage: python -m minillm_jax.tool")
    assert [line for line in lines if "error:" in line] == [lines[-1]]
    assert lines[-1].startswith("python -m minillm_jax.tool: error: ")
    assert "Traceback" not in err
    return lines[-1]


def test_overrides_are_typed_by_ml_collections(config_file):
    args, config, name = parse_config_args(_parser(), [
        "--config", config_file, "--config.n_layer=2", "--config.lr=3e-4",
        "--config.resume=False", "--steps", "7", "--config.model=gpt"])
    assert name == "tiny" and args.steps == 7 and args.config == config_file
    assert config.n_layer == 2 and type(config.n_layer) is int
    assert config.lr == 3e-4 and type(config.lr) is float
    assert config.resume is False
    assert config.model == "gpt"
    with pytest.raises(AttributeError):  # locked: no new fields
        config.new_field = 1


def test_two_token_form_and_order(config_file):
    # `--config.lr 3e-4`, overrides before --config, `--noconfig.BOOL`, negative values
    _, config, _ = parse_config_args(_parser(), [
        "--config.lr", "3e-4", "--config.n_layer", "-1", "--noconfig.resume",
        f"--config={config_file}"])
    assert config.lr == 3e-4 and config.n_layer == -1 and config.resume is False
    _, config, _ = parse_config_args(_parser(), ["--config", config_file, "--config.lr", "-2e-3",
                                                 "--config.resume"])
    assert config.lr == -2e-3 and config.resume is True
    _, config, _ = parse_config_args(_parser(), ["--config", config_file])
    assert config.to_dict() == dict(n_layer=4, lr=1e-3, resume=True, model="llama")


@pytest.mark.parametrize("override,expected", [
    ("--config.n_layer=2.5", "flag --config.n_layer=2.5: invalid literal for int()"),
    ("--config.lr=fast", "flag --config.lr=fast: could not convert string to float"),
    ("--config.resume=maybe", "--config.resume=maybe"),
])
def test_bad_value_exits_2_in_one_line(config_file, capsys, override, expected):
    code, err = _error(capsys, ["--config", config_file, override])
    assert code == 2 and expected in _one_error_line(err)


def test_unknown_field_exits_2_in_one_line(config_file, capsys):
    code, err = _error(capsys, ["--config", config_file, "--config.bogus=1"])
    assert code == 2
    assert _one_error_line(err).endswith(f"config {config_file} has no field 'bogus'")
    code, err = _error(capsys, ["--config", config_file, "--config.lr_", "1"])
    assert code == 2 and 'Did you mean "lr" instead of "lr_"?' in _one_error_line(err)


@pytest.mark.parametrize("argv,expected", [
    (["--verbose"], "unrecognized arguments: --verbose"),
    (["stray"], "unrecognized arguments: stray"),
    (["--config.resume", "False"], "unrecognized arguments: False (a boolean override is written"),
    (["--config.n_layer"], "Missing value for flag --config.n_layer"),
])
def test_other_arguments_exit_2(config_file, capsys, argv, expected):
    code, err = _error(capsys, ["--config", config_file, *argv])
    assert code == 2 and expected in _one_error_line(err)


def test_config_file_is_required_and_must_exist(tmp_path, capsys):
    code, err = _error(capsys, ["--steps", "3"])
    assert code == 2 and "the following arguments are required: --config" in _one_error_line(err)
    missing = str(tmp_path / "none.py")
    code, err = _error(capsys, ["--config", missing, "--config.lr=1"])
    assert code == 2 and _one_error_line(err).endswith(f"--config {missing}: no such file")


def test_config_file_errors(tmp_path, capsys):
    # a ValueError of the config file (ConfigError, say) is a usage error: its last line
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config():\n    raise ValueError('n_layer must be positive')\n")
    code, err = _error(capsys, ["--config", str(bad)])
    assert code == 2 and _one_error_line(err).endswith("ValueError: n_layer must be positive")
    # any other exception is a bug in the file: its traceback is kept
    buggy = tmp_path / "buggy.py"
    buggy.write_text("def get_config():\n    return undefined_name\n")
    with pytest.raises(NameError):
        parse_config_args(_parser(), ["--config", str(buggy)])


def test_main_needs_a_config(capsys):
    from minillm_jax import main

    with pytest.raises(SystemExit) as exit_info:
        main.main([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: python -m minillm_jax.main")
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--config", str(REPO / "configs" / "demo.py"), "--config.n_layr=2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "has no field 'n_layr'" in err.splitlines()[-1]


CLIS = ["main", "experiments.benchmark", "evaluate", "sweep", "experiments.planner",
        "experiments.plotting", "experiments.gpu_check",
        "data.prepare", "data.bench", "optim.measure", "export.to_torch", "export.from_torch"]


@pytest.mark.parametrize("name", CLIS)
def test_every_cli_is_argparse_named_python_m(name, capsys):
    module = importlib.import_module(f"minillm_jax.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m minillm_jax.{name} ")


WRAPPERS = {"bench": "experiments.benchmark", "plot": "experiments.plotting",
            "plan": "experiments.planner",
            "convert_to_torch": "export.to_torch", "convert_from_torch": "export.from_torch",
            "bench_data": "data.bench", "gpu_check": "experiments.gpu_check",
            "gpu_aot": "experiments.gpu_aot", "chaos": "experiments.chaos"}


def test_tools_are_thin_wrappers():
    assert sorted(p.stem for p in (REPO / "tools").glob("*.py")) == sorted(WRAPPERS)
    for tool, name in WRAPPERS.items():
        path = REPO / "tools" / f"{tool}.py"
        spec = importlib.util.spec_from_file_location(f"tool_{tool}", path)
        wrapper = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(wrapper)
        assert wrapper.main is importlib.import_module(f"minillm_jax.{name}").main, tool
        code = [line for line in path.read_text().split('"""')[-1].splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
        assert len(code) <= 10, (tool, code)


def test_benchmark_refuses_no_timed_steps(capsys):
    from minillm_jax.experiments import benchmark

    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--config", str(REPO / "configs" / "demo.py"), "--steps", "0"])
    assert exit_info.value.code == 2
    assert "--steps must be >= 1" in capsys.readouterr().err.splitlines()[-1]


def test_run_command_turns_expected_errors_into_one_line(capsys):
    from minillm_jax.config.cli import run_command

    class BadInput(ValueError):
        pass

    def fails(kind):
        def work():
            raise kind("the field x=3 must be < 2")
        return work

    assert run_command(lambda: None, BadInput) == 0
    assert run_command(lambda: 1, BadInput) == 1
    assert run_command(lambda: {"val_loss": 3.0}, BadInput) == 0
    assert run_command(fails(BadInput), BadInput) == 2
    assert capsys.readouterr().err == "error: the field x=3 must be < 2\n"
    assert run_command(fails(OSError), {BadInput: 2, OSError: 1}) == 1
    assert capsys.readouterr().err == "error: the field x=3 must be < 2\n"
    with pytest.raises(KeyError):  # an unexpected error is a bug: its traceback stays
        run_command(fails(KeyError), (BadInput, OSError))

    def interrupted():
        raise KeyboardInterrupt

    assert run_command(interrupted, BadInput, interrupted="stopped: nothing written") == 130
    assert capsys.readouterr().err == "stopped: nothing written\n"
    with pytest.raises(KeyboardInterrupt):
        run_command(interrupted, BadInput)


def test_every_command_reports_errors_through_run_command():
    """One way to end a command on an expected error: no module prints its own `error:` line."""
    package = REPO / "minillm_jax"
    offenders = [str(p.relative_to(REPO)) for p in package.rglob("*.py")
                 if p.name != "cli.py" and 'print(f"error:' in p.read_text()]
    assert offenders == []


def test_console_scripts_are_the_commands_mains():
    """pyproject's console scripts call the same `main` as `python -m` (and tools/*.py)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"minillm-train", "minillm-sweep", "minillm-prepare", "minillm-sample"} <= set(scripts)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert function == "main", name
        assert callable(importlib.import_module(module).main), name
