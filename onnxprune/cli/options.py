"""Flags shared by several commands, and what they parse into."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OnnxPruneError
from ..runtime.providers import CHOICES as PROVIDERS
from ..validation.tasks import NEIGHBOURS, TASKS, TaskOptions, parse_blocks
from ..validation.validate import GateFailed, Inputs, gate_failures

MERGE_FLAGS = ("compensate", "merge_threshold", "merge_lambda", "merge_mode", "merge_order", "merge_approximate",
               "fold_tolerance")



CRITERION_HELP = ("channel importance. l1 / l2: filter norms; fpgm: distance to the layer's other filters "
                  "(geometric median); bn: |BN gamma| (l1 where BN was folded); random: seeded")



def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """`name:1x3x224x224` -> {name: (1, 3, 224, 224)}."""
    shapes = {}
    for item in items or []:
        name, _, dims = item.rpartition(":")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise OnnxPruneError(f"--shape {item!r}: expected NAME:D1xD2x..., e.g. input:1x3x224x224") from None
        if not name:
            raise OnnxPruneError(f"--shape {item!r}: missing the input name")
    return shapes



def inputs_from(args: argparse.Namespace, dims: dict[str, tuple[int, ...]] | None = None) -> Inputs:
    """Validation inputs from the flags: --data/--labels, else random at --shape (or the prune's shapes)."""
    data = args.data
    if data is None and getattr(args, "calib", None) and Path(args.calib).is_file():
        data = args.calib  # validate on the user's own inputs rather than on noise
    return Inputs(shapes=dims or parse_shapes(args.shape), data=data, labels=args.labels, batch=args.batch_size,
                  random_batches=args.random_batches, seed=args.seed)


def parse_batches(text: str | None) -> tuple[int, ...]:
    """Batch sizes from --batch; none given: () for the model's own."""
    if text is None:
        return ()
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise OnnxPruneError(f"--batch {text!r}: expected positive sizes, e.g. 1,8,32")
    return batches


def gate(report: dict, args: argparse.Namespace) -> None:
    """Raise GateFailed (exit 1) when the validation is below --max-drop / --min-cosine."""
    fails = gate_failures(report, args.max_drop, args.min_cosine)
    if fails:
        raise GateFailed("below the bar: " + "; ".join(fails))



def add_runtime(p: argparse.ArgumentParser) -> None:
    """Flags of every command that runs models in onnxruntime."""
    p.add_argument("--provider", default="auto", choices=PROVIDERS,
                   help="auto: CUDA when it is available and loads, else CPU (default auto)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU intra-op threads (default: the cores available)")


def add_inputs(p: argparse.ArgumentParser, shape: bool = True, labels: str = "for accuracy") -> None:
    """Flags that say which inputs validation runs on."""
    if shape:
        p.add_argument("--shape", action="append", metavar="NAME:DIMS", help="fix an input's dynamic dims")
    p.add_argument("--data", metavar="FILE.npz", help="inputs: arrays named after the model inputs, first axis = samples")
    p.add_argument("--labels", metavar="FILE", help=f"with --data: integer labels (.npy, or .npz with one array) "
                                                    f"{labels}")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="batch size for --data (default: 32, "
                   "fewer for big inputs, about 8 MiB of inputs a batch)")
    p.add_argument("--random-batches", type=int, default=4, metavar="N",
                   help="without --data: random input batches (default 4)")


def add_task(p: argparse.ArgumentParser) -> None:
    """Flags that say how each output is read (task-aware figures)."""
    p.add_argument("--task", choices=TASKS, help="how outputs are read, besides the plain figures: classify: "
                   "top-1/top-5 agreement ([N, C]); embedding: cosine per sample and nearest-neighbour agreement "
                   "([N, D]); dense: mask IoU ([N, C, H, W]); sequence: greedy-CTC text agreement ([N, T, C], "
                   "blank 0); auto: per output from its shape, values and name (default; [N, D] with unit-norm rows "
                   "or named like an embedding is an embedding)")
    p.add_argument("--neighbours", type=int, metavar="K",
                   help=f"embedding: compare each sample's K nearest neighbours among the others (default "
                        f"{NEIGHBOURS})")
    p.add_argument("--iou-threshold", type=float, metavar="P",
                   help="dense: a pixel is in the mask when its probability (a sigmoid of logits) is > P "
                        "(default 0.5)")
    p.add_argument("--blocks", action="append", metavar="OUTPUT:S1,S2",
                   help="also figures per block of the output's axis 1 of these sizes, e.g. output0:4,80 "
                        "(boxes, class scores)")


def tasks_from(args: argparse.Namespace) -> TaskOptions:
    """The task options from the flags (None: the defaults)."""
    threshold = 0.5 if args.iou_threshold is None else args.iou_threshold
    k = NEIGHBOURS if args.neighbours is None else args.neighbours
    return TaskOptions(args.task or "auto", threshold, parse_blocks(args.blocks), neighbours=k)


def check_blocks(tasks: TaskOptions, outputs: list[str]) -> None:
    """Refuse, before the work, --blocks naming an output the model does not have."""
    unknown = sorted(set(tasks.blocks) - set(outputs))
    if unknown:
        raise OnnxPruneError(f"--blocks names output '{unknown[0]}', which the model does not have "
                             f"(it has {', '.join(outputs)})")


def add_gate(p: argparse.ArgumentParser) -> None:
    """Flags of the validation gate (exit 1 below the bar)."""
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="exit 1 if accuracy (with --labels) or top-1 agreement drops more than this many points")
    p.add_argument("--min-cosine", type=float, metavar="C", help="exit 1 if any output's cosine similarity is below C")


