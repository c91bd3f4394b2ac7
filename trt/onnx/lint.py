"""Reject graphs TensorRT's ONNX parser will not take, naming the nodes, before a long engine build.

The allow-list is the subset of the onnx-tensorrt operator table (docs/operators.md, TensorRT 10)
that matcher graphs and typical feature-extractor graphs use; anything else is reported, as are
contrib-domain ops, NonZero (data-dependent shapes; tensorrt-rtx lacks it), TopK with K above
TensorRT's limit, and axes given as tensors where the parser needs constants.
"""

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from trt.extractor_contract import MAX_KEYPOINTS

TOPK_MAX_K = MAX_KEYPOINTS  # TensorRT's limit on TopK's K

SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
    Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace Div Einsum Elu
    Equal Erf Exp Expand Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
    GlobalMaxPool Greater GreaterOrEqual GridSample HardSigmoid HardSwish Identity InstanceNormalization
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mod Mul Neg
    Not OneHot Or Pad Pow PRelu Range Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ScatterElements ScatterND Selu
    Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub
    Sum Tan Tanh Tile TopK Transpose Trilu Unsqueeze Where Xor
    """.split()
)
# Ops whose axes TensorRT needs as build-time constants (opset 13+/18+ moved them to inputs).
CONSTANT_AXES_INPUT = {"ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceMean": 1, "ReduceProd": 1,
                       "ReduceLogSumExp": 1, "ReduceL1": 1, "ReduceL2": 1, "ReduceSumSquare": 1,
                       "Squeeze": 1, "Unsqueeze": 1}


@dataclass(frozen=True)
class LintIssue:
    node: str
    op_type: str
    problem: str

    def __str__(self) -> str:
        return f"{self.op_type} node {self.node!r}: {self.problem}"


def lint_for_tensorrt(model: onnx.ModelProto) -> list[LintIssue]:
    """Every node TensorRT's parser would reject, with the reason."""
    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = node
    issues = []
    for node in model.graph.node:
        name = node.name or f"<unnamed {node.op_type}>"
        if node.domain not in ("", "ai.onnx"):
            issues.append(LintIssue(name, node.op_type, f"custom or contrib domain {node.domain!r}"))
        elif node.op_type == "NonZero":
            issues.append(LintIssue(name, node.op_type, "data-dependent output shape (NonZero)"))
        elif node.op_type not in SUPPORTED_OPS:
            issues.append(LintIssue(name, node.op_type, "not supported by the TensorRT ONNX parser"))
        elif node.op_type == "TopK":
            k = _constant_value(constants, node.input[1]) if len(node.input) > 1 else None
            if k is None:
                issues.append(LintIssue(name, node.op_type, "K must be a constant"))
            elif int(np.max(k)) > TOPK_MAX_K:
                issues.append(LintIssue(name, node.op_type, f"K={int(np.max(k))} exceeds TensorRT's {TOPK_MAX_K}"))
        index = CONSTANT_AXES_INPUT.get(node.op_type)
        if index is not None and len(node.input) > index and node.input[index]:
            if node.input[index] not in constants:
                issues.append(LintIssue(name, node.op_type, "axes must be a constant"))
    return issues


def _constant_value(constants: dict, name: str):
    source = constants.get(name)
    if source is None:
        return None
    if isinstance(source, onnx.TensorProto):
        return numpy_helper.to_array(source)
    return numpy_helper.to_array(source.attribute[0].t)
