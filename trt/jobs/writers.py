"""Where a pairs job's results go: one matches file per pair (JSON or npz), or hloc's h5 files
(``trt.jobs.hloc``). A COLMAP database of the results is written after the job (``trt.jobs.colmap``).

Each writer renders a result in full before writing it, and writes atomically (``trt.fileio``), so
that every output a job leaves is valid and a rerun can skip it.
"""

from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol, Sequence

from trt.errors import UserError
from trt.features.base import Features
from trt.fileio import write_bytes_atomic
from trt.jobs.hloc import HlocFiles, names_to_pair
from trt.jobs.pairs import PairEntry, PairMatches, pair_filename
from trt.runtime import outputs
from trt.runtime.matcher import MatchResult

PAIR_FORMATS = ("json", "npz")  # one file per pair; "hloc" (trt.jobs.hloc) writes two h5 files instead


class Outputs(Protocol):
    """Where a pairs job's results go. ``key`` names a pair's output (two pairs may not share one);
    ``done`` says whether a valid output of the pair is already there; ``write`` stores a result;
    ``close`` makes everything final (or, not ``complete``, leaves what a rerun resumes from);
    ``read_all`` reads written pairs back; ``written`` counts the pairs this run wrote. Writers that
    keep features (hloc) set ``needs_features``."""

    needs_features: bool
    written: int

    def key(self, entry: PairEntry) -> str: ...

    def done(self, entry: PairEntry) -> bool: ...

    def has_features(self, name: str) -> bool: ...

    def write_features(self, name: str, features: Features) -> None: ...

    def write(self, entry: PairEntry, result: MatchResult) -> None: ...

    def read_all(self, entries: Sequence[PairEntry]) -> Iterator[tuple[PairEntry, PairMatches]]: ...

    def close(self, complete: bool = True) -> None: ...

    def describe(self) -> str: ...


class PairFiles:
    """One matches file per pair in ``folder``, named by ``pair_filename``; the layout is that of
    ``trt.runtime.outputs`` with the images' absolute paths. A file is valid when it decodes and names
    the pair's two images."""

    needs_features = False

    def __init__(self, folder: Path, fmt: str, threshold: float):
        if fmt not in PAIR_FORMATS:
            raise UserError(f"unknown pairs output format {fmt!r}: choose one of {', '.join(PAIR_FORMATS)}")
        self.folder, self.fmt, self.threshold = Path(folder), fmt, threshold
        self.written = 0

    def key(self, entry: PairEntry) -> str:
        return pair_filename(entry, self.fmt)

    def path(self, entry: PairEntry) -> Path:
        return self.folder / self.key(entry)

    def _record(self, entry: PairEntry) -> Optional[dict]:
        try:
            record = outputs.read_matches(self.path(entry))
        except (OSError, ValueError, KeyError):  # absent, or not a valid matches file
            return None
        paths = [str(Path(p).absolute()) for p in entry.paths]
        return record if [record["image0"], record["image1"]] == paths else None

    def done(self, entry: PairEntry) -> bool:
        return self._record(entry) is not None

    def has_features(self, name: str) -> bool:
        return False

    def write_features(self, name: str, features: Features) -> None:
        raise NotImplementedError("pair files keep no features")

    def write(self, entry: PairEntry, result: MatchResult) -> None:
        record = outputs.result_record(result, *(p.absolute() for p in entry.paths), threshold=self.threshold)
        write_bytes_atomic(self.path(entry), outputs.encode_matches(record, self.fmt))
        self.written += 1

    def read_all(self, entries: Sequence[PairEntry]) -> Iterator[tuple[PairEntry, PairMatches]]:
        for entry in entries:
            record = self._record(entry)
            if record is None:
                raise UserError(f"no valid matches file for {' '.join(entry.names)} at {self.path(entry)}")
            yield entry, PairMatches(record["keypoints0"], record["keypoints1"], record["matches"],
                                     record["image_size0"], record["image_size1"])

    def close(self, complete: bool = True) -> None:
        pass

    def describe(self) -> str:
        return f"{self.written} {self.fmt} file(s) to {self.folder}"


def output_key(fmt: str) -> Callable[[PairEntry], str]:
    """How the outputs of ``fmt`` name a pair (the ``key`` of its ``Outputs``), without opening any."""
    if fmt == "hloc":
        return lambda entry: names_to_pair(*entry.names)
    return lambda entry: pair_filename(entry, fmt)


def open_outputs(fmt: str, folder: Path, threshold: float, resize: Optional[int] = None) -> Outputs:
    """The outputs of a pairs job in ``folder``: one file per pair (json, npz), or hloc's h5 files."""
    if fmt == "hloc":
        return HlocFiles(folder, resize=resize)
    return PairFiles(folder, fmt, threshold)

