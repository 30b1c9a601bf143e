"""onnxprune: structured channel pruning of ONNX graphs."""
from .api import analyze, apply_plan, prune
from .errors import OnnxPruneError
from .plan import load_plan, make_plan, save_plan

__all__ = ["analyze", "apply_plan", "prune", "make_plan", "load_plan", "save_plan", "OnnxPruneError"]
__version__ = "0.1.0"
