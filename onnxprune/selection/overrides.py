"""Per-node ratio overrides from a JSON or YAML file: `{"layer4.*": 0.5, "stem*": 0}`."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import OnnxPruneError


def load_overrides(path: str) -> dict[str, float]:
    """Node-name glob -> ratio; YAML needs PyYAML (optional), JSON needs nothing."""
    text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else None
    if text is None:
        raise OnnxPruneError(f"{path}: no such overrides file")
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise OnnxPruneError("YAML overrides need PyYAML (pip install pyyaml); or write them as JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OnnxPruneError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and 0 <= v < 1 for v in data.values()):
        raise OnnxPruneError(f"{path}: overrides map node-name globs to ratios in [0, 1)")
    return {str(k): float(v) for k, v in data.items()}
