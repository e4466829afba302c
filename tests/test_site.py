"""The static site: scripts/build_site.py builds it from the executed notebooks, and headless Chromium checks every page
(title, typeset math, images, internal links, nothing fetched from outside 127.0.0.1). Screenshots of the index and the
DDIM derivation page go to _site_screenshots/ for review."""
import functools
import http.server
import importlib.util
import json
import re
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "_site_screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def _load_build():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "scripts" / "build_site.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


bs = _load_build()


# --- pure parts of the build script (no browser) ---

def test_sidebar_matches_notebooks_on_disk():
    text = (ROOT / "nbs" / "sidebar.yml").read_text()
    assert text == bs.sidebar_yaml(), "nbs/sidebar.yml is out of date: run python scripts/build_site.py --write-sidebar"
    listed = re.findall(r"- (\S+\.ipynb)", text)
    on_disk = [p.name for p in bs.notebooks()]
    assert sorted(listed) == sorted(on_disk) and len(set(listed)) == len(listed)
    for name in listed: assert (ROOT / "nbs" / name).exists()


def test_sections_group_by_prefix_and_skip_missing(tmp_path):
    for n in ("index", "00_a", "01_b", "04_c", "08_inv", "10_w", "course_guide", "12_new", "_scratch"):
        (tmp_path / f"{n}.ipynb").write_text("{}")
    got = {s: [p.name for p in g] for s, g in bs.sections(tmp_path)}
    assert got == {"Foundations": ["index.ipynb", "00_a.ipynb", "01_b.ipynb"], "DEQ sampling": ["04_c.ipynb"],
                   "Inversion": ["08_inv.ipynb"], "Explore": ["10_w.ipynb", "course_guide.ipynb"], "More": ["12_new.ipynb"]}
    assert "Scale and performance" not in bs.sidebar_yaml(tmp_path) and "_scratch" not in bs.sidebar_yaml(tmp_path)


def test_adapt_hides_folds_and_relinks():
    nb = {"metadata": {"widgets": {}}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "see [DDIM](01_ddim.ipynb#eq) and [x](https://a.b/c.ipynb)"},
        {"cell_type": "code", "metadata": {}, "source": "#| default_exp widgets", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "#| hide\nassert 1", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "#| code-fold: true\nx = 1", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "#| export\ndef f(): pass", "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {bs.WIDGET: {}, "text/plain": "VBox()"}}]}]}
    out = bs.adapt(nb)
    assert [c["source"] for c in out["cells"]] == [
        "see [DDIM](01_ddim.html#eq) and [x](https://a.b/c.ipynb)", "x = 1", "def f(): pass"]
    assert out["cells"][1]["metadata"]["tags"] == ["code-fold"]
    assert "Interactive widget" in out["cells"][2]["outputs"][0]["data"]["text/html"]
    assert "widgets" not in out["metadata"]


# --- the built site in a browser ---

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs_jupyter", reason="the site needs the docs extra: pip install -e '.[docs]'")
    out = bs.build(tmp_path_factory.mktemp("site") / "_site")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown(); srv.server_close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists(): pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (docs extra)").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


RAW_MATH = """() => {
  const w = document.createTreeWalker(document.querySelector('article') || document.body, NodeFilter.SHOW_TEXT);
  const bad = [];
  while (w.nextNode()) {
    const n = w.currentNode, p = n.parentElement;
    if (p.closest('script, style, pre, code, textarea, .highlight')) continue;
    if (/\\$\\$|\\\\tag\\{|\\\\mathbf\\{|\\\\frac\\{/.test(n.textContent)) bad.push(n.textContent.slice(0, 80));
  }
  return bad;
}"""


def _has_math(nb_path):
    nb = json.loads(nb_path.read_text())
    return any(c["cell_type"] == "markdown" and re.search(r"\$[^$\s][^$]*\$", "".join(c["source"])) for c in nb["cells"])


def test_every_page_in_the_browser(site, browser):
    out, base = site
    nbs = bs.notebooks()
    assert nbs and all((out / f"{p.stem}.html").exists() for p in nbs), "a notebook has no page"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []
    page.route("**/*", lambda r: (outside.append(r.request.url), r.abort()) if urlparse(r.request.url).hostname != "127.0.0.1"
               else r.continue_())
    links, problems = set(), []
    for p in nbs:
        url = urljoin(base, f"{p.stem}.html")
        resp = page.goto(url, wait_until="load")
        assert resp.status == 200, url
        title = bs.title_of(json.loads(p.read_text()), p.stem)
        if title not in page.title(): problems.append(f"{p.name}: title {page.title()!r} lacks {title!r}")
        if _has_math(p):
            page.wait_for_function("() => window.MathJax && MathJax.isReady", timeout=30000)
            page.evaluate("() => new Promise(r => MathJax.Hub.Queue(() => r(true)))")
            n = page.evaluate("() => document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML').length")
            if n == 0: problems.append(f"{p.name}: no typeset math")
            raw = page.evaluate(RAW_MATH)
            if raw: problems.append(f"{p.name}: raw TeX left in the text: {raw[:3]}")
            errs = page.evaluate("() => document.querySelectorAll('.MathJax_Error, merror, [data-mjx-error]').length")
            if errs: problems.append(f"{p.name}: {errs} MathJax errors")
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=20000)
        broken = page.evaluate("() => Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
        if broken: problems.append(f"{p.name}: images that did not load: {broken}")
        nav = page.evaluate("() => Array.from(document.querySelectorAll('nav.md-nav--primary label, nav.md-nav--primary a')).map(a => a.textContent.trim())")
        for name, _ in bs.sections():
            if not any(name == t for t in nav): problems.append(f"{p.name}: navigation lacks the section {name!r}")
        for h in page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
            u = urlparse(h)
            if u.hostname == "127.0.0.1": links.add(h.split("#")[0])
        if p.stem in ("index", "01_ddim"):
            SHOTS.mkdir(exist_ok=True)
            if p.stem == "01_ddim":   # scroll to the first display equation so the shot shows typeset math
                page.evaluate("() => { const m = document.querySelector('.MathJax_Display'); if (m) m.scrollIntoView({block: 'center'}); }")
                page.wait_for_timeout(800)   # let the header's scroll transition finish before the shot
            page.screenshot(path=str(SHOTS / f"{p.stem}.png"))
    assert len(links) > len(nbs)
    for h in sorted(links):
        r = page.request.get(h)
        if r.status != 200: problems.append(f"broken internal link {h}: HTTP {r.status}")
    page.close()
    assert not problems, "\n".join(problems)
    assert not outside, f"the site fetched from outside (no CDN allowed): {sorted(set(outside))[:5]}"
    assert (SHOTS / "index.png").stat().st_size > 10000 and (SHOTS / "01_ddim.png").stat().st_size > 10000
