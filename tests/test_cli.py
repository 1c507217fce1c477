"""Flags built from a stage's parameter dataclass (core.cli.add_flags): each field declared once, with its help,
its parser, its default and its --smoke value; params_from resolves a given flag, then the preset, then the
default."""
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stresstest.core.cli import Common, add_flags, flag, make_parser, params_from, positive_int


@dataclass(frozen=True)
class Example(Common):
    images: int = field(default=200, metadata=flag("images to use", positive_int))
    radii: tuple = field(default=("1", "8"), metadata=flag("radii", metavar="R"))
    names: tuple = field(default=("a", "b", "c"), metadata=flag("names", name="--name", choices=["a", "b", "c"],
                                                                default_text="all three"))
    mean: tuple = field(default=(0.5, 0.5, 0.5), metadata=flag("per channel", float, repeats=True))
    out_dir: Path = field(default=Path("out"), metadata=flag("where it goes"))
    quick: bool = field(default=False, metadata=flag("a switch"))
    unflagged: int = 7  # no metadata: no flag, the default (or the preset's) stays


SMOKE = Example(images=8, unflagged=1)


def parse(*argv: str) -> Example:
    parser = make_parser("test")
    add_flags(parser, Example(), SMOKE)
    parser.add_argument("--smoke", action="store_true")
    return params_from(parser.parse_args(list(argv)), Example(), SMOKE)


def test_flags_resolve_given_then_preset_then_default():
    assert parse() == Example()
    assert parse("--smoke") == SMOKE
    assert parse("--smoke", "--images", "3") == Example(images=3, unflagged=1)
    given = parse("--radii", "2", "2", "4", "--name", "b", "--mean", "0.4", "0.4", "0.4", "--out-dir", "x",
                  "--quick")
    assert given.radii == ("2", "4") and given.names == ("b",)  # a repeat dropped...
    assert given.mean == (0.4, 0.4, 0.4)  # ...except where repeats count
    assert given.out_dir == Path("x") and given.quick and given.unflagged == 7


def test_help_shows_each_default_once_and_the_smoke_value_where_it_differs():
    parser = make_parser("test")
    add_flags(parser, Example(), SMOKE)
    text = " ".join(parser.format_help().split())
    assert "images to use (default 200; --smoke: 8)" in text and "radii (default 1 8)" in text
    assert "names (default all three)" in text and "where it goes (default out)" in text
    assert "--unflagged" not in text and "--name {a,b,c}" in text


def test_a_bad_value_is_refused_by_the_fields_parser(capsys):
    with pytest.raises(SystemExit):
        parse("--images", "0")
    assert "must be a positive integer" in capsys.readouterr().err
