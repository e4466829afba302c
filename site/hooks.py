"""MkDocs hooks of the tutorial site (loaded by the `hooks:` entry that scripts/build_site.py writes into the config,
together with `extra.deq`: every page's stem, title, module, aliases and equation numbers, the folds' summaries and
the public API's anchors).

on_page_content  rewrites each notebook page as nbdev's docs show it, and links it into the course:
                 - execution prompts ("In [ ]:") and the cell-tag toolbar are removed;
                 - `#| code-fold: true` cells are folded: exercise solutions and checks with their outputs (a reader
                   sees the question first), any other cell (plotting, report-generating, plumbing) code only, its
                   figure or table stays in view; `#| code-fold: show` folds open; the summary is `#| code-summary`,
                   else "Solution", "Check" or what the code defines;
                 - every display equation with `\\tag{N}` gets the anchor `eq-N` and a number that stays visible on a
                   phone; "Eq. (N)" links to the equation where it is defined (this page first, else the first page in
                   reading order); "notebook 04", `04_fixed_point`, "the fixed-point notebook" and "appendix *Input
                   checks*" link to their pages; backticked public names link to the API reference;
                 - SVG figures become inline SVG (their text is text: searchable, measurable, sharp), ids made unique;
                 - tables get a scroll box with a cue that site.js shows when columns are out of view;
                 - a download link to the notebook sits under the title; the table of contents reads as the headings;
                 - the notebook stylesheet and scripts that mkdocs-jupyter inlines in every page go to shared files.
on_post_page     links the shared files from <head>; the home page's browser tab gets its own title.
on_post_build    writes the shared files (the stylesheet cut to the rules the pages can use), puts the original
                 notebooks next to their pages (downloads), writes print.html (every page in reading order, every fold
                 open, fast to typeset) and turns TeX in the search index into readable text.
"""
from __future__ import annotations

import base64
import hashlib
import html as htmlmod
import json
import re
import shutil
import urllib.parse
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString, Tag

PRINT_PAGE = "print.html"
HOME_TITLE = "deq-ddim-nb: Deep Equilibrium Approaches to Diffusion Models, in notebooks"

_ASSETS: dict[str, str] = {}        # shared file name -> content, written on_post_build
_PAGE_ASSETS: dict[str, list] = {}  # page src_uri -> [file names] linked from its <head>


def _deq(config) -> dict:
    return (config.get("extra") or {}).get("deq") or {}


# --- folds -------------------------------------------------------------------------------------------------------------

def _code_text(cell) -> str:
    pre = cell.select_one(".jp-Cell-inputWrapper pre")
    return pre.get_text() if pre else ""


