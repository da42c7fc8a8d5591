"""`lume-ray ...`: argument parsing only; every command hands its parsed arguments to its stage module.

Input:  the command line.
Output: the stage's work; exit status 0, or 2 with a one-line ``lume-ray: error: ...`` on bad input.

Stage modules are imported lazily so that ``lume-ray --help`` and ``lume-ray data inspect`` stay fast.
Set ``LUME_RAY_DEBUG=1`` to see full tracebacks instead of one-line errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _handler(module: str, function: str) -> Callable[[argparse.Namespace], Any]:
    def run(args: argparse.Namespace) -> Any:
        return getattr(importlib.import_module(f"lume_ray.{module}"), function)(args)

    return run


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lume-ray", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # -- [1] data ---------------------------------------------------------------------------
    data = sub.add_parser("data", help="inspect or synthesize LUME-format data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    inspect = dsub.add_parser("inspect", help="validate a LUME dataset and count rows/documents")
    inspect.add_argument("path", help="directory with forget/retain .jsonl or .parquet, or a HF dataset id")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=_handler("data", "cli_inspect"))
    synth = dsub.add_parser("synth", help="write a synthetic LUME-format dataset (all three tasks)")
    synth.add_argument("out_dir")
    synth.add_argument("--docs-per-task", type=int, default=32, help="documents per task (split 1:1 forget/retain)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_handler("synth", "cli_main"))

    # -- [2] target -------------------------------------------------------------------------
    target = sub.add_parser("target", help="build the embedded target model")
    tsub = target.add_subparsers(dest="target_command", required=True, metavar="SUBCOMMAND")
    build = tsub.add_parser("build", help="train a tiny OLMo-architecture model to memorize a LUME dataset")
    build.add_argument("out_dir")
    build.add_argument("--data", required=True, help="LUME directory (e.g. from `lume-ray data synth`)")
    build.add_argument("--preset", default="tiny", help="model size preset (tiny|small)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--epochs", type=int, default=None, help="override the preset's epoch count")
    build.add_argument("--force", action="store_true", help="rebuild even if a cached build matches")
    build.set_defaults(func=_handler("target", "cli_main"))

    # -- [3,4] unlearn ----------------------------------------------------------------------
    un = sub.add_parser("unlearn", help="run one unlearning job (Ray Train + DeepSpeed ZeRO)")
    un.add_argument("--model", required=True, help="model directory or hub id (the target before unlearning)")
    un.add_argument("--data", required=True, help="LUME directory or HF dataset id")
    un.add_argument("--algorithm", required=True, help="registered algorithm (ga, gd, kl, npo, simnpo, rmu)")
    un.add_argument("--lr", type=float, default=1e-5)
    un.add_argument("--steps", type=int, default=60)
    un.add_argument("--eval-every", type=int, default=0, help="evaluation point every K steps (0: only at the end)")
    un.add_argument("--batch-size", type=int, default=8, help="global batch: forget (and retain) rows per step")
    un.add_argument("--workers", type=int, default=1)
    un.add_argument("--zero", type=int, default=0, choices=(0, 2, 3), help="DeepSpeed ZeRO stage")
    un.add_argument("--offload", action="store_true", help="ZeRO-3 parameter + optimizer offload to CPU")
    un.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="auto: bf16 on GPU, fp32 on CPU")
    un.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    un.add_argument("--set", dest="params", nargs="+", type=_kv, default=[], metavar="KEY=VALUE",
                    help="algorithm parameters, e.g. beta=0.1 alpha=1 retain_loss=kl")
    un.add_argument("--lora", nargs="*", type=_kv, default=None, metavar="KEY=VALUE",
                    help="train a LoRA adapter only, e.g. --lora r=8 alpha=16")
    un.add_argument("--seed", type=int, default=0)
    un.add_argument("--max-length", type=int, default=512)
    un.add_argument("--out", required=True, help="output directory (re-run with the same --out to resume)")
    un.add_argument("--address", default=None, help="address of a running Ray cluster (default: start a local one)")
    un.add_argument("--trust-remote-code", action="store_true")
    un.set_defaults(func=_handler("train", "cli_main"))

    # -- [5] eval ---------------------------------------------------------------------------
    ev = sub.add_parser("eval", help="evaluate a model with the LUME protocol (Ray Data)")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--member", default=None, help="member documents (default: forget documents)")
    ev.add_argument("--nonmember", default=None, help="non-member documents ({id, document} jsonl)")
    ev.add_argument("--utility", default=None, help="multiple-choice jsonl, or 'mmlu' (needs the dataset)")
    ev.add_argument("--reference-utility", type=float, default=None,
                    help="utility of the model before unlearning (for the floor)")
    ev.add_argument("--utility-floor", type=float, default=0.75, help="fraction of the reference utility")
    ev.add_argument("--workers", type=int, default=1, help="model actors")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--max-new-tokens", type=int, default=256)
    ev.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                    help="weights' dtype (the challenge's scorer ran bfloat16 on GPU; float32 is exact on CPU)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows per split (smoke runs)")
    ev.add_argument("--out", required=True)
    ev.add_argument("--json", action="store_true", help="print metrics.json")
    ev.add_argument("--address", default=None)
    ev.add_argument("--trust-remote-code", action="store_true")
    ev.set_defaults(func=_handler("evaluate", "cli_main"))

    # -- [6] sweep --------------------------------------------------------------------------
    sw = sub.add_parser("sweep", help="per-algorithm Ray Tune + Optuna search from an experiment YAML")
    sw.add_argument("experiment", help="experiment YAML (see experiments/)")
    sw.add_argument("--resume", action="store_true", help="continue an interrupted sweep in the same run dir")
    sw.add_argument("--address", default=None)
    sw.add_argument("--search", default=None, choices=("optuna", "random", "grid"))
    sw.add_argument("--set", dest="overrides", nargs="+", type=_kv, default=[], metavar="KEY=VALUE",
                    help="override experiment keys, e.g. sweep.num_samples=40")
    sw.set_defaults(func=_handler("sweep", "cli_main"))

    # -- [7] report -------------------------------------------------------------------------
    rp = sub.add_parser("report", help="Pareto fronts, leaderboard and plots from a sweep's results")
    rp.add_argument("run_dir")
    rp.add_argument("--out", default=None, help="default: RUN_DIR/report")
    rp.add_argument("--objectives", nargs="+", default=None, help="metric names (directions from the registry)")
    rp.add_argument("--floor", nargs="+", type=_kv, default=None, metavar="METRIC=FRACTION",
                    help="feasibility floor relative to the base model, e.g. utility=0.75")
    rp.add_argument("--no-redact", action="store_true", help="show sample generations without PII redaction")
    rp.set_defaults(func=_handler("report", "cli_main"))

    # -- the whole study --------------------------------------------------------------------
    qs = sub.add_parser("quickstart", help="data -> target -> sweep -> report on the embedded default")
    qs.add_argument("--out", default="runs/quickstart")
    qs.add_argument("--experiment", default=None, help="default: experiments/quickstart.yaml")
    qs.add_argument("--set", dest="overrides", nargs="+", type=_kv, default=[], metavar="KEY=VALUE")
    qs.set_defaults(func=_handler("pipeline", "cli_main"))

    # -- cluster ----------------------------------------------------------------------------
    sm = sub.add_parser("submit", help="submit a sweep to a Ray cluster as a Ray job")
    sm.add_argument("experiment")
    sm.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265")
    sm.add_argument("--set", dest="overrides", nargs="+", type=_kv, default=[], metavar="KEY=VALUE")
    sm.add_argument("--no-wait", action="store_true")
    sm.set_defaults(func=_handler("cluster", "cli_submit"))
    jobs = sub.add_parser("jobs", help="list, inspect, follow or stop Ray jobs")
    jobs.add_argument("action", choices=("list", "status", "logs", "stop"))
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS"))
    jobs.add_argument("--follow", action="store_true")
    jobs.set_defaults(func=_handler("cluster", "cli_jobs"))
    plan = sub.add_parser("plan", help="per-GPU memory of each ZeRO stage for a model; recommend one")
    plan.add_argument("--model", required=True, help="1b, 7b, or a model directory / config")
    plan.add_argument("--gpus", type=int, required=True, help="GPUs in total")
    plan.add_argument("--gpus-per-node", type=int, default=8)
    plan.add_argument("--gpu-mem", type=float, default=80.0, help="GiB per GPU")
    plan.add_argument("--lora", action="store_true")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=_handler("cluster", "cli_plan"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt as e:
        print(f"lume-ray: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError) as e:
        if os.environ.get("LUME_RAY_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"lume-ray: error: {msg}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
