"""Receipts: the grader re-judges a graded test cell outside the learner's kernel.

A learner's cell runs in the same Python process as the test cells after it, so it can replace
anything there (bncourse's checks, numpy's comparisons, the result objects). The verdict that
counts is therefore computed again by the grader, from data:

1. In the kernel, during ``nbgrader autograde`` (``NBGRADER_EXECUTION=autograde``), every
   ``check_function`` call publishes a *receipt*: for each case, a digest of the inputs and the
   learner function's return value (or error), serialized as plain data (arrays as bytes; any
   other object becomes an opaque stand-in). Receipts travel as display outputs of the test cell.
2. After execution, the grader (``bncourse.grading.VerifyChecks``) runs the test cell's ORIGINAL
   source (nbgrader restores it from the source notebook) in a fresh ``python -I`` process, the
   learner's names bound to ``Replayer`` stand-ins. Inside that process every ``check_function``
   takes the learner's outputs from the receipts instead of calling anything (``Learner``), so a
   check that wraps the learner's objects in a closure or a runner (a module stepped through
   training, a forward and backward chained) is re-judged the same way. Genuine bncourse, genuine
   numpy: the same verdict an honest kernel would give, or a failure.
3. The job also carries, per cell, what the learner's objects refer to in the submission's source
   (``bncourse.grading.sources``); each check judges delegation from that (``delegation.Rule``).

Forging a receipt can only claim outputs; claiming the right outputs is no easier than computing
them. A cell whose checks touch the learner's objects some other way is *not replayable*, and the
grader scores it 0 with the reason: the kernel's word never counts.

Run as ``python -I -m bncourse.checks.replay`` it reads a JSON job on stdin and writes verdicts.

What ``check_function`` does with the learner's function is this process's ``mode()``, decided in
that one function: ``Mode.REPLAY`` inside ``replay_cell`` (the grader), ``Mode.RECORD_ONLY`` in a
grading kernel (nbgrader starts it with ``NBGRADER_EXECUTION=autograde``), ``Mode.RECORD`` when
``use_mode(Mode.RECORD)`` is in force or the process was started with ``BNCOURSE_RECEIPTS=1``
(tests), else ``Mode.OFF`` (a learner's kernel). A receipt is one ``Receipt``
(``bncourse.checks.receipts``): ``to_json()`` is what the kernel publishes, ``Receipt.from_json()``
the grader's only way to read it.
"""

from __future__ import annotations

import ast
import builtins
import enum
import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from bncourse.checks.calls import Call, Uncallable, safe_call
from bncourse.checks.receipts import (  # noqa: F401 - the receipt's names, where the grader and tests look
    MAX_RECEIPT_BYTES, MIME, Opaque, Receipt, ReceiptBudget, ReceiptsTooLarge, RecordedCall, decode, digest, encode,
    pack, unpack)

ENV_FORCE = "BNCOURSE_RECEIPTS"  # "1": publish receipts outside autograde too (tests)


class Mode(enum.Enum):
    """What ``check_function`` does with the learner's function in this process."""

    OFF = "off"                  # a learner's kernel: call it and judge; nothing is recorded
    RECORD = "record"            # call it, judge, and publish a receipt of every call (tests)
    RECORD_ONLY = "record_only"  # a grading kernel: call it and publish receipts; judge nothing
    REPLAY = "replay"            # the grader's replay process: call nothing, answer from receipts


_CHOSEN: list[Mode] = []  # use_mode's choice, innermost last


def mode() -> Mode:
    """This process's mode, decided here and nowhere else.

    ``REPLAY`` while ``replay_cell`` runs a test cell; else ``use_mode``'s choice; else what the
    process was started with: ``NBGRADER_EXECUTION=autograde`` (nbgrader's grading kernel) is
    ``RECORD_ONLY``, ``BNCOURSE_RECEIPTS=1`` is ``RECORD``; else ``OFF``.
    """
    if _SESSION is not None:
        return Mode.REPLAY
    if _CHOSEN:
        return _CHOSEN[-1]
    if os.environ.get("NBGRADER_EXECUTION") == "autograde":
        return Mode.RECORD_ONLY
    return Mode.RECORD if os.environ.get(ENV_FORCE) == "1" else Mode.OFF


@contextmanager
def use_mode(chosen: Mode) -> Iterator[Mode]:
    """Record (``Mode.RECORD``, ``Mode.RECORD_ONLY``) or not (``Mode.OFF``) in this process for the
    block. ``Mode.REPLAY`` is not chosen: ``replay_cell`` is the replay."""
    if chosen is Mode.REPLAY:
        raise ValueError("Mode.REPLAY is replay_cell's own: call replay_cell(source, receipts)")
    _CHOSEN.append(Mode(chosen))
    try:
        yield chosen
    finally:
        _CHOSEN.pop()


