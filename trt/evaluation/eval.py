"""Accuracy of the matcher against ground truth on the shared data, per weights, precision and backend.

    python bench/eval.py                                   # preset "standard" (20 pairs), out/eval/
    python bench/eval.py --preset smoke --output-dir /tmp/eval

Runs, per extractor (SIFT, and learned ones asked for, such as ALIKED): the hand-set nearest-neighbour
weights always, and the trained weights when ``weights/<extractor>_lightglue.pth`` (or, for SIFT,
``--weights``) is the official file; each as the FP32 ONNX and its mixed-FP16 variant (``trt.onnx.fp16``),
on ONNX Runtime through ``Matcher``, and as TensorRT engines where a CUDA GPU, TensorRT and pycuda
exist. Exports and engines are cached in ``models_dir`` and reused. Features are extracted once per
image and extractor (the preset's ``max_num_keypoints`` and ``resize``), so every run of an extractor
matches the same features: SIFT on the host, a learned extractor as its FP32 ONNX (the official
checkpoint, from ``weights/`` or the shared data) on ONNX Runtime through ``trt.runtime.learned_extractor``.

Metrics (``trt.evaluation.metrics``), per dataset:

* homography (HPatches v_graffiti): match precision at 3 px under the true homography; mean and
  median corner error of the RANSAC homography fitted to the matches (the mean over the pairs where
  one was found; ``failed`` counts the others); AUC of the corner error at 1/3/5 px;
* similarity (rotated/scaled Sacre-Coeur): precision at 3 px under the true similarity; rotation error
  (degrees) and relative scale error of the similarity fitted with RANSAC; ``failed`` as above.

Writes ``eval-<preset>.json`` (summaries and per-pair records) and one picture per dataset,
``matches-<dataset>.png``: its first pair, matched by the first run (the trained weights' where they
are here), lines green where the match is within 3 px of the ground truth and red elsewhere. With
several extractors, a table puts them side by side (``format_comparison``).

The hand-set nearest-neighbour weights make the transformer the identity, so their FP16 variant gives
the same matches as FP32; only the trained weights test what FP16 costs in accuracy.
"""

import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from trt.errors import UserError
from trt.evaluation.runs import (
    MatcherWeights,
    cached_engine,
    cached_extractor_onnx,
    cached_onnx,
    machine_info,
    official_extractor_weights,
    trained_weights,
    write_json,
)
from trt.evaluation.datasets import Dataset, Pair, get_preset, load_datasets
from trt.evaluation.metrics import (
    AUC_THRESHOLDS_PX,
    PRECISION_THRESHOLD_PX,
    corner_error,
    cumulative_auc,
    estimate_similarity,
    match_precision,
    similarity_errors,
    transfer_errors,
)
from trt.extractors import get_extractor, get_network
from trt.runtime.adaptive import DEFAULT_DEPTH_CONFIDENCE, DEFAULT_WIDTH_CONFIDENCE, AdaptiveSettings

OUTPUT_DIR = Path("out/eval")
BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")
# What each backend can run: FP16 is a graph variant (ONNX Runtime) or an engine (TensorRT); bf16 is
# OpenVINO's mixed policy (trt.runtime.openvino_session), fp32 its f32.
BACKEND_PRECISIONS = {"onnxruntime": ("fp32", "fp16"), "openvino": ("fp32", "bf16"), "tensorrt": ("fp32", "fp16")}
# Adaptive depth and width (docs/adaptive.md) beside full depth on the CPU backends (TensorRT would need the
# stage engines built): FP32, and bf16 on OpenVINO, judged against f32 by the stages' own bf16 gate (which
# serving requires) and ``adaptive_precision`` (stop-layer agreement and match IoU).
ADAPTIVE_BACKENDS = ("onnxruntime", "openvino")
ADAPTIVE_PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class Run:
    weights: MatcherWeights
    precision: str
    backend: str
    extractor: str = "sift"
    adaptive: Optional[AdaptiveSettings] = None  # served from the stages with these settings; None: full depth

    @property
    def name(self) -> str:
        return f"{self.extractor}-{self.weights.tag}-{self.precision}-{self.backend}" + ("-adaptive" if self.adaptive else "")


# -- metrics of one pair and of a dataset ------------------------------------------------------------------


