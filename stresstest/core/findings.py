"""What a stage tells the report, decided by the stage and kept in its record: headline rows (one figure per
model, each with its interval and n) and sections (a leading figure, one compact table with the models side by
side, notes, more figures, the full tables as links, a gallery); and, as the record's `tile_notes`, {gallery key:
a line} that a stage adds to another stage's gallery. report.py renders these and reads no stage's tables; a new
stage that writes them appears in the report with no line changed there."""
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..metrics import wilson_interval

PERCENT, NUMBER = "percent", "number"  # a rate (0.782 reads 78.2%), or any other quantity
HIGHER, LOWER = "higher", "lower"      # which way is better on a profile axis


def number(value) -> str:
    """One way to print a plain number everywhere: whole numbers as integers, others with four decimals, tiny ones
    (p-values) with two significant digits; None and nan as nothing."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return ""
    if float(value).is_integer():
        return str(int(value))
    if abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4f}"


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval (low and high None where there is none) and how it reads."""
    value: float
    low: float | None = None
    high: float | None = None
    unit: str = PERCENT

    def text(self) -> str:
        """Rates in percent with one decimal ('78.2% (74.4-81.6)'), other quantities as numbers; a value that is
        not defined (nan in the stage, None in its record: a rank correlation of a constant map) as such."""
        if self.value is None or math.isnan(self.value):
            return "not defined"

        def shown(value: float) -> str:
            return f"{100 * value:.1f}" if self.unit == PERCENT else number(value)
        text = shown(self.value) + ("%" if self.unit == PERCENT else "")
        if self.low is not None and self.high is not None:  # "to" where a bound is negative: (-9.0 to -1.9)
            text += f" ({shown(self.low)}{' to ' if min(self.low, self.high) < 0 else '-'}{shown(self.high)})"
        return text


@dataclass(frozen=True)
class Headline:
    """One row of the report's summary: `figure` for each model, over `n` (images, sets or seeds). With `axis`
    set it is also a panel of the report's opening profile figure, where `better` says which way is better."""
    figure: str
    values: dict[str, Estimate]
    n: str
    note: str = ""
    axis: str = ""
    better: str = ""


@dataclass(frozen=True)
class Picture:
    path: Path
    caption: str


@dataclass(frozen=True)
class Table:
    """A compact table: column names, and rows whose cells are text, numbers or Estimates."""
    columns: list[str]
    rows: list[list]
    note: str = ""


@dataclass(frozen=True)
class Tile:
    """One image of a gallery: `folder` holds image.png, shown closed, and the other figures of the image that
    any stage wrote there, shown when it is opened. `key` lets another stage's record add a line to it."""
    key: str
    folder: Path
    caption: str
    flag: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    lead: Picture | None = None
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)  # the full tables, as files
    gallery: list[Tile] = field(default_factory=list)


def as_record(value, path: Callable[[Path], str] = str):
    """Dataclasses, paths and tuples as the plain JSON values a record holds; `path` writes a path."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: as_record(getattr(value, item.name), path) for item in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): as_record(item, path) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_record(item, path) for item in value]
    if isinstance(value, Path):
        return path(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no nan or inf
    return value


def wilson(successes: int, trials: int) -> Estimate:
    """A proportion with its Wilson 95% interval."""
    return Estimate(successes / trials, *wilson_interval(successes, trials))


def frame_table(frame, note: str = "", percent: tuple[str, ...] = ()) -> Table:
    """A pandas DataFrame as a compact table: its columns, its rows as plain values, the `percent` columns (rates)
    as Estimates without an interval, so they read in percent."""
    rows = [[Estimate(float(value)) if column in percent else as_record(value)
             for column, value in zip(frame.columns, row)] for row in frame.itertuples(index=False)]
    return Table([str(column) for column in frame.columns], rows, note)
