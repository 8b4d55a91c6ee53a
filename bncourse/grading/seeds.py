"""The hidden cases' seed a grading kernel sees: the run's seed, keyed to the submission itself.

A grading run draws one seed (``bncourse.grading.execute.run_seed``, or the instructor's
``--hidden-seed N`` for a regrade). A kernel may print whatever it sees into the feedback the
learner gets back, so the run's seed itself never reaches a kernel: each notebook is graded with

    HMAC-SHA256(run seed, student | assignment | notebook | digest of the submission)

where the digest covers everything the kernel can read that the student wrote: the notebook as
graded (every cell's source, attachments and metadata, outputs left out) and every other file of
its working folder (by name and bytes). So

- a changed submission gets other hidden cases than the one whose seed it printed: a table of
  answers for the printed seed is a table for someone else's cases;
- another student's seed says nothing about one's own (the student id is in the key);
- the run's seed cannot be recovered from a derived one (HMAC);
- ``--hidden-seed N`` still reproduces a run exactly for every unchanged submission.

The re-judging outside the kernel reads the same derived seed (``resources[HIDDEN_SEED_KEY]``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

__all__ = ["SEED_BITS", "for_notebook", "submission_digest", "submission_seed"]

SEED_BITS = 62


def _outputless(nb) -> dict:
    """The notebook as a dict without outputs or execution counts. Every cell's metadata counts, its
    ``execution`` timings included: the kernel can read them from its working copy of the file, so data
    stored there changes the seed (red team 5); they are the submission's, written before this run."""
    data = json.loads(json.dumps(nb, default=str))
    for cell in data.get("cells", []):
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    return data


def _notebook_file_digest(path: Path) -> str:
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:  # noqa: BLE001 - unreadable as a notebook: its bytes then
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(_outputless(nb), sort_keys=True).encode()).hexdigest()


def submission_digest(nb, folder: str | os.PathLike | None = None, notebook_name: str = "") -> str:
    """sha256 hex of ``nb`` (outputs left out) and of every file under ``folder`` (links not followed).

    ``notebook_name``: the file name of ``nb`` in ``folder`` (counted once, as ``nb``). Other
    notebooks count without their outputs (an autograded sibling's outputs vary from run to run)."""
    h = hashlib.sha256()
    h.update(json.dumps(_outputless(nb), sort_keys=True).encode())
    if folder and os.path.isdir(folder):
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if not p.is_dir() or p.is_symlink()):
            rel = path.relative_to(root).as_posix()
            if rel == notebook_name or "/.ipynb_checkpoints/" in f"/{rel}" or "__pycache__" in rel:
                continue
            if path.is_symlink():
                digest = "link:" + os.readlink(path)
            elif path.suffix == ".ipynb":
                digest = _notebook_file_digest(path)
            else:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError as exc:
                    digest = f"unreadable:{type(exc).__name__}"
            h.update(f"\0{rel}\0{digest}".encode())
    return h.hexdigest()


def submission_seed(run_seed: int, student: str, assignment: str, notebook: str, digest: str) -> int:
    """The hidden-case seed of one submitted notebook (``SEED_BITS`` bits), from the run's seed."""
    message = "\0".join([student, assignment, notebook, digest]).encode()
    mac = hmac.new(str(int(run_seed)).encode(), message, hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big") >> (64 - SEED_BITS)


def for_notebook(run_seed: int, nb, resources) -> int:
    """``submission_seed`` of the notebook nbgrader is grading (``resources`` as nbgrader passes them)."""
    info = (resources or {}).get("nbgrader") or {}
    folder = ((resources or {}).get("metadata") or {}).get("path") or None
    notebook = str(info.get("notebook", ""))
    digest = submission_digest(nb, folder, f"{notebook}.ipynb" if notebook else "")
    return submission_seed(run_seed, str(info.get("student", "")), str(info.get("assignment", "")), notebook, digest)
