"""The static site: scripts/build_site.py builds it from the executed notebooks, and headless Chromium reads every page
at 1280x900 and again at 390x844, as a student on a laptop and on a phone would. Per page and width it counts and checks:
raw callout markup, stderr boxes, equation numbers out of view, links to other pages or anchors (at least 3 on a
lesson page, every one working), "Eq. (N)" that links nowhere, figure text below 9 CSS px at 1280 (SVG <text> measured
in the browser: font size times the element's screen scale; a raster figure counts as a failure unless its cell is
tagged `raster-no-text` or the image says data-text="none": pictures of samples without any text), tables that hide
columns without a scroll cue, build and test flags in visible code, the in-page table of contents at 1280, the page
width on a phone. The counts go to _site_screenshots/site_report.json (with a few screenshots for review); a test fails
with the counts of what is wrong. Also: the reading order (navigation, Quarto's sidebar and the course guide agree, and
a lesson only uses modules taught before it), the API reference, search offline with readable snippets, print.html,
downloads, and the kernel-free explorers moved in the browser."""
import functools
import http.server
import importlib
import importlib.util
import inspect
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "_site_screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


bs = _load("build_site", ROOT / "scripts" / "build_site.py")
hooks = _load("site_hooks", ROOT / "site" / "hooks.py")


def _lesson(p: Path) -> bool:
    return p.name[:2].isdigit() and int(p.name[:2]) < 90


# --- reading order ------------------------------------------------------------------------------------------------------

def test_sidebar_matches_notebooks_on_disk():
    text = (ROOT / "nbs" / "sidebar.yml").read_text()
    assert text == bs.sidebar_yaml(), "nbs/sidebar.yml is out of date: run python scripts/build_site.py --write-sidebar"
    listed = re.findall(r"- (\S+\.ipynb)", text)
    on_disk = [p.name for p in bs.notebooks()]
    assert sorted(listed) == sorted(on_disk) and len(set(listed)) == len(listed)


def test_sections_group_by_prefix_and_skip_missing(tmp_path):
    for n in ("index", "00_a", "01_b", "04_c", "06_m", "08_inv", "10_w", "course_guide", "12_new", "91_files", "90_checks",
              "_scratch"):
        (tmp_path / f"{n}.ipynb").write_text("{}")
    got = {s: [p.name for p in g] for s, g in bs.sections(tmp_path)}
    assert got == {"Foundations": ["index.ipynb", "00_a.ipynb", "01_b.ipynb"], "DEQ sampling": ["04_c.ipynb"],
                   "A trained network": ["06_m.ipynb"], "Inversion": ["08_inv.ipynb"],
                   "Scale and practice": ["10_w.ipynb"], "Teaching": ["course_guide.ipynb"],
                   "Appendix": ["90_checks.ipynb", "91_files.ipynb"], "More": ["12_new.ipynb"]}
    assert "_scratch" not in bs.sidebar_yaml(tmp_path)


def _sidebar_order(text):
    return re.findall(r"- (\S+\.ipynb)", text)


def _nav_order(nav):
    out = []
    for item in nav:
        for v in item.values(): out += _nav_order(v) if isinstance(v, list) else [v]
    return out


def _guide_lessons() -> list[str]:
    "The lessons of the course guide's lecture table (read, then live, lecture by lecture), from its stored output."
    nb = json.loads((ROOT / "nbs" / "course_guide.ipynb").read_text())
    text = "\n".join("".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"] for o in c.get("outputs", []))
    rows = [l for l in text.splitlines() if re.match(r"\|\s*\d\.\s", l)]
    assert len(rows) == 4, rows
    names = [n for r in rows for cell in r.strip("|").split("|")[2:4] for n in re.findall(r"\[(\w+)\]\(\1\.ipynb\)", cell)]
    return [n for n in names if n[:2].isdigit() and int(n[:2]) < 90]


def test_navigation_sidebar_and_course_guide_in_the_same_order(tmp_path):
    cfg = bs.stage(tmp_path / "src", api=[])
    nav = _nav_order(cfg["nav"])
    notebooks = [p for p in nav if p.endswith(".ipynb")]
    assert notebooks == _sidebar_order((ROOT / "nbs" / "sidebar.yml").read_text()) == [p.name for p in bs.reading_order()]
    assert nav[-1] == bs.API_PAGE                                   # the API reference closes the appendix
    assert [list(s)[0] for s in cfg["nav"]] == [name for name, _ in bs.sections()] + (
        [] if any(n == bs.APPENDIX for n, _ in bs.sections()) else [bs.APPENDIX])
    appendix = [p.name for p in bs.notebooks() if bs.is_appendix(p)]
    assert notebooks[-len(appendix):] == appendix                   # the appendix is read last
    lessons = [Path(p).stem for p in notebooks if _lesson(Path(p))]
    assert lessons == sorted(lessons), "lessons are read in the order of their numbers"
    guide = _guide_lessons()
    assert guide == [s for s in lessons if s in guide], f"the course guide's lectures {guide} jump in the reading order"
    assert set(guide) == set(lessons), f"lessons in no lecture: {sorted(set(lessons) - set(guide))}"


def test_a_lesson_only_uses_modules_taught_before_it():
    "A lesson's module imports only modules of earlier lessons or of the appendix (the ground floor)."
    order = bs.reading_order()
    taught = {}
    for i, p in enumerate(order):
        m = bs.module_of(json.loads(p.read_text()))
        if m: taught[m] = (i, p)
    late = []
    for m, (i, p) in taught.items():
        if bs.is_appendix(p): continue
        src = (ROOT / "deq_ddim_nb" / f"{m}.py").read_text()
        for dep in set(re.findall(r"^\s*from\s+\.(\w+)\s+import|^\s*from\s+deq_ddim_nb\.(\w+)\s+import", src, re.M)):
            dep = dep[0] or dep[1]
            j, q = taught.get(dep, (None, None))
            if q is not None and not bs.is_appendix(q) and j > i: late.append(f"{p.stem} uses {dep} ({q.stem}, later)")
    assert not late, late


def test_quarto_config_is_valid_for_nbdev_docs():
    import yaml
    q = yaml.safe_load((ROOT / "nbs" / "_quarto.yml").read_text())
    assert q["project"]["type"] == "website" and set(q["metadata-files"]) >= {"nbdev.yml", "sidebar.yml"}
    assert q["format"]["html"]["toc"] is True and q["format"]["html"]["css"] == "styles.css"
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())
    listed = [n for sec in side["website"]["sidebar"]["contents"] for n in sec["contents"]]
    assert listed == [p.name for p in bs.reading_order()]
    assert yaml.safe_load((ROOT / "nbs" / "nbdev.yml").read_text())["website"]["title"]
    assert (ROOT / "nbs" / "styles.css").exists()


