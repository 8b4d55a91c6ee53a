"""The fast-mode switch that CI sets and learners leave alone."""

import pytest

from bncourse import runtime


@pytest.mark.parametrize("value, fast", [("1", True), ("yes", True), ("", False), ("0", False), ("false", False)])
def test_does_the_environment_variable_choose_the_size(monkeypatch, value, fast):
    monkeypatch.setenv("BNCOURSE_FAST", value)
    assert runtime.fast_mode() is fast
    assert runtime.pick(fast="small", full="large") == ("small" if fast else "large")


def test_is_the_full_run_the_default(monkeypatch):
    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    assert runtime.pick(fast=1, full=20) == 20
