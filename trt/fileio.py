"""File I/O: every user-given file is read through here, every output written atomically.

Reading (``check_regular_file``, ``read_file_bytes``, ``read_text``): a path must name a regular file, or
a link to one; anything else (a folder, a named pipe, a socket, a device, a dangling or looping link) is
one error naming the file and what it is, raised before anything is opened that could block: a named
pipe with no writer would hang a reader forever, ``/dev/zero`` would never end. Libraries that take a
path (onnx.load, torch.load, OpenVINO, ONNX Runtime) get it only after ``check_regular_file``.

Text (pairs files, profile files) is read as editors write it: UTF-8 with or without a byte-order mark,
LF, CRLF or CR line ends; any other encoding, or binary data, is one error naming the file and the line.

Writing: a reader never sees a half-written file, and a failed write leaves none.
"""

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from trt.errors import UserError

# File types other than regular files and folders, as a user would name them.
_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
# Byte-order marks of the encodings Windows tools write besides UTF-8 ("Unicode" in Notepad is UTF-16 LE).
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
               (b"\xfe\xff", "UTF-16"))
_UTF8_BOM = b"\xef\xbb\xbf"


def _not_a_file(path: Path, what: str, mode: int) -> str | None:
    """Why ``path`` (of ``mode``, from stat) is not a readable file, or None if it is a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"{what} {path} is a folder, not a file"
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return f"{what} {path} is {kind}, not a regular file: give the file itself"


def check_regular_file(path, what: str = "file", error: type[Exception] = UserError) -> Path:
    """``path`` if it names a regular file (links followed), else ``error`` saying what it names instead.

    Only ``stat`` is called: a named pipe, a socket or a device is never opened. ``what`` starts the
    message ("image", "pairs file"); ``error`` is the reader's own exception class.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as failure:
        raise error(_why_unreadable(path, what, failure)) from None
    reason = _not_a_file(path, what, mode)
    if reason is not None:
        raise error(reason)
    return path


def _why_unreadable(path: Path, what: str, failure: OSError) -> str:
    if failure.errno == errno.ELOOP:
        return f"{what} {path} is a symbolic link that loops back on itself"
    if failure.errno in (errno.ENOENT, errno.ENOTDIR):
        if os.path.islink(path):
            return f"{what} {path} is a dangling symbolic link: its target {os.readlink(path)} does not exist"
        return f"{what} {path} does not exist"
    return f"cannot read {what} {path}: {failure.strerror or failure}"


def read_file_bytes(path, what: str = "file", error: type[Exception] = UserError) -> bytes:
    """The bytes of the regular file at ``path`` (see ``check_regular_file``), or ``error``.

    The file is opened without blocking and checked again once open, so a file swapped for a pipe in
    between is refused too.
    """
    path = check_regular_file(path, what, error)
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as failure:
        raise error(_why_unreadable(path, what, failure)) from None
    with open(handle, "rb") as file:
        reason = _not_a_file(path, what, os.fstat(handle).st_mode)
        if reason is not None:
            raise error(reason)
        try:
            return file.read()
        except OSError as failure:
            raise error(_why_unreadable(path, what, failure)) from None


def read_text(path, what: str = "text file", error: type[Exception] = UserError) -> str:
    """The text of a UTF-8 file as editors write it, with "\\n" line ends, or ``error`` naming the file
    and line.

    Taken: a UTF-8 byte-order mark (dropped), CRLF and CR line ends (made LF). Refused: other encodings
    (UTF-16 and UTF-32 by their byte-order mark, Latin-1 and the like by their first byte that is not
    UTF-8) and binary data (a NUL byte). Split the result with ``split("\\n")``, not ``splitlines()``,
    which also splits at form feeds and Unicode separators that may be part of a name.
    """
    data = read_file_bytes(path, what, error)
    for bom, encoding in _OTHER_BOMS:
        if data.startswith(bom):
            raise error(f"{what} {path}, line 1: {encoding} text (by its byte-order mark); save it as UTF-8")
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    nul = data.find(b"\0")
    if nul >= 0:
        raise error(f"{what} {path}, line {_line_of(data, nul)}: a NUL byte: a binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as failure:
        line = _line_of(data, failure.start)
        line_start = max(data.rfind(b"\n", 0, failure.start), data.rfind(b"\r", 0, failure.start)) + 1
        column = failure.start - line_start + 1
        raise error(f"{what} {path}, line {line}: byte 0x{data[failure.start]:02x} at column {column} is not UTF-8 "
                    "(another encoding, or a binary file); save it as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _line_of(data: bytes, offset: int) -> int:
    """The 1-based line holding byte ``offset`` (any of LF, CRLF, CR ends a line)."""
    head = data[:offset].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return head.count(b"\n") + 1


def check_writable(path: Path) -> Path:
    """Fail early, before long work, if ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"output path {path} is a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder for {path}: {error.strerror}") from error
    # A real probe, not os.access: root passes every permission check yet cannot write /proc or a
    # read-only mount.
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", suffix=".tmp", dir=parent):
            pass
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from error
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else removed."""
    path = check_writable(Path(path))
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def sha256_file(path: Path, chunk_size: int = 1 << 20, what: str = "file",
                error: type[Exception] = UserError) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(check_regular_file(path, what, error), "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CreatedPaths:
    """What a command creates, removed again when it fails, so that a failed run leaves the file system
    as it found it (what existed stays untouched).

    ``track(path)`` before ``path`` is created notes the top-most of it and its missing parent folders
    (what ``mkdir(parents=True)`` would make); ``track_folder(folder)`` tracks a folder that may exist:
    a new one whole, an existing one by the entries added to it. Used as a context manager, every
    tracked path is removed when the block raises, except what ``keep`` said holds valid outputs;
    ``remove()`` removes them at once (a run that ends with nothing valid to show).
    """

    def __init__(self):
        self.created: list[Path] = []
        self.folders: dict[Path, set[str]] = {}  # existing folders tracked, and the entries they had

    def track(self, path: Path) -> Path:
        path = Path(path)
        top = Path(os.path.abspath(path))
        if not os.path.lexists(top):
            while not os.path.lexists(top.parent):
                top = top.parent
            if top not in self.created:
                self.created.append(top)
        return path

    def track_folder(self, folder: Path) -> Path:
        if not os.path.isdir(folder):
            return self.track(folder)
        self.folders.setdefault(Path(os.path.abspath(folder)), set(os.listdir(folder)))
        return Path(folder)

    def keep(self, path: Path) -> None:
        """Keep ``path`` whatever happens: tracked paths that are it, hold it or lie inside it."""
        path = Path(os.path.abspath(path))
        related = lambda p: p == path or p in path.parents or path in p.parents  # noqa: E731
        self.created = [p for p in self.created if not related(p)]
        self.folders = {folder: entries for folder, entries in self.folders.items() if not related(folder)}

    def remove(self) -> None:
        added = [folder / name for folder, entries in self.folders.items() if os.path.isdir(folder)
                 for name in set(os.listdir(folder)) - entries]
        for path in added + self.created[::-1]:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
        self.created, self.folders = [], {}

    def __enter__(self) -> "CreatedPaths":
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is not None:
            self.remove()
