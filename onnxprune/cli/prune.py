"""`onnxprune prune`: plan (from a file, a criterion, an allocation or a speed target), rewrite, vouch, report."""
from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

from ..analysis.builder import PRODUCER
from ..api import Pruned, default_options, replay_options, run_pipeline, sensitivity_allocation, speed_search
from ..calibration import Calibration
from ..errors import NothingToDo, OnnxPruneError
from ..runtime.providers import KERNEL_MULTIPLE, likely_provider
from ..loading import prepare, save_model
from ..plan import calibration_differences, calibration_record, load_plan, with_calibration
from ..report import depth_lines, group_lines, prune_report, summary, with_blocks
from ..scoring import CRITERIA
from ..scoring.score import AGGREGATE, DATA_CRITERIA
from ..search.depth import depth_prune
from ..search.depth_width import Deep, Goal, Setting, choose_depth, deepen, depth_mode, replay, with_target
from ..search.plots import plot_allocation, pyplot
from ..search.stopwatch import SpeedTarget
from ..selection import Selection
from ..selection.select import rounding_step
from ..selection.overrides import load_overrides
from ..validation.bench import bench, bench_lines
from ..validation.smoke import smoke_check
from ..validation.speed_check import provider_name, quick_speedup, speed_line, speed_warnings
from ..validation.validate import GateFailed, Inputs, gate_failures, validate, validation_lines
from .files import check_output, write_text
from .options import (CRITERION_HELP, MERGE_FLAGS, RECOVER_FLAGS, add_calib_mask, add_gate, add_inputs,
                      add_merge_flags, add_recover_flags, add_runtime, add_task, add_timing, check_blocks,
                      inputs_from, parse_batches, parse_shapes, recover_settings, tasks_from)
from .progress import progress, warn


