"""Render a report page to PNG with headless Chromium, to check what a reader will see."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ProxyscaleError

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium-family browser on PATH, or None."""
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1200, *, height: int = 2400,
               timeout_s: float = 120.0) -> Path:
    """Screenshot ``html_path`` (a local file) at ``width`` × ``height`` pixels into ``png_path``.

    Runs Chromium headless in a fresh, throw-away profile with networking extras disabled, so
    the result depends only on the file (reports embed all their assets).
    """
    browser = find_chromium()
    if browser is None:
        raise ProxyscaleError("no Chromium browser found on PATH; install it (Debian: apt-get install -y chromium) "
                              "to take report screenshots")
    src = Path(html_path).resolve()
    if not src.is_file():
        raise ProxyscaleError(f"{src}: no such HTML file to screenshot; write the report first")
    out = Path(png_path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="proxyscale-chromium-") as profile:
        tmp_png = Path(profile) / "shot.png"
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}/user", f"--screenshot={tmp_png}",
               f"--window-size={int(width)},{int(height)}", src.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ProxyscaleError(f"Chromium took over {timeout_s:.0f} s to screenshot {src}; "
                                  "retry or raise timeout_s") from e
        if proc.returncode != 0 or not tmp_png.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise ProxyscaleError(f"Chromium could not screenshot {src} (exit {proc.returncode}): {' | '.join(tail)}")
        shutil.move(str(tmp_png), out)  # whole file, written once Chromium has finished
    return out
