"""The course as a learner meets it: JupyterLab in a real browser (Playwright driving Chromium).

One learner session, recorded once per test run (the ``learner`` fixture), then asked questions:
``bncourse start`` on a fresh workspace; every notebook opened; a correct solution typed into each
exercise of notebooks 1 to 4 and 11 and Run All; one wrong solution typed; saved; the server stopped and
started again with a second ``bncourse start``. Kernels run at the grading size (BNCOURSE_GRADING=1: the
fast size, with experiments whose outputs earn no points shrunk further): notebooks 1 to 4 have no value
of that size, so they run exactly as in fast mode; notebook 11's experiment trains 60 steps instead of
100 (what is asked of it here is that its cells run and its plots show, not what they show). An
instructor's JupyterLab in the course folder is checked for the formgrader.

Screenshots of each notebook go to $BNCOURSE_SCREENSHOTS or a temporary folder; the folder is
printed in pytest's summary. Without Chromium these tests skip and say how to get it.
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from lab_browser import (
    CURRENT_TAB, HOW_TO_GET_CHROMIUM, NOTEBOOK, STDERR, cell, cell_source, close_notebook, find_chromium, layout,
    learner_environment, library_warnings, menu, open_notebook, output_text, save, saved_images,
    screenshot_progress_bar, scroll_to_top, solutions, start_instructor_lab, start_learner_lab, type_into_cell,
    wait_until_run,
)

from bncourse.run_size import RunSize
from conftest import COURSE, GENERATED

CHROMIUM = find_chromium()
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None
if CHROMIUM is None or sync_playwright is None:
    pytest.skip(HOW_TO_GET_CHROMIUM, allow_module_level=True)

pytestmark = pytest.mark.slow

GRADING_SIZE = RunSize.GRADING.kernel_env()  # {"BNCOURSE_FAST": "1", "BNCOURSE_GRADING": "1"}
SOLVED = ("01_why_normalize", "02_batchnorm_forward", "03_batchnorm_backward", "04_batchnorm_pytorch",
          "11_inside_the_network")  # 11: its layer-by-layer histograms must show as images
WIDGET = ".jp-OutputArea-output .widget-progress, .jp-OutputArea-output .widget-hprogress"
# The wrong solution of the test: normalizing with the unbiased variance (a classic mistake).
WRONG = ("02_batchnorm_forward", "batchnorm_forward", textwrap.dedent('''\
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        mu = x.mean(axis=0)
        var = x.var(axis=0, ddof=1)
        x_hat = (x - mu) / np.sqrt(var + eps)
        return gamma * x_hat + beta, (x_hat, var, gamma)'''))

_GREEN_JS = """(root) => Array.from(root.querySelectorAll('*'))
    .filter(e => e.children.length === 0 && /^(pass|passed|fail|failed)$/i.test(e.textContent.trim()))
    .map(e => [e.textContent.trim().toLowerCase(), getComputedStyle(e).color])"""


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def _expected_failure(wrong_code: str, check_code: str) -> str:
    """What the check cell says about ``wrong_code``, computed here (not in the browser)."""
    import numpy as np

    scope: dict = {"np": np}
    exec(wrong_code, scope)  # noqa: S102 - our own test code
    with pytest.raises(AssertionError) as info:
        exec(check_code, scope)  # noqa: S102 - the notebook's visible check cell
    return str(info.value).splitlines()[0]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("BNCOURSE_SCREENSHOTS") or tmp_path_factory.mktemp("browser-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture(scope="module")
def learner(tmp_path_factory, browser, screenshots) -> dict:
    """A learner's session, recorded: what the page showed, the server logs, the files."""
    root = tmp_path_factory.mktemp("learner")
    ws = root / "bncourse-workspace"
    env = learner_environment(**GRADING_SIZE)
    rec: dict = {"ws": ws, "shots": [], "notebooks": {}, "typed": {}}
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def shot(name: str, target=None) -> None:
        path = screenshots / f"{name}.png"
        (target or page).screenshot(path=str(path))
        rec["shots"].append(path.name)

    server = start_learner_lab(ws, root / "lab-first.log", env)
    try:
        page.goto(server.url("lab", reset=""))
        page.wait_for_selector("#jp-menu-panel .lm-MenuBar-itemLabel", timeout=120_000)
        page.wait_for_timeout(4000)  # JupyterLab asks about news a moment after it starts
        rec["menus"] = page.locator("#jp-menu-panel .lm-MenuBar-itemLabel").all_inner_texts()
        rec["sidebar_tabs"] = [t.get_attribute("title") or "" for t in page.locator(".jp-SideBar .lm-TabBar-tab").all()]
        rec["toasts"] = page.locator(".Toastify__toast").all_inner_texts()
        shot("00_learner_lab")

        for nb_path in sorted(ws.glob("[0-9]*/*.ipynb")):
            name = nb_path.parent.name
            rel = f"{name}/{nb_path.name}"
            lay = layout(nb_path)
            seen: dict = {"layout": lay}
            rec["notebooks"][name] = seen
            open_notebook(page, server, rel)
            if name in SOLVED:
                source = solutions(COURSE / "source" / name / nb_path.name)
                for grade_id, index in lay.exercises.items():
                    type_into_cell(page, index, source[grade_id])
                    rec["typed"][(rel, index)] = source[grade_id]
                menu(page, "Run", "Run All Cells")
                if name == "04_batchnorm_pytorch":  # training shows tqdm bars while it runs (leave=False)
                    bar_shot = screenshots / f"{name}-progress-bar.png"
                    seen["widget"] = screenshot_progress_bar(page, WIDGET, bar_shot, timeout=300)
                    if seen["widget"]:
                        rec["shots"].append(bar_shot.name)
                seen["prompts"] = wait_until_run(page)
                seen["images"] = page.locator(f"{NOTEBOOK} .jp-OutputArea-output img").count()
                seen["checks"] = {}
                for grade_id, index in lay.checks.items():
                    c = cell(page, index)
                    c.scroll_into_view_if_needed()
                    seen["checks"][grade_id] = {
                        "html_tables": c.locator(".jp-OutputArea .jp-RenderedHTMLCommon table").count(),
                        "verdicts": c.evaluate(_GREEN_JS),
                        "text": output_text(page, index),
                    }
                    shot(f"{name}-check-{grade_id}", c)
            if name not in SOLVED:  # opened, not touched: its tab must not say "modified"
                server.wait_until_kernels_are_quiet()
                seen["marked_modified"] = page.locator(f"{CURRENT_TAB}.jp-mod-dirty").count() > 0
            seen["stderr"] = page.locator(f"{NOTEBOOK} {STDERR}").all_inner_texts()
            first = page.locator(f"{NOTEBOOK} .jp-OutputArea-output").first
            seen["first_output"] = first.text_content() if first.count() else ""
            scroll_to_top(page)
            shot(name)

            if name == WRONG[0]:
                index = lay.exercises[WRONG[1]]
                check_index = lay.checks[f"{WRONG[1]}_tests"]
                type_into_cell(page, index, WRONG[2])
                rec["typed"][(rel, index)] = WRONG[2]
                cell(page, index).click()
                page.keyboard.press("Escape")
                page.keyboard.press("Shift+Enter")  # the exercise cell, then its check cell
                page.keyboard.press("Shift+Enter")
                wait_until_run(page)
                rec["wrong"] = {
                    "shown": output_text(page, check_index),
                    "expected": _expected_failure(WRONG[2], cell_source(page, check_index)),
                    "html_tables": cell(page, check_index).locator(
                        ".jp-OutputArea .jp-RenderedHTMLCommon table").count(),
                    "verdicts": cell(page, check_index).evaluate(_GREEN_JS),
                }
                shot(f"{name}-wrong-solution", cell(page, check_index))
            if name in SOLVED:
                save(page)
                seen["saved_images"] = saved_images(nb_path)
            close_notebook(page, server)
        page.goto("about:blank")
    finally:
        server.stop()
    rec["first_log"] = (root / "lab-first.log").read_text()
    rec["files_after_first"] = {p: p.read_bytes() for p in ws.rglob("*.ipynb")}

    server = start_learner_lab(ws, root / "lab-second.log", env)
    try:
        rec["files_after_second_start"] = {p: p.read_bytes() for p in ws.rglob("*.ipynb")}
        rec["reopened"] = {}
        page.goto(server.url("lab", reset=""))
        page.wait_for_selector("#filebrowser .jp-DirListing-item", timeout=120_000)
        for (rel, index) in rec["typed"]:
            if rel not in rec["reopened"]:
                open_notebook(page, server, rel)  # in a tab of its own: the ones before stay open until the end
                tables = page.locator(f"{NOTEBOOK} .jp-RenderedHTMLCommon table")
                try:  # saved outputs are rendered a moment after the cells appear
                    tables.first.wait_for(state="attached", timeout=60_000)
                except Exception:  # noqa: BLE001 - counted as none below
                    pass
                rec["reopened"][rel] = {"tables": tables.count()}
            rec["reopened"][rel][index] = cell_source(page, index)
        shot("99_after_restart")
        server.shutdown_kernels(page)
    finally:
        server.stop()
    rec["second_log"] = (root / "lab-second.log").read_text()
    page.close()
    return rec


