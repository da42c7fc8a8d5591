"""The one current summary of a benchmark: its figures -> benchmarks/results/<name>.json, overwritten by each run.

Each script prints its figures as it goes and ends by writing them here, with the command that produced them, the
date and the machine, so the latest measurement of every benchmark sits at one stable path (older ones are in git).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_summary(name: str, figures: Any, path: str | Path | None = None) -> Path:
    """Write ``figures`` (JSON-serializable; other values as their str) to ``path`` or RESULTS/<name>.json."""
    out = Path(path) if path is not None else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "command": " ".join(["python", *sys.argv]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "figures": figures}
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return out
