#!/usr/bin/env python
"""Build the static tutorial site from the committed, executed notebooks in nbs/ into _site/ (never re-executes them).

    python scripts/build_site.py                  # build _site/ (needs the `docs` extra: mkdocs-material, mkdocs-jupyter,
                                                  # jupyter-server-mathjax)
    python scripts/build_site.py --write-sidebar  # rewrite nbs/sidebar.yml (Quarto / nbdev-docs) from the notebooks on disk
    python scripts/build_site.py --check-sidebar  # exit 1 if nbs/sidebar.yml is out of date

Every notebook in nbs/ (except scratch `_*.ipynb`) becomes a page, in reading order: the lessons by number (a lesson
comes after the lessons whose modules it uses), the course guide, then the appendix (notebooks numbered 90 and up) and
an API reference generated from the package's docstrings. The navigation has the same sections as nbs/sidebar.yml.

Notebooks are copied to build/site_src/ and adapted there, as nbdev's docs would show them: `#| hide` cells are dropped,
directive lines removed, `#| code-fold` cells tagged for folding, Quarto callouts (`::: {.callout-warning title="…"}` …
`:::`) turned into boxes, links to `*.ipynb` pointed at the pages, and live widget outputs replaced by a note (the
kernel-free versions next to them work on the page). site/hooks.py then folds cells, numbers and anchors equations,
links "Eq. (N)", lesson names and backticked public names, moves the notebook stylesheet into one shared file, writes
print.html (the whole course on one page) and puts the original notebooks next to their pages for download.
MathJax is copied from the jupyter-server-mathjax package: nothing is fetched from a CDN.
"""
from __future__ import annotations
import argparse
import html
import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SITE_CFG = ROOT / "site"
PACKAGE = "deq_ddim_nb"

# Sidebar sections: notebook name prefixes (the part before the first "_", or the whole stem) in reading order. The
# lessons are numbered in the order they build on each other (tests/test_site.py checks that a lesson's module only
# imports modules taught before it or in the appendix).
SECTIONS = [
    ("Foundations", ["index", "00", "01", "02"]),
    ("DEQ sampling", ["03", "04", "05"]),
    ("A trained network", ["06", "07"]),
    ("Inversion", ["08"]),
    ("Scale and practice", ["09", "10", "11"]),
    ("Teaching", ["course_guide"]),
]
APPENDIX = "Appendix"  # notebooks numbered 90 and up (plumbing: checks, file I/O, benchmarks, classroom kit)
OTHER = "More"        # notebooks that exist but are in no section above still get a page
API_PAGE = "api.md"   # the API reference, last page of the appendix
API_TITLE = "API reference"

# "the fixed-point notebook", "the DEQ-sDDIM notebook": names a lesson goes by besides its number and stem words
ALIASES = {
    "00_schedules": ["schedules", "noise-schedule", "schedule"],
    "01_ddim": ["ddim", "derivation"],
    "index": ["home", "home-page"],
    "05_sddim": ["deq-sddim", "sddim", "stochastic"],
    "06_digits_model": ["model", "digits", "unet"],
    "08_inversion": ["inversion"],
    "09_parallel": ["parallel"],
    "10_widgets": ["widgets", "explorers"],
    "11_cli": ["cli", "command-line"],
    "90_checks": ["input checks", "checks"],
    "91_files": ["files", "file"],
    "92_benchmark": ["benchmark"],
    "93_classroom": ["classroom", "classroom kit"],
    "94_wrappers": ["wrappers", "calling the model"],
    "95_distributed": ["distributed"],
    "course_guide": ["course guide", "course"],
}


def notebooks(nbs: Path = NBS) -> list[Path]:
    "The notebooks of the site: every nbs/*.ipynb except scratch ones (`_*`)."
    return sorted(p for p in nbs.glob("*.ipynb") if not p.name.startswith("_"))


def _key(p: Path) -> str:
    head = p.stem.split("_")[0]
    return head if head.isdigit() else p.stem


def is_appendix(p: Path) -> bool:
    k = _key(p)
    return k.isdigit() and int(k) >= 90