# --- the build script and the hooks, without a browser ------------------------------------------------------------------

def test_adapt_hides_folds_relinks_and_replaces_widgets():
    nb = {"metadata": {"widgets": {}}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "see [DDIM](01_ddim.ipynb#eq) and [x](https://a.b/c.ipynb)"},
        {"cell_type": "markdown", "metadata": {}, "source": "::: {.callout-warning title=\"Erratum\"}\nBody\n:::"},
        {"cell_type": "code", "metadata": {}, "source": "#| default_exp widgets", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "#| hide\nassert 1", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "#| code-fold: true\n#| code-summary: \"Code: the plot\"\nx = 1", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "#| code-fold: show\ny = 2", "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "#| export\ndef f(): pass", "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {bs.WIDGET: {}, "text/plain": "VBox()"}},
            {"output_type": "display_data", "metadata": {}, "data": {bs.WIDGET: {}, "text/plain": "HBox(children=(FloatProgress(value=0.0),))"}}]},
        {"cell_type": "code", "metadata": {}, "source": "#| export\n" + "\n".join(f"x{i} = {i}" for i in range(40)), "outputs": []}]}
    folds = []
    out = bs.adapt(nb, "10_widgets", folds)
    assert [c["source"][:12] for c in out["cells"]] == ["see [DDIM](0", "\n<div class=", "x = 1", "y = 2", "def f(): pas",
                                                        "x0 = 0\nx1 = "]
    assert ":::" not in out["cells"][1]["source"] and 'class="admonition warning' in out["cells"][1]["source"]
    out["cells"].pop(1)
    assert out["cells"][0]["source"] == "see [DDIM](01_ddim.html#eq) and [x](https://a.b/c.ipynb)"
    assert [c["metadata"].get("tags") for c in out["cells"][1:]] == [["code-fold"], ["code-fold-show"], [], []]
    assert folds == ["Code: the plot", None]                     # one summary per fold, in order
    outs = out["cells"][3]["outputs"]
    assert len(outs) == 1 and "Live explorer" in outs[0]["data"]["text/html"]   # the progress bar is dropped
    assert 'href="10_widgets.ipynb"' in outs[0]["data"]["text/html"]
    assert "widgets" not in out["metadata"]


@pytest.mark.parametrize("md,kind,title", [
    ('::: {.callout-warning title="Erratum: `range` σ"}\nThe code has $T \\ne N$.\n:::', "warning", "Erratum: <code>range</code> σ"),
    ("::: {.callout-note}\n## A heading title\nBody *text*.\n:::", "note", "A heading title"),
    ("::: {.callout-important}\nUnclosed body", "danger", "Important"),
    ("::: {.callout-tip collapse=\"true\" title='Hint'}\nBody\n:::", "tip", "Hint"),
])
def test_callouts_become_boxes_with_markdown_inside(md, kind, title):
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    html = markdown2html_mistune(bs.callouts("Before.\n\n" + md + "\n\nAfter."))
    soup = BeautifulSoup(html, "html.parser")
    box = soup.select_one(f".admonition.{kind}")
    assert box is not None and ":::" not in soup.get_text(), html
    head = box.select_one(".admonition-title, summary")
    assert head.decode_contents() == title
    if md.rstrip().endswith(":::"): assert "After." not in box.get_text() and "After." in soup.get_text()
    else: assert "After." in box.get_text()                                # unclosed: the box ends with its cell
    body = box.get_text()
    assert "Body" in body or "code has" in body or "Unclosed" in body
    if "*text*" in md: assert box.find("em").get_text() == "text"          # markdown still works inside
    if "collapse" in md: assert box.name == "details" and not box.has_attr("open")