def _note_screenshots(record_property, learner, screenshots) -> None:
    record_property("screenshots", f"{screenshots}: {', '.join(learner['shots'])}")


def test_does_the_learners_lab_start_without_warnings_or_instructor_tools(learner, record_property, screenshots):
    _note_screenshots(record_property, learner, screenshots)
    assert "Nbgrader" not in learner["menus"], learner["menus"]
    assert not [t for t in learner["sidebar_tabs"] if "Assignment" in t or "nbgrader" in t.lower()], learner["sidebar_tabs"]
    assert not [t for t in learner["toasts"] if "news" in t.lower()], learner["toasts"]
    for log in ("first_log", "second_log"):
        assert library_warnings(learner[log]) == [], f"{log}:\n" + "\n".join(library_warnings(learner[log]))
        assert "nbgrader_config.py" not in learner[log]
        # nbgrader's instructor server extensions stay out of the learner's server; Validate's is in
        assert "server_extensions.formgrader" not in learner[log] and "assignment_list" not in learner[log]
        assert "validate_assignment | extension was successfully loaded" in learner[log]


def test_do_solved_notebooks_run_all_without_an_error_in_the_browser(learner):
    for name in SOLVED:
        seen = learner["notebooks"][name]
        assert seen["stderr"] == [], f"{name} shows errors or warnings:\n" + "\n".join(seen["stderr"])
        numbers = [p for p in seen["prompts"] if re.fullmatch(r"\[\d+\]:", p)]
        assert len(numbers) == seen["layout"].code_cells, f"{name}: not every cell ran: {seen['prompts']}"


