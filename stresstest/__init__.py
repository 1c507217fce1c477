"""cnn-stress-testing: the library the stage scripts call (stresstest/stages/<script>.py, one per script).

For a model held in memory: stresstest.import_model(...) then stresstest.stress_test(...) (stresstest/api.py)."""
import importlib

from .core.errors import UserError

ENTRY_POINT = ("RAW_PIXELS", "Preprocessing", "import_model", "stress_test")  # stresstest/api.py
__all__ = ["UserError", *ENTRY_POINT]


def __getattr__(name):  # the entry point's torch-heavy imports only when it is used
    if name in ENTRY_POINT:
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