CELL = """<div class="jp-Cell jp-CodeCell jp-Notebook-cell {tag}"><div class="jp-Cell jp-CodeCell {tag}"><div class="jp-Cell-inputWrapper"><div class="jp-InputArea">
<div class="jp-InputPrompt">In [ ]:</div><div class="celltoolbar"><span class="cell-tag">code-fold</span></div>
<div class="highlight-ipynb"><pre><span class="c1">{code}</span></pre></div></div></div>
<div class="jp-Cell-outputWrapper"><div class="jp-OutputArea"><div class="jp-OutputPrompt">Out[ ]:</div>
<div class="jp-OutputArea-output"><pre>{out}</pre></div></div></div></div></div>"""


def test_hooks_fold_solutions_with_outputs_and_other_code_alone():
    html = "".join([CELL.format(tag="celltag_code-fold", code="# Solution\nx = 1", out="answer 42"),
                    CELL.format(tag="celltag_code-fold", code="# Check\nassert x", out=""),
                    CELL.format(tag="celltag_code-fold", code="fig, ax = plt.subplots()\nax.plot(x)", out="FIGURE-OUT"),
                    CELL.format(tag="celltag_code-fold-show", code="def make_handout(a):\n    pass", out=""),
                    CELL.format(tag="celltag_code-fold", code="z = 3", out=""),
                    CELL.format(tag="", code="y = 2", out="open output")])
    soup = BeautifulSoup(hooks.fold_cells(html, [None, None, None, None, "Code: my summary"]), "html.parser")
    assert not soup.select(".jp-InputPrompt, .jp-OutputPrompt, .celltoolbar") and "In [" not in soup.get_text()
    cells = soup.select("div.jp-Cell.jp-Notebook-cell")
    summaries = [[s.get_text() for s in c.select("summary")] for c in cells]
    assert summaries == [["Solution"], ["Check"], ["Code: the figure"], ["Code: make_handout"], ["Code: my summary"], []]
    sol = cells[0].details
    assert "answer 42" in sol.get_text() and not sol.has_attr("open")          # the answer's output is folded with it
    fig = cells[2]
    assert "FIGURE-OUT" not in fig.details.get_text() and "FIGURE-OUT" in fig.get_text()   # a figure stays in view
    assert cells[3].details.has_attr("open")                                   # code-fold: show
    assert "open output" in cells[5].get_text() and not cells[5].select("details")
    assert hooks.fold_cells(hooks.fold_cells(html)).count("<details") == 5       # idempotent


DEQ = {"pages": [
    {"stem": "01_ddim", "title": "DDIM", "module": "ddim", "aliases": ["ddim"], "equations": ["7", "10", "20"]},
    {"stem": "04_fixed_point", "title": "Fixed point", "module": "deq", "aliases": ["fixed-point", "fixed point"],
     "equations": ["11", "20"]},
    {"stem": "90_checks", "title": "Appendix: input checks", "module": "checks", "aliases": ["input checks"], "equations": ["10"]}],
    "api": {"deq_sample": ["deq.deq_sample"], "ddim_step": ["ddim.ddim_step"], "DDIMSchedule": ["schedules.DDIMSchedule"],
            "DDIMSchedule.make": ["schedules.DDIMSchedule.make"], "png_bytes": ["files.png_bytes", "widgets.png_bytes"]},
    "api_page": "api.html"}


def _linked(html, stem="04_fixed_point"):
    soup = BeautifulSoup(f'<div class="jp-RenderedMarkdown">{html}</div>', "html.parser")
    linker = hooks.Linker(DEQ, stem)
    hooks.anchor_equations(soup, soup)
    hooks.link_references(soup, soup, linker)
    return soup, linker


def test_equations_get_anchors_and_references_link_to_them():
    soup, linker = _linked("<p>$$x = y \\tag{11}$$</p><p>By Eq. (11) and Eqs. (7), (10) and (99), see $a$ and Eq. 20; "
                           "in math $\\text{Eq. (7)}$.</p><pre>Eq. (7)</pre>")
    eq = soup.select_one("p.deq-eq")
    assert eq["id"] == "eq-11" and eq.select_one(".deq-eqno").get_text() == "(11)" and "\\tag{11}" in eq.get_text()
    hrefs = [(a.get_text(), a["href"]) for a in soup.select("a.deq-eqref")]
    assert hrefs == [("Eq. (11)", "#eq-11"), ("Eqs. (7)", "01_ddim.html#eq-7"), ("(10)", "01_ddim.html#eq-10"),
                     ("Eq. 20", "#eq-20")]                          # this page's own (20) first, (99) nowhere
    assert linker.unresolved == ["99"]
    assert "$\\text{Eq. (7)}$" in soup.get_text() and not soup.pre.find("a")   # math and code are left alone
    soup3, _ = _linked("<p>Eq. (20) and Eq. (10).</p>", stem="90_checks")   # defined on two pages: the first in reading order
    assert [a["href"] for a in soup3.find_all("a")] == ["01_ddim.html#eq-20", "#eq-10"]
    soup2, _ = _linked("<p>$$a \\tag{11}$$ and again $$b \\tag{11}$$</p>")
    assert [s["id"] for s in soup2.select(".deq-eq")] == ["eq-11", "eq-11-2"]


