"""inotify watches on the directories a local listing walked, to wake the next poll early.

One watch per directory, added by the listing itself in its worker thread just before it reads that
directory (so a file arriving while the tree is listed is either listed or wakes the next poll), and
the watches of directories the listing no longer walked dropped after it. Nothing here runs per
event: the event loop only drains the inotify fd and sets a flag; the poll that follows finds out
what changed. When inotify is unavailable or its limits are reached the periodic rescan still works,
as it does for the changes inotify cannot see (NFS, an overflowing queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable

from inotify_simple import INotify, flags

__all__ = ["WATCH_MASK", "DirWatches"]

log = logging.getLogger(__name__)

#: A file created, written and closed, moved in or out, or deleted; a directory created (CREATE with
#: ISDIR), which the next listing then walks and watches. Links are never followed (DONT_FOLLOW) and
#: only a directory is watched (ONLYDIR), so a name swapped for a link or a file is not watched.
WATCH_MASK = (
    flags.CREATE
    | flags.CLOSE_WRITE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.DELETE
    | flags.ONLYDIR
    | flags.DONT_FOLLOW
    | flags.EXCL_UNLINK
)
#: What one wake-up drains from the fd at most; more left there makes it readable again.
READ_SIZE = 64 * 1024
#: Errors that only mean the directory is not there (any longer) as a directory to watch.
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP, errno.ESTALE)
LIMIT_HINT = "inotify limit reached (%s: %s): changes in %s are found by the periodic rescan (poll_interval) only"


class DirWatches:
    """The watches of one local source. ``start``, ``add`` and ``retain`` are called in worker
    threads; ``attach``, ``close`` on the event loop. A lock serialises the fd's use with its closing,
    held for one system call at a time, so closing never waits on a listing."""

    def __init__(self, root: str, on_change: Callable[[], None]) -> None:
        self.root = root
        self._on_change = on_change
        self._inotify: INotify | None = None
        self._lock = threading.Lock()
        self._wds: dict[str, int] = {}  # directory -> watch descriptor, as of the last listing
        self._limit_logged = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _limit(self, sysctl: str, exc: OSError) -> None:
        if not self._limit_logged:
            self._limit_logged = True
            log.warning(LIMIT_HINT, sysctl, exc.strerror, self.root)

    def start(self) -> None:
        """Make the inotify instance and watch the root (worker thread)."""
        try:
            inotify = INotify(nonblocking=True)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                self._limit("fs.inotify.max_user_instances", exc)
            else:
                log.debug("inotify unavailable for %s: %s", self.root, exc.strerror)
            return
        with self._lock:
            if self._closed:
                inotify.close()
                return
            self._inotify = inotify
        self.add(self.root, {})

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have the loop drain the fd whenever it is readable (event loop)."""
        inotify = self._inotify
        if inotify is not None and not self._closed:
            loop.add_reader(inotify.fileno(), self._readable, inotify.fileno())
            self._loop = loop

    def _readable(self, fd: int) -> None:
        try:
            os.read(fd, READ_SIZE)  # the events themselves are not looked at: the poll rescans
        except BlockingIOError:
            return
        except OSError as exc:  # not expected; do not spin on it: the periodic rescan remains
            log.debug("reading inotify events of %s: %s", self.root, exc.strerror)
            if self._loop is not None:
                self._loop.remove_reader(fd)
        self._on_change()

    def add(self, directory: str, walked: dict[str, int]) -> None:
        """Watch ``directory``, which a listing is about to read, and note it in ``walked``.

        Called for every directory of every listing: a watch that exists is found again by the
        kernel (the same descriptor), and a directory removed and made anew gets its new one."""
        with self._lock:
            inotify = self._inotify
            if inotify is None:
                return
            try:
                walked[directory] = inotify.add_watch(directory, WATCH_MASK)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self._limit("fs.inotify.max_user_watches", exc)
                elif exc.errno not in _GONE:
                    log.debug("cannot watch %s: %s", directory, exc.strerror)

    def retain(self, walked: dict[str, int]) -> None:
        """After a complete listing: drop the watches of the directories it did not walk."""
        with self._lock:
            old, self._wds = self._wds, dict(walked)
        keep = set(walked.values())
        for wd in {wd for wd in old.values() if wd not in keep}:
            with self._lock:
                if self._inotify is None:
                    return
                with contextlib.suppress(OSError):  # the directory is gone and its watch with it
                    self._inotify.rm_watch(wd)

    @property
    def watched(self) -> list[str]:
        """The directories watched as of the last complete listing."""
        return list(self._wds)

    def close(self) -> None:
        """Stop reading and close the fd (every watch goes with it)."""
        with self._lock:
            self._closed = True
            inotify, self._inotify = self._inotify, None
        if inotify is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(inotify.fileno())
        inotify.close()
