"""Do the attacks the second red team found (2026-12-07) earn what a blank submission earns, or show in a report?

One fake class of notebook 1 (two graded exercises, 3 + 2 points) is graded with ``bncourse grade``
(sandboxed kernels) twice: a first run with a drawn seed, then a regrade with that run's seed (as
``--hidden-seed N`` offers). Each student carries one attempt:

- ``seed_probe`` prints the hidden-case seed its kernel sees (the feedback returns it to the
  student); ``table`` then answers from a table computed offline for that printed seed and is
  regraded with the run's seed: its changed submission gets other hidden cases, so it earns 0;
- ``xss`` displays ``HTML('<script>...')`` (and ``Javascript``) and adds a markdown cell with
  ``<script>``, an ``onerror=`` handler and a ``javascript:`` link: in the formgrader, such script
  ran as the instructor and set manual scores. The autograded notebook (what the formgrader shows)
  holds no active markup, the submitted files keep their bytes, and a manual score that differs
  from the grader's verdict is flagged by the class report;
- ``copier`` answers ``standardize`` by running the reference module as marshalled, compressed,
  base64-encoded bytecode through ``types.FunctionType``, and ``min_max_scale`` from the same module
  shipped as ``my_helpers.py`` beside the notebook (``from my_helpers import ...``): copying is out
  of any sandbox's reach (learners have the package), so the cell's copy earns its points, and the
  reports name both (opaque code in the cell; the file compared with the course's code like a
  cell); the shipped file is not given to the grading kernel (only the release's files are), so
  ``min_max_scale`` earns nothing;
- the exchange spoof (a folder another Unix user wrote under a student's name) is refused by collect;
- false refusals: ``honest_getattr`` computes both statistics with ``getattr(np, name)(X, axis=0)``
  (F1, was refused as ``<dynamic:getattr>``) and earns full marks; notebook 2's ``cache = dict(vars())``
  (F2) reads clean, while computed names into the course's code still read as hand-overs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest

from attack_course import attack_course, generated, submit

pytestmark = pytest.mark.slow

ASSIGNMENT = "01_why_normalize"
NOTEBOOK = "why_normalize"
EXERCISES = {"standardize": 3, "min_max_scale": 2}
FULL = {f"{e}_tests": float(p) for e, p in EXERCISES.items()}
BLANK = {f"{e}_tests": 0.0 for e in EXERCISES}

if shutil.which("bwrap") is None:
    pytest.skip("the grading sandbox needs bubblewrap: apt-get install bubblewrap", allow_module_level=True)

SEED_PROBE = 'import os\nprint("hidden seed seen by this kernel:", os.environ.get("BNCOURSE_HIDDEN_SEED"))'
SEED_PRINTED = re.compile(r"hidden seed seen by this kernel: (\d+)")


XSS_JS = "fetch(base_url + '/api/grades?submission_id=' + submission_id)"
XSS_HTML = f"<div hidden><script>{XSS_JS}</script><img src=x onerror='alert(1)'></div>"
XSS_OUTPUT = ("from IPython.display import HTML, Javascript, display\n"
              f"display(HTML({XSS_HTML!r}))\n"
              "display(Javascript('alert(2)'))")
XSS_MARKDOWN = (f"My notes.\n\n<script>{XSS_JS}</script>\n\n<img src=x onerror=alert(1)>\n\n"
                "[see](javascript:alert(3))\n")


HONEST_GETATTR = '''def standardize(X_train, X_test):
    """Standardize each feature with the training data's mean and std."""
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    stats = {name: getattr(np, name)(X_train, axis=0) for name in ("mean", "std")}
    return (X_train - stats["mean"]) / stats["std"], (X_test - stats["mean"]) / stats["std"]
'''
HONEST_VARS = '''def batchnorm_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    out = gamma * x_hat + beta
    cache = dict(vars())
    return out, cache
