"""The static site: scripts/build_site.py builds it from the executed notebooks, and headless Chromium checks every page
(title, typeset math, images, internal links, nothing fetched from outside 127.0.0.1) and its reading layout at 1280x900
and 390x844: display equations fit their box at 1280, no execution prompts, previous/next links, exercise solutions
folded with their outputs, no page wider than a phone's screen; search works offline; print.html holds every page.
Screenshots (index, the DDIM derivation, an open solution, a phone page) go to _site_screenshots/ for review."""
import functools
import http.server
import importlib.util
import json
import re
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "_site_screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def _load_build():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "scripts" / "build_site.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


bs = _load_build()
_spec = importlib.util.spec_from_file_location("site_hooks", ROOT / "site" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(hooks)


# --- pure parts of the build script (no browser) ---

def test_sidebar_matches_notebooks_on_disk():
    text = (ROOT / "nbs" / "sidebar.yml").read_text()
    assert text == bs.sidebar_yaml(), "nbs/sidebar.yml is out of date: run python scripts/build_site.py --write-sidebar"
    listed = re.findall(r"- (\S+\.ipynb)", text)
    on_disk = [p.name for p in bs.notebooks()]
    assert sorted(listed) == sorted(on_disk) and len(set(listed)) == len(listed)
    for name in listed: assert (ROOT / "nbs" / name).exists()


def test_sections_group_by_prefix_and_skip_missing(tmp_path):
    for n in ("index", "00_a", "01_b", "04_c", "08_inv", "10_w", "course_guide", "12_new", "91_files", "90_checks", "_scratch"):
        (tmp_path / f"{n}.ipynb").write_text("{}")
    got = {s: [p.name for p in g] for s, g in bs.sections(tmp_path)}
    assert got == {"Foundations": ["index.ipynb", "00_a.ipynb", "01_b.ipynb"], "DEQ sampling": ["04_c.ipynb"],
                   "Inversion": ["08_inv.ipynb"], "Explore": ["10_w.ipynb", "course_guide.ipynb"],
                   "Appendix": ["90_checks.ipynb", "91_files.ipynb"], "More": ["12_new.ipynb"]}
    assert list(got)[-2:] == ["Appendix", "More"]           # the appendix comes after every lesson section
    assert "Scale and performance" not in bs.sidebar_yaml(tmp_path) and "_scratch" not in bs.sidebar_yaml(tmp_path)


def _sidebar_order(text):
    return re.findall(r"- (\S+\.ipynb)", text)


def _nav_order(nav):
    out = []
    for item in nav:
        for v in item.values(): out += _nav_order(v) if isinstance(v, list) else [v]
    return out


def test_mkdocs_nav_and_quarto_sidebar_in_the_same_order(tmp_path):
    cfg = bs.stage(tmp_path / "src")
    nav = _nav_order(cfg["nav"])
    assert nav == _sidebar_order((ROOT / "nbs" / "sidebar.yml").read_text()) == [p.name for _, g in bs.sections() for p in g]
    assert [list(s)[0] for s in cfg["nav"]] == [name for name, _ in bs.sections()]
    appendix = [p.name for p in bs.notebooks() if p.name[:2].isdigit() and int(p.name[:2]) >= 90]
    if appendix: assert nav[-len(appendix):] == appendix   # the appendix is read last


def test_quarto_config_is_valid_for_nbdev_docs():
    import yaml
    q = yaml.safe_load((ROOT / "nbs" / "_quarto.yml").read_text())
    assert q["project"]["type"] == "website" and set(q["metadata-files"]) >= {"nbdev.yml", "sidebar.yml"}
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())
    listed = [n for sec in side["website"]["sidebar"]["contents"] for n in sec["contents"]]
    assert sorted(listed) == sorted(p.name for p in bs.notebooks())
    assert yaml.safe_load((ROOT / "nbs" / "nbdev.yml").read_text())["website"]["title"]


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
    assert out["cells"][2]["metadata"]["tags"] == []          # a short export stays open


