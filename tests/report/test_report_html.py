"""The report reads only analysis files and writes a self-contained HTML page, Markdown and CSV."""
import base64
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from oracles import holm_by_hand
from proxyscale.analyze import analyze_study, read_analysis, write_analysis
from proxyscale.analyze.synthetic import DEFAULT_MODELS, make_synthetic_study
from proxyscale.errors import DataError, StoreError
from proxyscale.report import ReportFigure, Section, write_report
from proxyscale.report.tables import Table, fmt
from proxyscale.studies.scaling.report import SUMMARY_CSV_COLUMNS, report_parts, summary_csv

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def analysis_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    a = analyze_study(*make_synthetic_study(np.random.default_rng(0), n_examples=6), seed=2, n_boot=100)
    write_analysis(a, root / "analysis")
    return root / "analysis", a


@pytest.fixture(scope="module")
def parts(analysis_dir):
    return report_parts(analysis_dir[0])


@pytest.fixture(scope="module")
def report(parts, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    extra = [("Attribution", "<p>LDS <b>0.42</b></p>", "LDS **0.42**"),
             Section("Attribution figures", "<p>see figure</p>", "see figure",
                     (ReportFigure("attr_fig", PNG_1PX, "one pixel"),))]
    sections, files = parts
    html_path, md_path = write_report(out, "Demo <study>", sections + extra, files=files)
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
    assert titles[:4] == ["Overview", "Sanity checks", "Key findings", "Proxy vs reference losses (Figure 1)"]
    assert "Signal beyond n-grams" in titles and "Leave-source-out" in titles
    assert titles[-2:] == ["Attribution", "Attribution figures"]
    assert "<b>0.42</b>" in html and "LDS **0.42**" in md
    # Summary pivot columns: mixed and never-trained-on sets before the per-source one.
    header = re.search(r"<h3>R² of the linear fit</h3><table><thead><tr>(.*?)</tr>", html).group(1)
    cols = re.findall(r"<th>(.*?)</th>", header)
    assert cols == ["proxy", "mixed_lm", "qa_never", "web_held"]
    assert "reference seed vs seed" in html  # the noise ceiling row


def test_findings_count_holm_adjusted_tests(report, analysis_dir):
    """Each finding's 'k/N proxies add signal' counts Holm-adjusted p < 0.05, not the raw p; the
    adjustment is Holm's over the whole family, whose size the methods paragraph states."""
    _, _, md = report
    s = analysis_dir[1]["summary"]
    np.testing.assert_allclose(s["partial_p_holm"], holm_by_hand(s["partial_p"]), rtol=0, atol=1e-15)
    # 3 test sets × (3 rungs below the reference + 2 n-grams − the best n-gram, the control)
    family = 3 * (sum(m.kind == "neural" for m in DEFAULT_MODELS) - 1 + sum(m.kind == "ngram" for m in DEFAULT_MODELS)
                  - 1)
    assert family == 12 and s["partial_p"].notna().sum() == family
    assert f"Holm-adjusted over the {family} partial-r tests of the summary" in md
    findings = md.split("## Key findings")[1].split("\n## ")[0]
    for ts, g in s[s["kind"] == "neural"].groupby("test_set"):
        line = next(ln for ln in findings.splitlines() if ln.startswith(f"- {ts} "))
        want = f"{int((g['partial_p_holm'] < 0.05).sum())}/{len(g)} proxies add signal beyond it (Holm-adjusted"
        assert want in line
        raw = int((g["partial_p"] < 0.05).sum())
        assert (f"{raw} before adjusting" in line) == (raw != int((g["partial_p_holm"] < 0.05).sum()))
    assert "reliability" in findings and "mixture weights" in md


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


def test_report_errors(tmp_path, parts):
    sections, files = parts
    with pytest.raises(StoreError, match="run the analysis"):
        report_parts(tmp_path / "nothing")
    dup = [Section("A", figures=(ReportFigure("fig1_scatter", PNG_1PX),))]
    with pytest.raises(DataError, match="named"):
        write_report(tmp_path / "out", "x", sections + dup, files=files)
    with pytest.raises(DataError):
        write_report(tmp_path / "out", "x", sections + [("only", "two")])
    for bad in ("report.html", "figures/fig1_scatter.png", "../escape.csv", "/abs.csv"):
        with pytest.raises(DataError, match="extra report file"):
            write_report(tmp_path / "out", "x", sections, files={bad: "x"})
    assert not (tmp_path / "out").exists()  # every check runs before anything is written
    with pytest.raises(DataError):
        ReportFigure("bad name/..", PNG_1PX)


def test_extra_files_are_written_as_given(tmp_path):
    files = {"summary.csv": "a,b\n1,2\n", "data/blob.bin": b"\x00\x01"}
    html_path, md_path = write_report(tmp_path, "Only files", [Section("S", "<p>x</p>", "x")], files=files)
    assert (tmp_path / "summary.csv").read_text() == "a,b\n1,2\n"
    assert (tmp_path / "data" / "blob.bin").read_bytes() == b"\x00\x01"
    assert "<h2>S</h2>" in html_path.read_text() and md_path.read_text().startswith("# Only files")


def test_compute_spent_section_from_the_analysis_meta(tmp_path, analysis_dir):
    runs = {"d0:L2d32:0": {"flops": 1e12, "tokens": 1e6, "wall_s": 10.0},
            "d1:L2d32:0": {"flops": 1e12, "tokens": 1e6, "wall_s": 10.0},
            "d0:L4d96:0": {"flops": 8e12, "tokens": 2e6, "wall_s": 40.0}}
    write_analysis(analysis_dir[1], tmp_path / "an", meta={"compute": runs})
    sections, _ = report_parts(tmp_path / "an")
    spent = sections[-1]
    assert spent.title == "Compute spent"
    assert "| L2d32 | 2 | 2.00e+12 | 0.200 |" in spent.markdown  # two runs, a fifth of all FLOPs


def test_other_kinds_and_old_formats_are_clear_errors(tmp_path, analysis_dir):
    write_analysis({"lds": pd.DataFrame({"x": [1]})}, tmp_path / "attr", kind="attribution")
    with pytest.raises(StoreError, match="'attribution' analysis, not a 'scaling' one"):
        report_parts(tmp_path / "attr")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "analysis.json").write_text('{"format_version": 1, "tables": []}')
    with pytest.raises(StoreError, match="format 1.*re-run the analysis step"):
        read_analysis(tmp_path / "old")
    (tmp_path / "old_attr").mkdir()
    (tmp_path / "old_attr" / "attribution.json").write_text('{"format_version": 1}')
    with pytest.raises(StoreError, match="format 1.*re-run the analysis step"):
        read_analysis(tmp_path / "old_attr")


