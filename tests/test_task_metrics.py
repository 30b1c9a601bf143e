"""Task-aware validation: top-k for classifiers, mask IoU for dense maps, CTC text for sequences, channel blocks."""
from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from conftest import ROOT, ocr_model
from onnxprune.cli import main
from onnxprune.errors import OnnxPruneError
from onnxprune.validation.compare import OutputAgreement
from onnxprune.validation.tasks import TaskOptions, ctc_decode, parse_blocks, pick
from onnxprune.validation.validate import warnings

FASHION = ROOT / "models" / "fashion"
YOLO = ROOT / "models" / "yolo" / "yolov8n_w0.0625_nc10_160_ul.onnx"
DET, REC = "ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start-up): exit code, stdout, stderr."""
    untimed = ["--no-time"] if argv[0] == "prune" else []  # prune's timing is tested in test_honest_speed.py
    code = main([argv[0], "-q", *argv[1:], *untimed])
    out, err = capsys.readouterr()
    return code, out, err


def text_lines(n: int, size: tuple[int, int], lines: int, seed: int) -> np.ndarray:
    """Dark printed text on a light background, scaled to [-1, 1] as PP-OCR's pre-processing does."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"), 26)
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        img = Image.new("RGB", size, (235, 235, 230))
        draw = ImageDraw.Draw(img)
        for k in range(lines):
            words = "".join(rng.choice(list(string.ascii_letters + string.digits), (size[0] - 10) // 17))
            draw.text((4 + int(rng.integers(0, 10)), 6 + 40 * k), words, fill=(20, 20, 20), font=font)
        images.append(np.asarray(img, np.float32).transpose(2, 0, 1) / 127.5 - 1)
    return np.stack(images)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """task -> (original, the same pruned heavily, data): a trained classifier and PP-OCR det and rec."""
    tmp = tmp_path_factory.mktemp("tasks")
    rng = np.random.default_rng(0)
    out = {}
    for task, model, x, shape, ratio in (
            ("classify", FASHION / "vgg_bnkeep.onnx", rng.random((64, 1, 28, 28), np.float32), None, 0.7),
            ("dense", ocr_model(DET), text_lines(2, (96, 96), 2, 1), {"x": (1, 3, 96, 96)}, 0.5),
            ("sequence", ocr_model(REC), text_lines(4, (160, 48), 1, 0), {"x": (1, 3, 48, 160)}, 0.5)):
        if task == "classify":  # Fashion-MNIST-like: the test images where the package is installed
            x = _fashion(x)
        pruned, _, _ = onnxprune.prune(model, ratio=ratio, input_shapes=shape)
        onnx.save(pruned, tmp / f"{task}.onnx")
        np.savez(tmp / f"{task}.npz", **{onnx.load(model, load_external_data=False).graph.input[0].name: x})
        out[task] = (model, tmp / f"{task}.onnx", tmp / f"{task}.npz")
    return out


def _fashion(fallback: np.ndarray) -> np.ndarray:
    """64 Fashion-MNIST test images, or `fallback` where the dataset is not installed."""
    import gzip

    path = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    if not path.is_file():
        return fallback
    with gzip.open(path) as fh:
        pixels = np.frombuffer(fh.read(), np.uint8, offset=16)[:64 * 784]
    return (pixels.reshape(64, 1, 28, 28) / 255).astype(np.float32)


FIGURE = {"classify": "top1_agreement", "dense": "iou", "sequence": "sequence_agreement"}
SAID = {"classify": "top-1 agreement", "dense": "mask IoU", "sequence": "sequence agreement"}


@pytest.mark.parametrize("task", ["classify", "dense", "sequence"])
def test_the_original_against_itself_is_100_percent(capsys, tmp: Path, cases, task: str) -> None:
    model, _, data = cases[task]
    code, out, err = run(capsys, "validate", str(model), str(model), "--data", str(data), "--json", str(tmp / "v.json"))
    assert code == 0, err
    (name, v), = json.loads((tmp / "v.json").read_text())["outputs"].items()
    assert v["task"] == task and v["task_why"].startswith("auto: ") and f"    {task} (auto: " in out
    assert v[FIGURE[task]] == 1.0 and v["cosine"] == pytest.approx(1.0)
    assert json.loads((tmp / "v.json").read_text())["warnings"] == []
    if task == "classify":
        assert v["top5_agreement"] == 1.0
    if task == "sequence":  # real text: the figure is not vacuous
        assert v["empty_original"] < v["sequences"] and v["position_agreement"] == 1.0
    if task == "dense":
        assert v["mask_share_original"] > 0.01 and v["values"] == "probabilities"


@pytest.mark.parametrize("task", ["classify", "dense", "sequence"])
def test_a_heavily_pruned_model_gets_the_figures_and_a_warning(capsys, tmp: Path, cases, task: str) -> None:
    model, pruned, data = cases[task]
    code, out, err = run(capsys, "validate", str(model), str(pruned), "--data", str(data), "--json",
                         str(tmp / "v.json"))
    assert code == 0, err  # no bar set: a warning, not a gate
    report = json.loads((tmp / "v.json").read_text())
    (name, v), = report["outputs"].items()
    bar = {"classify": 0.9, "dense": 0.5, "sequence": 0.5}[task]
    assert v["task"] == task and v[FIGURE[task]] < bar
    said = [w for w in report["warnings"] if f"output '{name}' {SAID[task]}" in w]
    assert len(said) == 1 and f"warning: {said[0]}" in out


def test_prune_validate_takes_the_task_flags_and_records_the_warning(capsys, tmp: Path, cases) -> None:
    model, _, data = cases["classify"]
    out = tmp / "pruned.onnx"
    code, _, err = run(capsys, "prune", str(model), "-o", str(out), "--ratio", "0.8", "--data", str(data),
                       "--task", "classify", "--runs", "1", "--warmup", "0", "--report", str(tmp / "r.json"))
    assert code == 0 and out.exists(), err
    v = json.loads((tmp / "r.json").read_text())["validation"]
    assert v["outputs"]["logits"]["task_why"] == "--task classify"
    assert any("top-1 agreement" in w for w in v["warnings"])


def test_an_explicit_task_that_fits_no_output_is_refused(capsys, cases) -> None:
    model, _, data = cases["classify"]
    code, out, err = run(capsys, "validate", str(model), str(model), "--data", str(data), "--task", "dense")
    assert code == 2 and err.count("\n") == 1 and "--task dense reads outputs shaped [N, C, H, W]" in err
    assert "'logits' is 32x10" in err and "Traceback" not in err


def test_yolo_output_is_plain_with_figures_per_block(capsys, tmp: Path) -> None:
    code, out, err = run(capsys, "validate", str(YOLO), str(YOLO), "--blocks", "output0:4,10", "--json",
                         str(tmp / "v.json"))
    assert code == 0, err
    v = json.loads((tmp / "v.json").read_text())["outputs"]["output0"]
    assert v["task"] == "none" and "not a probability distribution" in v["task_why"]  # not read as CTC text
    assert set(v["blocks"]) == {"0:4", "4:14"} and "    channels 4:14: max |diff| 0" in out
    code, _, err = run(capsys, "validate", str(YOLO), str(YOLO), "--blocks", "output0:4,80")
    assert code == 2 and "add up to 84, but axis 1 of the output [1, 14, 525] has 14 channels" in err
    code, _, err = run(capsys, "prune", str(YOLO), "-o", str(tmp / "y.onnx"), "--ratio", "0.5", "--blocks", "out:4,10")
    assert code == 2 and "--blocks names output 'out'" in err and not (tmp / "y.onnx").exists()


def test_a_block_that_differs_is_seen_and_warned_about() -> None:
    ref = np.random.default_rng(0).standard_normal((2, 14, 30)).astype(np.float32)
    got = ref.copy()
    got[:, 4:] *= -1  # the class scores are ruined, the boxes are exact
    a = OutputAgreement(TaskOptions(), (4, 10))
    a.add(ref, got)
    out = a.to_json()
    assert out["blocks"]["0:4"]["cosine"] == pytest.approx(1) and out["blocks"]["4:14"]["cosine"] == pytest.approx(-1)
    said = warnings({"inputs": {"source": "x.npz"}, "outputs": {"output0": out}})
    assert any("output 'output0' channels 4:14 cosine -1.0000" in w for w in said)
    assert not any("channels 0:4" in w for w in said)


def test_greedy_ctc_merges_repeats_then_drops_blanks() -> None:
    best = np.array([[1, 1, 0, 1, 2, 2, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0], [3, 0, 3, 3, 0, 0, 4, 4]])
    assert ctc_decode(best) == [(1, 1, 2), (), (3, 3, 4)]
    probs = np.eye(5, dtype=np.float32)[best]  # [3, 8, 5] one-hot distributions
    moved = probs.copy()
    moved[0, 2] = np.eye(5)[1]  # 1 1 1 1 2 2 0 0 -> (1, 2): another text, 7 of 8 positions the same
    a = OutputAgreement()
    a.add(probs, moved)
    out = a.to_json()
    assert out["task"] == "sequence" and out["sequence_agreement"] == pytest.approx(2 / 3)
    assert out["position_agreement"] == pytest.approx(23 / 24) and out["empty_original"] == 1


def test_mask_iou_thresholds_probabilities_and_sigmoids_logits() -> None:
    ref = np.zeros((1, 1, 4, 4), np.float32)
    ref[0, 0, :2] = 0.9  # 8 pixels in the mask
    got = ref.copy()
    got[0, 0, 0] = 0.4  # 4 of them fall out
    got[0, 0, 3, 0] = 0.6  # 1 comes in
    a = OutputAgreement(TaskOptions(iou_threshold=0.5))
    a.add(ref, got)
    assert a.to_json()["iou"] == pytest.approx(4 / 9) and a.to_json()["values"] == "probabilities"
    low = OutputAgreement(TaskOptions(iou_threshold=0.3))
    low.add(ref, got)
    assert low.to_json()["iou"] == pytest.approx(8 / 9)
    logit = lambda p: np.log(np.clip(p, 0.05, None) / (1 - np.clip(p, 0.05, None)))  # noqa: E731
    logits = OutputAgreement()  # the same maps as logits: a sigmoid is applied, the same pixels are in
    logits.add(logit(ref), logit(got))
    assert logits.to_json()["iou"] == pytest.approx(4 / 9) and logits.to_json()["values"].startswith("logits")


def test_top5_counts_the_original_class_among_the_five_best() -> None:
    ref = np.tile(np.arange(10, dtype=np.float32), (4, 1))  # class 9 everywhere
    got = ref.copy()
    got[1, 9] = 4.5  # 9 falls to 5th place: top-1 differs, top-5 holds
    got[2, 9] = -1  # 9 is last: both differ
    a = OutputAgreement()
    a.add(ref, got)
    out = a.to_json()
    assert out["task"] == "classify" and out["top1_agreement"] == 0.5 and out["top5_agreement"] == 0.75


def test_auto_choice_per_shape_and_option_parsing() -> None:
    rng = np.random.default_rng(0)
    assert pick(rng.random((2, 10, 1, 1), np.float32), "auto")[0] == "classify"
    assert pick(rng.random((2, 2, 8, 8), np.float32), "auto")[0] == "dense"
    assert pick(rng.random((2, 1, 1, 8), np.float32), "auto")[0] == "none"  # H = 1: not a map
    assert pick(rng.random((2, 5, 7), np.float32), "auto")[0] == "none"  # not a distribution
    assert pick(rng.random((2, 5, 7), np.float32), "sequence") == ("sequence", "--task sequence")
    assert pick(np.zeros((2, 5), np.int64), "auto")[0] == "none"
    assert parse_blocks(["a:b:4,80"]) == {"a:b": (4, 80)}
    for bad in (["output0"], ["output0:4,x"], [":4"]):
        with pytest.raises(OnnxPruneError, match="--blocks"):
            parse_blocks(bad)
