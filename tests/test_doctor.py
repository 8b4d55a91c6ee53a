"""`bncourse doctor`: a clear report, and a non-zero exit when something is broken."""

from bncourse import doctor
from bncourse.cli import main


def test_does_a_healthy_machine_pass_with_the_device_and_data_named(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for words in ("torch", "nbgrader", "training device", "cpu", "data cache", "digits:", "Everything the course needs works"):
        assert words in out


def test_does_a_missing_package_fail_the_doctor_by_name(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "PACKAGES", doctor.PACKAGES + ("package_that_is_not_installed",))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "BAD  package_that_is_not_installed" in out and "Broken: package_that_is_not_installed" in out
