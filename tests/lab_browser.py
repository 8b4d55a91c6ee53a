"""A real JupyterLab in a real browser: the helpers behind tests/test_browser.py.

The learner's Lab is started exactly as a learner starts it (``bncourse start DIR --no-browser
--port P``, which runs ``workspace.lab_command`` with ``workspace.lab_environment``); the token comes
from ``JUPYTER_TOKEN``. Playwright drives the system's Chromium (``playwright install`` downloads a
browser build of its own, which is not always possible): ``find_chromium()`` looks for it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # pragma: no cover - test_browser.py skips without playwright
    PlaywrightTimeout = TimeoutError

HOW_TO_GET_CHROMIUM = (
    "the browser tests need Chromium and the playwright package: `apt-get install chromium` "
    "(Debian/Ubuntu; or set BNCOURSE_CHROMIUM to a Chrome/Chromium executable) and "
    "`pip install -e \".[test]\"`"
)
# Variables the test runner sets for itself that a learner's Lab would not have: MPLBACKEND=Agg
# would hide every plot (ipykernel only picks the inline backend when MPLBACKEND is unset).
RUNNER_ONLY = ("MPLBACKEND", "OMP_NUM_THREADS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT",
               "PYTEST_CURRENT_TEST", "JUPYTER_CONFIG_PATH")


def find_chromium() -> str | None:
    """The system's Chromium (or Chrome), or None."""
    if os.environ.get("BNCOURSE_CHROMIUM"):
        return os.environ["BNCOURSE_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def learner_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RUNNER_ONLY}
    env.update(extra)
    return env


@dataclass
class Server:
    """A running JupyterLab: its base URL, token, process and log file."""

    process: subprocess.Popen
    port: int
    token: str
    log: Path
    _log_file: object = field(repr=False, default=None)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, **query: str) -> str:
        q = "&".join([*(f"{k}={v}" if v else k for k, v in query.items()), f"token={self.token}"])
        return f"{self.base}/{path.lstrip('/')}?{q}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.api("status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def shutdown_kernels(self, page=None) -> None:
        """Shut down every kernel, after leaving the page (as a learner closes the tab first: a kernel
        shut down under an open notebook makes jupyter_server warn about events on a closed stream)."""
        if page is not None:
            self.wait_until_kernels_are_quiet()
            page.goto("about:blank")
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def wait_until_kernels_are_quiet(self, quiet: float = 2.0, timeout: float = 60) -> None:
        """Until no kernel has sent a message for ``quiet`` seconds (the server's ``last_activity``).

        A page that leaves while its kernel still answers the page's opening requests makes
        jupyter_server log "Uncaught exception in ZMQStream callback" (WebSocketClosedError): a race
        in the server, not a fault of the course (CI run of 2026-12-01), which a learner avoids by
        not closing the tab in the second after a notebook opens."""
        from datetime import datetime, timezone

        deadline = time.time() + timeout
        while time.time() < deadline:
            now = datetime.now(timezone.utc)
            last = [datetime.fromisoformat(k["last_activity"].replace("Z", "+00:00"))
                    for k in self.api("kernels") if k.get("last_activity")]
            if all((now - t).total_seconds() >= quiet for t in last):
                return
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        if self._log_file:
            self._log_file.close()


def start_learner_lab(workspace: Path, log: Path, env: dict[str, str]) -> Server:
    """``bncourse start WORKSPACE --no-browser --port P``, as a learner types it."""
    port, token = free_port(), secrets.token_hex(16)
    out = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bncourse.cli", "start", str(workspace), "--no-browser", "--port", str(port)],
        stdout=out, stderr=subprocess.STDOUT, env=dict(env, JUPYTER_TOKEN=token), start_new_session=True,
    )
    server = Server(proc, port, token, log, out)
    server.wait_ready()
    return server


def start_instructor_lab(course: Path, log: Path, env: dict[str, str]) -> Server:
    """``jupyter lab`` in the course folder, as an instructor runs it (the environment's own config)."""
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    out = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=course, stdout=out, stderr=subprocess.STDOUT,
                            env=dict(env, JUPYTER_TOKEN=token), start_new_session=True)
    server = Server(proc, port, token, log, out)
    server.wait_ready()
    return server


def library_warnings(log_text: str) -> list[str]:
    """Warning and error lines of a Jupyter server log (``[W ...]``, ``[E ...]``, ``WARNING``)."""
    return [line for line in log_text.splitlines()
            if re.match(r"\[(W|E|C) ", line) and "received signal" not in line
            or "WARNING" in line or "Warning:" in line]


