"""Any classifier architecture by one spec string, and its weights read safely.

A spec is a built-in name (`resnet18`), `torchvision:<builder>`, `timm:<name>` (timm installed), or the user's own
code, `path/to/file.py:callable` or `package.module:callable`, which runs as Python when the model is built
(it is the user's code). Checkpoints record the spec and, for user code, the file's sha256, so a stage that finds
the file changed says so."""
import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn

from models import ARCHITECTURES, build_model

from .errors import UserError, first_line

TORCHVISION, TIMM = "torchvision:", "timm:"
# where training scripts keep the state dict inside a checkpoint dict, most common first
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "state", "weights", "params",
                "model_ema", "ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / DataParallel, torch.compile
SHOWN_KEYS = 5


def is_user_code(spec: str) -> bool:
    return ":" in spec and not spec.startswith((TORCHVISION, TIMM))


def split_user_spec(spec: str) -> tuple[str, str]:
    source, _, name = spec.rpartition(":")
    if not source or not name.isidentifier():
        raise UserError(f"architecture {spec}: user code is given as path/to/file.py:callable or "
                        "package.module:callable")
    return source, name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _import_file(path: Path) -> tuple[ModuleType, Path | None]:
    module_name = f"stresstest_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"{path} cannot be imported as a Python module; give path/to/file.py:callable")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    module_spec.loader.exec_module(module)
    return module, path


def _import_module(source: str) -> tuple[ModuleType, Path | None]:
    module = importlib.import_module(source)
    file = getattr(module, "__file__", None)
    return module, Path(file).resolve() if file else None


def user_callable(spec: str):
    """The callable of a user spec and the file that defines it (its module is imported: the user's code runs)."""
    source, name = split_user_spec(spec)
    if is_file_spec(source):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"architecture {spec}: {path} not found; give path/to/file.py:callable")
        # the file imports its neighbours as when it is run
        search_path, load = path.parent, functools.partial(_import_file, path)
    else:
        # a module under the working folder, as `python -m` finds it
        search_path, load = Path.cwd(), functools.partial(_import_module, source)
    sys.path.insert(0, str(search_path))
    try:
        module, path = load()
    except UserError:
        raise
    except ModuleNotFoundError as error:
        raise UserError(f"architecture {spec}: cannot import {error.name} ({error}); install it or fix the "
                        "import") from None
    except Exception as error:  # the user's module raised while it was imported
        raise UserError(f"architecture {spec}: importing {source} raised {type(error).__name__}: "
                        f"{first_line(error)}") from None
    finally:
        sys.path.remove(str(search_path))
    if not callable(getattr(module, name, None)):
        raise UserError(f"architecture {spec}: {source} has no callable named {name}")
    return getattr(module, name), path


def build_architecture(spec: str, num_classes: int) -> nn.Module:
    """A freshly initialised model of `spec` with `num_classes` outputs (user code runs here)."""
    if spec in ARCHITECTURES:
        return build_model(spec, num_classes)
    if spec.startswith(TORCHVISION):
        import torchvision.models as tvm
        name = spec[len(TORCHVISION):]
        known = tvm.list_models(module=tvm)
        if name not in known:
            raise UserError(f"architecture {spec}: torchvision has no classification builder {name!r} "
                            f"(e.g. {', '.join(known[:6])}, ...; torchvision.models.list_models() lists them)")
        return _checked(spec, lambda: tvm.get_model(name, weights=None, num_classes=num_classes))
    if spec.startswith(TIMM):
        try:
            import timm
        except ImportError:
            raise UserError(f"architecture {spec} needs timm: pip install -e '.[timm]' (or pip install timm)") from None
        name = spec[len(TIMM):]
        if not timm.is_model(name):
            raise UserError(f"architecture {spec}: timm has no model {name!r} (timm.list_models() lists them)")
        return _checked(spec, lambda: timm.create_model(name, pretrained=False, num_classes=num_classes))
    if is_user_code(spec):
        function, _ = user_callable(spec)
        takes_classes = "num_classes" in _parameters(function)
        return _checked(spec, lambda: function(num_classes=num_classes) if takes_classes else function())
    raise UserError(f"architecture {spec}: not a built-in architecture ({', '.join(ARCHITECTURES)}), "
                    f"{TORCHVISION}<builder>, {TIMM}<name>, path/to/file.py:callable or package.module:callable")