def test_adapt_folds_long_exports_only():
    long = "#| export\n" + "\n".join(f"x{i} = {i}" for i in range(bs.FOLD_EXPORT_LINES + 1))
    short = "#| export\n" + "\n".join(f"x{i} = {i}" for i in range(bs.FOLD_EXPORT_LINES))
    nb = {"metadata": {}, "cells": [{"cell_type": "code", "metadata": {}, "source": s, "outputs": []}
                                    for s in (long, short, long.replace("export", "exports"), long.replace("#| export\n", ""))]}
    assert [c["metadata"]["tags"] for c in bs.adapt(nb)["cells"]] == [["fold-export"], [], ["fold-export"], []]


def test_adapt_folds_an_exported_import_header():
    header = "#| export\nfrom __future__ import annotations\nimport torch\nfrom x import (a,\n    b)\n"
    code = "#| export\nimport torch\ny = torch.zeros(3)\n"
    nb = {"metadata": {}, "cells": [{"cell_type": "code", "metadata": {}, "source": s, "outputs": []}
                                    for s in (header, code, header.replace("#| export\n", ""))]}
    assert [c["metadata"]["tags"] for c in bs.adapt(nb)["cells"]] == [["fold-export"], [], []]


CELL = """<div class="jp-Cell jp-CodeCell jp-Notebook-cell {tag}"><div class="jp-Cell-inputWrapper"><div class="jp-InputArea">
<div class="jp-InputPrompt">In [ ]:</div><div class="celltoolbar"><span class="cell-tag">code-fold</span></div>
<div class="highlight-ipynb"><pre><span class="c1">{code}</span></pre></div></div></div>
<div class="jp-Cell-outputWrapper"><div class="jp-OutputArea"><div class="jp-OutputPrompt">Out[ ]:</div>
<div class="jp-OutputArea-output"><pre>{out}</pre></div></div></div></div>"""


def test_hooks_fold_code_and_outputs_and_drop_prompts():
    html = "".join([CELL.format(tag="celltag_code-fold", code="# Solution\nx = 1", out="answer 42"),
                    CELL.format(tag="celltag_code-fold", code="# Check\nassert x", out=""),
                    CELL.format(tag="celltag_fold-export", code="def make_handout(a):\n    pass\nclass Kit: pass", out=""),
                    CELL.format(tag="", code="y = 2", out="open output")])
    soup = BeautifulSoup(hooks.fold_cells(html), "html.parser")
    assert not soup.select(".jp-InputPrompt, .jp-OutputPrompt, .celltoolbar") and "In [" not in soup.get_text()
    cells = soup.select("div.jp-Cell")
    assert [c.details.summary.get_text() if c.details else None for c in cells] == [
        "Solution", "Check", "Code: make_handout, Kit", None]
    sol = cells[0].details
    assert sol.select_one(".jp-Cell-inputWrapper") and "answer 42" in sol.select_one(".jp-OutputArea").get_text()
    assert not sol.has_attr("open") and "open output" in cells[3].get_text()
    assert hooks.fold_cells(hooks.fold_cells(html)).count("<details") == 3       # idempotent


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


LAYOUT = """() => {
  const eqs = Array.from(document.querySelectorAll('.MathJax_Display, mjx-container[display]'));
  const over = eqs.filter(e => e.scrollWidth > e.clientWidth + 1)
                  .map(e => `${e.scrollWidth}px in ${e.clientWidth}px: ${(e.textContent || '').slice(0, 40)}`);
  const art = document.querySelector('article') || document.body;
  const cells = Array.from(art.querySelectorAll('.jp-CodeCell')).filter(c => !c.querySelector('.jp-CodeCell'));  // innermost
  const sol = cells.filter(c => {
    const p = c.querySelector('pre'); return p && /^\\s*# Solution/.test(p.textContent); });
  return {
    eqs: eqs.length, over,
    prompts: document.querySelectorAll('.jp-InputPrompt, .jp-OutputPrompt').length,
    promptText: /(In|Out)\\s*\\[[\\s0-9]*\\]:/.test(art.textContent),
    prev: !!document.querySelector('a.md-footer__link--prev'), next: !!document.querySelector('a.md-footer__link--next'),
    solutions: sol.length,
    solutionOutputsShown: sol.filter(c => Array.from(c.querySelectorAll('.jp-OutputArea-output')).some(o => o.checkVisibility())).length,
    solutionsWithOutput: sol.filter(c => c.querySelector('.jp-OutputArea-output')).length,
    pageWidth: document.scrollingElement.scrollWidth, viewport: innerWidth,
  };
}"""

