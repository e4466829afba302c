"""The solver explorer in a real JupyterLab: start a server on 127.0.0.1 in a temporary folder, open a small notebook in
headless Chromium, run all cells, move the round slider with the keyboard and check that the picture and the readout
change. The server is always shut down."""
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]

CELLS = [
    "import torch\ntorch.set_num_threads(1)\nfrom deq_ddim_nb.widgets import solver_explorer",
    "ex = solver_explorer(T=10, solver='picard', max_iter=11, batch=2)\nex",
]


def _notebook(path: Path):
    nb = {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": s} for i, s in enumerate(CELLS)]}
    path.write_text(json.dumps(nb))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    if not CHROMIUM.exists(): pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (docs extra)")
    pytest.importorskip("jupyterlab")
    work = tmp_path / "work"; work.mkdir()
    _notebook(work / "explore.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"), "PYTHONPATH": str(ROOT)}
    cmd = [str(BIN / "jupyter"), "lab", "--no-browser", f"--port={port}", f"--ServerApp.token={token}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0: cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None: break
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2); break
            except OSError:
                time.sleep(0.5)
        if proc.poll() is not None: pytest.fail("jupyter lab exited:\n" + (tmp_path / "lab.log").read_text()[-3000:])
        yield base, token
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=5)
        except OSError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try: proc.wait(timeout=10)
            except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()


def test_solver_explorer_slider_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright
    base, token = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/explore.ipynb?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            # wait for the kernel, then run all cells: Shift+Enter on each, from the first cell in command mode
            page.locator("#jp-main-statusbar", has_text=re.compile(r"\|\s*Idle")).wait_for(timeout=120_000)
            page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").first.click()
            for _ in CELLS: page.keyboard.press("Shift+Enter")
            readout = page.locator(".deq-readout")
            readout.wait_for(timeout=60_000)
            img = page.locator(".jp-OutputArea-output img.widget-image").first
            img.wait_for(timeout=30_000)
            text0, src0 = readout.inner_text(), img.get_attribute("src")
            m = re.search(r"round (\d+) of (\d+)", text0)
            assert m and m.group(1) == m.group(2), text0           # starts at the last round
            slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(r"^round$")))
            handle = slider.locator(".noUi-handle").first
            handle.focus()
            for _ in range(3): handle.press("ArrowLeft")
            want = f"round {int(m.group(1)) - 3} of"
            page.wait_for_function("w => document.querySelector('.deq-readout').innerText.includes(w)", arg=want, timeout=30_000)
            assert want in readout.inner_text() and readout.inner_text() != text0
            page.wait_for_function("s => document.querySelector('.jp-OutputArea-output img.widget-image').src !== s",
                                   arg=src0, timeout=30_000)
            assert img.get_attribute("src") != src0
        except Exception:
            (ROOT / "_site_screenshots").mkdir(exist_ok=True)    # for review: what the lab showed when it failed
            page.screenshot(path=str(ROOT / "_site_screenshots" / "lab_failure.png"))
            raise
        finally:
            browser.close()
