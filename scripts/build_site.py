#!/usr/bin/env python
"""Build the static tutorial site from the committed, executed notebooks in nbs/ into _site/ (never re-executes them).

    python scripts/build_site.py                  # build _site/ (needs the `docs` extra: mkdocs-material, mkdocs-jupyter,
                                                  # jupyter-server-mathjax)
    python scripts/build_site.py --write-sidebar  # rewrite nbs/sidebar.yml (Quarto / nbdev-docs) from the notebooks on disk
    python scripts/build_site.py --check-sidebar  # exit 1 if nbs/sidebar.yml is out of date

Every notebook in nbs/ (except scratch `_*.ipynb`) becomes a page; the navigation has the same sections as the sidebar.
Notebooks are copied to build/site_src/ and adapted there, as nbdev's docs would show them: `#| hide` cells are dropped,
directive lines removed, `#| code-fold: true` cells and long `#| export` cells tagged for folding (site/hooks.py folds
them, code and outputs, and removes the execution prompts), widget outputs replaced by a note (the static figures next
to them show the same), links to `*.ipynb` pointed at the pages. Appendix notebooks (numbered 90 and up) form the last
section. MathJax is copied from the jupyter-server-mathjax package; site/hooks.py also writes print.html (the whole
course on one page, every fold open).
"""
from __future__ import annotations
import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SITE_CFG = ROOT / "site"

# Sidebar sections: notebook name prefixes (the part before the first "_", or the whole stem) in reading order.
SECTIONS = [
    ("Foundations", ["index", "00", "01", "02"]),
    ("DEQ sampling", ["03", "04", "05"]),
    ("Inversion", ["08"]),
    ("Scale and performance", ["06", "07", "09"]),
    ("Explore", ["10", "11", "course_guide"]),
]
APPENDIX = "Appendix"  # notebooks numbered 90 and up (plumbing: checks, file I/O, benchmarks, classroom kit)
OTHER = "More"        # notebooks that exist but are in no section above still get a page
FOLD_EXPORT_LINES = 15   # `#| export` cells longer than this are folded, as nbdev's docs show plumbing


def notebooks(nbs: Path = NBS) -> list[Path]:
    "The notebooks of the site: every nbs/*.ipynb except scratch ones (`_*`)."
    return sorted(p for p in nbs.glob("*.ipynb") if not p.name.startswith("_"))


def _key(p: Path) -> str:
    head = p.stem.split("_")[0]
    return head if head.isdigit() else p.stem


def sections(nbs: Path = NBS) -> list[tuple[str, list[Path]]]:
    "[(section, [notebook, …]), …] for the notebooks on disk; empty sections are left out."
    files, out, seen = notebooks(nbs), [], set()
    for name, keys in SECTIONS:
        group = [p for k in keys for p in files if _key(p) == k]
        seen.update(group)
        if group: out.append((name, group))
    appendix = [p for p in files if p not in seen and _key(p).isdigit() and int(_key(p)) >= 90]
    if appendix: out.append((APPENDIX, appendix)); seen.update(appendix)
    rest = [p for p in files if p not in seen]
    if rest: out.append((OTHER, rest))
    return out


def sidebar_yaml(nbs: Path = NBS) -> str:
    "nbs/sidebar.yml for Quarto (nbdev-docs): one section per group, only notebooks that exist."
    lines = ["website:", "  sidebar:", "    contents:"]
    for name, group in sections(nbs):
        lines += [f"      - section: {name}", "        contents:"]
        lines += [f"          - {p.name}" for p in group]
    return "\n".join(lines) + "\n"


def title_of(nb: dict, default: str) -> str:
    "The notebook's `# Title` (first markdown H1) as plain text."
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            m = re.search(r"^#\s+(.+)$", "".join(c["source"]), re.M)
            if m: return re.sub(r"[`*_]", "", m.group(1)).strip()    # plain text: `code` / *emphasis* marks dropped
    return default


DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")
WIDGET = "application/vnd.jupyter.widget-view+json"
NOTE = ('<p class="deq-widget-note">Interactive widget: run this notebook in Jupyter to use it; '
        'the static figures on this page show the same.</p>')


def _directives(src: str) -> tuple[dict, str]:
    "Split a code cell into its nbdev/Quarto `#|` directives and the remaining code."
    lines, d = src.splitlines(), {}
    i = 0
    while i < len(lines) and (m := DIRECTIVE.match(lines[i])):
        d[m.group(1)] = m.group(2) or True
        i += 1
    return d, "\n".join(lines[i:]).strip("\n")


