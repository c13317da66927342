"""Headless-Chromium screenshot of a generated report (skipped where no Chromium is installed)."""
import numpy as np
import pytest

from proxyscale.analyze import analyze_study, write_analysis
from proxyscale.analyze.synthetic import make_synthetic_study
from proxyscale.errors import ProxyscaleError
from proxyscale.report import screenshot, write_report
from proxyscale.report.screenshot import find_chromium
from proxyscale.studies.scaling.report import report_parts


def test_missing_file_is_a_clear_error(tmp_path):
    if find_chromium() is None:
        with pytest.raises(ProxyscaleError, match="Chromium"):
            screenshot(tmp_path / "r.html", tmp_path / "r.png")
    else:
        with pytest.raises(ProxyscaleError, match="no such HTML"):
            screenshot(tmp_path / "r.html", tmp_path / "r.png")


@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary on PATH")
def test_screenshot_of_report_is_not_blank(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    a = analyze_study(*make_synthetic_study(np.random.default_rng(1), n_examples=4), seed=0, n_boot=50)
    write_analysis(a, tmp_path / "analysis")
    sections, files = report_parts(tmp_path / "analysis")
    html, _ = write_report(tmp_path / "report", "Screenshot check", sections, files=files)
    png = screenshot(html, tmp_path / "shot" / "page.png", width=1000)
    assert png.stat().st_size > 20_000
    img = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert img.shape[1] == 1000
    assert img.std() > 10  # text, tables and plots, not a blank page
    # Dark pixels (text and figure ink) appear in the top, middle and lower parts of the page.
    thirds = np.array_split(img, 3, axis=0)
    assert all((t < 100).mean() > 0.002 for t in thirds)
