"""Does every attempt of a determined student who read this repository earn what a blank submission earns?

One fake class of notebook 2 (batch-norm forward: three graded exercises, 3 + 3 + 2 points) is
graded once with ``bncourse grade`` (nbgrader's own autograde, sandboxed kernels), and one of its
students once more with plain ``nbgrader autograde`` from the course's own configuration. Each
attacking student carries one attempt per exercise, so each attempt is read from its own cell's
score in the gradebook (issue 20's classes; the comment of each names it):

- the printed partial credit (``sys.displayhook('passed')`` before failing);
- hand-overs to the course's implementation the old source reading missed: an alias of
  ``import_module`` or ``exec``, a base64 name, ``sys.modules``, ``gc.get_objects()``, ``pkgutil``,
  walking up the stack to the check's reference, ``ref.NAME.__call__``, a name under
  ``bncourse.checks``, a renamed code object, a ``%%magic`` cell, module-level rebinding;
- the instructor's solutions on disk (found from ``bncourse.__file__``, the course folder, ``/``);
- a table of answers computed in advance for every visible and hidden case;
- another library's implementation reached by a computed name (``torch.ops.aten``);
- files the grader trusts: the gradebook's test sources, ``nbgrader_config.py``, another
  student's submission (each attempt prints LEAK on success);
- the whole reference module pasted into a cell: it computes the right answer (the repository is
  public), so it earns the points, and the similarity report names it for the instructor.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from attack_course import attack_course, generated, submit

pytestmark = pytest.mark.slow

ASSIGNMENT = "02_batchnorm_forward"
NOTEBOOK = "batchnorm_forward"
EXERCISES = {"batchnorm_forward": 3, "update_running_stats": 3, "batchnorm_inference": 2}

if shutil.which("bwrap") is None:
    pytest.skip("the grading sandbox needs bubblewrap: apt-get install bubblewrap", allow_module_level=True)


def attack(kind: str, name: str, paths: dict) -> str:
    """The source of a solution cell that tries ``kind`` for exercise ``name``."""
    ref = "bncourse.reference.batchnorm"
    blank = f"def {name}(*args, **kwargs):\n    raise NotImplementedError()\n"
    if kind == "print_before_fail":  # nbgrader reads an execute_result in a failed test cell as partial credit
        return (f"def {name}(*args, **kwargs):\n    import sys\n    sys.displayhook('passed')\n"
                "    sys.displayhook(1.0)\n    raise NotImplementedError()\n")
    if kind == "import_module_alias":
        return f"from importlib import import_module as _im\n{name} = getattr(_im('{ref}'), '{name}')\n"
    if kind == "exec_alias":
        return f"_run = exec\n_run('from {ref} import {name} as _theirs', globals())\n{name} = _theirs\n"
    if kind == "base64_name":
        encoded = base64.b64encode(ref.encode()).decode()
        return (f"import base64 as _b, importlib as _il\n"
                f"{name} = getattr(_il.import_module(_b.b64decode('{encoded}').decode()), '{name}')\n")
    if kind == "sys_modules":
        return f"import sys, bncourse.checks.forward\n{name} = getattr(sys.modules['{ref}'], '{name}')\n"
    if kind == "gc_objects":
        return (f"import gc, bncourse.checks.forward\n"
                f"def {name}(*args, **kwargs):\n"
                f"    for o in gc.get_objects():\n"
                f"        if callable(o) and getattr(o, '__name__', '') == '{name}' and o is not {name}:\n"
                f"            return o(*args, **kwargs)\n"
                f"    raise NotImplementedError()\n")
    if kind == "pkgutil":
        return (f"import importlib, pkgutil, bncourse\n"
                f"def {name}(*args, **kwargs):\n"
                f"    for info in pkgutil.walk_packages(bncourse.__path__, 'bncourse.'):\n"
                f"        try:\n"
                f"            fn = getattr(importlib.import_module(info.name), '{name}', None)\n"
                f"            if fn is not None and fn is not {name}:\n"
                f"                return fn(*args, **kwargs)\n"
                f"        except Exception:\n"
                f"            continue\n"
                f"    raise NotImplementedError()\n")
    if kind == "stack_walk":  # the check's own reference function, from its caller's frames
        return (f"import sys\n"
                f"def {name}(*args, **kwargs):\n"
                f"    f = sys._getframe(1)\n"
                f"    while f is not None:\n"
                f"        for v in list(f.f_locals.values()):\n"
                f"            if callable(v) and getattr(v, '__name__', '') == '{name}' and v is not {name}:\n"
                f"                return v(*args, **kwargs)\n"
                f"        f = f.f_back\n"
                f"    raise NotImplementedError()\n")
    if kind == "dunder_call":
        return f"import {ref} as _r\n{name} = _r.{name}.__call__\n"
    if kind == "checks_names":  # names under bncourse.checks were exempt from the watch
        return f"from bncourse.checks import forward as _f\n{name} = _f.ref.{name}\n"
    if kind == "renamed_code":
        return (f"import types, {ref} as _r\n_o = _r.{name}\n"
                f"{name} = types.FunctionType(_o.__code__, _o.__globals__, 'mine', _o.__defaults__)\n")
    if kind == "cell_magic":  # a %%magic cell the old source reader could not parse (and skipped)
        return f"%%capture\nfrom {ref} import {name}\n"
    if kind == "module_rebinding":
        return f"import {ref}\n{name} = {ref}.{name}\n"
    if kind == "source_notebooks":  # the instructor's notebook, found from bncourse.__file__ or anywhere
        return (f"import json, os, pathlib, bncourse\n"
                f"def _solution():\n"
                f"    roots = [pathlib.Path(bncourse.__file__).resolve().parents[1], pathlib.Path({str(paths['course'])!r})]\n"
                f"    for top, dirs, files in os.walk('/'):\n"
                f"        dirs[:] = [d for d in dirs if top.count('/') < 4 and os.path.join(top, d) not in ('/proc', '/sys', '/dev', '/usr')]\n"
                f"        roots += [pathlib.Path(top) / f for f in files if f == '{NOTEBOOK}.ipynb']\n"
                f"    for root in roots:\n"
                f"        for p in ([root] if root.suffix == '.ipynb' else root.rglob('{NOTEBOOK}.ipynb')):\n"
                f"            try:\n"
                f"                cells = json.load(open(p))['cells']\n"
                f"            except OSError:\n"
                f"                continue\n"
                f"            for c in cells:\n"
                f"                src = ''.join(c['source'])\n"
                f"                if 'BEGIN SOLUTION' in src and 'def {name}' in src and '_solution()' not in src:  # not this cell\n"
                f"                    print('LEAK: read', p)\n"
                f"                    return src\n"
                f"    print('BLOCKED: no source notebook in reach')\n"
                f"    return None\n"
                f"_src = _solution()\n"
                f"if _src:\n"
                f"    exec(_src, globals())\n"
                f"else:\n"
                f"    {blank.replace(chr(10), chr(10) + '    ').rstrip()}\n")
    if kind == "trusted_files":  # rewrite the gradebook's test sources, patch the config, touch another submission
        return (f"import sqlite3\n"
                f"for what, act in [\n"
                f"    ('gradebook', lambda: sqlite3.connect({str(paths['gradebook'])!r}).execute(\"update source_cell set source = 'pass'\").connection.commit()),\n"
                f"    ('config', lambda: open({str(paths['config'])!r}, 'a').write('\\nc.GradingExecute.sandbox = False\\n')),\n"
                f"    ('other submission', lambda: open({str(paths['other'])!r}, 'w').write('{{}}')),\n"
                f"    ('outside', lambda: open({str(paths['outside'])!r}, 'w').write('x')),\n"
                f"]:\n"
                f"    try:\n"
                f"        act()\n"
                f"        print('LEAK: wrote', what)\n"
                f"    except Exception as e:\n"
                f"        print('BLOCKED:', what, type(e).__name__)\n" + blank)
    if kind == "torch_aten":  # another library's batch norm, by a computed name
        return (f"import numpy as np\n"
                f"def {name}(x, gamma, beta, *rest, **kwargs):\n"
                f"    t = __import__('to' + 'rch')\n"
                f"    fn = getattr(t.ops.aten, 'native_batch_' + 'norm')\n"
                f"    X = t.as_tensor(np.ascontiguousarray(x))\n"
                f"    out = fn(X, t.as_tensor(gamma), t.as_tensor(beta), None, None, True, 0.1, 1e-5)[0]\n"
                f"    return out.numpy(), None\n")
    if kind == "table":
        return paths["table"]
    raise ValueError(kind)


def _answer_table() -> str:
    """A solution cell answering batchnorm_forward from a table of every visible and (shipped) hidden case."""
    from bncourse.checks.forward import check_batchnorm_forward
    from bncourse.reference.batchnorm import batchnorm_forward

    table = {}

    def record(x, gamma, beta, *rest):
        key = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.asarray(gamma).tobytes()).hexdigest()
        buf = io.BytesIO()
        np.save(buf, batchnorm_forward(x, gamma, beta, *rest)[0])
        table[key] = base64.b64encode(buf.getvalue()).decode()
        return batchnorm_forward(x, gamma, beta, *rest)

    check_batchnorm_forward(record)
    check_batchnorm_forward(record, hidden=True)
    return ("import base64, hashlib, io\nimport numpy as np\n"
            f"_TABLE = {table!r}\n"
            "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
            "    key = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.asarray(gamma).tobytes()).hexdigest()\n"
            "    return np.load(io.BytesIO(base64.b64decode(_TABLE[key]))), None\n")


# student -> {exercise: attack}; an exercise not named keeps the released stub (a blank answer)
CLASS = {
    "print_before_fail": dict.fromkeys(EXERCISES, "print_before_fail"),
    "aliases": {"batchnorm_forward": "import_module_alias", "update_running_stats": "exec_alias",
                "batchnorm_inference": "base64_name"},
    "registries": {"batchnorm_forward": "sys_modules", "update_running_stats": "gc_objects",
                   "batchnorm_inference": "pkgutil"},
    "frames": {"batchnorm_forward": "stack_walk", "update_running_stats": "dunder_call",
               "batchnorm_inference": "checks_names"},
    "code": {"batchnorm_forward": "renamed_code", "update_running_stats": "cell_magic",
             "batchnorm_inference": "module_rebinding"},
    "files": {"batchnorm_forward": "source_notebooks", "update_running_stats": "trusted_files",
              "batchnorm_inference": "torch_aten"},
    "table": {"batchnorm_forward": "table"},
}


def _set(nb, grade_id: str, source: str) -> None:
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return
    raise KeyError(grade_id)


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cell_scores(course: Path) -> dict:
    from nbgrader.api import Gradebook

    from bncourse.grading import db_url_of

    with Gradebook(db_url_of(course)) as gb:
        return {(sub.student.id, g.name): g.score for sub in gb.assignment_submissions(ASSIGNMENT)
                for nb in sub.notebooks for g in nb.grades}


def _test_sources(course: Path) -> dict:
    from nbgrader.api import Gradebook

    from bncourse.grading import db_url_of

    with Gradebook(db_url_of(course)) as gb:
        return {c.name: c.source for c in gb.find_notebook(NOTEBOOK, ASSIGNMENT).source_cells}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from bncourse import grading
    from bncourse.grading import similarity

    tmp = tmp_path_factory.mktemp("attacks")
    with attack_course(tmp, cell_timeout=60) as (course, api):
        source_nb, release_nb = generated(course, api, ASSIGNMENT, NOTEBOOK)
        paths = {"course": course, "gradebook": course / "gradebook.db", "config": course / "nbgrader_config.py",
                 "other": course / "submitted" / "solution" / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
                 "outside": tmp / "written-by-a-kernel.txt", "table": _answer_table()}
        pasted = Path(sys.modules["bncourse"].__file__).parent.joinpath("reference", "batchnorm.py").read_text()
        pasted = pasted.replace("from __future__ import annotations\n", "")
        submissions = {"solution": source_nb, "blank": release_nb}
        for student, attacks in CLASS.items():
            nb = nbformat.reads(nbformat.writes(release_nb), as_version=4)
            for exercise, kind in attacks.items():
                _set(nb, exercise, attack(kind, exercise, paths))
            submissions[student] = nb
        nb = nbformat.reads(nbformat.writes(release_nb), as_version=4)
        _set(nb, "batchnorm_forward", pasted)
        _set(nb, "update_running_stats", "pass  # pasted above")
        _set(nb, "batchnorm_inference", "pass  # pasted above")
        submissions["pasted_module"] = nb
        for student, nb in submissions.items():
            submit(course, student, ASSIGNMENT, NOTEBOOK, nb)
        trusted_before = (_test_sources(course), _hash(paths["config"]))
        report = grading.grade(ASSIGNMENT, course, jobs=2)
        scores = _cell_scores(course)
        # The same printing student, graded by plain nbgrader from the course's own configuration.
        plain = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT, "--student",
                                "print_before_fail", "--force"], cwd=course, capture_output=True, text=True,
                               timeout=600)
        yield {"course": course, "report": report, "scores": scores, "plain": plain,
               "plain_scores": _cell_scores(course), "trusted_before": trusted_before,
               "trusted_after": (_test_sources(course), _hash(paths["config"])), "paths": paths,
               "similar": similarity.similarity_report(course, ASSIGNMENT)}


def _expected(student: str) -> dict:
    if student in ("solution", "pasted_module"):
        return {f"{e}_tests": float(p) for e, p in EXERCISES.items()}
    return {f"{e}_tests": 0.0 for e in EXERCISES}


def _scores_of(scores: dict, student: str) -> dict:
    return {gid: s for (who, gid), s in scores.items() if who == student}


@pytest.mark.parametrize("student", ["solution", "blank", "pasted_module",
                                     *[s for s in CLASS if s != "table"]])
def test_does_each_attempt_earn_what_a_blank_submission_earns(graded, student):
    assert _scores_of(graded["scores"], student) == _expected(student), graded["report"]


def test_does_a_table_of_precomputed_answers_fail_on_the_run_s_hidden_cases(graded):
    from bncourse.checks import inputs

    if not hasattr(inputs, "use_hidden_seed"):
        pytest.skip("the hidden cases are drawn per run once bncourse.checks.inputs.use_hidden_seed exists "
                    "(helper 'checks'); until then they are the shipped ones and a table of them passes")
    assert _scores_of(graded["scores"], "table")["batchnorm_forward_tests"] == 0.0


def test_does_plain_nbgrader_give_the_printing_student_zero_too(graded):
    assert graded["plain"].returncode == 0, graded["plain"].stderr[-3000:]
    assert _scores_of(graded["plain_scores"], "print_before_fail") == _expected("print_before_fail")
    nb = nbformat.read(graded["course"] / "autograded" / "print_before_fail" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    for cell in nb.cells:  # the autograded notebook shows the grader's verdict, and no partial score
        if cell.metadata.get("nbgrader", {}).get("grade_id", "").endswith("_tests"):
            kinds = [o.output_type for o in cell.outputs]
            assert kinds[0] == "error" and "execute_result" not in kinds, kinds


def test_can_no_kernel_read_the_source_notebooks_or_write_the_gradebook_config_or_other_files(graded):
    assert graded["trusted_before"] == graded["trusted_after"]
    assert not graded["paths"]["outside"].exists()
    assert graded["report"].modified_submissions == []
    nb = nbformat.read(graded["course"] / "autograded" / "files" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "LEAK" not in printed and printed.count("BLOCKED") == 5, printed


def test_does_the_similarity_report_name_a_pasted_reference_module(graded):
    pasted = [m for m in graded["similar"] if m.student == "pasted_module"]
    # > 0.8, not 1: the code the released notebook already gives the student is left out before scoring
    assert any(m.other == "reference:bncourse.reference.batchnorm" and m.score > 0.8 for m in pasted), pasted