def summary_of(code: str, given: str | None = None) -> str:
    "The summary line of a folded cell."
    first = code.lstrip().splitlines()[0].strip() if code.strip() else ""
    if first.startswith("# Solution"): return "Solution"
    if first.startswith("# Check"): return "Check"
    if given: return given
    names = re.findall(r"^(?:async\s+)?(?:def|class)\s+(\w+)", code, re.M)
    if names: return "Code: " + ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
    lines = [l for l in code.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    if lines and all(re.match(r"(import|from)\s", l) or l[:1] in (" ", "\t", ")") for l in lines): return "Code: imports"
    if re.search(r"\b(plt|fig|ax|axs|axes)\b\.|\bplot\w*\(", code): return "Code: the figure"
    if re.search(r"\b(Markdown|HTML|display)\(", code): return "Code: the text below"
    return "Code"


def _fold(soup, summaries=None) -> None:
    summaries = list(summaries or [])
    for cell in soup.select("div.jp-Cell.celltag_code-fold, div.jp-Cell.celltag_code-fold-show"):
        if "deq-folded" in cell.get("class", []) or cell.find_parent("details") or cell.find_parent(class_="deq-folded"):
            continue                                # done already, or the inner copy of a cell that is
        given = summaries.pop(0) if summaries else None
        s = summary_of(_code_text(cell), given)
        kind = "solution" if s == "Solution" else "check" if s == "Check" else "code"
        details = soup.new_tag("details", attrs={"class": f"deq-fold deq-fold-{kind}"})
        if "celltag_code-fold-show" in cell.get("class", []): details["open"] = ""
        summary = soup.new_tag("summary"); summary.string = s
        details.append(summary)
        cell["class"] = cell.get("class", []) + ["deq-folded"]
        if kind in ("solution", "check"):           # the answer and what it prints stay folded together
            for child in list(cell.children): details.append(child.extract())
            cell.append(details)
        else:                                       # only the code: the figure or table it makes stays in view
            inp = cell.select_one(".jp-Cell-inputWrapper")
            if inp is None: continue
            inp.insert_before(details)
            details.append(inp.extract())


def fold_cells(html: str, summaries=None) -> str:
    "Remove prompts and tag toolbars; fold `code-fold` cells (see the module docstring)."
    soup = BeautifulSoup(html, "html.parser")
    _drop_prompts(soup)
    _fold(soup, summaries)
    return str(soup)


def _drop_prompts(soup) -> None:
    for el in soup.select(".jp-InputPrompt, .jp-OutputPrompt, .celltoolbar"):
        el.decompose()


# --- text nodes that may carry links -----------------------------------------------------------------------------------
SKIP_TAGS = {"a", "pre", "code", "script", "style", "textarea", "summary", "svg", "title"}
MATH = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|(?<![\\$])\$(?!\$)(?:[^$\\]|\\.)+?\$", re.S)


def _skipped(node) -> bool:
    for p in node.parents:
        if p.name in SKIP_TAGS: return True
        cls = p.get("class") or []
        if any(c.startswith("MathJax") or c in ("highlight", "deq-eqno", "deq-download") for c in cls): return True
    return False


def _segments(text: str):
    "[(is_math, piece), …]; None when a `$` is left unpaired (the math continues in another node: leave it alone)."
    out, pos = [], 0
    for m in MATH.finditer(text):
        if m.start() > pos: out.append((False, text[pos:m.start()]))
        out.append((True, m.group(0))); pos = m.end()
    if pos < len(text): out.append((False, text[pos:]))
    if any(re.search(r"(?<!\\)\$", s) for is_math, s in out if not is_math): return None
    return out


def _text_nodes(root):
    return [n for n in root.find_all(string=True)
            if type(n) is NavigableString and n.strip() and not _skipped(n)]


# --- equations ---------------------------------------------------------------------------------------------------------
TAG = re.compile(r"\\tag\*?\{([^{}]+)\}")


def anchor_equations(soup, root=None) -> list[str]:
    """Give every display equation with `\\tag{N}` the id `eq-N` (`eq-N-2` for a repeat) on a wrapper that also holds
    a visible number for narrow screens. Returns the numbers, in page order."""
    found, seen = [], {}
    for node in _text_nodes(root or soup):
        text = str(node)
        if "\\tag" not in text: continue
        parts = [(m.start(), m.end(), TAG.findall(m.group(0))) for m in re.finditer(r"\$\$.+?\$\$|\\\[.+?\\\]", text, re.S)]
        parts = [p for p in parts if p[2]]
        if not parts: continue
        parent = node.parent
        alone = len(parts) == 1 and not text[:parts[0][0]].strip() and not text[parts[0][1]:].strip() and \
            parent.name == "p" and all(c is node or (isinstance(c, NavigableString) and not c.strip()) for c in parent.contents)
        pieces, pos = [], 0
        for a, b, tags in parts:
            nums = [t.strip() for t in tags]
            ids = []
            for n in nums:
                seen[n] = seen.get(n, 0) + 1
                ids.append(f"eq-{_slug(n)}" + (f"-{seen[n]}" if seen[n] > 1 else ""))
            found += nums
            label = soup.new_tag("span", attrs={"class": "deq-eqno", "aria-hidden": "true"})
            label.string = " ".join(f"({n})" for n in nums)
            if alone:
                parent["class"] = parent.get("class", []) + ["deq-eq"]
                parent["id"] = ids[0]
                parent["data-eq"] = nums[0]
                node.insert_before(label)
                for extra in ids[1:]: node.insert_before(soup.new_tag("span", attrs={"id": extra, "class": "deq-eq-anchor"}))
                break
            if a > pos: pieces.append(NavigableString(text[pos:a]))
            wrap = soup.new_tag("span", attrs={"class": "deq-eq", "id": ids[0], "data-eq": nums[0]})
            wrap.append(label)
            for extra in ids[1:]: wrap.append(soup.new_tag("span", attrs={"id": extra, "class": "deq-eq-anchor"}))
            wrap.append(NavigableString(text[a:b]))
            pieces.append(wrap); pos = b
        if alone: continue
        if pos < len(text): pieces.append(NavigableString(text[pos:]))
        for piece in pieces: node.insert_before(piece)
        node.extract()
    return found


def _slug(n: str) -> str:
    return re.sub(r"[^\w-]+", "-", n).strip("-")


# --- links -------------------------------------------------------------------------------------------------------------
NUM = r"(?:\(\d+[a-z]?\)|\d+[a-z]?\b)"
SEP = r"\s*(?:–|—|-|,|/|\band\b|\bor\b|\bto\b|→|&)\s*"
LINKS = re.compile(
    rf"(?P<eq>\b(?:Eqs?\.|Equations?)\s*(?P<eqnums>{NUM}(?:{SEP}{NUM})*))"
    rf"|(?P<nb>\b[Nn]otebooks?\s+(?P<nbnums>\d\d\b(?:{SEP}\d\d\b)*))"
    rf"|(?P<stem>\b\d\d_[a-z][a-z0-9_]*[a-z0-9]\b)"
    rf"|(?P<the>\b[Tt]he\s+(?P<alias>[\w-]+(?:\s[\w-]+){{0,2}}?)\s+(?:notebook|lesson|appendix|page)\b)")


class Linker:
    "Resolves equation numbers, lesson names and public names to URLs for one page."

    def __init__(self, deq: dict, stem: str):
        self.stem = stem
        self.pages = deq.get("pages", [])
        self.stems = [p["stem"] for p in self.pages]
        self.module = next((p.get("module") for p in self.pages if p["stem"] == stem), None)
        self.eqs = {}
        for p in self.pages:                               # first page in reading order that tags N
            for n in p.get("equations", []): self.eqs.setdefault(n, p["stem"])
        self.here = next((p.get("equations", []) for p in self.pages if p["stem"] == stem), [])
        self.aliases = {}
        for p in self.pages:
            for a in p.get("aliases", []): self.aliases.setdefault(a.lower(), p["stem"])
        self.api = deq.get("api", {})
        self.api_page = deq.get("api_page", "api.html")
        self.modules = {a.split(".")[0] for anchors in self.api.values() for a in anchors}
        self.unresolved: list[str] = []

    def page(self, stem: str) -> str | None:
        return None if stem not in self.stems or stem == self.stem else f"{stem}.html"

    def equation(self, n: str) -> str | None:
        if n in self.here: return f"#eq-{_slug(n)}"
        home = self.eqs.get(n)
        if home is None: self.unresolved.append(n); return None
        return f"{home}.html#eq-{_slug(n)}"

    def number(self, nn: str) -> str | None:
        hit = [s for s in self.stems if s.startswith(nn + "_")]
        return self.page(hit[0]) if len(hit) == 1 else None

    def alias(self, words: str) -> str | None:
        key = re.sub(r"\s+", " ", words.strip().lower())
        i = self.stems.index(self.stem) if self.stem in self.stems else None
        if key == "next" and i is not None and i + 1 < len(self.stems): return self.page(self.stems[i + 1])
        if key == "previous" and i: return self.page(self.stems[i - 1])
        stem = self.aliases.get(key)
        return self.page(stem) if stem else None

    def name(self, text: str) -> str | None:
        "A backticked name: `deq_sample`, `deq_sample(...)`, `DDIMSchedule.make`, `deq_ddim_nb.deq.deq_sample`, a stem."
        t = text.strip()
        m = re.fullmatch(r"(\d\d_[a-z][a-z0-9_]*)(?:\.ipynb)?", t)
        if m: return self.page(m.group(1))
        t = re.sub(r"\(.*\)$", "", t, flags=re.S)
        if not re.fullmatch(r"[A-Za-z_][\w.]*", t): return None
        if t.startswith("deq_ddim_nb."):
            rest = t[len("deq_ddim_nb."):]
            if rest in self.modules: return f"{self.api_page}#deq_ddim_nb.{rest}"
            mod, _, t = rest.partition(".")
            if mod not in self.modules or not t: return None
            anchors = [a for a in self.api.get(t, []) if a.startswith(mod + ".")]
            return f"{self.api_page}#{anchors[0]}" if anchors else None
        parts = t.split(".")
        if len(parts) == 2 and parts[0] in self.modules and parts[1] in self.api:   # module.name
            anchors = [a for a in self.api[parts[1]] if a.startswith(parts[0] + ".")]
            if anchors: return f"{self.api_page}#{anchors[0]}"
        for key in (t, parts[0] if len(parts) == 2 else None):          # name, Class.method, Class.attribute
            if key and key in self.api:
                anchors = self.api[key]
                mine = [a for a in anchors if a.startswith(f"{self.module}.")]
                return f"{self.api_page}#{(mine or anchors)[0]}"
        return None


def _a(soup, href: str, text: str, cls: str):
    a = soup.new_tag("a", attrs={"href": href, "class": cls})
    a.string = text
    return a


def _numbered_refs(soup, m, whole: str, numbers: str, num_re: str, resolve, cls: str) -> list | None:
    """The pieces of a reference with one or more numbers ("Eq. (7) and (9)", "notebooks 01 and 90"): each number that
    `resolve` finds a page for becomes a link, the first one carrying the words before it; None when none linked."""
    head = m.group(whole)[: m.start(numbers) - m.start()]
    pieces, p0 = [], 0
    for k, nm in enumerate(re.finditer(num_re, m.group(numbers))):
        href = resolve(nm.group(0))
        seg = m.group(numbers)[p0:nm.start()]
        label = (head + seg + nm.group(0)) if k == 0 else nm.group(0)
        if k > 0 and seg: pieces.append(seg)
        pieces.append(_a(soup, href, label, cls) if href else label)
        p0 = nm.end()
    return pieces if any(isinstance(x, Tag) for x in pieces) else None


def _link_text(soup, text: str, linker: Linker) -> list | None:
    "The pieces of one stretch of prose (no math) with its references linked; None when nothing was linked."
    out, pos, changed = [], 0, False
    for m in LINKS.finditer(text):
        pieces = None
        if m.group("eq"):
            pieces = _numbered_refs(soup, m, "eq", "eqnums", NUM, lambda n: linker.equation(n.strip("()")), "deq-eqref")
        elif m.group("nb"):
            pieces = _numbered_refs(soup, m, "nb", "nbnums", r"\d\d", linker.number, "deq-pageref")
        elif m.group("stem"):
            href = linker.page(m.group("stem"))
            pieces = [_a(soup, href, m.group("stem"), "deq-pageref")] if href else None
        elif m.group("the"):
            href = linker.alias(m.group("alias"))
            pieces = [_a(soup, href, m.group("the"), "deq-pageref")] if href else None
        if pieces is None: continue
        if m.start() > pos: out.append(text[pos:m.start()])
        out += pieces; pos = m.end(); changed = True
    if not changed: return None
    if pos < len(text): out.append(text[pos:])
    return out


def link_references(soup, root, linker: Linker) -> None:
    "Link 'Eq. (N)', lesson numbers and names in prose, 'appendix *Title*', and backticked public names."
    for node in _text_nodes(root):
        segs = _segments(str(node))
        if segs is None: continue
        new, changed = [], False
        for is_math, piece in segs:
            linked = None if is_math else _link_text(soup, piece, linker)
            if linked is None: new.append(piece)
            else: new += linked; changed = True
        if not changed: continue
        for piece in new: node.insert_before(NavigableString(piece) if isinstance(piece, str) else piece)
        node.extract()
    for em in root.find_all(["em", "i"]):                    # appendix *Input checks*
        prev = em.previous_sibling
        if isinstance(prev, NavigableString) and re.search(r"\b[Aa]ppendix\s+$", str(prev)) and not _skipped(em):
            href = linker.alias(re.sub(r"^the\s+", "", em.get_text().lower()))
            if href:
                a = soup.new_tag("a", attrs={"href": href, "class": "deq-pageref"})
                em.wrap(a)
    for code in root.find_all("code"):
        if code.find_parent(["pre", "a", "summary"]) or code.find_parent(class_="highlight"):
            continue
        href = linker.name(code.get_text())
        if href:
            cls = "deq-pageref" if not href.startswith(linker.api_page) else "deq-api"
            code.wrap(soup.new_tag("a", attrs={"href": href, "class": cls}))


# --- figures: SVG as inline markup, so its text is real text ---------------------------------------------------------
_SVG_SLOTS: dict[str, list[str]] = {}


def _svg_markup(data_uri: str, prefix: str) -> str | None:
    "The SVG of a data: URI, ready to inline: no XML prolog, ids prefixed (figures share a page), its CSS scoped."
    head, _, payload = data_uri.partition(",")
    try:
        text = base64.b64decode(payload).decode("utf-8") if ";base64" in head else urllib.parse.unquote(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    text = re.sub(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", "", text, flags=re.S)
    if not text.lstrip().startswith("<svg"): return None
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    if ids:
        text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
        text = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{prefix}{m.group(1)})" if m.group(1) in ids else m.group(0), text)
        text = re.sub(r'((?:xlink:)?href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}{m.group(2)}"' if m.group(2) in ids else m.group(0), text)
    text = re.sub(r"<svg\b", f'<svg class="deq-svg" data-figure="{prefix}" data-search-exclude', text, count=1)
    # matplotlib's `*{stroke-linejoin: round; …}`: scoped to this figure
    text = re.sub(r"(<style[^>]*>)(.*?)(</style>)", lambda m: m.group(1) + re.sub(r"(^|})\s*([^{}]+)\{", lambda r: r.group(1) + ",".join(
        f' svg[data-figure="{prefix}"] {sel.strip()}' for sel in r.group(2).split(",")) + "{", m.group(2)) + m.group(3), text, flags=re.S)
    return text


def inline_svgs(soup, stem: str) -> int:
    "Replace `<img src=data:image/svg+xml…>` outputs by slots that on_page_content fills with the SVG itself."
    slots = _SVG_SLOTS.setdefault(stem, [])
    n = 0
    for img in soup.select('img[src^="data:image/svg+xml"]'):
        markup = _svg_markup(img["src"], f"{stem}-fig{len(slots) + 1}-")
        if markup is None: continue
        slot = soup.new_tag("span", attrs={"class": "deq-svg-slot", "data-slot": str(len(slots))})
        slots.append(markup)
        img.replace_with(slot); n += 1
    return n


def fill_svg_slots(html: str, stem: str) -> str:
    slots = _SVG_SLOTS.pop(stem, [])
    return re.sub(r'<span class="deq-svg-slot" data-slot="(\d+)"></span>', lambda m: slots[int(m.group(1))], html)


# --- tables, download link, shared assets ------------------------------------------------------------------------------
CUE = "Wider than the page: scroll the table sideways to see every column."


def wrap_tables(soup, root) -> int:
    n = 0
    for t in root.find_all("table"):
        if t.find_parent(class_=["highlight", "highlighttable", "deq-table-scroll"]) or t.find_parent("pre"): continue
        box = soup.new_tag("div", attrs={"class": "deq-table"})
        cue = soup.new_tag("p", attrs={"class": "deq-scroll-cue", "hidden": ""}); cue.string = CUE
        scroll = soup.new_tag("div", attrs={"class": "deq-table-scroll", "tabindex": "0"})
        t.wrap(scroll); scroll.wrap(box); box.insert(0, cue)
        n += 1
    return n


def add_download(soup, stem: str) -> None:
    p = soup.new_tag("p", attrs={"class": "deq-download"})
    a = soup.new_tag("a", attrs={"href": f"{stem}.ipynb", "download": ""}); a.string = f"Download {stem}.ipynb"
    p.append(a)
    p.append(NavigableString(" to run this page in Jupyter, with the package installed ("))
    home = soup.new_tag("a", attrs={"href": "index.html#install"}); home.string = "install"
    p.append(home); p.append(NavigableString(")."))
    first = soup.select_one("div.jp-MarkdownCell")           # under the title cell (the outermost of its wrappers)
    while first is not None and first.parent is not None and "jp-Cell" in (first.parent.get("class") or []):
        first = first.parent
    if first is not None: first.insert_after(p)
    else: soup.insert(0, p)


def _shared(name_prefix: str, ext: str, text: str) -> str:
    name = f"{name_prefix}-{hashlib.sha1(text.encode()).hexdigest()[:10]}.{ext}"
    _ASSETS[name] = text
    return name


def extract_assets(soup, src_uri: str) -> None:
    "The stylesheets and small scripts mkdocs-jupyter inlines in every page -> shared files linked from <head>."
    css = []
    for st in soup.find_all("style"):
        text = st.get_text()
        if not re.match(r"\s*\[", text): css.append(text)        # one block is a stray Python list of the others
        st.decompose()
    js = []
    for sc in soup.find_all("script"):
        if sc.get("src"): continue
        typ = (sc.get("type") or "").lower()
        text = sc.get_text()
        if typ == "text/x-mathjax-config" or "mermaid" in text: sc.decompose(); continue   # config: local/deq.js
        if typ in ("", "text/javascript"): js.append(text); sc.decompose()
    names = []
    if css: names.append(_shared("assets/notebook", "css", "\n".join(css)))
    if js: names.append(_shared("assets/notebook", "js", ";\n".join(js)))
    _PAGE_ASSETS[src_uri] = names


def on_page_content(html, page, config, files):
    deq = _deq(config)
    uri = page.file.src_uri
    stem = Path(uri).stem
    if uri.endswith(".ipynb"):
        soup = BeautifulSoup(html, "html.parser")
        _drop_prompts(soup)
        extract_assets(soup, uri)
        _fold(soup, (deq.get("folds") or {}).get(stem))
        linker = Linker(deq, stem)
        for root in soup.select(".jp-RenderedMarkdown, .jp-RenderedHTMLCommon[data-mime-type='text/markdown']"):
            if root.find_parent(class_="jp-RenderedMarkdown"): continue
            anchor_equations(soup, root)
            link_references(soup, root, linker)
            wrap_tables(soup, root)
        add_download(soup, stem)
        for el in soup.select(".deq-explorer, .deq-explorer-group"): el["data-search-exclude"] = ""   # frames: no search hits
        fix_toc(soup, page)
        inline_svgs(soup, stem)
        return fill_svg_slots(str(soup), stem)
    if uri == "api.md" or uri.endswith("/api.md"):
        soup = BeautifulSoup(html, "html.parser")
        link_references(soup, soup, Linker(deq, stem))
        return str(soup)
    return html


def fix_toc(soup, page) -> None:
    """Table-of-contents entries as the headings read and where they are: mkdocs-jupyter builds them from the markdown
    without inline code (`DDIMSchedule`: … -> ': …', id 'one-object-…' where the page has 'ddimschedule-one-object-…')."""
    heads = []
    for h in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"], id=True):
        h = BeautifulSoup(str(h), "html.parser").find(h.name)
        for a in h.select("a.anchor-link, a.headerlink"): a.decompose()
        for a in h.find_all("a"): a.unwrap()
        plain = BeautifulSoup(str(h), "html.parser")
        for c in plain.find_all("code"): c.decompose()
        slug = re.sub(r"[^\w\s-]", "", plain.get_text().lower()).strip()
        heads.append((h["id"], re.sub(r"[\s_-]+", "-", slug).strip("-"), h.decode_contents().strip()))
    pos = 0
    def walk(items):
        nonlocal pos
        for it in items or []:
            want = getattr(it, "id", None)
            for k in range(pos, len(heads)):
                hid, slug, inner = heads[k]
                if want in (hid, slug) or hid.endswith("-" + str(want)) or not slug and re.fullmatch(r"_\d+", str(want)):
                    it.id, it.title, pos = hid, inner or it.title, k + 1
                    break
            walk(getattr(it, "children", None))
    walk(getattr(page, "toc", None))


def on_post_page(output, page, config):
    names = _PAGE_ASSETS.get(page.file.src_uri, [])
    tags = "".join(f'<link rel="stylesheet" href="{n}">' for n in names if n.endswith(".css"))
    tags += "".join(f'<script src="{n}" defer></script>' for n in names if n.endswith(".js"))
    if tags: output = output.replace("</head>", tags + "</head>", 1)
    if page.file.src_uri in ("index.ipynb", "index.md"):
        output = re.sub(r"<title>.*?</title>", f"<title>{htmlmod.escape(HOME_TITLE)}</title>", output, count=1, flags=re.S)
    return output


# --- the notebook stylesheet, cut to what the pages use ------------------------------------------------------------------
RUNTIME_CLASSES = ("md-", "MathJax", "mjx", "deq-")   # classes that scripts add in the browser (Material, MathJax, site.js)


def _css_blocks(css: str) -> list[tuple[str, str | None]]:
    "Top-level CSS blocks: (prelude, body), body None for a statement; nested braces and strings stay in the body."
    out, i, n = [], 0, len(css)
    while i < n:
        j, k = css.find("{", i), css.find(";", i)
        if j < 0:
            if css[i:].strip(): out.append((css[i:].strip(), None))
            break
        if 0 <= k < j and css[i:k].lstrip().startswith("@"):
            out.append((css[i:k + 1].strip(), None)); i = k + 1; continue
        depth, m = 1, j + 1
        while m < n and depth:
            c = css[m]
            if c == "{": depth += 1
            elif c == "}": depth -= 1
            elif c in "\"'":
                q, m = c, m + 1
                while m < n and css[m] != q: m += 2 if css[m] == "\\" else 1
            m += 1
        out.append((css[i:j].strip(), css[j + 1:m - 1])); i = m
    return out


def _selectors(prelude: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in prelude:
        depth += (c in "([") - (c in ")]")
        if c == "," and depth == 0: parts.append(cur); cur = ""
        else: cur += c
    return [p.strip() for p in parts + [cur] if p.strip()]


def purge_css(css: str, used: set) -> str:
    """Only the rules whose selectors can match: every class a selector names is used by some page (or is added by a
    script). JupyterLab's stylesheet is ~590 KB; a static notebook page uses a fraction of it."""
    css = re.sub(r"@charset[^;]*;", "", re.sub(r"/\*.*?\*/", "", css, flags=re.S))
    out = []
    for prelude, body in _css_blocks(css):
        if body is None: out.append(prelude); continue
        if prelude.startswith("@"):
            if re.match(r"@(media|supports|layer|container)\b", prelude):
                inner = purge_css(body, used)
                if inner.strip(): out.append(f"{prelude}{{{inner}}}")
            else: out.append(f"{prelude}{{{body}}}")
            continue
        keep = [s for s in _selectors(prelude)
                if all(c in used or c.startswith(RUNTIME_CLASSES)
                       for c in re.findall(r"\.(-?[_a-zA-Z][\w-]*)", re.sub(r"\[[^\]]*\]", "", s)))]
        if keep: out.append(f"{','.join(keep)}{{{body}}}")
    return "\n".join(out)


def used_classes(site_dir: Path) -> set:
    used = set()
    for f in site_dir.glob("*.html"):
        for cls in re.findall(r'class="([^"]*)"', f.read_text(encoding="utf-8")): used.update(cls.split())
    return used


# --- one printable page ------------------------------------------------------------------------------------------------
PRINT_HEAD = """<style>
/* print.html: typeset fast. Cells off screen skip layout until they are scrolled to (or printed); while MathJax
   typesets, code and outputs without math are out of the layout, so each measurement lays out prose only. */
.deq-print-page .jp-Cell { content-visibility: auto; contain-intrinsic-size: auto 320px; }
body.deq-typesetting .jp-CodeCell .jp-Cell-inputWrapper,
body.deq-typesetting .jp-OutputArea-output:not([data-mime-type="text/markdown"]) { display: none !important; }
@media print { .deq-print-page .jp-Cell { content-visibility: visible; } }
</style>
<script type="text/x-mathjax-config">
MathJax.Hub.Register.StartupHook("End", function () { document.body.classList.remove("deq-typesetting"); });
</script>"""
PRINT_BODY = """<script>document.body.classList.add("deq-typesetting");
setTimeout(function () { document.body.classList.remove("deq-typesetting"); }, 60000);</script>"""


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav or []:
        if isinstance(item, dict):
            for v in item.values():
                out += _nav_pages(v) if isinstance(v, list) else [v]
        elif isinstance(item, str):
            out.append(item)
    return out


def printable(site_dir: Path, sources: list[str]) -> str | None:
    "The HTML of print.html: the articles of `sources` (built pages, in order) inside the print placeholder page."
    target = site_dir / PRINT_PAGE
    if not target.exists(): return None
    shell = BeautifulSoup(target.read_text(encoding="utf-8"), "html.parser")
    art = shell.select_one("article.md-content__inner")
    if art is None: return None
    art.clear()
    stems = [Path(s).stem for s in sources if (site_dir / f"{Path(s).stem}.html").exists()]
    head = shell.find("head")
    have = {l.get("href") for l in head.find_all("link")} | {s.get("src") for s in head.find_all("script")}
    seen_styles, mathjax = set(), False
    for stem in stems:
        if stem == Path(PRINT_PAGE).stem: continue
        soup = BeautifulSoup((site_dir / f"{stem}.html").read_text(encoding="utf-8"), "html.parser")
        for el in soup.find("head").find_all(["link", "script"]):     # the shared notebook stylesheet and scripts
            key = el.get("href") or el.get("src")
            if key and key not in have and (el.name == "script" or "stylesheet" in (el.get("rel") or [])):
                head.append(el.extract()); have.add(key)
        a = soup.select_one("article.md-content__inner")
        if a is None: continue
        for el in a.select(".md-content__button, .md-source-file"): el.decompose()
        for st in a.find_all("style"):
            key = hash(st.get_text())
            if key in seen_styles: st.decompose()
            else: seen_styles.add(key)
        for sc in a.find_all("script", src=True):
            if "MathJax.js" in sc["src"]:
                if mathjax: sc.decompose()
                mathjax = True
        for el in a.find_all(id=True): el["id"] = f"{stem}--{el['id']}"
        for el in a.find_all("a", href=True):
            h = el["href"]
            if h.startswith("#"): el["href"] = f"#{stem}--{h[1:]}"
            elif (m := re.match(r"^([\w.-]+)\.html(?:#(.*))?$", h)) and m.group(1) in stems:
                el["href"] = f"#{m.group(1)}--{m.group(2)}" if m.group(2) else f"#{m.group(1)}--page"
        for d in a.find_all("details"): d["open"] = ""
        section = shell.new_tag("section", attrs={"class": "deq-print-page", "id": f"{stem}--page"})
        for child in list(a.children): section.append(child.extract())
        art.append(section)
    head.append(BeautifulSoup(PRINT_HEAD, "html.parser"))
    body = shell.find("body")
    if body is not None:
        body["class"] = body.get("class", []) + ["deq-print"]
        body.insert(0, BeautifulSoup(PRINT_BODY, "html.parser"))
    return str(shell)


# --- search: TeX as text -----------------------------------------------------------------------------------------------
SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "zeta": "ζ", "eta": "η",
    "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ",
    "tau": "τ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ",
    "Theta": "Θ", "Lambda": "Λ", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω", "nabla": "∇", "partial": "∂",
    "sum": "Σ", "prod": "Π", "int": "∫", "infty": "∞", "approx": "≈", "sim": "∼", "le": "≤", "leq": "≤", "ge": "≥",
    "geq": "≥", "neq": "≠", "ne": "≠", "to": "→", "rightarrow": "→", "Rightarrow": "⇒", "leftarrow": "←", "mapsto": "↦",
    "cdot": "·", "times": "×", "in": "∈", "top": "⊤", "dots": "…", "ldots": "…", "cdots": "⋯", "mid": "|",
    "nmid": "∤", "lfloor": "⌊", "rfloor": "⌋", "lceil": "⌈", "rceil": "⌉", "log": "log", "exp": "exp", "min": "min",
    "max": "max", "arg": "arg", "det": "det", "circ": "∘", "pm": "±", "propto": "∝", "equiv": "≡", "ell": "ℓ",
    "langle": "⟨", "rangle": "⟩", "|": "‖", "lVert": "‖", "rVert": "‖", "Vert": "‖", "emptyset": "∅", "forall": "∀",
}
BARRED = {"alpha": "ᾱ", "x": "x̄", "sigma": "σ̄"}


def tex_to_text(s: str) -> str:
    "Math in a search snippet as readable text: `$\\bar\\alpha_t$` -> `ᾱ_t`, `\\tag{10}` -> `(10)`."
    def conv(m):
        inner = m.group(0)[1:-1]
        if m.group(0).startswith("$") and not m.group(0).startswith("$$") and not (
                re.search(r"[\\^{}=<>]", inner) or not re.search(r"\s", inner) and len(inner) <= 16):
            return m.group(0)                                       # two dollar signs around prose (`$HOME … $PATH`)
        t = m.group(0).strip("$")
        if t.startswith("\\(") or t.startswith("\\["): t = t[2:-2]
        t = re.sub(r"\\tag\*?\{([^{}]*)\}", r" (\1)", t)
        t = re.sub(r"\\bar\s*\{?\\?([A-Za-z]+)\}?", lambda b: BARRED.get(b.group(1), b.group(1) + "̄"), t)
        for _ in range(3):
            t = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", t)
            t = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"√(\1)", t)
            t = re.sub(r"\\(?:mathbf|mathrm|mathcal|mathbb|boldsymbol|text|textrm|operatorname|hat|tilde|vec|mathit)\s*\{([^{}]*)\}",
                       lambda x: x.group(1) + ("̃" if x.group(0).startswith("\\tilde") else ""), t)
        t = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)\b\s*", "", t)
        t = re.sub(r"\\[,;:! ]|\\quad|\\qquad", " ", t)
        t = re.sub(r"\\([A-Za-z]+|\|)", lambda x: SYMBOLS.get(x.group(1), x.group(1)), t)
        t = t.replace("{", "").replace("}", "").replace("&", " ").replace("\\\\", "; ")
        return re.sub(r"\s+", " ", t).strip()
    return re.sub(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|(?<!\\)\$[^$]+?\$", conv, s, flags=re.S)


def clean_search_index(path: Path) -> int:
    "Rewrite TeX in the search index as text; returns how many entries changed."
    if not path.exists(): return 0
    data = json.loads(path.read_text(encoding="utf-8"))
    n = 0
    for doc in data.get("docs", []):
        for k in ("title", "text"):
            if isinstance(doc.get(k), str):
                new = tex_to_text(doc[k])
                if new != doc[k]: doc[k] = new; n += 1
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return n


def on_post_build(config):
    site_dir = Path(config["site_dir"])
    used = used_classes(site_dir) if any(n.endswith(".css") for n in _ASSETS) else set()
    for name, text in _ASSETS.items():
        if name.endswith(".css"): text = purge_css(text, used)
        f = site_dir / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
    deq = _deq(config)
    nbs_dir = Path(deq["nbs_dir"]) if deq.get("nbs_dir") else None
    pages = _nav_pages(config["nav"])
    for src in pages:                    # downloads: the notebooks as they are, hidden tests and exports included
        if src.endswith(".ipynb") and nbs_dir is not None and (nbs_dir / src).exists():
            shutil.copy(nbs_dir / src, site_dir / Path(src).name)
    html = printable(site_dir, [p for p in pages if p.endswith(".ipynb")])
    if html: (site_dir / PRINT_PAGE).write_text(html, encoding="utf-8")
    clean_search_index(site_dir / "search" / "search_index.json")
