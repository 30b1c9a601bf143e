"""Command line: `onnxprune analyze | prune | validate | bench | sensitivity`."""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .analysis.analyze import build_analysis
from .analysis.cost import count_model_cost
from .api import default_options, replay_options, run_pipeline, sensitivity_allocation, speed_search
from .calibration import Calibration
from .rewrite.merging import MergeOptions
from .errors import OnnxPruneError
from .loading import check_supported, prepare, read_model, save_model
from .plan import calibration_differences, calibration_record, load_plan, with_calibration
from .report import analysis_table, group_lines, prune_report, summary
from .scoring import CRITERIA
from .analysis.builder import PRODUCER
from .scoring.score import AGGREGATE, DATA_CRITERIA
from .selection import Selection
from .selection.overrides import load_overrides
from .validation.bench import bench, bench_lines
from .validation.latency import SpeedTarget
from .validation import providers
from .validation.providers import CHOICES as PROVIDERS
from .validation.sensitivity import RATIOS, plot_allocation, plot_sensitivity, pyplot, sensitivity
from .validation.smoke import smoke_check
from .validation.tasks import TASKS, TaskOptions, parse_blocks
from .validation.validate import GateFailed, Inputs, gate_failures, validate, validation_lines


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


def cmd_analyze(args: argparse.Namespace) -> int:
    """Print the group table; write the JSON report if asked."""
    check_output(args.json, "--json")
    analysis = build_analysis(prepare(args.model), parse_shapes(args.shape))
    print(analysis_table(analysis, show_frozen=not args.prunable_only))
    if args.json:
        write_text(args.json, json.dumps(analysis.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


QUIET = False
START = time.perf_counter()
EXIT_GATE, EXIT_REFUSED, EXIT_INTERNAL, EXIT_NOOP, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


COUNTED = re.compile(r"group (\d+)/(\d+)\b")  # a line that says K of N groups are done
STAGE = {"since": START, "last": START, "done": 0, "total": 0}  # the counted stage under way


def _progress(message: str) -> None:
    """One line per stage on stderr, with the time since start (stdout keeps the results); --quiet: none.

    A line that starts `group K/N` (K groups done) also gets the time the stage took so far and an
    estimate of the time left: `[12/40 groups, 3.1 s, ~7 s left]`.
    """
    if QUIET:
        return
    now = time.perf_counter()
    counted = COUNTED.match(message)
    if counted:
        message += _eta(int(counted[1]), int(counted[2]), now)
    else:
        STAGE.update(since=now, done=0, total=0)
    STAGE["last"] = now
    print(f"[onnxprune {now - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def _eta(done: int, total: int, now: float) -> str:
    """' [K/N groups, 3.1 s, ~7 s left]': the stage's pace so far, extrapolated to its remaining groups."""
    if total != STAGE["total"] or done <= STAGE["done"]:  # a new counted stage starts after the last line
        STAGE.update(since=STAGE["last"], total=total)
    STAGE["done"] = done
    spent = now - STAGE["since"]
    left = spent / max(done, 1) * max(total - done, 0)
    return f" [{done}/{total} groups, {_seconds(spent)}, ~{_seconds(left)} left]"


def _seconds(s: float) -> str:
    """3.1 s, 42 s, 7 min."""
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def _warn(message: str) -> None:
    print(f"onnxprune: warning: {message}", file=sys.stderr, flush=True)


INPUT_ARGS = {"model": "the model", "original": "ORIGINAL", "pruned": "PRUNED", "other": "OTHER", "plan": "--plan",
              "calib": "--calib", "data": "--data", "labels": "--labels", "overrides": "--overrides"}
OUTPUT_ARGS = {"output": "-o", "save_plan": "--save-plan", "report": "--report", "json": "--json", "plot": "--plot"}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_paths(args: argparse.Namespace) -> None:
    """No output may be an input (or its external data) or another output: each would be overwritten."""
    inputs = [(INPUT_ARGS[k], Path(v)) for k in INPUT_ARGS if isinstance(v := getattr(args, k, None), str)]
    inputs += [(f"{what}'s data", Path(str(p) + ".data")) for what, p in inputs if p.suffix == ".onnx"]
    outputs = [(OUTPUT_ARGS[k], Path(v)) for k in OUTPUT_ARGS if isinstance(v := getattr(args, k, None), str)]
    for i, (what, out) in enumerate(outputs):
        for name, path in inputs:
            if _same_file(out, path):
                raise OnnxPruneError(f"{what} {out} is {name}: an input is never overwritten")
        for other, path in outputs[:i]:
            if _same_file(out, path):
                raise OnnxPruneError(f"{what} and {other} are the same file ({out}): one would overwrite the other")


def check_output(path: str | None, what: str, make_parent: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a directory, a missing or read-only folder."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise OnnxPruneError(f"{what} {path} is a directory; give a file name")
    if target.exists() and not target.is_file():  # a device or a pipe: written into, never replaced
        if what in ("-o", "--plot"):
            raise OnnxPruneError(f"{what} {path} is not a regular file; give a file name")
        return
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        if not make_parent:
            raise OnnxPruneError(f"{what} {path}: folder {parent} does not exist")
        parent = next(p for p in parent.parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OnnxPruneError(f"{what} {path}: folder {parent} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise OnnxPruneError(f"{what} {path} exists and is not writable")
    try:  # the real test (root passes os.access everywhere; /proc, /sys and read-only mounts refuse here)
        fd, probe = tempfile.mkstemp(prefix=".onnxprune-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OnnxPruneError(f"{what} {path}: cannot write in folder {parent} ({exc.strerror})") from None


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str, text: str) -> None:
    """Write a text output atomically (a temporary file in the same folder, then a rename)."""
    target = Path(path)
    if target.exists() and not target.is_file():  # /dev/null, a pipe: write into it, do not replace it
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", dir=target.parent if str(target.parent) else ".")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: a report is as readable as the model written
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _selection(args: argparse.Namespace) -> Selection:
    overrides = load_overrides(args.overrides) if args.overrides else {}
    speed = getattr(args, "target_speedup", None) is not None or getattr(args, "target_latency", None) is not None
    macs = 0.5 if speed else args.target_macs  # a speed target searches the MAC target (see _speed_search)
    return Selection(args.ratio, args.global_rank or (speed and args.allocate == "score"), macs, args.target_params,
                     args.round_to, args.min_channels, args.max_ratio, list(args.exclude or []), overrides)


MERGE_FLAGS = ("compensate", "merge_threshold", "merge_lambda", "merge_mode", "merge_order", "merge_approximate",
               "fold_tolerance")


class NothingToDo(OnnxPruneError):
    """The run would write a model identical in structure to its input (exit 4 unless --allow-noop)."""


def _say_what_was_left(analysis, removed: dict, sel: Selection | None, args, replay: bool) -> None:
    """Warn about patterns that match nothing and groups left whole; refuse a run that removes nothing."""
    names = {n for g in analysis.groups for n in g.nodes(PRODUCER)}
    for flag, globs in (("--exclude", sel.exclude if sel else []), ("--overrides", list(sel.overrides) if sel else [])):
        for glob in globs:
            if not any(fnmatch.fnmatchcase(n, glob) for n in names):
                _warn(f"{flag} pattern '{glob}' matches no producer node")
    prunable = analysis.prunable
    whole = [g for g in prunable if g.id not in removed]
    if removed and whole:
        small = sum(g.channels <= (sel.round_to if sel else 1) for g in whole)
        why = f"; {small} have at most --round-to {sel.round_to} channels" if sel and sel.round_to > 1 and small else ""
        _progress(f"{len(whole)} of {len(prunable)} prunable groups kept whole (guards, rounding or "
                  f"exclusions{why})")
    if removed or args.allow_noop:
        return
    if not prunable:
        first = next((g.reason for g in analysis.groups if g.reason), "no channel groups")
        raise NothingToDo(f"nothing to prune: none of the {len(analysis.groups)} channel groups is prunable "
                          f"(e.g. {first}); --allow-noop writes the model anyway")
    if replay:
        cause = "the plan removes no channel"
    elif sel.ratio == 0 or sel.target_macs == 0 or sel.target_params == 0:
        cause = "a ratio or target of 0 removes nothing"
    else:
        cause = (f"all {len(prunable)} prunable groups stay whole under --round-to {sel.round_to}, "
                 f"--min-channels {sel.min_channels}, --max-ratio {sel.max_ratio:g} and the exclusions")
    raise NothingToDo(f"nothing to prune: {cause}; --allow-noop writes the model anyway")


def cmd_prune(args: argparse.Namespace) -> int:
    """Plan (from a file or a criterion), rewrite, vouch for the written file, report."""
    if Path(args.output).resolve() == Path(args.model).resolve():
        raise OnnxPruneError("the output path is the input model: the input is never overwritten")
    check_output(args.output, "-o", make_parent=True)
    check_output(args.save_plan, "--save-plan")
    check_output(args.report, "--report")
    check_output(args.plot, "--plot")
    if args.plot:
        if args.allocate == "score" and args.target_speedup is None and args.target_latency is None:
            raise OnnxPruneError("--plot draws an allocation or a speed search: add --allocate sensitivity or "
                                 "--target-speedup/--target-latency")
        pyplot()  # the missing extra is refused before any work
    plan = load_plan(args.plan) if args.plan else None
    selection = None if plan else _selection(args)
    if selection:
        selection.check()
    given = {k: v for k in MERGE_FLAGS if (v := getattr(args, k)) is not None}
    if args.reconstruct is not None:
        mode = "reconstruct" if args.reconstruct else "none"
        if given.get("compensate", mode) != mode:
            raise OnnxPruneError(f"--{'' if args.reconstruct else 'no-'}reconstruct contradicts --compensate "
                                 f"{given['compensate']}")
        given["compensate"] = mode
    merge = replay_options(plan, **given) if plan else default_options(args.criterion, **given)
    shapes = parse_shapes(args.shape)
    implied = (args.data, args.labels, args.max_drop, args.min_cosine, args.task, args.iou_threshold, args.blocks)
    args.validate = args.validate or any(x is not None for x in implied)
    tasks = _tasks(args)
    batches = _batches(args.batch)
    _progress("loading")
    prep = prepare(args.model)
    _check_blocks(tasks, [t.name for t in prep.graph.outputs])
    _progress(f"analyzing {len(prep.graph.nodes)} nodes, " + (f"replaying {args.plan}" if plan else
                                                              f"scoring by {args.criterion}, rewriting"))
    calibration = Calibration(args.calib, args.calib_samples, points=args.calib_points,
                              seed=args.seed) if args.calib else None
    record = None
    if calibration is not None and merge.compensate not in ("reconstruct", "mean") and \
            (plan or args.criterion not in DATA_CRITERIA) and args.allocate == "score":
        _warn(f"--calib is read only by --criterion {'/'.join(DATA_CRITERIA)}, --reconstruct and --compensate mean; "
              "it is ignored here")
    elif calibration is not None:
        record = _calibration_record(calibration, plan)
    allocation, measured_loss, speed = None, None, None
    if args.allocate in ("sensitivity", "iterative") and plan is None:
        selection, allocation, measured_loss = _allocate(args, selection, merge, calibration, shapes)
        speed = allocation.pop("speed_target", None)
    if plan is None and allocation is None and (args.target_speedup is not None or args.target_latency is not None):
        r, speed = _speed_search(args, selection, merge, calibration, shapes)
    else:
        r = run_pipeline(prep, shapes, plan, args.criterion, selection, args.include_consumers, args.aggregate,
                         args.seed, merge, calibration, args.provider, _progress)
    if allocation is not None:
        allocation["measured_loss"] = round(measured_loss(r.model), 6)
        r.plan["allocation"] = allocation
    if speed is not None:
        r.plan["speed_target"] = speed
    if record is not None and plan is None:
        r.plan = with_calibration(r.plan, record)
    _say_what_was_left(r.analysis, r.removed, selection, args, plan is not None)
    dims = r.analysis.cost.input_dims
    checks: dict = {}

    def verify(path: Path) -> None:
        """Vouch for the bytes written: they load and run in onnxruntime like the original (and pass the bar).

        With --validate the pruned model is also compared and timed here, before it is moved into place.
        """
        if args.validate:  # runs both models too, so the smoke run would repeat it
            _progress(f"validating on {args.provider}")
            checks["validation"] = validate(str(args.model), str(path), _inputs(args, dims), args.provider,
                                            args.threads, tasks)
            broken = [k for k, v in checks["validation"]["outputs"].items() if not v["finite"]]
            if broken:
                raise OnnxPruneError(f"the pruned model's output '{broken[0]}' is not finite")
            _gate(checks["validation"], args)
            _progress("timing both models")
            checks["bench"] = bench([str(args.model), str(path)], batches, args.warmup, args.runs, args.provider,
                                    args.threads, dims)
        elif not args.no_verify:
            _progress("running the written model in onnxruntime")
            smoke_check(str(args.model), str(path), r.model, dims)

    written = save_model(r.model, args.output, external_data=prep.external_data or None, verify=verify)
    sizes = (sum(p.stat().st_size for p in prep.files), sum(Path(p).stat().st_size for p in written))
    report = prune_report(r.analysis, r.after, r.removed, r.scores, sizes, r.compensation)
    if record is not None:
        report["calibration"] = record
    if allocation is not None:
        report["allocation"] = allocation
    if speed is not None:
        report["speed_target"] = speed
    print(summary(report))
    if speed is not None:
        last = speed["chosen"]
        how = (f"latency model of {len(speed['latency_model']['points'])} timed single-group prunes predicted "
               f"{last['predicted_speedup']:.2f}x, {len(speed['steps'])} rounds timed") \
            if "predicted_speedup" in last else f"{len(speed.get('bisection_steps', speed['steps']))} steps timed"
        how += f", {last['by']}" if "by" in last else ""
        print(f"speed target {speed['target_speedup']:.2f}x on {speed['provider']} at batch {speed['batch']}: "
              f"{last['target_macs']:.1%} fewer MACs measured {last['speedup']:.2f}x ({how})")
    if allocation is not None:
        print(_allocation_line(allocation))
    print(group_lines(report))
    if args.validate:
        report.update(checks)
        print(validation_lines(report["validation"]))
        print(bench_lines(report["bench"], ["original", "pruned"]))
    try:  # every output or none: a plan or report that cannot be written takes the model back
        if args.save_plan:
            write_text(args.save_plan, json.dumps(r.plan, indent=1) + "\n")
        if args.report:
            write_text(args.report, json.dumps(report, indent=1) + "\n")
        if args.plot:
            plot_allocation(allocation, speed, args.plot)
    except BaseException:
        for p in written:
            Path(p).unlink(missing_ok=True)
        raise
    print("wrote " + ", ".join(written + [p for p in (args.save_plan, args.report, args.plot) if p]))
    return 0


def _allocate(args: argparse.Namespace, selection: Selection, merge, calibration, shapes):
    """--allocate sensitivity: measure each group's curve on the --calib inputs (else --data), then allocate."""
    if selection.target_macs is None and selection.target_params is None:
        raise OnnxPruneError(f"--allocate {args.allocate} needs --target-macs, --target-params, --target-speedup "
                             "or --target-latency")
    if selection.global_rank or selection.overrides:
        raise OnnxPruneError(f"--allocate {args.allocate} chooses every group's ratio: drop --global and "
                             "--overrides")
    data = args.calib if args.calib and Path(args.calib).suffix == ".npz" else args.data
    if data is None:
        _warn("--allocate sensitivity measures on random inputs (no --calib .npz or --data): the curves say "
              "little about real inputs")
    labels = args.labels if data is not None and data == args.data else None
    inputs = Inputs(shapes=shapes, data=data, labels=labels, seed=args.seed)
    ratios = tuple(float(x) for x in args.sensitivity_ratios.split(","))
    if args.allocate == "sensitivity":
        _progress(f"measuring each group's sensitivity at {args.sensitivity_ratios} on {data or 'random inputs'}")
    return sensitivity_allocation(args.model, selection, args.criterion, inputs, merge, calibration,
                                  args.provider, args.jobs, args.ray, ratios, _progress,
                                  "iterative" if args.allocate == "iterative" else "curves", _speed_target(args))


def _speed_target(args: argparse.Namespace) -> SpeedTarget | None:
    """--target-speedup / --target-latency with how they are timed, for the latency-model allocation."""
    if args.target_speedup is None and args.target_latency is None:
        return None
    shares = tuple(float(x) for x in args.latency_ratios.split(","))
    if not shares or not all(0 < x < 1 for x in shares):
        raise OnnxPruneError("--latency-ratios must be fractions strictly between 0 and 1")
    return SpeedTarget(args.target_speedup, args.target_latency, args.provider, (_batches(args.batch) or (None,))[0],
                       args.threads, max(args.warmup, 3), max(args.runs, 20), shares)


def _speed_search(args: argparse.Namespace, selection: Selection, merge, calibration, shapes):
    """--target-speedup / --target-latency: bisect the MAC target, pruning and timing against the original."""
    return speed_search(args.model, selection, args.target_speedup, args.target_latency, args.criterion, merge,
                        calibration, shapes, args.provider, (_batches(args.batch) or (None,))[0], args.threads,
                        max(args.warmup, 3), max(args.runs, 20), args.include_consumers, args.aggregate, args.seed,
                        _progress)


def _allocation_line(a: dict) -> str:
    """The allocation in a few lines: predicted and measured loss, then each group's ratio."""
    width = max([0, *(len(g) for g in a["groups"])])
    inputs = a["inputs"]
    where = f"{inputs.get('samples')} samples of {inputs['source']}" if isinstance(inputs, dict) and "source" in inputs \
        else str(inputs)
    kept = a.get("compared", {}).get("kept", a["allocation"])
    instead = f" (the {kept} allocation kept: it measured lower)" if kept != a["allocation"] else ""
    lines = [f"allocation by {a['allocation']}{instead} on {where}: predicted loss {a['predicted_loss']:.4f}, "
             f"measured {a['measured_loss']:.4f} ({a['loss']})"]
    lines += [f"  {gid:<{width}} ratio {g['ratio']:.2f}" + (f" (predicted loss {g['predicted_loss']:.4f})"
                                                           if g["predicted_loss"] is not None else "")
              for gid, g in a["groups"].items()]
    return "\n".join(lines)


def _calibration_record(calibration: Calibration, plan: dict | None) -> dict:
    """The record of this calibration; replaying a plan, a warning for each way it differs from the plan's."""
    record = calibration_record(calibration)
    if plan is not None:
        if "calibration" not in plan:
            _progress("the plan records no calibration data, so --calib cannot be compared with it")
        for difference in calibration_differences(plan.get("calibration"), record):
            _warn(difference)
    return record


def _inputs(args: argparse.Namespace, dims: dict[str, tuple[int, ...]] | None = None) -> Inputs:
    """Validation inputs from the flags: --data/--labels, else random at --shape (or the prune's shapes)."""
    data = args.data
    if data is None and getattr(args, "calib", None) and Path(args.calib).is_file():
        data = args.calib  # validate on the user's own inputs rather than on noise
    return Inputs(shapes=dims or parse_shapes(args.shape), data=data, labels=args.labels, batch=args.batch_size,
                  random_batches=args.random_batches, seed=args.seed)


def _batches(text: str | None) -> tuple[int, ...]:
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


def _gate(report: dict, args: argparse.Namespace) -> None:
    """Raise GateFailed (exit 1) when the validation is below --max-drop / --min-cosine."""
    fails = gate_failures(report, args.max_drop, args.min_cosine)
    if fails:
        raise GateFailed("below the bar: " + "; ".join(fails))


def cmd_validate(args: argparse.Namespace) -> int:
    """Compare ORIGINAL and PRUNED on the same inputs; exit 1 below the bar."""
    check_output(args.json, "--json")
    tasks = _tasks(args)
    _progress(f"running both models on {args.provider}")
    report = validate(args.original, args.pruned, _inputs(args), args.provider, args.threads, tasks)
    ran_at = report["inputs"].get("shapes") or report["inputs"].get("sample_shapes") or {}
    dims = {k: (1, *v[1:]) for k, v in ran_at.items()} or parse_shapes(args.shape)  # MACs per sample, as run
    before, after = (count_model_cost(m, dims) for m in (args.original, args.pruned))
    report["cost"] = {"params_before": before.params, "params_after": after.params,
                      "macs_before": before.macs, "macs_after": after.macs}
    print(validation_lines(report))
    print(f"  parameters {before.params:,} -> {after.params:,}, MACs {before.macs:,} -> {after.macs:,} "
          f"({1 - after.macs / max(before.macs, 1):.1%} fewer)")
    if args.json:
        write_text(args.json, json.dumps(report, indent=1) + "\n")
    _gate(report, args)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Latency of one model, or of two interleaved with the speed-up."""
    check_output(args.json, "--json")
    models = [args.model] + ([args.other] if args.other else [])
    for m in models:  # the loader's own checks (not ONNX, external data missing) before onnxruntime's
        check_supported(read_model(m)[0], m)
    _progress(f"timing {len(models)} model(s) on {args.provider}")
    report = bench(models, _batches(args.batch), args.warmup, args.runs, args.provider, args.threads,
                   parse_shapes(args.shape))
    costs = [count_model_cost(m, parse_shapes(args.shape)) for m in models]
    report["models"] = [{"path": m, "params": c.params, "macs_per_sample": c.macs} for m, c in zip(models, costs)]
    print(bench_lines(report, models))
    if len(costs) == 2:
        print(f"  MACs {costs[0].macs:,} -> {costs[1].macs:,}: {costs[0].macs / max(costs[1].macs, 1):.3f}x fewer")
    if args.json:
        write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Prune each group alone at each ratio; JSON (and a plot) of what each costs."""
    check_output(args.output, "-o")
    check_output(args.plot, "--plot")
    try:
        ratios = tuple(float(r) for r in args.ratios.split(","))
    except ValueError:
        raise OnnxPruneError(f"--ratios {args.ratios!r}: expected fractions, e.g. 0.1,0.3,0.5") from None
    if args.plot:
        pyplot()  # fail before the long run, not after it
    given = {k: v for k in MERGE_FLAGS if (v := getattr(args, k)) is not None}
    report = sensitivity(args.model, ratios, args.criterion, _inputs(args), args.provider,
                         MergeOptions.from_keywords(**given), progress=_progress, threads=args.threads)
    write_text(args.output, json.dumps(report, indent=1) + "\n")
    metric = report["metric"]
    width = max([0, *(len(g["id"]) for g in report["groups"])])
    for g in report["groups"]:
        print(f"  {g['id']:<{width}} " + "  ".join(f"{p['ratio']:g}:{p[metric]:.4f}" for p in g["points"]))
    written = [args.output]
    if args.plot:
        plot_sensitivity(report, args.plot)
        written.append(args.plot)
    print(f"{metric} per group and ratio; wrote " + ", ".join(written))
    return 0


def _add_runtime(p: argparse.ArgumentParser) -> None:
    """Flags of every command that runs models in onnxruntime."""
    p.add_argument("--provider", default="auto", choices=PROVIDERS,
                   help="auto: CUDA when it is available and loads, else CPU (default auto)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU intra-op threads (default: the cores available)")


def _add_inputs(p: argparse.ArgumentParser, shape: bool = True, labels: str = "for accuracy") -> None:
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


def _add_task(p: argparse.ArgumentParser) -> None:
    """Flags that say how each output is read (task-aware figures)."""
    p.add_argument("--task", choices=TASKS, help="how outputs are read, besides the plain figures: classify: "
                   "top-1/top-5 agreement ([N, C]); dense: mask IoU ([N, C, H, W]); sequence: greedy-CTC "
                   "text agreement ([N, T, C], blank 0); auto: per output from its shape (default)")
    p.add_argument("--iou-threshold", type=float, metavar="P",
                   help="dense: a pixel is in the mask when its probability (a sigmoid of logits) is > P "
                        "(default 0.5)")
    p.add_argument("--blocks", action="append", metavar="OUTPUT:S1,S2",
                   help="also figures per block of the output's axis 1 of these sizes, e.g. output0:4,80 "
                        "(boxes, class scores)")


def _tasks(args: argparse.Namespace) -> TaskOptions:
    """The task options from the flags (None: the defaults)."""
    threshold = 0.5 if args.iou_threshold is None else args.iou_threshold
    return TaskOptions(args.task or "auto", threshold, parse_blocks(args.blocks))


def _check_blocks(tasks: TaskOptions, outputs: list[str]) -> None:
    """Refuse, before the work, --blocks naming an output the model does not have."""
    unknown = sorted(set(tasks.blocks) - set(outputs))
    if unknown:
        raise OnnxPruneError(f"--blocks names output '{unknown[0]}', which the model does not have "
                             f"(it has {', '.join(outputs)})")


def _add_gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="exit 1 if accuracy (with --labels) or top-1 agreement drops more than this many points")
    p.add_argument("--min-cosine", type=float, metavar="C", help="exit 1 if any output's cosine similarity is below C")


def _add_timing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", metavar="B1,B2",
                   help="batch sizes to time (default: the model's static batch, else 1)")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed runs per model first (default 10)")
    p.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs per model (default 50)")


def _add_merge_flags(r: argparse.ArgumentParser, title: str, calibrated: bool = True) -> argparse._ArgumentGroup:
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


CRITERION_HELP = ("channel importance. l1 / l2: filter norms; fpgm: distance to the layer's other filters "
                  "(geometric median); bn: |BN gamma| (l1 where BN was folded); random: seeded")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnxprune", description="Structured channel pruning of ONNX models.",
                                epilog="exit codes: 0 ok, 1 validation gate failed, 2 refused (bad input or "
                                       "options; one line on stderr), 3 internal error, 4 nothing to prune "
                                       "(see --allow-noop), 130 interrupted")
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="find channel dependency groups and say which are prunable")
    a.add_argument("model")
    a.add_argument("--json", metavar="FILE", help="write the full analysis as JSON")
    a.add_argument("--shape", action="append", metavar="NAME:DIMS", help="fix an input's shape for MAC counts")
    a.add_argument("--prunable-only", action="store_true", help="list prunable groups only")
    a.set_defaults(func=cmd_analyze)
    r = sub.add_parser("prune", help="remove channels and write a smaller model")
    r.add_argument("model")
    r.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--plan", metavar="PLAN.json", help="replay this plan exactly")
    how.add_argument("--ratio", type=float, help="fraction of channels to remove from every prunable group")
    how.add_argument("--target-macs", type=float, metavar="F", help="fraction of MACs to remove (global ranking)")
    how.add_argument("--target-params", type=float, metavar="F", help="fraction of parameters to remove")
    how.add_argument("--target-speedup", type=float, metavar="X", help="run X times faster than the original, "
                     "measured on --provider at the first --batch size (bisection over the MAC target; with "
                     "--allocate sensitivity|iterative, a per-group latency model, corrected by timing)")
    how.add_argument("--target-latency", type=float, metavar="MS", help="median latency to reach, in ms, measured "
                     "as for --target-speedup")
    r.add_argument("--criterion", default="l1", choices=CRITERIA, help=CRITERION_HELP + "; activation: mean "
                   "|activation| on --calib data; wanda: input norm x consumer |weight| on --calib data; flap: input "
                   "fluctuation x consumer weight^2 on --calib data, its mean folded into the bias; lasso: LASSO "
                   "on --calib data, with re-fit (default l1)")
    r.add_argument("--global", dest="global_rank", action="store_true", help="rank channels of all groups together")
    r.add_argument("--allocate", choices=["score", "sensitivity", "iterative"], default="score",
                   help="how much each group loses: score (--ratio per group, or --global's threshold); "
                        "sensitivity: measure each group's loss alone at --sensitivity-ratios on the --calib "
                        "inputs (else --data), then meet --target-macs/--target-params (or a speed target, "
                        "through a measured per-group latency model) with the least predicted loss; iterative: grow the removal one measured step of one group at a "
                        "time, each step the cheapest with everything chosen so far removed (slower, no "
                        "additivity assumed)")
    r.add_argument("--plot", metavar="PNG", help="with --allocate sensitivity or a speed target: draw the "
                   "per-group kept share and the measured speed-up against the MACs removed (matplotlib)")
    r.add_argument("--sensitivity-ratios", default="0.1,0.3,0.5,0.7,0.9", metavar="R,R,...",
                   help="the ratios each group's curve is measured at (--allocate sensitivity)")
    r.add_argument("--latency-ratios", default="0.25,0.5,0.75", metavar="R,R,...",
                   help="with --allocate and a speed target: the shares of each group's channels its latency "
                        "saving is measured at (at the nearest counts --round-to allows)")
    r.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="measure sensitivity points (and each iterative step's trials) in N local processes "
                        "(default 1)")
    r.add_argument("--ray", metavar="ADDRESS", help="measure sensitivity points (and each iterative step's trials) "
                                                   "on a Ray cluster: auto, an address, or local (start one here); "
                                                   "needs onnxprune[ray]")
    r.add_argument("--round-to", type=int, default=1, metavar="N", help="kept channel counts are multiples of N")
    r.add_argument("--min-channels", type=int, default=1, metavar="N", help="never keep fewer channels per group")
    r.add_argument("--max-ratio", type=float, default=1.0, metavar="R", help="never remove more of one group")
    r.add_argument("--exclude", action="append", metavar="GLOB", help="leave the output channels of these nodes (globs)")
    r.add_argument("--overrides", metavar="FILE", help="JSON or YAML: node-name glob -> ratio")
    r.add_argument("--include-consumers", action="store_true", help="score consumers' input slices too")
    r.add_argument("--aggregate", default="mean", choices=list(AGGREGATE), help="combine a group's members")
    r.add_argument("--seed", type=int, default=0, help="seed of the random criterion, of calibration sampling and "
                   "of --validate's random inputs (default 0)")
    r.add_argument("--calib", metavar="FILE.npz|DIR", help="calibration inputs for --criterion activation|lasso and "
                   "reconstruction: arrays named after the inputs (first axis = samples), or a folder of .npy files")
    r.add_argument("--calib-samples", type=int, metavar="N", help="use the first N calibration samples")
    r.add_argument("--calib-points", type=int, default=10, metavar="N",
                   help="output positions sampled per calibration sample for reconstruction (default 10)")
    c = _add_merge_flags(r, "compensation of removed channels (neuron merging, or reconstruction on calibration "
                            "data); with --plan, the plan's recorded options unless given here")
    c.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=None,
                   help="re-fit each group's consumers by least squares on --calib data (He et al.), "
                        "the same as --compensate reconstruct; --no-reconstruct: plain removal "
                        "(default: reconstruct with --criterion lasso)")
    r.add_argument("--save-plan", metavar="FILE", help="write the plan that was applied")
    r.add_argument("--allow-noop", action="store_true",
                   help="write the model even when nothing is removed (else exit 4, nothing written)")
    r.add_argument("--report", metavar="FILE", help="write the before/after report as JSON")
    r.add_argument("--shape", action="append", metavar="NAME:DIMS", help="input shape for the check run and MACs")
    r.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check run")
    v = r.add_argument_group("validation (--validate; --data, --labels, --task, --iou-threshold, --blocks, "
                             "--max-drop and --min-cosine imply it): fidelity and latency of the written model in "
                             "the report; below a --max-drop / --min-cosine bar nothing is written and the exit "
                             "code is 1")
    v.add_argument("--validate", action="store_true", help="compare and time the pruned model against the original")
    _add_inputs(v, shape=False)
    _add_task(v)
    _add_gate(v)
    _add_runtime(v)
    _add_timing(v)
    r.set_defaults(func=cmd_prune)

    v = sub.add_parser("validate", help="compare a pruned model with its original on the same inputs")
    v.add_argument("original")
    v.add_argument("pruned")
    _add_inputs(v)
    _add_task(v)
    _add_gate(v)
    _add_runtime(v)
    v.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    v.add_argument("--json", metavar="FILE", help="write the validation report as JSON")
    v.set_defaults(func=cmd_validate)

    b = sub.add_parser("bench", help="latency and throughput of a model, or of two with the speed-up")
    b.add_argument("model")
    b.add_argument("other", nargs="?", help="a second model, timed interleaved with the first")
    b.add_argument("--shape", action="append", metavar="NAME:DIMS", help="fix an input's dynamic dims")
    _add_timing(b)
    _add_runtime(b)
    b.add_argument("--json", metavar="FILE", help="write the timings as JSON")
    b.set_defaults(func=cmd_bench)

    s = sub.add_parser("sensitivity", help="prune each group alone at a ladder of ratios and measure the cost",
                       description="Prune each prunable group alone at each ratio (ranked by --criterion, "
                                   "compensated as prune does) and record the worst output's cosine, relative L2 "
                                   "error and top-1 agreement against the original, or accuracy with --labels. "
                                   "Progress: one line per group on stderr, with the time left.")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, metavar="FILE.json", help="where to write the curves")
    s.add_argument("--plot", metavar="FILE.png", help="also draw the curves (needs matplotlib)")
    s.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS), metavar="R1,R2",
                   help="fractions of each group's channels to remove, each strictly between 0 and 1 "
                        "(default %(default)s)")
    s.add_argument("--criterion", default="l1", choices=[c for c in CRITERIA if c not in DATA_CRITERIA],
                   help=CRITERION_HELP + " (default l1; the data-driven ones are prune's)")
    _add_inputs(s, labels="; the curves are then accuracy instead of cosine")
    _add_runtime(s)
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the random inputs and of --criterion random (default 0)")
    _add_merge_flags(s, "compensation of removed channels (as for prune)", calibrated=False)
    s.set_defaults(func=cmd_sensitivity)
    for command in sub.choices.values():
        command.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
        command.add_argument("--verbose", action="store_true", help="let onnxruntime's own log lines and warnings "
                             "through (they are kept quiet otherwise)")
    return p


def main(argv: list[str] | None = None) -> int:
    global QUIET
    try:
        args = build_parser().parse_args(argv)
        QUIET = getattr(args, "quiet", False)
        providers.VERBOSE = getattr(args, "verbose", False)
        check_paths(args)
        return args.func(args)
    except KeyboardInterrupt:  # outputs are written atomically, so nothing partial is left
        print("onnxprune: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except GateFailed as exc:
        print(f"onnxprune: {exc}", file=sys.stderr)
        return EXIT_GATE
    except NothingToDo as exc:
        print(f"onnxprune: {exc}", file=sys.stderr)
        return EXIT_NOOP
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback, unless debugging
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        print(f"onnxprune: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