def recording() -> bool:
    """True when check_function calls in this process publish receipts."""
    return mode() in (Mode.RECORD, Mode.RECORD_ONLY)


def recording_only() -> bool:
    """True in a grading kernel (``nbgrader autograde``): checks record the learner's outputs and
    judge nothing, since no reference is within reach there; the grader judges the receipts."""
    return mode() is Mode.RECORD_ONLY


def replaying() -> bool:
    """True inside the grader's replay process, where learner objects are ``Replayer`` stand-ins."""
    return mode() is Mode.REPLAY


def publish(receipt: Receipt) -> None:
    """Attach a receipt to the running cell's outputs (no-op outside IPython)."""
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - plain python: nothing to attach to
        return
    display({MIME: receipt.to_json()}, raw=True)


# ---------------------------------------------------------------------------------------------
# The replay side (runs in the grader's fresh process)
# ---------------------------------------------------------------------------------------------


class NotReplayable(Uncallable):
    """The cell's checks used the learner's objects in a way receipts cannot reproduce.

    A BaseException so that a check's ``except Exception`` cannot turn it into a verdict.
    """


class Tampered(Exception):
    """The receipts do not match what the genuine test cell asks for."""


class Replayer:
    """Stands in for a learner's object during replay; only ``check_function`` may use it."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def __call__(self, *args, **kwargs):
        raise NotReplayable(f"{object.__getattribute__(self, '_name')} was called outside check_function")

    def __getattribute__(self, attr):
        # Every attribute look-up, isinstance() included (it reads __class__), means the check uses
        # the learner's object in a way receipts cannot reproduce.
        raise NotReplayable(f"the check looked at {object.__getattribute__(self, '_name')}.{attr}")

    def __repr__(self) -> str:
        return f"<replayed {object.__getattribute__(self, '_name')}>"


class _Session:
    """One test cell's replay: its receipts, taken in order by the checks it runs."""

    def __init__(self, entries: list[Receipt], references: list[str] = ()):
        self.entries = list(entries)
        self.references = list(references)
        self.used = 0
        self.attempts = 0  # check_function calls that asked for a receipt (found or not)
        self.delegated = ""  # what a check found the learner's code handed its work to

    def next_entry(self, exercise: str) -> Receipt:
        self.attempts += 1
        if self.used >= len(self.entries):
            raise Tampered(f"no receipt for check '{exercise}' (the test cell did not run as written)")
        entry = self.entries[self.used]
        self.used += 1
        if entry.exercise != exercise:
            raise Tampered(f"receipt for '{entry.exercise}' where the test cell runs '{exercise}'")
        return entry


_SESSION: _Session | None = None  # set by _replaying only: mode() is Mode.REPLAY while it is


@contextmanager
def _replaying(receipts: list[Receipt], references) -> Iterator[_Session]:
    global _SESSION
    _SESSION = _Session(receipts, references)
    try:
        yield _SESSION
    finally:
        _SESSION = None


def free_names(source: str) -> set[str]:
    """Names a cell reads without defining them itself (the learner's objects, typically)."""
    tree = ast.parse(source)
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n for n in loaded - bound if not hasattr(builtins, n)}


def _cell_line(exc: BaseException) -> int | None:
    """The test cell's line an exception came through last (None if it did not)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<test cell>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def replay_cell(source: str, receipts: list[Receipt], references: list[str] = ()) -> tuple:
    """Re-run one test cell against its receipts: ('pass'|'fail'|'delegated'|'not_replayable', reason), and for
    a failed assertion also the test cell's line and the check's message."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    try:
        names = free_names(source)
        code = compile(source, "<test cell>", "exec")
    except SyntaxError as exc:
        return "not_replayable", f"the cell is not plain Python ({exc.msg})"
    namespace: dict[str, Any] = {"__name__": "__main__"}
    namespace.update({n: Replayer(n) for n in names})
    sink = io.StringIO()
    with _replaying(receipts, references) as session:
        try:
            with redirect_stdout(sink), redirect_stderr(sink):
                exec(code, namespace)  # noqa: S102 - trusted source: the instructor's test cell
        except NotReplayable as exc:
            return "not_replayable", str(exc)
        except Tampered as exc:
            return "fail", str(exc)
        except BaseException as exc:  # noqa: BLE001 - the genuine cell does not pass on these outputs
            if session.attempts == 0:
                # It failed before any check_function asked for a receipt: a check of another kind.
                return "not_replayable", f"the cell's checks do not go through check_function ({type(exc).__name__})"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if session.delegated:
                return "delegated", session.delegated
            if isinstance(exc, AssertionError):
                # The check's whole message, and the test cell's line that failed (feedback shows a
                # visible check's message; a hidden check's is never shown).
                return "fail", f"the genuine check fails on the recorded outputs ({first})", _cell_line(exc), str(exc)[:4000]
            return "fail", f"{type(exc).__name__}: {first}"
        attempts = session.attempts
    if attempts == 0:
        return "not_replayable", "the cell calls no receipt-producing check"
    return "pass", ""


