"""The record a stage leaves when it finishes: experiments/records/<stage>.json says where it wrote, what it read,
on which data, device and precision, and the command that ran it. report.py reads these records, so a stage run
with another --out-dir still shows up in the report; a stage without a record has not run (in this folder)."""
import json
import sys
import time
from pathlib import Path

from . import atomic, paths
from .findings import Headline, Section, as_record

RECORDS_DIR = paths.EXPERIMENTS / "records"


def portable(path: Path) -> str:
    """`path` relative to the working folder when it lies inside it (a moved project keeps its links), else
    absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def write_record(stage: str, outputs: dict, inputs: dict | None = None, headline: list[Headline] | None = None,
                 sections: list[Section] | None = None, **details) -> None:
    """Record that `stage` finished: outputs and inputs as {name: path}, what it tells the report (its headline
    rows and sections, core.findings), details as plain values (data, device, precision, counts)."""
    record = {"stage": stage, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "outputs": {name: portable(path) for name, path in outputs.items()},
              "inputs": {name: portable(path) for name, path in (inputs or {}).items()},
              "headline": as_record(headline or [], portable), "sections": as_record(sections or [], portable),
              **details}
    atomic.write_json(atomic.ensure_writable_dir(RECORDS_DIR) / f"{stage}.json", record)


def read_record(stage: str, records_dir: Path = RECORDS_DIR) -> dict | None:
    """The record of `stage` with its paths as Path objects, or None when it has not run."""
    try:
        record = json.loads((Path(records_dir) / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ["outputs", "inputs"]:
        record[key] = {name: Path(path) for name, path in record.get(key, {}).items()}
    return record


def read_records(prefix: str, records_dir: Path = RECORDS_DIR) -> list[dict]:
    """Every record whose stage name starts with `prefix` (one per model of a probing stage), by name."""
    folder = Path(records_dir)
    names = sorted(p.stem for p in folder.glob(f"{prefix}*.json")) if folder.is_dir() else []
    return [record for record in (read_record(name, folder) for name in names) if record is not None]
