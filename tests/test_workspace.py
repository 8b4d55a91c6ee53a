"""The learner's workspace: generated student versions, and a learner's work never lost."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from bncourse import workspace
from bncourse.cli import main

from conftest import COURSE, GENERATED


@pytest.fixture(scope="session")
def generated_cache(tmp_path_factory):
    """One cache of student versions for the whole session (nbgrader takes seconds per assignment)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(generated_cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(generated_cache))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.ipynb")}


def test_does_start_give_student_versions_of_every_assignment(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["start", str(ws), "--no-lab"]) == 0
    for a in workspace.assignments(COURSE):
        sources = sorted(p.name for p in (COURSE / "source" / a).glob("*.ipynb"))
        got = sorted(p.name for p in (ws / a).glob("*.ipynb"))
        assert got == sources, f"{a}: workspace has {got}, course has {sources}"
        for nb in (ws / a).glob("*.ipynb"):
            text = nb.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
            assert "NotImplementedError" in text or "solution" not in text
    assert "new" in capsys.readouterr().out


def test_does_a_second_start_change_nothing(tmp_path, capsys):
    ws = tmp_path / "ws"
    main(["start", str(ws), "--no-lab"])
    before = snapshot(ws)
    capsys.readouterr()
    main(["start", str(ws), "--no-lab"])
    assert snapshot(ws) == before
    assert "up to date" in capsys.readouterr().out


def test_is_a_learners_notebook_kept_when_the_course_changes(tmp_path, monkeypatch, capsys):
    """A newer course notebook goes beside the learner's, never over it, and the command says so."""
    course = tmp_path / "course"
    shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns(*GENERATED))
    monkeypatch.setenv("BNCOURSE_COURSE", str(course))
    ws = tmp_path / "ws"
    main(["start", str(ws), "--no-lab"])
    mine = ws / "01_why_normalize" / "why_normalize.ipynb"
    nb = nbformat.read(mine, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("my_work = 42"))
    nbformat.write(nb, mine)
    my_bytes = mine.read_bytes()

    src = course / "source" / "01_why_normalize" / "why_normalize.ipynb"
    snb = nbformat.read(src, as_version=4)
    snb.cells[0].source += "\n\n(Revised by the course.)"
    nbformat.write(snb, src)
    capsys.readouterr()
    main(["start", str(ws), "--no-lab"])
    out = capsys.readouterr().out

    assert mine.read_bytes() == my_bytes
    updates = list(mine.parent.glob("why_normalize.course-update-*.ipynb"))
    assert len(updates) == 1 and "Revised by the course" in updates[0].read_text()
    assert updates[0].name in out and "yours is untouched" in out


def test_is_a_workspace_inside_the_course_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="inside the course source"):
        workspace.prepare_workspace(COURSE / "mine")


def test_does_jupyterlab_get_allow_root_only_as_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "--allow-root" in workspace.lab_command(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "--allow-root" not in workspace.lab_command(tmp_path)


@pytest.mark.slow
def test_does_start_open_a_real_jupyterlab_serving_the_workspace(tmp_path, generated_cache):
    """`bncourse start DIR` as a learner runs it: JupyterLab answers and lists the notebooks."""
    ws = tmp_path / "ws"
    env = dict(os.environ, XDG_CACHE_HOME=str(generated_cache), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bncourse.cli", "start", str(ws), "--no-browser", "--port", "18931"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    try:
        url, seen = None, []
        deadline = time.time() + 120
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            m = re.search(r"(http://(?:127\.0\.0\.1|localhost):18931/lab\?token=\w+)", line)
            url = m.group(1) if m else None
        assert url, "JupyterLab did not start:\n" + "".join(seen[-30:])
        token = url.split("token=")[1]
        api = f"http://127.0.0.1:18931/api/contents/01_why_normalize?token={token}"
        listing = None
        for _ in range(60):  # the URL is printed a moment before the server accepts connections
            try:
                listing = json.load(urllib.request.urlopen(api, timeout=30))
                break
            except urllib.error.URLError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab printed its URL but never answered"
        assert "why_normalize.ipynb" in [item["name"] for item in listing["content"]]
        lab = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "JupyterLab" in lab
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_does_the_learners_lab_config_switch_off_only_the_instructor_plugins(tmp_path):
    """JupyterLab itself, asked with the learner's environment, lists what is disabled."""
    ws = tmp_path / "ws"
    ws.mkdir()
    workspace.write_lab_config(ws)
    env = workspace.lab_environment(ws, {k: v for k, v in os.environ.items() if k != "JUPYTER_CONFIG_PATH"})
    proc = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], env=env, cwd=ws,
                          capture_output=True, text=True, timeout=300)
    listing = proc.stdout + proc.stderr
    disabled = listing[listing.index("Disabled extensions:"):]
    for plugin in (*workspace.INSTRUCTOR_LAB_PLUGINS, workspace.NEWS_PLUGIN):
        assert plugin in disabled
    assert "validate-assignment" not in disabled
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[0] == str(ws.resolve() / workspace.LAB_CONFIG)


@pytest.mark.skipif(os.name != "posix", reason="IPC kernels need POSIX sockets")
def test_is_nbconvert_execute_in_the_learners_lab_terminal_free_of_the_tcp_warning(tmp_path):
    """A Lab terminal inherits the learner's JUPYTER_CONFIG_PATH: `jupyter nbconvert --execute` there is quiet."""
    import nbformat

    ws = tmp_path / "ws"
    ws.mkdir()
    workspace.write_lab_config(ws)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(ws / "n.ipynb"))
    env = workspace.lab_environment(ws, {k: v for k, v in os.environ.items() if k != "JUPYTER_CONFIG_PATH"})
    proc = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                           "n.ipynb", "--output", "out"], env=env, cwd=ws, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "42" in (ws / "out.ipynb").read_text()
    assert "without encryption" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
