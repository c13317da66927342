"""The report reads only analysis files and writes a self-contained HTML page, Markdown and CSV."""
import base64
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from proxyscale.analyze import analyze_study, read_analysis, write_analysis
from proxyscale.analyze.synthetic import make_synthetic_study
from proxyscale.errors import DataError, StoreError
from proxyscale.report import ReportFigure, Section, write_report
from proxyscale.report.html import SUMMARY_CSV_COLUMNS, summary_csv
from proxyscale.report.tables import Table, fmt

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def analysis_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    a = analyze_study(*make_synthetic_study(np.random.default_rng(0), n_examples=6), seed=2, n_boot=100)
    write_analysis(a, root / "analysis")
    return root / "analysis", a


@pytest.fixture(scope="module")
def report(analysis_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    extra = [("Attribution", "<p>LDS <b>0.42</b></p>", "LDS **0.42**"),
             Section("Attribution figures", "<p>see figure</p>", "see figure",
                     (ReportFigure("attr_fig", PNG_1PX, "one pixel"),))]
    html_path, md_path = write_report(analysis_dir[0], out, title="Demo <study>", extra_sections=extra)
    return out, html_path.read_text(), md_path.read_text()


def test_html_is_self_contained(report):
    out, html, _ = report
    assert "<title>Demo &lt;study&gt;</title>" in html  # the title is escaped
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)  # no external asset or link
    assert "<link" not in html and "<script" not in html
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == 5  # fig1, fig2, partial, per-example, plus the extra section's figure
    for b64 in imgs:
        assert base64.b64decode(b64).startswith(b"\x89PNG")


def test_sections_order_and_lead_test_sets_first(report):
    _, html, md = report
    titles = re.findall(r"<h2>(.*?)</h2>", html)
    assert titles[:3] == ["Overview", "Key findings", "Proxy vs reference losses (Figure 1)"]
    assert "Signal beyond n-grams" in titles and "Leave-source-out" in titles
    assert titles[-2:] == ["Attribution", "Attribution figures"]
    assert "<b>0.42</b>" in html and "LDS **0.42**" in md
    # Summary pivot columns: mixed and never-trained-on sets before the per-source one.
    header = re.search(r"<h3>R² of the linear fit</h3><table><thead><tr>(.*?)</tr>", html).group(1)
    cols = re.findall(r"<th>(.*?)</th>", header)
    assert cols == ["proxy", "mixed_lm", "qa_never", "web_held"]
    assert "reference seed vs seed" in html  # the noise ceiling row


def test_markdown_and_figures_on_disk(report):
    out, _, md = report
    for name in re.findall(r"\(figures/([\w-]+\.png)\)", md):
        assert (out / "figures" / name).read_bytes().startswith(b"\x89PNG")
    assert (out / "figures" / "attr_fig.png").read_bytes() == PNG_1PX
    assert md.startswith("# Demo <study>")
    assert "| proxy | mixed_lm | qa_never | web_held |" in md


def test_summary_csv_is_stable_and_matches_analysis(report, analysis_dir):
    out, _, _ = report
    csv = pd.read_csv(out / "summary.csv")
    assert tuple(csv.columns) == SUMMARY_CSV_COLUMNS
    assert list(dict.fromkeys(csv["test_set"])) == ["mixed_lm", "qa_never", "web_held"]
    s = analysis_dir[1]["summary"].set_index(["test_set", "model"])
    for _, r in csv.iterrows():
        assert r["r2"] == pytest.approx(s.loc[(r["test_set"], r["model"]), "r2"], rel=1e-5)
    # Rendering again from the files on disk gives the same bytes.
    assert summary_csv(read_analysis(analysis_dir[0])).encode() == (out / "summary.csv").read_bytes()


def test_report_errors(tmp_path, analysis_dir):
    with pytest.raises(StoreError):
        write_report(tmp_path / "nothing", tmp_path / "out", title="x")
    dup = [Section("A", figures=(ReportFigure("fig1_scatter", PNG_1PX),))]
    with pytest.raises(DataError, match="named"):
        write_report(analysis_dir[0], tmp_path / "out", title="x", extra_sections=dup)
    with pytest.raises(DataError):
        write_report(analysis_dir[0], tmp_path / "out", title="x", extra_sections=[("only", "two")])
    with pytest.raises(DataError):
        ReportFigure("bad name/..", PNG_1PX)


def test_table_rendering():
    t = Table(("a", "b|c"), (("1", "x|y"),), note="n")
    assert t.to_markdown().splitlines()[0] == "| a | b\\|c |"
    assert "<td>x|y</td>" in t.to_html() and '<p class="note">n</p>' in t.to_html()
    assert [fmt(v) for v in (float("nan"), float("inf"), 0.0, 1600.0, 0.91234, 3, True)] == \
        ["—", "∞", "0", "1,600", "0.912", "3", "yes"]


def test_analyze_and_report_import_without_torch():
    code = ("import sys; import proxyscale.analyze, proxyscale.report, proxyscale.analyze.synthetic; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m == 'scipy' "
            "or m.startswith('sklearn')]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
