"""`stampflow view` in a real browser: Debian's headless Chromium, driven by Playwright's Python package.

The page serves the demo's results (real ZTF alerts through star/galaxy, real FIRST images through radio-first,
the mock-trained families on their committed packets), made here with the same commands `make demo` runs, plus
one packet whose id is HTML, to show packet content is rendered as text. Checks, in order:

1. the page loads every demo result, with no request leaving the viewer's own origin and no console error;
2. every stamp renders: each thumbnail ``img`` decodes to a non-zero natural size;
3. mock-trained models carry their badge;
4. filters change the rows shown (model, then flag);
5. the detail view opens, with full-size stamps and the ZTF fields a user checks first;
6. the dead-letters tab lists the JPEG alert, and its download is the original file, byte for byte;
7. an HTML-looking packet id is shown as text and runs nothing.

One screenshot per run is kept (the path is printed); ``UPDATE_DOCS_SCREENSHOT=1`` also writes
``docs/img/viewer.png`` for the README. Skips only when Chromium is not installed (``make test`` installs it:
``deploy/tools/install-chromium.sh``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from schemas.cutout_packet import Cutout, write_cutout_file
from tests.viewer_harness import CHROMIUM, CHROMIUM_ARGS, start_view, wait_until

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
ALERTS = FIXTURES / "alerts"
PACKETS = [FIXTURES / "packets" / n for n in ("deepmerge-mock.avro", "candels-mock.avro", "sdss-spin-mock.avro")]
MODELS = "stargal,radio-first,deepmerge,morphology-candels,spin"
ARTIFACTS = REPO / ".cache" / "test-artifacts"
HTML_ID = '<img src=x onerror="window.__injected=1">'

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at "
                                "/usr/bin/chromium (make test installs it with deploy/tools/install-chromium.sh)")




def cli(*args: str, timeout: float = 240) -> str:
    proc = subprocess.run([sys.executable, "-m", "stream", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("view-demo")
    fits = sorted((data_dir / "radio" / "mirabest" / "fits_subset").glob("100_*.fits"))[:3] + \
        sorted((data_dir / "radio" / "mirabest" / "fits_subset").glob("200_*.fits"))[:3]
    first = out / "first.avro"
    cli("replay", *map(str, fits), "--format", "radio-fits", "--out", str(first), "--quiet")
    odd = out / "html-id.avro"  # a packet no model takes (unrouted), whose id is HTML
    write_cutout_file(odd, [Cutout(id=HTML_ID, survey="TEST", bands=["x"],
                                   images={"x": np.arange(64, dtype=np.float32).reshape(8, 8)})])
    inputs = [str(ALERTS), str(first), *map(str, PACKETS), str(odd)]
    results, dead = out / "results.jsonl", out / "dead"
    cli("classify", *inputs, "--models", MODELS, "--out", str(results), "--dead-letters", str(dead), "--show", "0",
        "--quiet")
    n = sum(1 for line in results.read_text().splitlines() if line.strip())
    try:
        proc, url = start_view([str(results), "--inputs", *inputs, "--dead-letters", str(dead)])
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield {"url": url, "results": n}
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def page(demo):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="stampflow-chromium-")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                        headless=True, viewport={"width": 1400, "height": 1000})
        p = context.pages[0] if context.pages else context.new_page()
        p.foreign_requests, p.console_errors = [], []
        p.on("request", lambda r: None if r.url.startswith(demo["url"]) else p.foreign_requests.append(r.url))
        p.on("console", lambda m: p.console_errors.append(m.text) if m.type == "error" else None)
        p.goto(demo["url"])
        p.wait_for_selector("tr.result-row")
        yield p
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def visible_rows(page) -> list[str]:
    wait_until(page, "document.getElementById('status').textContent === ''")
    return page.locator("tr.result-row td:first-child .model").all_inner_texts()


def test_page_loads_the_demo_results(page, demo):
    assert len(visible_rows(page)) == demo["results"]
    assert f"{demo['results']} results" in page.inner_text("#page-info")
    paint = page.evaluate("new Promise(r => { const t = () => window.__firstRowsPaint === undefined ? "
                          "requestAnimationFrame(t) : r(window.__firstRowsPaint); t(); })")
    print(f"\nviewer: first rows painted {paint:.0f} ms after navigation ({demo['results']} results)")
    assert page.foreign_requests == []


def test_every_stamp_renders(page):
    sizes = page.evaluate("""async () => {
        const out = [];
        for (const img of document.querySelectorAll('img.thumb')) {
            img.scrollIntoView();
            try { await img.decode(); } catch (e) { /* reported as a zero size below */ }
            out.push([img.getAttribute('src'), img.naturalWidth, img.naturalHeight]);
        }
        window.scrollTo(0, 0);
        return out;
    }""")
    assert len(sizes) >= 20  # 3 ZTF alerts x 3 stamps, 6 FIRST, 4 deepmerge x 2, 3 CANDELS, 3 spin x 3, ...
    assert [s for s in sizes if s[1] <= 0 or s[2] <= 0] == []
    assert page.console_errors == []


def test_mock_trained_models_say_so(page):
    rows = page.locator("tr.result-row", has_text="deepmerge")
    assert rows.count() == 4
    assert rows.first.locator(".badge.mock").first.inner_text() == "mock-trained"
    assert page.locator("tr.result-row", has_text="radio-first").first.locator(".badge.mock").count() == 0


def test_filters_change_the_rows(page, demo):
    page.select_option("#f-model", "radio-first")
    names = visible_rows(page)
    assert len(names) == 6 and all(n[:3] in ("100", "200") for n in names)
    page.select_option("#f-model", "")
    page.select_option("#f-flag", "padded_stamp")
    assert visible_rows(page) == ["ZTF18aaxmirj"]
    page.select_option("#f-flag", "")
    assert len(visible_rows(page)) == demo["results"]


def test_detail_view_opens(page):
    page.locator("tr.result-row", has_text="ZTF18aaxmirj").click()
    page.wait_for_selector("#detail:not([hidden]) img.full")
    widths = page.evaluate("""async () => Promise.all([...document.querySelectorAll('#detail img.full')].map(
        async img => { await img.decode(); return img.naturalWidth; }))""")
    assert len(widths) == 3 and min(widths) >= 320
    fields = page.locator("#detail-fields td:first-child").all_inner_texts()
    for name in ("magpsf", "band", "sgscore1", "distpsnr1", "classtar", "isdiffpos", "drb"):
        assert name in fields
    assert '"config_hash"' in page.inner_text("#detail-json")
    assert "padded" in page.inner_text("#detail-stamps")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-detail.png"))
    page.click("#detail-close")
    assert page.locator("#detail").is_hidden()


def test_dead_letters_tab_and_download(page, demo):
    page.click("#tab-dead")
    page.wait_for_selector("tr.dead-row")
    row = page.locator("tr.dead-row")
    assert row.count() == 1 and "UnsupportedPacket" in row.inner_text() and "decode" in row.inner_text()
    href = row.locator("a").get_attribute("href")
    body = page.request.get(demo["url"].rstrip("/") + href).body()
    assert hashlib.sha256(body).digest() == hashlib.sha256((ALERTS / "121540793515135000.avro").read_bytes()).digest()
    page.click("#tab-results")


def test_packet_content_is_text_not_html(page):
    assert page.locator("tr.result-row", has_text=HTML_ID).count() == 1  # shown literally, as text
    assert page.evaluate("window.__injected") is None
    assert page.locator("img[src='x']").count() == 0


def test_screenshot(page):
    """Kept per run as a test artifact; the README's picture when UPDATE_DOCS_SCREENSHOT=1."""
    page.evaluate("window.scrollTo(0, 0)")
    wait_until(page, "[...document.querySelectorAll('img.thumb')].slice(0, 9).every(i => i.complete)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "viewer.png"
    page.screenshot(path=str(path))
    print(f"\nviewer screenshot: {path}")
    assert path.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        docs = REPO / "docs" / "img" / "viewer.png"
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, docs)
