"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves none."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from trt.errors import UserError


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


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
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