def test_does_each_check_show_a_green_pass_table_as_html(learner):
    for name in SOLVED:
        checks = learner["notebooks"][name]["checks"]
        assert set(checks) == set(learner["notebooks"][name]["layout"].checks) and checks
        for grade_id, shown in checks.items():
            assert shown["html_tables"] >= 1, f"{name} {grade_id}: no rendered HTML table:\n{shown['text']}"
            verdicts = shown["verdicts"]
            assert verdicts and all(word.startswith("pass") for word, _ in verdicts), f"{name} {grade_id}: {verdicts}"
            for word, color in verdicts:
                r, g, b = _rgb(color)
                assert g > r and g > b, f"{name} {grade_id}: '{word}' is not green ({color})"


def test_do_plots_show_as_images_and_progress_bars_as_widgets(learner):
    for name in SOLVED:
        seen = learner["notebooks"][name]
        assert seen["images"] == seen["saved_images"], f"{name}: {seen['saved_images']} plots made, {seen['images']} shown"
    # notebook 11: activations and gradients (two inits each) and update ratios (two inits), side by side
    assert learner["notebooks"]["11_inside_the_network"]["images"] >= 6, learner["notebooks"]["11_inside_the_network"]
    assert sum(learner["notebooks"][name]["images"] for name in SOLVED) >= 3, "hardly any plot was shown"
    assert learner["notebooks"]["04_batchnorm_pytorch"]["widget"], (
        "notebook 4's training showed no progress-bar widget in view long enough for a screenshot")