# ---------------------------------------------------------------------------------------------
# The learner's side of every check_function call: record, or answer from the receipts
# ---------------------------------------------------------------------------------------------


class Learner:
    """Calls the learner's function for ``check_function``.

    In the kernel it calls it (``safe_call``, watching for delegation) and, while grading,
    publishes a receipt of every call. In the grader's replay process it calls nothing: each case
    is answered from the receipts, and ``delegated`` is judged from the grader's reading of the
    submission (``references``), not from anything the kernel said.
    """

    def __init__(self, exercise: str, fn, rule):
        from bncourse.checks.delegation import Watch

        self.exercise = exercise
        self.fn = fn
        self.watch = Watch(rule)
        self.session = _SESSION
        self.recording = recording()
        self.calls: list[RecordedCall] = []
        self.index = 0
        self.entry = Receipt(exercise)
        self.delegated = ""
        if self.session is not None:
            self.entry = self.session.next_entry(exercise)
            self.delegated = rule.judge(self.session.references)
            self.session.delegated = self.session.delegated or self.delegated

    def call(self, case) -> Call:
        args = case.make_args()
        if self.session is not None:
            return self._replayed(case, args)
        fingerprint = digest(args) if self.recording else ""
        call = safe_call(self.fn, args, self.watch)
        if self.recording:
            self.calls.append(RecordedCall(fingerprint, None if call.error else encode(call.value), call.error[:2000],
                                           call.error_type, list(call.mutated), call.delegated))
        return call

    def _replayed(self, case, args: tuple) -> Call:
        calls = self.entry.calls
        if self.index >= len(calls):
            raise Tampered(f"'{self.exercise}': fewer recorded calls than cases")
        rec = calls[self.index]
        self.index += 1
        if rec.digest != digest(args):
            if digest(case.make_args()) != digest(args):
                raise NotReplayable(f"case '{case.name}' of '{self.exercise}' is not deterministic")
            raise Tampered(f"'{self.exercise}', case '{case.name}': recorded for other inputs")
        if rec.delegated:  # the kernel's own finding can only cost the learner, so it is kept
            self.session.delegated = self.session.delegated or rec.delegated
        return rec.to_call()

    def finish(self) -> None:
        if self.recording:
            publish(Receipt(self.exercise, self.calls))
        elif self.session is not None and self.index != len(self.entry.calls):
            raise Tampered(f"'{self.exercise}': more recorded calls than cases")


def use_hidden_seed(seed) -> None:
    """The grading run's hidden-case seed, for the checks' hidden cases (``bncourse.checks.inputs``)."""
    if seed is None:
        return
    from bncourse.checks import inputs

    if hasattr(inputs, "use_hidden_seed"):  # helper "checks" adds it; without it the hidden cases are fixed
        inputs.use_hidden_seed(int(seed))


def judge(job: dict, budget: ReceiptBudget | None = None) -> dict[str, list]:
    """{"cells": [{"id", "source", "receipts": [bundle, ...], "references": [...], "hidden_seed": int}]}
    -> {id: [verdict, reason]}. One notebook's receipts are read within ``budget`` (default: the caps
    of ``bncourse.checks.receipts``); a cell whose receipts go past it is refused unread."""
    budget = budget or ReceiptBudget()
    out = {}
    for cell in job.get("cells", []):
        use_hidden_seed(cell.get("hidden_seed"))
        try:
            receipts = budget.read_cell(cell.get("receipts", []))
        except ReceiptsTooLarge as exc:
            out[cell["id"]] = ["not_replayable", str(exc)]
            continue
        out[cell["id"]] = list(replay_cell(cell["source"], receipts, cell.get("references", [])))
        receipts = None
    return out


def main() -> int:
    """stdin: the job ``judge`` takes; stdout: its verdicts."""
    json.dump(judge(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so check_function recognises the same Replayer class.
    from bncourse.checks.replay import main as _main

    sys.exit(_main())
