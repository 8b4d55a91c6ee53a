"""What the re-judging tests grade: notebook 1's standardize test cell, the receipts a kernel
publishes for a function, an honest solution and a wrong one."""

from __future__ import annotations

TEST_CELL = """from bncourse.checks.normalize import check_standardize
check_standardize(standardize).assert_passed()
### BEGIN HIDDEN TESTS
check_standardize(standardize, hidden=True).assert_passed()
### END HIDDEN TESTS"""


def receipts_of(fn, monkeypatch) -> list:
    """Run the test cell's checks on ``fn`` the way the grading kernel does, keeping the receipts (as published)."""
    from bncourse.checks import replay
    from bncourse.checks.normalize import check_standardize

    published = []
    monkeypatch.setattr(replay, "publish", lambda receipt: published.append(receipt.to_json()))
    with replay.use_mode(replay.Mode.RECORD):
        check_standardize(fn)
        check_standardize(fn, hidden=True)
    return published


def my_standardize(X_train, X_test):
    import numpy as np
    m, s = X_train.mean(0), X_train.std(0)
    return (X_train - m) / s, (np.asarray(X_test) - m) / s


def ddof1(X_train, X_test):
    m, s = X_train.mean(0), X_train.std(0, ddof=1)
    return (X_train - m) / s, (X_test - m) / s
