"""Matching jobs on files: one pair to a matches file and picture, or a pairs file to outputs.

What ``trt_infer.py`` runs; importable, so a pipeline can run the same jobs without the command line.

A pairs job runs in two stages. **Extract**: every image of the pairs still to match is read and its
features extracted once, however many pairs it is in. **Match**: the pairs are matched in chunks that
the matcher batches as the engine's profiles allow, and each result is written as it arrives. The
stages run in this process (``LocalStages``: one ``Matcher``) or on Ray actors
(``trt.runtime.distributed.RayStages``); planning, outputs, resuming and the report are the same code.

- Every output is rendered in full before anything is written, and written atomically (``trt.fileio``).
- A job is resumable: a pair whose output already exists and is valid is skipped (``overwrite`` redoes
  it). The job's settings (engine, threshold, keypoints, format) are kept in ``OUTPUT/.job.json``; a
  rerun with other settings into the same folder is refused rather than mixing results.
- A bad pair (a missing or unreadable image) is reported with its pairs-file line and skipped; the job
  goes on, and ``JobReport.raise_for_failures`` ends it with ``PairsFailed`` (exit status 3).
"""

import json
import os
import posixpath
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Optional, Protocol, Sequence, Union

import numpy as np

from trt.contract import DEFAULT_THRESHOLD
from trt.errors import PairsFailed, UserError
from trt.features.base import Features
from trt.features.image import read_image
from trt.fileio import check_writable, write_bytes_atomic, write_text_atomic
from trt.runtime import outputs
from trt.runtime.matcher import DEFAULT_RESIZE, Matcher, MatchResult

CHUNK = 16  # pairs per matching call: the matcher batches within it as the profiles allow (up to 4 by default)
FEATURE_MEMORY = 2 << 30  # bytes of features a local job keeps in memory; more go to a spill folder
JOB_FILE = ".job.json"  # the settings of the job that wrote an output folder
PAIR_FORMATS = ("json", "npz")  # one file per pair; "hloc" (trt.sfm.hloc) writes two h5 files instead


# -- single pair -------------------------------------------------------------------------------------------


@dataclass
class PairJob:
    """One pair to match, checked before any engine is loaded: images read, output paths writable."""

    paths: tuple[Path, Path]
    images: tuple
    output: Optional[Path] = None  # .json or .npz
    viz: Optional[Path] = None  # a picture: .png, .jpg, ... (outputs.check_picture_path)


def prepare_pair(image0: Path, image1: Path, output: Optional[Path] = None, viz: Optional[Path] = None) -> PairJob:
    if output:
        outputs.output_format(output)
    for path in filter(None, (output, viz and outputs.check_picture_path(viz))):
        check_writable(path)
    return PairJob((Path(image0), Path(image1)), (read_image(image0), read_image(image1)), output, viz)


def run_pair(matcher: Matcher, job: PairJob) -> tuple[MatchResult, list[Path]]:
    """Match the pair; write its matches file and picture when asked; return the result and the paths."""
    result = matcher.match(*job.images)
    files = []
    if job.output:
        record = outputs.result_record(result, *job.paths, threshold=matcher.threshold)
        files.append((job.output, outputs.encode_matches(record, outputs.output_format(job.output))))
    if job.viz:
        files.append((job.viz, outputs.encode_picture(outputs.draw_matches(*job.images, result), job.viz)))
    return result, [write_bytes_atomic(path, data) for path, data in files]


# -- pairs files -------------------------------------------------------------------------------------------


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
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"no pairs file at {path}") from None
    except IsADirectoryError:
        raise UserError(f"the pairs file {path} is a folder") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read pairs file {path}: {getattr(error, 'strerror', None) or error}") from None
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


# -- outputs -----------------------------------------------------------------------------------------------


@dataclass
class PairMatches:
    """What a COLMAP database needs of one written pair."""

    keypoints0: np.ndarray  # [N0, 2] float32, original-image pixels, pixel centres at integers
    keypoints1: np.ndarray
    matches: np.ndarray  # [K, 2] int64
    image_size0: tuple[float, float]  # (width, height)
    image_size1: tuple[float, float]


