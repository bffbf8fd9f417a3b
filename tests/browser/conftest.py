"""A JupyterLab server and a headless Chromium for the browser test (make browser-test).

The server runs the venv's JupyterLab — with the settings `make lab` installs — on 127.0.0.1
with a random token, in a temporary folder holding copies of the notebooks (Run All and
saving change only the copies). Chromium is the system's (`chromium`, a Debian package;
`CHROMIUM=/path` to use another), driven by Playwright; any request that would leave
127.0.0.1 is blocked and recorded. The server and its kernels are stopped at the end, also
after a failure. Screenshots go to tests/browser/screenshots/ (git-ignored).

`COURSE_NOTEBOOKS=DIR` takes the notebooks from DIR instead of notebooks/ (e.g. freshly
executed copies). The kernels run in the offline world unless COURSE_LIB_WORLD says otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
NOTEBOOKS = ("03_gpt2.ipynb", "06_sampling.ipynb", "09_ddpm.ipynb")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Only for the test: every cell attached to the page, so off-screen outputs can be inspected.
TEST_SETTINGS = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab: its URL, token, folder, and a few REST calls."""

    def __init__(self, root: Path, port: int, token: str, process: subprocess.Popen, log: Path):
        self.root, self.port, self.token, self.process, self.log = root, port, token, process, log
        self.url = f"http://127.0.0.1:{port}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def notebook_url(self, name: str) -> str:
        """The notebook alone, in a new workspace (nothing reopened from an earlier page)."""
        return f"{self.url}/lab/workspaces/{secrets.token_hex(4)}/tree/{name}?token={self.token}"

    def shutdown_kernels(self) -> None:
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")


def _wait_until_up(lab: Lab, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {lab.process.returncode}:\n{lab.log.read_text()[-3000:]}")
        try:
            lab.api("status")
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{lab.log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    source = Path(os.environ.get("COURSE_NOTEBOOKS", ROOT / "notebooks"))
    for name in NOTEBOOKS:
        shutil.copy(source / name, root / name)
    settings = home / "user-settings"
    for plugin, values in TEST_SETTINGS.items():
        package, name = plugin.split(":")
        (settings / package).mkdir(parents=True, exist_ok=True)
        (settings / package / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "HF_HUB_OFFLINE": "1",
           "COURSE_LIB_WORLD": os.environ.get("COURSE_LIB_WORLD", "offline")}  # the stored outputs' world
    port, token = _free_port(), secrets.token_hex(16)
    log = home / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0"]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                   start_new_session=True)  # its own process group: kernels included
    server = Lab(root, port, token, process, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        try:
            server.shutdown_kernels()
        except OSError:
            pass
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        try:  # whatever the server left in its group (kernels it could not stop)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no Chromium: install the Debian package `chromium` (.ci/run does) or set CHROMIUM=/path")
    return path


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context, lab):
    """A fresh page; requests that would leave 127.0.0.1 are blocked and listed in ``page.external``."""
    page = browser_context.new_page()
    page.external, page.console_errors = [], []

    def route(r):
        if r.request.url.startswith(lab.url) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            page.external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    yield page
    page.close()
