"""`lume-ray ...`: parse the command line, build the config, call a stage. Nothing else.

Input:  the command line.
Output: the stage's work; exit status 0, or 2 with one line ``lume-ray: error: ...`` on bad input.

The options of ``unlearn`` and ``eval`` are generated from the config models (:class:`~lume_ray.config.UnlearnJob`,
:class:`~lume_ray.config.TrainConfig`, :class:`~lume_ray.config.EvalConfig`) by :mod:`lume_ray.cli_options`: a field
added there is a flag here, with its description as help, and is validated by the same model. Stage modules return
values (data, lines, tables); the handlers here print them. Stage modules are imported lazily so that
``lume-ray --help`` stays fast. ``LUME_RAY_DEBUG=1`` shows full tracebacks instead of one-line errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lume_ray import cli_options as opt
from lume_ray import cli_parser, console
from lume_ray.redact import redact_secrets

DEFAULT_EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


# ---------------------------------------------------------------------------------------------
# Command handlers: build the config, call the stage, print what it returns. Stage modules are imported inside
# the handlers (heavy: pydantic, torch, Ray), so that `import lume_ray.cli` and `lume-ray --help` stay fast.


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from lume_ray.data import summarize, summary_lines
    from lume_ray.preflight import check_data

    data = check_data(args.path, "PATH", "lume-ray data inspect")
    table = summarize(data)
    if args.json:
        print(json.dumps({"source": data.source, "fingerprint": data.fingerprint(), "counts": table}, indent=2))
    else:
        print("\n".join(summary_lines(data, table)))
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from lume_ray.config import SynthConfig
    from lume_ray.synth import summary_line, write_dataset

    cfg = opt.validate_model(SynthConfig, opt.nested(args, args.flags), "data synth", args.flags)
    print(summary_line(write_dataset(args.out_dir, cfg.docs_per_task, cfg.seed)))
    return 0


def cmd_target_build(args: argparse.Namespace) -> int:
    from lume_ray.config import BuildConfig
    from lume_ray.preflight import check_data
    from lume_ray.target import build_target, summary_lines

    cfg = opt.validate_model(BuildConfig, opt.nested(args, args.flags), "target build", args.flags)
    check_data(args.data, "--data", "lume-ray target build")
    manifest = build_target(args.out_dir, args.data, preset=cfg.preset, seed=cfg.seed, epochs=cfg.epochs,
                            force=args.force)
    print("\n".join([f"{args.out_dir}:", *("  " + line for line in summary_lines(manifest))]))
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from lume_ray.config import ConfigError, UnlearnJob
    from lume_ray.local_ray import ray_session
    from lume_ray.train import run_unlearning

    raw = opt.nested(args, args.flags)
    raw["params"] = dict(args.params or [])
    if args.plugin:
        raw["plugins"] = list(args.plugin)
    if args.lora is not None:
        raw.setdefault("train", {})["lora"] = dict(args.lora)
    if args.eval_every is not None:
        if args.eval_every < 1:
            raise ConfigError(f"lume-ray unlearn: --eval-every: must be >= 1 (got {args.eval_every})")
        steps = int(raw.get("steps", UnlearnJob.model_fields["steps"].default))
        raw["eval_steps"] = list(range(args.eval_every, steps + 1, args.eval_every))
    job = opt.validate_model(UnlearnJob, raw, "unlearn", {**args.flags, "train.lora": "--lora", "params": "--set",
                                                          "plugins": "--plugin"})
    # A cluster to connect to is connected here (its address probed first, before anything is written); a local
    # Ray is started by run_unlearning itself, after its checks of the data and the model.
    check_job_inputs(job, address=args.address)
    t = job.train
    print(f"[unlearn] {job.algorithm} {job.params} lr={job.lr} steps={job.steps} batch={t.batch_size} "
          f"workers={t.workers} zero={t.zero} precision={t.resolved_precision} -> {job.out}", flush=True)
    remote = args.address or os.environ.get("RAY_ADDRESS")
    from lume_ray.plugins import runtime_env

    plugin_env: dict[str, Any] = {"runtime_env": env} if (env := runtime_env(job.plugins)) else {}
    session = ray_session(address=remote, log_to_driver=True, **plugin_env) if remote else contextlib.nullcontext()
    with _quiet(args, job.out, "UNLEARN"), session:
        check_cluster_resources(job, remote)
        res = run_unlearning(job)
    print(f"[unlearn] {res.status}{': ' + res.reason if res.reason else ''} after {res.steps_done} steps "
          f"in {res.wall_s:.1f} s (resumed from step {res.resumed_from})")
    for p in res.points:
        print(f"  step {p.step:>6}  forget loss {p.forget_loss:.4f}  retain loss {p.retain_loss:.4f}  {p.model_dir}")
    print(f"  log: {res.log_path}")
    if res.status == "failed":
        print(f"lume-ray: error: unlearning failed: {res.reason}", file=sys.stderr)
        return 1
    return 0


def _quiet(args: argparse.Namespace, out: str | Path, command: str) -> Any:
    """The command's quiet console: Ray's, DeepSpeed's (...) output in OUT/logs/, its own progress on the terminal
    (on stderr when stdout carries the command's data: --json)."""

    return console.quiet(Path(out) / "logs", verbose=args.verbose, passthrough=getattr(console, command),
                         to_stderr=bool(getattr(args, "json", False)))


def check_job_inputs(job: Any, *, address: str | None = None) -> None:
    """An unlearning job's inputs (:func:`lume_ray.preflight.check_job`: data, model, rows against the model's
    context, this machine's GPUs; then the algorithm's own check against the model), before anything is written or
    started. ``address``: the cluster it will run on (its resources are checked once connected)."""
    from lume_ray import preflight
    from lume_ray.config import ConfigError
    from lume_ray.train.job import absolute
    from lume_ray.train.job import preflight as job_preflight

    preflight.check_job(job, "lume-ray unlearn", address=address)
    try:
        job_preflight(absolute(job))
    except ValueError as e:  # the algorithm's own check of its parameters against the model
        raise ConfigError(f"lume-ray unlearn: --set: {str(e).splitlines()[0]}") from None


def check_cluster_resources(job: Any, remote: str | None) -> None:
    """A connected cluster's CPUs and GPUs against what the job asks for (``ray.cluster_resources()``)."""
    import ray  # heavy: Ray, already imported by the session

    if remote and ray.is_initialized():
        from lume_ray.preflight import FLAGS, check_resources

        check_resources(ray.cluster_resources(), f"the cluster at {remote}", "lume-ray unlearn", train=job.train,
                        keys=FLAGS)


def check_eval_inputs(model: str, data: str, utility: Any, *, args: argparse.Namespace | None = None,
                      settings: Any = None) -> Any:
    """An evaluation's inputs (:func:`lume_ray.preflight.check_eval`: model, data, MIA files, rows, this machine's
    resources) and its utility set, checked before anything is written or started (a one-line error: MMLU that
    cannot be loaded offline fails here, not after Ray's start-up). Returns the utility set, loaded (given to the
    evaluation, so it is read once), or ``utility`` itself when it names none (the data's default)."""
    from lume_ray import preflight
    from lume_ray.evaluate.inputs import resolve_utility

    preflight.check_eval(model, data, settings, "lume-ray eval", address=getattr(args, "address", None),
                         member=getattr(args, "member", None), nonmember=getattr(args, "nonmember", None),
                         utility=utility, trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
                         out=getattr(args, "out", None))
    return utility if utility is None else resolve_utility(utility, None)  # its errors name the utility given


def cmd_eval(args: argparse.Namespace) -> int:
    from lume_ray.config import EvalConfig
    from lume_ray.evaluate.runner import evaluate, summary_lines
    from lume_ray.local_ray import ray_session

    settings = opt.validate_model(EvalConfig, opt.nested(args, args.flags), "eval", args.flags)
    utility = check_eval_inputs(args.model, args.data, args.utility, args=args, settings=settings)
    session = ray_session(address=args.address, configure_logging=False)  # an address is probed here
    with _quiet(args, args.out, "EVAL"), session:
        result = evaluate(args.model, args.data, settings, members=args.member, nonmembers=args.nonmember,
                          utility=utility, reference_utility=args.reference_utility, out_dir=args.out,
                          trust_remote_code=args.trust_remote_code, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print(f"wrote {Path(args.out) / 'rows.parquet'} and {Path(args.out) / 'metrics.json'} "
              f"({result['seconds']:.1f} s)")
    return 0


def _experiment(args: argparse.Namespace, path: str | Path) -> Any:
    from lume_ray.config import MlflowConfig, load_experiment

    overrides = list(args.overrides)
    if getattr(args, "out", None):
        overrides.append(("output_dir", args.out))
    if getattr(args, "sampler", None):
        overrides.append(("sweep.sampler", args.sampler))
    if getattr(args, "mlflow", None):
        overrides.append(("tracking.mlflow.uri", args.mlflow))
    exp = load_experiment(path, overrides)
    if getattr(args, "mlflow", None) == "" and exp.tracking.mlflow is None:  # --mlflow alone: the local store
        exp = exp.model_copy(update={"tracking": exp.tracking.model_copy(update={"mlflow": MlflowConfig()})})
    return exp


def cmd_sweep(args: argparse.Namespace) -> int:
    from lume_ray import pipeline
    from lume_ray.search.sweep import read_warm_start

    exp = _experiment(args, args.experiment)
    if args.warm_start:
        read_warm_start(args.warm_start)  # a wrong directory is a one-line error now, not after the target build
    pipeline.run_study(exp, resume=args.resume, address=args.address, warm_start=args.warm_start,
                       verbose=args.verbose, source=str(args.experiment))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from lume_ray import pipeline

    path = Path(args.experiment) if args.experiment else DEFAULT_EXPERIMENT
    exp = _experiment(args, path)
    pipeline.run_study(exp, resume=None, address=None, verbose=args.verbose, source=str(path))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict  # stdlib, but inspect with it: `import lume_ray.cli` stays fast

    from lume_ray.status import run_status, status_lines

    st = run_status(args.run_dir)
    print(json.dumps(asdict(st), indent=2, default=str) if args.json else "\n".join(status_lines(st)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """One run -> its report; several -> their comparison (needs --out)."""
    from lume_ray.report import build_report, compare_runs, parse_floors

    floors = parse_floors(args.floor)
    if len(args.run_dirs) > 1:
        if args.no_redact:
            raise ValueError("--no-redact: a comparison shows no sample text (drop the flag)")
        out = compare_runs(args.run_dirs, args.out, objectives=args.objectives, floors=floors)
        print(f"comparison: {out / 'report.html'}")
        print(f"            {out / 'report.md'} (figures in {out / 'figures'}), {out / 'differences.csv'}")
        return 0
    out = build_report(args.run_dirs[0], out_dir=args.out, objectives=args.objectives, floors=floors,
                       redact=not args.no_redact)
    print(f"report: {out / 'report.html'}")
    print(f"        {out / 'report.md'} (figures in {out / 'figures'}), {out / 'pareto.csv'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`lume-ray export RUN_DIR (--point TRIAL_ID@STEP | --best ALGORITHM [--by M] [--floor ...]) --out DIR`."""
    from lume_ray.config import ConfigError
    from lume_ray.export import RerunFailed, export_point
    from lume_ray.report import parse_floors

    floors = parse_floors(args.floor)
    if args.tolerance is not None and not args.tolerance >= 0:
        raise ConfigError(f"--tolerance {args.tolerance}: must be a number >= 0 (absolute, per metric)")
    passthrough = console.Passthrough(show=console.UNLEARN.show, progress=console.UNLEARN.progress)

    def quiet(log_dir: Path) -> Any:
        return console.quiet(log_dir, verbose=args.verbose, passthrough=passthrough)

    try:
        done = export_point(args.run_dir, args.out, point=args.point, best=args.best, by=args.by, floors=floors,
                            address=args.address, tolerance=args.tolerance, command=["lume-ray", *sys.argv[1:]],
                            log=console.say, console=quiet)
    except RerunFailed as e:  # not bad input: the re-run differs from the record (exit 1)
        print(f"lume-ray: error: {str(e).splitlines()[0]}{console.error_hint(e)}", file=sys.stderr)
        return 1
    print(f"exported {done.point.label} ({done.point.algorithm}) to {done.out}: {', '.join(done.files)}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from lume_ray.cluster import jobs

    sub = jobs.build_submission(args.experiment, list(args.overrides), root=args.working_dir)
    if sub.upload is not None:
        print(f"[submit] working directory: {sub.upload.summary()}")
    if big := jobs.skipped_files(sub):
        print(f"[submit] not shipping {len(big)} large file(s): {', '.join(big[:3])}{' ...' if len(big) > 3 else ''}")
    try:
        client = jobs.connect(args.address)
    except BaseException:
        sub.cleanup()
        raise
    address = client.get_address()
    print(f"[submit] uploading {sub.runtime_env['working_dir']} and submitting {sub.metadata['experiment_path']}")
    job_id = jobs.submit(client, sub)
    print(f"[submit] job {job_id} submitted to {address}; RUN_DIR on the cluster: {sub.output_dir}")
    print(f"[submit] follow it: lume-ray jobs logs {job_id} --follow --address {address}")
    print(f"[submit] stop it:   lume-ray jobs stop {job_id} --address {address}")
    if args.no_wait:
        return 0
    try:
        state = jobs.follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\n[submit] stopped following; job {job_id} keeps running on the cluster", file=sys.stderr)
        return 130
    # follow() already printed every log line; the tail is only repeated for failures.
    return _job_end(client, job_id, state, show_tail=True)


def _job_end(client: Any, job_id: str, state: str, show_tail: bool) -> int:
    from lume_ray.cluster import first_line, jobs

    if state == "SUCCEEDED":
        print(f"[submit] job {job_id} SUCCEEDED")
        return 0
    info = jobs.job_info(client, job_id)
    if show_tail:
        print(f"--- last lines of {job_id} ---", file=sys.stderr)
        print(jobs.log_tail(client, job_id), file=sys.stderr)
    code = f", driver exit code {info.driver_exit_code}" if info.driver_exit_code is not None else ""
    msg = f": {first_line(Exception(info.message))}" if info.message else ""
    print(f"lume-ray: error: job {job_id} {state}{code}{msg}", file=sys.stderr)
    return 1


def cmd_jobs(args: argparse.Namespace) -> int:
    from lume_ray.cluster import ClusterError, jobs

    if args.action != "list" and not args.job_id:
        raise ClusterError(f"`lume-ray jobs {args.action}` needs a JOB id (`lume-ray jobs list` shows them)")
    client = jobs.connect(args.address)
    if args.action == "list":
        print("\n".join(jobs.jobs_table(jobs.list_jobs(client))))
        return 0
    job_id = args.job_id
    if args.action == "status":
        info = jobs.job_info(client, job_id)
        print("\n".join(jobs.info_lines(job_id, info)))
        return 0 if info.status.value != "FAILED" else 1
    if args.action == "logs":
        if args.follow:
            state = jobs.follow(client, job_id)
            return 0 if state == "SUCCEEDED" else _job_end(client, job_id, state, show_tail=False)
        sys.stdout.write(jobs.logs(client, job_id))
        return 0
    stopped = jobs.stop(client, job_id)  # stop
    state = jobs.wait(client, job_id, timeout_s=30)
    print(f"[jobs] {job_id}: {'stop requested' if stopped else 'already finished'}; status {state}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The contract checks of the built-in algorithms, metrics and samplers, on what each plugin registers."""
    from lume_ray.plugins import load_plugin, registered_by, resolve
    from lume_ray.testing import check_registered

    specs = resolve(args.plugins, ".")
    for spec in specs:  # every plugin imports (a bad one: one line, exit 2) before any model is built
        load_plugin(spec)
    failed = 0
    for spec in specs:
        found = registered_by(spec)
        print(f"[check] {spec}: " + "; ".join(f"{kind} {', '.join(names)}" for kind, names in found.items() if names),
              flush=True)
        results = check_registered(found, progress=lambda r: print(r.line(), flush=True))
        failed += sum(not r.ok for r in results)
    print(f"[check] {'all checks passed' if not failed else f'{failed} check(s) failed'}")
    return 1 if failed else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from lume_ray.cluster.plan import disk_dict, disk_lines, disk_plan, plan, plan_dict, plan_lines

    if args.experiment:  # the disk a sweep of it holds at peak; the ZeRO table too when --gpus is given
        exp = _experiment(args, args.experiment)
        d = disk_plan(exp, args.model, args.gpus)
        if args.gpus is None:
            print(json.dumps(disk_dict(d), indent=2) if args.json else "\n".join(disk_lines(d)))
            return 0
        if d.model_key is None:
            raise ValueError(f"plan {args.experiment} --gpus: the ZeRO table needs the target's config; "
                             f"{d.source}: build it first, or give --model 1b|7b|DIR")
        p = plan(d.model_key, args.gpus, args.gpus_per_node, args.gpu_mem, exp.train.lora is not None)
        print(json.dumps({"disk": disk_dict(d), "zero": plan_dict(p)}, indent=2) if args.json
              else "\n".join([*disk_lines(d), "", *plan_lines(p)]))
        return 0 if p.recommended else 1
    if args.model is None or args.gpus is None:
        raise ValueError("plan: give an experiment file (lume-ray plan experiments/lume-7b.yaml), or --model and "
                         f"--gpus (got --model {args.model}, --gpus {args.gpus})")
    p = plan(args.model, args.gpus, args.gpus_per_node, args.gpu_mem, args.lora)
    print(json.dumps(plan_dict(p), indent=2) if args.json else "\n".join(plan_lines(p)))
    return 0 if p.recommended else 1


HANDLERS = {
    "data_inspect": cmd_data_inspect,
    "data_synth": cmd_data_synth,
    "target_build": cmd_target_build,
    "unlearn": cmd_unlearn,
    "eval": cmd_eval,
    "sweep": cmd_sweep,
    "status": cmd_status,
    "report": cmd_report,
    "export": cmd_export,
    "check": cmd_check,
    "quickstart": cmd_quickstart,
    "submit": cmd_submit,
    "jobs": cmd_jobs,
    "plan": cmd_plan,
}


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser()


def _unsuppress(error: BaseException | None) -> None:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__suppress_context__ = False
        error = error.__cause__ or error.__context__


def _log_hint(error: BaseException) -> str:
    """Where the full story of an error is, when the command wrote a log (lume_ray.console)."""
    console = sys.modules.get("lume_ray.console")
    return str(console.error_hint(error)) if console is not None else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.new_command()  # in-process callers (tests, notebooks) run several commands: each its own log hint
    if (args.command in ("sweep", "quickstart", "eval", "unlearn") and not getattr(args, "address", None)
            and not os.environ.get("RAY_ADDRESS")):  # may start a local Ray head: token auth, set before Ray's import
        from lume_ray.local_ray import prepare_auth

        prepare_auth()
    try:
        result = HANDLERS[args.command](args)
    except KeyboardInterrupt as e:
        print(f"lume-ray: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # every expected error (ConfigError, DataError, ...; a file): one line
        if os.environ.get("LUME_RAY_DEBUG"):
            _unsuppress(e)  # one-line errors are raised `from None`; the debug traceback shows their causes
            raise
        msg = redact_secrets(str(e).splitlines()[0]) if str(e) else type(e).__name__
        print(f"lume-ray: error: {msg}{_log_hint(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # unexpected (Ray, Tune): one line here when a log holds the traceback
        hint = _log_hint(e)
        if not hint or os.environ.get("LUME_RAY_DEBUG"):
            raise
        first = redact_secrets((str(e).splitlines() or [''])[0][:300])
        print(f"lume-ray: error: {type(e).__name__}: {first}{hint}", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