class Outputs(Protocol):
    """Where a pairs job's results go. ``key`` names a pair's output (two pairs may not share one);
    ``done`` says whether a valid output of the pair is already there; ``write`` stores a result;
    ``close`` makes everything final (or, not ``complete``, leaves what a rerun resumes from);
    ``read_all`` reads written pairs back. Writers that keep features (hloc) set ``needs_features``."""

    needs_features: bool

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
        from trt.sfm.hloc import names_to_pair

        return lambda entry: names_to_pair(*entry.names)
    return lambda entry: pair_filename(entry, fmt)


def open_outputs(fmt: str, folder: Path, threshold: float, resize: Optional[int] = None) -> Outputs:
    """The outputs of a pairs job in ``folder``: one file per pair (json, npz), or hloc's h5 files."""
    if fmt == "hloc":
        from trt.sfm.hloc import HlocFiles

        return HlocFiles(folder, resize=resize)
    return PairFiles(folder, fmt, threshold)


def prepare_output_dir(folder: Path) -> Path:
    """Create ``folder`` if needed and make sure files can be written in it, naming it in any error."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"the output folder {folder} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the output folder {folder}: {error.strerror or error}") from error
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"cannot write in the output folder {folder}: {error.strerror or error}") from error
    return folder


def job_settings(engine: Path, fmt: str, threshold: float, max_keypoints: Optional[int], resize: Optional[int],
                 extractor: Optional[str], image_dir: Path) -> dict:
    """What makes two runs' outputs interchangeable: the engine's contents and the matching settings."""
    from trt.engine.manifest import load_manifest
    from trt.fileio import sha256_file

    engine = Path(engine)
    manifest = load_manifest(engine)
    digest = manifest.engine.get("sha256") if manifest is not None else None
    if digest is None:
        if not engine.is_file():
            raise UserError(f"no engine at {engine}")
        digest = sha256_file(engine)
    return {
        "engine_sha256": digest,
        "format": fmt,
        "threshold": float(threshold),
        "max_keypoints": max_keypoints,
        "resize": resize,
        "extractor": extractor,
        "image_dir": str(Path(image_dir).absolute()),
    }


def check_job_settings(folder: Path, settings: dict, overwrite: bool = False) -> None:
    """Refuse a folder whose ``.job.json`` records other settings, unless ``overwrite`` (every pair is
    then redone): outputs of two settings must not mix."""
    path = Path(folder) / JOB_FILE
    try:
        previous = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        previous = {}  # unreadable: its outputs cannot be told to match
    if previous != settings and not overwrite:
        changed = [f"{key} {previous.get(key)!r} now {value!r}" for key, value in settings.items() if previous.get(key) != value]
        raise UserError(
            f"{folder} holds the outputs of a job with other settings ({'; '.join(changed) or 'unreadable ' + JOB_FILE}): "
            "use another output folder, or --overwrite to redo every pair"
        )


def record_job_settings(folder: Path, settings: dict) -> None:
    write_text_atomic(Path(folder) / JOB_FILE, json.dumps(settings, indent=1) + "\n")


# -- the stages --------------------------------------------------------------------------------------------


@dataclass
class ImageTask:
    """One image to extract."""

    name: str
    path: Path


@dataclass
class Extracted:
    task: ImageTask
    keypoints: Optional[int] = None  # how many, when it worked
    error: Optional[str] = None  # why not, when it did not


Outcome = Union[MatchResult, str]  # a pair's result, or why it failed


class Stages(Protocol):
    """The two stages of a pairs job on some compute: this process, or Ray actors. ``extract`` and
    ``match`` yield in the order the work finishes; ``release`` says an image's features are no longer
    needed; ``chunk_size`` is how many pairs one matching call gets."""

    def chunk_size(self, pairs: int) -> int: ...

    def extract(self, tasks: Sequence[ImageTask]) -> Iterator[Extracted]: ...

    def features(self, name: str) -> Features: ...

    def match(self, chunks: Sequence[list[PairEntry]]) -> Iterator[tuple[list[PairEntry], list[Outcome]]]: ...

    def release(self, name: str) -> None: ...

    def describe(self) -> str: ...

    def device_memory(self) -> Optional[str]: ...


def failure_reason(error: BaseException) -> str:
    """A user error's own message; anything else with its type (a bug, reported and not hidden)."""
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def extract_image(matcher: Matcher, path: Path) -> Features:
    """Features of the image at ``path``, as the matcher's front-end makes them."""
    return matcher.extract(Path(path))


