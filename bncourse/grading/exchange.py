"""nbgrader's collect, keeping a student's links as links (so they can be refused), not their targets.

nbgrader's ``ExchangeCollect`` copies each submission with ``shutil.copytree``, which follows
symbolic links: a link a student leaves in the exchange's inbound folder (to the instructor's source
notebook, say) is collected as a copy of its target, with the instructor's rights. ``LinkKeepingCollect``
copies links as links; ``bncourse grade`` then refuses a submission that holds one, naming it
(``bncourse.grading.parallel``). ``configure_nbgrader`` installs it (``c.ExchangeFactory.collect``).
"""

from __future__ import annotations

import os
import shutil

from nbgrader.exchange.default import ExchangeCollect
from nbgrader.utils import ignore_patterns

__all__ = ["LinkKeepingCollect"]


class LinkKeepingCollect(ExchangeCollect):
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