# --------------------------------------------------------------------------------------------------
# The course's notebooks: where the exercises are, and their solutions from the nbgrader source
# --------------------------------------------------------------------------------------------------


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def solutions(source_notebook: Path) -> dict[str, str]:
    """grade_id -> the solution cell's code as the instructor wrote it, without nbgrader's markers."""
    nb = nbformat.read(source_notebook, as_version=4)
    out = {}
    for cell in nb.cells:
        md = _nbgrader(cell)
        if cell.cell_type == "code" and md.get("solution"):
            lines = [l for l in cell.source.splitlines() if l.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
            out[md["grade_id"]] = "\n".join(lines)
    return out


@dataclass
class Layout:
    """Cell indices of one student notebook: its exercises (grade_id -> index) and its check cells."""

    exercises: dict[str, int]
    checks: dict[str, int]
    code_cells: int


def layout(student_notebook: Path) -> Layout:
    nb = nbformat.read(student_notebook, as_version=4)
    exercises, checks = {}, {}
    for i, cell in enumerate(nb.cells):
        md = _nbgrader(cell)
        if cell.cell_type != "code":
            continue
        if md.get("solution"):
            exercises[md["grade_id"]] = i
        elif md.get("grade"):
            checks[md["grade_id"]] = i
    return Layout(exercises, checks, sum(c.cell_type == "code" for c in nb.cells))


# --------------------------------------------------------------------------------------------------
# What a learner does in the page (Playwright sync API)
# --------------------------------------------------------------------------------------------------

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
CURRENT_TAB = "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current"
STDERR = "[data-mime-type='application/vnd.jupyter.stderr']"


def open_notebook(page, server: Server, relpath: str) -> None:
    """Open one notebook as a learner does, from the file browser of the Lab the page shows: its
    home, the notebook's folder, the notebook (double-clicks); wait until its kernel is idle."""
    try:
        _open_from_file_browser(page, relpath)
    except PlaywrightTimeout:  # say what the page showed, then try once more from a fresh page
        print(f"open_notebook({relpath!r}): the file browser did not open it; the page showed "
              f"{_what_the_page_shows(page)}; reloading the Lab and trying again", flush=True)
        page.goto(server.url("lab", reset=""))
        _open_from_file_browser(page, relpath)
    page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=120_000)
    page.wait_for_selector(f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    # The page says idle before its kernel's websocket is up; leaving before that makes jupyter_server
    # log an uncaught exception (a race in its handshake), so wait until the server sees the page.
    deadline = time.time() + 120
    while time.time() < deadline:
        kernels = [s["kernel"] for s in server.api("sessions") if s.get("path") == relpath]
        if kernels and kernels[0].get("connections", 0) >= 1 and kernels[0].get("execution_state") == "idle":
            return
        time.sleep(0.5)
    raise TimeoutError(f"{relpath}: its kernel never connected and went idle")


def _open_from_file_browser(page, relpath: str) -> None:
    browser = page.locator("#filebrowser")
    browser.locator(".jp-BreadCrumbs-home").click(timeout=30_000)
    for name in relpath.split("/"):
        text = page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$"))
        browser.locator(".jp-DirListing-item", has=text).dblclick(timeout=30_000)


def _what_the_page_shows(page) -> dict:
    """The file browser's folder and items, open tabs and dialogs: for an error message."""
    def texts(selector: str) -> list[str]:
        try:
            return page.locator(selector).all_inner_texts()[:20]
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not raise
            return [repr(exc)]

    return {"url": page.url, "folder": texts("#filebrowser .jp-BreadCrumbs"),
            "items": texts("#filebrowser .jp-DirListing-itemText"),
            "tabs": texts("#jp-main-dock-panel .lm-TabBar-tabLabel"), "dialogs": texts(".jp-Dialog")}


def close_notebook(page, server: Server) -> None:
    """Close the notebook's tab (its changes saved or given up: a learner's choice, asked in a
    dialog) and shut its kernel down once the tab has let go of it, as a learner closes the tab and
    then stops the kernel from the Running panel. The Lab stays open for the next notebook."""
    server.wait_until_kernels_are_quiet()
    page.locator(f"{CURRENT_TAB} .lm-TabBar-tabCloseIcon").click()
    # Either the tab goes, or JupyterLab asks about unsaved changes first: wait for whichever comes
    # (no fixed wait for a dialog that a saved or untouched notebook never shows).
    page.wait_for_function(f"""() => document.querySelector('.jp-Dialog')
        || !document.querySelector({json.dumps(NOTEBOOK)})""", timeout=60_000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator(".jp-Dialog-button", has_text=re.compile("^(Discard|Don't Save)$")).click()
    page.wait_for_selector(NOTEBOOK, state="detached", timeout=60_000)
    deadline = time.time() + 60
    while time.time() < deadline and any(s["kernel"].get("connections", 0) for s in server.api("sessions")):
        time.sleep(0.25)
    server.shutdown_kernels()


def cell(page, index: int):
    return page.locator(f"{NOTEBOOK} .jp-Notebook .jp-Cell").nth(index)


def cell_source(page, index: int) -> str:
    """The code in a cell's editor, as shown (the lines CodeMirror rendered)."""
    c = cell(page, index)
    c.scroll_into_view_if_needed()
    lines = c.locator(".cm-content .cm-line")
    lines.first.wait_for(state="attached", timeout=30_000)  # an editor is created when its cell is shown
    return "\n".join(lines.all_text_contents())


def type_into_cell(page, index: int, code: str) -> None:
    """Click into the cell's editor, select everything and type ``code`` over it (as a paste)."""
    c = cell(page, index)
    c.scroll_into_view_if_needed()
    c.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(code)
    page.keyboard.press("Escape")


def menu(page, top: str, item: str) -> None:
    page.locator("#jp-menu-panel .lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(top)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).first.click()


_PROMPTS_JS = f"""() => Array.from(document.querySelectorAll("{NOTEBOOK} .jp-CodeCell .jp-InputPrompt"))
    .map(p => p.textContent.trim())"""


def wait_until_run(page, timeout: float = 600) -> list[str]:
    """Wait until no cell is queued or running ([*]) and the kernel is idle; returns the prompts."""
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        prompts = page.evaluate(_PROMPTS_JS)
        idle = page.locator(f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        if idle and not any("*" in p for p in prompts):
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since > 1.5:
                return prompts
        else:
            quiet_since = None
        time.sleep(0.5)
    raise TimeoutError(f"the notebook was still running after {timeout} s: {page.evaluate(_PROMPTS_JS)}")


def save(page) -> None:
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    page.wait_for_function(
        "() => !document.querySelector('.lm-TabBar-tab.lm-mod-current.jp-mod-dirty')", timeout=60_000
    )


def output_text(page, index: int) -> str:
    c = cell(page, index)
    c.scroll_into_view_if_needed()
    return c.locator(".jp-OutputArea").inner_text()


def scroll_to_top(page) -> None:
    cell(page, 0).scroll_into_view_if_needed()


def saved_images(notebook: Path) -> int:
    """How many image outputs the saved notebook holds (what the page should show as images)."""
    nb = nbformat.read(notebook, as_version=4)
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if any(k.startswith("image/") for k in o.get("data", {})))


# The part of a progress bar's cell to photograph, in page pixels, or null while the bar is not in
# view: the bar must be attached, laid out, not hidden and inside the window.
_BAR_CLIP_JS = """(bar) => {
    if (!bar.isConnected) return null;
    const r = bar.getBoundingClientRect(), style = getComputedStyle(bar);
    const W = window.innerWidth, H = window.innerHeight;
    if (r.width < 1 || r.height < 1 || style.visibility === 'hidden' || style.display === 'none') return null;
    if (r.top < 0 || r.bottom > H || r.left < 0 || r.right > W) return null;
    const c = (bar.closest('.jp-Cell') || bar).getBoundingClientRect();
    const top = Math.max(0, c.top, r.top - 250), bottom = Math.min(H, c.bottom, r.bottom + 120);
    const left = Math.max(0, c.left), right = Math.min(W, c.right);
    return {x: left, y: top, width: right - left, height: bottom - top};
}"""


def screenshot_progress_bar(page, selector: str, path: Path, timeout: float = 300) -> bool:
    """Photograph a progress-bar widget while it shows; True once a shot has the bar in it.

    A tqdm bar made with ``leave=False`` goes when its loop ends, and JupyterLab draws only the cells
    in view. So: wait for a bar, scroll it to the middle of the window, and shoot the part of its cell
    around it; the shot counts only if that same bar was in view just before and just after it
    (otherwise the next bar is tried, until ``timeout`` seconds have passed).
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        bar = page.query_selector(selector)
        if bar is None:
            page.wait_for_timeout(100)
            continue
        try:
            bar.evaluate("e => e.scrollIntoView({block: 'center', inline: 'nearest'})")
            page.wait_for_timeout(200)  # the scrolled-to cells are drawn
            clip = bar.evaluate(_BAR_CLIP_JS)
            if clip and clip["height"] > 0:
                page.screenshot(path=str(path), clip=clip)
                if bar.evaluate(_BAR_CLIP_JS):
                    return True
        except Exception:  # noqa: BLE001 - the bar went while we looked: try the next one
            pass
    return False
