"""Write README.md from nbs/index.ipynb (nbdev's `nbdev-readme` needs Quarto, which these machines cannot install).

Markdown cells are copied, code cells become ```python blocks with their text output; images and hidden cells are left
out; a project-layout section and the two commands (from .ci/commands.md) are appended. `--check` exits 1 if README.md
is out of date (a test runs it).
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    tail = (ROOT / ".ci" / "commands.md").read_text().strip()
    return f"<!-- generated from nbs/index.ipynb by scripts/make_readme.py; do not edit -->\n\n{body}\n\n{tail}\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        ok = (ROOT / "README.md").read_text() == text
        print("README.md is up to date" if ok else "README.md is out of date: run python scripts/make_readme.py")
        sys.exit(0 if ok else 1)
    (ROOT / "README.md").write_text(text)
