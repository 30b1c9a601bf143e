"""onnxprune: structured channel pruning of ONNX graphs.

The API is imported on first use, so that `onnxprune` on the command line handles Ctrl-C from its
first moment (onnx and numpy take seconds to import).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {"analyze": "api", "apply_plan": "api", "prune": "api", "recover": "api", "drop_blocks": "api", "make_plan": "plan",
          "load_plan": "plan", "save_plan": "plan", "analysis_json": "report", "OnnxPruneError": "errors"}
__all__ = list(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")
