"""Headless-Chromium screenshots of a generated report: the page renders, and Figure 1 is the
test set × proxy grid with the new columns beside it. Without Chromium these checks skip on a
developer's machine and fail under ``CI=true`` (``.ci/run`` installs Debian's ``chromium``)."""
import base64
import re

import numpy as np
import pytest

from oracles import missing, oracle
from proxyscale.analyze import analyze_study, write_analysis
from proxyscale.analyze.synthetic import make_synthetic_study
from proxyscale.errors import ProxyscaleError
from proxyscale.report import screenshot, write_report
from proxyscale.report.screenshot import find_chromium
from proxyscale.store import write_text
from proxyscale.studies.scaling.figures import OKABE_ITO
from proxyscale.studies.scaling.report import report_parts


@pytest.fixture
def chromium():
    """The Chromium binary the screenshots use; a missing one skips locally and fails in CI."""
    path = find_chromium()
    if path is None:
        missing("Chromium (headless, for the report's render check)", "no chromium binary on PATH",
                "`apt-get install -y chromium` installs it (.ci/run does)")
    return path


def test_missing_file_is_a_clear_error(tmp_path):
    if find_chromium() is None:
        with pytest.raises(ProxyscaleError, match="Chromium"):
            screenshot(tmp_path / "r.html", tmp_path / "r.png")
    else:
        with pytest.raises(ProxyscaleError, match="no such HTML"):
            screenshot(tmp_path / "r.html", tmp_path / "r.png")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("shot")
    a = analyze_study(*make_synthetic_study(np.random.default_rng(1), n_examples=4), seed=0, n_boot=50)
    write_analysis(a, root / "analysis")
    sections, files = report_parts(root / "analysis")
    html, _ = write_report(root / "report", "Screenshot check", sections, files=files)
    return root, html, a


def _rgb(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_screenshot_of_report_is_not_blank(written, chromium):
    oracle("PIL")
    root, html, _ = written
    text = html.read_text()
    for header in ("mixture weights", "Leave-one-distribution-out R²", "Holm-adjusted", "reference ceiling",
                   "union of percentile and basic intervals", "analysis.loss: example_mean"):
        assert header in text
    png = screenshot(html, root / "shot" / "page.png", width=1000, height=3200)
    assert png.stat().st_size > 20_000
    img = _rgb(png).mean(axis=2)
    assert img.shape[1] == 1000
    assert img.std() > 10  # text, tables and plots, not a blank page
    # Dark pixels (text and figure ink) appear in the top, middle and lower parts of the page.
    thirds = np.array_split(img, 3, axis=0)
    assert all((t < 100).mean() > 0.002 for t in thirds)


def _runs(mask_1d):
    """Number of separate runs of True."""
    m = np.r_[False, mask_1d, False].astype(np.int8)
    return int((np.diff(m) == 1).sum())


def test_figure_one_renders_as_a_grid_of_panels(written, chromium):
    """The rendered Figure 1: one row per test set, the n-gram baselines in their own grey panels,
    and the distributions drawn in the Okabe–Ito colours."""
    oracle("PIL")
    root, html, a = written
    b64 = re.search(r'<img alt="Proxy vs reference mean test loss[^"]*" src="data:image/png;base64,([^"]+)"',
                    html.read_text()).group(1)
    page = root / "fig1.html"
    write_text(page, '<html><body style="margin:0;background:#fff">'
                     f'<img style="display:block" src="data:image/png;base64,{b64}"></body></html>')
    import io

    from PIL import Image

    w, h = Image.open(io.BytesIO(base64.b64decode(b64))).size
    shot = _rgb(screenshot(page, root / "shot" / "fig1.png", width=w + 40, height=h + 40))[:h, :w]
    grey = (np.abs(shot - 243) <= 2).all(axis=2)  # the n-gram panels' background
    n_tests, n_grams = len(a["test_sets"]), int((a["models"]["kind"] == "ngram").sum())
    cols_with_grey = grey.mean(axis=0) > 0.2
    rows_with_grey = grey.mean(axis=1) > 0.1
    assert _runs(cols_with_grey) == n_grams  # n-gram panels: their own column each
    assert _runs(rows_with_grey) == n_tests  # one row of panels per test set
    assert not cols_with_grey[: w // 2].any()  # neural proxies first, on the left
    for hexcol in OKABE_ITO[1:7]:  # every distribution colour but black and yellow is drawn
        rgb = np.array([int(hexcol[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(shot - rgb) <= 6).all(axis=2).sum() > 30, hexcol
