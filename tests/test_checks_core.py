"""The checks engine: verdicts, diagnoses and manners, whatever the learner's function does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bncourse.checks.core import Case, Mistake, check_function, compare_arrays


def reference(x):
    return x - x.mean(axis=0)


def forgot_axis(x):
    return x - x.mean()


CASES = [Case(f"N={n}, D={d}", lambda n=n, d=d: (np.random.default_rng(n).normal(size=(n, d)),)) for n, d in [(4, 3), (2, 1)]]
MISTAKES = [Mistake("mean over all entries", "pass axis=0", forgot_axis)]


def check(fn):
    return check_function("center", fn, reference, CASES, MISTAKES)


def test_does_a_correct_function_pass_every_case():
    result = check(lambda x: x - x.mean(axis=0, keepdims=True))
    assert result.passed and bool(result)
    assert result.assert_passed() is None


def test_is_a_known_mistake_named():
    result = check(forgot_axis)
    assert not result.passed
    assert "mean over all entries" in result.diagnosis
    with pytest.raises(AssertionError, match="mean over all entries: pass axis=0"):
        result.assert_passed()


def test_does_an_unknown_wrong_answer_fail_without_a_false_diagnosis():
    result = check(lambda x: x * 2)
    assert not result.passed
    assert "mean over all entries" not in result.diagnosis
    assert "differ" in str(result)


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda x: None, "is None"),
        (lambda x: x[:1], "has shape"),
        (lambda x: (x - x.mean(0)).astype(np.float32), "has dtype"),
        (lambda x: [1, 2], "should be a numpy array"),
        (lambda x: 1 / 0, "raised ZeroDivisionError"),
        (lambda x: np.full_like(x, np.nan), "NaN"),
    ],
)
def test_do_broken_returns_get_a_readable_verdict(fn, words):
    result = check(fn)
    assert not result.passed
    assert words in str(result)


def test_is_an_untouched_stub_called_not_attempted():
    def stub(x):
        raise NotImplementedError()

    assert "not attempted" in check(stub).diagnosis


def test_is_an_input_changed_in_place_caught():
    def in_place(x):
        x -= x.mean(axis=0)
        return x

    result = check(in_place)
    assert not result.passed
    assert "in place" in result.diagnosis


def test_does_a_passing_check_stay_silent_on_stderr(capfd):
    def noisy(x):
        warnings.warn("learner warning")
        np.log(np.zeros(1))  # numpy's divide-by-zero warning
        return x - x.mean(axis=0)

    result = check(noisy)
    assert result.passed
    out, err = capfd.readouterr()
    assert err == ""
    assert any("learner warning" in n for n in result.notes)


def test_is_a_non_function_refused_with_a_hint():
    result = check(np.zeros(3))
    assert not result.passed and "no parentheses" in result.diagnosis


def test_does_the_result_render_as_html_with_the_diagnosis():
    html = check(forgot_axis)._repr_html_()
    assert "<table>" in html and "mean over all entries" in html and "fail" in html


def test_does_compare_arrays_point_at_the_worst_entry():
    msg = compare_arrays("out", np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0]), 1e-6, 1e-8)
    assert "1 of 3 values differ" in msg and "index (2,)" in msg and "expected 3" in msg
    assert compare_arrays("out", np.ones(2), np.ones(2), 1e-6, 1e-8) == ""


def test_does_an_empty_case_list_never_pass():
    assert not check_function("x", reference, reference, []).passed


def test_does_replacing_numpys_comparisons_after_the_checks_were_imported_change_nothing(monkeypatch):
    """The setup cell imports bncourse.checks first: a learner's later np.isclose = ... fools no check."""
    monkeypatch.setattr(np, "isclose", lambda a, b, **k: np.ones(np.broadcast(a, b).shape, dtype=bool))
    monkeypatch.setattr(np, "array_equal", lambda *a, **k: True)
    result = check_function("double", lambda x: x * 3, lambda x: x * 2, [Case("x", lambda: (np.arange(1.0, 4.0),))])
    assert not result.passed and result.cases[0].kind == "values"


