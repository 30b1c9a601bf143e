"""Validation: run models in onnxruntime to vouch for a rewritten graph, measure fidelity and latency."""
from .bench import bench
from .tasks import TaskOptions
from .validate import Inputs, gate_failures, validate

__all__ = ["Inputs", "TaskOptions", "bench", "gate_failures", "validate"]