# words of the build process that must not reach a reader (the notebooks' prose, code and outputs alike); the verb
# "contracts" (a map that contracts) is mathematics, the noun "contract" is not
BUILD_WORDS = re.compile(r"\b(issues?|sessions?|contract|done when|earlier versions?|not measured in this)\b", re.I)


def _typeset(page):
    page.wait_for_function("() => !document.querySelector('script[src*=\"MathJax.js\"]') || (window.MathJax && MathJax.isReady)",
                           timeout=60000)
    page.evaluate("() => window.MathJax && MathJax.Hub ? new Promise(r => MathJax.Hub.Queue(() => r(true))) : true")


def test_every_page_in_the_browser(site, browser):
    out, base = site
    nbs = [p for _, g in bs.sections() for p in g]          # reading order = navigation order
    assert nbs and all((out / f"{p.stem}.html").exists() for p in nbs), "a notebook has no page"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []
    page.route("**/*", lambda r: (outside.append(r.request.url), r.abort()) if urlparse(r.request.url).hostname != "127.0.0.1"
               else r.continue_())
    links, problems, report = set(), [], {}
    SHOTS.mkdir(exist_ok=True)
    for i, p in enumerate(nbs):
        url = urljoin(base, f"{p.stem}.html")
        page.set_viewport_size({"width": 1280, "height": 900})
        resp = page.goto(url, wait_until="load")
        assert resp.status == 200, url
        title = bs.title_of(json.loads(p.read_text()), p.stem)
        if title not in page.title(): problems.append(f"{p.name}: title {page.title()!r} lacks {title!r}")
        _typeset(page)
        if _has_math(p):
            n = page.evaluate("() => document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML').length")
            if n == 0: problems.append(f"{p.name}: no typeset math")
            raw = page.evaluate(RAW_MATH)
            if raw: problems.append(f"{p.name}: raw TeX left in the text: {raw[:3]}")
            errs = page.evaluate("() => document.querySelectorAll('.MathJax_Error, merror, [data-mjx-error]').length")
            if errs: problems.append(f"{p.name}: {errs} MathJax errors")
        # --- reading layout at 1280x900
        lay = page.evaluate(LAYOUT)
        report[p.name] = lay
        if lay["over"]: problems.append(f"{p.name}: display equations wider than their box at 1280: {lay['over']}")
        if lay["prompts"] or lay["promptText"]: problems.append(f"{p.name}: execution prompts in the page")
        if lay["prev"] != (i > 0) or lay["next"] != (i < len(nbs) - 1):
            problems.append(f"{p.name}: previous/next links {lay['prev']}/{lay['next']}, expected {i > 0}/{i < len(nbs) - 1}")
        if lay["solutionOutputsShown"]: problems.append(f"{p.name}: {lay['solutionOutputsShown']} solution outputs shown unfolded")
        if lay["solutionsWithOutput"]:       # opening the fold shows the solution's output
            page.evaluate("() => { const d = Array.from(document.querySelectorAll('details.deq-fold'))"
                          ".find(d => d.querySelector('.jp-OutputArea-output') && /^\\s*# Solution/.test(d.querySelector('pre').textContent));"
                          " d.open = true; d.scrollIntoView({block: 'start'}); }")
            if page.evaluate(LAYOUT)["solutionOutputsShown"] != 1: problems.append(f"{p.name}: an opened solution shows no output")
            if p.stem == "00_schedules": page.wait_for_timeout(500); page.screenshot(path=str(SHOTS / "solution_open.png"))
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=20000)
        broken = page.evaluate("() => Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
        if broken: problems.append(f"{p.name}: images that did not load: {broken}")
        nav = page.evaluate("() => Array.from(document.querySelectorAll('nav.md-nav--primary label, nav.md-nav--primary a')).map(a => a.textContent.trim())")
        for name, _ in bs.sections():
            if not any(name == t for t in nav): problems.append(f"{p.name}: navigation lacks the section {name!r}")
        words = BUILD_WORDS.findall(page.evaluate("() => (document.querySelector('article') || document.body).innerText"))
        if words: problems.append(f"{p.name}: words of the build process in the page: {sorted(set(words))}")
        for h in page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
            u = urlparse(h)
            if u.hostname == "127.0.0.1": links.add(h.split("#")[0])
        if p.stem in ("index", "01_ddim"):
            if p.stem == "01_ddim":   # scroll to the first display equation so the shot shows typeset math
                page.evaluate("() => { const m = document.querySelector('.MathJax_Display'); if (m) m.scrollIntoView({block: 'center'}); }")
                page.wait_for_timeout(800)   # let the header's scroll transition finish before the shot
            page.screenshot(path=str(SHOTS / f"{p.stem}.png"))
        # --- the same page on a phone (390x844): equations scroll inside their own box, the page never widens
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(100)
        phone = page.evaluate(LAYOUT)
        if phone["pageWidth"] > phone["viewport"]:
            problems.append(f"{p.name}: {phone['pageWidth']}px wide on a {phone['viewport']}px phone screen")
        if p.stem == "01_ddim":
            page.evaluate("() => { const m = document.querySelectorAll('.MathJax_Display')[1]; if (m) m.scrollIntoView({block: 'center'}); }")
            page.wait_for_timeout(500); page.screenshot(path=str(SHOTS / "01_ddim_phone.png"))
    (SHOTS / "layout.json").write_text(json.dumps(report, indent=1))
    assert len(links) > len(nbs)
    for h in sorted(links):
        r = page.request.get(h)
        if r.status != 200: problems.append(f"broken internal link {h}: HTTP {r.status}")
    page.close()
    assert not problems, "\n".join(problems)
    assert not outside, f"the site fetched from outside (no CDN allowed): {sorted(set(outside))[:5]}"
    assert (SHOTS / "index.png").stat().st_size > 10000 and (SHOTS / "01_ddim.png").stat().st_size > 10000


def test_search_works_offline(site, browser):
    out, base = site
    assert (out / "search" / "search_index.json").exists()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []
    page.route("**/*", lambda r: (outside.append(r.request.url), r.abort()) if urlparse(r.request.url).hostname != "127.0.0.1"
               else r.continue_())
    page.goto(urljoin(base, "index.html"), wait_until="load")
    page.click("label.md-search__icon, .md-search__input", timeout=10000)
    page.fill("input.md-search__input", "Anderson")
    page.wait_for_selector(".md-search-result__item", timeout=30000)
    hits = page.evaluate("() => Array.from(document.querySelectorAll('.md-search-result__item a')).map(a => a.getAttribute('href'))")
    page.close()
    assert hits and any("03_solvers.html" in h for h in hits), hits
    assert not outside, sorted(set(outside))[:5]


def test_print_page_holds_the_whole_course_unfolded(site):
    out, _ = site
    soup = BeautifulSoup((out / hooks.PRINT_PAGE).read_text(), "html.parser")
    sections = [s["id"] for s in soup.select("section.deq-print-page")]
    assert sections == [f"{p.stem}--page" for _, g in bs.sections() for p in g]
    folds = soup.select("details.deq-fold")
    assert folds and all(d.has_attr("open") for d in folds)
    assert len(soup.select('script[src*="MathJax.js"]')) == 1
    ids = [e["id"] for e in soup.select("article [id]")]
    assert len(ids) == len(set(ids))                          # headings of different pages do not collide
    assert 'href="print.html"' in (out / "index.html").read_text()   # every page links to it (footer)
    css = (ROOT / "site" / "site.css").read_text()
    assert "@media print" in css and ".md-sidebar" in css.split("@media print")[1]
