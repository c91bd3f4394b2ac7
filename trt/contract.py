"""The matcher's tensor contract, defined once (see ../shared/DESIGN.md and the README).

Export names its graph inputs and outputs from here, profile validation checks against it, and the
runners check every request with it before anything is enqueued.

Inputs, for B pairs of N0 and N1 keypoints (padded; ``count`` says how many rows are real):

=============================  =======  ===========  ==================================================
name                           dtype    shape        meaning
=============================  =======  ===========  ==================================================
kpts0, kpts1                   float32  [B, N, 2]    (x, y) pixels of the original image, pixel centres
desc0, desc1                   float32  [B, N, D]    descriptors (RootSIFT for SIFT)
scales0/1, oris0/1 (DoG only)  float32  [B, N]       detector scale and orientation (radians)
size0, size1                   float32  [B, 2]       original image (width, height)
count0, count1                 int32    [B]          real keypoints per pair; later rows are padding
threshold                      float32  [1]          match score threshold (reference default 0.1)
=============================  =======  ===========  ==================================================

Outputs: ``matches0/1`` int32 [B, N] (index in the other image, -1 for none and for padding) and
``mscores0/1`` float32 [B, N] (0 where unmatched).
"""

from dataclasses import dataclass

import numpy as np

from trt.errors import ContractError

BATCH, KEYPOINTS0, KEYPOINTS1 = "B", "N0", "N1"
DEFAULT_THRESHOLD = 0.1
NO_MATCH = -1
# LightGlue attends with 4 heads (trt/models/lightglue.py): its largest tensors are the attention scores,
# [B, 4, N, N + 1] for N = max(N0, N1) (the extra key column masks padding). Profiles are bounded by them.
ATTENTION_HEADS = 4
MATCHER_DIM = 256  # LightGlue's internal descriptor size, whatever the extractor's D
MATCHER_LAYERS = 9  # transformer layers: what the single graph always runs, the most the adaptive loop runs


def largest_tensor_shape(batch: int, n0: int, n1: int) -> tuple[int, int, int, int]:
    """Shape of the matcher's largest tensor for a (B, N0, N1) request: the attention scores."""
    n = max(n0, n1)
    return batch, ATTENTION_HEADS, n, n + 1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or symbolic dimension names (BATCH, KEYPOINTS0, KEYPOINTS1)


def _side(index: int, descriptor_dim: int, scale_ori: bool) -> list[TensorSpec]:
    n = (KEYPOINTS0, KEYPOINTS1)[index]
    specs = [
        TensorSpec(f"kpts{index}", np.dtype(np.float32), (BATCH, n, 2)),
        TensorSpec(f"desc{index}", np.dtype(np.float32), (BATCH, n, descriptor_dim)),
    ]
    if scale_ori:
        specs += [
            TensorSpec(f"scales{index}", np.dtype(np.float32), (BATCH, n)),
            TensorSpec(f"oris{index}", np.dtype(np.float32), (BATCH, n)),
        ]
    return specs


def input_specs(descriptor_dim: int, scale_ori: bool) -> list[TensorSpec]:
    """The matcher's inputs, in graph order."""
    return [
        *_side(0, descriptor_dim, scale_ori),
        *_side(1, descriptor_dim, scale_ori),
        TensorSpec("size0", np.dtype(np.float32), (BATCH, 2)),
        TensorSpec("size1", np.dtype(np.float32), (BATCH, 2)),
        TensorSpec("count0", np.dtype(np.int32), (BATCH,)),
        TensorSpec("count1", np.dtype(np.int32), (BATCH,)),
        TensorSpec("threshold", np.dtype(np.float32), (1,)),
    ]


OUTPUT_SPECS = [
    TensorSpec("matches0", np.dtype(np.int32), (BATCH, KEYPOINTS0)),
    TensorSpec("matches1", np.dtype(np.int32), (BATCH, KEYPOINTS1)),
    TensorSpec("mscores0", np.dtype(np.float32), (BATCH, KEYPOINTS0)),
    TensorSpec("mscores1", np.dtype(np.float32), (BATCH, KEYPOINTS1)),
]
OUTPUT_NAMES = [spec.name for spec in OUTPUT_SPECS]


# -- the matcher as stages (adaptive depth and width; trt/models/lightglue.py, trt/runtime/adaptive.py) ------
# encode: the contract's inputs but count/threshold -> state and encoding of each image; layer ℓ: one
# transformer layer with its confidence and matchability (the final layer has neither); assign ℓ: the
# assignment of layer ℓ with mutual matching -> the contract's outputs.
STAGE_KINDS = ("encode", "layer", "final_layer", "assign")
ENCODING_DIM = MATCHER_DIM // ATTENTION_HEADS


