"""Numbers in prose come from outputs, and no words of the build process reach the reader.

Every number quoted in a notebook's markdown must equal, at its quoted precision, a number that the reader sees right
beside it: in the output of the nearest code cell above (a printed result, a generated `Markdown(f"...")` sentence), or in
the code of the code cells just above and just below (a constant the cell uses). Not anywhere in the notebook: a sentence
must be backed by the result it describes. References
(Eq. 10, Fig. 2, Table 3, §3, notebook 08), years, and quotations from the literature wrapped in `<cite>…</cite>` are
exempt. So when a result changes, the sentence quoting the old value fails here instead of drifting silently.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))

SUP = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
MINUS = str.maketrans({"−": "-", "–": "-", "—": "-", "\u202f": " ", "\u00a0": " "})

# --- what counts as a quoted number -----------------------------------------------------------------------------------
_REF_WORDS = (r"(?:Eqs?|Equations?|Figs?|Figures?|Tables?|Tabs?|§|Sections?|Sec|Lectures?|Algorithms?|Alg|Appendix|"
              r"Appendices|[Ee]xercises?|[Nn]otebooks?|[Ll]essons?|[Ss]teps?|[Pp]art|[Cc]hapter|Lemma|Theorem|Prop)")
_NUMREF = r"\(?\s*[0-9]+[a-z]?\s*\)?"
_REF = re.compile(_REF_WORDS + r"\.?\s*" + _NUMREF + r"(?:\s*(?:[,/–\-→]|->|and|to|&|or)?\s*(?:and\s+)?" + _NUMREF + r")*")
_NUM = re.compile(
    r"(?<![A-Za-z_0-9.])"
    r"(?P<mant>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+(?:\.[0-9]+)?)"
    r"(?:\s*(?:[eE](?P<e>[-+]?[0-9]+))|\s*[×x·]\s*10\^?\{?(?P<p>[-+]?[0-9]+)\}?)?"
    r"(?P<pct>\s*%)?"
    r"(?![0-9])")
_POW10 = re.compile(r"(?<![0-9.])10\^\{?(?P<p>[-+]?[0-9]+)\}?")


def _strip(md: str) -> tuple[str, str]:
    "Split markdown into (prose, inline-math) with code, links, HTML, citations and references removed."
    md = md.translate(MINUS)
    md = re.sub(r"<!--.*?-->", " ", md, flags=re.S)
    md = re.sub(r"<cite>.*?</cite>", " ", md, flags=re.S | re.I)
    md = re.sub(r"```.*?```", " ", md, flags=re.S)
    md = re.sub(r"`[^`]*`", " ", md)
    md = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", md)                     # images
    md = re.sub(r"\]\([^)]*\)", "] ", md)                              # link targets
    md = re.sub(r"https?://\S+", " ", md)
    md = re.sub(r"<[^>]+>", " ", md)                                   # html tags (attributes)
    md = re.sub(r"\$\$.*?\$\$", " ", md, flags=re.S)                   # display math: symbols, not quoted results
    inline = " ".join(re.findall(r"\$([^$]+)\$", md))
    md = re.sub(r"\$[^$]+\$", " ", md)
    md = "\n".join(l for l in md.splitlines() if not l.lstrip().startswith("#"))   # headings
    md = re.sub(r"^\s*(?:[-*+]|\*\*)?\s*\(?[0-9]+[.)]\**\s", " ", md, flags=re.M)   # list / exercise numbering
    md = re.sub(r"\*\*[0-9]+\.\*\*", " ", md)
    md = _REF.sub(" ", md)
    md = re.sub(r"\b[A-Za-z]+-[0-9]+\b", " ", md)                     # names such as CIFAR-10
    md = re.sub(r"(?<![0-9])(?:19|20)[0-9]{2}(?![0-9])", " ", md)      # years
    md = re.sub(r"(?<![0-9])0[0-9](?:_[a-z]\w*)?(?![0-9.])", " ", md)    # notebook numbers: 04, 08_inversion
    md = re.sub(r"(?<![0-9])9[0-3]_[a-z]\w*", " ", md)
    return md, inline.translate(MINUS)


def quoted_numbers(md: str) -> list[tuple[str, float, float, bool]]:
    "(text, value, half-width of the quoted precision, is a percentage) for every number quoted in a markdown cell."
    prose, inline = _strip(md)
    out = []
    for m in _NUM.finditer(prose):
        out.append(_parse(m))
    # in inline math only results look like decimals or powers of ten; integers there are symbols (T = 100, t - 1)
    for m in _NUM.finditer(inline):
        if "." in m.group("mant") or m.group("e") or m.group("p"): out.append(_parse(m))
    for m in _POW10.finditer(inline):
        p = int(m.group("p")); out.append((m.group(0), 10.0 ** p, 0.5 * 10.0 ** p, False))
    for m in re.finditer(r"(?<![0-9.])10([⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)", prose):
        p = int(m.group(1).translate(SUP)); out.append((m.group(0), 10.0 ** p, 0.5 * 10.0 ** p, False))
    return [o for o in out if o is not None and o[1] not in (0.0, 1.0)]   # 0 and 1 are words ("η > 0", "one step")


def _parse(m) -> tuple[str, float, float, bool]:
    mant = m.group("mant").replace(",", "")
    dec = len(mant.split(".")[1]) if "." in mant else 0
    exp = m.group("e") or m.group("p")
    v = float(mant)
    half = 0.5 * 10.0 ** (-dec)
    if exp is not None:
        v *= 10.0 ** int(exp); half *= 10.0 ** int(exp)
    return (m.group(0).strip(), v, half, bool(m.group("pct")))


# --- what backs a number: the notebook's own code and outputs ---------------------------------------------------------
_POOL_NUM = re.compile(r"(?<![A-Za-z_0-9])[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|(?<![A-Za-z_0-9])\.[0-9]+")


def _output_text(o: dict) -> str:
    if "text" in o: return "".join(o["text"])
    data = o.get("data", {})
    return "".join("".join(data[k]) if isinstance(data[k], list) else str(data[k])
                   for k in ("text/plain", "text/markdown", "text/html", "text/latex") if k in data)


def pool_of(texts) -> list[float]:
    "Every number in `texts` (code and outputs), as absolute values."
    text = list(texts)
    vals = set()
    for t in text:
        t = t.translate(MINUS)
        for s in _POOL_NUM.findall(t):
            try: v = float(s)
            except ValueError: continue
            if math.isfinite(v): vals.add(abs(v))
        for s in re.findall(r"[0-9]{1,3}(?:,[0-9]{3})+", t): vals.add(float(s.replace(",", "")))
        for p in re.findall(r"10\*\*\(?(-?[0-9]+)", t): vals.add(10.0 ** int(p))
    return sorted(vals)


def backed(value: float, half: float, vals: list[float], pct: bool = False) -> bool:
    "Is some number of the pool equal to `value` at the quoted precision (a percentage may be printed as a fraction)?"
    v, tol = abs(value), half * (1 + 1e-9) + 1e-15
    return any(abs(p - v) <= tol for p in vals) or (pct and any(abs(p * 100 - v) <= tol for p in vals if p <= 1))


def beside(nb: dict, i: int) -> list[str]:
    "What a reader sees beside markdown cell i: the nearest code cell above (code and outputs) and the next code cell below (code)."
    cells, texts = nb["cells"], []
    above = next((c for c in reversed(cells[:i]) if c["cell_type"] == "code"), None)
    below = next((c for c in cells[i + 1:] if c["cell_type"] == "code"), None)
    if above is not None:
        texts.append("".join(above["source"])); texts.extend(_output_text(o) for o in above.get("outputs", []))
    if below is not None: texts.append("".join(below["source"]))
    return texts


def unbacked(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    bad = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "markdown": continue
        vals = None
        for text, v, half, pct in quoted_numbers("".join(c["source"])):
            vals = pool_of(beside(nb, i)) if vals is None else vals
            if not backed(v, half, vals, pct): bad.append(f"cell {i}: {text!r}")
    return bad


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
def test_numbers_in_prose_come_from_outputs(nb):
    bad = unbacked(nb)
    assert not bad, (f"{nb.name}: numbers in markdown that the code cell above (code or output) or the code cell below "
                     f"does not show (generate the sentence from the result, print the number beside it, or wrap a "
                     f"literature quote in <cite>): {bad}")


# --- words of the build process ---------------------------------------------------------------------------------------
PROCESS = re.compile(r"\b(?:issues?|sessions?|contract|done when|earlier version|not measured in this|"
                     r"(?:speed|memory|round|performance|time|quality) targets?|API\.md|CONVENTIONS\.md|perf-leads|"
                     r"the lead|helper engineer)\b", re.I)


def process_words(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    hits = []
    for i, c in enumerate(nb["cells"]):
        texts = ["".join(c["source"])] + [_output_text(o) for o in c.get("outputs", [])]
        for t in texts:
            hits += [f"cell {i}: {m.group(0)!r}" for m in PROCESS.finditer(t)]
    return hits


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
def test_no_build_process_words(nb):
    hits = process_words(nb)
    assert not hits, f"{nb.name}: words of the build process, which students should not read: {hits}"


def test_readme_has_no_build_process_words():
    hits = PROCESS.findall((ROOT / "README.md").read_text())
    assert not hits, hits


# --- the checker itself can fail ---------------------------------------------------------------------------------------
def _nb(md, code="", out=""):
    return {"cells": [{"cell_type": "code", "source": [code], "outputs": [{"name": "stdout", "text": [out]}]},
                      {"cell_type": "markdown", "source": [md]}]}


@pytest.mark.parametrize("md,out,ok", [
    ("The median is 3.7 rounds.", "median 3.55", False),
    ("The median is 3.55 rounds.", "median 3.55", True),
    ("The median is 3.6 rounds.", "median 3.55", True),            # 3.55 quoted to one decimal
    ("It agrees to 1.3e-5.", "rel err 1.2764e-05", True),
    ("It agrees to 1.3e-6.", "rel err 1.2764e-05", False),
    ("It agrees to 10⁻⁶.", "rel err 1.2764e-05", False),
    ("It agrees to $10^{-5}$.", "rel err 1e-05", True),
    ("about 5 ms per state", "6.23 ms", False),
    ("18.5 rounds against 23", "18.5 and 23.0", True),
    ("See Eq. 10, Figs. 2 / 10 / 18 and notebook 08 (2024).", "", True),
    ("the derivation Eq. (7) → (10) and (20) → (23), Eqs. (12), (13) and (17), Eq. (8)–(10), Eq. (10a)", "", True),
    ("<cite>about 7 parallel steps (Tang et al.)</cite>", "", True),
    ("an 8.3% gap", "0.083", True),
    ("an 8.3% gap", "8.3 %", True),
    ("an 8.3% gap", "0.093", False),
    ("1,617 images", "1617", True),
])
def test_checker(tmp_path, md, out, ok):
    p = tmp_path / "x.ipynb"
    p.write_text(json.dumps(_nb(md, out=out)))
    assert (not unbacked(p)) == ok


def test_checker_looks_beside_the_sentence_not_across_the_notebook(tmp_path):
    "A number printed three cells away does not back a sentence; the output just above, or the code just below, does."
    cell = lambda kind, src, out="": ({"cell_type": "code", "source": [src], "outputs": [{"name": "stdout", "text": [out]}]}
                                      if kind == "code" else {"cell_type": "markdown", "source": [src]})
    far = {"cells": [cell("code", "", "median 16"), cell("code", "", "median 9"), cell("md", "The median is 16 rounds.")]}
    near = {"cells": [cell("code", "", "median 9"), cell("md", "The median is 9 rounds."), cell("code", "seeds = range(8)")]}
    below = {"cells": [cell("md", "Over 8 seeds:"), cell("code", "seeds = range(8)")]}
    for nb, ok in ((far, False), (near, True), (below, True)):
        p = tmp_path / "x.ipynb"; p.write_text(json.dumps(nb))
        assert (not unbacked(p)) == ok


def test_process_checker(tmp_path):
    p = tmp_path / "x.ipynb"
    p.write_text(json.dumps(_nb("As the issue asks, ...")))
    assert process_words(p)
    p.write_text(json.dumps(_nb("The inversion target image.")))
    assert not process_words(p)