def _parameters(function) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


def _checked(spec: str, build) -> nn.Module:
    try:
        model = build()
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"architecture {spec}: building the model raised {type(error).__name__}: "
                        f"{first_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"architecture {spec} returned a {type(model).__name__}, not a torch.nn.Module; return the "
                        "network")
    return model


def is_file_spec(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def canonical_spec(spec: str) -> str:
    """The spec with a user file's path made absolute, so that stages run from another folder find the file."""
    if not is_user_code(spec):
        return spec
    source, name = split_user_spec(spec)
    return f"{Path(source).expanduser().resolve()}:{name}" if is_file_spec(source) else spec


def source_identity(spec: str) -> dict:
    """What a checkpoint records of its architecture: the spec, and for user code the defining file's sha256."""
    if not is_user_code(spec):
        return {"spec": spec}
    _, path = user_callable(spec)
    return {"spec": spec, "file": str(path) if path else "", "sha256": file_sha256(path) if path else ""}


def changed_source(source: dict) -> str | None:
    """A one-line notice when the user's file behind a checkpoint differs from the one it was imported with."""
    path = source.get("file")
    if not path or not source.get("sha256"):
        return None
    if not Path(path).is_file():
        return f"notice: {path}, which defines {source['spec']}, is gone; the model cannot be rebuilt from it"
    if file_sha256(Path(path)) != source["sha256"]:
        return (f"notice: {path} changed since the model was imported (sha256 differs); the model is built from the "
                "file as it is now: import it again if that is not what you want")
    return None


# -- weights ----------------------------------------------------------------------------------------------------

def read_weights(path: Path) -> dict:
    """The state dict in a weights file, read with weights_only=True onto the CPU (a file saved on a GPU loads on a
    machine without one; torch's zip and legacy formats alike): a bare state dict, or one held under a usual key
    of a checkpoint dict; DDP's `module.` and torch.compile's `_orig_mod.` prefixes removed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--weights {path} not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error)
        if "weights_only" in text or "Unsupported global" in text or "Weights only load failed" in text:
            raise UserError(f"--weights {path} was refused: it holds Python objects beyond tensors and plain values, "
                            "which could run code when loaded (nothing ran); save model.state_dict() with torch.save "
                            "and import that") from None
        raise UserError(f"--weights {path} is not a torch weights file ({first_line(error)[:120]})") from None
    return strip_prefixes(find_state_dict(loaded, path))


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def find_state_dict(loaded, path: Path) -> dict:
    if _is_state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, dict):
        for key in WRAPPER_KEYS:
            if _is_state_dict(loaded.get(key)):
                return dict(loaded[key])
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if tensors and all(isinstance(v, (torch.Tensor, int, float, str, type(None))) for v in loaded.values()):
            return tensors  # a state dict with a few plain values beside it (e.g. an epoch counter)
        keys = ", ".join(map(str, list(loaded)[:8]))
        raise UserError(f"--weights {path}: no state dict found (top-level keys: {keys}); save model.state_dict(), or "
                        f"a dict holding it under one of {', '.join(WRAPPER_KEYS)}")
    raise UserError(f"--weights {path} holds a {type(loaded).__name__}, not a state dict; save model.state_dict()")


def strip_prefixes(state_dict: dict) -> dict:
    """Remove wrapper prefixes that every key carries (nested wrappers too)."""
    while True:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            return state_dict
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def load_strict(model: nn.Module, state_dict: dict, what: str, fix: str) -> None:
    """Load every tensor or name, in one line, the missing and unexpected keys and the shapes that do not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state_dict and state_dict[k].shape != v.shape]
    problems = [f"missing keys {_listed(missing)}" if missing else "",
                f"unexpected keys {_listed(unexpected)}" if unexpected else "",
                f"shapes differ (weights vs model): {_listed(shapes)}" if shapes else ""]
    problems = [p for p in problems if p]
    if problems:
        raise UserError(f"{what} does not fit the model: {'; '.join(problems)}; {fix}")
    model.load_state_dict(state_dict)