def test_lessons_appendices_and_public_names_link():
    soup, _ = _linked("<p>See notebook 01 and notebooks 01 and 90, <code>01_ddim.ipynb</code>, 01_ddim, the DDIM notebook, "
                      "the fixed-point notebook (this page), the solution notebook, appendix <em>Input checks</em>, "
                      "<code>deq_sample(x)</code>, <code>DDIMSchedule.make</code>, <code>deq_ddim_nb.ddim.ddim_step</code>, "
                      "<code>png_bytes</code>, <code>x_T</code>.</p>")
    links = [(a.get_text(), a["href"]) for a in soup.find_all("a")]
    assert links == [("notebook 01", "01_ddim.html"), ("notebooks 01", "01_ddim.html"), ("90", "90_checks.html"),
                     ("01_ddim.ipynb", "01_ddim.html"), ("01_ddim", "01_ddim.html"), ("the DDIM notebook", "01_ddim.html"),
                     ("Input checks", "90_checks.html"), ("deq_sample(x)", "api.html#deq.deq_sample"),
                     ("DDIMSchedule.make", "api.html#schedules.DDIMSchedule.make"),
                     ("deq_ddim_nb.ddim.ddim_step", "api.html#ddim.ddim_step"), ("png_bytes", "api.html#files.png_bytes")]


def test_figures_become_inline_svg_with_unique_ids():
    import base64
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg width="10pt" viewBox="0 0 10 10"><style>*{stroke-linejoin: round}</style>'
           '<defs><clipPath id="p1"><rect/></clipPath></defs><g id="axes_1" clip-path="url(#p1)"><text>label</text>'
           '<use xlink:href="#p1"/></g></svg>')
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    html = f'<div class="jp-RenderedSVG"><img src="{uri}"></div>' * 2
    soup = BeautifulSoup(html, "html.parser")
    assert hooks.inline_svgs(soup, "00_x") == 2
    out = hooks.fill_svg_slots(str(soup), "00_x")
    assert out.count("<svg") == 2 and "<?xml" not in out and "<img" not in out
    assert 'id="00_x-fig1-p1"' in out and 'url(#00_x-fig2-p1)' in out and 'xlink:href="#00_x-fig1-p1"' in out
    assert 'svg[data-figure="00_x-fig1-"] *{' in out                # matplotlib's global CSS stays in its figure


def test_search_text_has_no_raw_tex():
    t = hooks.tex_to_text("the noise $\\mathbf{x}_T$, $\\bar\\alpha_t$ and $$\\sigma_t(\\eta) = \\sqrt{\\frac{a}{b}} \\tag{20}$$")
    assert "\\" not in t and "$" not in t
    assert "x_T" in t and "ᾱ_t" in t and "σ_t(η)" in t and "(20)" in t


def test_search_index_is_rewritten(tmp_path):
    f = tmp_path / "search_index.json"
    f.write_text(json.dumps({"config": {"lang": ["en"]}, "docs": [
        {"location": "a.html", "title": "On $\\bar\\alpha_t$", "text": "<p>the step $$x_{t-1} = \\sqrt{a} \\tag{7}$$</p>"}]}))
    assert hooks.clean_search_index(f) == 2
    doc = json.loads(f.read_text())["docs"][0]
    assert doc["title"] == "On ᾱ_t" and "\\" not in doc["text"] and "(7)" in doc["text"]
    assert json.loads(f.read_text())["config"] == {"lang": ["en"]}


def _public(mod):
    names = getattr(mod, "__all__", [n for n in vars(mod) if not n.startswith("_")])
    return [n for n in names if (inspect.isfunction(getattr(mod, n, None)) or inspect.isclass(getattr(mod, n, None)))
            and getattr(getattr(mod, n), "__module__", None) == mod.__name__]


def test_api_reference_lists_every_public_function_with_its_signature():
    import pkgutil
    import deq_ddim_nb
    api = bs.public_api()
    by = {e["anchor"]: e for e in api}
    missing = []
    for m in pkgutil.iter_modules(deq_ddim_nb.__path__):
        if m.name.startswith("_"): continue
        mod = importlib.import_module(f"deq_ddim_nb.{m.name}")
        for n in _public(mod):
            e = by.get(f"{m.name}.{n}")
            if e is None: missing.append(f"{m.name}.{n}"); continue
            try: params = [p for p in inspect.signature(getattr(mod, n)).parameters if p not in ("self", "cls")]
            except ValueError: params = []                                      # e.g. an exception class
            if not all(re.search(rf"\b{re.escape(p)}\b", e["signature"]) for p in params): missing.append(f"{m.name}.{n} (signature)")
        for n in _public(mod):                                                  # public methods of classes
            cls = getattr(mod, n)
            if not inspect.isclass(cls): continue
            for meth, f in vars(cls).items():
                if not meth.startswith("_") and inspect.isfunction(getattr(f, "__func__", f)) and f"{m.name}.{n}.{meth}" not in by:
                    missing.append(f"{m.name}.{n}.{meth}")
    assert not missing, missing
    md = bs.api_markdown(bs.page_info(), api)
    assert all(f"{{#{e['anchor']} " in md for e in api)


# --- the built site in a browser ------------------------------------------------------------------------------------------

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


def _offline(page, outside):
    page.route("**/*", lambda r: (outside.append(r.request.url), r.abort()) if urlparse(r.request.url).hostname != "127.0.0.1"
               else r.continue_())


def _typeset(page):
    page.wait_for_function("() => !document.querySelector('script[src*=\"MathJax.js\"]') || (window.MathJax && MathJax.isReady)",
                           timeout=120000)
    page.evaluate("() => window.MathJax && MathJax.Hub ? new Promise(r => MathJax.Hub.Queue(() => r(true))) : true")


