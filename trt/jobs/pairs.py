"""Pairs files: which images a pairs job matches, one "image0 image1" per line, as hloc writes them.

``read_pairs`` reads a file; ``exhaustive_pairs`` and ``sequential_pairs`` make the lists hloc's
``pairs_from_exhaustive`` and a video's frame order give (``trt_infer.py --pairs exhaustive`` and
``--pairs sequential:K`` with an image folder). Image names are POSIX paths below the image folder:
the names hloc's h5 files and COLMAP's database use.
"""

import itertools
import os
import posixpath
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

import numpy as np

from trt.errors import UserError
from trt.fileio import read_text, write_text_atomic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff"}
EXHAUSTIVE, SEQUENTIAL = "exhaustive", "sequential"
SEQUENTIAL_OVERLAP = 10  # the next frames each frame is paired with: COLMAP's sequential matcher's overlap

@dataclass(frozen=True)
class PairEntry:
    """One line of a pairs file. ``name0``/``name1``: the images as the file names them (normalised POSIX
    paths; relative ones are below the image folder, and are the names hloc and COLMAP use);
    ``path0``/``path1``: where they are read from."""

    line: int
    name0: str
    name1: str
    path0: Path
    path1: Path

    @property
    def names(self) -> tuple[str, str]:
        return self.name0, self.name1

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.path0, self.path1


@dataclass
class PairsFile:
    path: Path
    image_dir: Path  # relative image names are below it: the pairs file's folder unless given
    entries: list[PairEntry]

    def where(self, entry: PairEntry) -> str:
        return f"{self.path}:{entry.line}"

    def image_paths(self) -> dict[str, Path]:
        """Every image the file names, in order of first appearance."""
        images: dict[str, Path] = {}
        for entry in self.entries:
            for name, path in zip(entry.names, entry.paths):
                images.setdefault(name, path)
        return images


def read_pairs(path: Path, image_dir: Optional[Path] = None) -> PairsFile:
    """The pairs of a pairs file: one "image0 image1" per line; blank lines and lines starting with #
    are skipped. Relative image paths are taken from ``image_dir`` (default: the pairs file's folder).

    A line without exactly two paths, or naming the same image twice, is an error that gives its line;
    a line repeating an earlier pair is dropped with a warning (the pair is matched once). Missing
    images are not an error here: the job reports their pairs as failed and goes on.
    """
    path = Path(path)
    image_dir = Path(image_dir) if image_dir is not None else path.parent
    if image_dir != path.parent and not image_dir.is_dir():
        raise UserError(f"the image folder {image_dir} does not exist")
    lines = read_text(path, "pairs file").split("\n")
    entries: list[PairEntry] = []
    first_line: dict[tuple[str, str], int] = {}
    repeats: list[tuple[int, int]] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise UserError(f"{path}:{number}: expected two image paths, got {len(fields)} field(s): {line!r}")
        names = tuple(posixpath.normpath(name) for name in fields)
        paths = tuple(Path(name) if posixpath.isabs(name) else image_dir / name for name in names)
        identity = tuple(os.path.abspath(p) for p in paths)
        if identity[0] == identity[1]:
            raise UserError(f"{path}:{number}: names the image {fields[0]} twice: a pair needs two different images")
        if identity in first_line:
            repeats.append((number, first_line[identity]))
            continue
        first_line[identity] = number
        entries.append(PairEntry(number, names[0], names[1], paths[0], paths[1]))
    if not entries:
        raise UserError(f"{path} lists no pairs")
    if repeats:
        number, earlier = repeats[0]
        more = f" (and {len(repeats) - 1} more line(s))" if len(repeats) > 1 else ""
        warnings.warn(f"{path}:{number} repeats the pair of line {earlier}{more}: each pair is matched once")
    return PairsFile(path, image_dir, entries)


