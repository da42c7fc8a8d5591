"""Check a report in a real browser: headless Chromium renders report.html and takes a screenshot.

Input:  a report.html, a report folder, or a RUN_DIR (its report/report.html; built into a temporary folder
        when the run has none yet).
Output: the PNG (--out), and on stdout each check and its result; exit status 1 when a check fails.

    python tests/report_screenshot.py runs/quickstart --out /tmp/report.png
    python tests/report_screenshot.py runs/compare/report.html --out /tmp/compare.png --height 6000

Checks: Chromium exits 0 and writes a PNG of the window's size; the page's rendered DOM (Chromium's
--dump-dom, after layout) has the answer section first and as many <svg> figures as the HTML file; the
screenshot is not blank (share of non-white pixels) and shows the figures' colours (matplotlib's tab10
blue, or the comparison's run colours), i.e. the inline SVGs were drawn, not only parsed.

Chromium: Debian's (`apt-get install -y chromium`), started with a fresh profile and without sandbox, GPU,
first-run, sync, component updates or background networking (the page fetches nothing).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars")
FIGURE_COLOURS = ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E))  # tab10 blue / orange: algorithm or run colours


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium found: apt-get install -y chromium")


def find_html(target: Path, scratch: Path) -> Path:
    if target.is_file():
        return target
    for candidate in (target / "report.html", target / "report" / "report.html"):
        if candidate.is_file():
            return candidate
    if (target / "results.parquet").is_file():
        from lume_ray.report import build_report

        print(f"[screenshot] {target} has no report yet: building one in {scratch}")
        return build_report(target, scratch / "report") / "report.html"
    raise SystemExit(f"{target}: neither a report.html, a report folder nor a run directory")


def run_chromium(args: list[str], profile: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="report.html, a report folder or a RUN_DIR")
    parser.add_argument("--out", type=Path, required=True, help="the screenshot (PNG)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        results.append((name, ok, detail))
        print(f"[screenshot] {'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    with tempfile.TemporaryDirectory(prefix="lume-report-shot-") as tmp:
        scratch = Path(tmp)
        html = find_html(args.target, scratch).resolve()
        url = html.as_uri()
        version = subprocess.run([chromium(), "--version"], capture_output=True, text=True).stdout.strip()
        print(f"[screenshot] {version}; page {url}")
        source = html.read_text(encoding="utf-8")

        dom = run_chromium(["--dump-dom", url], scratch / "profile-dom", args.timeout)
        check("DOM rendered", dom.returncode == 0 and "</html>" in dom.stdout,
              f"exit {dom.returncode}, {len(dom.stdout):,} characters after layout")
        n_svg = source.count("<svg")
        check("figures in the DOM", dom.stdout.count("<svg") == n_svg and n_svg > 0,
              f"{dom.stdout.count('<svg')} <svg> elements rendered, {n_svg} in the file")
        first = dom.stdout.find('id="answer"')
        others = [dom.stdout.find(f'id="{s}"') for s in ("leaderboard", "differences", "provenance", "runs")]
        check("answer first", first >= 0 and all(first < p for p in others if p >= 0),
              "the answer section comes before the leaderboard / differences and provenance")

        args.out.parent.mkdir(parents=True, exist_ok=True)
        shot = run_chromium([f"--screenshot={args.out.resolve()}", f"--window-size={args.width},{args.height}", url],
                            scratch / "profile-shot", args.timeout)
        exists = args.out.is_file() and args.out.stat().st_size > 0
        check("screenshot written", shot.returncode == 0 and exists,
              f"exit {shot.returncode}, {args.out} ({args.out.stat().st_size:,} bytes)" if exists
              else f"exit {shot.returncode}: {shot.stderr.strip()[-300:]}")
        if exists:
            image = np.asarray(Image.open(args.out).convert("RGB")).astype(int)  # (H, W, 3)
            check("size", image.shape[:2] == (args.height, args.width), f"{image.shape[1]}x{image.shape[0]} pixels")
            ink = float((image.sum(axis=2) < 600).mean())
            check("not blank", ink > 0.01, f"{ink:.1%} of the pixels are not white")
            hits = {c: int((np.abs(image - np.array(c)).sum(axis=2) < 40).sum()) for c in FIGURE_COLOURS}
            check("figures drawn", max(hits.values()) > 200,
                  "pixels in figure colours: " + ", ".join(f"#{r:02x}{g:02x}{b:02x} {n:,}" for (r, g, b), n in hits.items()))
    failed = [name for name, ok, _ in results if not ok]
    print(f"[screenshot] {len(results) - len(failed)}/{len(results)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