def sections(nbs: Path = NBS) -> list[tuple[str, list[Path]]]:
    "[(section, [notebook, …]), …] for the notebooks on disk, in reading order; empty sections are left out."
    files, out, seen = notebooks(nbs), [], set()
    for name, keys in SECTIONS:
        group = [p for k in keys for p in files if _key(p) == k]
        seen.update(group)
        if group: out.append((name, group))
    appendix = [p for p in files if p not in seen and is_appendix(p)]
    if appendix: out.append((APPENDIX, appendix)); seen.update(appendix)
    rest = [p for p in files if p not in seen]
    if rest: out.append((OTHER, rest))
    return out


def reading_order(nbs: Path = NBS) -> list[Path]:
    "Every notebook of the site in reading order (the order of the navigation and of print.html)."
    return [p for _, g in sections(nbs) for p in g]


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
            m = re.search(r"^#\s+(.+)$", _src(c), re.M)
            if m: return re.sub(r"[`*_]", "", m.group(1)).strip()    # plain text: `code` / *emphasis* marks dropped
    return default


def module_of(nb: dict) -> str | None:
    "The module a notebook writes (`#| default_exp name`), or None."
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            m = re.search(r"^\s*#\s*\|\s*default_exp\s+([\w.]+)", _src(c), re.M)
            if m: return m.group(1)
    return None


def _src(c) -> str:
    return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")
WIDGET = "application/vnd.jupyter.widget-view+json"
STDERR_PROGRESS = re.compile(r"^\s*\d+%\|")          # a tqdm bar printed to stderr (a notebook should turn it off)


def widget_note(stem: str) -> str:
    return (f'<p class="deq-widget-note">Live explorer: it needs a Jupyter kernel. <a href="{stem}.ipynb" download>Download '
            f'this notebook</a> and run it in Jupyter to use it; the version below works on this page without one.</p>')


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


# --- Quarto callouts -> boxes ------------------------------------------------------------------------------------------
CALLOUT_OPEN = re.compile(r"^(?P<fence>:{3,})\s*\{(?P<attrs>[^}]*\.callout-(?P<kind>[\w-]+)[^}]*)\}\s*$")
CALLOUT_CLOSE = re.compile(r"^:{3,}\s*$")
CALLOUT_KIND = {"note": "note", "tip": "tip", "warning": "warning", "caution": "warning", "important": "danger"}
CALLOUT_TITLE = {"note": "Note", "tip": "Tip", "warning": "Warning", "caution": "Caution", "important": "Important"}


def _inline_md(text: str) -> str:
    "A callout title as HTML: escaped, with `code`, **strong** and *emphasis*; $math$ is left for MathJax."
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", out)
    return out


def _attr(attrs: str, name: str) -> str | None:
    m = re.search(rf'\b{name}\s*=\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|(\S+))', attrs)
    if not m: return None
    v = m.group(1) if m.group(1) is not None else m.group(2) if m.group(2) is not None else m.group(3)
    return v.replace('\\"', '"')