def match_features(matcher: Matcher, pairs: Sequence[tuple[Features, Features]]) -> list[Outcome]:
    """Match a chunk in one call; if that fails, pair by pair, so one bad pair fails alone."""
    try:
        return list(matcher.match_pairs(pairs))
    except Exception:  # noqa: BLE001 - isolated below, and every failure is reported with its reason
        pass
    results: list[Outcome] = []
    for pair in pairs:
        try:
            results.append(matcher.match_pairs([pair])[0])
        except Exception as error:  # noqa: BLE001
            results.append(failure_reason(error))
    return results


class FeatureStore:
    """Features by image name: in memory up to ``max_bytes``, the least recently used beyond that in a
    spill folder (removed on ``close``). An image's features leave when ``drop`` says its last pair is done."""

    def __init__(self, spill_parent: Path, max_bytes: int = FEATURE_MEMORY):
        self.spill_parent, self.max_bytes = Path(spill_parent), max_bytes
        self._memory: OrderedDict[str, Features] = OrderedDict()
        self._bytes = 0
        self._spilled: dict[str, Path] = {}
        self._spill_dir: Optional[Path] = None
        self._spill_count = 0

    @staticmethod
    def _size(features: Features) -> int:
        arrays = (features.keypoints, features.descriptors, features.scores, features.scales, features.oris)
        return sum(a.nbytes for a in arrays if a is not None)

    def put(self, name: str, features: Features) -> None:
        self._memory[name] = features
        self._bytes += self._size(features)
        while self._bytes > self.max_bytes and len(self._memory) > 1:
            self._spill(*self._memory.popitem(last=False))

    def _spill(self, name: str, features: Features) -> None:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix=".features-", dir=self.spill_parent))
        self._spill_count += 1
        path = self._spill_dir / f"{self._spill_count}.npz"
        arrays = {k: getattr(features, k) for k in ("keypoints", "descriptors", "scores", "scales", "oris")}
        np.savez(path, image_size=np.asarray(features.image_size, np.float64),
                 **{k: v for k, v in arrays.items() if v is not None})
        self._spilled[name] = path
        self._bytes -= self._size(features)

    def get(self, name: str) -> Features:
        if name in self._memory:
            self._memory.move_to_end(name)
            return self._memory[name]
        with np.load(self._spilled[name]) as data:
            optional = {k: data[k] if k in data else None for k in ("scores", "scales", "oris")}
            return Features(data["keypoints"], data["descriptors"], tuple(float(v) for v in data["image_size"]), **optional)

    def drop(self, name: str) -> None:
        features = self._memory.pop(name, None)
        if features is not None:
            self._bytes -= self._size(features)
        spilled = self._spilled.pop(name, None)
        if spilled is not None:
            spilled.unlink(missing_ok=True)

    def close(self) -> None:
        self._memory.clear()
        self._spilled.clear()
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None


def backend_label(summary: dict) -> str:
    """"openvino bf16", "onnxruntime", ...: the backend, and the precision where the backend chose one."""
    return " ".join(filter(None, (summary["backend"], summary.get("runtime_precision"))))


