"""The LMS round trip's parts: do Canvas's and Moodle's file names reach the right student, and is a bad roster named?

The whole round trip (a Canvas zip through `nbgrader zip_collect`, grading, the Canvas and Moodle CSVs)
runs in tests/test_instructor_guide.py; these are the cheap cases around it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bncourse.grading.lms import CANVAS_REGEX, MOODLE_REGEX, LmsCollectorPlugin, read_roster

COURSE_PATH = "/home/me/bn_course/notebooks/downloaded/02_batchnorm_forward/extracted/submissions/"
ROSTER = """id,first_name,last_name,email,lms_user_id
ada,Ada,Lovelace,ada@example.edu,1001
cy,Cy,Young,cy@example.edu,1003
"""


@pytest.mark.parametrize("name, student, file_id, late", [
    ("lovelaceada_1001_5551_batchnorm_forward.ipynb", "1001", "batchnorm_forward", None),
    ("youngcy_late_1003_88123_batchnorm_forward-1.ipynb", "1003", "batchnorm_forward", "late_"),
    ("obrienpat_1004_77_batchnorm_forward-12.ipynb", "1004", "batchnorm_forward", None),
])
def test_does_the_canvas_pattern_match_the_base_name_of_a_path_full_of_underscores(name, student, file_id, late):
    m = re.match(CANVAS_REGEX, COURSE_PATH + name)  # nbgrader matches the whole path
    assert m and (m["student_id"], m["file_id"], m["late"]) == (student, file_id, late)


@pytest.mark.parametrize("name", [
    "Cy Young_1003_assignsubmission_file_batchnorm_forward.ipynb",
    "Cy Young_1003_assignsubmission_file_/batchnorm_forward.ipynb",  # one folder per student
])
def test_does_the_moodle_pattern_match_flat_and_per_student_folders(name):
    m = re.match(MOODLE_REGEX, COURSE_PATH + name)
    assert m and (m["student_id"], m["file_id"]) == ("1003", "batchnorm_forward")


def test_does_the_collector_map_lms_ids_through_the_roster_and_skip_strangers(tmp_path):
    (tmp_path / "roster.csv").write_text(ROSTER)
    plugin = LmsCollectorPlugin(lms="canvas", roster=str(tmp_path / "roster.csv"))
    got = plugin.collect(COURSE_PATH + "lovelaceada_1001_5551_batchnorm_forward-2.ipynb")
    assert got == {"student_id": "ada", "file_id": "batchnorm_forward"}
    assert plugin.collect(COURSE_PATH + "strangerx_9999_1_batchnorm_forward.ipynb") is None
    moodle = LmsCollectorPlugin(lms="moodle", roster=str(tmp_path / "roster.csv"))
    assert moodle.collect(COURSE_PATH + "Cy Young_1003_assignsubmission_file_batchnorm_forward.ipynb")["student_id"] == "cy"


@pytest.mark.parametrize("text, message", [
    ("name,email\nada,a@x\n", "needs an 'id' column"),
    ("id,lms_user_id\nada,1\n,2\n", "row 3: empty student id"),
    ("id,lms_user_id\nada,1\nbob,1\n", "row 3: student 'bob' (LMS id '1') is listed twice"),
])
def test_does_a_bad_roster_name_the_file_and_the_row(tmp_path, text, message):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        read_roster(path)
    assert str(path) in str(err.value)


def test_does_nbgraders_own_plugin_work_with_the_guides_regex(tmp_path):
    """The guide's pattern for nbgrader's FileNameCollectorPlugin, through real `nbgrader zip_collect`."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "instructors.md").read_text()
    regex = re.search(r'FileNameCollectorPlugin.named_regexp = r"(.+)"', guide).group(1)
    course = tmp_path / "my_course_folder"
    archive = course / "downloaded" / "a_1" / "archive"
    archive.mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'bncourse'\n"
        "c.ZipCollectApp.collector_plugin = 'nbgrader.plugins.FileNameCollectorPlugin'\n"
        f"c.FileNameCollectorPlugin.named_regexp = {regex!r}\n")
    with zipfile.ZipFile(archive / "submissions.zip", "w") as z:
        z.writestr("lovelaceada_late_1001_5551_nb_one-1.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4, '
                                                               '"nbformat_minor": 5}')
    run = subprocess.run([sys.executable, "-m", "nbgrader", "zip_collect", "a_1"], cwd=course, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (course / "submitted" / "1001" / "a_1" / "nb_one.ipynb").is_file(), run.stderr[-2000:]


def test_does_a_moodle_zip_reach_the_roster_students_through_zip_collect(tmp_path):
    """Moodle's "download submissions in folders": one folder per student, the roster maps the participant id."""
    course = tmp_path / "my_course_folder"
    archive = course / "downloaded" / "a_1" / "archive"
    archive.mkdir(parents=True)
    (course / "roster.csv").write_text(ROSTER)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'bncourse'\n"
        "c.ZipCollectApp.collector_plugin = 'bncourse.grading.lms.LmsCollectorPlugin'\n"
        "c.LmsCollectorPlugin.lms = 'moodle'\nc.LmsCollectorPlugin.roster = 'roster.csv'\n")
    empty = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    with zipfile.ZipFile(archive / "a_1-submissions.zip", "w") as z:
        z.writestr("Cy Young_1003_assignsubmission_file_/nb_one.ipynb", empty)
        z.writestr("Ada Lovelace_1001_assignsubmission_file_/nb_one-1.ipynb", empty)
        z.writestr("Not Enrolled_4242_assignsubmission_file_/nb_one.ipynb", empty)
    run = subprocess.run([sys.executable, "-m", "nbgrader", "zip_collect", "a_1"], cwd=course, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    collected = sorted(str(p.relative_to(course / "submitted")) for p in (course / "submitted").rglob("*.ipynb"))
    assert collected == ["ada/a_1/nb_one.ipynb", "cy/a_1/nb_one.ipynb"]
    assert "LMS id 4242 is not in the roster" in run.stderr
