"""Hand-set "nearest-neighbour" weights: LightGlue reduced to dual-softmax mutual nearest neighbours.

NOT trained weights. With them the transformer is the identity (every residual update is zero), the
input projection copies the descriptors, the final projection scales them so that the similarity is
``TEMPERATURE · ⟨d0, d1⟩``, and matchability is saturated (logσ(z) ≈ 0). What remains is the
dual-softmax assignment on raw descriptors with the mutual check: a classic matcher, good enough to
test geometry end to end (homographies, the runtime, FP16) where trained weights cannot be had.
"""

import torch

from trt.models.lightglue import DESCRIPTOR_DIM, LightGlue
from trt.models.weights import OPTIONAL_KEYS

# Similarity scale for unit-norm descriptors: large enough that a clear nearest neighbour dominates
# both softmaxes, small enough that close second neighbours still share the probability (ratio test).
TEMPERATURE = 40.0
SATURATED_LOGIT = 30.0


def nearest_neighbour_state_dict(model: LightGlue) -> dict:
    state_dict = {key: torch.zeros_like(value) for key, value in model.state_dict().items() if key not in OPTIONAL_KEYS}
    for key in state_dict:
        if key.endswith(".ffn.1.weight"):  # LayerNorm gain: keeps the (zeroed) residual branch finite
            state_dict[key] = torch.ones_like(state_dict[key])
    input_dim = model.extractor.descriptor_dim
    if input_dim != DESCRIPTOR_DIM:
        state_dict["input_proj.weight"] = torch.eye(DESCRIPTOR_DIM, input_dim)
    last = f"log_assignment.{len(model.log_assignment) - 1}"
    # sim = ⟨P d0, P d1⟩ / √256 with P = γI, so γ² / 16 = TEMPERATURE.
    gain = (TEMPERATURE * DESCRIPTOR_DIM**0.5) ** 0.5
    state_dict[f"{last}.final_proj.weight"] = torch.eye(DESCRIPTOR_DIM) * gain
    state_dict[f"{last}.matchability.bias"] = torch.full((1,), SATURATED_LOGIT)
    return state_dict
