"""The FP16 accuracy gate: an FP16 engine is only written if its graph matches (or, for an extractor,
detects and describes) like the FP32 one.

Before a (long) FP16 build, the FP32 matcher graph and its mixed-precision variant both run on ONNX
Runtime over a fixed set of pairs. ONNX Runtime's CPU kernels store every FP16 tensor in FP16 and
accumulate in FP32, as TensorRT's FP16 kernels do, so overflow and rounding show up here as they would
in the engine. The comparison uses the matches users get, those scored above ``GATE_THRESHOLD`` (the
default 0.1): mutual "matches" scored near 0 are near-ties that any rounding reshuffles. Where the FP32
model finds fewer than ``MIN_GATE_MATCHES`` of those (flat, untrained weights), every mutual match is
compared instead, the only set such weights have. Figures: match-set IoU, mean |Δscore| and the
match-count ratio. IoU below ``MIN_IOU`` refuses the build.

The pairs are synthetic and seeded (keypoints in a 640×480 image, unit descriptors, the second image a
jittered subset of the first), so the gate needs no images and gives the same figures every time.

An extractor graph (trt/extractor_contract.py) is gated on two seeded synthetic scenes
(``trt.synthetic.synthetic_image``) of different sizes in one batch: the share of FP32 keypoints that the FP16 graph
finds again within ``EXTRACTOR_RADIUS_PX``, and the cosine of the descriptors of those pairs.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trt.contract import DEFAULT_THRESHOLD
from trt.errors import BuildError
from trt.features.base import Features, pack_pairs
from trt.synthetic import synthetic_features

MIN_IOU = 0.95
GATE_THRESHOLD = DEFAULT_THRESHOLD
MIN_GATE_MATCHES = 100
GATE_SIZES = ((512, 470), (1024, 950), (2048, 1900))
GATE_IMAGE_SIZE = (640.0, 480.0)
GATE_SEED = 20231
# Extractors: two scenes (height, width) in one batch, the second padded into the first's size.
EXTRACTOR_GATE_IMAGES = ((384, 512), (288, 224))
EXTRACTOR_RADIUS_PX = 1.0
MIN_KEYPOINT_RECALL = 0.95
MIN_MEAN_COSINE = 0.99


def gate_pairs(descriptor_dim: int, scale_ori: bool) -> list[tuple[Features, Features]]:
    rng = np.random.default_rng(GATE_SEED)
    pairs = []
    for n0, n1 in GATE_SIZES:
        first = synthetic_features(descriptor_dim, scale_ori, n0, GATE_IMAGE_SIZE, rng)
        pairs.append((first, synthetic_features(descriptor_dim, scale_ori, n1, GATE_IMAGE_SIZE, rng, like=first)))
    return pairs


@dataclass(frozen=True)
class GateReport:
    iou: float  # |FP32 ∩ FP16| / |FP32 ∪ FP16| over all pairs' mutual matches
    mean_abs_score_delta: float  # over keypoints matched in either model
    count_ratio: float  # FP16 matches / FP32 matches
    fp32_matches: int
    fp16_matches: int
    threshold: float  # the score matches were kept above

    @property
    def passed(self) -> bool:
        return self.iou >= MIN_IOU

    def __str__(self) -> str:
        return (f"FP16 vs FP32 on {len(GATE_SIZES)} fixed pairs, matches scored above {self.threshold:g}: "
                f"match-set IoU {self.iou:.4f} (gate {MIN_IOU}), "
                f"mean |Δscore| {self.mean_abs_score_delta:.2e}, match count {self.fp16_matches}/{self.fp32_matches} "
                f"= {self.count_ratio:.3f}")


def compare_precisions(fp32_onnx: Path, fp16_onnx: Path, descriptor_dim: int, scale_ori: bool) -> GateReport:
    """Run both graphs on the gate's pairs and compare their matches (see the module docstring)."""
    # At threshold 0 the outputs hold every mutual match with its score; higher thresholds are filters.
    feeds_list = [pack_pairs([pair], len(pair[0]), len(pair[1]), threshold=0.0)
                  for pair in gate_pairs(descriptor_dim, scale_ori)]
    from trt.onnx.export import run_onnx

    reference, candidate = run_onnx(fp32_onnx, feeds_list), run_onnx(fp16_onnx, feeds_list)
    confident = sum(int(np.sum(out["mscores0"][0] > GATE_THRESHOLD)) for out in reference)
    threshold = GATE_THRESHOLD if confident >= MIN_GATE_MATCHES else 0.0
    shared = count32 = count16 = 0
    deltas = []
    for out32, out16 in zip(reference, candidate):
        m32 = np.where(out32["mscores0"][0] > threshold, out32["matches0"][0], -1)
        m16 = np.where(out16["mscores0"][0] > threshold, out16["matches0"][0], -1)
        matched32, matched16 = m32 > -1, m16 > -1
        shared += int(np.sum(matched32 & (m32 == m16)))
        count32, count16 = count32 + int(matched32.sum()), count16 + int(matched16.sum())
        deltas.append(np.abs(out32["mscores0"][0] - out16["mscores0"][0])[matched32 | matched16])
    delta = np.concatenate(deltas)
    union = count32 + count16 - shared
    return GateReport(
        iou=shared / union if union else 1.0,
        mean_abs_score_delta=float(delta.mean()) if delta.size else 0.0,
        count_ratio=count16 / count32 if count32 else float(count16 == 0),
        fp32_matches=count32,
        fp16_matches=count16,
        threshold=threshold,
    )


