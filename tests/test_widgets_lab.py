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


# --- the kernel-free explorers: no server, no kernel --------------------------------------------------------------------

def _png_array(uri: str):
    import base64, io
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))), dtype=float) / 255


def test_kernel_free_frames_end_at_the_sequential_sample():
    "The last Picard frame shows the sequential DDIM x_0 (ground truth), to the PNG's 8-bit precision."
    import torch
    torch.set_num_threads(1)
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.schedules import DDIMSchedule
    from deq_ddim_nb.widgets import default_model, default_noise, solver_frames, to_unit
    model = default_model(); x_T = default_noise(model, 2)
    frames, res = solver_frames(model, x_T, T=6, solver="picard", max_iter=7, every=1, b=1)
    assert len(frames) == len(res) <= 7 and frames[-1].readout.startswith(f"round {len(res)} of {len(res)}")
    x0 = ddim_sample(model, x_T, DDIMSchedule.make(6))[1, 0]                    # image b=1, its one channel
    img = _png_array(frames[-1].images[0])
    assert abs(img[:, -8:] - to_unit(x0)).max() <= 0.5 / 255 + 1e-9          # the last column is x_0
    assert abs(img[:, :8] - to_unit(x_T[1, 0])).max() <= 0.5 / 255 + 1e-9     # the first is x_T
    first = _png_array(frames[0].images[0])
    assert abs(first[:, -8:] - to_unit(x0)).max() > 0.05                        # round 1 is not there yet


def test_kernel_free_explorers_move_without_a_kernel():
    "Each explorer's slider shows another frame and moves the marker on its curve; the solver menu swaps explorers."
    if not CHROMIUM.exists(): pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (docs extra)").sync_playwright
    import torch
    torch.set_num_threads(1)
    from deq_ddim_nb.widgets import (InversionRecord, default_model, default_noise, static_eta_explorer,
                                     static_inversion_viewer, static_solver_explorer)
    model = default_model(); x_T = default_noise(model, 2)
    records = [InversionRecord(e, torch.rand(1, 1, 8, 8) * 2 - 1, 10.0 / (e + 1)) for e in range(0, 12, 3)]
    parts = [static_solver_explorer(model, x_T, T=6), static_eta_explorer(model, x_T, etas=[0.0, 0.5, 1.0], T=6),
             static_inversion_viewer(torch.rand(1, 1, 8, 8) * 2 - 1, records)]
    html = "<!doctype html><meta charset='utf-8'><body>" + "".join(p._repr_html_() for p in parts) + "</body>"
    state = """i => { const e = Array.from(document.querySelectorAll('.deq-explorer')).filter(x => x.checkVisibility())[i];
      const f = Array.from(e.querySelectorAll('div[data-frame]')).filter(x => x.checkVisibility());
      const m = Array.from(e.querySelectorAll('svg [data-frame]')).filter(x => getComputedStyle(x).display !== 'none');
      return {frames: f.map(x => x.dataset.frame), readout: f.map(x => x.innerText).join(), src: f.map(x => Array.from(x.querySelectorAll('img')).map(i => i.src).join()).join(),
              marker: m.map(x => x.getAttribute('data-frame')).join()}; }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.set_content(html)
            n = page.evaluate("() => Array.from(document.querySelectorAll('.deq-explorer')).filter(x => x.checkVisibility()).length")
            assert n == 3
            for i in range(n):
                before = page.evaluate(state, i)
                slider = page.locator(".deq-explorer:visible input[type=range]").nth(i)
                key = "ArrowLeft" if slider.input_value() != "0" else "ArrowRight"
                slider.focus(); slider.press(key)
                after = page.evaluate(state, i)
                assert len(before["frames"]) == len(after["frames"]) == 1 and after["frames"] != before["frames"]
                assert after["readout"] != before["readout"] and after["marker"] == after["frames"][0]
                assert after["src"] != before["src"]                                  # the picture changed
            page.locator(".deq-explorer-group select").select_option("picard")
            shown = page.evaluate("() => Array.from(document.querySelectorAll('.deq-explorer-group .deq-explorer'))"
                                  ".filter(e => e.checkVisibility()).map(e => e.dataset.config)")
            assert shown == ["picard"]
        finally:
            browser.close()
