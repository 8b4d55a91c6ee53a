"""nbgrader's collect, keeping a student's links as links and counting a submission at a time the
student cannot move earlier.

nbgrader's ``ExchangeCollect`` copies each submission with ``shutil.copytree``, which follows
symbolic links: a link a student leaves in the exchange's inbound folder (to the instructor's source
notebook, say) is collected as a copy of its target, with the instructor's rights. ``LinkKeepingCollect``
copies links as links; ``bncourse grade`` then refuses a submission that holds one, naming it
(``bncourse.grading.parallel``). ``configure_nbgrader`` installs it (``c.ExchangeFactory.collect``).

Time. nbgrader counts a submission at the time the student's side wrote (the inbound folder's name
and its ``timestamp.txt``): a student who writes into the exchange by hand can date a late
submission weeks earlier. A file's ctime is set by the kernel when the file is created or changed
and no user can set it back. So the collect counts a submission at the time it claims unless the
latest ctime of the inbound folder and everything in it (as the instructor's collect sees them) is
later by more than ``CLOCK_SLACK``; then at that ctime. The collected ``timestamp.txt`` says the
counted time (nbgrader's autograde and late penalty read it), and every discrepancy is written to
``grading_reports/<assignment>-collected-times.json`` (``collected_times``), which the class report
shows. A copy of the exchange (a backup restored) gives its files new ctimes: collect from the
exchange the students wrote to.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

from nbgrader.exchange.default import ExchangeCollect
from nbgrader.utils import ignore_patterns, parse_utc

__all__ = ["CLOCK_SLACK", "LinkKeepingCollect", "collected_times", "latest_ctime"]

# How much later than its claimed time a submission's files may have been written and still be
# counted at the claimed time (nbgrader's submit dates the folder, then copies the files into it).
CLOCK_SLACK = dt.timedelta(seconds=60)
TIMES_FILE = "{assignment}-collected-times.json"


def latest_ctime(folder) -> dt.datetime:
    """The latest ctime (naive UTC) of ``folder`` and everything in it, links not followed."""
    latest = os.lstat(folder).st_ctime
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            latest = max(latest, os.lstat(os.path.join(dirpath, name)).st_ctime)
    return dt.datetime.fromtimestamp(latest, dt.timezone.utc).replace(tzinfo=None)


def _utc_text(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _when(path: Path) -> dt.datetime | None:
    try:
        return parse_utc(path.read_text().strip())
    except (OSError, ValueError, OverflowError):
        return None


def collected_times(course_dir, assignment: str) -> dict[str, dict[str, str]]:
    """student -> {"claimed", "written", "counted", "inbound"} for every submission of ``assignment``
    whose files were written later than it claimed (what the last collect found; {} if none)."""
    from bncourse.grading.parallel import REPORT_DIR

    path = Path(course_dir) / REPORT_DIR / TIMES_FILE.format(assignment=assignment)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class LinkKeepingCollect(ExchangeCollect):
    def _path_to_record(self, path):
        """nbgrader's record of an inbound folder, its ``timestamp`` the time it is counted at."""
        record = super()._path_to_record(path)
        claimed = record["timestamp"]
        try:
            inside = (Path(path) / "timestamp.txt").read_text().strip()
            claimed = min(claimed, parse_utc(inside)) if inside else claimed
        except (OSError, ValueError, OverflowError):
            pass
        written = latest_ctime(path)
        record["claimed"], record["written"] = claimed, written
        if written - claimed > CLOCK_SLACK:
            record["timestamp"] = written
        return record

    def copy_files(self):
        """nbgrader's copy; then each collected ``timestamp.txt`` says the counted time, and the
        submissions written later than they claimed are listed for the class report."""
        super().copy_files()
        from bncourse.grading.parallel import REPORT_DIR

        path = Path(self.coursedir.root) / REPORT_DIR / TIMES_FILE.format(assignment=self.coursedir.assignment_id)
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            found = {}
        for rec in getattr(self, "src_records", []):
            dest = Path(self.coursedir.format_path(self.coursedir.submitted_directory, rec["username"],
                                                   self.coursedir.assignment_id))
            stamp = dest / "timestamp.txt"
            if not dest.is_dir() or _read(stamp) != _read(Path(self.inbound_path) / rec["filename"] / "timestamp.txt"):
                continue  # not collected now (an earlier collect's copy, its time already counted)
            if _when(stamp) != rec["timestamp"]:
                stamp.write_text(_utc_text(rec["timestamp"]))
            if rec["timestamp"] > rec["claimed"]:
                self.log.warning("%s claims to have submitted %s at %s, but its files were written at %s: counted "
                                 "then", rec["username"], self.coursedir.assignment_id, _utc_text(rec["claimed"]),
                                 _utc_text(rec["written"]))
                found[rec["username"]] = {"claimed": _utc_text(rec["claimed"]), "written": _utc_text(rec["written"]),
                                          "counted": _utc_text(rec["timestamp"]), "inbound": rec["filename"]}
            else:
                found.pop(rec["username"], None)
        if found or path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(found, indent=1, sort_keys=True))

    def do_copy(self, src, dest, log=None):
        """``src`` to ``dest`` as nbgrader copies it (ignore, include and size limits), links kept as links."""
        if self.get_size(src) > 1000 * self.coursedir.max_dir_size:
            self.log.error("Directory size is too big")
            raise RuntimeError(f"Directory size is too big. Size is {self.get_size(src)}, "
                               f"maximum size is {1000 * self.coursedir.max_dir_size}")
        shutil.copytree(src, dest, symlinks=True,
                        ignore=ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                               max_file_size=self.coursedir.max_file_size, log=self.log))
        if self.coursedir.groupshared:  # as nbgrader: directories ug+rwx, files ug+rw
            for dirname, _, filenames in os.walk(dest):
                os.chmod(dirname, (os.stat(dirname).st_mode | 0o2770) & 0o2777)
                for name in filenames:
                    path = os.path.join(dirname, name)
                    if not os.path.islink(path):
                        os.chmod(path, (os.stat(path).st_mode | 0o660) & 0o777)
