"""Validation: run models in onnxruntime to vouch for a rewritten graph, measure fidelity and latency."""
from .bench import bench
from .sensitivity import sensitivity
from .validate import Inputs, gate_failures, validate

__all__ = ["Inputs", "bench", "gate_failures", "sensitivity", "validate"]
