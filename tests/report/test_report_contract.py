"""The report's contract: every section and every declared table of a real (tiny) study's report, and a
missing table is an error, never a silently absent block."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from _tiny_study import copy_of, tiny_study
from geneattn import get
from geneattn._results import Results
from geneattn.report import REPORT_METRICS, REPORT_TABLES, SECTIONS, ReportInputMissing, build_from_results


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory)


#: tables a tiny default study computes whether or not its model learned
ALWAYS_SHOWN = ("highlight_by_class", "preregistered", "heads", "incremental", "methods", "run_scores",
                "incremental_runs")  # fmt: skip


def _stage_names(html: str) -> list[str]:
    table = html[html.index('data-table="stages"') :].split("</table>")[0]
    return re.findall(r'<tr><td class="l">([a-z_]+)</td>', table)


def test_default_report_shows_every_section_and_table(study):
    html = Results(study).report.read_text()
    for sec in SECTIONS:
        assert f'<h2 id="{sec.id}">{sec.heading}</h2>' in html, sec.heading
    skipped = get.metrics(study).get("skipped") or {}
    for (
        name
    ) in REPORT_TABLES:  # every promised table is shown, or its absence is explained by a recorded reason
        shown, note = f'data-table="{name}"' in html, f'data-table-note="{name}"' in html
        assert shown != note, name
        assert shown or f"not computed: {skipped[name]}" in html, name
    for name in ALWAYS_SHOWN:  # what a tiny study that ran every stage must show as tables
        assert f'data-table="{name}"' in html, name
    assert set(REPORT_METRICS) <= set(get.metrics(study))
    assert {n for s in SECTIONS for n in s.tables} == set(REPORT_TABLES)  # every table has its section


def test_stages_in_run_order_without_the_report(study):
    html = Results(study).report.read_text()
    order = get.stages_df(study)["name"].tolist()
    assert order[0] == "data" and order.index("tokenize") < order.index("finetune") < order.index("controls")
    assert order[-1] == "report" and order.index("stats") < order.index("figures")
    assert _stage_names(html) == order[:-1]
    assert "running" not in html.split('data-table="stages"')[1].split("</table>")[0]


def test_n_bins_compared_counts_every_head_and_bin(study):
    ch = get.table(study, "change_ci")
    numeric = ch[ch["layer"].astype(str).str.isdigit() & ch["head"].astype(str).str.isdigit()]
    n = len({(r.layer, r.head, r.bin_start) for r in numeric.itertuples()})  # brute force
    assert n > 1 and get.metrics(study)["attention"]["n_bins_compared"] == n
    assert f"the largest of {n:,} head &times; bin values" in Results(study).report.read_text()


def test_de_score_comes_from_the_stats_table(study):
    from geneattn.stats.agreement import de_gene_score

    de = get.table(study, "de")
    naive = de_gene_score(de[de["method"] == "wilcoxon"])
    t = get.table(study, "de_vs_attention").set_index("gene")
    pd.testing.assert_series_equal(t["de_score"], naive.reindex(t.index), check_names=False)


def test_report_reads_nothing_around_get(study, tmp_path):
    res = Results(copy_of(study, tmp_path))
    res.cells.unlink()  # the figures and the page need no AnnData: their tables carry everything
    res.report.unlink()
    build_from_results(res, redraw=True)
    assert res.report.is_file() and res.figure("de_vs_attention").is_file()


def test_a_missing_table_fails_the_contract(study, tmp_path):
    res = Results(copy_of(study, tmp_path))
    res.table_path("preregistered").unlink()
    with pytest.raises(ReportInputMissing, match="preregistered"):
        build_from_results(res, redraw=False)
    # with a recorded reason, the page says so in the table's place
    res.update_metrics(skipped={"preregistered": "no permuted-label runs"})
    html = build_from_results(res, redraw=False).read_text()
    assert "<code>preregistered</code> table: not computed: no permuted-label runs." in html
    assert 'data-table="preregistered"' not in html
