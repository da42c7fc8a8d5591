"""The command tree: every ``lume-ray`` command and its flags -> an argparse parser.

Input:  nothing (the config models give the generated flags, the registries the choices).
Output: :func:`build_parser`; each command sets ``command``, the name :data:`lume_ray.cli.HANDLERS` maps to its
        handler, and, for generated flags, ``flags`` (field -> the flag that sets it, for error messages).
"""

from __future__ import annotations

import argparse
import os

from lume_ray import cli_options as opt
from lume_ray.search.samplers import SAMPLERS


def build_parser() -> argparse.ArgumentParser:
    """Every command and its flags; ``args.command`` names the handler (``lume_ray.cli.HANDLERS``)."""
    from lume_ray.config import BuildConfig, EvalConfig, SynthConfig, UnlearnJob

    p = opt.Parser(prog="lume-ray", description="LLM-unlearning experiments on a Ray cluster, scored as the LUME benchmark (SemEval-2025 Task 4).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=opt.Parser)

    # -- [1] data -------------------------------------------------------------------------------
    data = sub.add_parser("data", help="inspect or synthesize LUME-format data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND", parser_class=opt.Parser)
    inspect = dsub.add_parser("inspect", help="validate a LUME dataset and count rows/documents")
    inspect.add_argument("path", help="directory with forget/retain .jsonl or .parquet, or a HF dataset id")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(command="data_inspect")
    synth = dsub.add_parser("synth", help="write a synthetic LUME-format dataset (all three tasks)")
    synth.add_argument("out_dir")
    synth.set_defaults(command="data_synth", flags=opt.add_model_options(synth, SynthConfig))

    # -- [2] target -----------------------------------------------------------------------------
    target = sub.add_parser("target", help="build the embedded target model")
    tsub = target.add_subparsers(dest="target_command", required=True, metavar="SUBCOMMAND", parser_class=opt.Parser)
    build = tsub.add_parser("build", help="train a tiny OLMo-architecture model to memorize a LUME dataset")
    build.add_argument("out_dir")
    build.add_argument("--data", required=True, help="LUME directory (e.g. from `lume-ray data synth`)")
    build.add_argument("--force", action="store_true", help="rebuild even if a cached build matches")
    build.set_defaults(command="target_build", flags=opt.add_model_options(build, BuildConfig))

    # -- [3,4] unlearn --------------------------------------------------------------------------
    un = sub.add_parser("unlearn", help="run one unlearning job (Ray Train + DeepSpeed ZeRO)")
    flags = opt.add_model_options(un, UnlearnJob, skip=("params", "lora", "wait_steps", "plugins"))  # wait_steps: sweeps only
    un.add_argument("--plugin", "--plugins", dest="plugin", action="append", default=[], metavar="FILE",
                    help=(UnlearnJob.model_fields["plugins"].description or "") + "; repeatable")
    un.add_argument("--eval-every", type=int, default=None, metavar="K",
                    help="an evaluation point every K steps (the last step always is one)")
    opt.set_option(un, "params", "algorithm parameters, e.g. beta=0.1 alpha=1 retain_loss=kl")
    un.add_argument("--lora", nargs="*", type=opt.key_value, default=None, metavar="KEY=VALUE",
                    help="train a LoRA adapter only, e.g. --lora r=8 alpha=16")
    un.add_argument("--address", default=None, help="a running Ray cluster (default: start a local one)")
    opt.console_options(un)
    un.set_defaults(command="unlearn", flags=flags)

    # -- [5] eval -------------------------------------------------------------------------------
    ev = sub.add_parser("eval", help="evaluate a model with the LUME protocol (Ray Data)")
    ev.add_argument("--model", required=True, help="model directory or hub id")
    ev.add_argument("--data", required=True, help="LUME directory or HF dataset id")
    ev.add_argument("--member", default=None, help="member documents (default: DATA/mia/member.jsonl, "
                    "DATA/member.jsonl, else the forget documents)")
    ev.add_argument("--nonmember", default=None, help="non-member documents ({id, document} jsonl)")
    ev.add_argument("--utility", default=None, help="multiple-choice jsonl, an MMLU directory, or 'mmlu'")
    ev.add_argument("--reference-utility", type=opt.finite_float, default=None,
                    help="utility of the model before unlearning (for a relative floor)")
    ev.add_argument("--out", required=True)
    ev.add_argument("--json", action="store_true", help="print metrics.json")
    ev.add_argument("--address", default=None)
    ev.add_argument("--trust-remote-code", action="store_true")
    opt.console_options(ev)
    ev.set_defaults(command="eval", flags=opt.add_model_options(ev, EvalConfig))

    # -- [6] sweep ------------------------------------------------------------------------------
    sw = sub.add_parser("sweep", help="search every algorithm's trade-off (Ray Tune + Optuna) from an experiment")
    sw.add_argument("experiment", help="experiment YAML (see experiments/)")
    sw.add_argument("--out", default=None, help="RUN_DIR (same as --set output_dir=DIR)")
    sw.add_argument("--resume", action="store_true", help="continue an interrupted sweep in the same run dir")
    sw.add_argument("--sampler", default=None, help=f"override sweep.sampler ({SAMPLERS.choices()})")
    sw.add_argument("--warm-start", default=None, metavar="RUN_DIR",
                    help="tell the studies every point of an earlier sweep (same algorithms and parameters)")
    sw.add_argument("--address", default=None)
    opt.set_option(sw)
    opt.console_options(sw, tracking=True)
    sw.set_defaults(command="sweep")
    stat = sub.add_parser("status", help="where a sweep stands: trials per algorithm, best points, how to resume")
    stat.add_argument("run_dir", metavar="RUN_DIR")
    stat.add_argument("--json", action="store_true", help="print the status as JSON")
    stat.set_defaults(command="status")

    # -- [7] report -----------------------------------------------------------------------------
    rp = sub.add_parser("report", help="Pareto fronts, leaderboard and figures from one or more sweeps")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one sweep, or several to compare")
    rp.add_argument("--out", default=None, help="default: RUN_DIR/report (one run); required when comparing several")
    rp.add_argument("--objectives", nargs="+", default=None, help="metric names (directions from the registry)")
    rp.add_argument("--floor", nargs="+", type=opt.key_value, default=None, metavar="METRIC=FRACTION",
                    help="feasibility floors, e.g. utility=0.75 (a fraction of the base model's); "
                    "utility.absolute=0.371 for an absolute floor; floors given replace the study's")
    rp.add_argument("--no-redact", action="store_true", help="show sample generations without PII redaction")
    rp.set_defaults(command="report")
    ex = sub.add_parser("export", help="one point of a sweep as a standalone Hugging Face model with a model card")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--point", default=None, metavar="TRIAL_ID@STEP", help="an evaluated point, e.g. a1b2c3d4@20")
    which.add_argument("--best", default=None, metavar="ALGORITHM",
                       help="the algorithm's best feasible point (the report's answer: by final_score, else task_aggregate)")
    ex.add_argument("--by", default=None, metavar="OBJECTIVE",
                    help="with --best: rank by this metric instead, in its registered direction")
    ex.add_argument("--floor", nargs="+", type=opt.key_value, default=None, metavar="METRIC=FRACTION",
                    help="with --best: feasibility floors as `lume-ray report` takes them (default: the study's)")
    ex.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory")
    ex.add_argument("--tolerance", type=float, default=None,
                    help="a deleted point is re-run to its step and must score as recorded: absolute tolerance per "
                    "metric (default: 0 on CPU in float32, 1e-3 on GPUs or in bfloat16)")
    ex.add_argument("--address", default=None, help="a running Ray cluster for a re-run (default: a local one)")
    ex.add_argument("-v", "--verbose", action="store_true",
                    help="show a re-run's Ray and DeepSpeed output live (always in RUN_DIR/logs/export/)")
    ex.set_defaults(command="export")

    ck = sub.add_parser("check", help="run the built-in contract checks on a plugin's algorithms, metrics, samplers")
    ck.add_argument("plugins", nargs="+", metavar="PLUGIN", help="a .py file or an importable module name")
    ck.set_defaults(command="check")

    # -- the whole study ------------------------------------------------------------------------
    qs = sub.add_parser("quickstart", help="data -> target -> sweep -> report on the embedded default")
    qs.add_argument("--out", default="runs/quickstart")
    qs.add_argument("--experiment", default=None, help="default: experiments/quickstart.yaml")
    opt.set_option(qs)
    opt.console_options(qs, tracking=True)
    qs.set_defaults(command="quickstart")

    # -- cluster --------------------------------------------------------------------------------
    sm = sub.add_parser("submit", help="submit a sweep to a Ray cluster as a Ray job")
    sm.add_argument("experiment")
    sm.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265")
    sm.add_argument("--working-dir", default=None, metavar="DIR",
                    help="upload DIR as the job's working directory (default: the lume-ray checkout holding the "
                    "experiment, else the experiment and the files it names; secrets never, see README Security)")
    opt.set_option(sm)
    sm.add_argument("--no-wait", action="store_true")
    sm.set_defaults(command="submit")
    jobs = sub.add_parser("jobs", help="list, inspect, follow or stop Ray jobs")
    jobs.add_argument("action", choices=("list", "status", "logs", "stop"))
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS"))
    jobs.add_argument("--follow", action="store_true")
    jobs.set_defaults(command="jobs")
    plan = sub.add_parser("plan", help="per-GPU memory of each ZeRO stage for a model; recommend one. With an "
                          "experiment: the disk its sweep holds at peak per sweep.keep_models")
    plan.add_argument("experiment", nargs="?", default=None,
                      help="experiment YAML: print its run directory's peak disk (models + checkpoints)")
    plan.add_argument("--model", default=None, help="1b, 7b, or a model directory / config (with an experiment: "
                      "default its target)")
    plan.add_argument("--gpus", type=int, default=None, help="GPUs in total (with an experiment: trials at once, "
                      "when sweep.max_concurrent is not set, and the ZeRO table)")
    plan.add_argument("--gpus-per-node", type=int, default=8)
    plan.add_argument("--gpu-mem", type=opt.finite_float, default=80.0, help="GiB per GPU")
    plan.add_argument("--lora", action="store_true")
    plan.add_argument("--json", action="store_true")
    opt.set_option(plan)
    plan.set_defaults(command="plan")
    return p