def add_timing(p: argparse.ArgumentParser) -> None:
    """Flags that say how models are timed."""
    p.add_argument("--batch", metavar="B1,B2",
                   help="batch sizes to time (default: the model's static batch, else 1)")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed runs per model first (default 10)")
    p.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs per model (default 50)")


def add_merge_flags(r: argparse.ArgumentParser, title: str, calibrated: bool = True) -> argparse._ArgumentGroup:
    """Compensation flags of prune and sensitivity (None = the default, or the plan's record)."""
    c = r.add_argument_group(title)
    modes = ["merge", "fold", "reconstruct", "mean", "none"] if calibrated else ["merge", "fold", "none"]
    c.add_argument("--compensate", choices=modes,
                   help="merge: fold each removed filter into the consumers of a kept one it is an exact "
                        "multiple of (any similar one with --merge-approximate), and constant channels into "
                        "their biases; fold: constant channels only; "
                        + ("reconstruct: re-fit the consumers by least squares on --calib data; mean: add each "
                           "removed channel's --calib mean, through the consumer weights, to their biases (FLAP); "
                           if calibrated else "")
                        + "none: plain pruning (default merge" + ("; reconstruct with --criterion lasso, mean with flap)"
                                                                  if calibrated else ")"))
    c.add_argument("--merge-threshold", type=float, metavar="T",
                   help="with --merge-approximate: minimum cosine similarity of [filter | bias] for a merge "
                        "(default 0.3)")
    c.add_argument("--merge-lambda", type=float, metavar="L",
                   help="rank matches by L * cosine distance + (1 - L) * normalised bias residual (default 0.85)")
    c.add_argument("--merge-mode", choices=["exact", "paper"],
                   help="BatchNorm factor: exact, or the authors' released code's, for comparison (default exact)")
    c.add_argument("--merge-order", choices=["original", "sequential"],
                   help="match each group on its original filters (the authors' code) or on the filters left "
                        "after earlier groups' merges and removals (default original)")
    c.add_argument("--merge-approximate", action="store_true", default=None,
                   help="also make merges that are not exact: similar (not proportional) filters, offsets "
                        "through Relu, SiLU/GELU..., padded borders (each reported approximate, with the reason)")
    c.add_argument("--fold-tolerance", type=float, metavar="F",
                   help="treat channels with |gamma|/sigma (or filter norm) <= F x the layer's max as constant "
                        "(default 0)")
    return c




def add_recover_flags(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Flags of recovery (prune --recover, recover): how the remaining weights are tuned (None: the default)."""
    g = p.add_argument_group("recovery: the remaining weights (Conv/Gemm/MatMul weights and biases, normalisation "
                             "scales) tuned by Adam so that each block of the pruned model, fed its own output of "
                             "the block before, reproduces the original's output of that block on --calib inputs "
                             "(padding positions of --calib-mask left out); a block whose error on the held-out "
                             "samples rises keeps its weights. Needs PyTorch: onnxprune[recover]")
    g.add_argument("--recover-epochs", type=int, metavar="N", help="passes over the training samples per block "
                   "(default 8; 0: no block-wise pass, the end-to-end pass alone, which stores only the final "
                   "outputs: for calibration sets of thousands of samples)")
    g.add_argument("--recover-lr", type=float, metavar="LR", help="Adam's learning rate (default 1e-3)")
    g.add_argument("--recover-end-to-end", type=int, metavar="N", help="then N epochs on the final outputs, all "
                   "blocks at once (default 0)")
    g.add_argument("--recover-loss", choices=["mse", "normalized", "cosine"], help="the blocks' loss: mean squared "
                   "error; normalized: each feature's squared error over the original's variance of it, so a few "
                   "large outlier features cannot dominate; cosine: 1 - cosine per position (default mse)")
    g.add_argument("--recover-end-to-end-loss", choices=["mse", "normalized", "cosine"], help="the end-to-end "
                   "pass's loss on the final outputs (default cosine: the direction of each output row, what an "
                   "embedding's neighbours read)")
    g.add_argument("--recover-end-to-end-lr", type=float, metavar="LR", help="Adam's learning rate of the "
                   "end-to-end pass (default: --recover-lr)")
    g.add_argument("--recover-batch", type=int, metavar="N", help="samples per step (default 16)")
    g.add_argument("--recover-hold-out", type=float, metavar="F", help="share of the samples held out to check "
                   "each block (default 0.2)")
    g.add_argument("--recover-device", choices=["auto", "cpu", "cuda"], help="where to train (default auto: CUDA "
                   "when PyTorch sees a GPU)")
    return g


RECOVER_FLAGS = {"recover_epochs": "epochs", "recover_lr": "lr", "recover_end_to_end": "end_to_end",
                 "recover_loss": "loss", "recover_end_to_end_loss": "end_to_end_loss",
                 "recover_end_to_end_lr": "end_to_end_lr", "recover_batch": "batch", "recover_hold_out": "hold_out",
                 "recover_device": "device"}


def recover_settings(args: argparse.Namespace, recorded: dict | None = None) -> dict:
    """RecoverOptions fields: a plan's recorded ones, then the flags given, the seed and --threads."""
    given = {field: v for flag, field in RECOVER_FLAGS.items() if (v := getattr(args, flag, None)) is not None}
    return {**(recorded or {}), **given, "seed": args.seed, "threads": getattr(args, "threads", None)}


def add_calib_mask(p) -> None:
    """--calib-mask: which input marks padding (prune and recover)."""
    p.add_argument("--calib-mask", metavar="INPUT", default="auto",
                   help="the input whose zeros mark padding positions, left out of every statistic, fit and loss "
                        "(default auto: the one input named like *mask*, e.g. attention_mask; none: no masking)")
