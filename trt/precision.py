"""One policy for reduced precision in the matcher graph: FP16 on TensorRT, bf16 on OpenVINO.

The transformer layers and the input projection (nodes named under ``REDUCED_SCOPES``: where the time
goes) run in the reduced precision. Keypoint normalisation, the positional encoding, the assignment
with its two log-softmaxes, matchability and the match filtering stay float32: pixel coordinates, the
arguments of cos/sin, and log-sum-exps over thousands of entries lose too many digits. So do the
LayerNorms inside the region (``KEPT_FP32``), whose variance of 512 trained activations overflows
FP16 and loses digits in bf16.

An extractor graph names its own region in its metadata (``SCOPES_KEY``, a JSON list of node-name
prefixes: the dense encoder); its detection, coordinates and descriptor sampling stay float32, and so do
DISK's InstanceNormalizations (a variance over a whole feature map).

Both graph rewriters read this module: ``trt.onnx.fp16`` (an FP16 variant of the ONNX, export side)
and ``trt.runtime.openvino_session`` (a bf16 variant of OpenVINO's model, serving side); node names are
the exported ONNX's (OpenVINO keeps them as friendly names).
"""

import json

# Precision names: builds say fp32/fp16 (TensorRT's words), serving on OpenVINO says f32/bf16 (OpenVINO's).
# Each side takes the other's spelling of the same precision too.
BUILD_PRECISION_ALIASES = {"f32": "fp32", "f16": "fp16"}
SERVE_PRECISION_ALIASES = {"fp32": "f32"}


def canonical_precision(value: str, aliases: dict) -> str:
    """``value`` under its side's own spelling (``aliases``: one of the tables above); unknown values pass
    through unchanged, for the caller's check to refuse with its list of choices."""
    return aliases.get(value, value)

REDUCED_SCOPES = ("/transformers.", "/input_proj")
# Inside the region, nodes whose name contains one of these (the ONNX op type is part of every
# exported node's name) stay float32.
KEPT_FP32 = ("LayerNormalization", "InstanceNormalization")
SCOPES_KEY = "lightglue.fp16_scopes"


def scopes_from_metadata(metadata: dict) -> tuple[str, ...]:
    """The node-name prefixes of a model's reduced region, from its metadata: its own (``SCOPES_KEY``), else
    the matcher's."""
    recorded = metadata.get(SCOPES_KEY)
    return tuple(json.loads(recorded)) if recorded else REDUCED_SCOPES


def reduced_scopes(model) -> tuple[str, ...]:
    """``scopes_from_metadata`` of an ONNX model."""
    return scopes_from_metadata({p.key: p.value for p in model.metadata_props})


def reduced(node_name: str, scopes: tuple[str, ...] = REDUCED_SCOPES) -> bool:
    """Whether the node named ``node_name`` runs in the reduced precision (``scopes``: the model's region)."""
    return node_name.startswith(scopes) and not any(part in node_name for part in KEPT_FP32)
