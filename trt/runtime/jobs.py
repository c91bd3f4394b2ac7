"""Matching jobs on files: one pair to a matches file and picture, or a pairs file to a folder.

What ``trt_infer.py`` runs; importable, so a pipeline can run the same jobs without the command line.
Every output is rendered in full before anything is written, and written atomically.
"""

import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trt.errors import UserError
from trt.features.image import read_image
from trt.fileio import check_writable, write_bytes_atomic
from trt.runtime import outputs
from trt.runtime.matcher import Matcher, MatchResult

FEATURE_CACHE = 64  # images whose features are kept while going through a pairs file
CHUNK = 32  # pairs read and matched together in a pairs run (the matcher batches within it)


@dataclass
class PairJob:
    """One pair to match, checked before any engine is loaded: images read, output paths writable."""

    paths: tuple[Path, Path]
    images: tuple
    output: Optional[Path] = None  # .json or .npz
    viz: Optional[Path] = None  # .png


def prepare_pair(image0: Path, image1: Path, output: Optional[Path] = None, viz: Optional[Path] = None) -> PairJob:
    if output:
        outputs.output_format(output)
    for path in filter(None, (output, viz and outputs.check_png_path(viz))):
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
        files.append((job.viz, outputs.encode_png(outputs.draw_matches(*job.images, result))))
    return result, [write_bytes_atomic(path, data) for path, data in files]


def read_pairs(path: Path) -> list[tuple[Path, Path]]:
    """Pairs of image paths, relative ones taken from the pairs file's folder; every image must exist.

    One "image0 image1" per line; blank lines and lines starting with # are skipped.
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"no pairs file at {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read pairs file {path}: {error}") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names = line.split()
        if len(names) != 2:
            raise UserError(f"{path}:{number}: expected two image paths, got {len(names)} field(s): {line!r}")
        pair = tuple(p if p.is_absolute() else path.parent / p for p in map(Path, names))
        for image in pair:
            if not image.is_file():
                raise UserError(f"{path}:{number}: no image at {image}")
        pairs.append(pair)
    if not pairs:
        raise UserError(f"{path} lists no pairs")
    return pairs


def pair_filename(pair: tuple[Path, Path], base: Path, fmt: str) -> str:
    """``<image0>__<image1>.<fmt>``, the images named by their path below ``base``."""

    def name(image: Path) -> str:
        try:
            image = image.relative_to(base)
        except ValueError:
            pass
        return "-".join(part for part in image.parts if part not in ("/", "..")).replace(" ", "_")

    return f"{name(pair[0])}__{name(pair[1])}.{fmt}"


@dataclass
class PairsRun:
    written: list[Path] = field(default_factory=list)
    matches: int = 0
    timings: dict = field(default_factory=lambda: {"extract": 0.0, "match": 0.0})


def match_pairs_file(matcher: Matcher, pairs_file: Path, output_dir: Path, fmt: str = "json",
                     progress: bool = True) -> PairsRun:
    """Match every pair of ``pairs_file`` into ``output_dir``, one matches file per pair.

    Features of recently seen images are reused (an image is often in many pairs), and pairs are
    matched in chunks that the matcher batches as the engine's profiles allow.
    """
    from tqdm import tqdm

    pairs = read_pairs(pairs_file)
    check_writable(output_dir / f"probe.{fmt}")
    cache: OrderedDict = OrderedDict()
    run = PairsRun()

    def features(path: Path):
        if path not in cache:
            start = time.perf_counter()
            cache[path] = matcher.extract(read_image(path))
            run.timings["extract"] += time.perf_counter() - start
            if len(cache) > FEATURE_CACHE:
                cache.popitem(last=False)
        cache.move_to_end(path)
        return cache[path]

    with tqdm(total=len(pairs), unit="pair", file=sys.stderr, disable=not progress) as bar:
        for first in range(0, len(pairs), CHUNK):
            chunk = pairs[first : first + CHUNK]
            chunk_features = [(features(a), features(b)) for a, b in chunk]
            start = time.perf_counter()
            results = matcher.match_pairs(chunk_features)
            run.timings["match"] += time.perf_counter() - start
            for pair, result in zip(chunk, results):
                path = output_dir / pair_filename(pair, pairs_file.parent, fmt)
                record = outputs.result_record(result, *pair, threshold=matcher.threshold)
                run.written.append(write_bytes_atomic(path, outputs.encode_matches(record, fmt)))
                run.matches += len(result)
            bar.update(len(chunk))
    return run