def pair_metrics(pair: Pair, result) -> dict:
    """Metrics of one pair's ``MatchResult`` (see the module docstring); errors of matches included."""
    points0 = result.keypoints0[result.matches[:, 0]]
    points1 = result.keypoints1[result.matches[:, 1]]
    errors = transfer_errors(points0, points1, pair.ground_truth(result.image_size0))
    record = {"pair": pair.name, "keypoints": [len(result.keypoints0), len(result.keypoints1)],
              "matches": len(result.matches), "precision": match_precision(errors), "layers": result.layers,
              "pruned": result.pruned0 + result.pruned1}
    if pair.kind == "homography":
        record["corner_error_px"] = corner_error(points0, points1, pair.homography, result.image_size0)
    else:
        rotation, scale = similarity_errors(estimate_similarity(points0, points1), pair.angle_deg, pair.scale)
        record.update(rotation_error_deg=rotation, scale_error=scale)
    return record


def _finite_mean(values: Sequence[float]) -> Optional[float]:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def dataset_summary(kind: str, pairs: list[dict]) -> dict:
    summary = {"pairs": len(pairs), "matches_mean": float(np.mean([p["matches"] for p in pairs])),
               "precision_mean": float(np.mean([p["precision"] for p in pairs])),
               "layers_mean": float(np.mean([p["layers"] for p in pairs]))}
    if kind == "homography":
        errors = [p["corner_error_px"] for p in pairs]
        summary.update(
            corner_error_mean_px=_finite_mean(errors),
            corner_error_median_px=float(np.median(errors)),
            failed=int(sum(not np.isfinite(e) for e in errors)),
            auc={f"{t:g}px": v for t, v in zip(AUC_THRESHOLDS_PX, cumulative_auc(errors, AUC_THRESHOLDS_PX))},
        )
    else:
        rotation = [p["rotation_error_deg"] for p in pairs]
        scale = [p["scale_error"] for p in pairs]
        summary.update(
            rotation_error_median_deg=float(np.median(rotation)), rotation_error_mean_deg=_finite_mean(rotation),
            scale_error_median=float(np.median(scale)), scale_error_mean=_finite_mean(scale),
            failed=int(sum(not np.isfinite(e) for e in rotation)),
        )
    return summary


# -- runs ------------------------------------------------------------------------------------------------


def plan_runs(weights: list[MatcherWeights], precisions: Sequence[str], backends: Sequence[str],
              extractor: str = "sift", adaptive: Optional[AdaptiveSettings] = None) -> list[Run]:
    """Every (weights, precision, backend) asked for that the backend can run, for ``extractor``'s features;
    with ``adaptive`` (not full depth), also the trained weights in FP32 on ONNX Runtime and OpenVINO served
    from their stages with adaptive depth and width, each after its full-depth run."""
    for precision in precisions:
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    for backend in backends:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    runs = []
    for w in weights:
        for b in backends:
            for p in precisions:
                if p in BACKEND_PRECISIONS[b]:
                    runs.append(Run(w, p, b, extractor))
                    if adaptive is not None and not adaptive.full_depth and w.kind == "official" \
                            and p in ADAPTIVE_PRECISIONS and b in ADAPTIVE_BACKENDS:
                        runs.append(Run(w, p, b, extractor, adaptive))
    return runs


def open_matcher(run: Run, models_dir: Path, overwrite: bool):
    """A ``Matcher`` for the run: ONNX Runtime on the (FP32 or FP16) ONNX, OpenVINO on the FP32 ONNX (in f32
    or mixed bf16), or TensorRT on an engine."""
    from trt.runtime.matcher import Matcher
    from trt.runtime.onnxruntime_session import OnnxRuntimeSession
    from trt.runtime.openvino_session import OpenVINOSession

    if run.adaptive is not None:
        from trt.runtime.adaptive import StagedMatcherSession
        from trt.runtime.matcher import cpu_session, openvino_cache_dir
        from trt.stages import stages_folder

        onnx = cached_onnx(models_dir, run.extractor, run.weights, "fp32", overwrite, stages=True)
        precision = {"fp32": "f32", "bf16": "bf16"}[run.precision] if run.backend == "openvino" else "auto"

        def open_stage(path: Path, profiles):
            return cpu_session(run.backend, path, profiles, openvino_cache_dir(onnx), None, precision, "latency",
                               stage=True)

        staged = StagedMatcherSession(stages_folder(onnx), open_stage, run.adaptive)
        return Matcher(staged, extractor=run.extractor, summary={"onnx": str(onnx)})
    if run.backend == "onnxruntime":
        onnx = cached_onnx(models_dir, run.extractor, run.weights, run.precision, overwrite)
        return Matcher(OnnxRuntimeSession(onnx), extractor=run.extractor, summary={"onnx": str(onnx)})
    onnx = cached_onnx(models_dir, run.extractor, run.weights, "fp32", overwrite)
    if run.backend == "openvino":
        session = OpenVINOSession(onnx, precision="f32" if run.precision == "fp32" else run.precision)
        return Matcher(session, extractor=run.extractor, summary={"onnx": str(onnx)})
    return Matcher.from_engine(cached_engine(onnx, run.precision, overwrite), backend="tensorrt")


