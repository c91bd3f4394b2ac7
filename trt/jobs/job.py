"""Matching jobs on files: one pair to a matches file and picture, or a pairs file to outputs.

What ``trt_infer.py`` runs; importable, so a pipeline can run the same jobs without the command line.

A pairs job reads its pairs file (``trt.jobs.pairs``), plans what is left to do, runs the two stages
(``trt.jobs.stages``: in this process, or on Ray actors with ``trt.jobs.ray_stages``) and writes each
result as it arrives (``trt.jobs.writers``, ``trt.jobs.hloc``); planning, outputs, resuming and the
report are the same code wherever the stages run.

- Every output is rendered in full before anything is written, and written atomically (``trt.fileio``).
- A job is resumable: a pair whose output already exists and is valid is skipped (``overwrite`` redoes
  it). The job's settings (engine, threshold, keypoints, format) are kept in ``OUTPUT/.job.json``; a
  rerun with other settings into the same folder is refused rather than mixing results.
- A bad pair (a missing or unreadable image) is reported with its pairs-file line and skipped; the job
  goes on, and ``JobReport.raise_for_failures`` ends it with ``PairsFailed`` (exit status 3).
"""

import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from trt.contract import DEFAULT_THRESHOLD
from trt.errors import PairsFailed, UserError
from trt.features.image import read_image
from trt.fileio import CreatedPaths, check_writable, read_file_bytes, write_bytes_atomic, write_text_atomic
from trt.jobs.pairs import (PairEntry, PairsFile, check_unique_outputs, list_images, make_pairs, pairing, pairs_filename,
                            read_pairs, require_relative_names, write_pairs)
from trt.jobs.stages import ImageTask, LocalStages, Stages
from trt.jobs.writers import Outputs, open_outputs, output_key
from trt.runtime import outputs
from trt.runtime.matcher import DEFAULT_RESIZE, Matcher, MatchResult

JOB_FILE = ".job.json"  # the settings of the job that wrote an output folder


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
    if not os.path.lexists(path):
        return
    try:
        previous = json.loads(read_file_bytes(path, JOB_FILE, ValueError))
    except ValueError:
        previous = {}  # unreadable: its outputs cannot be told to match
    if previous != settings and not overwrite:
        changed = [f"{key} {previous.get(key)!r} now {value!r}" for key, value in settings.items() if previous.get(key) != value]
        raise UserError(
            f"{folder} holds the outputs of a job with other settings ({'; '.join(changed) or 'unreadable ' + JOB_FILE}): "
            "use another output folder, or --overwrite to redo every pair"
        )


def record_job_settings(folder: Path, settings: dict) -> None:
    write_text_atomic(Path(folder) / JOB_FILE, json.dumps(settings, indent=1) + "\n")


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
    """The pairs to match: not done yet (unless ``overwrite``), both images present. The first missing
    image says where names are looked for: a forgotten image folder fails every pair."""
    pending: list[PairEntry] = []
    for entry in pairs.entries:
        missing = next((p for p in entry.paths if not p.is_file()), None)
        if not overwrite and outputs_.done(entry):
            report.skipped += 1
        elif missing is not None:
            reason = f"no image at {missing}"
            if not report.failures:
                reason += (f" (image names are relative to the pairs file's folder, {pairs.image_dir}, unless an image "
                           "folder is given: --image-dir)" if pairs.image_dir == pairs.path.parent else
                           f" (image names are relative to the image folder {pairs.image_dir})")
            report.failures.append((pairs.where(entry), reason))
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
    pairs_file: Union[Path, str],
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

    ``pairs_file``: a pairs file, or "exhaustive" / "sequential" / "sequential:K" to pair the images of
    ``image_dir`` (``trt.jobs.pairs.make_pairs``; the list is kept as ``output_dir/pairs-*.txt``).
    ``matcher_options``: the arguments of ``Matcher.from_engine`` (``engine`` among them). ``fmt``:
    "json" or "npz" (one file per pair) or "hloc" (features.h5 and matches.h5). ``ray``: None runs in
    this process; "local" starts a local Ray instance; anything else is the address of a Ray cluster
    (see ``trt.jobs.ray_stages``), on which ``workers`` actors match. ``colmap_db``: also write
    a COLMAP database of the images, keypoints and raw matches of every pair done (``trt.jobs.colmap``).
    Everything the user can get wrong is checked before any engine is loaded.

    A run that fails, or ends with no valid output, leaves the file system as it found it: the folders
    and files it created are removed, what existed is untouched. One that fails after writing some pairs
    keeps them (and ``.job.json``): they are valid, and a rerun resumes from them.
    """
    generated = pairing(pairs_file)
    if generated is not None:
        if image_dir is None:
            raise UserError(f"pairs {str(pairs_file)!r} are made from a folder of images: give the folder (--image-dir)")
        made = make_pairs(list_images(image_dir), *generated)
    with CreatedPaths() as created:
        folder = prepare_output_dir(created.track_folder(output_dir))
        if generated is not None:
            pairs_file = write_pairs(created.track(folder / pairs_filename(*generated)), made)
        pairs = read_pairs(pairs_file, image_dir)
        if fmt == "hloc":
            require_relative_names(pairs, "hloc")
        if colmap_db is not None:
            from trt.jobs.colmap import check_database_path

            require_relative_names(pairs, "COLMAP")
            check_database_path(created.track(colmap_db))
        options = dict(matcher_options)
        settings = job_settings(
            options["engine"], fmt, options.get("threshold", DEFAULT_THRESHOLD), options.get("max_keypoints"),
            options.get("resize", DEFAULT_RESIZE), options.get("extractor"), pairs.image_dir,
        )
        check_unique_outputs(pairs, output_key(fmt))
        check_job_settings(folder, settings, overwrite)
        if ray is not None:
            from trt.jobs.ray_stages import RayStages

            stages = RayStages(options, address=ray, workers=workers)
        else:
            if workers is not None:
                raise UserError("workers are Ray actors: pass a Ray address (or 'local') as well")
            stages = LocalStages(Matcher.from_engine(**options), spill_parent=folder)
        outputs_ = None
        try:
            with stages:
                record_job_settings(folder, settings)
                outputs_ = open_outputs(fmt, folder, settings["threshold"], settings["resize"])
                report = run_pairs_job(pairs, outputs_, stages, overwrite=overwrite, progress=progress, on_chunk=on_chunk)
        except BaseException:
            if outputs_ is not None and outputs_.written:
                created.keep(folder)  # valid outputs: a rerun resumes from them
            raise
        if report.written + report.skipped == 0:
            created.remove()  # nothing valid: the outputs' folder, settings and empty files go
            report.outputs = ""
            return report
        created.keep(folder)
        if colmap_db is not None:
            from trt.jobs.colmap import write_database

            failed = {where for where, _ in report.failures}
            done = [entry for entry in pairs.entries if pairs.where(entry) not in failed]
            report.outputs += "; " + write_database(colmap_db, pairs.image_dir, outputs_.read_all(done))
    return report
