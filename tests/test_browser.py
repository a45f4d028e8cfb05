"""The persona map in a real browser: headless Chromium via Selenium and the system chromedriver.

Skipped (with the reason) only when Chromium/chromedriver/selenium are missing AND the ``CI`` environment
variable is unset; in CI a missing browser is a failure (``make test`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zlib

import numpy as np
import pytest

from persona_vectors.plotting import persona_map, write_html
from persona_vectors.space import PersonaSpace, synthetic_role_vectors

from conftest import CHROMEDRIVER, CHROMIUM, require_browser  # noqa: E402
LAYERS = (3, 6, 9)
CATS = ("animal", "historical_figure", "ai_robot", "object_concept", "supernatural")
N_ROLES = 40


def png_pixels(data: bytes) -> np.ndarray:
    """A tiny PNG decoder (8-bit RGB/RGBA, non-interlaced; what Chromium writes) → ``[h, w, channels]``."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat += body
        elif typ == b"IEND":
            break
    assert ihdr is not None
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0 and ctype in (2, 6), f"unsupported PNG {ihdr}"
    bpp = 3 if ctype == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.int64)
    for y in range(h):
        f, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) & 255
        elif f == 2:
            cur = (line + prev) & 255
        else:  # Average / Paeth: sequential along the row
            ln, pv, cu = line.tolist(), prev.tolist(), [0] * (w * bpp)
            for i in range(w * bpp):
                a = cu[i - bpp] if i >= bpp else 0
                b = pv[i]
                if f == 3:
                    cu[i] = (ln[i] + ((a + b) >> 1)) & 255
                else:
                    c = pv[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cu[i] = (ln[i] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 255
            cur = np.array(cu, dtype=np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("browser")
    names = [f"{CATS[i % len(CATS)]}_{i}" for i in range(N_ROLES)]
    names[1] = "adolf_hitler"
    cats = {n: CATS[i % len(CATS)] for i, n in enumerate(names)}
    vecs = synthetic_role_vectors(names, cats, layers=LAYERS, d_model=32, seed=5)
    spaces = {L: PersonaSpace().fit(vecs, site=L) for L in LAYERS}
    hover = {n: f"As {n.replace('_', ' ')}, I would answer in character." for n in names}
    axis = {L: vecs["ai_robot_2"][L].numpy() for L in LAYERS}
    html_path = write_html(persona_map(spaces, cats, hover, axis=axis), tmp / "map.html")

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
              "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={tmp / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else shutil.which("chromedriver")),
                              options=opts)
    try:
        driver.set_page_load_timeout(120)
        driver.get(html_path.resolve().as_uri())
        deadline = time.time() + 90
        while time.time() < deadline and not driver.execute_script(
                "return document.querySelectorAll('g.trace.scatter path.point').length > 0"):
            time.sleep(0.2)
        yield driver, names, cats
    finally:
        driver.quit()


def _points(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('g.trace.scatter path.point')).map(e => e.getAttribute('transform'))")


def _move_to(driver, x: float, y: float, click: bool = False) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    ab = ActionBuilder(driver)
    ab.pointer_action.move_to_location(int(round(x)), int(round(y)))
    if click:
        ab.pointer_action.click()
    ab.perform()


def _wait(cond, timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_renders_every_role_of_the_visible_layer(page):
    driver, names, _ = page
    assert driver.execute_script("return document.querySelectorAll('.main-svg').length") >= 1
    assert len(_points(driver)) == N_ROLES
    title = driver.execute_script("return document.querySelector('.gtitle').textContent")
    assert f"resid_post.{LAYERS[0]}" in title
    legend = driver.execute_script("return Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent)")
    assert set(CATS) <= set(legend)


def test_hover_shows_role_and_category(page):
    driver, names, cats = page
    box = driver.execute_script(
        "const r = document.querySelectorAll('g.trace.scatter path.point')[3].getBoundingClientRect();"
        "return [r.left + r.width / 2, r.top + r.height / 2];")
    _move_to(driver, *box)
    get = "return Array.from(document.querySelectorAll('.hoverlayer .hovertext')).map(e => e.textContent).join(' | ')"
    assert _wait(lambda: driver.execute_script(get)), "no hover label appeared"
    label = driver.execute_script(get)
    hit = [n for n in names if n in label]
    assert hit, label
    assert f"category: {cats[hit[0]]}" in label
    _move_to(driver, 5, 5)


def test_layer_slider_changes_the_map(page):
    driver, _, _ = page
    before = _points(driver)
    ticks = driver.execute_script(
        "return Array.from(document.querySelectorAll('.slider-tick-rect')).map(e => {"
        "const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top]; })")
    rail = driver.execute_script(
        "const r = document.querySelector('.slider-rail-touch-rect').getBoundingClientRect();"
        "return [r.top + r.height / 2];")
    assert len(ticks) == len(LAYERS)
    _move_to(driver, ticks[2][0], rail[0], click=True)
    assert _wait(lambda: f"resid_post.{LAYERS[2]}" in driver.execute_script(
        "return document.querySelector('.gtitle').textContent")), "slider click did not switch the layer"
    after = _points(driver)
    assert len(after) == N_ROLES
    assert sum(a != b for a, b in zip(before, after)) > N_ROLES // 2  # the points moved
    assert driver.execute_script("return document.querySelector('.js-plotly-plot').layout.sliders[0].active") == 2


def test_screenshot_is_not_blank_and_nothing_is_fetched(page, tmp_path):
    driver, _, _ = page
    png = driver.get_screenshot_as_png()
    px = png_pixels(png)
    assert px.shape[0] > 300 and px.shape[1] > 600
    colours = np.unique(px[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 10, f"screenshot has only {len(colours)} colours"
    # no network request left the machine (chrome:// internals of the blank start page are local)
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    assert any(u.startswith("file://") for u in urls)  # the log works: the page itself was seen
    remote = [u for u in urls if u.split(":", 1)[0].lower() in ("http", "https", "ws", "wss", "ftp")]
    assert not remote, remote


def test_no_severe_console_errors(page):
    driver, _, _ = page
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