def format_device_memory(summary: dict) -> Optional[str]:
    """Device memory each profile holds (TensorRT): activations and I/O buffers, the extractor engine's too;
    None for other backends."""
    mib = lambda n: f"{n / 2**20:.1f}"  # noqa: E731
    lines = []
    for label, memory in (("", summary.get("device_memory")),
                          ("extractor ", (summary.get("extractor_engine") or {}).get("device_memory"))):
        if memory:
            lines.append(f"{label}device memory: " + ", ".join(
                f"{name} {mib(m['activation'] + m['io'])} MiB ({mib(m['activation'])} activations + {mib(m['io'])} "
                "buffers)" for name, m in memory.items()))
    return "\n".join(lines) or None


class LocalStages:
    """Both stages in this process, on one ``Matcher``."""

    def __init__(self, matcher: Matcher, spill_parent: Path, max_feature_bytes: int = FEATURE_MEMORY):
        self.matcher = matcher
        self.store = FeatureStore(spill_parent, max_feature_bytes)

    def chunk_size(self, pairs: int) -> int:
        return CHUNK

    def extract(self, tasks: Sequence[ImageTask]) -> Iterator[Extracted]:
        for task in tasks:
            try:
                features = extract_image(self.matcher, task.path)
            except Exception as error:  # noqa: BLE001 - the image's pairs fail with this reason
                yield Extracted(task, error=failure_reason(error))
                continue
            self.store.put(task.name, features)
            yield Extracted(task, keypoints=len(features))

    def features(self, name: str) -> Features:
        return self.store.get(name)

    def match(self, chunks: Sequence[list[PairEntry]]) -> Iterator[tuple[list[PairEntry], list[Outcome]]]:
        for chunk in chunks:
            pairs = [(self.store.get(e.name0), self.store.get(e.name1)) for e in chunk]
            yield chunk, match_features(self.matcher, pairs)

    def release(self, name: str) -> None:
        self.store.drop(name)

    def describe(self) -> str:
        return f"this process ({backend_label(self.matcher.summary)})"

    def device_memory(self) -> Optional[str]:
        return format_device_memory(self.matcher.summary)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "LocalStages":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- the job -----------------------------------------------------------------------------------------------


@dataclass
class JobReport:
    """What a pairs job did: pairs written, skipped (already done), failed (with their reasons)."""

    pairs: int
    workers: str = ""
    written: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (pairs-file line, reason)
    images: int = 0  # images extracted
    matches: int = 0
    timings: dict = field(default_factory=lambda: {"extract": 0.0, "match": 0.0, "write": 0.0})
    seconds: float = 0.0
    outputs: str = ""
    device_memory: Optional[str] = None  # TensorRT's per profile (per worker on Ray), None for other backends

    @property
    def failed(self) -> int:
        return len(self.failures)

    def lines(self) -> list[str]:
        t = self.timings
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{self.pairs} pairs: {self.written} matched, {self.skipped} already done, {self.failed} failed",
            f"time: {self.seconds:.1f} s, {rate:.2f} pairs/s; extract {t['extract']:.1f} s ({self.images} images), "
            f"match {t['match']:.1f} s (of which writing {t['write']:.1f} s) on {self.workers}",
        ]
        if self.written:
            lines.append(f"matches: {self.matches / self.written:.1f} per pair")
        lines += [f"failed: {where}: {reason}" for where, reason in self.failures]
        if self.device_memory:
            lines.append(self.device_memory)
        if self.outputs:
            lines.append(f"wrote {self.outputs}")
        return lines

    def raise_for_failures(self) -> None:
        if self.failures:
            where, reason = self.failures[0]
            first = f"{where}: {reason}" if self.failed == 1 else f"listed above; first {where}: {reason}"
            raise PairsFailed(
                f"{self.failed} of {self.pairs} pairs failed ({first}); the {self.written + self.skipped} other "
                "outputs are valid, and a rerun redoes only the missing pairs"
            )


def _progress(total: int, unit: str, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=description, file=sys.stderr, disable=not enabled or total == 0)


