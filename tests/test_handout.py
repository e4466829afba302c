"""The classroom kit (deq_ddim_nb.classroom, nbs/93_classroom.ipynb): a student copy of a lesson runs until its first
exercise check, which fails (NameError / AssertionError in a `# Check` cell), while the solution notebook passes; the
solution notebooks are never modified and no file is overwritten without asking."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deq_ddim_nb.classroom import BLANK, cell_role, lesson_notebooks, make_handout, student_copy

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"


def _role(c):
    "cell_role, with a blanked solution (the student's cell) as 'blank'."
    src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
    return "blank" if c["cell_type"] == "code" and src.splitlines()[-1:] == [BLANK] else cell_role(c)


def _nb(*cells):
    out = []
    for i, (kind, src) in enumerate(cells):
        c = {"cell_type": kind, "id": f"c{i}", "metadata": {}, "source": src}
        if kind == "code": c.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "old output\n"}],
                                    execution_count=i + 1)
        out.append(c)
    return {"nbformat": 4, "nbformat_minor": 5, "cells": out,
            "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}}


TOY = _nb(("markdown", "# Toy lesson"),
          ("code", "base = 6"),
          ("markdown", "**1.** Multiply `base` by 7 into `answer`."),
          ("code", "#| code-fold: true\n# Solution\nanswer = base * 7\nprint(answer)"),
          ("code", "#| code-fold: true\n# Check\nassert answer == 42"),
          ("markdown", "**2.** Square it into `sq`."),
          ("code", "#| code-fold: true\n# Solution\nsq = answer ** 2"),
          ("code", "#| code-fold: true\n# Check\nassert sq == 1764"))


def _run(nb, cwd):
    "Execute `nb` cell by cell in a fresh kernel; returns (index of the first failing cell or None, its error name)."
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    node = nbformat.reads(json.dumps(nb), as_version=4)          # joins list sources, as on disk
    client = NotebookClient(node, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except CellExecutionError:
        pass
    for i, c in enumerate(node.cells):
        errs = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errs: return i, errs[0]["ename"]
    return None, None


@pytest.fixture
def toy_dir(tmp_path):
    d = tmp_path / "nbs"; d.mkdir()
    (d / "00_toy.ipynb").write_text(json.dumps(TOY))
    (d / "90_appendix.ipynb").write_text(json.dumps(_nb(("code", "x = 1"))))
    return d


def test_student_copy_blanks_solutions_keeps_checks_clears_outputs():
    st = student_copy(TOY)
    assert [_role(c) for c in TOY["cells"]] == [None, None, None, "solution", "check", None, "solution", "check"]
    assert [_role(c) for c in st["cells"]] == [None, None, None, "blank", "check", None, "blank", "check"]
    for c, orig in zip(st["cells"], TOY["cells"]):
        if c["cell_type"] != "code": assert c == orig; continue
        assert c["outputs"] == [] and c["execution_count"] is None
        if cell_role(orig) == "solution": assert c["source"] == "#| code-fold: true\n" + BLANK
        else: assert c["source"] == orig["source"]
    assert TOY["cells"][3]["outputs"][0]["text"] == "old output\n"      # the input notebook is untouched


def test_handout_of_a_synthetic_lesson_fails_at_its_first_check(toy_dir, tmp_path):
    before = (toy_dir / "00_toy.ipynb").read_bytes()
    written = make_handout(tmp_path / "out", nbs_dir=toy_dir)
    assert [p.name for p in written] == ["00_toy.ipynb"]                 # the appendix is no lesson
    assert (toy_dir / "00_toy.ipynb").read_bytes() == before
    student = json.loads(written[0].read_text())
    i, ename = _run(student, tmp_path)
    assert i == 4 and cell_role(student["cells"][i]) == "check" and ename == "NameError"
    assert _run(TOY, tmp_path) == (None, None)                          # the solution notebook passes
    wrong = json.loads(written[0].read_text())                           # a wrong answer fails its check too
    wrong["cells"][3]["source"] = "# Solution\nanswer = 41"
    assert _run(wrong, tmp_path)[1] == "AssertionError"


def test_no_overwrite_unless_asked(toy_dir, tmp_path):
    out = tmp_path / "out"
    make_handout(out, nbs_dir=toy_dir)
    (out / "00_toy.ipynb").write_text("my answers")
    with pytest.raises(FileExistsError, match="overwrite"):
        make_handout(out, nbs_dir=toy_dir)
    assert (out / "00_toy.ipynb").read_text() == "my answers"
    make_handout(out, nbs_dir=toy_dir, overwrite=True)
    assert json.loads((out / "00_toy.ipynb").read_text())["cells"][3]["source"].endswith(BLANK)
    with pytest.raises(ValueError, match="out_dir must differ from nbs_dir"):
        make_handout(toy_dir, nbs_dir=toy_dir, overwrite=True)
    with pytest.raises(ValueError, match="notebooks"):
        make_handout(out, nbs_dir=toy_dir, notebooks=["07_missing"])
    with pytest.raises(TypeError, match="out_dir"):
        make_handout(None, nbs_dir=toy_dir)


def test_command_line(toy_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deq_ddim_nb.classroom", str(tmp_path / "out"), "--nbs", str(toy_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "out" / "00_toy.ipynb")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "overwrite" in r.stderr


def _with_exercises():
    return [p for p in lesson_notebooks(NBS)
            if any(cell_role(c) == "solution" for c in json.loads(p.read_text())["cells"])]


def test_every_lesson_with_exercises_hands_out(tmp_path):
    lessons = _with_exercises()
    if not lessons: pytest.skip("no lesson has `# Solution` cells yet")
    before = {p: p.read_bytes() for p in lessons}
    written = make_handout(tmp_path, nbs_dir=NBS, notebooks=[p.name for p in lessons])
    for p, w in zip(lessons, written):
        sol, st = json.loads(p.read_text())["cells"], json.loads(w.read_text())["cells"]
        assert len(sol) == len(st) and [_role(c) for c in st] == [
            "blank" if _role(c) == "solution" else _role(c) for c in sol]
        assert all(not c.get("outputs") for c in st if c["cell_type"] == "code")
        assert sum(cell_role(c) == "check" for c in st) >= 1, f"{p.name}: solutions without checks"
    assert {p: p.read_bytes() for p in lessons} == before


def test_student_copy_of_00_schedules_fails_at_a_check_and_the_solutions_pass(tmp_path):
    src = NBS / "00_schedules.ipynb"
    nb = json.loads(src.read_text())
    if not any(cell_role(c) == "solution" for c in nb["cells"]): pytest.skip("00_schedules has no `# Solution` cells yet")
    student = json.loads(make_handout(tmp_path / "out", nbs_dir=NBS, notebooks=["00_schedules"])[0].read_text())
    i, ename = _run(student, NBS)
    assert i is not None and cell_role(student["cells"][i]) == "check" and ename in ("NameError", "AssertionError")
    assert all(cell_role(c) != "check" for c in student["cells"][:i])  # it ran up to its first check
    assert _run(nb, NBS) == (None, None)
