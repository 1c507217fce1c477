"""Atomic writes: a file is written beside its target, then renamed over it, so a killed
run leaves either the old file or the new one, never a truncated one."""
import csv
import io
import json
import os
import secrets
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import UserError


def write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # mode 0o666 less the process umask, as open() gives any new file (mkstemp would make it 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, rows: list[dict], fieldnames: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def save_torch(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_npy(path: Path, array) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def remove_temporaries(folder: Path) -> None:
    """Delete the hidden temporary files that a killed write can leave beside its target."""
    for leftover in Path(folder).glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed, check that files can be written in it, and clear a killed run's temporaries."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        remove_temporaries(path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(f"cannot write to output folder {path} ({reason}); "
                        "fix its permissions or choose another folder") from None
    return path
