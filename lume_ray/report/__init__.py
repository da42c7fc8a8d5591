"""[7] Report: a sweep's run directory -> Pareto fronts, hypervolume, leaderboard and figures."""

from typing import Any

from lume_ray.report.build import apply_floors, build_report, parse_floors, redact
from lume_ray.report.pareto import hypervolume, pareto_mask


def cli_report(args: Any) -> int:
    """`lume-ray report RUN_DIR [RUN_DIR ...] [--out DIR] [--objectives ...] [--floor utility=0.75] [--no-redact]`."""
    if len(args.run_dirs) > 1:
        raise ValueError("comparing several runs is not implemented yet")
    out = build_report(args.run_dirs[0], out_dir=args.out, objectives=args.objectives,
                       floors=parse_floors(args.floor), redact=not args.no_redact)
    print(f"report: {out / 'report.html'}")
    print(f"        {out / 'report.md'} (figures in {out / 'figures'}), {out / 'pareto.csv'}")
    return 0


__all__ = ["apply_floors", "build_report", "cli_report", "hypervolume", "pareto_mask", "redact"]
