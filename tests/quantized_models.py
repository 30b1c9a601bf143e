"""Quantized copies of float models, made with onnxruntime's own quantizers on random calibration inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static


def random_inputs(path: Path, count: int = 4, seed: int = 0, shapes: dict | None = None) -> list[dict[str, np.ndarray]]:
    """`count` feeds for the model: floats ~ N(0, 1), integer ids below 100 (masks of ones), dynamic dims 1."""
    rng = np.random.default_rng(seed)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = []
    for _ in range(count):
        feed = {}
        for i in session.get_inputs():
            shape = (shapes or {}).get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
            if "int" in i.type:
                value = np.ones(shape, np.int64) if "mask" in i.name else rng.integers(0, 100, shape)
                feed[i.name] = value.astype(np.int32 if "int32" in i.type else np.int64)
            else:
                feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(feed)
    return feeds


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def quantize_qdq(src: Path, dst: Path, per_channel: bool = True) -> Path:
    """Static QDQ int8 (uint8 activations, int8 weights) as TensorRT and onnxruntime pipelines ship it."""
    quantize_static(str(src), str(dst), _Reader(random_inputs(src)), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return dst


def quantize_dyn(src: Path, dst: Path) -> Path:
    """Dynamic int8 (MatMulInteger / ConvInteger with DynamicQuantizeLinear)."""
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return dst


def quantize_nbits(src: Path, dst: Path, block: int = 32, symmetric: bool = False, bits: int = 4) -> Path:
    """Block-quantized MatMul weights (MatMulNBits, com.microsoft), as onnxruntime-genai LLMs ship them."""
    import logging
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=bits)
    q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
    q.process()
    q.model.save_model_to_file(str(dst), False)
    return dst


def ops(path: Path) -> dict[str, int]:
    """How many nodes of each op type the model holds."""
    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def quantize_qop(src: Path, dst: Path, per_channel: bool = True) -> Path:
    """Static QOperator int8 (QLinearConv, QGemm, QLinearAdd... on uint8 activations, int8 weights)."""
    quantize_static(str(src), str(dst), _Reader(random_inputs(src)), quant_format=QuantFormat.QOperator,
                    per_channel=per_channel, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return dst
