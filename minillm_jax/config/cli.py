"""`--config FILE [--config.FIELD=VALUE ...]` for argparse command lines.

ml_collections parses typed config overrides (`--config.lr=3e-4`, `--config.resume=False`,
`--noconfig.resume`, nested and tuple fields), but it only ships an absl front end
(`config_flags.DEFINE_config_file` on an absl `FlagValues`). Every command line here is argparse,
so this module joins the two: argparse parses the tool's own options with `parse_known_args`, and
the `--config.*` tokens it did not consume go, after `--config=FILE`, to a private absl
`FlagValues` that holds only the config flag. The library therefore still loads the file, checks
that each overridden field exists and parses each value with the field's type; nothing is
re-implemented here, and no global absl flag is defined.

    parser = argparse.ArgumentParser(prog="python -m minillm_jax.X")
    parser.add_argument("--steps", type=int, default=5)
    args, config, name = parse_config_args(parser, argv)   # name: the config file's stem

Overrides take `--config.FIELD=VALUE` or `--config.FIELD VALUE` (a boolean field only the first
form, or bare `--config.FIELD` / `--noconfig.FIELD`) and may come anywhere on the command line.
A tool with positional arguments should use the `=` form (argparse would take the separate value
as a positional). A missing or unreadable --config file, an override ml_collections rejects
(unknown field, value of the wrong type) or any other unknown argument is `parser.error`: usage
and one `error:` line on stderr, exit status 2, no traceback.

The other half every command shares is `run_command`: the command's work runs inside it, and an
error the command expects (bad config, data, checkpoint, ...) becomes one `error:` line and an
exit status instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Callable, Mapping, NoReturn, Sequence

import ml_collections

_OVERRIDE = re.compile(r"^--?(no)?config\.")
_TRACEBACK = "Traceback (most recent call last):"


def parse_config_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                      ) -> tuple[argparse.Namespace, ml_collections.ConfigDict, str]:
    """Adds the required `--config FILE` option to `parser`, parses `argv` (default
    sys.argv[1:]) and returns (namespace, the overridden and locked ConfigDict, the config's
    name: the file name without directory and extension)."""
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="config file (configs/*.py); override any of its fields with "
                             "--config.FIELD=VALUE (typed by ml_collections)")
    args, unknown = parser.parse_known_args(argv)
    overrides, others = _split_overrides(unknown)
    if others:
        parser.error(f"unrecognized arguments: {' '.join(others)}")
    path = args.config.split(":", 1)[0]  # ml_collections passes what follows ':' to get_config
    if not os.path.isfile(path):
        parser.error(f"--config {args.config}: no such file")
    config = _load(parser, args.config, overrides)
    name = os.path.splitext(os.path.basename(args.config))[0]
    return args, config, name


def override_tokens(argv: Sequence[str]) -> list[str]:
    """The `--config.*` overrides of a command line (with their separate values), to hand the
    same config to a child process."""
    return _split_overrides(argv)[0]


def _split_overrides(tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the `--config.*` tokens with their separate values, every other token)."""
    overrides, others = [], []
    takes_value = False  # the previous token was `--config.FIELD` without `=VALUE`
    for token in tokens:
        if _OVERRIDE.match(token):
            overrides.append(token)
            takes_value = "=" not in token
        elif takes_value and not token.startswith("--"):
            overrides.append(token)  # `--config.lr 3e-4`; ml_collections decides if it is one
            takes_value = False
        else:
            others.append(token)
            takes_value = False
    return overrides, others


def _load(parser: argparse.ArgumentParser, config_arg: str,
          overrides: list[str]) -> ml_collections.ConfigDict:
    from absl import flags
    from ml_collections import config_flags

    argv = [parser.prog, f"--config={config_arg}", *overrides]
    flag_values = flags.FlagValues()
    # sys_argv: the library finds the override names in this list, not in sys.argv
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    try:
        rest = flag_values(argv)
        config = flag_values["config"].value
    except flags.Error as err:  # a value of the wrong type, a missing value, an unknown flag
        _error(parser, str(err))
    except (AttributeError, KeyError) as err:
        if not _raised_in(err, "ml_collections.config_flags.config_path"):
            raise  # a bug in the config file itself: keep its traceback
        _error(parser, _unknown_field(err, config_arg))
    except OSError as err:
        _error(parser, f"--config {config_arg}: {err}")
    if len(rest) > 1:
        extra = " ".join(rest[1:])
        hint = (" (a boolean override is written --config.FIELD=VALUE)"
                if extra.lower() in ("true", "false") else "")
        parser.error(f"unrecognized arguments: {extra}{hint}")
    return config


def _raised_in(err: BaseException, module: str) -> bool:
    """Whether `err` came out of a call into `module` (here: ml_collections resolving an
    override's field path, as opposed to the config file's own code)."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == module:
            return True
        tb = tb.tb_next
    return False


def _unknown_field(err: BaseException, config_arg: str) -> str:
    """ml_collections' message for an override of a field the config lacks (a KeyError, possibly
    inside an AttributeError; with its "Did you mean" suggestion when it has one)."""
    detail: object = err
    while isinstance(detail, BaseException) and detail.args:
        detail = detail.args[0]
    first, *hints = [line.strip() for line in str(detail).splitlines() if line.strip()] or ["?"]
    message = (f"config {config_arg} has no field {first}" if re.fullmatch(r"'[^']*'", first)
               else f"config {config_arg}: {first}")
    return "; ".join([message, *hints])


def _error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """parser.error with `message` on one line (a wrapped traceback keeps its first and last
    lines: where, and the exception)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if any(line.startswith(_TRACEBACK) for line in lines):
        lines = [lines[0], lines[-1]]
    parser.error(" ".join(lines))


def run_command(work: Callable[[], Any],
                errors: type[BaseException] | tuple[type[BaseException], ...]
                | Mapping[type[BaseException], int],
                interrupted: str = "") -> int:
    """Runs a command's work and returns its exit status: the int it returns, else 0.

    `errors`: the exception types the command expects, each turned into one `error: <message>`
    line on stderr and exit status 2, or a {type: status} mapping for other statuses. With
    `interrupted`, Ctrl-C prints that line and gives 130 instead of a traceback.
    """
    codes = errors if isinstance(errors, Mapping) else dict.fromkeys(
        errors if isinstance(errors, tuple) else (errors,), 2)
    try:
        status = work()
    except tuple(codes) as err:
        print(f"error: {err}", file=sys.stderr)
        return next(code for kind, code in codes.items() if isinstance(err, kind))
    except KeyboardInterrupt:
        if not interrupted:
            raise
        print(interrupted, file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0
