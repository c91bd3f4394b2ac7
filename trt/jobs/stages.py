"""The two stages of a pairs job, and where they run.

**Extract**: every image of the pairs still to match is read and its features extracted once, however
many pairs it is in. **Match**: the pairs are matched in chunks that the matcher batches as the
engine's profiles allow. ``LocalStages`` runs both in this process on one ``Matcher`` (features kept in
memory up to ``FEATURE_MEMORY``, the rest spilled to a folder); ``trt.jobs.ray_stages.RayStages`` runs
them on Ray actors. The job (``trt.jobs.job``) drives either through the ``Stages`` protocol.
"""

import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol, Sequence, Union

import numpy as np

from trt.errors import UserError
from trt.features.base import Features
from trt.jobs.pairs import PairEntry
from trt.runtime.matcher import Matcher, MatchResult
from trt.runtime.outputs import backend_label, format_device_memory

FEATURE_MEMORY = 2 << 30  # bytes of features a local job keeps in memory; more go to a spill folder


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


class LocalStages:
    """Both stages in this process, on one ``Matcher``."""

    def __init__(self, matcher: Matcher, spill_parent: Path, max_feature_bytes: int = FEATURE_MEMORY):
        self.matcher = matcher
        self.store = FeatureStore(spill_parent, max_feature_bytes)

    def chunk_size(self, pairs: int) -> int:
        """The most pairs one engine call takes: each matching call is one batch, so the job's progress
        moves as the pairs are matched."""
        return max(profile.batch[2] for profile in self.matcher.runner.request_profiles)

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

