"""Render a results directory's report.html in headless Chromium and save a full-page screenshot.

Usage: python scripts/screenshot_report.py RESULTS_DIR OUT.png
"""

from __future__ import annotations

import sys
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def screenshot(report: Path, out: Path, *, chromium: str = "/usr/bin/chromium") -> list[str]:
    """Load ``report`` offline, screenshot it to ``out``; return the problems seen (console errors, requests)."""
    import tempfile

    from playwright.sync_api import sync_playwright

    url = report.resolve().as_uri()
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=FLAGS, headless=True,
                                                   viewport={"width": 1200, "height": 900})  # fmt: skip
        page = ctx.new_page()
        page.on(
            "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
        page.on(
            "request",
            lambda r: (
                None if r.url == url or r.url.startswith("data:") else problems.append(f"request: {r.url}")
            ),
        )
        page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        sizes = page.eval_on_selector_all(
            "img, svg",
            "els => els.map(e => [e.naturalWidth || 0, e.getBoundingClientRect().width, e.getBoundingClientRect().height])",
        )
        problems += [
            f"invisible figure #{i}: {s}" for i, s in enumerate(sizes) if not (s[1] > 0 and s[2] > 0)
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        ctx.close()
    return problems


def main() -> int:
    """Command-line entry point."""
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    problems = screenshot(Path(sys.argv[1]) / "report.html", Path(sys.argv[2]))
    for pr in problems:
        sys.stderr.write(pr + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