def callouts(md: str) -> str:
    """Quarto callouts (`::: {.callout-warning title="…"}` … `:::`) as Material admonition boxes. The box is raw HTML
    around a blank line, so its body stays markdown (math, code, lists). A callout that is not closed in its cell is
    closed at the end of the cell; a `##` heading on the first line of the body becomes the title, as in Quarto."""
    lines, out, stack = md.split("\n"), [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = CALLOUT_OPEN.match(line.strip())
        if m:
            kind = m.group("kind").lower()
            attrs = m.group("attrs")
            title = _attr(attrs, "title")
            j = i + 1
            if title is None and j < len(lines) and re.match(r"^#{1,6}\s+\S", lines[j]):
                title = re.sub(r"^#{1,6}\s+", "", lines[j]).strip(); j += 1
            title = title or CALLOUT_TITLE.get(kind, kind.capitalize())
            cls = CALLOUT_KIND.get(kind, "note")
            collapse = str(_attr(attrs, "collapse") or "").lower()
            tag = "details" if collapse in ("true", "false") else "div"
            opened = " open" if collapse == "false" else ""
            head = (f'<summary>{_inline_md(title)}</summary>' if tag == "details"
                    else f'<p class="admonition-title">{_inline_md(title)}</p>')
            out += ["", f'<{tag} class="admonition {cls} deq-callout deq-callout-{kind}"{opened}>', head, ""]
            stack.append(tag)
            i = j
            continue
        if stack and CALLOUT_CLOSE.match(line.strip()):
            out += ["", f"</{stack.pop()}>", ""]
            i += 1
            continue
        out.append(line)
        i += 1
    while stack: out += ["", f"</{stack.pop()}>", ""]
    return "\n".join(out)


# --- notebooks as the docs show them -----------------------------------------------------------------------------------

def adapt(nb: dict, stem: str = "", folds: list | None = None) -> dict:
    """The notebook as the docs show it (see the module docstring). `folds` collects, for each folded cell in order,
    its `#| code-summary` (or None): site/hooks.py writes it on the fold."""
    cells = []
    for c in nb["cells"]:
        src = _src(c)
        if c["cell_type"] == "markdown":
            c["source"] = callouts(_links(src))
            cells.append(c); continue
        if c["cell_type"] != "code": continue
        d, code = _directives(src)
        if "hide" in d or "default_exp" in d and not code: continue
        if str(d.get("include", "")).lower() == "false": continue
        tags = [t for t in c.get("metadata", {}).get("tags", []) if re.fullmatch(r"[\w-]+", t)]
        fold = str(d.get("code-fold", "")).lower()
        if fold in ("true", "show"):
            tags.append("code-fold" if fold == "true" else "code-fold-show")
            if folds is not None:
                summary = d.get("code-summary")
                folds.append(summary.strip("\"'") if isinstance(summary, str) else None)
        if str(d.get("echo", "")).lower() == "false": tags.append("remove_input")
        if str(d.get("output", "")).lower() == "false": c["outputs"] = []
        outs = []
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if WIDGET in data:
                plain = "".join(data.get("text/plain", ""))
                if re.search(r"(Float|Int)Progress", plain): continue            # a progress bar: nothing to show
                o = {"output_type": "display_data", "metadata": {}, "data": {"text/html": widget_note(stem)}}
            elif "text/markdown" in data:
                md = data["text/markdown"]
                data["text/markdown"] = callouts(_links("".join(md) if isinstance(md, list) else md))
            outs.append(o)
        c["outputs"] = outs
        c["source"] = code
        c.setdefault("metadata", {})["tags"] = tags
        if code or outs: cells.append(c)
    nb["cells"] = cells
    nb.get("metadata", {}).pop("widgets", None)
    return nb


# --- what the hooks need to know about every page ----------------------------------------------------------------------
TAG = re.compile(r"\\tag\*?\{([^{}]+)\}")


def equations(nb: dict) -> list[str]:
    "The equation numbers a notebook's markdown tags (`\\tag{N}` in display math), in order."
    out = []
    for c in nb["cells"]:
        texts = [_src(c)] if c["cell_type"] == "markdown" else [
            "".join(o["data"]["text/markdown"]) for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
        for t in texts:
            for m in re.finditer(r"\$\$(.+?)\$\$", t, re.S):
                out += [x.strip() for x in TAG.findall(m.group(1))]
    return out


def aliases(p: Path, title: str) -> list[str]:
    "Lower-case names of a notebook in prose: its stem words ('fixed-point', 'fixed point') and ALIASES."
    words = p.stem.split("_")[1:] if _key(p).isdigit() else p.stem.split("_")
    out = {"-".join(words), " ".join(words)} if words else set()
    out |= {a.lower() for a in ALIASES.get(p.stem, [])}
    if title.lower().startswith("appendix:"): out.add(re.sub(r"^the\s+", "", title.split(":", 1)[1].strip().lower()))
    return sorted(out)


def page_info(nbs: Path = NBS) -> dict:
    "For site/hooks.py: every page (stem, title, module, aliases, equations) in reading order."
    pages = []
    for p in reading_order(nbs):
        nb = json.loads(p.read_text())
        title = title_of(nb, p.stem)
        pages.append(dict(stem=p.stem, title=title, module=module_of(nb), aliases=aliases(p, title),
                          equations=equations(nb), appendix=is_appendix(p)))
    return dict(pages=pages)


# --- the API reference -------------------------------------------------------------------------------------------------

def _modules() -> list[str]:
    import pkgutil
    pkg = importlib.import_module(PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _param(p: inspect.Parameter) -> str:
    "One parameter as source shows it: string annotations (`from __future__ import annotations`) without quotes."
    ann = "" if p.annotation is p.empty else f": {p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)}"
    name = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
    default = "" if p.default is p.empty else (" = " if ann else "=") + re.sub(r" at 0x[0-9a-fA-F]+>", ">", repr(p.default))
    return f"{name}{ann}{default}"


def _signature(name: str, obj, drop_self: bool = False, is_class: bool = False) -> str:
    "`name(params) -> ret`, one parameter per line when that is longer than 100 characters."
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(…)"
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"): params = params[1:]
    parts, star = [], False
    for p in params:
        if p.kind == p.KEYWORD_ONLY and not star: parts.append("*")
        if p.kind in (p.KEYWORD_ONLY, p.VAR_POSITIONAL): star = True
        if p.kind == p.POSITIONAL_ONLY and (params.index(p) == len(params) - 1 or params[params.index(p) + 1].kind != p.POSITIONAL_ONLY):
            parts.append(_param(p)); parts.append("/"); continue
        parts.append(_param(p))
    ret = sig.return_annotation
    tail = "" if is_class or ret is inspect.Signature.empty or ret in (None, "None") else \
        f" -> {ret if isinstance(ret, str) else inspect.formatannotation(ret)}".replace("'", "")
    one = f"{name}({', '.join(parts)}){tail}"
    if len(one) <= 100: return one
    return f"{name}(\n" + "".join(f"    {q},\n" for q in parts) + f"){tail}"


def argument_docs(obj) -> dict:
    """{argument: what it is} for a function or class, from the comment beside each argument (nbdev's docments style,
    read by fastcore) or, for a dataclass, the comment that ends each field's line; '' where there is none."""
    import dataclasses, io, tokenize
    from fastcore.docments import docments
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        src = inspect.getsource(obj)
        notes = {t.start[0]: t.string.lstrip("#").strip() for t in tokenize.generate_tokens(io.StringIO(src).readline)
                 if t.type == tokenize.COMMENT}
        lines = {}
        for i, l in enumerate(src.splitlines(), 1):                   # a field's declaration: its first `name:` line
            if (m := re.match(r"\s+(\w+)\s*:", l)): lines.setdefault(m.group(1), i)
        return {f.name: notes.get(lines.get(f.name), "") for f in dataclasses.fields(obj)}
    f = obj.__init__ if inspect.isclass(obj) else obj
    if not inspect.isfunction(f): return {}
    try: comments = docments(f, full=False)
    except (OSError, TypeError): comments = {}
    return {p: comments.get(p) or "" for p in inspect.signature(f).parameters if p not in ("self", "cls")}


def public_api(modules: list[str] | None = None) -> list[dict]:
    """Every public name of the package, module by module: dicts with module, name, kind (function, class, method,
    constant), signature, doc and anchor. A name a module re-exports is listed where it is defined."""
    out = []
    for mod_name in modules or _modules():
        mod = importlib.import_module(f"{PACKAGE}.{mod_name}")
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for name in names:
            obj = getattr(mod, name, None)
            if obj is None: continue
            home = getattr(obj, "__module__", None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and home != mod.__name__:
                continue                                              # re-exported: listed in its own module
            entry = dict(module=mod_name, name=name, anchor=f"{mod_name}.{name}",
                         doc=inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else "")
            if inspect.isfunction(obj) or inspect.isclass(obj): entry["args"] = argument_docs(obj)
            if inspect.isclass(obj):
                entry.update(kind="class", signature=_signature(name, obj, is_class=True))
                out.append(entry)
                for mname, m in vars(obj).items():
                    if mname.startswith("_"): continue
                    fn = m.__func__ if isinstance(m, (classmethod, staticmethod)) else m
                    if not inspect.isfunction(fn): continue
                    bound = getattr(obj, mname)                       # classmethods bound: no `cls`
                    out.append(dict(module=mod_name, name=f"{name}.{mname}", anchor=f"{mod_name}.{name}.{mname}",
                                    kind="method", doc=inspect.getdoc(fn) or "",
                                    signature=_signature(f"{name}.{mname}", bound, drop_self=not isinstance(m, (classmethod, staticmethod)))))
            elif inspect.isroutine(obj):
                entry.update(kind="function", signature=_signature(name, obj)); out.append(entry)
            else:
                r = repr(obj)
                entry.update(kind="constant", signature=f"{name} = {r if len(r) <= 100 else r[:97] + '…'}")
                out.append(entry)
    return out


def _doc_html(doc: str) -> str:
    "A docstring as HTML paragraphs: escaped, `code` kept, line breaks inside a paragraph joined."
    paras = [p for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()]
    out = []
    for p in paras:
        t = html.escape(" ".join(l.strip() for l in p.splitlines()), quote=False)
        t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
        out.append(f"<p>{t}</p>")
    return "\n".join(out)


def api_markdown(info: dict, api: list[dict] | None = None) -> str:
    "The API reference page: per module, where it is taught, then every public name with its signature and docstring."
    api = public_api() if api is None else api
    taught = {pg["module"]: pg for pg in info["pages"] if pg.get("module")}
    order = [pg["module"] for pg in info["pages"] if pg.get("module")]
    mods = sorted({e["module"] for e in api}, key=lambda m: (order.index(m) if m in order else len(order), m))
    lines = [f"# {API_TITLE}", "",
             "Every public function, class and constant of the package, with its signature and docstring, module by module "
             "in the order the lessons teach them. Each module links to the notebook that writes it, where the code is "
             "derived and demonstrated.", ""]
    for m in mods:
        pg = taught.get(m)
        mod = importlib.import_module(f"{PACKAGE}.{m}")
        lines += [f"## `{PACKAGE}.{m}` {{#{PACKAGE}.{m}}}", ""]
        if pg: lines += [f'<p class="deq-api-taught">Written and taught in <a href="{pg["stem"]}.html">{html.escape(pg["title"])}</a>.</p>', ""]
        mdoc = re.sub(r"\n*Docs: https?://\S+\s*$", "", inspect.getdoc(mod) or "")   # nbdev's link to the Quarto page
        if mdoc: lines += [_doc_html(mdoc), ""]
        for e in (e for e in api if e["module"] == m):
            level = "####" if e["kind"] == "method" else "###"
            lines += [f"{level} `{e['name']}` {{#{e['anchor']} .deq-api-name data-kind=\"{e['kind']}\"}}", ""]
            lines += [f'<pre class="deq-signature"><code>{html.escape(e["signature"], quote=False)}</code></pre>', ""]
            if e["doc"]: lines += [_doc_html(e["doc"]), ""]
            args = [(a, d) for a, d in e.get("args", {}).items() if d]
            if args:
                rows = "".join(f"<tr><td><code>{html.escape(a)}</code></td><td>{_doc_html(d)[3:-4]}</td></tr>" for a, d in args)
                lines += [f'<table class="deq-args"><thead><tr><th>argument</th><th>what it is</th></tr></thead>'
                          f"<tbody>{rows}</tbody></table>", ""]
    return "\n".join(lines) + "\n"


def api_index(api: list[dict]) -> dict:
    "name -> [anchor, …] for linking backticked names (a method also under 'Class.method')."
    idx = {}
    for e in api:
        idx.setdefault(e["name"], []).append(e["anchor"])
    return idx


# --- staging and building ----------------------------------------------------------------------------------------------

def mathjax_dir() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError:
        sys.exit("build_site: MathJax comes from the `jupyter-server-mathjax` package: pip install -e '.[docs]'")
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def stage(src_dir: Path, nbs: Path = NBS, api: list[dict] | None = None) -> dict:
    "Write the docs folder (adapted notebooks, API page, assets, MathJax) and return the mkdocs config."
    import yaml
    if src_dir.exists(): shutil.rmtree(src_dir)
    docs = src_dir / "docs"
    (docs / "assets").mkdir(parents=True)
    info = page_info(nbs)
    api = public_api() if api is None else api
    nav, folds = [], {}
    for name, group in sections(nbs):
        items = []
        for p in group:
            nb = json.loads(p.read_text())
            folds[p.stem] = []
            (docs / p.name).write_text(json.dumps(adapt(nb, p.stem, folds[p.stem]), indent=1))
            items.append({title_of(nb, p.stem): p.name})
        nav.append({name: items})
    appendix = next((s[APPENDIX] for s in nav if APPENDIX in s), None)
    if appendix is None: nav.append({APPENDIX: (appendix := [])})
    appendix.append({API_TITLE: API_PAGE})                     # the API reference is the last page
    (docs / API_PAGE).write_text(api_markdown(info, api))
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
    cfg.setdefault("extra", {})["deq"] = dict(info, folds=folds, api=api_index(api), nbs_dir=str(nbs.resolve()),
                                             api_page=API_PAGE.replace(".md", ".html"))
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
    print(f"built {len(notebooks())} notebook pages and the API reference into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
