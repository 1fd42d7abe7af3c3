"""Local (mounted) directories: ``file:///path``.

Listing is a recursive ``os.scandir`` in a worker thread. inotify wakes the poll loop early: the
listing watches each directory it walks (``dirwatch``), so no other walk of the tree is made and no
watch is set on anything the listing would not read. The periodic full rescan stays as the safety
net, because inotify misses events on NFS, when its queue overflows or when its limits are reached.

Nothing outside the root is read or reported: a symlink whose target lies outside the root (its
real path, every link resolved) is skipped and logged once, linked directories are never descended,
and every file opened is checked to be inside the root after opening, so a link swapped in between
listing and reading is not followed out either. Settling moves and deletes walk from the root one
directory at a time and act relative to the last directory opened, each checked to be inside the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import stat as stat_mod
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..core.detect import VerifyRequest
from ..core.model import Algorithm, Digest, Entry, Listing, Verifier
from ..errors import ActionRefused, FileVanished, PermanentSourceError, TransientSourceError
from .base import (
    CHUNK_SIZE,
    Adapter,
    Sink,
    Verification,
    child_path,
    content_verifier,
    register,
    unlistable_dir,
)
from .dirwatch import DirWatches

__all__ = ["LocalAdapter"]

log = logging.getLogger(__name__)

#: The upload reads of staging sources (``LocalAdapter._digest_to``): their own threads, so a read that
#: hangs holds none of the hashing threads every source shares.
_READ_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ftpsource-read")
# Hashing reads in large blocks: fewer syscalls, and hashlib releases the GIL on big buffers.
HASH_BLOCK = 4 * 1024 * 1024
# ... but the buffer is sized to the file: zeroing 4 MiB for a 20-byte file cost 20x the hashing.
# The floor keeps a file that grew since it was listed from being read in tiny pieces.
MIN_HASH_BLOCK = 64 * 1024


def _entry_setters() -> (
    tuple[Callable[[Entry, str], None], Callable[[Entry, int], None], Callable[[Entry, float], None]] | None
):
    """The slot setters of ``Entry``, to build a listing's 100,000 entries at a third of the cost.

    A frozen dataclass's ``__init__`` routes every field through ``object.__setattr__``; that was a
    fifth of a local listing. Filling the three slots directly builds the identical object. Should
    ``Entry`` ever stop being exactly these three plain slots, None: the listing calls the class.
    """
    names = [f.name for f in dataclasses.fields(Entry)]
    if names != ["path", "size", "mtime"] or getattr(Entry, "__slots__", None) != tuple(names):
        return None
    if hasattr(Entry, "__post_init__"):
        return None
    set_path, set_size, set_mtime = (vars(Entry)[n].__set__ for n in names)
    return set_path, set_size, set_mtime


_ENTRY_SETTERS = _entry_setters()


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _opened_path(fd: int, fallback: str) -> str:
    """The real path of an open file: what was opened, whatever links led there."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: resolve the name instead (racy, but still refuses a standing link)
        return os.path.realpath(fallback)