def extract_all(datasets: list[Dataset], preset: dict, extractor: str = "sift", models_dir: Optional[Path] = None,
                data_dir: Optional[Path] = None, overwrite: bool = False) -> tuple[dict, dict]:
    """Features of every image of the preset, once each: ({path: Features}, what made them). SIFT on the
    host; a learned extractor's official checkpoint (``official_extractor_weights``) as ONNX on ONNX Runtime."""
    from trt.features.image import read_image

    paths = list(dict.fromkeys(path for dataset in datasets for pair in dataset.pairs for path in (pair.image0, pair.image1)))
    if extractor == "sift":
        from trt.features.sift import SIFT

        sift = SIFT(max_num_keypoints=preset["max_num_keypoints"], resize=preset["resize"])
        return {path: sift(read_image(path)) for path in paths}, {"extractor": "sift", "front_end": "OpenCV SIFT"}
    from trt.runtime.learned_extractor import LearnedExtractor
    from trt.runtime.onnxruntime_session import OnnxRuntimeSession

    network = get_network(extractor)
    weights = official_extractor_weights(network, data_dir)
    if weights is None:
        raise UserError(f"no official {network.weights_filename} in weights/ or {data_dir}/aliked: {extractor} is evaluated "
                        f"with its trained network only (download {network.weights_url})")
    onnx = cached_extractor_onnx(models_dir, weights, overwrite)
    with OnnxRuntimeSession(onnx) as runner:
        front_end = LearnedExtractor(runner, resize=preset["resize"], max_num_keypoints=preset["max_num_keypoints"])
        extracted = front_end.extract_batch([read_image(path) for path in paths], [str(path) for path in paths])
    made = {"extractor": extractor, "network": network.name, "weights": weights.path.name, "onnx": onnx}
    return {path: features for path, (features, _) in zip(paths, extracted)}, made


def evaluate_matcher(matcher, datasets: list[Dataset], features: dict) -> tuple[dict, dict]:
    """({dataset name: record}, {dataset name: [MatchResult per pair]}) of one matcher on the datasets."""
    records, results = {}, {}
    for dataset in datasets:
        started = time.perf_counter()
        matched = matcher.match_pairs([(features[p.image0], features[p.image1]) for p in dataset.pairs])
        seconds = time.perf_counter() - started
        pairs = [pair_metrics(pair, result) for pair, result in zip(dataset.pairs, matched)]
        records[dataset.name] = {"kind": dataset.kind, "match_seconds": seconds,
                                 "summary": dataset_summary(dataset.kind, pairs), "pairs": pairs}
        results[dataset.name] = matched
    return records, results


def evaluate_run(run: Run, datasets: list[Dataset], features: dict, models_dir: Path,
                 overwrite: bool) -> tuple[dict, dict]:
    """(record of the run, {dataset name: [MatchResult per pair]}) for one run."""
    record = {"run": run.name, "weights": run.weights.kind, "precision": run.precision, "backend": run.backend,
              "adaptive": dataclasses.asdict(run.adaptive) if run.adaptive is not None else None}
    with open_matcher(run, models_dir, overwrite) as matcher:
        record["model"] = matcher.summary
        record["datasets"], results = evaluate_matcher(matcher, datasets, features)
    return record, results


