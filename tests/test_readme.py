import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
