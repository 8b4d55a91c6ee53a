"""What the hint ladder remembers per workspace: the next hint of each exercise and the check runs.

One small JSON file, ``.bncourse/learner.json`` in the learner's workspace (found by walking up
from the notebook's folder to the ``.bncourse`` folder ``bncourse start`` made), so a kernel
restart or a new day does not reset it. Outside a workspace (a notebook run elsewhere) the file
lives in the user's cache folder, keyed by the notebook folder, and never next to course sources.

    {"hints": {"batchnorm_forward": 2},
     "attempts": {"batchnorm_forward": {"runs": 3, "passed": false, "mistake": "eps-outside-the-square-root"}}}
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

STATE_NAME = "learner.json"
WORKSPACE_MARK = Path(".bncourse") / "manifest.json"  # written by `bncourse start`


def find_workspace(start: str | os.PathLike | None = None) -> Path | None:
    """The workspace holding ``start`` (default: the current folder): the nearest folder above with
    ``.bncourse/manifest.json``; else ``$BNCOURSE_WORKSPACE`` when ``start`` lies inside it; else None."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / WORKSPACE_MARK).is_file():
            return folder
    env = os.environ.get("BNCOURSE_WORKSPACE")
    if env:
        ws = Path(env).expanduser().resolve()
        if ws == here or ws in here.parents:
            return ws
    return None


def state_path(start: str | os.PathLike | None = None) -> Path:
    """Where the ladder and the attempts of the notebook folder ``start`` are kept."""
    ws = find_workspace(start)
    if ws is not None:
        return ws / ".bncourse" / STATE_NAME
    here = str(Path(start or os.getcwd()).resolve())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bncourse" / "learner"
    return cache / f"{hashlib.sha256(here.encode()).hexdigest()[:16]}.json"


class LearnerState:
    """The JSON file at ``path``, read on every call (two kernels may share a workspace)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # missing or damaged: start again rather than fail a hint
            return {"hints": {}, "attempts": {}}
        if not isinstance(data, dict):
            return {"hints": {}, "attempts": {}}
        data.setdefault("hints", {})
        data.setdefault("attempts", {})
        return data

    def write(self, data: dict) -> None:
        """Atomic: a temp file in the same folder, then a rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".learner-", suffix=".json", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path)

    # -- the ladder ---------------------------------------------------------------------------
    def hints_seen(self, exercise: str) -> int:
        """How many hints of ``exercise`` were shown (0 to 3)."""
        return int(self.read()["hints"].get(exercise, 0))

    def advance(self, exercise: str, top: int = 3) -> int:
        """Count one more hint seen (at most ``top``); returns the rung to show now, 1-based."""
        data = self.read()
        rung = min(int(data["hints"].get(exercise, 0)) + 1, top)
        data["hints"][exercise] = rung
        self.write(data)
        return rung

    # -- check runs ---------------------------------------------------------------------------
    def attempt(self, exercise: str) -> dict:
        """``{"runs": n, "passed": bool | None, "mistake": id | None}``; runs 0 when never checked."""
        return dict(self.read()["attempts"].get(exercise, {"runs": 0, "passed": None, "mistake": None}))

    def record(self, exercise: str, passed: bool | None, mistake: str | None = None) -> None:
        data = self.read()
        entry = data["attempts"].get(exercise, {"runs": 0})
        entry.update(runs=int(entry.get("runs", 0)) + 1, passed=passed, mistake=mistake)
        data["attempts"][exercise] = entry
        self.write(data)
