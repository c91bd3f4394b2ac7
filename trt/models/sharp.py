"""The "sharp" test weights: the nearest-neighbour weights plus seeded residual updates. NOT trained.

What backend and precision checks need, and neither of the other test sets gives:

* the nearest-neighbour weights (``trt.models.nearest_neighbour``) leave the transformer idle, so
  rounding inside it (FP16, bf16) changes nothing;
* seeded random weights (``trt.models.weights.random_state_dict``) give flat assignments, whose
  arg-max any rounding flips.

Here every attention is peaked and every layer moves the descriptors, while the assignment keeps
the nearest-neighbour weights' peaked dual-softmax:

* queries and keys are the descriptors scaled by ``ATTENTION_GAIN`` (plus a little noise), so
  self-attention looks at the most similar descriptors of the same image and cross-attention at the
  likely correspondences of the other one, as trained LightGlue's does; with rotary position
  encodings of a seeded N(0, 1) projection (the reference's initialisation), position matters too;
* values, output projections and the first FFN layer are seeded random (PyTorch's default scale);
  the FFN's last layer is N(0, ``RESIDUAL_STD``), so each layer moves a descriptor by a few per cent
  and the nine layers together change a large share of the nearest-neighbour matches (about half of
  them on the parity pairs) while the matches keep their geometry (precision at 3 px as high).

Activations stay moderate (no LayerNorm variance near FP16's limit), so FP16 and bf16 are judged on
rounding, not overflow.
"""

import torch

from trt.models.lightglue import DESCRIPTOR_DIM, LightGlue
from trt.models.nearest_neighbour import nearest_neighbour_state_dict

ATTENTION_GAIN = 16.0
ATTENTION_NOISE_STD = 0.02
RESIDUAL_STD = 0.006
KIND = "sharp"


def sharp_state_dict(model: LightGlue, seed: int) -> dict:
    """The state dict (current key names) of the sharp test weights for ``model``'s extractor."""
    state_dict = nearest_neighbour_state_dict(model)
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    identity = torch.eye(DESCRIPTOR_DIM) * ATTENTION_GAIN
    default_std = DESCRIPTOR_DIM**-0.5
    state_dict["posenc.Wr.weight"] = normal(state_dict["posenc.Wr.weight"].shape, 1.0)
    for index, layer in enumerate(model.transformers):
        self_prefix, cross_prefix = f"transformers.{index}.self_attn", f"transformers.{index}.cross_attn"
        wqkv = normal(state_dict[f"{self_prefix}.Wqkv.weight"].shape, default_std)
        for rows in (layer.self_attn.q_rows, layer.self_attn.k_rows):
            wqkv[rows] = identity + normal(identity.shape, ATTENTION_NOISE_STD)
        state_dict[f"{self_prefix}.Wqkv.weight"] = wqkv
        state_dict[f"{cross_prefix}.to_qk.weight"] = identity + normal(identity.shape, ATTENTION_NOISE_STD)
        for name in (f"{self_prefix}.out_proj.weight", f"{cross_prefix}.to_v.weight", f"{cross_prefix}.to_out.weight"):
            state_dict[name] = normal(state_dict[name].shape, default_std)
        for prefix in (self_prefix, cross_prefix):
            first = state_dict[f"{prefix}.ffn.0.weight"]
            state_dict[f"{prefix}.ffn.0.weight"] = normal(first.shape, first.shape[1] ** -0.5)
            state_dict[f"{prefix}.ffn.3.weight"] = normal(state_dict[f"{prefix}.ffn.3.weight"].shape, RESIDUAL_STD)
    return state_dict
