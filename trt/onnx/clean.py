"""Make an exported graph TensorRT-ready: symbolic shape inference, constant folding, clean-up, checks.

Shape inference is ONNX Runtime's maintained ``symbolic_shape_infer`` (the old onnxruntime-tools
fails above opset 12). Afterwards every tensor must have a known rank and every dimension must be a
number or a named symbol: an unnamed unknown dimension is where TensorRT's parser stumbles later.
"""

import onnx
from onnx import numpy_helper

from trt.errors import ContractError


def infer_symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    if inferred is None:
        raise ContractError("symbolic shape inference failed on the exported graph")
    return inferred


def deduplicate_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Share identical weights: the exporter folds a transposed copy of a Linear weight per call site."""
    import hashlib

    first_by_content, replacement = {}, {}
    kept = []
    for init in model.graph.initializer:
        content = numpy_helper.to_array(init).tobytes()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(content).hexdigest())
        if key in first_by_content:
            replacement[init.name] = first_by_content[key]
        else:
            first_by_content[key] = init.name
            kept.append(init)
    if replacement:
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        for node in model.graph.node:
            for index, name in enumerate(node.input):
                if name in replacement:
                    node.input[index] = replacement[name]
    return model


def fold_and_clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants (shape arithmetic included), drop dead nodes, sort topologically."""
    import onnx_graphsurgeon as gs
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # folding runs ORT, whose optimiser warns about every kept Unsqueeze
    graph = gs.import_onnx(model)
    graph.fold_constants(fold_shapes=True, error_ok=False).cleanup(remove_unused_graph_inputs=False).toposort()
    cleaned = gs.export_onnx(graph, do_type_check=True)
    cleaned.metadata_props.extend(model.metadata_props)
    return cleaned


def unresolved_shapes(model: onnx.ModelProto) -> list[str]:
    """Tensors whose rank is unknown or that have a dimension neither numeric nor named."""
    problems = []
    values = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    described = {value.name for value in values}
    for value in values:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            problems.append(f"{value.name}: unknown rank")
            continue
        for axis, dim in enumerate(tensor_type.shape.dim):
            if not dim.HasField("dim_value") and not dim.dim_param:
                problems.append(f"{value.name}: dimension {axis} unknown")
    initialisers = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        for output in node.output:
            if output and output not in described and output not in initialisers:
                problems.append(f"{output} (output of {node.op_type} node {node.name}): no shape")
    return problems


def describe_fully(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """Infer every tensor's shape afresh and check the result, or a ContractError naming ``what``."""
    del model.graph.value_info[:]
    model = infer_symbolic_shapes(model)
    problems = unresolved_shapes(model)
    if problems:
        raise ContractError(f"{what} has tensors without a full shape: " + "; ".join(problems[:20]))
    onnx.checker.check_model(model, full_check=True)
    return model


def prepare_for_tensorrt(model: onnx.ModelProto) -> onnx.ModelProto:
    """checker → symbolic shapes → fold/clean-up/toposort → shapes again → checker, or a ContractError."""
    onnx.checker.check_model(model, full_check=False)
    model = fold_and_clean(infer_symbolic_shapes(deduplicate_initializers(model)))
    # Folding rewrites tensors: infer again so the final graph is fully described.
    return describe_fully(deduplicate_initializers(model), "the exported graph")
