"""The classroom kit (deq_ddim_nb.classroom, nbs/93_classroom.ipynb).

A student copy strips every nbdev directive, keeps the lesson's code and outputs (figures included), replaces each
exercise's solution by `name = ...` lines and makes its check stop with `NotAnswered` first; the handout folder (the
notebooks and a README) is published all or nothing. The long test at the end runs the student copy of every lesson
with exercises in a kernel in a temporary folder outside the repository, and tries each exercise three ways: left blank
(the check must say it is not answered), with the metadata's wrong answer (the check must fail) and with the reference
solution (the check must pass).
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deq_ddim_nb.classroom import (BLANK, NotAnswered, cell_role, exercises, lesson_notebooks, make_handout,
                                   require_answers, student_copy)

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
BIN = Path(sys.executable).parent
DIRECTIVE = re.compile(r"(?m)^\s*#\s*\|")
WORKERS = int(os.environ.get("DEQ_DDIM_HANDOUT_WORKERS", "2"))   # lessons executed at once by the long test


def _src(c):
    return c["source"] if isinstance(c["source"], str) else "".join(c["source"])


def _nb(*cells):
    out = []
    for i, spec in enumerate(cells):
        kind, src, meta = spec if len(spec) == 3 else (*spec, {})
        c = {"cell_type": kind, "id": f"c{i}", "metadata": meta, "source": src}
        if kind == "code": c.update(outputs=[{"output_type": "stream", "name": "stdout", "text": f"out {i}\n"}],
                                    execution_count=i + 1)
        out.append(c)
    return {"nbformat": 4, "nbformat_minor": 5, "cells": out,
            "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}}


def _meta(answers, wrong, **kw):
    return {"exercise": {"answers": answers, "wrong": wrong, **kw}}


TOY = _nb(("markdown", "# Toy lesson"),
          ("code", "#| default_exp toy"),
          ("code", "#| export\nbase = 6\nanswer = 'a lesson variable of the same name'"),
          ("markdown", "**1.** Multiply `base` by 7 into `answer`."),
          ("code", "#| code-fold: true\n# Solution\nanswer = base * 7\nprint(answer)", _meta(["answer"], "answer = base * 6")),
          ("code", "#| code-fold: true\n# Check\nassert answer == 42"),
          ("code", "#| hide\nprint('the lesson goes on')"),
          ("markdown", "**2.** Square it into `sq` and halve it into `half`."),
          ("code", "#| code-fold: true\n# Solution\nsq = answer ** 2\nhalf = answer / 2",
           _meta(["sq", "half"], "sq, half = 2 * answer, answer / 2", hint="** is the power operator")),
          ("code", "#| code-fold: true\n# Check\nassert sq == 1764 and half == 21"))


# ---------- the student copy ----------
def test_student_copy_strips_directives_and_keeps_the_lessons_outputs():
    st = student_copy(TOY, "toy")
    code = [c for c in st["cells"] if c["cell_type"] == "code"]
    assert all(not DIRECTIVE.search(_src(c)) for c in code)                        # no nbdev directive is left
    assert len(st["cells"]) == len(TOY["cells"]) - 1                                  # the default_exp cell is dropped
    assert _src(st["cells"][1]) == "base = 6\nanswer = 'a lesson variable of the same name'"   # export: plain code
    assert st["cells"][1]["outputs"] == TOY["cells"][2]["outputs"]                  # lesson outputs are kept
    assert st["cells"][5]["outputs"] == TOY["cells"][6]["outputs"]
    for i in (3, 4, 7, 8):                                                          # answers and checks are cleared
        assert st["cells"][i]["outputs"] == [] and st["cells"][i]["execution_count"] is None
    assert [c for c in st["cells"] if c["cell_type"] == "markdown"] == [c for c in TOY["cells"] if c["cell_type"] == "markdown"]
    assert TOY["cells"][4]["outputs"][0]["text"] == "out 4\n" and "exercise" in TOY["cells"][4]["metadata"]   # input untouched


def test_answer_cells_hold_one_ellipsis_line_per_answer_and_checks_call_require_answers():
    st = student_copy(TOY, "toy")
    assert _src(st["cells"][3]) == (f"{BLANK}: exercise 1 asks for answer (see the question above)\n"
                                    "answer = ...  # your answer")
    assert _src(st["cells"][7]).splitlines() == [
        f"{BLANK}: exercise 2 asks for sq, half (see the question above)", "# hint: ** is the power operator",
        "sq = ...  # your answer", "half = ...  # your answer"]
    assert _src(st["cells"][8]).splitlines() == [
        "# Check", 'from deq_ddim_nb.classroom import require_answers; require_answers(globals(), 2, "sq", "half")',
        "assert sq == 1764 and half == 21"]
    assert "wrong" not in json.dumps(st["cells"][3]["metadata"])                      # the wrong answer is not handed out


def test_require_answers_names_the_exercise_and_what_is_missing():
    with pytest.raises(NotAnswered, match=r"^exercise 3 is not answered yet: set t_half, n in the cell above"):
        require_answers({"n": ...}, 3, "t_half", "n")
    with pytest.raises(NotAnswered, match="set n in"):
        require_answers({"t_half": 250, "n": ...}, 3, "t_half", "n")
    require_answers({"t_half": 250, "n": 0}, 3, "t_half", "n")
    assert not issubclass(NotAnswered, (AssertionError, NameError))


@pytest.mark.parametrize("change,match", [
    (lambda nb: nb["cells"][4]["metadata"]["exercise"].update(answers=[]), "answers must be a non-empty list"),
    (lambda nb: nb["cells"][4]["metadata"]["exercise"].update(answers=["two words"]), "answers must be a non-empty list"),
    (lambda nb: nb["cells"][4]["metadata"]["exercise"].update(answers=["class"]), "answers must be a non-empty list"),
    (lambda nb: nb["cells"][4]["metadata"]["exercise"].pop("wrong"), "wrong must be the source of a wrong answer"),
    (lambda nb: nb["cells"][4]["metadata"]["exercise"].update(hint=3), "hint must be a string"),
    (lambda nb: nb["cells"].pop(5), "must be followed by its `# Check` cell"),
    (lambda nb: nb["cells"].pop(3), "without a question"),
])
def test_malformed_exercises_are_refused_naming_the_notebook_and_cell(change, match):
    nb = json.loads(json.dumps(TOY)); change(nb)
    with pytest.raises(ValueError, match=match) as e:
        student_copy(nb, "07_toy.ipynb")
    assert "07_toy.ipynb, cell" in str(e.value)


def test_an_exercise_without_metadata_is_found_by_the_names_it_binds_and_checks():
    nb = json.loads(json.dumps(TOY)); nb["cells"][8]["metadata"] = {}
    ex = exercises(nb, "toy")[1]
    assert (ex.number, ex.answers, ex.wrong, ex.has_metadata) == (2, ("sq", "half"), None, False)


# ---------- running a student copy in a kernel, outside the repository ----------
def _code_cell(src):
    import nbformat
    return nbformat.v4.new_code_cell(src)


def run_student_copy(path_or_nb, name=None, timeout=600) -> dict:
    """Execute the student copy of a lesson in a fresh kernel in an empty temporary folder. Lesson cells run once, in
    order; at each exercise the answer cell and the check run three times: left blank, with the metadata's wrong answer,
    and with the reference solution (which stays, so the lesson goes on with the right values). Returns what happened."""
    import tempfile
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    lesson = json.loads(Path(path_or_nb).read_text()) if isinstance(path_or_nb, (str, Path)) else path_or_nb
    name = name or Path(path_or_nb).name
    exs = exercises(lesson, name)
    student = nbformat.from_dict(student_copy(lesson, name))
    answer_cells = [i for i, c in enumerate(student.cells) if c.cell_type == "code" and _src(c).startswith(BLANK)]
    assert len(answer_cells) == len(exs), (name, len(answer_cells), len(exs))
    result = dict(name=name, exercises=[], total=len(exs), lesson_error=None, seconds=None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="handout-run-") as d:
        assert not Path(d).resolve().is_relative_to(ROOT)
        client = NotebookClient(student, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": d}})

        def run(cell, index):
            "None, or (ename, evalue) of the error the cell raised."
            try: client.execute_cell(cell, index)
            except CellExecutionError as e: return (e.ename, e.evalue)
            return None

        with client.setup_kernel():
            i = 0
            while i < len(student.cells):
                cell = student.cells[i]
                if cell.cell_type != "code": i += 1; continue
                if i in answer_cells:
                    ex = exs[answer_cells.index(i)]
                    check = student.cells[i + 1]
                    rec = dict(number=ex.number, answers=list(ex.answers), has_metadata=ex.has_metadata)
                    rec["blank"] = run(cell, i) or run(check, i + 1)
                    if ex.wrong is not None:
                        err = run(_code_cell(ex.wrong), i)
                        rec["wrong"] = ("wrong answer raised",) + err if err else run(check, i + 1)
                    reference = "\n".join(l for l in _src(lesson["cells"][ex.solution]).splitlines()
                                          if not DIRECTIVE.match(l))
                    err = run(_code_cell(reference), i)
                    rec["reference"] = ("reference solution raised",) + err if err else run(check, i + 1)
                    result["exercises"].append(rec)
                    i += 2; continue
                err = run(cell, i)
                if err:
                    result["lesson_error"] = (i, _src(cell).splitlines()[:1], *err)
                    break
                i += 1
    result["seconds"] = time.perf_counter() - t0
    return result


def _problems(res) -> list[str]:
    "What is wrong with one run of a student copy, one line per problem."
    out = []
    if res["lesson_error"]:
        i, first, ename, evalue = res["lesson_error"]
        out.append(f"the lesson stops at cell {i} {first}: {ename}: {evalue[:300]}")
    if not res["lesson_error"] and len(res["exercises"]) < res["total"]:
        out.append(f"only {len(res['exercises'])} of {res['total']} exercises were reached")
    for e in res["exercises"]:
        n = e["number"]
        if not e["has_metadata"]:
            out.append(f"exercise {n}: the `# Solution` cell has no metadata 'exercise' (answers, wrong)")
        b = e["blank"]
        if not b or b[0] != "NotAnswered" or f"exercise {n} is not answered yet" not in b[1]:
            out.append(f"exercise {n}: left blank, the check must stop with NotAnswered, got {b}")
        if e["has_metadata"] and (not e.get("wrong") or e["wrong"][0] != "AssertionError"):
            out.append(f"exercise {n}: with the metadata's wrong answer the check must fail with an AssertionError, got {e.get('wrong')}")
        if e["reference"] is not None:
            out.append(f"exercise {n}: with the reference solution the check must pass, got {e['reference']}")
    return out


def test_a_student_copy_in_a_kernel_stops_unanswered_fails_wrong_and_passes_the_reference():
    res = run_student_copy(TOY, "00_toy.ipynb")
    assert res["lesson_error"] is None and [e["number"] for e in res["exercises"]] == [1, 2]
    first = res["exercises"][0]
    assert first["blank"][0] == "NotAnswered" and first["blank"][1].startswith("exercise 1 is not answered yet: set answer")
    assert first["wrong"][0] == "AssertionError" and first["reference"] is None
    assert _problems(res) == []
    # the checker itself fails: a check that cannot tell a wrong answer (or that always fails) is reported
    weak = json.loads(json.dumps(TOY)); weak["cells"][9]["source"] = "# Check\nassert sq > 0"
    assert _problems(run_student_copy(weak, "00_toy.ipynb")) == [
        "exercise 2: with the metadata's wrong answer the check must fail with an AssertionError, got None"]


# ---------- the handout folder ----------
@pytest.fixture
def toy_dir(tmp_path):
    d = tmp_path / "nbs"; d.mkdir()
    (d / "00_toy.ipynb").write_text(json.dumps(TOY))
    (d / "01_plain.ipynb").write_text(json.dumps(_nb(("code", "#| export\nx = 1"))))
    (d / "90_appendix.ipynb").write_text(json.dumps(_nb(("code", "x = 1"))))
    return d


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.name.endswith((".tmp", ".old")))


def test_handout_writes_the_lessons_and_a_readme(toy_dir, tmp_path):
    before = {p: p.read_bytes() for p in toy_dir.iterdir()}
    written = make_handout(tmp_path / "out" / "deep", nbs_dir=toy_dir)
    assert [p.name for p in written] == ["00_toy.ipynb", "01_plain.ipynb", "README.md"]   # the appendix is no lesson
    assert {p: p.read_bytes() for p in toy_dir.iterdir()} == before
    assert json.loads(written[0].read_text()) == student_copy(TOY, "00_toy.ipynb")
    readme = written[-1].read_text()
    assert "| 00_toy.ipynb | 2 |" in readme and "| 01_plain.ipynb | – |" in readme
    # what a student installs: the package (with diffusers, which a lesson compares with) and fastcore, torch's CPU build first
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in readme
    assert '.venv/bin/pip install "deq-ddim-nb[diffusers]"' in readme
    assert not re.search(r"\[dev\]|mkdocs|playwright|zizmor|-e \.", readme)
    assert "NotAnswered" in readme and "jupyter lab" in readme


def test_no_overwrite_unless_asked_and_never_a_fifo_or_through_a_link(toy_dir, tmp_path):
    out = tmp_path / "out"
    make_handout(out, nbs_dir=toy_dir)
    (out / "00_toy.ipynb").write_text("my answers")
    with pytest.raises(FileExistsError, match="overwrite"):
        make_handout(out, nbs_dir=toy_dir)
    assert (out / "00_toy.ipynb").read_text() == "my answers"
    make_handout(out, nbs_dir=toy_dir, overwrite=True)
    assert json.loads((out / "00_toy.ipynb").read_text()) == student_copy(TOY, "00_toy.ipynb")
    # a FIFO is never replaced, not even with overwrite, and then nothing else is written either
    fifo = tmp_path / "fifo"; fifo.mkdir(); os.mkfifo(fifo / "01_plain.ipynb")
    with pytest.raises(ValueError, match="FIFO"):
        make_handout(fifo, nbs_dir=toy_dir, overwrite=True)
    assert sorted(p.name for p in fifo.iterdir()) == ["01_plain.ipynb"]
    # a dangling link is refused without overwrite; with it, the link itself is replaced and nothing is written through it
    link = tmp_path / "link"; link.mkdir(); os.symlink(tmp_path / "planted.ipynb", link / "00_toy.ipynb")
    with pytest.raises(FileExistsError, match="dangling symbolic link"):
        make_handout(link, nbs_dir=toy_dir)
    assert sorted(p.name for p in link.iterdir()) == ["00_toy.ipynb"] and not (tmp_path / "planted.ipynb").exists()
    make_handout(link, nbs_dir=toy_dir, overwrite=True)
    assert not (link / "00_toy.ipynb").is_symlink() and not (tmp_path / "planted.ipynb").exists()
    # a link planted at a temporary name is never written through (temporaries get fresh names)
    target, out2 = tmp_path / "victim.txt", tmp_path / "out2"
    target.write_text("keep"); out2.mkdir()
    planted = [out2 / n for n in (".00_toy.ipynb.tmp", ".README.md.tmp")]
    for p in planted: os.symlink(target, p)
    make_handout(out2, nbs_dir=toy_dir)
    assert target.read_text() == "keep" and all(p.is_symlink() for p in planted)
    for p in planted: p.unlink()
    with pytest.raises(ValueError, match="out_dir must differ from nbs_dir"):
        make_handout(toy_dir, nbs_dir=toy_dir, overwrite=True)
    with pytest.raises(ValueError, match="notebooks"):
        make_handout(out, nbs_dir=toy_dir, notebooks=["07_missing"])
    with pytest.raises(TypeError, match="out_dir"):
        make_handout(None, nbs_dir=toy_dir)
    assert _leftovers(tmp_path) == []


_INTERRUPT = textwrap.dedent("""
    import os, signal, sys
    from deq_ddim_nb.classroom import make_handout
    real, calls = os.fsync, []
    def fsync(fd):                       # the second file written: a signal arrives, or the disk is full
        calls.append(fd)
        if len(calls) == 2:
            print("interrupting", flush=True)
            if sys.argv[3] == "full": raise OSError(28, "No space left on device")
            os.kill(os.getpid(), getattr(signal, sys.argv[3]))
        return real(fd)
    os.fsync = fsync
    make_handout(sys.argv[1], nbs_dir=sys.argv[2])
    """)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "full"])
def test_an_interrupted_or_failed_handout_leaves_nothing_behind(toy_dir, tmp_path, how):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _INTERRUPT, str(out), str(toy_dir), how], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "interrupting" in r.stdout, r.stderr[-2000:]                              # the failure did happen mid-write
    assert r.returncode != 0
    assert not out.exists() or list(out.iterdir()) == []                              # all or nothing
    assert _leftovers(tmp_path) == []


def test_command_line(toy_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deq_ddim_nb.cli", "handout", str(tmp_path / "out"), "--nbs", str(toy_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"wrote {tmp_path / 'out' / n}" for n in ("00_toy.ipynb", "01_plain.ipynb", "README.md")] + \
        [f"3 files in {tmp_path / 'out'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr


def test_deq_ddim_handout_refuses_a_fifo_and_a_dangling_link_without_force(tmp_path):
    exe = BIN / "deq-ddim"
    if not exe.exists(): pytest.skip("the deq-ddim console script is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "handout"; out.mkdir()
    os.mkfifo(out / "README.md")
    r = subprocess.run([str(exe), "handout", str(out), "--force"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode != 0 and "FIFO" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]
    (out / "README.md").unlink(); os.symlink(tmp_path / "nowhere", out / "README.md")
    r = subprocess.run([str(exe), "handout", str(out)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode != 0 and "symbolic link" in r.stderr and not (tmp_path / "nowhere").exists()
    assert _leftovers(tmp_path) == []


# ---------- the course's lessons ----------
LESSONS = [p.name for p in lesson_notebooks(NBS)]
WITH_EXERCISES = [n for n in LESSONS if any(cell_role(c) == "solution" for c in json.loads((NBS / n).read_text())["cells"])]


@pytest.mark.parametrize("lesson", LESSONS)
def test_student_copy_of_each_lesson_is_clean(lesson):
    nb = json.loads((NBS / lesson).read_text())
    st = student_copy(nb, lesson)
    assert all(not DIRECTIVE.search(_src(c)) for c in st["cells"] if c["cell_type"] == "code"), "directives left"
    exs = exercises(nb, lesson)
    roles = {i for e in exs for i in (e.solution, e.check)}
    kept = [c for i, c in enumerate(nb["cells"]) if i not in roles and (c["cell_type"] != "code" or
            any(not DIRECTIVE.match(l) for l in _src(c).splitlines() if l.strip()))]
    rest = [c for c in st["cells"] if not (c["cell_type"] == "code" and (_src(c).startswith(BLANK) or cell_role(c) == "check"))]
    assert len(kept) == len(rest)
    for a, b in zip(kept, rest):                                 # every other cell: same outputs (figures too), same code
        if a["cell_type"] != "code": assert a == b; continue
        assert a.get("outputs") == b.get("outputs")
        assert "\n".join(l for l in _src(a).splitlines() if not DIRECTIVE.match(l)) == _src(b)
    for e in (e for e in exs if e.has_metadata):                # the question names every answer
        q = _src(nb["cells"][e.question])
        missing = [a for a in e.answers if not re.search(rf"`{re.escape(a)}`|\b{re.escape(a)}\b", q)]
        assert not missing, f"{lesson}, exercise {e.number}: the question does not name {missing}"


@pytest.fixture(scope="module")
def lesson_runs(request):
    "The student copies of the selected lessons, run in the background, WORKERS at a time (each in its own kernel)."
    wanted = [it.callspec.params["lesson"] for it in request.session.items
              if it.module is request.module and it.originalname == "test_every_exercise_of_the_student_copy"]
    pool = ThreadPoolExecutor(max(1, WORKERS))
    futures = {n: pool.submit(run_student_copy, NBS / n) for n in dict.fromkeys(wanted)}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("lesson", WITH_EXERCISES)
def test_every_exercise_of_the_student_copy(lesson, lesson_runs):
    """Run outside the repository, the student copy runs up to its first exercise; every exercise stops with
    NotAnswered when left blank, fails with the metadata's wrong answer and passes with the reference solution."""
    res = lesson_runs[lesson].result()
    problems = _problems(res)
    n, ok = res["total"], sum(1 for e in res["exercises"] if not _problems(dict(res, lesson_error=None, exercises=[e], total=1)))
    print(f"{lesson}: {n} exercises, {len(res['exercises'])} reached, {ok} pass all three cases, {res['seconds']:.0f} s")
    assert not problems, f"{lesson}: {ok} of {n} exercises pass; " + "; ".join(problems)