def check_fp16(fp32_onnx: Path, fp16_onnx: Path, descriptor_dim: int, scale_ori: bool) -> GateReport:
    """The gate's report, or a BuildError with its figures when the FP16 graph falls below the gate."""
    report = compare_precisions(fp32_onnx, fp16_onnx, descriptor_dim, scale_ori)
    if not report.passed:
        raise BuildError(f"{report}: the FP16 model does not match like the FP32 one, so no engine was written. "
                         "Build fp32, or pass --no-gate to build it anyway")
    return report


@dataclass(frozen=True)
class ExtractorGateReport:
    recall: float  # FP32 keypoints with an FP16 keypoint within EXTRACTOR_RADIUS_PX, over both scenes
    mean_cosine: float  # descriptor cosine of those pairs
    min_cosine: float
    fp32_keypoints: int
    fp16_keypoints: int

    @property
    def passed(self) -> bool:
        return self.recall >= MIN_KEYPOINT_RECALL and self.mean_cosine >= MIN_MEAN_COSINE

    def __str__(self) -> str:
        return (f"FP16 vs FP32 on {len(EXTRACTOR_GATE_IMAGES)} fixed scenes: {self.recall:.2%} of keypoints found "
                f"again within {EXTRACTOR_RADIUS_PX} px (gate {MIN_KEYPOINT_RECALL:.0%}), descriptor cosine mean "
                f"{self.mean_cosine:.5f} (gate {MIN_MEAN_COSINE}), min {self.min_cosine:.4f}, keypoints "
                f"{self.fp16_keypoints}/{self.fp32_keypoints}")


def compare_extractor_precisions(fp32_onnx: Path, fp16_onnx: Path, network) -> ExtractorGateReport:
    """Run both extractor graphs on the gate's scenes; ``network``: channels, stride and padding of the graph
    (an ``ExtractorNetwork`` or anything with those fields)."""
    from trt.extractor_contract import OUTPUT_NAMES
    from trt.onnx.export import run_onnx
    from trt.onnx.export_extractor import example_inputs, feature_agreement

    feeds = example_inputs(network, EXTRACTOR_GATE_IMAGES[0], list(EXTRACTOR_GATE_IMAGES), seed=GATE_SEED)
    (reference,), (candidate,) = (run_onnx(path, [feeds], OUTPUT_NAMES) for path in (fp32_onnx, fp16_onnx))
    found = total = 0
    cosines = []
    for index, (n32, n16) in enumerate(zip(reference["count"], candidate["count"])):
        agreement = feature_agreement(reference["keypoints"][index, :n32], reference["descriptors"][index, :n32],
                                      candidate["keypoints"][index, :n16], candidate["descriptors"][index, :n16],
                                      EXTRACTOR_RADIUS_PX)
        found += agreement.cosines.size  # one cosine per FP32 keypoint found again
        total += int(n32)
        cosines.append(agreement.cosines)
    cosine = np.concatenate(cosines)
    return ExtractorGateReport(
        recall=found / total if total else 1.0,
        mean_cosine=float(cosine.mean()) if cosine.size else 1.0,
        min_cosine=float(cosine.min()) if cosine.size else 1.0,
        fp32_keypoints=total,
        fp16_keypoints=int(candidate["count"].sum()),
    )


def check_extractor_fp16(fp32_onnx: Path, fp16_onnx: Path, network) -> ExtractorGateReport:
    """The extractor gate's report, or a BuildError with its figures when the FP16 graph falls below it."""
    report = compare_extractor_precisions(fp32_onnx, fp16_onnx, network)
    if not report.passed:
        raise BuildError(f"{report}: the FP16 model does not detect and describe like the FP32 one, so no engine "
                         "was written. Build fp32, or pass --no-gate to build it anyway")
    return report
