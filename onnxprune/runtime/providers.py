"""Execution providers: ask for one, and report the one onnxruntime really ran."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import OnnxPruneError

CHOICES = ("auto", "cuda", "tensorrt", "cpu")
CHAINS = {  # what each choice asks onnxruntime for, fallbacks last
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
SHORT = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}
# channel counts the providers' kernels run fastest at multiples of (CPU: MLAS's blocked NCHWc layout and
# vector widths; GPUs: tensor-core tiles; TensorRT's int8 tiles want 16). Measured in docs/rounding.md.
KERNEL_MULTIPLE = {"cpu": 8, "cuda": 8, "tensorrt": 16}


VERBOSE = False  # --verbose: let onnxruntime's own warnings through


def runtime():
    """onnxruntime, imported on first use (analysis and rewriting do not need it)."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxPruneError("onnxruntime is not installed: pip install 'onnxprune[cpu]' "
                             "(or 'onnxprune[gpu]' for CUDA)") from None
    if not VERBOSE:
        onnxruntime.set_default_logger_severity(4)  # fatal only: its errors come back as exceptions, one line each
    return onnxruntime


def likely_provider(choice: str) -> str:
    """The provider a choice will run on, without opening a session (cpu when onnxruntime is missing)."""
    try:
        import onnxruntime
    except ImportError:
        return "cpu"
    return wanted_provider(choice, onnxruntime.get_available_providers())


def cpu_threads() -> int:
    """Cores this process may run on: the intra-op thread count used unless one is given."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class Session:
    """An onnxruntime session and the provider that really runs it."""

    session: Any
    provider: str  # short name of the provider onnxruntime put first: cpu, cuda, tensorrt
    threads: int  # intra-op threads (what CPU kernels use)
    note: str = ""  # why the provider differs from the one asked for, if it does

    @property
    def device(self) -> str:
        """Where I/O binding puts inputs and outputs."""
        return "cpu" if self.provider == "cpu" else "cuda"


def wanted_provider(choice: str, available: list[str]) -> str:
    """The provider a choice asks for: auto takes CUDA when onnxruntime lists it."""
    if choice not in CHOICES:
        raise OnnxPruneError(f"unknown provider '{choice}' (choose from {', '.join(CHOICES)})")
    if choice == "auto":
        return "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if CHAINS[choice][0] not in available:
        raise OnnxPruneError(f"--provider {choice}: this onnxruntime has no {CHAINS[choice][0]} "
                             f"(it has {', '.join(available)}); install onnxruntime-gpu")
    return choice


def open_session(model: str | bytes, choice: str = "auto", threads: int | None = None,
                 arena: bool = True, spin: bool = True) -> Session:
    """A session on the chosen provider; a listed GPU provider that fails to load is detected, not trusted.

    onnxruntime drops a provider whose libraries are missing with only a log line, so the provider
    reported is the first of the session's own list. auto then says so; an explicit choice is refused.
    `arena=False`: no CPU memory arena, so a run's buffers go back when it ends (what a pass over big
    batches wants; timing wants the arena, which keeps them for the next run). `spin=False`: the
    intra-op threads sleep between runs instead of spinning, which two sessions timed in turn need
    (one's spinning threads took the cores from the other's run: A/A 0.76-1.29x, twice the latency).
    """
    ort = runtime()
    wanted = wanted_provider(choice, ort.get_available_providers())
    opts = ort.SessionOptions()
    opts.log_severity_level = 0 if VERBOSE else 4
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.enable_cpu_mem_arena = arena
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        with warnings.catch_warnings():  # onnxruntime warns when it drops a provider: the note below says it
            if not VERBOSE:
                warnings.simplefilter("ignore")
            session = ort.InferenceSession(model, opts, providers=CHAINS[wanted])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
        raise OnnxPruneError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
    ran = session.get_providers()[0]
    ran = SHORT.get(ran, ran)
    note = ""
    if ran != wanted:
        note = f"{CHAINS[wanted][0]} is listed but did not load (GPU libraries missing?); ran on {ran}"
        if choice != "auto":
            raise OnnxPruneError(f"--provider {choice}: {note}")
    return Session(session, ran, opts.intra_op_num_threads, note)
