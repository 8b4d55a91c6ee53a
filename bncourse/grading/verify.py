"""``VerifyChecks``: the grader decides every graded test cell, outside the learner's kernel."""

from __future__ import annotations

from nbformat.v4 import new_output
from nbgrader import utils as nbutils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Float

from bncourse.checks import replay
from bncourse.grading import opaque, rejudging, solution_free, sources
from bncourse.grading.execute import HIDDEN_SEED_KEY, PRESTARTED_KEY, trusted_sources
from bncourse.grading.rejudging import check_modules, replay_cells
from bncourse.grading.time_limit import TIME_LIMIT_ENAME

__all__ = ["REFUSED_ENAME", "SOURCE_FINDINGS", "VERIFY_ENAME", "VerifyChecks", "pop_receipts"]

VERIFY_ENAME = "GradingVerificationError"   # the re-judged verdict differs (the reason may quote hidden cases)
REFUSED_ENAME = "GradingRefusedError"       # delegation, or a cell the grader cannot re-judge (reason shown)


def _is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and nbutils.is_grade(cell) and not nbutils.is_solution(cell)


def pop_receipts(cell) -> list:
    receipts, kept = [], []
    for o in cell.get("outputs", []):
        if o.get("output_type") in ("display_data", "execute_result") and replay.MIME in o.get("data", {}):
            receipts.append(o["data"][replay.MIME])
        else:
            kept.append(o)
    cell.outputs = kept
    return receipts


class VerifyChecks(NbGraderPreprocessor):
    """After Execute: the grader decides every graded test cell, outside the learner's kernel.

    Every test cell is re-judged, whether it passed, failed or raised in the kernel: its source as
    the gradebook stores it is run again in a fresh process where the learner's objects are
    stand-ins answered from the cell's receipts (``bncourse.checks.replay``), with the genuine
    checks and references. The cell's outputs are then rewritten so that nbgrader's own
    ``determine_grade`` (plain ``nbgrader autograde`` as much as ``bncourse grade``) reads exactly
    that verdict: a pass keeps no error and no stderr; anything else gets one error output, first,
    with the reason; and no test cell keeps an ``execute_result`` (nbgrader would read one as a
    partial score), it becomes display data. So the gradebook's score of a test cell is the
    grader's verdict times its points, and the feedback shows that same verdict. A cell the grader
    cannot re-judge scores 0 (fail closed), never the kernel's word. Receipts are removed from
    every cell.

    What the learner's code reads (``bncourse.grading.sources``) is a report for the instructor
    (``SOURCE_FINDINGS`` in the notebook's metadata, the log and the grading report). It can only
    cost points (a hand-over it reads, e.g. torch's batch norm in a torch exercise, fails the cell
    as before), never add any; the defence is the sandbox: no solution is in the kernel to hand
    an exercise to.
    """

    timeout = Float(600, help="Seconds allowed for re-judging one notebook's test cells.").tag(config=True)

    def preprocess(self, nb, resources):
        trusted = trusted_sources(resources)
        prestarted = (resources or {}).pop(PRESTARTED_KEY, None)
        seed = (resources or {}).get(HIDDEN_SEED_KEY)
        program = sources.Program(*sources.learner_and_instructor_sources(nb))
        jobs = []
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            receipts = pop_receipts(cell)
            if _is_test_cell(cell):
                grade_id = cell.metadata["nbgrader"].get("grade_id", "")
                # Re-run the instructor's source from the gradebook, never text from the submission.
                source = cell.source if trusted is None else trusted.get(grade_id, cell.source)
                try:
                    names = replay.free_names(source)
                except SyntaxError:
                    names = set()
                job = {"id": str(i), "source": source, "receipts": receipts,
                       "references": sorted(program.references(names))}
                if seed is not None:
                    job["hidden_seed"] = int(seed)
                jobs.append(job)
        _report_source_findings(nb, self.log)
        if not jobs:
            if prestarted is not None:
                prestarted.close()
            return nb, resources
        if prestarted is None:
            prestarted = rejudging.rejudger(check_modules([job["source"] for job in jobs]))
        try:
            verdicts = replay_cells(jobs, timeout=self.timeout, process=prestarted)
        except Exception as exc:  # noqa: BLE001 - no verdict: every test cell scores 0, with the reason
            self.log.error("Re-judging failed: %s", exc)
            verdicts = {job["id"]: ["not_replayable", f"the re-judging process failed ({str(exc)[:200]})"]
                        for job in jobs}
        for job in jobs:
            cell = nb.cells[int(job["id"])]
            grade_id = cell.metadata["nbgrader"].get("grade_id", job["id"])
            verdict, reason, *where = verdicts.get(job["id"], ["not_replayable", "no verdict from the re-judging process"])
            self._settle(cell, grade_id, verdict, reason, *where)
        return nb, resources

    def _settle(self, cell, grade_id: str, verdict: str, reason: str, line: int | None = None,
                message: str = "") -> None:
        """Rewrite a test cell's outputs so that nbgrader reads the grader's ``verdict`` and nothing else."""
        kernel_error = next((o for o in cell.outputs if o.output_type == "error"), None)
        outputs = []
        for o in cell.outputs:
            if o.output_type == "error":
                continue  # the kernel's word does not count, either way
            if o.output_type == "execute_result":  # never a partial score
                o = new_output("display_data", data=o.get("data", {}), metadata=o.get("metadata", {}))
            elif o.output_type == "stream" and o.get("name") == "stderr":
                o = new_output("stream", name="stdout", text=o.get("text", ""))
            outputs.append(o)
        if verdict == "pass":
            if kernel_error is not None:
                self.log.info("Test cell %s: the kernel raised %s; the grader's re-judging passes it",
                              grade_id, kernel_error.get("ename"))
            cell.outputs = outputs
            return
        traceback = None
        if verdict == "fail" and line is not None and message:
            # The check's own message (its diagnosis), at the test cell's line: feedback shows it when
            # that line is a visible test, and a generic sentence when it is a hidden one.
            ename, text = VERIFY_ENAME, message
            traceback = [f"Cell In[1], line {line}", f"{VERIFY_ENAME}: {message}"]
        elif verdict == "fail":
            ename, text = VERIFY_ENAME, ("the grader re-ran this test cell with genuine checks on your "
                                         f"function's recorded outputs and it did not pass: {reason}")
        elif verdict == "delegated":
            ename, text = REFUSED_ENAME, (f"this exercise was handed to the course's own implementation "
                                          f"({reason}); it scores 0 until your code does the work itself")
        else:
            ename, text = REFUSED_ENAME, (f"the grader could not re-judge this test cell outside your notebook "
                                          f"({reason}), so it scores 0; run the notebook from the top as given")
        self.log.warning("Test cell %s: the grader says %s: %s", grade_id, verdict, reason)
        timeout = next((o for o in cell.outputs if o.output_type == "error"
                        and o.get("ename") in ("CellTimeoutError", TIME_LIMIT_ENAME)), None)
        if timeout is not None:  # the likely reason no receipt came back: say that (it scores 0 all the same)
            ename, text = timeout["ename"], str(timeout.get("evalue", "")) or "the cell ran past its time limit"
            traceback = None
        # First: nbgrader's determine_grade stops at the first error or execute_result it meets.
        cell.outputs = [new_output("error", ename=ename, evalue=text, traceback=traceback or [f"{ename}: {text}"]),
                        *outputs]