class KorniaAnchor:
    """cvg's pipeline in kornia, the anchor row of a learned extractor: kornia's ALIKED or DISK and kornia's
    LightGlue at full depth (as our graph is), each with the same official file as ours, the image handled as
    cvg's ``Extractor.extract`` does (RGB in [0, 1], long side resized with antialiasing, keypoints mapped back
    to original pixels). ``features(paths)`` and ``match_pairs(pairs)`` mirror ``extract_all`` and ``Matcher``."""

    def __init__(self, extractor: str, preset: dict, data_dir: Optional[Path]) -> None:
        from trt.contract import DEFAULT_THRESHOLD
        from trt.evaluation.kornia_reference import kornia_reference
        from trt.evaluation.kornia_reference import kornia_extractor
        from trt.models.weights import read_checkpoint

        network = get_network(extractor)
        network_weights = official_extractor_weights(network, data_dir)
        matcher_weights, _ = trained_weights(get_extractor(extractor))
        if network_weights is None or matcher_weights is None:
            raise UserError(f"the kornia anchor of {extractor} needs its official network and LightGlue files")
        self.preset = preset
        self.network = kornia_extractor(network, read_checkpoint(network_weights.path, network.checkpoint_key))
        self.matcher = kornia_reference(get_extractor(extractor), read_checkpoint(matcher_weights.path),
                                        threshold=DEFAULT_THRESHOLD)
        self.summary = {"anchor": f"kornia {type(self.matcher).__name__} + kornia {network.name}",
                        "weights": [str(network_weights.path), str(matcher_weights.path)]}

    def features(self, paths: list[Path]) -> dict:
        import torch
        from kornia.geometry.transform import resize

        from trt.features.base import Features
        from trt.features.image import read_image

        features = {}
        for path in paths:
            image = read_image(path)
            image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
            tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
            height, width = tensor.shape[-2:]
            tensor = resize(tensor, self.preset["resize"], side="long", antialias=True)
            scale = torch.tensor([tensor.shape[-1] / width, tensor.shape[-2] / height])
            with torch.inference_mode():
                (found,) = self.network(tensor)
            scores = found.detection_scores if hasattr(found, "detection_scores") else found.keypoint_scores  # DISK, ALIKED
            order = torch.argsort(scores, descending=True)[: self.preset["max_num_keypoints"]]
            keypoints = (found.keypoints[order] + 0.5) / scale - 0.5
            features[path] = Features(keypoints.numpy().astype(np.float32), found.descriptors[order].numpy(),
                                      (float(width), float(height)))
        return features

    def match_pairs(self, pairs: list) -> list:
        import torch

        from trt.runtime.matcher import result_from_outputs

        results = []
        for f0, f1 in pairs:
            data = {f"image{i}": {"keypoints": torch.from_numpy(f.keypoints)[None],
                                  "descriptors": torch.from_numpy(f.descriptors)[None],
                                  "image_size": torch.tensor([f.image_size])} for i, f in enumerate((f0, f1))}
            with torch.inference_mode():
                out = self.matcher(data)
            results.append(result_from_outputs(f0, f1, out["matches0"][0].numpy(), out["matching_scores0"][0].numpy(),
                                               out["matches1"][0].numpy()))
        return results


def evaluate_anchor(extractor: str, datasets: list[Dataset], preset: dict, data_dir: Optional[Path]) -> dict:
    """The record of the kornia anchor run of a learned extractor (``KorniaAnchor``), shaped like a run's."""
    anchor = KorniaAnchor(extractor, preset, data_dir)
    paths = list(dict.fromkeys(path for dataset in datasets for pair in dataset.pairs for path in (pair.image0, pair.image1)))
    records, _ = evaluate_matcher(anchor, datasets, anchor.features(paths))
    return {"run": f"{extractor}-kornia-anchor", "weights": "official", "precision": "fp32", "backend": "kornia",
            "model": anchor.summary, "datasets": records}


def draw_correctness(pair: Pair, result, path: Path) -> Path:
    """Matches of ``pair`` as lines, green within 3 px of the ground truth and red elsewhere (PNG)."""
    from trt.features.image import read_image
    from trt.fileio import write_bytes_atomic
    from trt.runtime.outputs import draw_matches, encode_picture

    points0 = result.keypoints0[result.matches[:, 0]]
    points1 = result.keypoints1[result.matches[:, 1]]
    errors = transfer_errors(points0, points1, pair.ground_truth(result.image_size0))
    coloured = dataclasses.replace(result, scores=(errors < PRECISION_THRESHOLD_PX).astype(np.float32))
    canvas = draw_matches(read_image(pair.image0), read_image(pair.image1), coloured)
    return write_bytes_atomic(path, encode_picture(canvas, path))