def test_does_every_notebook_open_and_begin_with_the_courses_output(learner):
    assert sorted(learner["notebooks"]) == sorted(p.name for p in (COURSE / "source").iterdir() if p.is_dir())
    for name, seen in learner["notebooks"].items():
        assert seen["layout"].exercises, f"{name}: no exercise cells found"
        first = seen["first_output"]
        if name in SOLVED:
            assert first and "warning" not in first.lower(), f"{name}: the first output is a warning:\n{first}"
        else:
            assert seen["stderr"] == []


def test_does_a_notebook_only_opened_stay_unmodified(learner):
    """The student versions carry the kernel's metadata, which JupyterLab would otherwise write on
    opening: the learner is not asked to save a notebook they never changed."""
    opened = {name: seen["marked_modified"] for name, seen in learner["notebooks"].items() if name not in SOLVED}
    assert opened and not any(opened.values()), f"marked modified by opening alone: {opened}"


def test_does_a_wrong_solution_show_the_mistake_the_check_names(learner):
    wrong = learner["wrong"]
    assert "AssertionError" in wrong["shown"]
    assert " ".join(wrong["expected"].split()) in " ".join(wrong["shown"].split()), wrong
    assert "unbiased" in wrong["shown"].lower(), wrong["shown"]


def test_does_a_failing_check_show_its_table_in_red_and_no_traceback(learner):
    """The same table as a pass, its rows red, the named mistake on top; no frame from the package."""
    wrong = learner["wrong"]
    assert wrong["html_tables"] >= 1, wrong["shown"]
    fails = [color for word, color in wrong["verdicts"] if word == "fail"]
    assert fails and all(_rgb(c)[0] > 150 and _rgb(c)[1] < 100 for c in fails), wrong["verdicts"]
    assert "cases passed" in wrong["shown"] and "Likely mistake" in wrong["shown"], wrong["shown"]
    assert "Traceback" not in wrong["shown"] and "bncourse/checks" not in wrong["shown"], wrong["shown"]
    assert "File " not in wrong["shown"], wrong["shown"]


def test_are_the_learners_edits_kept_after_a_restart_and_a_second_start(learner):
    assert learner["files_after_second_start"] == learner["files_after_first"], "the second start changed a notebook"
    assert "up to date" in learner["second_log"] and "Course workspace" in learner["second_log"]
    for (rel, index), typed in learner["typed"].items():
        on_disk = __import__("nbformat").read(learner["ws"] / rel, as_version=4).cells[index].source
        assert on_disk.strip() == typed.strip(), f"{rel} cell {index} was not saved as typed"
        shown = learner["reopened"][rel][index]
        assert " ".join(shown.split()) == " ".join(typed.split()), f"{rel} cell {index} after restart:\n{shown}"
    for rel, seen in learner["reopened"].items():
        assert seen["tables"] >= 1, f"{rel}: the saved check tables did not come back"


def test_does_the_formgrader_list_the_assignments_in_the_course_folder(tmp_path, browser, screenshots):
    course = tmp_path / "course"
    shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
    (tmp_path / "exchange").mkdir()  # nbgrader's exchange must exist for the formgrader's release/collect
    env = learner_environment(BNCOURSE_EXCHANGE=str(tmp_path / "exchange"), BNCOURSE_FAST="1")
    server = start_instructor_lab(course, tmp_path / "instructor.log", env)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(server.url("lab", reset=""))
        page.wait_for_selector("#jp-menu-panel .lm-MenuBar-itemLabel", timeout=120_000)
        assert "Nbgrader" in page.locator("#jp-menu-panel .lm-MenuBar-itemLabel").all_inner_texts()
        menu(page, "Nbgrader", "Formgrader")
        frame = page.frame_locator("iframe").first
        names = sorted(p.name for p in (course / "source").iterdir() if p.is_dir())
        for name in names:
            frame.get_by_text(name, exact=True).first.wait_for(timeout=120_000)
        assert frame.get_by_text("does not exist").count() == 0, "the formgrader says the exchange is missing"
        page.screenshot(path=str(screenshots / "formgrader.png"))
    finally:
        page.close()
        server.stop()
    assert "No nbgrader_config.py" not in (tmp_path / "instructor.log").read_text()