def _per_point(name: str, trailing: tuple = ()) -> list[TensorSpec]:
    return [TensorSpec(f"{name}{side}", np.dtype(np.float32), (BATCH, n, *trailing))
            for side, n in ((0, KEYPOINTS0), (1, KEYPOINTS1))]


COUNT_SPECS = [TensorSpec("count0", np.dtype(np.int32), (BATCH,)), TensorSpec("count1", np.dtype(np.int32), (BATCH,))]
STATE_SPECS = _per_point("state", (MATCHER_DIM,)) + _per_point("encoding", (2, ENCODING_DIM))


def stage_specs(kind: str, descriptor_dim: int, scale_ori: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of a matcher stage of ``kind`` (one of ``STAGE_KINDS``)."""
    if kind == "encode":
        inputs = [s for s in input_specs(descriptor_dim, scale_ori) if not s.name.startswith(("count", "threshold"))]
        return inputs, STATE_SPECS
    if kind in ("layer", "final_layer"):
        outputs = _per_point("next_state", (MATCHER_DIM,))
        if kind == "layer":
            outputs += _per_point("confidence") + _per_point("matchability")
        return STATE_SPECS + COUNT_SPECS, outputs
    if kind == "assign":
        return STATE_SPECS[:2] + COUNT_SPECS + [input_specs(descriptor_dim, scale_ori)[-1]], OUTPUT_SPECS
    raise ContractError(f"unknown matcher stage {kind!r}: valid are {', '.join(STAGE_KINDS)}")


def infer_layout(input_names: list[str], input_shapes: dict[str, tuple]) -> tuple[int, bool]:
    """(descriptor_dim, scale_ori) of a graph or engine, or a ContractError naming what is off."""
    names = set(input_names)
    scale_ori = {"scales0", "oris0", "scales1", "oris1"} <= names
    desc_shape = input_shapes.get("desc0")
    if desc_shape is None or len(desc_shape) != 3 or not isinstance(desc_shape[2], int) or desc_shape[2] <= 0:
        raise ContractError(
            f"inputs {sorted(names)} do not follow the LightGlue matcher contract: "
            "expected desc0 of shape [B, N0, D] with a fixed D"
        )
    expected = {spec.name for spec in input_specs(desc_shape[2], scale_ori)}
    if names != expected:
        missing, extra = sorted(expected - names), sorted(names - expected)
        raise ContractError(
            "inputs do not follow the LightGlue matcher contract"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
        )
    return desc_shape[2], scale_ori


def concrete_shape(spec: TensorSpec, dims: dict[str, int]) -> tuple[int, ...]:
    """``spec``'s shape with its symbolic dimensions (B, N0, N1; H, W of the extractor contract) taken from ``dims``."""
    return tuple(dims.get(d, d) if isinstance(d, str) else d for d in spec.shape)


def keypoint_dims(batch: int, n0: int, n1: int) -> dict[str, int]:
    """The symbolic dimensions of a (B, N0, N1) matcher request."""
    return {BATCH: batch, KEYPOINTS0: n0, KEYPOINTS1: n1}


def check_input_names(feeds: dict[str, np.ndarray], specs: list[TensorSpec]) -> None:
    """A request must give exactly the inputs ``specs`` name (a matcher's or an extractor's)."""
    missing = [s.name for s in specs if s.name not in feeds]
    if missing:
        raise ContractError(f"missing inputs: {', '.join(missing)}")
    extra = sorted(set(feeds) - {s.name for s in specs})
    if extra:
        raise ContractError(f"unexpected inputs: {', '.join(extra)}; valid: {', '.join(s.name for s in specs)}")


def check_feeds(feeds: dict[str, np.ndarray], specs: list[TensorSpec]) -> tuple[int, int, int]:
    """Check a request's arrays against the contract; return (B, N0, N1)."""
    check_input_names(feeds, specs)
    # The first inputs with a keypoint axis give N0 and N1 (kpts0/kpts1 of the matcher, state0/state1 of a stage).
    side0, side1 = (next(s.name for s in specs if s.shape[1:2] == (n,)) for n in (KEYPOINTS0, KEYPOINTS1))
    batch, n0, n1 = feeds[side0].shape[0], feeds[side0].shape[1], feeds[side1].shape[1]
    for spec in specs:
        array = feeds[spec.name]
        if array.dtype != spec.dtype:
            raise ContractError(f"input {spec.name} has dtype {array.dtype}, expected {spec.dtype}")
        expected = concrete_shape(spec, keypoint_dims(batch, n0, n1))
        if tuple(array.shape) != expected:
            raise ContractError(f"input {spec.name} has shape {tuple(array.shape)}, expected {expected}")
    return batch, n0, n1
