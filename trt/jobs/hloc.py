"""Pairs-job outputs in hloc's layout (cvg/Hierarchical-Localization): ``features.h5`` and ``matches.h5``.

Read with hloc's own helpers (``hloc.utils.io.get_keypoints``, ``get_matches``, ``list_h5_names``) or
with h5py; image names are paths below the image folder, as in hloc's pairs files.

``features.h5``, one group per image name (a name with folders makes nested groups, as in hloc)::

    keypoints    [N, 2] float32  (x, y) in original-image pixels, the centre of the top-left pixel at
                 (0, 0) (hloc's convention; COLMAP's is +0.5). Attribute ``uncertainty``: the pixel
                 size of the image the detector ran on, as hloc's extract_features writes it.
    descriptors  [D, N] float32  one column per keypoint (hloc's layout; transposed from ours)
    scores       [N] float32     detector response
    image_size   [2] int64       (width, height) of the original image
    scales, oris [N] float32     SIFT only: keypoint size on the resized image, orientation in radians
                                 (what the LightGlue SIFT matcher reads; hloc's own DoG writes degrees)

``matches.h5``, one group per pair, named ``names_to_pair(name0, name1)`` = ``"{name0}/{name1}"`` with
each name's "/" replaced by "-" (hloc's current naming; its ``find_pair`` also looks up the reverse)::

    matches0           [N0] int16    index of the match in image 1, -1 for none (hloc's dtype)
    matching_scores0   [N0] float16  match score, 0 where there is no match (hloc's dtype)

hloc stores float arrays of features as float16 by default (``as_half``); here they stay float32, which
every hloc reader accepts, so that keypoints keep their sub-pixel precision for SfM.

The files are written as hidden ``.features.h5.partial`` / ``.matches.h5.partial`` beside the final
names and renamed onto them when the job ends, so ``features.h5`` and ``matches.h5`` are always complete
files. A rerun starts from the final files (or from the partial files of an interrupted run, when they
open) and skips the pairs already in them.
"""

import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from trt.errors import UserError
from trt.features.base import Features
from trt.jobs.pairs import PairMatches

FEATURES_FILE = "features.h5"
MATCHES_FILE = "matches.h5"
FLUSH_SECONDS = 2.0  # how often the partial files are flushed, so an interrupted run can resume from them
INT16_MAX = np.iinfo(np.int16).max


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's key of a pair in matches.h5 (``hloc.utils.parsers.names_to_pair``)."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def _h5py():
    try:
        import h5py
    except ImportError:
        raise UserError("hloc outputs need h5py: pip install 'lightglue-trt[sfm]'") from None
    return h5py


