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
later by more than ``CLOCK_SLACK``; then at that ctime. The ctimes are read again just after the folder
is copied and the later reading counts, so a file the student rewrites while collect runs (a process
woken when collect opens the folder) is counted when it was rewritten (``rewritten_during_collect``
in the JSON below). The collected ``timestamp.txt`` says the
counted time (nbgrader's autograde and late penalty read it), and every discrepancy is written to
``grading_reports/<assignment>-collected-times.json`` (``collected_times``), which the class report
shows. A copy of the exchange (a backup restored) gives its files new ctimes: collect from the
exchange the students wrote to.

Special files and broken folders. ``shutil.copytree`` raises at a named pipe, socket or device, and
nbgrader's collect stopped there for every later student. Here such files are skipped (found by
``lstat``; a file is opened without blocking or following links and copied only if it is a regular
file), named in the log (``SKIPPED in <folder>``) and under ``skipped`` in the JSON; a folder that
still cannot be copied (a file unreadable or gone when it is read, a folder over
``max_dir_size``) is not collected (nothing partial is left), the log says ``NOT COLLECTED <folder>:
<file>: <error>``, the JSON says it under ``not_collected``, and the other students are collected;
then collect exits 1 (nbgrader's "collect failed"), so an unattended pipeline notices.

Identity. nbgrader takes the student from the inbound folder's *name*, which anyone who can write
to the world-writable inbound chooses; its owner check (``ExchangeCollect.check_owner``, on by
default) only warns, then collects a folder another user wrote as the named student's (who then
gets that user's notebook graded). With the check on, ``LinkKeepingCollect`` refuses such a folder:
one that is not, with everything in it, owned by the Unix user of the student it names
(``foreign_owner``). It is not collected, an error names the folder, its owner and the claimed
student, and the student's own latest submission is collected instead (if there is one). On a
single machine where every file is the instructor's, collect with
``--ExchangeCollect.check_owner=False`` (nbgrader's own switch).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
from pathlib import Path

from nbgrader.exchange.abc.exchange import ExchangeError
from nbgrader.exchange.default import ExchangeCollect
from nbgrader.utils import ignore_patterns, parse_utc

__all__ = ["CLOCK_SLACK", "LinkKeepingCollect", "collected_times", "copy_regular_file", "foreign_owner",
           "latest_ctime", "special_files"]

# How much later than its claimed time a submission's files may have been written and still be
# counted at the claimed time (nbgrader's submit dates the folder, then copies the files into it).
CLOCK_SLACK = dt.timedelta(seconds=60)
TIMES_FILE = "{assignment}-collected-times.json"


def latest_ctime(folder) -> dt.datetime:
    """The latest ctime (naive UTC) of ``folder`` and everything in it, links not followed (a file
    removed while it is read is passed over: removing it set its folder's ctime)."""
    latest = os.lstat(folder).st_ctime
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            try:
                latest = max(latest, os.lstat(os.path.join(dirpath, name)).st_ctime)
            except FileNotFoundError:
                pass
    return dt.datetime.fromtimestamp(latest, dt.timezone.utc).replace(tzinfo=None)


def special_files(directory, names) -> list[str]:
    """The ``names`` in ``directory`` that are neither a regular file, a folder nor a link (a named
    pipe, socket or device: found by ``lstat``, never opened, since opening a named pipe blocks)."""
    found = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            found.append(name)
    return found


def copy_regular_file(src: str, dst: str) -> None:
    """``src`` to ``dst`` with its mode and times, as ``shutil.copy2``, but only if ``src`` is a regular
    file when it is opened (without blocking, links not followed): a file swapped for a named pipe
    or a link after the folder was listed raises ``OSError`` naming it, never blocks or follows."""
    fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    with open(fd, "rb") as source:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{src} is not a regular file (mode {stat.filemode(st.st_mode)}); not copied")
        with open(dst, "wb") as target:
            shutil.copyfileobj(source, target)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _owner(path: str) -> str:
    import pwd

    uid = os.lstat(path).st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid} (no such user)"


def foreign_owner(folder, student: str) -> tuple[str, str] | None:
    """(path, owner) of the first thing in ``folder`` (itself included, links not followed) that
    the Unix user ``student`` does not own; None when the student owns it all."""
    for path in [str(folder), *(os.path.join(d, n) for d, dirs, files in os.walk(folder) for n in dirs + files)]:
        try:
            owner = _owner(path)
        except FileNotFoundError:  # removed since it was listed: nobody's file any more
            continue
        if owner != student:
            return path, owner
    return None


def _utc_text(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC"


def _when(path: Path) -> dt.datetime | None:
    try:
        return parse_utc(path.read_text().strip())
    except (OSError, ValueError, OverflowError):
        return None


def collected_times(course_dir, assignment: str) -> dict[str, dict[str, str]]:
    """student -> {"claimed", "written", "counted", "inbound"} for every submission of ``assignment``
    whose files were written later than it claimed (with ``"rewritten_during_collect": true`` when that
    was seen only after its copy), ``"skipped"`` (its special files, not copied) or ``"not_collected"``
    (why its folder could not be copied): what the last collect found; {} if none."""
    from bncourse.grading.parallel import REPORT_DIR

    path = Path(course_dir) / REPORT_DIR / TIMES_FILE.format(assignment=assignment)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class LinkKeepingCollect(ExchangeCollect):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._start_copies()

    def _start_copies(self):
        self.copied = {}  # inbound folder -> the latest ctime in it just after it was copied
        self.skipped = {}  # inbound folder -> its special files (relative paths), not copied
        self.failed = {}  # inbound folder -> why it could not be copied

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
        record["foreign"] = foreign_owner(path, record["username"]) if self.check_owner else None
        if record["foreign"]:  # never collected (copy_files); said once per folder
            self.log.error("REFUSED %s: it claims to be %s's submission of %s, but %s is owned by %s; not "
                           "collected (another user wrote it into the exchange under %s's name). On a single "
                           "machine where every file is yours, collect with --ExchangeCollect.check_owner=False",
                           path, record["username"], self.coursedir.assignment_id, record["foreign"][0],
                           record["foreign"][1], record["username"])
        if written - claimed > CLOCK_SLACK:
            record["timestamp"] = written
        return record

    def _sort_by_timestamp(self, records):
        """Latest first, a folder another user wrote under the student's name after all of the student's own."""
        return sorted(records, key=lambda item: (item.get("foreign") is None, item["timestamp"]), reverse=True)

    def copy_files(self):
        """Refuse the folders another user wrote under a student's name, then nbgrader's copy of the
        rest, one student at a time (a folder that cannot be copied is reported and the others are
        collected); then each collected ``timestamp.txt`` says the counted time, and the submissions
        written later than they claimed, with special files skipped or not collected, are listed."""
        refused = [os.path.join(self.inbound_path, r["filename"]) for r in getattr(self, "src_records", [])
                   if r.get("foreign")]
        self.src_records = [r for r in getattr(self, "src_records", []) if not r.get("foreign")]
        self._start_copies()
        super().copy_files()
        try:
            self._record_times()
        finally:
            if self.failed or refused:  # after every other student is collected: the exit status says it
                raise ExchangeError(
                    f"{len(self.failed)} folder(s) NOT COLLECTED ({', '.join(sorted(self.failed))}) and "
                    f"{len(refused)} REFUSED ({', '.join(sorted(refused))}); every other submission was collected. "
                    "The reasons are in the log above and in grading_reports/"
                    f"{TIMES_FILE.format(assignment=self.coursedir.assignment_id)}")

    def _record_times(self):
        """Each collected ``timestamp.txt`` says the counted time; the submissions written later than they
        claimed, with special files skipped or not collected, go to the collected-times JSON."""
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
            src = os.path.normpath(os.path.join(self.inbound_path, rec["filename"]))
            if src in self.failed:
                found[rec["username"]] = {"inbound": rec["filename"], "not_collected": self.failed[src]}
                continue
            after = self.copied.get(src)
            if after is None:
                continue  # not collected now (an earlier collect's copy, its time already counted)
            entry = {}
            rewritten = after > rec["written"]  # written to between the scan and the end of its copy
            if rewritten:
                rec["written"] = after
                if after - rec["claimed"] > CLOCK_SLACK:
                    rec["timestamp"] = max(rec["timestamp"], after)
            if _when(stamp) != rec["timestamp"]:
                stamp.write_text(_utc_text(rec["timestamp"]))
            if rec["timestamp"] > rec["claimed"]:
                self.log.warning("%s claims to have submitted %s at %s, but its files were written at %s: counted "
                                 "then", rec["username"], self.coursedir.assignment_id, _utc_text(rec["claimed"]),
                                 _utc_text(rec["written"]))
                entry = {"claimed": _utc_text(rec["claimed"]), "written": _utc_text(rec["written"]),
                         "counted": _utc_text(rec["timestamp"]), "inbound": rec["filename"]}
                if rewritten:
                    entry["rewritten_during_collect"] = True
            if self.skipped.get(src):
                entry.update(inbound=rec["filename"], skipped=self.skipped[src])
            if entry:
                found[rec["username"]] = entry
            else:
                found.pop(rec["username"], None)
        if found or path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(found, indent=1, sort_keys=True))

    def copy_regular_file(self, src: str, dst: str) -> None:
        """How ``do_copy`` copies each file (``copy_regular_file``)."""
        copy_regular_file(src, dst)

    def do_copy(self, src, dest, log=None):
        """``src`` to ``dest`` as nbgrader copies it (ignore, include and size limits), links kept as
        links, special files skipped (never opened). If it cannot be copied, nothing of it is left in
        ``dest`` and an error names the folder and why; collect goes on with the next student."""
        key, skipped = os.path.normpath(src), []
        nbgrader_ignore = ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                          max_file_size=self.coursedir.max_file_size, log=self.log)

        def ignore(directory, names):
            ignored = nbgrader_ignore(directory, names)
            for name in special_files(directory, names):
                if name not in ignored:
                    ignored.append(name)
                    skipped.append(os.path.relpath(os.path.join(directory, name), src))
            return ignored

        try:
            if self.get_size(src) > 1000 * self.coursedir.max_dir_size:
                raise RuntimeError(f"Directory size is too big. Size is {self.get_size(src)}, "
                                   f"maximum size is {1000 * self.coursedir.max_dir_size} (CourseDirectory.max_dir_size)")
            shutil.copytree(src, dest, symlinks=True, ignore=ignore, copy_function=self.copy_regular_file)
            # Lateness is decided from what was copied: anything the student changed before or during the
            # copy has a ctime no later than this scan (a change after it is counted too: it can only be later).
            self.copied[key] = latest_ctime(src)
            if self.coursedir.groupshared:  # as nbgrader: directories ug+rwx, files ug+rw
                for dirname, _, filenames in os.walk(dest):
                    os.chmod(dirname, (os.stat(dirname).st_mode | 0o2770) & 0o2777)
                    for name in filenames:
                        path = os.path.join(dirname, name)
                        if not os.path.islink(path):
                            os.chmod(path, (os.stat(path).st_mode | 0o660) & 0o777)
        except Exception as error:  # one student's folder never stops the others' collect
            self.copied.pop(key, None)
            shutil.rmtree(dest, ignore_errors=True)  # no partial submission is graded
            try:
                os.rmdir(os.path.dirname(dest))  # nor an empty student folder left (nbgrader made it)
            except OSError:
                pass  # the student's other assignments are in it
            self.failed[key] = _why_not_copied(error, src)
            self.log.error("NOT COLLECTED %s: %s. The other submissions are collected; fix or remove this folder "
                           "and collect again", src, self.failed[key])
            return
        if skipped:
            self.skipped[key] = skipped
            self.log.warning("SKIPPED in %s: %s: not regular files (a named pipe, socket or device), not copied "
                             "and never opened", src, ", ".join(skipped))


def _why_not_copied(error: Exception, src: str) -> str:
    """``error`` from copying the folder ``src`` as one line, each failed file named relative to ``src``."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        return "; ".join(f"{os.path.relpath(item[0], src)}: {item[2]}" if isinstance(item, tuple) and len(item) == 3
                         else str(item) for item in error.args[0])
    return f"{type(error).__name__}: {error}"
