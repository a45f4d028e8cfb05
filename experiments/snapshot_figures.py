"""PNG snapshots of the experiments' interactive HTML figures, for the README (headless Chromium via Selenium).

    python experiments/snapshot_figures.py                      # the default set below → docs/figures/*.png
    python experiments/snapshot_figures.py runs/x/fig.html out.png [--width 1100 --height 650]

Uses the system ``chromium`` and ``chromedriver`` (``make test`` installs them) with networking disabled; the
figures are self-contained, so nothing is fetched. Each PNG is written atomically.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (HTML produced by a default run, PNG under docs/figures/)
DEFAULT_SET: tuple[tuple[str, str], ...] = (
    ("runs/assistant_axis/share_vs_alpha_L14.html", "docs/figures/assistant_axis_share_vs_alpha_L14.png"),
    ("runs/persona_arithmetic/identity_vs_t.html", "docs/figures/persona_arithmetic_identity_vs_t.png"),
    ("runs/finetune_personas/figures.html", "docs/figures/finetune_personas.png"),
    ("runs/assistant_axis_prereg/share_by_kl.html", "docs/figures/assistant_axis_prereg_share_by_kl.png"),
    ("runs/finetune_personas_prereg/tradeoff.html", "docs/figures/finetune_personas_prereg_tradeoff.png"),
)


def _driver(width: int, height: int, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
    drv = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
    if not binary or not drv:
        raise SystemExit("needs the Debian packages chromium and chromium-driver (make test installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(drv), options=opts)


def snapshot(pairs: list[tuple[Path, Path]], width: int = 1100, height: int = 650) -> list[Path]:
    """Open each HTML file, wait for plotly to draw, and save a PNG screenshot."""
    from persona_vectors.io import atomic_file

    missing = [str(h) for h, _ in pairs if not h.is_file()]
    if missing:
        raise SystemExit(f"missing figures (run the experiments first): {', '.join(missing)}")
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        driver = _driver(width, height, Path(tmp) / "profile")
        try:
            driver.set_page_load_timeout(120)
            for html, png in pairs:
                driver.get(html.resolve().as_uri())
                deadline = time.time() + 60
                while time.time() < deadline and not driver.execute_script(
                        "return document.querySelectorAll('.main-svg').length > 0"):
                    time.sleep(0.2)
                time.sleep(1.0)  # let the first transition finish
                with atomic_file(png) as t:
                    t.write_bytes(driver.get_screenshot_as_png())
                written.append(png)
                print(f"wrote {png}")
        finally:
            driver.quit()
    return written


def main(argv: list[str] | None = None) -> None:
    """CLI: no arguments → the README set; else one HTML and one PNG path."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?")
    ap.add_argument("png", nargs="?")
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=650)
    a = ap.parse_args(argv)
    if (a.html is None) != (a.png is None):
        ap.error("give both HTML and PNG, or neither")
    pairs = [(Path(a.html), Path(a.png))] if a.html else [(ROOT / h, ROOT / p) for h, p in DEFAULT_SET]
    snapshot(pairs, a.width, a.height)


if __name__ == "__main__":
    main(sys.argv[1:])