def run_pairs_job(
    pairs: PairsFile,
    outputs_: Outputs,
    stages: Stages,
    overwrite: bool = False,
    progress: bool = True,
    on_chunk: Optional[Callable[["JobReport"], None]] = None,
) -> JobReport:
    """Match every pair of ``pairs`` that has no valid output yet into ``outputs_``, on ``stages``.

    Returns the report; failed pairs are in it, not raised (see ``JobReport.raise_for_failures``). A
    write that fails ends the job with a UserError; everything written before stays valid.
    ``on_chunk`` is called with the report after each chunk of results is written.
    """
    start = time.perf_counter()
    check_unique_outputs(pairs, outputs_.key)
    report = JobReport(len(pairs.entries), workers=stages.describe(), device_memory=stages.device_memory())
    try:
        pending = _plan(pairs, outputs_, overwrite, report)
        failed_images = _extract(pending, outputs_, stages, report, progress)
        _match(pairs, pending, failed_images, outputs_, stages, report, progress, on_chunk)
    except BaseException:
        outputs_.close(complete=False)
        raise
    _write(outputs_.close, report)
    line_order = {pairs.where(e): e.line for e in pairs.entries}
    report.failures.sort(key=lambda failure: line_order[failure[0]])
    report.outputs = outputs_.describe()
    report.seconds = time.perf_counter() - start
    return report


def _plan(pairs: PairsFile, outputs_: Outputs, overwrite: bool, report: JobReport) -> list[PairEntry]:
    """The pairs to match: not done yet (unless ``overwrite``), both images present."""
    pending: list[PairEntry] = []
    for entry in pairs.entries:
        missing = next((p for p in entry.paths if not p.is_file()), None)
        if not overwrite and outputs_.done(entry):
            report.skipped += 1
        elif missing is not None:
            report.failures.append((pairs.where(entry), f"no image at {missing}"))
        else:
            pending.append(entry)
    if report.skipped:
        print(f"resuming: {report.skipped} of {report.pairs} pairs are already done", file=sys.stderr)
    return pending


def _extract(pending: list[PairEntry], outputs_: Outputs, stages: Stages, report: JobReport, progress: bool) -> dict[str, str]:
    """Stage 1: features of every image of the pending pairs, once each; returns {image: why it failed}."""
    tasks: dict[str, ImageTask] = {}
    for entry in pending:
        for name, path in zip(entry.names, entry.paths):
            tasks.setdefault(name, ImageTask(name, path))
    failed_images: dict[str, str] = {}
    start = time.perf_counter()
    with _progress(len(tasks), "image", "extract", progress) as bar:
        for done in stages.extract(list(tasks.values())):
            if done.error is not None:
                failed_images[done.task.name] = done.error
            else:
                report.images += 1
                if outputs_.needs_features and not outputs_.has_features(done.task.name):
                    _write(outputs_.write_features, report, done.task.name, stages.features(done.task.name))
            bar.update(1)
    report.timings["extract"] = time.perf_counter() - start
    return failed_images


def _match(pairs: PairsFile, pending: list[PairEntry], failed_images: dict[str, str], outputs_: Outputs,
           stages: Stages, report: JobReport, progress: bool, on_chunk) -> None:
    """Stage 2: match the pairs whose images have features, in chunks; write each result as it comes."""
    matchable = []
    for entry in pending:
        reason = next((failed_images[n] for n in entry.names if n in failed_images), None)
        if reason is None:
            matchable.append(entry)
        else:
            report.failures.append((pairs.where(entry), reason))
    uses = Counter(name for entry in matchable for name in entry.names)  # features go after their last use
    size = max(1, stages.chunk_size(len(matchable)))
    chunks = [matchable[i : i + size] for i in range(0, len(matchable), size)]
    start = time.perf_counter()
    with _progress(len(matchable), "pair", "match", progress) as bar:
        for chunk, results in stages.match(chunks):
            for entry, result in zip(chunk, results):
                if isinstance(result, str):
                    report.failures.append((pairs.where(entry), result))
                else:
                    write_start = time.perf_counter()
                    _write(outputs_.write, report, entry, result)
                    report.timings["write"] += time.perf_counter() - write_start
                    report.written += 1
                    report.matches += len(result)
                for name in entry.names:
                    uses[name] -= 1
                    if uses[name] == 0:
                        stages.release(name)
            bar.update(len(chunk))
            if on_chunk is not None:
                on_chunk(report)
    report.timings["match"] = time.perf_counter() - start


