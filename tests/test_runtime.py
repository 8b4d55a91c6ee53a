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


def test_does_a_grading_kernel_get_the_grading_size_where_one_is_given(monkeypatch):
    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    monkeypatch.setenv("BNCOURSE_GRADING", "1")
    assert runtime.fast_mode() is True
    assert runtime.pick(fast=10, full=100, grading=2) == 2
    assert runtime.pick(fast=10, full=100) == 10  # no grading size: the fast one


def test_is_the_grading_size_ignored_outside_grading(monkeypatch):
    monkeypatch.setenv("BNCOURSE_FAST", "1")
    monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
    assert runtime.pick(fast=10, full=100, grading=2) == 10
