"""The mixed-precision variant of a matcher or extractor graph, for strongly typed builders (tensorrt-rtx).

Which nodes run in FP16 is ``trt.precision``'s policy (shared with OpenVINO's bf16): the matcher's
transformer layers and input projection, or the region an extractor graph names in its metadata (its
dense encoder), without their normalisations; the rest stays FP32. The graph's inputs and outputs keep
their FP32/int32 types, so the tensor contract is unchanged.

Casts sit only at the region's borders: FP32 tensors entering it are cast to FP16 once each, FP16
tensors leaving it are cast back.
"""

from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from trt.errors import ContractError, UserError
from trt.fileio import atomic_path
from trt.onnx.clean import describe_fully, infer_symbolic_shapes
from trt.precision import reduced, reduced_scopes

PRECISION_KEY = "lightglue.precision"
# Inputs that stay FP32 whatever the region: ONNX types them tensor(float) (Resize's roi and scales).
FP32_INPUTS = {"Resize": (1, 2)}


def _region_predicate(graph: onnx.GraphProto, scopes: tuple[str, ...]):
    """Whether a node runs in FP16: reduced by the policy, not a constant feeding only FP32 inputs."""
    fixed = {node.input[i] for node in graph.node for i in FP32_INPUTS.get(node.op_type, ()) if i < len(node.input)}

    def in_region(node: onnx.NodeProto) -> bool:
        if node.op_type == "Constant" and node.output[0] in fixed:
            return False
        return reduced(node.name, scopes)

    return in_region


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        types[value.name] = value.type.tensor_type.elem_type
    return types


def _to_fp16_tensor(tensor: TensorProto, name: str) -> TensorProto:
    array = numpy_helper.to_array(tensor)
    if np.any(np.abs(array[np.isfinite(array)]) > np.finfo(np.float16).max):
        raise ContractError(f"constant {tensor.name or name} does not fit in FP16")
    return numpy_helper.from_array(array.astype(np.float16), name)


def mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with its FP16 region in FP16 (see module docstring)."""
    scopes = reduced_scopes(model)
    model = infer_symbolic_shapes(model)
    graph = model.graph
    in_region = _region_predicate(graph, scopes)
    region = [node for node in graph.node if in_region(node)]
    if not region:
        raise ContractError(f"no {' or '.join(scopes)} nodes: not a matcher or extractor graph exported by this project")
    types = _tensor_types(model)
    produced_in_region = {output for node in region for output in node.output}
    initializers = {init.name: init for init in graph.initializer}
    used_outside = {name for node in graph.node if not in_region(node) for name in node.input}
    used_outside |= {output.name for output in graph.output}

    new_nodes, casts_in, fp16_initializers = [], {}, {}

    def region_input(name: str) -> str:
        """The FP16 name under which region nodes read the FP32 tensor ``name``."""
        if name in initializers:
            fp16_name = name if name not in used_outside else f"{name}__fp16"
            fp16_initializers.setdefault(fp16_name, _to_fp16_tensor(initializers[name], fp16_name))
            return fp16_name
        if name not in casts_in:
            casts_in[name] = f"{name}__fp16"
            new_nodes.append(helper.make_node("Cast", [name], [casts_in[name]], name=f"{name}__to_fp16",
                                              to=TensorProto.FLOAT16))
        return casts_in[name]

    for node in region:
        for index, name in enumerate(node.input):
            if index in FP32_INPUTS.get(node.op_type, ()):
                continue
            if name and name not in produced_in_region and types.get(name) == TensorProto.FLOAT:
                node.input[index] = region_input(name)
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
            elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(_to_fp16_tensor(attribute.t, attribute.t.name))

    # FP16 tensors leaving the region: every outside reader gets an FP32 copy.
    leaving = {name for name in produced_in_region if name in used_outside and types.get(name) == TensorProto.FLOAT}
    renamed = {name: f"{name}__fp32" for name in leaving}
    for node in graph.node:
        if not in_region(node):
            for index, name in enumerate(node.input):
                if name in renamed:
                    node.input[index] = renamed[name]
    for output in graph.output:
        if output.name in leaving:
            raise ContractError(f"graph output {output.name} comes straight from the FP16 region")
    for name, fp32_name in renamed.items():
        new_nodes.append(helper.make_node("Cast", [name], [fp32_name], name=f"{name}__to_fp32", to=TensorProto.FLOAT))

    kept_initializers = [init for init in graph.initializer if init.name not in fp16_initializers]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers + list(fp16_initializers.values()))
    graph.node.extend(new_nodes)
    del graph.value_info[:]

    import onnx_graphsurgeon as gs

    sorted_graph = gs.import_onnx(model)
    sorted_graph.cleanup().toposort()
    converted = gs.export_onnx(sorted_graph)
    converted.metadata_props.extend(p for p in model.metadata_props if p.key != PRECISION_KEY)
    converted.metadata_props.add(key=PRECISION_KEY, value="fp16")
    return describe_fully(converted, "the FP16 graph")


def convert_to_mixed_fp16(onnx_in: Path, onnx_out: Path) -> Path:
    """Write the mixed-precision variant of ``onnx_in`` to ``onnx_out`` (atomically) and return its path."""
    try:
        model = onnx.load(str(onnx_in))
    except (OSError, DecodeError) as error:
        raise UserError(f"cannot read ONNX file {onnx_in}: {error}") from None
    converted = mixed_fp16(model)
    with atomic_path(Path(onnx_out)) as tmp:
        tmp.write_bytes(converted.SerializeToString())
    return Path(onnx_out)
