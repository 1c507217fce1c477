"""cnn-stress-testing: the library the stage scripts call (stresstest/stages/<script>.py, one per script).

For a model held in memory: stresstest.import_model(...) then stresstest.stress_test(...) (stresstest/api.py)."""
import importlib
from typing import TYPE_CHECKING

from .core.errors import UserError

if TYPE_CHECKING:  # imported on first use at run time (__getattr__): the entry point pulls in torch
    from .api import RAW_PIXELS, Preprocessing, import_model, stress_test

__all__ = ["UserError", "RAW_PIXELS", "Preprocessing", "import_model", "stress_test"]
ENTRY_POINT = __all__[1:]  # stresstest/api.py


def __getattr__(name):
    if name in ENTRY_POINT:
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