'''


def _reference_module() -> str:
    import bncourse.reference.normalize as ref

    return Path(ref.__file__).read_text().replace("from __future__ import annotations\n", "")


def _marshalled_answers() -> dict[str, str]:
    """Solution cells running the reference module as marshalled bytecode (compiled under another name)."""
    import marshal
    import zlib

    blob = base64.b64encode(zlib.compress(marshal.dumps(compile(_reference_module(), "my_notes.py", "exec")))).decode()
    head = ("import base64, marshal, types, zlib\n_mine = {'__name__': 'my_notes', '__builtins__': __builtins__}\n"
            f"types.FunctionType(marshal.loads(zlib.decompress(base64.b64decode('{blob}'))), _mine)()\n")
    return {name: (head if name == "standardize" else "") + f"def {name}(X_train, X_test):\n"
            f"    return _mine['{name}'](X_train, X_test)\n" for name in EXERCISES}


def _cell(nb, grade_id: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _copy(nb):
    return nbformat.reads(nbformat.writes(nb), as_version=4)


def _table_answer(seed: int) -> dict[str, str]:
    """Solution cells answering both exercises from a table of every visible and hidden case of ``seed``,
    computed here with the full package: a lookup by a hash of the arguments, nothing solved."""
    from bncourse.checks import inputs, normalize
    from bncourse.reference import normalize as ref

    cells = {}
    inputs.use_hidden_seed(seed)
    try:
        for name in EXERCISES:
            table = {}

            def record(X_train, X_test, real=getattr(ref, name), table=table):
                key = hashlib.sha256(np.ascontiguousarray(X_train).tobytes()
                                     + np.ascontiguousarray(X_test).tobytes()).hexdigest()
                out = real(X_train, X_test)
                buf = io.BytesIO()
                np.savez(buf, *out)
                table[key] = base64.b64encode(buf.getvalue()).decode()
                return out

            getattr(normalize, f"check_{name}")(record)
            getattr(normalize, f"check_{name}")(record, hidden=True)
            cells[name] = ("import base64, hashlib, io\nimport numpy as np\n"
                           f"_TABLE_{name} = {table!r}\n"
                           f"def {name}(X_train, X_test):\n"
                           "    key = hashlib.sha256(np.ascontiguousarray(X_train).tobytes()\n"
                           "                         + np.ascontiguousarray(X_test).tobytes()).hexdigest()\n"
                           f"    z = np.load(io.BytesIO(base64.b64decode(_TABLE_{name}[key])))\n"
                           "    return z['arr_0'], z['arr_1']\n")
    finally:
        inputs.use_hidden_seed(None)
    return cells


def _submit(course: Path, student: str, nb, files: dict[str, str] | None = None) -> Path:
    return submit(course, student, ASSIGNMENT, NOTEBOOK, nb, files)


def _scores(course: Path) -> dict:
    from nbgrader.api import Gradebook

    from bncourse.grading import db_url_of

    with Gradebook(db_url_of(course)) as gb:
        out: dict = {}
        for sub in gb.assignment_submissions(ASSIGNMENT):
            for nb in sub.notebooks:
                for g in nb.grades:
                    out.setdefault(sub.student.id, {})[g.name] = g.score
        return out


def _autograded(course: Path, student: str):
    return nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)


def _printed_seed(nb) -> int | None:
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    found = SEED_PRINTED.search(text)
    return int(found.group(1)) if found else None


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from bncourse import grading

    with attack_course(tmp_path_factory.mktemp("redteam2"), cell_timeout=60) as (course, api):
        source, release = generated(course, api, ASSIGNMENT, NOTEBOOK)
        probe = _copy(release)
        probe.cells.insert(1, nbformat.v4.new_code_cell(SEED_PROBE))
        xss = _copy(release)
        xss.cells[2:2] = [nbformat.v4.new_code_cell(XSS_OUTPUT), nbformat.v4.new_markdown_cell(XSS_MARKDOWN)]
        copier, honest_getattr = _copy(release), _copy(source)
        _cell(honest_getattr, "standardize").source = HONEST_GETATTR
        _cell(copier, "standardize").source = _marshalled_answers()["standardize"]
        _cell(copier, "min_max_scale").source = "from my_helpers import min_max_scale\n"
        submissions = {"solution": (source, None), "blank": (release, None), "seed_probe": (probe, None),
                       "xss": (xss, None), "honest_getattr": (honest_getattr, None),
                       "copier": (copier, {"my_helpers.py": _reference_module()})}
        written = {s: _submit(course, s, nb, files) for s, (nb, files) in submissions.items()}
        hashes = {s: hashlib.sha256(p.read_bytes()).hexdigest() for s, p in written.items()}
        first = grading.grade(ASSIGNMENT, course, jobs=2)
        from bncourse.grading.similarity import similarity_report

        run1 = {"report": first, "scores": _scores(course), "similar": similarity_report(course, ASSIGNMENT),
                "printed": _printed_seed(_autograded(course, "seed_probe"))}
        # The student reads the seed in their feedback, builds a table for it offline and resubmits;
        # the instructor regrades with the run's seed, as the report offers.
        table = _copy(release)
        for name, answer in _table_answer(run1["printed"]).items():
            _cell(table, name).source = answer
        _submit(course, "table", table)
        run1["table"] = {n: _cell(table, n).source for n in EXERCISES}
        second = grading.grade(ASSIGNMENT, course, jobs=2, hidden_seed=first.hidden_seed,
                               students=["seed_probe", "table", "solution"])
        run2 = {"report": second, "scores": _scores(course),
                "printed": _printed_seed(_autograded(course, "seed_probe"))}
        hashes_after = {s: hashlib.sha256(p.read_bytes()).hexdigest() for s, p in written.items()}
        # What the formgrader script did: full manual scores on every grade of its submission.
        from nbgrader.api import Gradebook

        with Gradebook(grading.db_url_of(course)) as gb:
            for nb in gb.find_submission(ASSIGNMENT, "xss").notebooks:
                for g in nb.grades:
                    g.manual_score = g.max_score
            gb.db.commit()
        from bncourse.grading.report import class_report

        review = class_report(course, ASSIGNMENT, similarity=False)
        yield {"course": course, "run1": run1, "run2": run2, "written": written, "hashes": hashes,
               "hashes_after": hashes_after, "review": review}


def test_does_a_kernel_never_see_the_run_s_own_seed(graded):
    run1 = graded["run1"]
    assert run1["printed"] is not None, "the probe printed nothing"
    assert run1["printed"] != run1["report"].hidden_seed


def test_does_a_regrade_with_the_run_s_seed_reproduce_an_unchanged_submission(graded):
    assert graded["run2"]["printed"] == graded["run1"]["printed"]
    assert graded["run2"]["scores"]["seed_probe"] == graded["run1"]["scores"]["seed_probe"] == BLANK


def test_does_a_table_built_for_a_printed_seed_earn_what_a_blank_earns_at_the_regrade(graded):
    assert graded["run2"]["scores"]["table"] == BLANK, graded["run2"]["report"]


def test_would_the_table_pass_had_the_regrade_used_the_printed_seed(graded):
    """The control: the table is right for the seed it was built for (so a 0 above is the seed's doing)."""
    from bncourse.checks import inputs, normalize

    inputs.use_hidden_seed(graded["run1"]["printed"])
    try:
        for name, source in graded["run1"]["table"].items():
            space: dict = {}
            exec(source, space)
            getattr(normalize, f"check_{name}")(space[name], hidden=True).assert_passed()
    finally:
        inputs.use_hidden_seed(None)


def test_does_a_correct_solution_earn_full_marks_in_both_runs(graded):
    assert graded["run1"]["scores"]["solution"] == FULL
    assert graded["run2"]["scores"]["solution"] == FULL


def test_does_script_in_a_submission_earn_what_a_blank_earns_and_never_reach_the_formgrader(graded):
    student = "xss"
    from bncourse.grading.review_safe import _markdown_html, active_markup

    assert graded["run1"]["scores"][student] == BLANK
    nb = _autograded(graded["course"], student)
    shown = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            shown.append(_markdown_html(cell.source))
        for output in cell.get("outputs", []):
            assert "application/javascript" not in output.get("data", {})
            shown += [str(v) for k, v in output.get("data", {}).items() if k != "text/plain"]
    assert all(active_markup(html) == [] for html in shown), [h for h in shown if active_markup(h)]
    assert "<script" not in "".join(shown).lower()
    assert "&lt;script" in "".join(shown)  # the attempt is shown to the instructor, as text
    assert graded["hashes_after"][student] == graded["hashes"][student]  # the submission keeps its bytes


def test_does_the_class_report_flag_manual_scores_that_differ_from_the_grader_s_verdict(graded):
    flagged = {(c.student, c.cell) for c in graded["review"].overridden()}
    assert flagged == {("xss", f"{e}_tests") for e in EXERCISES}
    assert "MANUAL SCORE differs" in str(graded["review"])


def test_does_the_report_name_a_module_pasted_as_marshalled_bytecode_with_its_cell(graded):
    from bncourse.grading.similarity import OPAQUE
    from bncourse.grading.verify import SOURCE_FINDINGS

    # a copy pasted into the cell earns its points, and the report names it; the module shipped beside
    # the notebook is not given to the grading kernel (red team 3, R4): min_max_scale earns nothing
    assert graded["run1"]["scores"]["copier"] == {**FULL, "min_max_scale_tests": 0.0}
    rows = [m for m in graded["run1"]["similar"] if m.student == "copier" and m.other.startswith(OPAQUE)]
    assert [m.grade_id for m in rows] == [f"{NOTEBOOK}:standardize"], graded["run1"]["similar"]
    assert "marshal.loads" in rows[0].other and "types.FunctionType" in rows[0].other
    findings = _autograded(graded["course"], "copier").metadata.get(SOURCE_FINDINGS, {})
    assert any("<opaque: marshal.loads>" == f for f in findings.get("standardize", [])), findings


def test_does_the_report_compare_a_module_shipped_beside_the_notebook_with_the_course_s_code(graded):
    rows = [m for m in graded["run1"]["similar"] if m.student == "copier"]
    assert any(m.grade_id == "my_helpers.py:file" and m.other.startswith("reference:bncourse.reference.normalize")
               and m.score > 0.8 for m in rows), rows
    # the honest students are in no such row
    assert not [m for m in graded["run1"]["similar"] if m.student in ("blank", "seed_probe")]


def _inbound_folder(inbound: Path, student: str, claimed: str, owner: str, notebook: str) -> Path:
    import pwd

    folder = inbound / f"{student}+ps1+{claimed}+{owner}"
    folder.mkdir(parents=True)
    (folder / "ps1.ipynb").write_text(notebook)
    (folder / "timestamp.txt").write_text(claimed)
    uid = pwd.getpwnam(owner).pw_uid
    for path in (folder, *folder.iterdir()):
        os.chown(path, uid, uid)
    return folder


@pytest.mark.skipif(os.geteuid() != 0, reason="writing files as other Unix users needs root")
def test_does_collect_refuse_a_folder_another_user_wrote_under_a_student_s_name(tmp_path, caplog):
    """Mallory (Unix user nobody) writes a later folder named for `daemon` (the victim) and one for `bin`
    (who never submitted): neither is collected; daemon's own submission is, and the error says who is who."""
    from nbgrader.api import Gradebook
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.abc.exchange import ExchangeError
    from traitlets.config import Config

    from bncourse.grading.exchange import LinkKeepingCollect

    inbound = tmp_path / "exchange" / "bncourse" / "inbound"
    own = _inbound_folder(inbound, "daemon", "2026-11-20 10:00:00.000000 UTC", "daemon", '{"by": "daemon"}')
    forged = _inbound_folder(inbound, "daemon", "2026-11-21 10:00:00.000000 UTC", "nobody", '{"by": "mallory"}')
    _inbound_folder(inbound, "bin", "2026-11-21 10:00:00.000000 UTC", "nobody", '{"by": "mallory"}')
    # and a file Mallory slipped into a folder the student owns
    slipped = _inbound_folder(inbound, "sys", "2026-11-20 10:00:00.000000 UTC", "sys", '{"by": "sys"}')
    (slipped / "extra.py").write_text("x = 1")
    os.chown(slipped / "extra.py", 65534, 65534)
    course = tmp_path / "course"
    course.mkdir()
    c = Config()
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.course_id = "bncourse"
    c.CourseDirectory.assignment_id = "ps1"
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    c.Exchange.root = str(tmp_path / "exchange")
    assert c.ExchangeCollect.check_owner is not False  # nbgrader's default (on), as on a real hub
    with Gradebook(c.CourseDirectory.db_url, "bncourse") as gb:
        gb.update_or_create_assignment("ps1")
    with caplog.at_level("ERROR"), pytest.raises(ExchangeError, match=r"2 REFUSED"):  # `nbgrader collect` exits 1
        LinkKeepingCollect(coursedir=CourseDirectory(config=c), config=c).start()
    submitted = course / "submitted"
    assert (submitted / "daemon" / "ps1" / "ps1.ipynb").read_text() == '{"by": "daemon"}'
    assert not (submitted / "bin").exists() and not (submitted / "sys").exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(str(forged) in m and "daemon's submission" in m and "owned by nobody" in m for m in errors), errors
    assert any("extra.py is owned by nobody" in m and "sys's submission" in m for m in errors), errors
    assert own.exists() and forged.exists()  # the exchange itself is left as it was


def test_does_an_honest_getattr_of_numpy_earn_full_marks(graded):
    assert graded["run1"]["scores"]["honest_getattr"] == FULL


@pytest.mark.parametrize("exercise, learner, refused", [
    ("standardize", HONEST_GETATTR, False),
    ("batchnorm_forward", HONEST_VARS, False),
    ("standardize", "import bncourse.reference.normalize as r\ndef standardize(a, b):\n"
                    "    n = 'standard' + 'ize'\n    return getattr(r, n)(a, b)\n", True),
    ("standardize", "import bncourse.reference.normalize as r\ndef standardize(a, b):\n"
                    "    return vars(r)['standard' + 'ize'](a, b)\n", True),
    ("BatchNorm2d", "import torch.nn.functional as F\nfrom torch import nn\nclass BatchNorm2d(nn.Module):\n"
                    "    def forward(self, x):\n"
                    "        return getattr(F, 'batch' + '_norm')(x, None, None, training=True)\n",
     True),
], ids=["F1-getattr-numpy", "F2-dict-vars", "getattr-course-module", "vars-of-course-module", "getattr-torch"])
def test_does_the_source_reading_pass_the_honest_dynamic_forms_and_still_refuse_hand_overs(exercise, learner, refused):
    from bncourse.checks.delegation import Rule
    from bncourse.grading.sources import Program

    rule = Rule.of({exercise}, "batch_norm" if exercise == "BatchNorm2d" else "normalization")
    found = rule.judge(Program(["import numpy as np\n", learner]).references({exercise}))
    assert bool(found) == refused, found
