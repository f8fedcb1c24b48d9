"""Every option's help states the default the parser (or the code behind a None default) really uses."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from samsem.cli import build_parser


def _options() -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    """(command path, its parser, option) for every optional argument of every subcommand."""

    def walk(
        parser: argparse.ArgumentParser, path: str
    ) -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}".strip())
            elif action.option_strings and not isinstance(
                action, (argparse._HelpAction, argparse._VersionAction)
            ):
                yield path, parser, action

    yield from walk(build_parser(), "")


OPTIONS = list(_options())


def _id(case: tuple[str, argparse.ArgumentParser, argparse.Action]) -> str:
    return f"{case[0]} {case[2].option_strings[0]}"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as ``--help`` prints it (``%(default)s`` and the like expanded), one line."""
    if action.help is None:
        return ""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def _absent(default: Any) -> bool:
    """A default that means "not given" (nothing to state)."""
    return default is None or default is False or default is argparse.SUPPRESS or default in ([], ())


def _spellings(value: Any) -> set[str]:
    """The ways a help text may write ``value``."""
    if isinstance(value, tuple | list):
        return {",".join(sorted(_spellings(v), key=len)[0] for v in value)}
    out = {str(value)}
    if isinstance(value, float):
        out.add(f"{value:g}")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1024 and value & (value - 1) == 0:
        out.add(f"2^{value.bit_length() - 1}")
    return out


def _states(text: str, value: Any) -> bool:
    """Whether ``text`` says ``value`` is the default: "default X", "default: X", "X (default" or
    "X, the default"."""
    for spelling in _spellings(value):
        x = re.escape(spelling)
        end = r"(?![\w.]*\w)"  # "1" must not match "16" or "1.5"
        if re.search(rf"\bdefault:? {x}{end}|(?<![\w.]){x}{end},? (\(|the )?default\b", text):
            return True
    return False


def _mentions(text: str, value: Any) -> bool:
    """Whether ``text`` names ``value`` (as a whole number or word, not part of one)."""
    return any(re.search(rf"(?<![\w.]){re.escape(x)}(?![\w.]*\w)", text) for x in _spellings(value))


def _train_default(field: str) -> Callable[[], list[Any]]:
    def values() -> list[Any]:
        from samsem.train.config import FAMILY_DEFAULTS, family_config

        out = []
        for family in FAMILY_DEFAULTS:
            value: Any = family_config(family)
            for part in field.split("__"):
                value = getattr(value, part)
            out.append(value)
        return out

    return values


def _family() -> list[Any]:
    from samsem.train.config import TrainConfig

    return [TrainConfig().family]


def _esd(field: str) -> Callable[[], list[Any]]:
    def values() -> list[Any]:
        from samsem.evaluation.esd import ESDConfig

        return [getattr(ESDConfig(), field)]

    return values


def _images_per_call() -> list[Any]:
    from samsem.runtime.cluster import ClusterOptions

    return [ClusterOptions().images_per_call]


# None defaults whose help names the concrete value the code then uses: that value, from the code
RESOLVED: dict[tuple[str, str], Callable[[], list[Any]]] = {
    ("evaluate", "--border"): _esd("border"),
    ("evaluate", "--min-area"): _esd("min_area"),
    ("segment", "--images-per-call"): _images_per_call,
}
for _command in ("train", "tune"):
    from samsem.train.cli import OPTIONS as _TRAIN_OPTIONS
    from samsem.train.cli import SWITCHES as _TRAIN_SWITCHES

    for _flag, _field, *_ in _TRAIN_OPTIONS + _TRAIN_SWITCHES:
        if _field not in ("init_checkpoint", "batch_size"):  # explained in words
            RESOLVED[(_command, _flag)] = _train_default(_field)
    RESOLVED[(_command, "--family")] = _family


@pytest.mark.parametrize("case", OPTIONS, ids=_id)
def test_help_states_the_default(case: tuple[str, argparse.ArgumentParser, argparse.Action]) -> None:
    path, parser, action = case
    if action.required or _absent(action.default):
        return
    text = _help(parser, action)
    assert _states(text, action.default), (
        f"samsem {path} {action.option_strings[0]}: help {text!r} does not state its default "
        f"{action.default!r}"
    )


@pytest.mark.parametrize("case", OPTIONS, ids=_id)
def test_none_default_is_explained(case: tuple[str, argparse.ArgumentParser, argparse.Action]) -> None:
    """A None default claims a value only where the code resolves None to it, or explains itself in words
    ("default: the bundled model")."""
    path, parser, action = case
    if action.required or not _absent(action.default):
        return
    text, flag = _help(parser, action), action.option_strings[0]
    resolved = RESOLVED.get((path, flag))
    if resolved is not None:
        for value in resolved():
            assert "default" in text and _mentions(text, value), (
                f"samsem {path} {flag}: help {text!r} does not state the default {value!r} the code uses"
            )
        return
    for claim in re.finditer(r"\bdefault\b(:?)([^;)]*)", text):
        colon, rest = claim.groups()
        assert colon and re.search(r"[A-Za-z]{2,}", rest), (
            f"samsem {path} {flag}: help {text!r} claims a default but the parser's is None; "
            "say what not giving the option means ('default: ...') or add it to RESOLVED"
        )


def test_every_option_found() -> None:
    """The walk reaches nested subcommands (client segment) and argument groups (serve's --port)."""
    found = {_id(c) for c in OPTIONS}
    assert {"client segment --vector", "serve --port", "train --epochs", "segment --precision"} <= found


@pytest.mark.parametrize("case", [c for c in OPTIONS if c[2].option_strings == ["--vector"]], ids=_id)
def test_vector_help_names_the_files_written(
    case: tuple[str, argparse.ArgumentParser, argparse.Action],
) -> None:
    """--vector's help names the files the outputs module writes (NAME.mask.svg, not NAME.svg)."""
    from samsem.runtime.outputs import VECTOR_SUFFIXES

    path, parser, action = case
    text = _help(parser, action)
    assert f"NAME{VECTOR_SUFFIXES['svg']}" in text and "NAME.svg" not in text, f"samsem {path}: {text!r}"


def test_job_db_default_is_tied_to_job_roots() -> None:
    """The job database is opened only with --job-root (ServerConfig ignores job_db without roots)."""
    (case,) = [c for c in OPTIONS if _id(c) == "serve --job-db"]
    assert "only with --job-root" in _help(case[1], case[2])


def test_model_options_are_declared_once() -> None:
    """segment, evaluate and serve take --model/--backend/--device/--precision from one declaration."""
    by_command: dict[str, dict[str, tuple[Any, ...]]] = {}
    for path, parser, action in OPTIONS:
        flag = action.option_strings[-1]
        if flag in ("--model", "--backend", "--device", "--precision"):
            by_command.setdefault(path, {})[flag] = (action.default, action.choices, _help(parser, action))
    assert {"segment", "evaluate", "serve"} <= set(by_command)
    assert by_command["serve"] == by_command["segment"] == by_command["evaluate"]
