"""MkDocs hooks of the tutorial site (loaded by the `hooks:` entry that scripts/build_site.py writes into the config).

on_page_content  rewrites each notebook page as nbdev's docs show it:
                 - execution prompts ("In [ ]:") and the cell-tag toolbar are removed from the DOM;
                 - cells tagged "code-fold" (`#| code-fold: true`: exercise solutions and checks) and "fold-export"
                   (long `#| export` cells: plumbing) are wrapped, code AND outputs, in a closed <details>.
on_post_build    writes print.html: every page of the navigation, in reading order, on one page with every fold open
                 (for paper readers; the page `print` of the navigation is its placeholder).
"""
from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup

PRINT_PAGE = "print.html"


def _code_text(cell) -> str:
    pre = cell.select_one(".jp-Cell-inputWrapper pre")
    return pre.get_text() if pre else ""


def _summary(cell, classes) -> str:
    code = _code_text(cell).lstrip()
    first = code.splitlines()[0].strip() if code else ""
    if first.startswith("# Solution"): return "Solution"
    if first.startswith("# Check"): return "Check"
    if "celltag_fold-export" in classes:
        names = re.findall(r"^(?:async\s+)?(?:def|class)\s+(\w+)", code, re.M)
        if not names and all(re.match(r"(import|from)\s", l) or l[:1] in (" ", "\t", ")")
                             for l in code.splitlines() if l.strip() and not l.lstrip().startswith("#")):
            return "Code: imports"
        shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
        return f"Code: {shown}" if names else "Code"
    return "Code"


def fold_cells(html: str) -> str:
    "Remove prompts and tag toolbars; fold `code-fold` and `fold-export` cells (input and outputs) into <details>."
    soup = BeautifulSoup(html, "html.parser")
    for el in soup.select(".jp-InputPrompt, .jp-OutputPrompt, .celltoolbar"):
        el.decompose()
    for cell in soup.select("div.jp-Cell.celltag_code-fold, div.jp-Cell.celltag_fold-export"):
        if cell.find_parent("details") or cell.find("details", class_="deq-fold", recursive=False): continue
        classes = cell.get("class", [])
        kind = "solution" if "Solution" == (s := _summary(cell, classes)) else "check" if s == "Check" else "code"
        details = soup.new_tag("details", attrs={"class": f"deq-fold deq-fold-{kind}"})
        summary = soup.new_tag("summary"); summary.string = s
        details.append(summary)
        for child in list(cell.children):
            details.append(child.extract())
        cell.append(details)
    return str(soup)


def on_page_content(html, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        return fold_cells(html)
    return html


# --- one printable page -------------------------------------------------------------------------------------------

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
    seen_styles, mathjax = set(), False
    for src in sources:
        html = site_dir / (Path(src).with_suffix(".html").name)
        if not html.exists() or html.name == PRINT_PAGE: continue
        soup = BeautifulSoup(html.read_text(encoding="utf-8"), "html.parser")
        a = soup.select_one("article.md-content__inner")
        if a is None: continue
        stem = html.stem
        for el in a.select(".md-content__button, .md-source-file"): el.decompose()
        for st in a.find_all("style"):        # every notebook page repeats the same large stylesheet: keep one copy
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
            elif (m := re.match(r"^([\w.-]+)\.html(?:#(.*))?$", h)):
                el["href"] = f"#{m.group(1)}--{m.group(2)}" if m.group(2) else f"#{m.group(1)}--page"
        for d in a.find_all("details"): d["open"] = ""
        section = shell.new_tag("section", attrs={"class": "deq-print-page", "id": f"{stem}--page"})
        for child in list(a.children): section.append(child.extract())
        art.append(section)
    body = shell.find("body")
    if body is not None: body["class"] = body.get("class", []) + ["deq-print"]
    return str(shell)


def on_post_build(config):
    site_dir = Path(config["site_dir"])
    html = printable(site_dir, [p for p in _nav_pages(config["nav"]) if not p.endswith("print.md")])
    if html: (site_dir / PRINT_PAGE).write_text(html, encoding="utf-8")
