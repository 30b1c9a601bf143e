"""`onnxprune recover`: tune a pruned model's remaining weights to reproduce its original on calibration inputs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnx.external_data_helper import load_external_data_for_model

from ..analysis.cost import count_model_cost
from ..calibration import Calibration
from ..errors import OnnxPruneError
from ..loading import read_model, save_model
from ..validation.smoke import smoke_check
from .files import check_output, write_text
from .options import add_calib_mask, add_recover_flags, recover_settings
from .progress import progress


def add_parser(sub) -> None:
    """Register the subcommand."""
    r = sub.add_parser("recover", help="tune a pruned model's weights to reproduce the original (distillation)",
                       description="Block by block, the pruned model's remaining weights are trained to reproduce "
                                   "the original's outputs on the --calib inputs, without labels; the written model "
                                   "differs from PRUNED only in initializer values.")
    r.add_argument("original")
    r.add_argument("pruned")
    r.add_argument("-o", "--output", required=True, help="where to write the recovered model")
    r.add_argument("--calib", required=True, metavar="FILE.npz|DIR", help="calibration inputs: arrays named after "
                   "the inputs (first axis = samples), or a folder of .npy files")
    r.add_argument("--calib-samples", type=int, metavar="N", help="use the first N calibration samples")
    add_calib_mask(r)
    r.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the training order")
    r.add_argument("--threads", type=int, metavar="N", help="PyTorch CPU threads (default: its own)")
    r.add_argument("--report", metavar="FILE", help="write the recovery record as JSON")
    r.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check run")
    add_recover_flags(r)
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Distill, check the written file in onnxruntime, report."""
    from ..recovery.run import recover_from, recovery_lines, teacher_of

    if Path(args.output).resolve() in (Path(args.original).resolve(), Path(args.pruned).resolve()):
        raise OnnxPruneError("the output path is an input model: an input is never overwritten")
    check_output(args.output, "-o", make_parent=True)
    check_output(args.report, "--report")
    progress("loading")
    teacher = teacher_of(args.original)
    student, _, files = read_model(args.pruned)
    load_external_data_for_model(student, str(Path(args.pruned).parent))
    calibration = Calibration(args.calib, args.calib_samples, seed=args.seed, mask=args.calib_mask)
    model, record = recover_from(teacher, student, calibration, recover_settings(args), progress)

    def verify(path: Path) -> None:
        if not args.no_verify:
            progress("running the written model in onnxruntime")
            smoke_check(str(args.pruned), str(path), model, count_model_cost(student).input_dims)

    written = save_model(model, args.output, external_data=len(files) > 1 or None, verify=verify)
    print(recovery_lines(record))
    try:
        if args.report:
            write_text(args.report, json.dumps(record, indent=1) + "\n")
    except BaseException:
        for p in written:
            Path(p).unlink(missing_ok=True)
        raise
    print("wrote " + ", ".join(written + ([args.report] if args.report else [])))
    return 0