# What a reader meets, measured in the page. `vis`: rendered and not hidden (folds closed count as hidden).
PROBE = r"""() => {
  const art = document.querySelector('article.md-content__inner') || document.body;
  const vis = el => el.checkVisibility({visibilityProperty: true, opacityProperty: true});
  const W = innerWidth, out = {};
  const text = art.innerText;
  out.rawCallouts = (text.match(/:::\s*\{\.callout|^\s*:::\s*$/gm) || []).length;
  out.stderr = Array.from(art.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')).filter(vis).length;
  // equation numbers: MathJax's tag inside its box and on screen, or the number shown above the equation
  const tags = Array.from(art.querySelectorAll('[id^="mjx-eqn-"]'));
  const onScreen = el => { const r = el.getBoundingClientRect(); return vis(el) && r.width > 0 && r.left >= -1 && r.right <= W + 1; };
  const inBox = el => { const b = el.closest('.MathJax_Display'); if (!b) return true;
    const r = el.getBoundingClientRect(), br = b.getBoundingClientRect(); return r.left >= br.left - 1 && r.right <= br.right + 1; };
  out.equationNumbers = tags.length;
  out.equationNumbersHidden = tags.filter(t => !(onScreen(t) && inBox(t))).filter(t => {
    const lab = t.closest('.deq-eq') && t.closest('.deq-eq').querySelector('.deq-eqno'); return !(lab && onScreen(lab)); })
    .map(t => t.id.replace('mjx-eqn-', ''));
  const eqs = Array.from(art.querySelectorAll('.MathJax_Display'));
  out.displayEquations = eqs.length;
  out.equationsWiderThanTheirBox = eqs.filter(e => e.scrollWidth > e.clientWidth + 1).length;
  // links to other pages or anchors (not heading permalinks, not the download link)
  const links = Array.from(art.querySelectorAll('a[href]')).filter(a => !a.matches('.headerlink, .anchor-link') && !a.closest('.deq-download'))
    .map(a => new URL(a.getAttribute('href'), location.href)).filter(u => u.origin === location.origin && (u.pathname.endsWith('.html') || u.hash));
  out.links = links.map(u => u.pathname.split('/').pop() + u.hash);
  // "Eq. (N)" in prose that is not a link
  const walker = document.createTreeWalker(art, NodeFilter.SHOW_TEXT), unlinked = [];
  while (walker.nextNode()) { const n = walker.currentNode, p = n.parentElement;
    if (p.closest('a, pre, code, script, style, svg, .clipboard-copy-txt, .MathJax, .MathJax_Display, .MathJax_Preview')) continue;
    for (const m of n.textContent.matchAll(/\bEqs?\.\s*\(?\d+[a-z]?\)?/g)) unlinked.push(m[0]); }
  out.equationReferencesUnlinked = unlinked;
  // figures: SVG text in CSS px (font size times the element's scale on screen), raster figures of unknown text size
  const px = [];
  for (const t of art.querySelectorAll('.jp-OutputArea-output svg text')) {
    if (!t.textContent.trim() || !vis(t)) continue;
    const m = t.getScreenCTM(); if (!m) continue;
    px.push([parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b), t.textContent.trim().slice(0, 24)]); }
  out.figureTexts = px.length; out.figureTextMinPx = px.length ? Math.min(...px.map(p => p[0])) : null;
  out.figureTextBelow9px = px.filter(p => p[0] < 9).map(p => `${p[0].toFixed(1)}px ${p[1]}`);
  out.rasterFigures = Array.from(art.querySelectorAll('.jp-OutputArea-output img')).filter(vis)
    .filter(i => !i.src.startsWith('data:image/svg') && i.dataset.text !== 'none' && !i.closest('.celltag_raster-no-text'))
    .map(i => i.src.slice(0, 30));
  out.figuresNotFitting = Array.from(art.querySelectorAll('.jp-OutputArea-output svg.deq-svg, .jp-OutputArea-output img')).filter(vis)
    .filter(f => f.getBoundingClientRect().right > W + 1).length;
  out.zoomableFigures = art.querySelectorAll('.deq-zoomable').length;
  // tables: every column on screen, or a visible cue that the table scrolls
  out.tables = 0; out.tablesHidingColumns = [];
  for (const t of art.querySelectorAll('table')) { if (!vis(t) || t.closest('.highlighttable')) continue; out.tables++;
    const box = t.closest('.deq-table-scroll') || t.parentElement, br = box.getBoundingClientRect();
    const cells = Array.from((t.rows[0] || {cells: []}).cells);
    const shown = cells.filter(c => { const r = c.getBoundingClientRect(); return r.right <= Math.min(br.right, W) + 1 && r.left >= Math.max(br.left, 0) - 1; }).length;
    const cue = t.closest('.deq-table') && t.closest('.deq-table').querySelector('.deq-scroll-cue');
    out.tablesHidingColumns.push({shown, columns: cells.length, cue: !!(cue && vis(cue))}); }
  out.flags = (Array.from(art.querySelectorAll('pre, code')).filter(vis).map(e => e.textContent).join('\n')
    .match(/\b(IN_TEST|RUN_SLOW|nbdev-test|nbdev_test)\b/g) || []);
  out.tocLinks = Array.from(document.querySelectorAll('nav.md-nav--secondary a')).filter(a => vis(a) && a.getBoundingClientRect().width > 0).length;
  out.tocTargets = Array.from(document.querySelectorAll('nav.md-nav--secondary a')).map(a => a.getAttribute('href'));
  out.headings = art.querySelectorAll('h2[id], h3[id]').length;
  out.prompts = document.querySelectorAll('.jp-InputPrompt, .jp-OutputPrompt').length + (/(In|Out)\s*\[[\s0-9]*\]:/.test(text) ? 1 : 0);
  out.prev = !!document.querySelector('a.md-footer__link--prev'); out.next = !!document.querySelector('a.md-footer__link--next');
  const sols = Array.from(art.querySelectorAll('details.deq-fold-solution'));
  out.solutionOutputsShown = sols.filter(d => Array.from(d.querySelectorAll('.jp-OutputArea-output')).some(vis)).length;
  out.download = !!art.querySelector('.deq-download a[download]');
  out.pageWidth = document.scrollingElement.scrollWidth; out.viewport = W; out.title = document.title;
  return out;
}"""


