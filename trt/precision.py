"""One policy for reduced precision in the matcher graph: FP16 on TensorRT, bf16 on OpenVINO.

The transformer layers and the input projection (nodes named under ``REDUCED_SCOPES``: where the time
goes) run in the reduced precision. Keypoint normalisation, the positional encoding, the assignment
with its two log-softmaxes, matchability and the match filtering stay float32: pixel coordinates, the
arguments of cos/sin, and log-sum-exps over thousands of entries lose too many digits. So do the
LayerNorms inside the region (``KEPT_FP32``), whose variance of 512 trained activations overflows
FP16 and loses digits in bf16.

Both graph rewriters read this module: ``trt.onnx.fp16`` (an FP16 variant of the ONNX, export side)
and ``trt.runtime.openvino_session`` (a bf16 variant of OpenVINO's model, serving side); node names are
the exported ONNX's (OpenVINO keeps them as friendly names).
"""

REDUCED_SCOPES = ("/transformers.", "/input_proj")
# Inside the region, nodes whose name contains one of these (the ONNX op type is part of every
# exported node's name) stay float32.
KEPT_FP32 = ("LayerNormalization",)


def reduced(node_name: str) -> bool:
    """Whether the node named ``node_name`` runs in the reduced precision."""
    return node_name.startswith(REDUCED_SCOPES) and not any(part in node_name for part in KEPT_FP32)
