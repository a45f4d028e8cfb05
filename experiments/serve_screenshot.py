"""A screenshot of the steered-chat page for the README: a real conversation in headless Chromium.

    python experiments/serve_screenshot.py [--out docs/figures/serve_page.png] [--vector voyager] [--alpha 0.5]
                                           [--layer 14] [--threads N]

Serves the embedded SmolLM2 with the default axis (the built-in ``assistant_axis``, computed from the cached
role means on first use) and the persona catalogue (cached vectors only), then drives the page: one unsteered
turn, two turns steered along ``--vector`` at relative ``--alpha`` on ``--layer``, and one with *stabilise*
on; the chart has a point per assistant turn. Writes the PNG atomically and prints each reply and its axis
projection. Needs the Debian ``chromium`` and ``chromium-driver`` packages (``make test`` installs them).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TURNS = (("", "Who are you?"), ("steer", "Describe your surroundings."), ("steer", "How do you feel?"),
         ("stabilise", "Who are you?"))


def main(argv: list[str] | None = None) -> Path:
    """Serve, chat, screenshot (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "serve_page.png")
    ap.add_argument("--vector", default="voyager")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)

    import torch
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from persona_vectors import load_model
    from persona_vectors.io import atomic_file
    from persona_vectors.serve import create_app, serve_in_background
    from snapshot_figures import _driver

    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(progress=False)
    app = create_app(model, catalogue="cached", default_layer=a.layer)
    state = app.state.pv
    print(f"axis: {state.axis() is not None} ({state._axis_error or 'ok'})")
    with serve_in_background(app) as server, tempfile.TemporaryDirectory() as tmp:
        drv = _driver(1280, 820, Path(tmp) / "profile")
        try:
            drv.get(server.url + "/")
            wait = WebDriverWait(drv, 900)
            wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
            Select(drv.find_element(By.ID, "layer")).select_by_value(str(a.layer))
            n = 0
            for mode, text in TURNS:
                if mode == "steer" and n == 1:
                    Select(drv.find_element(By.ID, "vector")).select_by_value(a.vector)
                    drv.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                                       drv.find_element(By.ID, "alpha"), a.alpha)
                if mode == "stabilise":
                    drv.find_element(By.ID, "stabilise").click()
                drv.find_element(By.ID, "msg").send_keys(text)
                drv.find_element(By.ID, "send").click()
                n += 1
                wait.until(lambda d: not d.execute_script("return window.pvState.busy") and (
                    d.execute_script("return document.querySelectorAll('.msg.assistant').length") == n
                    or d.find_elements(By.CSS_SELECTOR, ".msg.error")))
                errs = drv.find_elements(By.CSS_SELECTOR, ".msg.error")
                if errs:
                    raise SystemExit(f"the page reported an error: {errs[0].text}")
                print(f"[{mode or 'plain'}] {text} -> {drv.find_elements(By.CSS_SELECTOR, '.msg.assistant')[-1].text!r}")
            with atomic_file(a.out) as t:
                t.write_bytes(drv.get_screenshot_as_png())
            print(f"wrote {a.out}")
        finally:
            drv.quit()
    return a.out


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
