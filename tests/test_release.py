"Release files: workflows (schema, zizmor), version in one place, license, citation, metadata, and the wheel itself."
import os
import re
import subprocess
import sys
import tarfile
try: import tomllib
except ModuleNotFoundError: import tomli as tomllib     # Python 3.10
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yaml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def tool(name):
    exe = BIN / name
    assert exe.exists(), f"{name} is missing: install the dev extra (pip install -e '.[dev]')"
    return str(exe)


def workflow(name):
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))                 # YAML 1.1 reads the key `on` as True
    return wf


def steps(wf):
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


# --- workflows -----------------------------------------------------------------------------------------------------------
def test_workflows_exist():
    assert {p.name for p in WORKFLOWS} == {"test.yaml", "deploy.yaml"}


def test_workflows_match_the_github_schema():
    r = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_finds_nothing():
    r = subprocess.run([tool("zizmor"), "--offline", "--persona=pedantic", "--no-progress", str(ROOT / ".github" / "workflows")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "No findings" in r.stdout + r.stderr, r.stdout + r.stderr


def test_actions_are_pinned_and_checkout_keeps_no_credentials():
    for p in WORKFLOWS:
        for s in steps(workflow(p.name)):
            if "uses" not in s: continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", s["uses"]), (p.name, s["uses"])
            if s["uses"].startswith("actions/checkout@"): assert s["with"]["persist-credentials"] is False, p.name


def test_test_workflow_runs_ci_on_push_and_pull_request():
    wf = workflow("test.yaml")
    assert "push" in wf["on"] and "pull_request" in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    assert any(s.get("run", "").strip() == ".ci/run" for s in steps(wf))


def test_deploy_workflow_builds_the_site_and_deploys_to_pages():
    wf = workflow("deploy.yaml")
    assert wf["permissions"] == {}
    uses = [s["uses"].split("@")[0] for s in steps(wf) if "uses" in s]
    for action in ("actions/configure-pages", "actions/upload-pages-artifact", "actions/deploy-pages"): assert action in uses
    runs = "\n".join(s.get("run", "") for s in steps(wf))
    assert '.[docs]' in runs and "python scripts/build_site.py" in runs
    assert "python scripts/build_site.py" in (ROOT / "README.md").read_text()          # the README's site command
    perms = {name: job.get("permissions") for name, job in wf["jobs"].items()}
    assert perms == {"build": {"contents": "read"}, "deploy": {"pages": "write", "id-token": "write"}}
    upload = next(s for s in steps(wf) if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_site"


# --- version, license, citation, metadata ----------------------------------------------------------------------------------
def test_version_lives_in_one_place():
    from deq_ddim_nb import __version__
    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "deq_ddim_nb.__version__"}
    latest = re.search(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.M).group(1)
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert __version__ == latest == str(cff["version"]), (__version__, latest, cff["version"])


def test_license_is_the_full_apache_text():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert set(PYPROJECT["project"]["license-files"]) == {"LICENSE", "NOTICE"}


def test_citation_cites_the_paper_and_the_data():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "Apache-2.0"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Deep Equilibrium Approaches to Diffusion Models" and paper["year"] == 2022
    assert [a["family-names"] for a in paper["authors"]] == ["Pokle", "Geng", "Kolter"]
    assert "NeurIPS 2022" in paper["collection-title"]
    data = [r for r in cff["references"] if r["type"] == "dataset"]
    assert data and data[0]["license"] == "CC-BY-4.0" and "Handwritten Digits" in data[0]["title"]
    assert cff["repository-code"] == PYPROJECT["project"]["urls"]["Repository"]


def test_data_attribution_is_in_the_readme_and_notice():
    for name in ("README.md", "NOTICE"):
        text = " ".join((ROOT / name).read_text().split())
        assert "CC BY 4.0" in text and "Optical Recognition of Handwritten Digits" in text and "UCI" in text, name


def test_metadata():
    proj = PYPROJECT["project"]
    cls = set(proj["classifiers"])
    assert {"Framework :: Jupyter", "Topic :: Scientific/Engineering :: Artificial Intelligence"} <= cls
    lowest = proj["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {lowest}" in cls
    assert proj["authors"] == [{"name": "The deq-ddim-nb authors"}]
    extras = proj["optional-dependencies"]
    for dep in ("hypothesis", "build", "check-jsonschema", "zizmor", "pytest", "nbdev>=3"): assert dep in extras["dev"], dep
    assert extras["bench"] == ["torchdeq"]
    nbdev = yaml.safe_load((ROOT / "nbs" / "nbdev.yml").read_text())["website"]
    urls = proj["urls"]
    assert urls["Documentation"].rstrip("/") == nbdev["site-url"].rstrip("/") == urls["Homepage"].rstrip("/")
    assert urls["Repository"] == nbdev["repo-url"]


# --- the wheel, installed where the repository is not ----------------------------------------------------------------------
ASSETS = {"digits_unet.safetensors", "digits_unet.json", "digits_classifier.safetensors"}


@pytest.mark.release
@pytest.mark.skipif(os.environ.get("DEQ_DDIM_RELEASE_CHECK") != "1", reason="builds and installs the wheel: set DEQ_DDIM_RELEASE_CHECK=1 (.ci/run does)")
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheel, = dist.glob("*.whl"); sdist, = dist.glob("*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"deq_ddim_nb/assets/{a}" for a in ASSETS} <= names
    assert any(n.endswith("licenses/LICENSE") for n in names) and any(n.endswith("licenses/NOTICE") for n in names)
    members = {m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m}
    for need in ("README.md", "LICENSE", "NOTICE", "CITATION.cff", "CHANGELOG.md", "nbs/11_cli.ipynb", "nbs/index.ipynb",
                 "tests/test_cli.py", "scripts/make_readme.py"):
        assert need in members, need
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    for args in (["torch==2.13.0"], [str(wheel)]):                # the CPU torch first, then the wheel with its deps
        r = subprocess.run(pip + args, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    work = tmp_path / "elsewhere"; work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(venv / "bin" / "deq-ddim"), "sample", "--model", "digits", "--T", "20", "--n", "4", "--no-progress",
                        "--out", str(work / "x.png")], capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0 and "4/4 converged" in r.stdout, r.stdout + r.stderr
    assert (work / "x.png").read_bytes()[:4] == b"\x89PNG"
    code = ("import deq_ddim_nb, pathlib; from deq_ddim_nb.models import load_model; from deq_ddim_nb.quality import load_classifier; "
            "load_model('digits'); load_classifier(); print(pathlib.Path(deq_ddim_nb.__file__).resolve())")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(venv.resolve()) and not Path(r.stdout.strip()).is_relative_to(ROOT)
