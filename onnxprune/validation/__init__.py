"""Validation: run models in onnxruntime to vouch for a rewritten graph."""