def add_parser(sub) -> None:
    """Register the subcommand."""
    r = sub.add_parser("prune", help="remove channels and write a smaller model")
    r.add_argument("model")
    r.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    how = r.add_mutually_exclusive_group()  # one of them, or --drop-blocks (checked in _depth_mode)
    how.add_argument("--plan", metavar="PLAN.json", help="replay this plan exactly")
    how.add_argument("--ratio", type=float, help="fraction of channels to remove from every prunable group")
    how.add_argument("--target-macs", type=float, metavar="F", help="fraction of MACs to remove (channels of all groups "
                     "ranked together: --global is implied)")
    how.add_argument("--target-params", type=float, metavar="F", help="fraction of parameters to remove (ranked "
                     "as --target-macs)")
    how.add_argument("--target-speedup", type=float, metavar="X", help="run X times faster than the original, "
                     "measured on --provider at the first --batch size (bisection over the MAC target; with "
                     "--allocate sensitivity|iterative, a per-group latency model, corrected by timing)")
    how.add_argument("--target-latency", type=float, metavar="MS", help="median latency to reach, in ms, measured "
                     "as for --target-speedup")
    d = r.add_argument_group("depth pruning: whole residual blocks (x + f(x) -> x; analyze --blocks lists them)")
    d.add_argument("--drop-blocks", type=int, metavar="N", help="remove the N residual blocks whose removal alone "
                   "changes the outputs least, measured on the --calib .npz (else --data, else random inputs at "
                   "--shape); alone, or then channels of what is left by --ratio or a target (a target counts against "
                   "the original)")
    d.add_argument("--depth", action="store_true", help="with --target-macs/-params/-speedup/-latency: choose "
                   "between blocks and channels: k = 0, 1, 2... of the least important blocks removed, each completed "
                   "to the target by channels, measured as --drop-blocks measures; the least loss (counted as "
                   "--allocate sensitivity counts it) is kept")
    d.add_argument("--max-blocks", type=int, metavar="N", help="with --depth: try at most N blocks removed "
                   "(default: until the blocks alone meet the target or none is left)")
    r.add_argument("--criterion", default="l1", choices=CRITERIA, help=CRITERION_HELP + "; activation: mean "
                   "|activation| on --calib data; wanda: input norm x consumer |weight| on --calib data; flap: input "
                   "fluctuation x consumer weight^2 on --calib data, its mean folded into the bias; lasso: LASSO "
                   "on --calib data, with re-fit (default l1)")
    r.add_argument("--global", dest="global_rank", action="store_true",
                   help="rank channels of all groups together (for --ratio; a target always does)")
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
    r.add_argument("--round-to", type=int, metavar="N",
                   help="kept channel counts are multiples of N; groups of at most N channels stay whole (default: "
                        "the provider's kernel multiple, " + ", ".join(f"{k} {v}" for k, v in KERNEL_MULTIPLE.items())
                        + ", so the result does not run slower off the kernels' multiples; 1: no rounding)")
    r.add_argument("--min-channels", type=int, default=1, metavar="N", help="never keep fewer channels per group")
    r.add_argument("--max-ratio", type=float, default=1.0, metavar="R", help="never remove more than this share of one group (default 1: no cap; a group left with under 10%% "
                   "of its channels is warned about)")
    r.add_argument("--exclude", action="append", metavar="GLOB", help="leave the output channels of these nodes (globs)")
    r.add_argument("--overrides", metavar="FILE", help="JSON or YAML: node-name glob -> ratio")
    r.add_argument("--include-consumers", action="store_true", help="score consumers' input slices too")
    r.add_argument("--aggregate", default="mean", choices=list(AGGREGATE), help="combine a group's members")
    r.add_argument("--seed", type=int, default=0, help="seed of the random criterion, of calibration sampling and "
                   "of --validate's random inputs (default 0)")
    r.add_argument("--calib", metavar="FILE.npz|DIR", help="calibration inputs for --criterion activation|lasso and "
                   "reconstruction: arrays named after the inputs (first axis = samples), or a folder of .npy files")
    r.add_argument("--calib-samples", type=int, metavar="N", help="use the first N calibration samples")
    r.add_argument("--calib-points", type=int, metavar="N",
                   help="output positions sampled per calibration sample for reconstruction (default 10; for a "
                        "sequence with a padding mask, every real position of a full sample)")
    add_calib_mask(r)
    c = add_merge_flags(r, "compensation of removed channels (neuron merging, or reconstruction on calibration "
                            "data); with --plan, the plan's recorded options unless given here")
    c.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=None,
                   help="re-fit each group's consumers by least squares on --calib data (He et al.), "
                        "the same as --compensate reconstruct; --no-reconstruct: plain removal "
                        "(default: reconstruct with --criterion lasso)")
    r.add_argument("--recover", action="store_true", help="after pruning, tune the remaining weights to reproduce "
                   "the original on the --calib inputs (block-wise distillation; with --plan, the plan's recorded "
                   "recovery settings unless given here; any --recover-* flag implies it)")
    add_recover_flags(r)
    r.add_argument("--save-plan", metavar="FILE", help="write the plan that was applied")
    r.add_argument("--allow-noop", action="store_true",
                   help="write the model even when nothing is removed (else exit 4, nothing written)")
    r.add_argument("--report", metavar="FILE", help="write the before/after report as JSON")
    r.add_argument("--shape", action="append", metavar="NAME:DIMS", help="input shape for the check run and MACs")
    r.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check run (and the timing)")
    r.add_argument("--no-time", action="store_true", help="skip the timing of the result against the original")
    r.add_argument("--time-budget", type=float, default=3.0, metavar="S",
                   help="seconds the result is timed against the original, interleaved, at the first --batch on "
                        "--provider (default 3; with an A/A control: the original against itself)")
    v = r.add_argument_group("validation (--validate; --data, --labels, --task, --neighbours, --iou-threshold, "
                             "--blocks, --max-drop and --min-cosine imply it): fidelity and latency of the written model in "
                             "the report; below a --max-drop / --min-cosine bar nothing is written and the exit "
                             "code is 1")
    v.add_argument("--validate", action="store_true", help="compare and time the pruned model against the original")
    add_inputs(v, shape=False)
    add_task(v)
    add_gate(v)
    add_runtime(v)
    add_timing(v)
    r.set_defaults(func=run)


def _selection(args: argparse.Namespace) -> Selection:
    overrides = load_overrides(args.overrides) if args.overrides else {}
    speed = getattr(args, "target_speedup", None) is not None or getattr(args, "target_latency", None) is not None
    macs = 0.5 if speed else args.target_macs  # a speed target searches the MAC target (see _speed_search)
    return Selection(args.ratio, args.global_rank or (speed and args.allocate == "score"), macs, args.target_params,
                     args.round_to, args.min_channels, args.max_ratio, list(args.exclude or []), overrides)



