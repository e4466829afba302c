"""The course guide tells the truth: every notebook it names exists, every exercise it assigns ("exercises 2 and 3 of 04")
exists as a `**n.**` markdown cell of that notebook and every lesson with exercises gets homework, it plans four
lectures with reading and live notebooks, names the handout command, installs for students only what they need, shows
the recorded run times, runs from an empty folder (it reads no notebook), and quotes no agreement figure that the pages
do not print. (Its lecture order against the site's navigation: tests/test_site.py.)"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
GUIDE = NBS / "course_guide.ipynb"


def _text(nb) -> str:
    "Markdown cells and the outputs of code cells (what a reader of the page sees), one string."
    parts = []
    for c in nb["cells"]:
        if c["cell_type"] == "markdown": parts.append("".join(c["source"]))
        for o in c.get("outputs", []):
            if "text" in o: parts.append("".join(o["text"]))
            for k in ("text/markdown", "text/plain"):
                v = o.get("data", {}).get(k)
                if v: parts.append("".join(v)); break
    return "\n".join(parts)


@pytest.fixture(scope="module")
def guide():
    return _text(json.loads(GUIDE.read_text()))


def _exercise_numbers(path: Path) -> set[int]:
    nb = json.loads(path.read_text())
    return {int(n) for c in nb["cells"] if c["cell_type"] == "markdown"
            for n in re.findall(r"^\s*\*\*(\d+)\.\*\*", "".join(c["source"]), re.M)}


def _notebook(prefix: str) -> Path:
    hits = [p for p in NBS.glob(f"{prefix}*.ipynb") if not p.name.startswith("_")]
    assert len(hits) == 1, f"the guide refers to notebook {prefix!r}: {len(hits)} notebooks match"
    return hits[0]


ASSIGN = re.compile(r"[Ee]xercises?\s+((?:\d+(?:\s*[–-]\s*\d+)?)(?:\s*(?:,|and)\s*\d+(?:\s*[–-]\s*\d+)?)*)\s+of\s+(\d\d)(?:_\w+)?")


def _expand(spec: str) -> list[int]:
    "'1, 2 and 4' -> [1, 2, 4]; '1–3' -> [1, 2, 3]"
    out = []
    for part in re.split(r"\s*(?:,|\band\b)\s*", spec.strip()):
        m = re.fullmatch(r"(\d+)\s*[–-]\s*(\d+)", part)
        out += list(range(int(m[1]), int(m[2]) + 1)) if m else [int(part)]
    return out


def test_expand_and_pattern():
    assert _expand("2 and 3") == [2, 3] and _expand("1, 2 and 4") == [1, 2, 4] and _expand("1–3") == [1, 2, 3]
    found = ASSIGN.findall("exercises 2, 3 and 4 of 00; exercise 1 of 09_parallel")
    assert found == [("2, 3 and 4", "00"), ("1", "09")]


def test_every_notebook_it_names_exists(guide):
    names = set(re.findall(r"\b(\d\d_[a-z][a-z0-9_]*)(?:\.ipynb)?\b", guide))
    names |= set(re.findall(r"\(([\w-]+)\.ipynb\)", guide))
    assert names, "the guide names no notebook"
    missing = sorted(n for n in names if not (NBS / f"{n}.ipynb").exists())
    assert not missing, f"the guide names notebooks that do not exist: {missing}"


def test_every_exercise_it_assigns_exists(guide):
    assigned = ASSIGN.findall(guide)
    assert assigned, "the guide assigns no exercise by notebook and number"
    bad = []
    for spec, prefix in assigned:
        have = _exercise_numbers(_notebook(prefix))
        bad += [f"exercise {n} of {prefix}" for n in _expand(spec) if n not in have]
    assert not bad, f"assigned but not in the notebooks: {bad}"
    assert not re.search(r"the exercises (?:of|at the end of) \d\d", guide), "assign exercises by number, not wholesale"


def test_four_lectures_with_reading_and_live_notebooks(guide):
    rows = [l for l in guide.splitlines() if re.match(r"\|\s*\d\.\s", l)]
    assert len(rows) == 4, rows
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == 5 and re.search(r"\.ipynb", cells[2]) and re.search(r"\.ipynb", cells[3]), r
    assert "75 min" in guide and all(f"**Lecture {i}** (75 minutes)" in guide for i in range(1, 5))
    lessons = {p.stem for p in NBS.glob("[0-9][0-9]_*.ipynb") if int(p.name[:2]) < 90}
    planned = set(re.findall(r"\[(\w+)\]\(\1\.ipynb\)", "\n".join(rows)))
    assert lessons <= planned, f"lessons in no lecture: {sorted(lessons - planned)}"


def test_handout_command_and_slides_decision(guide):
    assert "deq-ddim handout OUT_DIR" in guide and "python -m deq_ddim_nb.classroom" in guide
    assert "## Slides" in guide


def test_no_agreement_figure_the_pages_do_not_print(guide):
    assert not re.search(r"10⁻⁶|10\^\{?-6\}?|1e-6|1e-06", guide)


def _lessons() -> list[Path]:
    return sorted(p for p in NBS.glob("[0-9][0-9]_*.ipynb") if int(p.name[:2]) < 90)


def test_every_lesson_with_exercises_gets_homework(guide):
    assigned = {prefix for _, prefix in ASSIGN.findall(guide)}
    left = [p.stem for p in _lessons() if _exercise_numbers(p) and p.name[:2] not in assigned]
    assert not left, f"lessons with exercises but no homework in the guide: {left}"


def test_students_install_only_what_they_need(guide):
    assert "pip install -e ." in guide and "torch==2.13.0" in guide
    assert not re.search(r"\[dev\]|\[docs\]", guide), "students need the package and Jupyter, not the dev extras"


def test_run_times_are_the_recorded_ones(guide):
    import csv
    from deq_ddim_nb.files import recorded
    rows = [r for r in csv.DictReader(open(recorded("notebook_times.csv"))) if (NBS / f"{r['notebook']}.ipynb").exists()]
    assert rows
    for r in rows: assert f"| {r['notebook']} | {r['wall_s']} | {r['cpu_s']} |" in guide, r
    for p in NBS.glob("*.ipynb"):                                          # every notebook has a row, timed or not
        if not p.name.startswith("_"): assert re.search(rf"^\| {p.stem} \|", guide, re.M), p.stem
    slowest = max(rows, key=lambda r: int(r["wall_s"]))
    assert f"Slowest: {slowest['notebook']} ({slowest['wall_s']} s)" in guide


def test_guide_runs_from_an_empty_folder():
    "The guide's code reads no notebook (a student runs it alone, with only the package); its lists match nbs/."
    nb = json.loads(GUIDE.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert not re.search(r"\.ipynb\"\)\.read|glob\(|Path\(\"\.\"\)|open\([^)]*ipynb", code), "the guide reads notebook files"
    appendix = re.search(r"APPENDIX = (\[[^\]]*\])", code)
    assert appendix and eval(appendix.group(1)) == sorted(p.stem for p in NBS.glob("9[0-9]_*.ipynb"))


def test_no_build_or_test_flags(guide):
    assert not re.search(r"\b(IN_TEST|RUN_SLOW|nbdev-test|nbdev_test)\b", guide)