def _write(write: Callable, report: JobReport, *args) -> None:
    """Call a writer; a failure ends the job with one message that says the earlier outputs are valid."""
    try:
        write(*args)
    except (OSError, UserError) as error:
        reason = str(error) if isinstance(error, UserError) else f"{error.strerror or error} ({error.filename or ''})"
        raise UserError(
            f"cannot write the outputs: {reason}; the {report.written + report.skipped} pairs written before "
            "are valid, and a rerun resumes from them"
        ) from error


def run_pairs_file(
    pairs_file: Path,
    output_dir: Path,
    matcher_options: dict,
    fmt: str = "json",
    image_dir: Optional[Path] = None,
    overwrite: bool = False,
    ray: Optional[str] = None,
    workers: Optional[int] = None,
    colmap_db: Optional[Path] = None,
    progress: bool = True,
    on_chunk: Optional[Callable[[JobReport], None]] = None,
) -> JobReport:
    """A pairs file matched into ``output_dir``: what ``trt_infer.py --pairs`` runs.

    ``matcher_options``: the arguments of ``Matcher.from_engine`` (``engine`` among them). ``fmt``:
    "json" or "npz" (one file per pair) or "hloc" (features.h5 and matches.h5). ``ray``: None runs in
    this process; "local" starts a local Ray instance; anything else is the address of a Ray cluster
    (see ``trt.runtime.distributed``), on which ``workers`` actors match. ``colmap_db``: also write
    a COLMAP database of the images, keypoints and raw matches of every pair done (``trt.sfm.colmap``).
    Everything the user can get wrong is checked before any engine is loaded.
    """
    pairs = read_pairs(pairs_file, image_dir)
    if fmt == "hloc":
        require_relative_names(pairs, "hloc")
    if colmap_db is not None:
        from trt.sfm.colmap import check_database_path

        require_relative_names(pairs, "COLMAP")
        check_database_path(colmap_db)
    folder = prepare_output_dir(output_dir)
    options = dict(matcher_options)
    settings = job_settings(
        options["engine"], fmt, options.get("threshold", DEFAULT_THRESHOLD), options.get("max_keypoints"),
        options.get("resize", DEFAULT_RESIZE), options.get("extractor"), pairs.image_dir,
    )
    check_unique_outputs(pairs, output_key(fmt))
    check_job_settings(folder, settings, overwrite)
    if ray is not None:
        from trt.runtime.distributed import RayStages

        stages = RayStages(options, address=ray, workers=workers)
    else:
        if workers is not None:
            raise UserError("workers are Ray actors: pass a Ray address (or 'local') as well")
        stages = LocalStages(Matcher.from_engine(**options), spill_parent=folder)
    with stages:
        record_job_settings(folder, settings)
        outputs_ = open_outputs(fmt, folder, settings["threshold"], settings["resize"])
        report = run_pairs_job(pairs, outputs_, stages, overwrite=overwrite, progress=progress, on_chunk=on_chunk)
    if report.written + report.skipped == 0:
        (folder / JOB_FILE).unlink(missing_ok=True)  # no outputs: nothing for the settings to describe
    if colmap_db is not None:
        from trt.sfm.colmap import write_database

        failed = {where for where, _ in report.failures}
        done = [entry for entry in pairs.entries if pairs.where(entry) not in failed]
        report.outputs += "; " + write_database(colmap_db, pairs.image_dir, outputs_.read_all(done))
    return report