NEARLY_EMPTY = 0.1  # a group keeping less than this share of its channels is warned about


def _say_what_was_emptied(prunable: list, removed: dict, sel: Selection | None) -> None:
    """Warn when a ranking across groups leaves some group nearly empty and no --max-ratio caps it."""
    if sel is None or sel.max_ratio < 1 or (sel.ratio is not None and not sel.global_rank):
        return  # a uniform --ratio asks for exactly what it gets
    thin = [(g, g.channels - len(removed[g.id])) for g in prunable if g.id in removed
            and g.channels - len(removed[g.id]) < NEARLY_EMPTY * g.channels]
    if thin:
        g, kept = min(thin, key=lambda t: t[1] / t[0].channels)
        warn(f"{len(thin)} group(s) keep under {NEARLY_EMPTY:.0%} of their channels (e.g. {g.id}: {kept} of "
             f"{g.channels}); --max-ratio R caps what one group may lose (default 1: no cap)")


def _say_what_was_left(analysis, removed: dict, sel: Selection | None, args, replay: bool) -> None:
    """Warn about patterns that match nothing and groups left whole; refuse a run that removes nothing."""
    names = {n for g in analysis.groups for n in g.nodes(PRODUCER)}
    for flag, globs in (("--exclude", sel.exclude if sel else []), ("--overrides", list(sel.overrides) if sel else [])):
        for glob in globs:
            if not any(fnmatch.fnmatchcase(n, glob) for n in names):
                warn(f"{flag} pattern '{glob}' matches no producer node")
    prunable = analysis.prunable
    _say_what_was_emptied(prunable, removed, sel)
    whole = [g for g in prunable if g.id not in removed]
    if removed and whole:
        small = sum(g.channels <= rounding_step(sel, analysis.unit_width(g)) for g in whole) if sel else 0
        why = f"; {small} are no wider than one --round-to {sel.round_to} step" if sel and sel.round_to > 1 and small else ""
        progress(f"{len(whole)} of {len(prunable)} prunable groups kept whole (guards, rounding or "
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


def run(args: argparse.Namespace) -> int:
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
    if args.time_budget <= 0:
        raise OnnxPruneError(f"--time-budget {args.time_budget:g}: give a positive number of seconds (or --no-time)")
    plan = load_plan(args.plan) if args.plan else None
    mode = _depth_mode(args, plan)
    depth = mode == "blocks"  # blocks alone; "both" and "choose" remove blocks, then channels
    rounding = None if plan or depth else _rounding(args)
    _say_what_is_ignored(args, plan)
    selection = None if plan or depth else _selection(args)
    if selection:
        selection.check()
        if args.global_rank and (args.target_macs is not None or args.target_params is not None):
            progress("note: a MAC or parameter target already ranks the channels of all groups together; --global "
                     "changes nothing here")
    given = {k: v for k in MERGE_FLAGS if (v := getattr(args, k)) is not None}
    if args.reconstruct is not None:
        compensate = "reconstruct" if args.reconstruct else "none"
        if given.get("compensate", compensate) != compensate:
            raise OnnxPruneError(f"--{'' if args.reconstruct else 'no-'}reconstruct contradicts --compensate "
                                 f"{given['compensate']}")
        given["compensate"] = compensate
    merge = replay_options(plan, **given) if plan else default_options(args.criterion, **given)
    shapes = parse_shapes(args.shape)
    implied = (args.data, args.labels, args.max_drop, args.min_cosine, args.task, args.iou_threshold, args.blocks,
               args.neighbours)
    args.validate = args.validate or any(x is not None for x in implied)
    args.recover = args.recover or any(getattr(args, flag) is not None for flag in RECOVER_FLAGS)
    tasks = tasks_from(args)
    batches = parse_batches(args.batch)
    progress("loading")
    prep = prepare(args.model)
    if args.recover and prep.quantized:  # said before the prune, not after it
        raise OnnxPruneError("recovery tunes float weights, and this model is quantized: recover the float model, "
                             "then quantize it (docs/guide/formats.md)")
    check_blocks(tasks, [t.name for t in prep.graph.outputs])
    progress(f"analyzing {len(prep.graph.nodes)} nodes, " + (f"replaying {args.plan}" if plan else
                                                              "measuring residual blocks" if mode != "width" else
                                                              f"scoring by {args.criterion}, rewriting"))
    calibration = Calibration(args.calib, args.calib_samples, points=args.calib_points, seed=args.seed,
                              mask=args.calib_mask) if args.calib else None
    if calibration is not None:
        masked = calibration.mask_input([(t.name, t.shape) for t in prep.graph.inputs])
        progress(f"calibration: padding positions where '{masked}' is 0 are left out of every statistic and fit"
                 if masked else "calibration: no padding mask (every position counts)")
    record = None
    if calibration is not None and mode == "width" and merge.compensate not in ("reconstruct", "mean") and \
            (plan or args.criterion not in DATA_CRITERIA) and args.allocate == "score" and not args.recover:
        warn(f"--calib is read only by --criterion {'/'.join(DATA_CRITERIA)}, --reconstruct, --compensate mean and "
             "--recover; it is ignored here")
    elif calibration is not None:
        record = _calibration_record(calibration, plan)
    depth_record, deep = None, None
    if depth:
        r, depth_record = _depth(args, prep, plan, shapes, tasks)
    elif mode != "width":
        deep = _depth_width(args, mode, prep, plan, selection, merge, calibration, shapes, tasks)
        r, depth_record = deep.pruned, deep.importance
    else:
        r = _width(args, args.model, prep, plan, selection, merge, calibration, shapes, tasks)
    allocation, speed = (None, None) if plan else (r.plan.get("allocation"), r.plan.get("speed_target"))
    if record is not None and plan is None:
        r.plan = with_calibration(r.plan, record)
    if mode == "width" or (deep is not None and r.removed):
        _say_what_was_left(r.analysis, r.removed, selection, args, plan is not None)
    recovery = _recover(args, r, calibration, plan) if args.recover else None
    dims = r.analysis.cost.input_dims
    checks: dict = {}

    def verify(path: Path) -> None:
        """Vouch for the bytes written: they load and run in onnxruntime like the original (and pass the bar).

        With --validate the pruned model is also compared and timed here, before it is moved into place.
        """
        if args.validate:  # runs both models too, so the smoke run would repeat it
            progress(f"validating on {provider_name(likely_provider(args.provider))}")
            checks["validation"] = validate(str(args.model), str(path), inputs_from(args, dims), args.provider,
                                            args.threads, tasks)
            broken = [k for k, v in checks["validation"]["outputs"].items() if not v["finite"]]
            if broken:
                raise OnnxPruneError(f"the pruned model's output '{broken[0]}' is not finite")
            checks["gate"] = _gate(checks["validation"], args)
            progress("timing both models")
            checks["bench"] = bench([str(args.model), str(path)], batches, args.warmup, args.runs, args.provider,
                                    args.threads, dims)
        elif not args.no_verify:
            progress("running the written model in onnxruntime")
            smoke_check(str(args.model), str(path), r.model, dims)
        if not (args.no_time or args.no_verify):
            progress(f"timing the result against the original ({args.time_budget:g} s)")
            checks["speed"] = quick_speedup(str(args.model), str(path), args.provider,
                                            (parse_batches(args.batch) or (None,))[0], args.threads, dims,
                                            args.time_budget)

    extras = {"calibration": record, "allocation": allocation, "speed_target": speed, "recovery": recovery,
              "blocks_removed": r.plan["blocks_removed"] if depth else None, "block_importance": depth_record,
              "depth_choice": deep.choice if deep else None}
    try:
        written = save_model(r.model, args.output, external_data=prep.external_data or None, verify=verify)
    except GateFailed:  # below the bar: the figures and the report still, the model not
        _failed_gate(args, _report(r, deep, None), extras, checks)
        raise
    sizes = (sum(p.stat().st_size for p in prep.files), sum(Path(p).stat().st_size for p in written))
    report = _report(r, deep, sizes)
    report.update({k: v for k, v in extras.items() if v is not None})
    if rounding is not None:
        report["rounding"] = rounding
    print(depth_lines(report) if depth or deep else summary(report))
    if rounding is not None:
        print(f"rounding: kept channel counts are multiples of {rounding['round_to']} ({rounding['why']})")
    if "speed" in checks:
        report["speed"] = checks.pop("speed")
        print(speed_line(report["speed"]))
        for line in speed_warnings(report["speed"], args.round_to or 1):
            warn(line.split(": channel counts")[0] if depth else line)  # that advice is about channels
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
    if not depth:
        print(group_lines(report))
    if recovery is not None:
        from ..recovery.run import recovery_lines

        print(recovery_lines(recovery))
    if args.validate:
        report.update(checks)
        print(validation_lines(report["validation"]))
        print(bench_lines(report["bench"], ["original", "pruned"]))
        if report["gate"] is not None:
            print("gate: passed (" + ", ".join(report["gate"]["bars"]) + ")")
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


def _recover(args: argparse.Namespace, r, calibration: Calibration | None, plan: dict | None) -> dict:
    """--recover: distill the pruned model from the original on the --calib inputs; the plan records how."""
    from ..recovery.run import recover_from, teacher_of

    if calibration is None:
        raise OnnxPruneError("--recover needs --calib: the inputs on which the pruned model learns to reproduce the "
                             "original")
    recorded = (plan or {}).get("recovery", {}).get("settings")
    progress("recovering: each block of the pruned model trained to reproduce the original's output of it")
    r.model, record = recover_from(teacher_of(args.model), r.model, calibration, recover_settings(args, recorded),
                                   progress)
    r.plan["recovery"] = {"settings": record["settings"], "calibration": record["calibration"]}
    return record


CHANNEL_FLAGS = (("--criterion", "criterion", "l1"), ("--allocate", "allocate", "score"),
                 ("--global", "global_rank", False), ("--round-to", "round_to", None),
                 ("--min-channels", "min_channels", 1),
                 ("--max-ratio", "max_ratio", 1.0), ("--exclude", "exclude", None), ("--overrides", "overrides", None),
                 ("--reconstruct", "reconstruct", None), ("--include-consumers", "include_consumers", False),
                 *((f"--{k.replace('_', '-')}", k, None) for k in MERGE_FLAGS))
WIDTHS = (("--ratio", "ratio"), ("--target-macs", "target_macs"), ("--target-params", "target_params"),
          ("--target-speedup", "target_speedup"), ("--target-latency", "target_latency"))


def _depth_mode(args: argparse.Namespace, plan: dict | None) -> str:
    """'width', 'blocks' (alone), 'both' (blocks, then channels) or 'choose' (--depth); refuse what cannot combine."""
    return depth_mode(plan, args.drop_blocks, args.depth, args.max_blocks,
                      [flag for flag, key in WIDTHS if getattr(args, key) is not None],
                      [flag for flag, key, default in CHANNEL_FLAGS if getattr(args, key) != default])


def _depth(args: argparse.Namespace, prep, plan: dict | None, shapes, tasks):
    """--drop-blocks N: measure each removable block alone on --calib (.npz), else --data, else random inputs, and
    remove the N least important; or replay a plan's blocks_removed."""
    inputs = _depth_inputs(args, shapes)
    if args.calib and inputs.data != args.calib and plan is None and not args.recover:
        warn("--drop-blocks measures on an .npz: the --calib folder is read only by --recover; it is ignored here")
    return depth_prune(prep, args.model, args.drop_blocks, plan, inputs, shapes, args.provider, args.threads, tasks,
                       args.allow_noop, progress, warn)


def _depth_width(args: argparse.Namespace, mode: str, prep, plan: dict | None, selection: Selection | None, merge,
                 calibration, shapes, tasks) -> Deep:
    """Blocks, then channels: a joint plan replayed, --drop-blocks N with a width option, or --depth's choice."""
    if plan is not None:
        return replay(prep, args.model, plan, shapes, lambda m, p: run_pipeline(
            prepare(m), shapes, p, args.criterion, None, args.include_consumers, args.aggregate, args.seed, merge,
            calibration, args.provider, progress))

    def width(path: str, asked: dict) -> Pruned:
        given = argparse.Namespace(**{**vars(args), **asked})
        return _width(given, path, prepare(path), None, with_target(selection, asked), merge, calibration, shapes,
                      tasks)

    setting = Setting(_depth_inputs(args, shapes, labels=True), shapes, args.provider, args.threads, tasks, progress,
                      warn)
    goal = Goal(args.target_macs, args.target_params, _speed_target(args))
    if mode == "choose":
        return choose_depth(prep, args.model, goal, width, setting, args.max_blocks)
    return deepen(prep, args.model, args.drop_blocks, goal, width, setting)


def _depth_inputs(args: argparse.Namespace, shapes, labels: bool = False) -> Inputs:
    """Where blocks are measured: the --calib .npz, else --data (with --labels if asked), else random inputs."""
    data = args.calib if args.calib and Path(args.calib).suffix == ".npz" else args.data
    return Inputs(shapes=shapes, data=data, labels=args.labels if labels and data and data == args.data else None,
                  batch=args.batch_size, random_batches=args.random_batches, seed=args.seed)


def _width(args: argparse.Namespace, source: str, prep, plan: dict | None, selection: Selection | None, merge,
           calibration, shapes, tasks) -> Pruned:
    """The channel step on `source` (the model, or it without blocks): replay, allocation, speed search or one pass;
    its plan records the allocation and the speed search."""
    allocation, measured_loss, speed = None, None, None
    if args.allocate in ("sensitivity", "iterative") and plan is None:
        selection, allocation, measured_loss = _allocate(args, source, selection, merge, calibration, shapes, tasks)
        speed = allocation.pop("speed_target", None)
    if plan is None and allocation is None and (args.target_speedup is not None or args.target_latency is not None):
        r, speed = _speed_search(args, source, selection, merge, calibration, shapes)
    else:
        r = run_pipeline(prep, shapes, plan, args.criterion, selection, args.include_consumers, args.aggregate,
                         args.seed, merge, calibration, args.provider, progress)
    if allocation is not None:
        allocation["measured_loss"] = round(measured_loss(r.model), 6)
        r.plan["allocation"] = allocation
    if speed is not None:
        r.plan["speed_target"] = speed
    return r


def _report(r: Pruned, deep: Deep | None, sizes: tuple[int, int] | None) -> dict:
    """The prune report; after blocks, counted from the original."""
    report = prune_report(r.analysis, r.after, r.removed, r.scores, sizes, r.compensation)
    return with_blocks(report, deep.original, deep.blocks, deep.after_blocks) if deep else report


def _allocate(args: argparse.Namespace, source: str, selection: Selection, merge, calibration, shapes, tasks):
    """--allocate sensitivity: measure each group's curve on the --calib inputs (else --data), then allocate."""
    if selection.target_macs is None and selection.target_params is None:
        raise OnnxPruneError(f"--allocate {args.allocate} needs --target-macs, --target-params, --target-speedup "
                             "or --target-latency")
    if selection.global_rank or selection.overrides:
        raise OnnxPruneError(f"--allocate {args.allocate} chooses every group's ratio: drop --global and "
                             "--overrides")
    data = args.calib if args.calib and Path(args.calib).suffix == ".npz" else args.data
    if data is None:
        warn("--allocate sensitivity measures on random inputs (no --calib .npz or --data): the curves say "
              "little about real inputs")
    labels = args.labels if data is not None and data == args.data else None
    inputs = Inputs(shapes=shapes, data=data, labels=labels, seed=args.seed)
    ratios = tuple(float(x) for x in args.sensitivity_ratios.split(","))
    if args.allocate == "sensitivity":
        progress(f"measuring each group's sensitivity at {args.sensitivity_ratios} on {data or 'random inputs'}")
    return sensitivity_allocation(source, selection, args.criterion, inputs, merge, calibration,
                                  args.provider, args.jobs, args.ray, ratios, progress,
                                  "iterative" if args.allocate == "iterative" else "curves", _speed_target(args),
                                  tasks)


def _speed_target(args: argparse.Namespace) -> SpeedTarget | None:
    """--target-speedup / --target-latency with how they are timed, for the latency-model allocation."""
    if args.target_speedup is None and args.target_latency is None:
        return None
    shares = tuple(float(x) for x in args.latency_ratios.split(","))
    if not shares or not all(0 < x < 1 for x in shares):
        raise OnnxPruneError("--latency-ratios must be fractions strictly between 0 and 1")
    return SpeedTarget(args.target_speedup, args.target_latency, args.provider, (parse_batches(args.batch) or (None,))[0],
                       args.threads, max(args.warmup, 3), max(args.runs, 20), shares)


def _speed_search(args: argparse.Namespace, source: str, selection: Selection, merge, calibration, shapes):
    """--target-speedup / --target-latency: bisect the MAC target, pruning and timing against the original."""
    return speed_search(source, selection, args.target_speedup, args.target_latency, args.criterion, merge,
                        calibration, shapes, args.provider, (parse_batches(args.batch) or (None,))[0], args.threads,
                        max(args.warmup, 3), max(args.runs, 20), args.include_consumers, args.aggregate, args.seed,
                        progress)


def _allocation_line(a: dict) -> str:
    """The allocation in a few lines: predicted and measured loss, then each group's ratio."""
    width = max([0, *(len(g) for g in a["groups"])])
    inputs = a["inputs"]
    where = f"{inputs.get('samples')} samples of {inputs['source']}" if isinstance(inputs, dict) and "source" in inputs \
        else str(inputs)
    compared = a.get("compared", {})
    kept = compared.get("kept", a["allocation"])
    if kept != a["allocation"]:  # the other candidate won: there is no prediction of its loss to show
        losses = compared.get("losses", {})
        lines = [f"allocation: {kept}, kept over the {a['allocation']} allocation because it measured lower ("
                 + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()) + f") on {where}; measured "
                 f"{a['measured_loss']:.4f} ({a['loss']})"]
    else:
        lines = [f"allocation by {a['allocation']} on {where}: predicted loss {a['predicted_loss']:.4f}, "
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
            progress("the plan records no calibration data, so --calib cannot be compared with it")
        for difference in calibration_differences(plan.get("calibration"), record):
            warn(difference)
    return record


def _rounding(args: argparse.Namespace) -> dict:
    """--round-to, or the provider's kernel multiple by default; sets args.round_to."""
    if args.round_to is not None:
        return {"round_to": args.round_to, "why": "--round-to" if args.round_to > 1 else "--round-to 1: none"}
    provider = likely_provider(args.provider)
    args.round_to = KERNEL_MULTIPLE[provider]
    return {"round_to": args.round_to, "why": f"the default on {provider_name(provider)}; --round-to 1 turns it off",
            "default": True}


def _say_what_is_ignored(args: argparse.Namespace, plan: dict | None) -> None:
    """Warn about flags this run does not read."""
    if args.allocate == "score" or plan is not None:
        for flag, value, default in (("--jobs", args.jobs, 1), ("--ray", args.ray, None)):
            if value != default:
                warn(f"{flag} is read only by --allocate sensitivity|iterative; it is ignored here")
    if plan is not None and args.round_to is not None:
        warn("--round-to is ignored with --plan: the plan names the channels")


def _bars(args: argparse.Namespace) -> list[str]:
    """The bars set, as given: ['--max-drop 1', ...]."""
    return [f"{flag} {v:g}" for flag, v in (("--max-drop", args.max_drop), ("--min-cosine", args.min_cosine))
            if v is not None]


def _gate(validation: dict, args: argparse.Namespace) -> dict | None:
    """The --max-drop / --min-cosine verdict (None without a bar); GateFailed when below it."""
    if args.max_drop is None and args.min_cosine is None:
        return None
    bars = _bars(args)
    fails = gate_failures(validation, args.max_drop, args.min_cosine)
    if fails:
        raise GateFailed("below the bar: " + "; ".join(fails) + "; nothing written")
    return {"passed": True, "bars": bars, "failures": []}


def _failed_gate(args: argparse.Namespace, report: dict, extras: dict, checks: dict) -> None:
    """A run below the bar prints what validate prints and writes --report (marked failed); no model."""
    report.update({k: v for k, v in extras.items() if v is not None})
    fails = gate_failures(checks["validation"], args.max_drop, args.min_cosine)
    report["validation"] = checks["validation"]
    report["gate"] = {"passed": False, "bars": _bars(args), "failures": fails}
    report["written"] = False
    print(depth_lines(report) if "blocks_removed" in report else summary(report))
    print(validation_lines(report["validation"]))
    if args.report:
        write_text(args.report, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.report} (the model was not written: below the bar)")
