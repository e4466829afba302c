import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _index():
    return json.loads((ROOT / "nbs" / "index.ipynb").read_text())


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_has_exactly_two_shell_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    cmds = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    assert len(cmds) == 2, cmds
    assert "deq-ddim sample" in cmds[0] and "pytest" in cmds[1]
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert cmds[1].strip() in ci, "the test command in .ci/run must be the README's"


def test_the_two_commands_end_the_home_page():
    "The home page promises 'the two commands at the end of this page': its last cell holds both, and nothing follows."
    cells = _index()["cells"]
    last = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "markdown" and len(re.findall(r"```sh\n(.*?)\n```", last, flags=re.S)) == 2
    assert not any("```sh" in "".join(c["source"]) for c in cells[:-1])
    prose = re.sub(r"\s+", " ", "".join("".join(c["source"]) for c in cells))
    assert "the two commands at the end of this page" in prose.lower()


def test_home_page_lists_every_notebook_in_reading_order():
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "scripts" / "build_site.py")
    bs = importlib.util.module_from_spec(spec); spec.loader.exec_module(bs)
    text = "".join("".join(c["source"]) for c in _index()["cells"] if c["cell_type"] == "markdown")
    linked = re.findall(r"\[`?(\w+)`?\]\(\1\.ipynb\)", text)
    assert linked == [p.stem for p in bs.reading_order() if p.stem != "index"]


def test_home_page_and_course_guide_agree_on_the_number_of_lectures():
    guide = json.loads((ROOT / "nbs" / "course_guide.ipynb").read_text())
    out = "\n".join("".join(o.get("data", {}).get("text/markdown", "")) for c in guide["cells"] for o in c.get("outputs", []))
    n = len([l for l in out.splitlines() if re.match(r"\|\s*\d\.\s", l)])
    home = (ROOT / "README.md").read_text()
    assert f"{NUMBER_WORDS[n]}-lecture" in home and not re.search(rf"\b(?!{NUMBER_WORDS[n]})\w+-lecture plan", home)