class HlocFiles:
    """The pairs-job outputs (``trt.jobs.writers.Outputs``) as hloc's features.h5 and matches.h5 in ``folder``.

    ``resize``: the long side the SIFT front-end ran on, for the keypoints' ``uncertainty`` attribute.
    """

    needs_features = True

    def __init__(self, folder: Path, resize: int | None = None):
        self.h5py = _h5py()
        self.folder, self.resize = Path(folder), resize
        self.written = 0
        self._last_flush = time.monotonic()
        self._files = {name: self._open(name) for name in (FEATURES_FILE, MATCHES_FILE)}

    def _partial(self, name: str) -> Path:
        return self.folder / f".{name}.partial"

    def _open(self, name: str):
        final, partial = self.folder / name, self._partial(name)
        if partial.exists():
            try:
                return self.h5py.File(partial, "a", libver="latest")
            except OSError as error:
                warnings.warn(f"{partial} of an interrupted run cannot be opened ({error}): starting it again")
                partial.unlink()
        if final.exists():
            try:
                with self.h5py.File(final, "r"):
                    pass
            except OSError as error:
                raise UserError(f"{final} is not an HDF5 file ({error}): move it away or use another output folder") from error
            shutil.copyfile(final, partial)
        return self.h5py.File(partial, "a", libver="latest")

    @property
    def features_file(self):
        return self._files[FEATURES_FILE]

    @property
    def matches_file(self):
        return self._files[MATCHES_FILE]

    def key(self, entry) -> str:
        return names_to_pair(entry.name0, entry.name1)

    def _count(self, name: str) -> int | None:
        group = self.features_file.get(name)
        if not isinstance(group, self.h5py.Group) or not {"keypoints", "descriptors"} <= set(group):
            return None
        return group["keypoints"].shape[0]

    def has_features(self, name: str) -> bool:
        return self._count(name) is not None

    def done(self, entry) -> bool:
        counts = [self._count(name) for name in entry.names]
        group = self.matches_file.get(self.key(entry))
        if None in counts or not isinstance(group, self.h5py.Group):
            return False
        if not {"matches0", "matching_scores0"} <= set(group):
            return False
        return group["matches0"].shape == group["matching_scores0"].shape == (counts[0],)

    def write_features(self, name: str, features: Features) -> None:
        file = self.features_file
        if name in file:
            del file[name]
        group = file.create_group(name)
        keypoints = group.create_dataset("keypoints", data=np.asarray(features.keypoints, np.float32))
        if self.resize:
            keypoints.attrs["uncertainty"] = float(max(features.image_size) / self.resize)
        group.create_dataset("descriptors", data=np.asarray(features.descriptors, np.float32).T)
        scores = features.scores if features.scores is not None else np.zeros(len(features), np.float32)
        group.create_dataset("scores", data=np.asarray(scores, np.float32))
        group.create_dataset("image_size", data=np.rint(features.image_size).astype(np.int64))
        for key in ("scales", "oris"):
            value = getattr(features, key)
            if value is not None:
                group.create_dataset(key, data=np.asarray(value, np.float32))
        self._maybe_flush()

    def write(self, entry, result) -> None:
        if len(result.keypoints1) > INT16_MAX:
            raise UserError(
                f"{entry.name1} has {len(result.keypoints1)} keypoints: hloc's int16 matches0 holds at most {INT16_MAX}"
            )
        file, key = self.matches_file, self.key(entry)
        if key in file:
            del file[key]
        group = file.create_group(key)
        group.create_dataset("matches0", data=np.asarray(result.matches0, np.int16))
        scores = np.zeros(len(result.matches0), np.float32)
        scores[result.matches[:, 0]] = result.scores
        group.create_dataset("matching_scores0", data=scores.astype(np.float16))
        self.written += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush > FLUSH_SECONDS:
            for file in self._files.values():
                file.flush()
            self._last_flush = time.monotonic()

    def read_all(self, entries):
        """(entry, PairMatches) of each entry, from the final files (after ``close``)."""
        with self.h5py.File(self.folder / FEATURES_FILE, "r") as features, self.h5py.File(self.folder / MATCHES_FILE, "r") as matches:
            for entry in entries:
                keypoints = [features[name]["keypoints"][()] for name in entry.names]
                sizes = [tuple(float(v) for v in features[name]["image_size"][()]) for name in entry.names]
                matches0 = matches[self.key(entry)]["matches0"][()].astype(np.int64)
                index0 = np.flatnonzero(matches0 >= 0)
                pair = np.stack([index0, matches0[index0]], axis=1).reshape(-1, 2)
                yield entry, PairMatches(*keypoints, pair, *sizes)

    def close(self, complete: bool = True) -> None:
        """Close the files; when the job ``complete``d, rename them onto features.h5 and matches.h5
        (features first), else leave them as partial files a rerun resumes from."""
        for name, file in self._files.items():
            if file.id.valid:
                file.close()
            if complete:
                os.replace(self._partial(name), self.folder / name)

    def describe(self) -> str:
        return f"{self.written} pairs to {self.folder / MATCHES_FILE} (features in {self.folder / FEATURES_FILE})"
