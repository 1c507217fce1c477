"""Case folders: failure_cases/<run>/case_XX/ with image.png and meta.txt (`key: value` lines)."""
import json
import os
import shutil
import tempfile
from pathlib import Path

from . import paths
from .errors import UserError


def format_meta(meta: dict) -> str:
    return "".join(f"{key}: {value}\n" for key, value in meta.items())


def parse_meta(text: str) -> dict:
    meta = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip()] = value.strip()
    return meta


def read_cases(cases_dir: Path) -> list[dict]:
    """Every case folder's meta (plus `case` and `path`), in case order; a user error if there are none."""
    cases_dir = Path(cases_dir)
    folders = sorted(cases_dir.glob("case_*")) if cases_dir.is_dir() else []
    cases = []
    for folder in folders:
        meta_file = folder / "meta.txt"
        if not meta_file.is_file():
            raise UserError(f"{meta_file} is missing: the cases are incomplete; run {paths.CASES_PRODUCER} again")
        meta = parse_meta(meta_file.read_text())
        if "test_index" not in meta or not meta["test_index"].isdigit():
            raise UserError(f"{meta_file} has no valid test_index; run {paths.CASES_PRODUCER} again")
        cases.append({**meta, "case": folder.name, "path": folder})
    if not cases:
        raise UserError(f"no failure cases in {cases_dir}: run {paths.CASES_PRODUCER} first")
    return cases


def read_case_summary(cases_dir: Path) -> dict:
    """The decisions of the failure analysis that made the cases (threshold, checkpoint, counts)."""
    path = Path(cases_dir) / paths.CASES_SUMMARY
    try:
        summary = json.loads(path.read_text())
        float(summary["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is missing or unreadable: run {paths.CASES_PRODUCER} first") from None
    return summary


def replace_folder(target: Path, build) -> None:
    """Build a folder's new contents beside it with `build(tmp_path)`, then swap it in.

    A re-run never leaves stale files from an earlier one, and a failure while building leaves
    the previous folder untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.new-*"):  # from a run killed while building
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    try:
        build(staging)
        os.chmod(staging, 0o755)
        retired = target.parent / f".{target.name}.old"
        shutil.rmtree(retired, ignore_errors=True)
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