def _links(md: str) -> str:
    "Markdown links to local notebooks -> their pages."
    return re.sub(r"\]\(((?!https?:)[\w./-]+?)\.ipynb(#[^)]*)?\)", lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", md)


def imports_only(code: str) -> bool:
    "Is an exported cell nothing but imports (the module's header)? Plumbing too: it is folded like long exports."
    lines = [l for l in code.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    return bool(lines) and all(re.match(r"(import|from)\s", l) or l[:1] in (" ", "\t", ")") for l in lines)


def adapt(nb: dict) -> dict:
    "The notebook as the docs show it (see the module docstring)."
    cells = []
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "markdown":
            c["source"] = _links(src)
            cells.append(c); continue
        if c["cell_type"] != "code": continue
        d, code = _directives(src)
        if "hide" in d or "default_exp" in d and not code: continue
        if str(d.get("include", "")).lower() == "false": continue
        tags = list(c.get("metadata", {}).get("tags", []))
        if str(d.get("code-fold", "")).lower() in ("true", "show"): tags.append("code-fold")
        if str(d.get("echo", "")).lower() == "false": tags.append("remove_input")
        if ({"export", "exports", "exporti"} & set(d) and "code-fold" not in tags
                and (len(code.splitlines()) > FOLD_EXPORT_LINES or imports_only(code))): tags.append("fold-export")
        if str(d.get("output", "")).lower() == "false": c["outputs"] = []
        outs = []
        for o in c.get("outputs", []):
            if WIDGET in o.get("data", {}): o = {"output_type": "display_data", "metadata": {}, "data": {"text/html": NOTE}}
            elif "text/markdown" in o.get("data", {}):
                md = o["data"]["text/markdown"]
                o["data"]["text/markdown"] = _links("".join(md) if isinstance(md, list) else md)
            outs.append(o)
        c["outputs"] = outs
        c["source"] = code
        c.setdefault("metadata", {})["tags"] = tags
        if code or outs: cells.append(c)
    nb["cells"] = cells
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def mathjax_dir() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError:
        sys.exit("build_site: MathJax comes from the `jupyter-server-mathjax` package: pip install -e '.[docs]'")
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def stage(src_dir: Path, nbs: Path = NBS) -> dict:
    "Write the docs folder (adapted notebooks, assets, MathJax) and return the mkdocs config."
    import yaml
    if src_dir.exists(): shutil.rmtree(src_dir)
    docs = src_dir / "docs"
    (docs / "assets").mkdir(parents=True)
    nav = []
    for name, group in sections(nbs):
        items = []
        for p in group:
            nb = json.loads(p.read_text())
            (docs / p.name).write_text(json.dumps(adapt(nb), indent=1))
            items.append({title_of(nb, p.stem): p.name})
        nav.append({name: items})
    for f in ("site.css", "site.js"): shutil.copy(SITE_CFG / f, docs / "assets" / f)
    mj = docs / "assets" / "mathjax"
    shutil.copytree(mathjax_dir(), mj, ignore=shutil.ignore_patterns("localization", "*.py", "__pycache__"))
    (mj / "config" / "local").mkdir(exist_ok=True)
    shutil.copy(SITE_CFG / "mathjax-local.js", mj / "config" / "local" / "deq.js")
    (docs / "print.md").write_text("# The whole course on one page\n\nEvery page of the course, in reading order, with "
                                   "every folded cell open. It is assembled when the site is built.\n")
    cfg = yaml.safe_load((SITE_CFG / "mkdocs.yml").read_text())
    cfg["nav"] = nav
    cfg["hooks"] = [str(SITE_CFG / "hooks.py")]
    for pl in cfg["plugins"]:      # converted notebooks are cached by content: a rebuild only converts what changed
        if isinstance(pl, dict) and "mkdocs-jupyter" in pl:
            pl["mkdocs-jupyter"]["cache_dir"] = str(ROOT / "build" / "mkdocs-jupyter-cache")
    return cfg


def build(out: Path = ROOT / "_site", nbs: Path = NBS, quiet: bool = True) -> Path:
    "Build the site into `out` from the notebooks in `nbs`; returns `out`."
    import yaml
    src = ROOT / "build" / "site_src"
    cfg = stage(src, nbs)
    cfg["docs_dir"] = str(src / "docs")
    cfg["site_dir"] = str(out.resolve())
    (src / "mkdocs.yml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    cmd = [sys.executable, "-m", "mkdocs", "build", "--clean", "-f", str(src / "mkdocs.yml")] + (["-q"] if quiet else [])
    r = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
    if r.returncode != 0: sys.exit(f"build_site: mkdocs failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "_site"), help="output folder (default: _site/)")
    ap.add_argument("--write-sidebar", action="store_true", help="rewrite nbs/sidebar.yml from the notebooks on disk")
    ap.add_argument("--check-sidebar", action="store_true", help="exit 1 if nbs/sidebar.yml is out of date")
    a = ap.parse_args(argv)
    if a.write_sidebar:
        (NBS / "sidebar.yml").write_text(sidebar_yaml()); print("wrote nbs/sidebar.yml"); return 0
    if a.check_sidebar:
        ok = (NBS / "sidebar.yml").read_text() == sidebar_yaml()
        print("nbs/sidebar.yml is up to date" if ok else "nbs/sidebar.yml is out of date: run scripts/build_site.py --write-sidebar")
        return 0 if ok else 1
    out = build(Path(a.out))
    print(f"built {len(notebooks())} pages into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
