"""The bf16 accuracy gate: OpenVINO's mixed bf16 must give the geometry f32 gives, on real pairs.

Exact match identity is the wrong bar for bf16: its 8-bit mantissa reshuffles a share of the matches
wherever the attention is peaked (torch's bf16 autocast on the transformer alone does the same), while
what a user takes from the matches, the geometry, stays. So the gate runs one model on OpenVINO in f32
and in mixed bf16 (``trt.runtime.openvino_session``) over the datasets of an evaluation preset (``make
eval``'s "standard": HPatches v_graffiti 1→2…1→6, rotated and scaled Sacre-Coeur), at the threshold
users run (0.1), and passes when on every dataset

* precision at 3 px is no more than ``MAX_PRECISION_DELTA`` below f32's,
* the AUC of the corner error at 5 px (homography datasets) is no more than ``MAX_AUC_DELTA`` below f32's,
* the match-set IoU against f32, pooled over the dataset's pairs, is at least ``MIN_IOU``.

The geometry must be as good as f32's: a bf16 run that does better is not refused (the deltas are
recorded with their signs). The AUC is the noisiest of the three: on pairs with few correct matches a
2 % change of the match set moves a RANSAC corner error by several pixels (measured on v_graffiti 1→3
and 1→4 with the sharp test weights), and a 5-pair AUC at 5 px by a few hundredths.

The record (figures, verdict, the ONNX's sha256, the bf16 policy, the preset, the CPU;
``trt.evaluation.bf16_record``) is written beside the ONNX as ``X.bf16-gate.json``; OpenVINO's precision "auto" reads it
(``trt.runtime.openvino_session.bf16_gate_verdict``), and trusts it only for the full preset.
"""

import sys
import time
from pathlib import Path
from typing import Optional

from trt.errors import UserError
from trt.evaluation.bf16_record import THRESHOLD, gate_record, write_record
from trt.evaluation.datasets import get_preset, load_datasets
from trt.evaluation.eval import evaluate_matcher, extract_all
from trt.runtime.openvino_session import GATE_PRESET, OpenVINOSession, openvino_unavailable


def run_gate(onnx_path: Path, preset: dict, data_dir: Path, features: Optional[dict] = None,
             threads: Optional[int] = None) -> dict:
    """The gate's record for the model at ``onnx_path`` (see the module docstring); nothing is written.

    ``features``: features of the preset's images of the model's extractor (``eval.extract_all``: SIFT, or the
    learned network's official checkpoint, exported beside the model), extracted when None.
    """
    import onnx

    from trt.onnx.export import read_metadata
    from trt.runtime.cpu import cpu_info
    from trt.runtime.matcher import Matcher

    reason = openvino_unavailable() or cpu_info().bf16_unsupported()
    if reason:
        raise UserError(f"the bf16 gate needs OpenVINO on a bf16-capable CPU: {reason}")
    extractor = read_metadata(onnx.load(str(onnx_path), load_external_data=False)).get("extractor", "sift")
    datasets = load_datasets(preset, data_dir)
    if features is None:
        features = extract_all(datasets, preset, extractor, models_dir=Path(onnx_path).parent, data_dir=data_dir)[0]
    runs = {}
    for precision in ("f32", "bf16"):
        started = time.perf_counter()
        session = OpenVINOSession(onnx_path, precision=precision, threads=threads)
        with Matcher(session, threshold=THRESHOLD, extractor=extractor) as matcher:
            runs[precision] = evaluate_matcher(matcher, datasets, features)
        print(f"bf16 gate: {precision} on {len(features)} images in {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)
    return gate_record(onnx_path, preset["name"], datasets, runs["f32"], runs["bf16"])


def main(onnx: Path, preset: str = GATE_PRESET, data_dir: Optional[Path] = None) -> Path:
    """Run the gate for ``onnx`` on an evaluation preset and write its record; return the record's path."""
    from trt.datasets import shared_data_dir

    onnx = Path(onnx)
    if not onnx.is_file():
        raise UserError(f"no ONNX model at {onnx}")
    record = run_gate(onnx, get_preset(preset), Path(data_dir) if data_dir is not None else shared_data_dir())
    path = write_record(record)
    print(f"bf16 gate {'PASSED' if record['passed'] else 'FAILED'} for {onnx.name}: {record['summary']}")
    return path