def _ids(out: Path) -> dict:
    "page file name -> the ids in it (static HTML), for checking where links land."
    ids = {}
    for f in out.glob("*.html"):
        ids[f.name] = set(re.findall(r'\bid="([^"]+)"', f.read_text(encoding="utf-8")))
    return ids


def _weight(out: Path, stem: str) -> dict:
    "Bytes a reader downloads for a page: its HTML, the CSS inlined in it, and the stylesheets and scripts it links."
    html = (out / f"{stem}.html").read_text(encoding="utf-8")
    inline = sum(len(m) for m in re.findall(r"<style[^>]*>(.*?)</style>", html, re.S))
    linked = [h for h in re.findall(r'<(?:link[^>]+href|script[^>]+src)="([^"]+)"', html)
              if re.search(r"\.(css|js)(\?|$)", h) and "mathjax" not in h.lower()]
    files = sum((out / h.split("?")[0]).stat().st_size for h in set(linked) if (out / h.split("?")[0]).exists())
    return {"html": len(html.encode()), "inline_css": inline, "linked_css_js": files}


def test_every_page_at_1280_and_390(site, browser):
    out, base = site
    order = [p.stem for p in bs.reading_order()] + ["api"]
    assert all((out / f"{s}.html").exists() for s in order), "a page is missing"
    ids = _ids(out)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []; _offline(page, outside)
    report, problems, links = {}, [], set()
    SHOTS.mkdir(exist_ok=True)
    for i, stem in enumerate(order):
        nb_path = ROOT / "nbs" / f"{stem}.ipynb"
        page.set_viewport_size({"width": 1280, "height": 900})
        resp = page.goto(urljoin(base, f"{stem}.html"), wait_until="load")
        assert resp.status == 200, stem
        _typeset(page)
        errs = page.evaluate("() => document.querySelectorAll('.MathJax_Error, merror').length")
        if errs: problems.append(f"{stem}: {errs} MathJax errors")
        wide = page.evaluate(PROBE)
        if stem == "index": page.screenshot(path=str(SHOTS / "index.png"))
        if stem == "01_ddim":
            page.evaluate("() => { const m = document.querySelector('.MathJax_Display'); if (m) m.scrollIntoView({block: 'center'}); }")
            page.wait_for_timeout(500); page.screenshot(path=str(SHOTS / "01_ddim.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(250)                                  # site.js re-measures tables and figures on resize
        phone = page.evaluate(PROBE)
        if stem == "01_ddim":
            page.evaluate("() => { const m = document.querySelectorAll('.deq-eq')[1]; if (m) m.scrollIntoView({block: 'center'}); }")
            page.wait_for_timeout(400); page.screenshot(path=str(SHOTS / "01_ddim_phone.png"))
        report[stem] = {"1280": wide, "390": phone}
        is_nb, lesson = nb_path.exists(), nb_path.exists() and _lesson(nb_path)
        title = hooks.HOME_TITLE if stem == "index" else bs.title_of(json.loads(nb_path.read_text()), stem) if is_nb else bs.API_TITLE
        if title not in wide["title"] or re.fullmatch(r"(.+) - \1", wide["title"]): problems.append(f"{stem}: browser tab {wide['title']!r}")
        for w, r in (("1280", wide), ("390", phone)):
            where = f"{stem} at {w}"
            if r["rawCallouts"]: problems.append(f"{where}: {r['rawCallouts']} raw callout lines (::: …)")
            if r["stderr"]: problems.append(f"{where}: {r['stderr']} stderr boxes")
            if r["equationNumbersHidden"]: problems.append(f"{where}: equation numbers out of view: {r['equationNumbersHidden']}")
            if r["equationReferencesUnlinked"]: problems.append(f"{where}: 'Eq.' references without a link: {r['equationReferencesUnlinked'][:5]}")
            if r["flags"]: problems.append(f"{where}: build or test flags in visible code: {sorted(set(r['flags']))}")
            if r["prompts"]: problems.append(f"{where}: execution prompts in the page")
            if r["solutionOutputsShown"]: problems.append(f"{where}: {r['solutionOutputsShown']} solution outputs shown unfolded")
            hiding = [t for t in r["tablesHidingColumns"] if t["shown"] < t["columns"] and (w == "1280" or not t["cue"])]
            if hiding: problems.append(f"{where}: tables hiding columns {[(t['shown'], t['columns']) for t in hiding]}")
        if wide["equationsWiderThanTheirBox"]: problems.append(f"{stem}: {wide['equationsWiderThanTheirBox']} display equations clipped at 1280")
        if wide["figureTextBelow9px"]: problems.append(f"{stem}: figure text below 9 px at 1280: {wide['figureTextBelow9px'][:4]}")
        if wide["rasterFigures"]: problems.append(f"{stem}: {len(wide['rasterFigures'])} raster figures (text size unknown: use SVG)")
        if wide["figuresNotFitting"]: problems.append(f"{stem}: {wide['figuresNotFitting']} figures wider than the page at 1280")
        if phone["pageWidth"] > phone["viewport"]: problems.append(f"{stem}: {phone['pageWidth']}px wide on a 390px phone")
        if phone["figuresNotFitting"]: problems.append(f"{stem}: {phone['figuresNotFitting']} figures wider than a phone")
        if wide["headings"] >= 2 and wide["tocLinks"] == 0: problems.append(f"{stem}: no table of contents at 1280")
        lost = [h for h in wide["tocTargets"] if h.startswith("#") and h[1:] not in ids[f"{stem}.html"]]
        if lost: problems.append(f"{stem}: table-of-contents links to nowhere: {lost}")
        weight = _weight(out, stem)
        report[stem]["weight"] = weight
        if weight["inline_css"] > 20000: problems.append(f"{stem}: {weight['inline_css']} bytes of CSS inlined in the page")
        if wide["prev"] != (i > 0) or wide["next"] != (i < len(order) - 1): problems.append(f"{stem}: previous/next links")
        if is_nb and not wide["download"]: problems.append(f"{stem}: no download link")
        working = 0
        for target in wide["links"]:
            name, _, frag = target.partition("#")
            name = name or f"{stem}.html"
            if name not in ids: problems.append(f"{stem}: link to a missing page {target}"); continue
            if frag and frag not in ids[name]: problems.append(f"{stem}: link to a missing anchor {target}"); continue
            working += 1; links.add(name)
        if lesson and working < 3: problems.append(f"{stem}: {working} working links to other pages or anchors (at least 3)")
    for name in sorted(links):
        r = page.request.get(urljoin(base, name))
        if r.status != 200: problems.append(f"broken link {name}: HTTP {r.status}")
    page.close()
    counts = {w: {k: sum(len(v[w][k]) if isinstance(v[w][k], list) else int(v[w][k] or 0) for v in report.values())
                  for k in ("rawCallouts", "stderr", "equationNumbersHidden", "equationReferencesUnlinked", "flags",
                            "rasterFigures", "figureTextBelow9px", "equationsWiderThanTheirBox")} for w in ("1280", "390")}
    counts["1280"]["tablesHidingColumns"] = sum(t["shown"] < t["columns"] for v in report.values() for t in v["1280"]["tablesHidingColumns"])
    counts["390"]["tablesHidingColumnsWithoutCue"] = sum(t["shown"] < t["columns"] and not t["cue"] for v in report.values()
                                                       for t in v["390"]["tablesHidingColumns"])
    counts["links"] = {s: len(v["1280"]["links"]) for s, v in report.items()}
    (SHOTS / "site_report.json").write_text(json.dumps({"counts": counts, "pages": report}, indent=1))
    print("site report:", json.dumps(counts))
    assert not outside, f"the site fetched from outside (no CDN allowed): {sorted(set(outside))[:5]}"
    assert not problems, f"{len(problems)} problems (counts: {json.dumps(counts)}):\n" + "\n".join(problems)


def test_search_works_offline_with_readable_snippets(site, browser):
    out, base = site
    assert (out / "search" / "search_index.json").exists()
    index = json.loads((out / "search" / "search_index.json").read_text())
    raw = [d["location"] for d in index["docs"] if re.search(r"\$\$|\\(mathbf|frac|bar|tag|sqrt|alpha|epsilon|sigma|eta)\b", d["text"] + d["title"])]
    assert not raw, f"raw TeX in the search index: {raw[:5]}"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []; _offline(page, outside)
    page.goto(urljoin(base, "index.html"), wait_until="load")
    page.click("label.md-search__icon, .md-search__input", timeout=10000)
    for _ in range(18):              # the index is built in a worker, offline; a query typed before it is ready is lost
        page.fill("input.md-search__input", "")
        page.type("input.md-search__input", "subsequence")
        try:
            page.wait_for_selector(".md-search-result__item", timeout=5000); break
        except Exception:
            continue
    hits = page.evaluate("() => Array.from(document.querySelectorAll('.md-search-result__item')).map(e => [e.querySelector('a').getAttribute('href'), e.innerText])")
    page.close()
    assert hits and any("00_schedules.html" in h for h, _ in hits), hits
    assert not any(re.search(r"\$|\\[a-z]+\{", t) for _, t in hits), [t[:120] for _, t in hits]
    assert not outside, sorted(set(outside))[:5]


def test_print_page_holds_the_whole_course_and_typesets_fast(site, browser):
    out, base = site
    html = (out / hooks.PRINT_PAGE).read_text()
    soup = BeautifulSoup(html, "html.parser")
    assert [s["id"] for s in soup.select("section.deq-print-page")] == [f"{p.stem}--page" for p in bs.reading_order()]
    folds = soup.select("details.deq-fold")
    assert folds and all(d.has_attr("open") for d in folds)
    assert len(soup.select('script[src*="MathJax.js"]')) == 1 and "init_mathjax" not in html   # one typesetting pass
    ids = [e["id"] for e in soup.select("article [id]")]
    assert len(ids) == len(set(ids))                          # headings and equations of different pages do not collide
    for a in soup.select("article a.deq-eqref"):              # an equation link lands on its equation in this page
        assert a["href"].startswith("#") and a["href"][1:] in set(ids), a["href"]
    assert "content-visibility: auto" in html and "deq-typesetting" in html
    assert 'href="print.html"' in (out / "index.html").read_text()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []; _offline(page, outside)
    t0 = time.perf_counter()
    page.goto(urljoin(base, hooks.PRINT_PAGE), wait_until="load", timeout=300000)
    _typeset(page)
    seconds = time.perf_counter() - t0                         # reported, not asserted: timings belong in benchmarks
    n = page.evaluate("() => document.querySelectorAll('.MathJax_Display, .MathJax').length")
    hidden = page.evaluate("() => document.body.classList.contains('deq-typesetting')")
    page.close()
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / "print_typeset.json").write_text(json.dumps({"seconds": round(seconds, 1), "math": n, "bytes": len(html)}))
    print(f"print.html: typeset {n} formulas in {seconds:.1f} s, {len(html) / 1e6:.1f} MB")
    assert n > 100 and not hidden and not outside


def test_downloads_are_the_notebooks(site):
    out, _ = site
    for p in bs.notebooks():
        assert (out / p.name).read_bytes() == p.read_bytes(), f"{p.name}: the download is not the notebook"
        assert f'href="{p.name}"' in (out / f"{p.stem}.html").read_text()


def test_api_reference_page(site):
    out, _ = site
    soup = BeautifulSoup((out / "api.html").read_text(), "html.parser")
    for e in bs.public_api():
        h = soup.find(id=e["anchor"])
        assert h is not None, e["anchor"]
        sig = h.find_next("pre", class_="deq-signature")
        assert sig is not None and sig.get_text().startswith(e["name"]), e["anchor"]


def test_kernel_free_explorers_move_in_the_browser(site, browser):
    out, base = site
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []; _offline(page, outside)
    page.goto(urljoin(base, "10_widgets.html"), wait_until="load")
    state = """i => { const e = Array.from(document.querySelectorAll('.deq-explorer')).filter(x => x.checkVisibility())[i];
      const f = Array.from(e.querySelectorAll('div[data-frame]')).filter(x => x.checkVisibility());
      const m = Array.from(e.querySelectorAll('svg [data-frame]')).filter(x => getComputedStyle(x).display !== 'none');
      return {frames: f.length, img: f.length ? Array.from(f[0].querySelectorAll('img')).map(i => i.src.slice(-40)).join() : null,
              readout: f.length ? f[0].innerText : null, marker: m.map(x => x.getAttribute('data-frame')).join()}; }"""
    n = page.evaluate("() => Array.from(document.querySelectorAll('.deq-explorer')).filter(x => x.checkVisibility()).length")
    assert n >= 3, f"{n} kernel-free explorers on the page"
    moved = 0
    for i in range(n):
        before = page.evaluate(state, i)
        assert before["frames"] == 1, before
        slider = page.locator(".deq-explorer:visible input[type=range]").nth(i)
        key = "ArrowLeft" if slider.input_value() != "0" else "ArrowRight"
        slider.focus()
        for _ in range(2): slider.press(key)
        after = page.evaluate(state, i)
        assert after["frames"] == 1 and after["readout"] != before["readout"], (before, after)
        assert after["img"] != before["img"] or after["marker"] != before["marker"], "the figure did not change"
        moved += 1
    select = page.locator(".deq-explorer-group select")               # another solver: another explorer shows
    if select.count():
        shown = page.evaluate("() => document.querySelector('.deq-explorer-group .deq-explorer:not([style*=\"none\"])').dataset.config")
        other = [o for o in select.locator("option").evaluate_all("os => os.map(o => o.value)") if o != shown][0]
        select.select_option(other)
        assert page.evaluate("() => Array.from(document.querySelectorAll('.deq-explorer-group .deq-explorer')).filter(e => e.checkVisibility()).map(e => e.dataset.config)") == [other]
    page.screenshot(path=str(SHOTS / "explorer.png"))
    page.close()
    assert moved == n and not outside


def test_a_figure_opens_at_full_size_on_a_phone(site, browser):
    out, base = site
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(urljoin(base, "01_ddim.html"), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.deq-zoomable').length > 0", timeout=20000)
    fig = page.locator(".deq-zoomable").first
    fig.scroll_into_view_if_needed(); fig.click()
    page.wait_for_selector(".deq-lightbox", timeout=5000)
    px = page.evaluate("""() => Array.from(document.querySelectorAll('.deq-lightbox svg text')).filter(t => t.textContent.trim())
        .map(t => parseFloat(getComputedStyle(t).fontSize) * Math.hypot(t.getScreenCTM().a, t.getScreenCTM().b))""")
    page.keyboard.press("Escape")
    closed = page.evaluate("() => !document.querySelector('.deq-lightbox')")
    page.close()
    assert px and min(px) >= 9, f"text in the enlarged figure: {min(px) if px else None} px"
    assert closed
