"""Adaptive depth and width: LightGlue's early stopping and point pruning, run on the host over matcher stages.

A matcher exported with ``export.py --stages`` is a folder of stages (``trt.stages``): ``encode``, one
``layer`` per transformer layer (which also gives each point's confidence and matchability) and one
``assign`` per layer (the assignment of that layer with mutual matching). ``StagedMatcherSession`` is a
``Runner`` of the matcher contract that runs them in a loop, numpy only, each stage on a runner of the
chosen backend (ONNX Runtime, OpenVINO):

* after layer ℓ (not the last), a pair **stops** when the share of its confident points exceeds
  ``depth_confidence``: a point is unconfident when its confidence is below the layer's threshold
  ``0.8 + 0.1·exp(−4ℓ/9)``; pruned points count as confident, and the share is taken over the pair's
  original m + n points. A pair that stops gets its matches from assignment ℓ and leaves the batch; the
  others go on, each at its own depth.
* a pair that goes on **prunes** each image while it has more than ``prune_above`` points: a point goes
  when its matchability (sigmoid of assignment ℓ's matchability head) is ≤ 1 − ``width_confidence`` and
  (with early stopping on) its confidence is above the threshold. The kept rows are compacted to the
  front of each pair's state, ``count0/count1`` shrink, and the next layer runs at the new, smaller N
  (each stage picks its profile by the current N). Pruned points end with match −1 and score 0.
* −1 disables either; with both off the loop runs every layer on every point: full depth.

These are the semantics of cvg/LightGlue and of ``kornia.feature.LightGlue`` (≥ 0.7.4), per pair: kornia
runs a batch that prunes one pair at a time, so each pair there also stops at its own layer. cvg prunes
only above a keypoint count that depends on the device (CPU always, CUDA above 1024); here it is the
``prune_above`` setting, whose default per backend is the measured crossover (docs/adaptive.md).

Outputs are the contract's, plus ``layers`` [B] (layers run) and ``pruned0``/``pruned1`` [B] (points
pruned) as int32.
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from trt.contract import BATCH, KEYPOINTS0, KEYPOINTS1, NO_MATCH, stage_specs
from trt.runtime.base import MatcherContract, Profile, Runner, select_profile
from trt.stages import StagesManifest, stage_name
from trt.validation import check_confidence

DISABLED = -1.0
DEFAULT_DEPTH_CONFIDENCE = 0.95
DEFAULT_WIDTH_CONFIDENCE = 0.99
# Prune an image only while it has more than this many points, per backend. CPUs: always (measured with
# bench/adaptive_bench.py --crossover, docs/adaptive.md: pruning pays from 256 points on, 1.1-1.4x on a pair
# that runs 5 layers, on ONNX Runtime and OpenVINO alike, as cvg found for its CPU path); TensorRT: cvg's
# CUDA default (not measured here).
PRUNE_ABOVE = {"onnxruntime": -1, "openvino": -1, "tensorrt": 1024}
EXTRA_OUTPUTS = ("layers", "pruned0", "pruned1")


@dataclass(frozen=True)
class AdaptiveSettings:
    depth_confidence: float = DEFAULT_DEPTH_CONFIDENCE  # stop when this share of points is confident; -1: never
    width_confidence: float = DEFAULT_WIDTH_CONFIDENCE  # prune points of matchability <= 1 - this; -1: never
    prune_above: int = -1  # prune an image only while it has more points than this; -1: always

    def __post_init__(self) -> None:
        for name in ("depth_confidence", "width_confidence"):
            check_confidence(getattr(self, name), name.replace("_", " "))

    @property
    def stops(self) -> bool:
        return self.depth_confidence > 0

    @property
    def prunes(self) -> bool:
        return self.width_confidence > 0

    @property
    def full_depth(self) -> bool:
        return not self.stops and not self.prunes

    def describe(self) -> str:
        if self.full_depth:
            return "full depth"
        parts = [f"depth confidence {self.depth_confidence:g}" if self.stops else "no early stopping",
                 f"width confidence {self.width_confidence:g}" if self.prunes else "no pruning"]
        if self.prunes and self.prune_above >= 0:
            parts.append(f"pruning above {self.prune_above} points")
        return ", ".join(parts)


FULL_DEPTH = AdaptiveSettings(DISABLED, DISABLED)


def resolve_settings(manifest: StagesManifest, backend: str, depth_confidence: Optional[float] = None,
                     width_confidence: Optional[float] = None, prune_above: Optional[int] = None
                     ) -> tuple[AdaptiveSettings, str]:
    """(the settings to serve with, why where they differ from what was asked): None takes the default,
    the reference's 0.95 / 0.99 where the weights' confidence heads were trained. Weights without trained
    heads (test weights) run full depth: their confidences say nothing."""
    prune_above = PRUNE_ABOVE.get(backend, -1) if prune_above is None else prune_above
    if not manifest.trained_confidence:
        asked = [v for v in (depth_confidence, width_confidence) if v is not None and v != DISABLED]
        reason = (f"full depth: the {manifest.weights.get('kind')} weights have no trained confidence heads"
                  + (", so depth and width confidence are ignored" if asked else ""))
        return FULL_DEPTH, reason
    settings = AdaptiveSettings(DEFAULT_DEPTH_CONFIDENCE if depth_confidence is None else depth_confidence,
                                DEFAULT_WIDTH_CONFIDENCE if width_confidence is None else width_confidence,
                                prune_above)
    return settings, ""


def stopping(confidence0: np.ndarray, confidence1: np.ndarray, total: int, threshold: np.float32,
             depth_confidence: float) -> bool:
    """Whether a pair stops: the share of confident points among its original ``total`` exceeds the setting.

    ``confidence0/1``: the pair's current (kept, unpadded) points. Float32 throughout, as the reference computes it.
    """
    unconfident = np.float32(np.count_nonzero(confidence0 < threshold) + np.count_nonzero(confidence1 < threshold))
    return bool(np.float32(1.0) - unconfident / np.float32(total) > np.float32(depth_confidence))


def kept_points(confidence: np.ndarray, matchability: np.ndarray, threshold: np.float32,
                settings: AdaptiveSettings) -> np.ndarray:
    """Indices of the points an image keeps: matchable enough, or (with early stopping) not yet confident."""
    keep = matchability > np.float32(1 - settings.width_confidence)
    if settings.stops:
        keep |= confidence <= threshold
    return np.flatnonzero(keep)


def gather_rows(array: np.ndarray, pairs: Sequence[int], rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """[len(pairs), length, ...]: for each pair (a batch index of ``array``) its ``rows``, in order, at the
    front; zeros after them (padding, masked by the counts)."""
    out = np.zeros((len(pairs), length, *array.shape[2:]), array.dtype)
    for i, (pair, kept) in enumerate(zip(pairs, rows)):
        out[i, : len(kept)] = array[pair, kept]
    return out


class StagedMatcherSession(Runner):
    """The matcher contract served from the stages in ``folder`` with adaptive depth and width.

    ``open_stage(path, profiles)`` makes the runner of one stage file (an ``OnnxRuntimeSession`` or an
    ``OpenVINOSession`` of a stage ONNX, a ``TensorRTSession`` of a stage engine); ``profiles``: the engine's,
    which every stage runs within (None: any shape).
    """

    def __init__(self, folder: Path, open_stage: Callable[[Path, Optional[list[Profile]]], Runner],
                 settings: AdaptiveSettings = AdaptiveSettings(), profiles: Optional[Sequence[Profile]] = None,
                 manifest: Optional[StagesManifest] = None):
        super().__init__(f"matcher stages in {folder}", profiles=profiles)
        self.folder = Path(folder)
        self.settings = settings
        self.manifest = manifest or StagesManifest.read(self.folder)
        self.stages = {record.name: open_stage(self.folder / record.file, self.profiles)
                       for record in self.manifest.stages}
        first = next(iter(self.stages.values()))
        self.backend, self.device = first.backend, first.device
        # The notice's words on OpenVINO's precision: the stages have no bf16 gate of their own, so no gate to suggest.
        self.precision_note = f"in {first.precision}" if first.backend == "openvino" else ""
        self.thresholds = np.asarray(self.manifest.confidence_thresholds, np.float32)

    @property
    def request_profiles(self) -> Optional[list[Profile]]:
        """The stages': with CUDA graphs (TensorRT) each stage runs every profile at its opt shape only, so the
        loop pads each stage's request to it; a graph per stage and profile."""
        return next(iter(self.stages.values())).request_profiles or self.profiles

    def summary(self) -> dict:
        return {**next(iter(self.stages.values())).summary(), "adaptive": {
            "depth_confidence": self.settings.depth_confidence, "width_confidence": self.settings.width_confidence,
            "prune_above": self.settings.prune_above, "trained_confidence": self.manifest.trained_confidence}}

    def activate_impl(self) -> None:
        started = []
        try:
            for runner in self.stages.values():
                started.append(runner.activate())
        except BaseException:
            for runner in started:
                runner.deactivate()
            raise
        self.metadata = dict(next(iter(self.stages.values())).metadata)
        self.contract = MatcherContract(self.manifest.descriptor_dim, self.manifest.scale_ori)

    def deactivate_impl(self) -> None:
        for runner in self.stages.values():
            runner.deactivate()

    # -- the loop --------------------------------------------------------------------------------------
    def _fitted(self, batch: int, n0: int, n1: int) -> tuple[int, int, int]:
        """(B, N0, N1) raised to the minimum of the smallest stage profile that holds them."""
        dims = {BATCH: batch, KEYPOINTS0: max(n0, 1), KEYPOINTS1: max(n1, 1)}
        profiles = self.request_profiles
        padded = profiles[select_profile(profiles, dims, padding=True)].padded(dims)
        return padded[BATCH], padded[KEYPOINTS0], padded[KEYPOINTS1]

    def _run(self, name: str, feeds: dict[str, np.ndarray], timings: Counter) -> dict[str, np.ndarray]:
        runner = self.stages[name]
        outputs = runner.infer(feeds)
        timings["compute"] += runner.last_timings.get("total", 0.0)
        timings[f"stage_{name.rstrip('0123456789')}"] += runner.last_timings.get("total", 0.0)
        return outputs

    def _compact(self, state: dict, pairs: Sequence[int], rows0, rows1) -> tuple[dict, list[np.ndarray]]:
        """(the state of ``pairs`` (positions in the current batch) with only the given rows, re-padded; their counts)."""
        batch, n0, n1 = self._fitted(len(pairs), max(map(len, rows0)), max(map(len, rows1)))
        unchanged = (list(pairs) == list(range(len(next(iter(state.values())))))
                     and all(np.array_equal(r, np.arange(len(r))) for r in (*rows0, *rows1))
                     and (batch, n0, n1) == (len(pairs), state["state0"].shape[1], state["state1"].shape[1]))
        if unchanged:  # full depth, or a layer that pruned nothing: the state is already compact
            return state, [np.array([len(r) for r in rows], np.int32) for rows in (rows0, rows1)]
        positions = list(pairs) + [pairs[-1]] * (batch - len(pairs))  # padding pairs repeat the last one
        rows0, rows1 = list(rows0) + [rows0[-1]] * (batch - len(pairs)), list(rows1) + [rows1[-1]] * (batch - len(pairs))
        compacted = {}
        for name, value in state.items():
            compacted[name] = gather_rows(value, positions, rows0 if name.endswith("0") else rows1,
                                          n0 if name.endswith("0") else n1)
        counts = [np.array([len(r) for r in rows], np.int32) for rows in (rows0, rows1)]
        return compacted, counts

    def infer_impl(self, feeds, profile_index):
        timings: Counter = Counter()
        batch, n0, n1 = feeds["kpts0"].shape[0], feeds["kpts0"].shape[1], feeds["kpts1"].shape[1]
        threshold = feeds["threshold"]
        settings, layers_total = self.settings, self.manifest.num_layers
        encode_inputs = [spec.name for spec in stage_specs("encode", self.manifest.descriptor_dim,
                                                           self.manifest.scale_ori)[0]]
        state = self._run("encode", {name: feeds[name] for name in encode_inputs}, timings)
        # Per pair (by its index in the request): the original row of each point it still has.
        rows = [[np.arange(count) for count in feeds[f"count{side}"]] for side in (0, 1)]
        total = feeds["count0"].astype(np.int64) + feeds["count1"].astype(np.int64)
        outputs = {"matches0": np.full((batch, n0), NO_MATCH, np.int32), "matches1": np.full((batch, n1), NO_MATCH, np.int32),
                   "mscores0": np.zeros((batch, n0), np.float32), "mscores1": np.zeros((batch, n1), np.float32),
                   "layers": np.zeros(batch, np.int32)}
        active = list(range(batch))  # request index of each pair in the current batch (its first rows)
        state, counts = self._compact(state, range(batch), rows[0], rows[1])
        for layer in range(layers_total):
            out = self._run(stage_name("layer", layer), {**state, "count0": counts[0], "count1": counts[1]}, timings)
            state = {**state, "state0": out["next_state0"], "state1": out["next_state1"]}
            last = layer == layers_total - 1
            done, going = [], []
            kept0, kept1 = [], []
            for position, pair in enumerate(active):
                c0, c1 = len(rows[0][pair]), len(rows[1][pair])
                if last or (settings.stops and stopping(out["confidence0"][position, :c0], out["confidence1"][position, :c1],
                                                        int(total[pair]), self.thresholds[layer], settings.depth_confidence)):
                    done.append(position)
                    continue
                going.append(position)
                for side, count, kept in ((0, c0, kept0), (1, c1, kept1)):
                    if settings.prunes and count > settings.prune_above:
                        keep = kept_points(out[f"confidence{side}"][position, :count],
                                           out[f"matchability{side}"][position, :count], self.thresholds[layer], settings)
                    else:
                        keep = np.arange(count)
                    kept.append(keep)
            if done:
                self._assign(layer, state, done, active, rows, threshold, outputs, timings)
            if not going:
                break
            for position, keep0, keep1 in zip(going, kept0, kept1):
                pair = active[position]
                rows[0][pair], rows[1][pair] = rows[0][pair][keep0], rows[1][pair][keep1]
            state, counts = self._compact(state, going, kept0, kept1)
            active = [active[position] for position in going]
        outputs["pruned0"] = (feeds["count0"] - np.array([len(r) for r in rows[0]])).astype(np.int32)
        outputs["pruned1"] = (feeds["count1"] - np.array([len(r) for r in rows[1]])).astype(np.int32)
        return outputs, dict(timings)

    def _assign(self, layer: int, state: dict, done: list[int], active: list[int], rows: list, threshold: np.ndarray,
                outputs: dict, timings: Counter) -> None:
        """Matches of the pairs at ``done`` (positions in the batch) from assignment ``layer``, written to
        ``outputs`` at their original rows."""
        pairs = [active[position] for position in done]
        rows0 = [np.arange(len(rows[0][pair])) for pair in pairs]
        rows1 = [np.arange(len(rows[1][pair])) for pair in pairs]
        states = {name: state[name] for name in ("state0", "state1")}
        compacted, counts = self._compact(states, done, rows0, rows1)
        out = self._run(stage_name("assign", layer), {**compacted, "count0": counts[0], "count1": counts[1],
                                                      "threshold": threshold}, timings)
        for i, pair in enumerate(pairs):
            original0, original1 = rows[0][pair], rows[1][pair]
            matches0 = out["matches0"][i, : len(original0)]
            matches1 = out["matches1"][i, : len(original1)]
            outputs["matches0"][pair, original0] = np.where(matches0 >= 0, original1[np.maximum(matches0, 0)], NO_MATCH)
            outputs["matches1"][pair, original1] = np.where(matches1 >= 0, original0[np.maximum(matches1, 0)], NO_MATCH)
            outputs["mscores0"][pair, original0] = out["mscores0"][i, : len(original0)]
            outputs["mscores1"][pair, original1] = out["mscores1"][i, : len(original1)]
            outputs["layers"][pair] = layer + 1
