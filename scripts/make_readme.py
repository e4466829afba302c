"""Write README.md from nbs/index.ipynb (nbdev's `nbdev-readme` needs Quarto, which these machines cannot install).

Markdown cells are copied, code cells become ```python blocks with their text output; images and hidden cells are left
out. Links to notebooks point into nbs/, links to pages that only the website has (the API reference) to the published
site. The home page ends with the project layout and the two commands, so the README does too. `--check` exits 1 if
README.md is out of date (a test runs it).
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def site_url() -> str:
    "The published site (pyproject's Homepage), ending with a slash."
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^(?:Documentation|Homepage)\s*=\s*"([^"]+)"', text, re.M)
    url = m.group(1) if m else ""
    return url if url.endswith("/") else url + "/"


def render() -> str:
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    out = []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            out.append(src.strip())
            continue
        lines = src.splitlines()
        if any(l.strip() in ("#| hide", "#|hide") for l in lines): continue
        code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if not code: continue
        out.append(f"```python\n{code}\n```")
        text = "".join("".join(o.get("text", "")) for o in c.get("outputs", []) if o.get("output_type") == "stream")
        if text.strip(): out.append("```\n" + text.rstrip() + "\n```")
    body = "\n\n".join(out)
    body = re.sub(r"\]\((?!https?:|nbs/)([^)]+\.ipynb)\)", r"](nbs/\1)", body)   # notebook links, relative to the repo
    body = re.sub(r"\]\((?!https?:)([\w-]+\.html(?:#[^)]*)?)\)", lambda m: f"]({site_url()}{m.group(1)})", body)
    return f"<!-- generated from nbs/index.ipynb by scripts/make_readme.py; do not edit -->\n\n{body}\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        ok = (ROOT / "README.md").read_text() == text
        print("README.md is up to date" if ok else "README.md is out of date: run python scripts/make_readme.py")
        sys.exit(0 if ok else 1)
    (ROOT / "README.md").write_text(text)