def _open_dir(path: str) -> tuple[int, os._ScandirIterator[str]]:
    """A directory fd and a scandir over it. Scanning through the fd makes each entry's stat an
    fstatat() of its bare name: no full path string per file, no path walk from / in the kernel."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return fd, os.scandir(fd)
    except BaseException:
        os.close(fd)
        raise


@register("file")
class LocalAdapter(Adapter):
    scheme = "file"
    read_method = "local"
    small_file_max = 256 * 1024

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.root = self.url.root
        self.real_root = os.path.realpath(self.root)
        self._outside_logged: set[str] = set()
        self._changed = asyncio.Event()
        self._watches = DirWatches(self.root, self._changed.set)

    # listing ---------------------------------------------------------------------------------------
    def _check_root(self) -> None:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise PermanentSourceError(f"root directory {self.root} does not exist", kind="root") from None
        except PermissionError:
            raise PermanentSourceError(f"root directory {self.root} is not accessible", kind="permission") from None
        except OSError as exc:
            raise TransientSourceError(f"root directory {self.root}: {exc.strerror}", kind="io") from None
        if not stat_mod.S_ISDIR(st.st_mode):
            raise PermanentSourceError(f"root {self.root} is not a directory", kind="root")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise PermanentSourceError(f"root directory {self.root} is not readable", kind="permission")

    def _walk(self) -> Listing:
        self._check_root()
        listing = Listing([])
        walked: dict[str, int] = {}  # the directories read, and their watches
        stack: list[tuple[str, str]] = [(self.root, "")]
        while stack:
            directory, rel = stack.pop()
            try:
                dir_fd, it = _open_dir(directory)
            except FileNotFoundError:
                if not rel:
                    raise PermanentSourceError(f"root directory {self.root} disappeared", kind="root") from None
                continue  # removed while walking: its files are gone too
            except OSError as exc:
                root_error = PermanentSourceError(f"root directory {self.root}: {exc.strerror}", kind="permission")
                unlistable_dir(listing, rel, str(exc.strerror), root_error)
                continue
            if rel and not _inside(_opened_path(dir_fd, directory), self.real_root):
                # Scanned as a directory, but swapped for a link leading out before it was opened: not
                # read, and its files are kept as they were (not read as deleted) until the next listing.
                it.close()
                os.close(dir_fd)
                unlistable_dir(listing, rel, "now leads outside the source root; not read", PermanentSourceError(""))
                continue
            try:
                # Watched before it is read: what arrives from now on wakes the next poll.
                self._watches.add(directory, walked)
                self._scan(it, directory, rel, listing, stack)
            finally:
                os.close(dir_fd)
        self._watches.retain(walked)
        return listing

    def _scan(
        self, it: os._ScandirIterator[str], directory: str, rel: str, listing: Listing, stack: list[tuple[str, str]]
    ) -> None:
        # The hot loop of a poll, once per file: names are bound locally and the common case (a plain
        # name, a regular file) costs one str method, one fstatat and three slot stores.
        add, descend = listing.entries.append, self.path_filter.descend
        is_reg, is_dir, is_link = stat_mod.S_ISREG, stat_mod.S_ISDIR, stat_mod.S_ISLNK
        new, setters = object.__new__, _ENTRY_SETTERS
        prefix = f"{rel.rstrip('/')}/" if rel else ""
        with it:
            for de in it:
                name = de.name
                # readdir never yields "", "." or "..", nor a name holding "/" or NUL; of what
                # ``name_problem`` refuses only CR and LF remain, and they are not printable.
                if name.isprintable():
                    rel_path = prefix + name
                else:
                    checked = child_path(listing, rel, name)  # a bad name is described in listing.bad_names
                    if checked is None:
                        continue
                    rel_path = checked
                try:
                    # Not followed: a link is only followed below, once its target is known to be inside.
                    st = de.stat(follow_symlinks=False)
                    mode = st.st_mode
                    if not is_reg(mode):
                        if is_dir(mode):
                            if descend(rel_path):
                                stack.append((os.path.join(directory, name), rel_path + "/"))
                            continue
                        if not is_link(mode) or not self._link_inside(os.path.join(directory, name), rel_path):
                            continue
                        st = de.stat()  # a link to a file inside the root is listed as that file
                        if not is_reg(st.st_mode):
                            continue
                except FileNotFoundError:
                    continue  # deleted between readdir and stat
                except OSError as exc:
                    listing.warnings.append(f"cannot stat {rel_path!r}: {exc.strerror}")
                    listing.unlisted_dirs.append(rel_path)
                    continue
                if setters is None:
                    add(Entry(rel_path, st.st_size, st.st_mtime))
                else:
                    entry: Entry = new(Entry)
                    setters[0](entry, rel_path)
                    setters[1](entry, st.st_size)
                    setters[2](entry, st.st_mtime)
                    add(entry)

    def _link_inside(self, full: str, rel_path: str) -> bool:
        """Whether a symlink leads to somewhere inside the root; one outside is logged once."""
        if _inside(os.path.realpath(full), self.real_root):
            return True
        if rel_path not in self._outside_logged:
            self._outside_logged.add(rel_path)
            log.warning("skipping %r: a symlink to outside the source root", rel_path)
        return False

    def _open_inside(self, path: str) -> int:
        """Open a regular file of the root for reading; ``FileVanished`` when it is (now) somewhere outside
        the root, or no longer a regular file. ``O_NONBLOCK``, so that a FIFO swapped in after the
        listing does not hang the thread until someone writes to it (reading a file ignores it)."""
        full = os.path.join(self.root, path)
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                raise FileVanished(f"{path}: no longer a regular file; not read")
            if not _inside(_opened_path(fd, full), self.real_root):
                raise FileVanished(f"{path}: now leads outside the source root; not read")
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def list(self) -> Listing:
        return await asyncio.to_thread(self._walk)

    def _stat_sync(self, path: str) -> Entry | None:
        full = os.path.join(self.root, path)
        try:
            st = os.stat(full)
            if not _inside(os.path.realpath(full), self.real_root):
                return None  # its bytes are not ours to describe
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise TransientSourceError(f"cannot stat {path!r}: {exc.strerror}", kind="io") from None
        return Entry(path, st.st_size, st.st_mtime) if stat_mod.S_ISREG(st.st_mode) else None

    async def stat(self, path: str) -> Entry | None:
        return await asyncio.to_thread(self._stat_sync, path)

    # reading -----------------------------------------------------------------------------------------
    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        try:
            fd = await asyncio.to_thread(self._open_inside, path)
            f = os.fdopen(fd, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise FileVanished(f"{path}: disappeared before it could be read") from None
        except OSError as exc:
            raise TransientSourceError(f"cannot open {path!r}: {exc.strerror}", kind="io") from None
        try:
            while True:
                chunk = await asyncio.to_thread(f.read, CHUNK_SIZE)
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

    def _digest_sync(
        self, path: str, algorithm: Algorithm | None, verifier: Verifier | None, expected_size: int
    ) -> Digest:
        full = os.path.join(self.root, path)
        try:
            fd = self._open_inside(path)
        except (FileNotFoundError, NotADirectoryError):
            raise FileVanished(f"{path}: disappeared before it could be read") from None
        except OSError as exc:
            raise TransientSourceError(f"cannot open {path!r}: {exc.strerror}", kind="io") from None
        try:
            before = os.fstat(fd)
            buf = bytearray(min(HASH_BLOCK, max(MIN_HASH_BLOCK, expected_size + 1)))
            if expected_size >= len(buf):  # a read-ahead hint is only worth a syscall for big files
                with contextlib.suppress(OSError):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            hasher = hashlib.new(algorithm) if algorithm else None
            view = memoryview(buf)
            total = 0
            # os.readv straight into the buffer: a FileIO wrapper would cost one more fstat per file.
            while n := os.readv(fd, (buf,)):
                total += n
                piece = view[:n]
                if hasher is not None:
                    hasher.update(piece)
                if verifier is not None:
                    verifier.update(bytes(piece))
            after = os.fstat(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                raise FileVanished(f"{path}: disappeared while being read") from None
            raise TransientSourceError(f"reading {path!r}: {exc.strerror}", kind="io") from None
        finally:
            os.close(fd)
        if total != expected_size or after.st_size != total or after.st_mtime != before.st_mtime:
            raise FileVanished(f"{path}: changed while being read ({expected_size} -> {total} bytes)")
        if after.st_nlink == 0:
            raise FileVanished(f"{path}: deleted while being read")
        try:
            now_at_path = os.stat(full)
        except OSError:
            raise FileVanished(f"{path}: disappeared while being read") from None
        if (now_at_path.st_ino, now_at_path.st_dev) != (after.st_ino, after.st_dev):
            raise FileVanished(f"{path}: replaced while being read")
        problem = verifier.finish() if verifier is not None else None
        # The state after reading comes back with the digest: the watcher needs no second stat.
        return Digest(algorithm, hasher.hexdigest() if hasher else None, "local", total, problem, mtime=after.st_mtime)

    async def digest(
        self,
        path: str,
        algorithm: Algorithm | None,
        verifier: Verifier | None,
        expected_size: int,
        sink: Sink | None = None,
    ) -> Digest:
        if sink is not None and verifier is None:
            return await self._digest_to(sink, path, algorithm, expected_size)
        if sink is not None:
            # The bytes must also reach the event loop for the upload: the streaming path does that.
            return await super().digest(path, algorithm, verifier, expected_size, sink)
        return await asyncio.to_thread(self._digest_sync, path, algorithm, verifier, expected_size)

    async def _digest_to(self, sink: Sink, path: str, algorithm: Algorithm | None, expected_size: int) -> Digest:
        """Hash the file as ``sink`` gets it (the stage upload), in chunks of the size it takes best.

        Each worker-thread job reads a chunk *and* hashes it, and the next one is read while the sink
        takes the last: a GiB is about 128 thread hand-offs, not the 2,000 of separate 1 MiB reads and
        hashes. Every hand-off is a chance for a worker thread to take the GIL while the event loop waits
        for it, which under load added up to more than 100 ms of loop lag in one iteration. The reads have
        their own threads: a read that hangs (a stuck network mount) holds no hashing thread.
        """
        try:
            fd = await asyncio.to_thread(self._open_inside, path)
        except (FileNotFoundError, NotADirectoryError):
            raise FileVanished(f"{path}: disappeared before it could be read") from None
        except OSError as exc:
            raise TransientSourceError(f"cannot open {path!r}: {exc.strerror}", kind="io") from None
        hasher = hashlib.new(algorithm) if algorithm else None
        # One byte more than expected is enough to tell that the file grew; a small file is one read.
        size = max(1, min(sink.read_size, expected_size + 1))
        total = 0

        def read_and_hash() -> bytes:
            try:
                chunk = os.read(fd, min(size, expected_size + 1 - total))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ESTALE):
                    raise FileVanished(f"{path}: disappeared while being read") from None
                raise TransientSourceError(f"reading {path!r}: {exc.strerror}", kind="io") from None
            if hasher is not None:
                hasher.update(chunk)
            return chunk

        job = _READ_POOL.submit(read_and_hash)
        try:
            while chunk := await asyncio.wrap_future(job):
                total += len(chunk)
                if total > expected_size:
                    raise FileVanished(f"{path}: grew while being read (more than {expected_size} bytes)")
                job = _READ_POOL.submit(read_and_hash)
                await sink.write(chunk)
        finally:
            # Closed once no job can still read it, even when this task is cancelled meanwhile: a number
            # closed early could be reused, and a late read would then read something else.
            job.add_done_callback(lambda _: os.close(fd))
        if total != expected_size:
            raise FileVanished(f"{path}: size changed while reading ({expected_size} -> {total} bytes)")
        return Digest(algorithm, hasher.hexdigest() if hasher else None, self.read_method, total)

    def _verify_small_sync(
        self, requests: Sequence[VerifyRequest], checksum: Algorithm | None, validate: bool
    ) -> Sequence[Verification | Exception]:
        out: list[Verification | Exception] = []
        for req in requests:
            path = req.record.path
            try:
                try:
                    verifier = content_verifier(path, validate)
                    digest = self._digest_sync(path, checksum, verifier, req.entry.size)
                except FileVanished as exc:
                    out.append(Verification(None, self._stat_sync(path), None, str(exc)))
                    continue
                assert digest.mtime is not None
                out.append(Verification(digest, Entry(path, digest.size, digest.mtime), None, None))
            except Exception as exc:
                out.append(exc)
        return out

    async def verify_small(
        self, requests: Sequence[VerifyRequest], checksum: Algorithm | None, validate: bool
    ) -> Sequence[Verification | Exception]:
        # One worker-thread job for all of them: for a small file the hop to a thread and back cost
        # more of the event loop than everything else the watcher does with it.
        if any(req.sidecar_path is not None for req in requests):
            return await super().verify_small(requests, checksum, validate)
        return await asyncio.to_thread(self._verify_small_sync, requests, checksum, validate)

    # settling ------------------------------------------------------------------------------------------
    def _dir_fd(self, directory: str, *, create: bool = False) -> int:
        """An fd of ``directory`` of the root, walked one component at a time from the root and each
        opened directory checked to be inside the root before going on (or creating anything in it).

        Moves and deletes then act relative to that fd, so a link planted on the way, before or after
        any earlier check, can neither take a file out of the root nor get a directory made outside it.
        """
        fd = os.open(self.real_root, os.O_RDONLY | os.O_DIRECTORY)
        walked = self.real_root
        try:
            for part in directory.split("/"):
                if part in ("", "."):
                    continue
                if part == "..":
                    raise ActionRefused(f"{directory!r} leads outside the source root")
                walked = os.path.join(walked, part)
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                except NotADirectoryError:
                    raise ActionRefused(f"{directory!r}: a file is in the way") from None
                os.close(fd)
                fd = child
                if not _inside(_opened_path(fd, walked), self.real_root):
                    raise ActionRefused(f"{directory!r} leads outside the source root")
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _parent_fd(self, path: str, action: str) -> tuple[int, str]:
        """The fd of ``path``'s directory (see ``_dir_fd``) and its last component."""
        directory, name = os.path.split(path)
        try:
            return self._dir_fd(directory), name
        except FileNotFoundError:
            raise FileVanished(f"{path}: disappeared before it could be {action}") from None
        except OSError as exc:
            raise ActionRefused(f"cannot reach {path!r}: {exc.strerror}") from None

    async def makedirs(self, directory: str) -> None:
        def _makedirs() -> None:
            try:
                os.close(self._dir_fd(directory, create=True))
            except OSError as exc:
                raise ActionRefused(f"cannot create directory {directory!r}: {exc.strerror}") from None

        await asyncio.to_thread(_makedirs)

    async def rename(self, path: str, target: str) -> None:
        def _rename() -> None:
            src_fd, src_name = self._parent_fd(path, "moved")
            try:
                try:
                    dst_fd = self._dir_fd(os.path.dirname(target))
                except OSError as exc:
                    raise ActionRefused(f"cannot move {path!r} to {target!r}: {exc.strerror}") from None
                try:
                    dst_name = os.path.basename(target)
                    try:
                        os.stat(dst_name, dir_fd=dst_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        pass
                    else:
                        raise ActionRefused(f"cannot move {path!r} to {target!r}: the target exists")
                    os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                except FileNotFoundError:
                    raise FileVanished(f"{path}: disappeared before it could be moved") from None
                except OSError as exc:
                    raise ActionRefused(f"cannot move {path!r} to {target!r}: {exc.strerror}") from None
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)

        await asyncio.to_thread(_rename)

    async def remove(self, path: str) -> None:
        def _remove() -> None:
            fd, name = self._parent_fd(path, "deleted")
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                raise FileVanished(f"{path}: disappeared before it could be deleted") from None
            except OSError as exc:
                raise ActionRefused(f"cannot delete {path!r}: {exc.strerror}") from None
            finally:
                os.close(fd)

        await asyncio.to_thread(_remove)

    # change notification -------------------------------------------------------------------------------
    async def __aenter__(self) -> LocalAdapter:
        # The root is watched from the start, so what arrives during the first poll wakes the next one;
        # the listing watches the directories below it.
        try:
            await asyncio.to_thread(self._watches.start)
        except BaseException:
            # Cancelled while ``start`` runs in its thread (a stream that ends as it begins): nobody will
            # close this adapter, so close the watches now; ``start`` closes what it makes after this.
            self._watches.close()
            raise
        self._watches.attach(asyncio.get_running_loop())
        return self

    async def wait_for_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    async def close(self) -> None:
        self._watches.close()