def require_relative_names(pairs: PairsFile, what: str) -> None:
    """hloc and COLMAP name images by their path below the image folder: refuse any other name."""
    for entry in pairs.entries:
        for name in entry.names:
            if posixpath.isabs(name) or name.split("/")[0] == "..":
                raise UserError(
                    f"{pairs.where(entry)}: {what} names images by their path below the image folder "
                    f"{pairs.image_dir}, and {name} is not below it (pass --image-dir)"
                )


def check_unique_outputs(pairs: PairsFile, key: Callable[[PairEntry], str]) -> None:
    """Refuse a pairs file in which two pairs would write the same output (``key``)."""
    first: dict[str, PairEntry] = {}
    for entry in pairs.entries:
        name = key(entry)
        if name in first:
            other = first[name]
            raise UserError(
                f"{pairs.where(entry)} ({' '.join(entry.names)}) and line {other.line} ({' '.join(other.names)}) "
                f"would both write {name}: rename or move one of the images"
            )
        first[name] = entry


def flat_name(name: str) -> str:
    """An image name as one file-name part: folders joined with '-', spaces as '_'."""
    parts = (part for part in PurePosixPath(name).parts if part not in ("/", ".."))
    return "-".join(parts).replace(" ", "_")


def pair_filename(entry: PairEntry, fmt: str) -> str:
    """``<image0>__<image1>.<fmt>``, each image named by ``flat_name``."""
    return f"{flat_name(entry.name0)}__{flat_name(entry.name1)}.{fmt}"


@dataclass
class PairMatches:
    """What a COLMAP database needs of one written pair."""

    keypoints0: np.ndarray  # [N0, 2] float32, original-image pixels, pixel centres at integers
    keypoints1: np.ndarray
    matches: np.ndarray  # [K, 2] int64
    image_size0: tuple[float, float]  # (width, height)
    image_size1: tuple[float, float]


# -- pairs made from a folder ----------------------------------------------------------------------------


def list_images(folder: Path) -> list[str]:
    """Image files below ``folder`` (any depth, hidden ones skipped), as sorted POSIX paths relative to it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no image folder at {folder}")
    names = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if len(names) < 2:
        raise UserError(f"{folder} holds {len(names)} image(s); pairs need at least two")
    return names


def pairing(spec: str) -> Optional[tuple[str, int]]:
    """("exhaustive", 0) or ("sequential", K) for the pairings a folder of images can be matched with
    (``exhaustive``, ``sequential``, ``sequential:K``); None for anything else (a pairs file's path)."""
    spec = str(spec)
    if spec == EXHAUSTIVE:
        return EXHAUSTIVE, 0
    match = re.fullmatch(rf"{SEQUENTIAL}(?::(.*))?", spec)
    if match is None:
        return None
    overlap = match.group(1)
    if overlap is None:
        return SEQUENTIAL, SEQUENTIAL_OVERLAP
    if not overlap.isdigit() or int(overlap) < 1:
        raise UserError(f"{spec}: sequential:K pairs each image with the next K, a whole number of at least 1")
    return SEQUENTIAL, int(overlap)


def make_pairs(names: list[str], kind: str, overlap: int = SEQUENTIAL_OVERLAP) -> list[tuple[str, str]]:
    """Every pair of ``names`` (``exhaustive``, as hloc's pairs_from_exhaustive), or each name with the
    next ``overlap`` in order (``sequential``: the frames of a video)."""
    if kind == EXHAUSTIVE:
        return list(itertools.combinations(names, 2))
    return [(name, other) for i, name in enumerate(names) for other in names[i + 1 : i + 1 + overlap]]


def pairs_filename(kind: str, overlap: int) -> str:
    """"pairs-exhaustive.txt", "pairs-sequential-10.txt": where a job keeps the pairs it made."""
    return f"pairs-{kind}" + (f"-{overlap}" if kind == SEQUENTIAL else "") + ".txt"


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    """A pairs file of ``pairs``, one "image0 image1" per line, written atomically."""
    return write_text_atomic(Path(path), "".join(f"{a} {b}\n" for a, b in pairs))
