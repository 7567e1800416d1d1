"""report.build: self-contained, numbers from metrics, user strings escaped; rendered in headless Chromium."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from _synth_tables import report_metrics, synthetic_tables  # noqa: E402
from geneattn import plotting as pl  # noqa: E402
from geneattn import report  # noqa: E402
from geneattn.study import StudyConfig  # noqa: E402

EVIL = "<script>alert(1)</script>"
CHROMIUM = "/usr/bin/chromium"


def _metrics():
    return report_metrics(EVIL)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    t = synthetic_tables(labels=["0.1", EVIL])
    figs = {"umap": pl.umap(t["umap"]).figure, "change_by_rank": pl.change_by_rank(t["change_ci"]),
            "top_genes": pl.top_genes(t["top_genes"].assign(gene=lambda d: d["gene"].replace("G1", EVIL))).figure}  # fmt: skip
    # one figure given as a saved PNG path
    p = out / "elsewhere.png"
    pl.method_comparison(t["methods"]).figure.savefig(p)
    figs["methods"] = p
    tables = {"top_genes": t["top_genes"], "incremental": t["incremental"], "methods": t["methods"]}
    stages = pd.DataFrame(
        [{"name": "data", "seconds": 1.5, "status": "done", "summary": EVIL, "hash": "abc"}]
    )
    config = {**StudyConfig().to_dict(), "label_key": EVIL, "data": f"/x/{EVIL}.h5ad"}
    path = report.build(figs, tables, out, metrics=_metrics(), config=config, stages=stages)
    plt.close("all")
    return out, path


def test_self_contained_and_escaped(built):
    out, path = built
    html = path.read_text()
    assert (out / "figures" / "umap.png").is_file() and (out / "figures" / "umap.svg").is_file()
    assert EVIL not in html and "&lt;script&gt;" in html
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert html.count('src="data:image/png;base64,') == 4
    # numbers come from metrics
    for s in ("1,234", "43.2%", "87.7%", "17.2", "11 of 24", "ranks 6 of 31"):
        assert s in html, s
    order = [
        html.index(f'id="{i}"')
        for i in (
            "verdict",
            "data",
            "model",
            "moved",
            "genes",
            "de",
            "confound",
            "task",
            "heads",
            "methods",
            "run",
        )
    ]
    assert order == sorted(order)


def test_missing_inputs_are_an_error_not_a_blank(tmp_path):
    with pytest.raises(report.ReportInputMissing, match="preregistered.*metrics.json\\['verdict'\\]"):
        report.build({}, {}, tmp_path, metrics={})
    assert not (tmp_path / "report.html").exists()


def test_a_missing_metrics_key_is_an_error_not_n_a(tmp_path):
    m = _metrics()
    del m["attention"]["n_bins_compared"]  # section 3 prints it beside largest_change
    tables = {n: synthetic_tables()[n] for n in ("top_genes", "incremental", "methods")}
    with pytest.raises(report.ReportInputMissing, match="n_bins_compared"):
        report.build({}, tables, tmp_path, metrics=m, config=StudyConfig().to_dict())


def test_skipped_tables_say_why(built):
    html = built[1].read_text()
    for name, why in _metrics()["skipped"].items():
        assert (
            f"<code>{name}</code> table: not computed: {why}." in html and f'data-table="{name}"' not in html
        )


def _browser_or_skip():
    if not Path(CHROMIUM).exists() or importlib.util.find_spec("playwright") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} or playwright missing in CI: install the Debian package chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium) or playwright missing")


def test_report_in_headless_chromium(built, tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    _, path = built
    url = path.resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    console, failed, foreign = [], [], []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, args=flags,
                                                   headless=True, viewport={"width": 1200, "height": 900})  # fmt: skip
        page = ctx.new_page()
        page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(str(e)))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on(
            "request", lambda r: None if r.url == url or r.url.startswith("data:") else foreign.append(r.url)
        )
        page.on("dialog", lambda d: console.append(f"dialog: {d.message}"))
        page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        imgs = page.locator("figure img")
        assert imgs.count() == 4
        for i in range(imgs.count()):
            img = imgs.nth(i)
            assert img.is_visible()
            box = img.bounding_box()
            assert box and box["width"] > 0 and box["height"] > 0
            assert img.evaluate("e => e.complete && e.naturalWidth > 0")
        assert EVIL in page.inner_text("body")  # shown as text, not run
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        ctx.close()
    assert console == [] and failed == [] and foreign == []
    assert shot.stat().st_size > 10_000
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
