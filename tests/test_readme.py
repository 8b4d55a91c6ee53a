"""The README's promise: it opens with two commands, and CI runs the second one verbatim."""

import re

from conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_does_the_readme_start_with_exactly_two_one_line_commands():
    text = (REPO / "README.md").read_text()
    first_block = text.index("```bash")
    assert "```" not in text[:first_block]
    first, second = readme_commands()[:2]
    assert "\n" not in first and "bncourse start" in first
    assert "\n" not in second and "pytest" in second and "BNCOURSE_FAST=1" in second
    # nothing but prose between and before them: the third code block comes later
    assert text.index(second) < text.index("## What this is")


def test_does_ci_run_the_readmes_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