def bf16_gates(results: dict, datasets: list[Dataset], preset: dict, models_dir: Path) -> list[dict]:
    """The bf16 gate (``trt.evaluation.bf16_gate``) of every weights evaluated on OpenVINO in f32 and bf16;
    ``results``: {run: ({dataset name: record}, {dataset name: [MatchResult]})}.

    On the full ("standard") preset each record is also written beside its model, where OpenVINO's
    precision "auto" finds it.
    """
    from trt.evaluation.bf16_record import gate_record, write_record
    from trt.runtime.openvino_session import GATE_PRESET

    from trt.stages import MANIFEST_NAME, stages_folder

    gates = []
    for run in results:
        bf16 = Run(run.weights, "bf16", "openvino", run.extractor, run.adaptive)
        if run.backend != "openvino" or run.precision != "fp32" or bf16 not in results:
            continue
        onnx = cached_onnx(models_dir, run.extractor, run.weights)
        # The adaptive stages get their own record, for the stages manifest (whose sha256 covers every stage).
        judged = stages_folder(onnx) / MANIFEST_NAME if run.adaptive is not None else onnx
        record = gate_record(judged, preset["name"], datasets, results[run], results[bf16])
        if preset["name"] == GATE_PRESET:
            record["file"] = write_record(record)
        gates.append({"extractor": run.extractor, "weights": run.weights.tag + (" adaptive" if run.adaptive else ""),
                      **record})
    return gates


# -- report ------------------------------------------------------------------------------------------------


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_comparison(record: dict) -> Optional[str]:
    """The extractors side by side, one column each, for the runs they share (weights, precision, backend);
    None with a single extractor."""
    extractors = [made["extractor"] for made in record["extractors"]]
    if len(extractors) < 2:
        return None
    runs = {run["run"]: run for run in record["runs"]}
    shared = [name.split("-", 1)[1] for name in runs if name.startswith(f"{extractors[0]}-")
              and all(f"{e}-{name.split('-', 1)[1]}" in runs for e in extractors)]
    lines = []
    for setting in shared:
        lines.append(f"side by side ({setting}): {' | '.join(extractors)}")
        for dataset in record["datasets"]:
            summaries = [runs[f"{e}-{setting}"]["datasets"][dataset["name"]]["summary"] for e in extractors]
            cells = []
            for s in summaries:
                geometry = (f"corner med {_num(s['corner_error_median_px'])} px, AUC@3px {s['auc']['3px']:.2f}"
                            if dataset["kind"] == "homography" else
                            f"rot med {_num(s['rotation_error_median_deg'], 3)} deg, fail {s['failed']}")
                cells.append(f"{s['matches_mean']:.0f} matches, P@3px {s['precision_mean']:.2f}, {geometry}")
            lines.append(f"  {dataset['name']:<18} " + " | ".join(cells))
    return "\n".join(lines)


def adaptive_precision(results: dict) -> list[dict]:
    """Reduced precision on the adaptive stages against f32 (OpenVINO bf16; rounding moves stop decisions):
    per weights and dataset, the share of pairs that stop at the same layer and the pooled match-set IoU;
    ``results``: {run: ({dataset name: record}, {dataset name: [MatchResult]})}."""
    from trt.evaluation.bf16_record import match_set_iou

    figures = []
    for run, (_, matched) in results.items():
        reference = dataclasses.replace(run, precision="fp32")
        if run.adaptive is None or run.precision == "fp32" or reference not in results:
            continue
        for dataset, candidate in matched.items():
            expected = results[reference][1][dataset]
            iou, _, _ = match_set_iou(expected, candidate)
            same = float(np.mean([a.layers == b.layers for a, b in zip(expected, candidate)]))
            figures.append({"run": run.name, "dataset": dataset, "stop_layer_agreement": same, "iou": iou})
    return figures