@pytest.mark.parametrize("fn,kind", [
    (lambda x: x[:1] * 2, "shape"),
    (lambda x: (x * 2).astype(np.float32), "dtype"),
    (lambda x: x.__imul__(2), "mutated"),
    (lambda x: 1 / 0, "raised"),
    (lambda x: x * 5, "values"),
], ids=["shape", "dtype", "mutated", "raised", "values"])
def test_does_each_case_outcome_carry_its_kind_as_data(fn, kind):
    result = check_function("double", fn, lambda x: x * 2, [Case("x", lambda: (np.arange(1.0, 4.0),))],
                            arg_names=("x",))
    assert [c.kind for c in result.cases] == [kind]
    if kind == "mutated":
        assert result.cases[0].wrong == ("x",) and "(changed: x)" not in result.diagnosis


def test_does_the_verdict_say_how_many_cases_passed_in_plain_words():
    half = check(lambda x: reference(x) if x.shape[0] == 4 else x)
    assert half.message.startswith("center: 1 of 2 cases passed"), half.message
    assert check(reference).message == "center: all 2 cases passed"
    assert "1 of 2 cases passed" in half._repr_html_() and "FAILED" not in str(half)


def test_does_a_failure_show_the_mistake_and_table_without_frames_from_the_package():
    """In IPython the raised error renders through ``_render_traceback_``: the verdict, no frames."""
    result = check(forgot_axis)
    with pytest.raises(AssertionError) as info:
        result.assert_passed()
    error = info.value
    assert type(error).__name__ == "AssertionError"  # the ename nbgrader and the progress report read
    shown = error._render_traceback_()
    assert shown[0] == f"AssertionError: {result.message}" and "Likely mistake: mean over all entries" in shown[0]
    assert not any("bncourse" in line or "File " in line for line in shown), shown
    assert any("[FAIL] N=4, D=3" in line for line in shown)  # no frontend displayed the table: the text one follows


def test_does_a_failure_show_the_same_table_as_a_pass_with_the_mistake_on_top():
    failed, passed = check(forgot_axis)._repr_html_(), check(reference)._repr_html_()
    assert failed.index("Likely mistake") < failed.index("<table>")
    strip = lambda page: page[page.index("<table>"):page.index("</table>")].split("<tr>")[1]  # noqa: E731
    assert strip(failed) == strip(passed)  # the same header row


def test_does_the_result_carry_the_named_mistakes_stable_id():
    assert check(forgot_axis).mistake_id == "mean-over-all-entries"
    assert check(reference).mistake_id == "" and check(lambda x: x * 2).mistake_id == ""
    assert Mistake("eps outside", "", forgot_axis, id="eps-outside-sqrt").id == "eps-outside-sqrt"


def test_does_a_failed_check_end_with_the_call_for_a_hint_and_note_the_attempt(monkeypatch):
    import bncourse.hints as hints

    noted = []
    monkeypatch.setattr(hints, "record_check", noted.append)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    result = check_function("standardize", forgot_axis, reference, CASES, MISTAKES)
    with pytest.raises(AssertionError) as info:
        result.assert_passed()
    assert noted == [result]  # the hint ladder and the solution gate learn that the check ran
    assert info.value._render_traceback_()[-1].startswith("Stuck? Run hint('standardize')")


def test_does_a_grading_kernel_show_no_hint_line(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    result = check_function("standardize", forgot_axis, reference, CASES, MISTAKES)
    with pytest.raises(AssertionError) as info:
        result.assert_passed()
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # the same failure rendered where grading runs
    assert not any("hint(" in line for line in info.value._render_traceback_())


def test_does_ipython_show_a_failing_check_cell_as_the_message_and_table_with_no_package_frames():
    """The learner's view: a test cell run by IPython (its showtraceback path), not our renderer called by hand."""
    import subprocess
    import sys

    cell = ("from bncourse.checks.forward import check_batchnorm_forward\n"
            "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
            "    mean, var = x.mean(axis=0), x.var(axis=0)\n"
            "    x_hat = (x - mean) / (var ** 0.5 + eps)\n"
            "    return gamma * x_hat + beta, (x, x_hat, mean, var, gamma, beta, eps)\n"
            "check_batchnorm_forward(batchnorm_forward).assert_passed()\n")
    shell = ("from IPython.core.interactiveshell import InteractiveShell\n"
             f"result = InteractiveShell.instance().run_cell({cell!r})\n"
             "print('ERROR', type(result.error_in_exec).__name__)\n")
    shown = subprocess.run([sys.executable, "-c", shell], capture_output=True, text=True, timeout=120).stdout
    assert "ERROR AssertionError" in shown, shown
    assert "Likely mistake: eps outside the square root" in shown and "[FAIL]" in shown, shown  # message and table
    assert "bncourse/" not in shown and "Traceback" not in shown and "File " not in shown, shown
