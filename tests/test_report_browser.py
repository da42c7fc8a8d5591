"""The report in a real browser: tests/report_screenshot.py renders a hand-made run's report.html in headless
Chromium. Skipped where no Chromium is installed (`apt-get install -y chromium`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lume_ray import report
from tests.helpers import make_run_dir

SCRIPT = Path(__file__).resolve().with_name("report_screenshot.py")


@pytest.mark.skipif(not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no Chromium (apt-get install -y chromium)")
def test_report_renders_in_chromium(tmp_path):
    out = report.build_report(make_run_dir(tmp_path))
    shot = tmp_path / "shot.png"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out / "report.html"), "--out", str(shot)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7/7 checks passed" in done.stdout
    assert "5 <svg> elements rendered, 5 in the file" in done.stdout
    assert shot.stat().st_size > 10_000