def format_adaptive(record: dict) -> list[str]:
    """Per adaptive run and dataset: layers run on average, and its matching time against its full-depth run's."""
    runs = {run["run"]: run for run in record["runs"]}
    lines = []
    for name, run in runs.items():
        full = runs.get(name.removesuffix("-adaptive"))
        if not run.get("adaptive") or full is None:
            continue
        for dataset, result in run["datasets"].items():
            ratio = full["datasets"][dataset]["match_seconds"] / result["match_seconds"]
            lines.append(f"adaptive {name.removesuffix('-adaptive')} on {dataset}: "
                         f"{result['summary']['layers_mean']:.1f} layers on average, {ratio:.2f}x faster than full depth "
                         f"({result['match_seconds']:.1f} s against {full['datasets'][dataset]['match_seconds']:.1f} s)")
    for figure in record.get("adaptive_precision", []):
        lines.append(f"{figure['run']} against f32 on {figure['dataset']}: {figure['stop_layer_agreement']:.0%} of "
                     f"pairs stop at the same layer, match IoU {figure['iou']:.3f}")
    return lines


def format_table(record: dict) -> str:
    lines = []
    for dataset in record["datasets"]:
        name, kind, count = dataset["name"], dataset["kind"], len(dataset["pairs"])
        lines.append(f"{name} ({kind}, {count} pair{'s' * (count != 1)})")
        if kind == "homography":
            lines.append(f"  {'run':<34} {'matches':>7} {'P@3px':>6} {'corner mean/med px':>19} {'fail':>4} "
                         f"{'AUC@1/3/5px':>16}")
        else:
            lines.append(f"  {'run':<34} {'matches':>7} {'P@3px':>6} {'rot med/mean deg':>17} "
                         f"{'scale med/mean':>15} {'fail':>4}")
        for run in record["runs"]:
            s = run["datasets"][name]["summary"]
            head = f"  {run['run']:<34} {s['matches_mean']:>7.1f} {s['precision_mean']:>6.3f}"
            if kind == "homography":
                corner = f"{_num(s['corner_error_mean_px'])}/{_num(s['corner_error_median_px'])}"
                auc = "/".join(f"{v:.2f}" for v in s["auc"].values())
                lines.append(f"{head} {corner:>19} {s['failed']:>4} {auc:>16}")
            else:
                rotation = f"{_num(s['rotation_error_median_deg'], 3)}/{_num(s['rotation_error_mean_deg'], 3)}"
                scale = f"{_num(s['scale_error_median'], 4)}/{_num(s['scale_error_mean'], 4)}"
                lines.append(f"{head} {rotation:>17} {scale:>15} {s['failed']:>4}")
    lines += format_adaptive(record)
    for gate in record["bf16_gates"]:
        verdict = "passed" if gate["passed"] else "FAILED"
        lines.append(f"bf16 gate, {gate['extractor']} {gate['weights']} weights: {verdict}: {gate['summary']}")
    comparison = format_comparison(record)
    lines += [comparison] if comparison else []
    lines += [f"note: {note}" for note in record["notes"]]
    return "\n".join(lines)


# -- the step ----------------------------------------------------------------------------------------------