SOURCE_FINDINGS = "bncourse_source_findings"  # notebook metadata key: what the learner's code refers to


def _report_source_findings(nb, log) -> None:
    """What each solution cell's names reach in the course or other libraries (for the instructor,
    never a score). A cell the reader cannot parse, even as IPython would, is listed as such."""
    try:
        program = sources.Program(*sources.learner_and_instructor_sources(nb))
    except Exception as exc:  # noqa: BLE001 - a report, not a verdict
        nb.metadata[SOURCE_FINDINGS] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return
    findings = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or not nbutils.is_solution(cell):
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        try:
            names = sources.defined_names(cell.source)
        except SyntaxError as exc:
            findings[grade_id] = [f"<unparsable: {exc.msg} (line {exc.lineno})>"]
            continue
        reached = _backwards_evaluating_forwards(program, names) + sorted(
            r for r in program.references(names) if _noteworthy(r)) + [
            f"<opaque: {found}>" for found in opaque.opaque_code(cell.source)]  # hidden code, named
        if reached:
            findings[grade_id] = reached
    if findings:
        nb.metadata[SOURCE_FINDINGS] = findings
        for grade_id, reached in findings.items():
            log.warning("Source report, %s: %s", grade_id, ", ".join(reached[:8]))


def _backwards_evaluating_forwards(program, names) -> list[str]:
    """``<a backward that evaluates a forward: b -> f>`` for each backward function among ``names`` that
    reaches a forward (the learner's own or the course's). An honest backward uses the forward's cache;
    one that runs a forward may be finite differences (two passes suffice: the Jacobian is gamma times a
    symmetric matrix), which passes every check by value (red team 5's F1): the instructor judges it."""
    found = []
    for name in sorted(n for n in names if "backward" in n.lower()):
        found += [f"<a backward that evaluates a forward: {name} -> {f}>" for f in program.forwards_reached(name)]
    return found


def _noteworthy(reference: str) -> bool:
    """A reference worth an instructor's look: the course's solutions and checks, code read at run
    time, another library's normalization."""
    if reference.startswith(("<dynamic", "<unparsable", "sklearn", "scipy", "torch.ops", "torch._C")):
        return True
    if reference.startswith("bncourse."):
        return solution_free.is_stubbed(reference.rsplit(".", 1)[0]) or reference.startswith("bncourse.checks")
    return reference.startswith("torch") and "norm" in reference.lower()
