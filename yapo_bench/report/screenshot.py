"""A PNG of the report page as a browser renders it: headless Chromium, so a person can see it renders."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(html: str | Path, png: str | Path, width: int = 1280, height: int = 2400, timeout: float = 120) -> Path:
    """Render `html` (a local file) headless and save the viewport to `png`."""
    browser = find_browser()
    if browser is None:
        raise ValueError(f"screenshot: no headless browser found (looked for {', '.join(BROWSERS)}); "
                         "install one, e.g. apt-get install chromium")
    html, png = Path(html).resolve(), Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # a throwaway profile: no state from, or to, the user's
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={png}",
                   html.as_uri()]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0 or not png.is_file():
        raise ValueError(f"screenshot: {browser} failed ({completed.returncode}): {completed.stderr.strip()[-300:]}")
    return png