def main(conf="standard", data_dir: Optional[Path] = None, output_dir: Path = OUTPUT_DIR,
         weights: Optional[Path] = None, models_dir: Optional[Path] = None, precisions: Sequence[str] = PRECISIONS,
         backends: Optional[Sequence[str]] = None, overwrite: bool = False,
         extractors: Sequence[str] = ("sift",), anchor: bool = False, depth_confidence: Optional[float] = None,
         width_confidence: Optional[float] = None) -> Path:
    """Evaluate preset ``conf`` (a name, or a dict like ``datasets.PRESETS``'s); write
    ``eval-<name>.json`` and ``matches-<dataset>.png`` into ``output_dir``; return the JSON's path.

    ``data_dir``: the shared data (default ``shared_data_dir()``); ``weights``: trained SIFT weights (default:
    ``weights/sift_lightglue.pth`` when official); ``models_dir``: export cache (default
    ``output_dir/models``); ``backends``: default ONNX Runtime, plus TensorRT where it can run;
    ``extractors``: feature types to evaluate, side by side (SIFT and the learned ones with a network).
    ``anchor``: also run cvg's pipeline in kornia for each learned extractor with trained weights (``KorniaAnchor``);
    ``depth_confidence``, ``width_confidence``: adaptive depth and width of the trained weights' runs beside
    full depth (None: the reference's 0.95 / 0.99; -1 for both: no adaptive runs).
    """
    from trt.datasets import shared_data_dir
    from trt.runtime.onnxruntime_session import physical_cores
    from trt.runtime.openvino_session import openvino_unavailable
    from trt.runtime.tensorrt_engine import tensorrt_unavailable

    preset = get_preset(conf) if isinstance(conf, str) else conf
    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir()
    output_dir = Path(output_dir)
    models_dir = Path(models_dir) if models_dir is not None else output_dir / "models"
    datasets = load_datasets(preset, data_dir)
    for extractor in extractors:
        if extractor != "sift":
            get_network(extractor)  # an unknown or host-only feature type is refused before any work
    notes = []
    unavailable = {"tensorrt": tensorrt_unavailable(None), "openvino": openvino_unavailable()}
    if backends is None:
        backends = [b for b in BACKENDS if not unavailable.get(b)]
        notes += [f"{name} runs skipped: {reason}" for name, reason in unavailable.items() if reason]
    for backend in backends:
        if unavailable.get(backend):
            raise UserError(f"cannot evaluate on {backend} here: {unavailable[backend]}")
    adaptive = AdaptiveSettings(*(default if value is None else value for value, default in
                                  ((depth_confidence, DEFAULT_DEPTH_CONFIDENCE), (width_confidence, DEFAULT_WIDTH_CONFIDENCE))))
    runs, features, made = [], {}, []
    for extractor in dict.fromkeys(extractors):
        trained, weights_note = trained_weights(get_extractor(extractor), weights if extractor == "sift" else None)
        notes.append(f"{extractor}: {weights_note}")
        # The trained weights first where present: the pictures show the first run's matches. The sharp test
        # weights (the bf16 gate's) for SIFT; a learned extractor with the nearest-neighbour weights.
        sharp = [MatcherWeights.sharp()] if extractor == "sift" else []
        runs += plan_runs(([trained] if trained else []) + sharp + [MatcherWeights.nearest_neighbour()], precisions,
                          backends, extractor, adaptive)
        started = time.perf_counter()
        features[extractor], source = extract_all(datasets, preset, extractor, models_dir, data_dir, overwrite)
        made.append(source)
        print(f"{extractor} features of {len(features[extractor])} images in {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)
    records, results = [], {}
    for run in runs:
        started = time.perf_counter()
        try:
            record, matched = evaluate_run(run, datasets, features[run.extractor], models_dir, overwrite)
        except UserError as error:
            if run.backend == "onnxruntime":
                raise
            # an engine this GPU's TensorRT cannot build or load, or bf16 on a CPU without it
            notes.append(f"{run.name} skipped: {error}")
            continue
        records.append(record)
        results[run] = (record["datasets"], matched)
        print(f"{run.name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    if not records:
        raise UserError("no run could be evaluated: " + "; ".join(notes))
    for extractor in dict.fromkeys(extractors) if anchor else ():
        if extractor == "sift" or get_network(extractor).feature not in ("aliked", "disk"):
            continue  # kornia has no SuperPoint; SIFT's anchor is the test_parity suite
        if trained_weights(get_extractor(extractor))[0] is None:
            notes.append(f"{extractor}-kornia-anchor skipped: no trained {extractor} LightGlue file")
            continue
        started = time.perf_counter()
        records.append(evaluate_anchor(extractor, datasets, preset, data_dir))
        print(f"{records[-1]['run']}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    gates = bf16_gates(results, datasets, preset, models_dir)
    pictures = results[next(run for run in runs if run in results)][1]
    picture_paths = {}
    for dataset in datasets:
        path = output_dir / f"matches-{dataset.name}.png"
        picture_paths[dataset.name] = draw_correctness(dataset.pairs[0], pictures[dataset.name][0], path)
    record = {
        "preset": preset,
        "extractors": made,
        "machine": machine_info(physical_cores()),
        "datasets": [{"name": d.name, "kind": d.kind, "pairs": [p.name for p in d.pairs]} for d in datasets],
        "thresholds": {"precision_px": PRECISION_THRESHOLD_PX, "auc_px": list(AUC_THRESHOLDS_PX)},
        "runs": records,
        "bf16_gates": gates,
        "adaptive_precision": adaptive_precision(results),
        "pictures": {"run": records[0]["run"], "files": picture_paths},
        "notes": notes,
    }
    path = write_json(output_dir / f"eval-{preset['name']}.json", record)
    print(format_table(record))
    return path