def test_arrays_and_meta_round_trip(tmp_path):
    sim = np.arange(9, dtype=np.float64).reshape(3, 3)
    write_analysis({"t": pd.DataFrame({"a": [1.5, 2.5]})}, tmp_path, kind="attribution",
                   meta={"name": "x", "ceiling": float("nan")}, arrays={"order_similarity": sim})
    a = read_analysis(tmp_path, kind="attribution")
    assert a.kind == "attribution" and list(a) == ["t"] and a.meta == {"name": "x", "ceiling": None}
    np.testing.assert_array_equal(a.arrays["order_similarity"], sim)
    man = __import__("json").loads((tmp_path / "analysis.json").read_text())
    assert man["format_version"] == 2 and man["arrays"] == ["order_similarity"] and man["tables"] == ["t"]


def test_table_rendering():
    t = Table(("a", "b|c"), (("1", "x|y"),), note="n")
    assert t.to_markdown().splitlines()[0] == "| a | b\\|c |"
    assert "<td>x|y</td>" in t.to_html() and '<p class="note">n</p>' in t.to_html()
    assert [fmt(v) for v in (float("nan"), float("inf"), 0.0, 1600.0, 0.91234, 3, True)] == \
        ["—", "∞", "0", "1,600", "0.912", "3", "yes"]


def test_analyze_and_report_import_without_torch():
    code = ("import sys; import proxyscale.analyze, proxyscale.report, proxyscale.analyze.synthetic, "
            "proxyscale.studies.scaling.report, proxyscale.studies.attribution.report; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m == 'scipy' "
            "or m.startswith('sklearn')]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_report_is_generic():
    # report/ sits below studies/: it renders sections and never reaches up to a study kind or training
    code = ("import sys; import proxyscale.report; "
            "bad = [m for m in sys.modules if m.startswith(('proxyscale.studies', 'proxyscale.train', "
            "'proxyscale.run', 'proxyscale.analyze', 'matplotlib', 'torch'))]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
