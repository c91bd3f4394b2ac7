"""The bf16 gate's criteria and its record: what ``trt.evaluation.bf16_gate`` decides, and the
``X.bf16-gate.json`` it writes beside the ONNX (read back by ``trt.runtime.openvino_session``).

Shared by the gate's own run (``bf16_gate.run_gate``) and by ``make eval`` (``trt.evaluation.eval``),
which evaluates f32 and bf16 anyway and records the gate from those figures.
"""

import json
from datetime import datetime, timezone
from pathlib import Path

from trt.fileio import sha256_file, write_text_atomic
from trt.runtime.openvino_session import BF16_POLICY, bf16_gate_path

MAX_PRECISION_DELTA = 0.01
MAX_AUC_DELTA = 0.01
MIN_IOU = 0.85
THRESHOLD = 0.1
AUC_KEY = "5px"


def match_set_iou(reference: list, candidate: list) -> tuple[float, int, int]:
    """(IoU, reference matches, candidate matches) of two lists of MatchResult for the same pairs, pooled."""
    shared = count_reference = count_candidate = 0
    for a, b in zip(reference, candidate):
        ours = {tuple(m) for m in a.matches.tolist()}
        theirs = {tuple(m) for m in b.matches.tolist()}
        shared += len(ours & theirs)
        count_reference += len(ours)
        count_candidate += len(theirs)
    union = count_reference + count_candidate - shared
    return (shared / union if union else 1.0), count_reference, count_candidate


def compare_dataset(kind: str, reference_summary: dict, candidate_summary: dict, reference: list,
                    candidate: list) -> dict:
    """The gate's figures for one dataset, each with its verdict."""
    iou, count_reference, count_candidate = match_set_iou(reference, candidate)
    figures = {
        "iou": iou, "matches_f32": count_reference, "matches_bf16": count_candidate,
        "precision_f32": reference_summary["precision_mean"], "precision_bf16": candidate_summary["precision_mean"],
    }
    figures["precision_delta"] = figures["precision_bf16"] - figures["precision_f32"]
    checks = [iou >= MIN_IOU, figures["precision_delta"] >= -MAX_PRECISION_DELTA]
    if kind == "homography":
        figures["auc5_f32"] = reference_summary["auc"][AUC_KEY]
        figures["auc5_bf16"] = candidate_summary["auc"][AUC_KEY]
        figures["auc5_delta"] = figures["auc5_bf16"] - figures["auc5_f32"]
        checks.append(figures["auc5_delta"] >= -MAX_AUC_DELTA)
    figures["passed"] = all(checks)
    return figures


def summarize(datasets: dict) -> str:
    """One line: every dataset's IoU, precision delta and AUC@5px delta."""
    parts = []
    for name, f in datasets.items():
        text = f"{name} IoU {f['iou']:.3f}, ΔP@3px {f['precision_delta']:+.3f}"
        if "auc5_delta" in f:
            text += f", ΔAUC@5px {f['auc5_delta']:+.3f}"
        parts.append(text)
    return "; ".join(parts) + (f" (gate: IoU >= {MIN_IOU}, ΔP@3px >= -{MAX_PRECISION_DELTA}, "
                               f"ΔAUC@5px >= -{MAX_AUC_DELTA})")


def gate_record(onnx_path: Path, preset_name: str, datasets: list, f32: tuple[dict, dict],
                bf16: tuple[dict, dict]) -> dict:
    """The gate's record from the two evaluations (``eval.evaluate_matcher``'s (records, results)) of
    ``onnx_path`` on ``datasets``: figures per dataset, verdict, and what they speak for."""
    from trt.runtime.cpu import cpu_info

    (records32, results32), (records16, results16) = f32, bf16
    figures = {d.name: compare_dataset(d.kind, records32[d.name]["summary"], records16[d.name]["summary"],
                                       results32[d.name], results16[d.name]) for d in datasets}
    return {
        "gate": "bf16",
        "onnx": str(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "policy": BF16_POLICY,
        "preset": preset_name,
        "threshold": THRESHOLD,
        "limits": {"min_iou": MIN_IOU, "max_precision_drop": MAX_PRECISION_DELTA, "max_auc5_drop": MAX_AUC_DELTA},
        "datasets": figures,
        "passed": all(f["passed"] for f in figures.values()),
        "summary": summarize(figures),
        "cpu": {"model": cpu_info().model, "bf16_unit": cpu_info().bf16_unit()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_record(record: dict) -> Path:
    """Write the record beside its ONNX (atomically) and return the path."""
    return write_text_atomic(bf16_gate_path(Path(record["onnx"])), json.dumps(record, indent=1) + "\n")
