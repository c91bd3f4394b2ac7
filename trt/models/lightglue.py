"""LightGlue as a graph TensorRT and ONNX Runtime can run: full depth, padded batches, fixed-shape outputs.

The architecture and parameter names are those of cvg/LightGlue (9 layers, 4 heads, d=256), so the
official state dicts load strictly. What differs is only how the same function is written:

* Padding rows (beyond ``count0/count1``) are masked out of every attention and of both assignment
  softmaxes by an extra key column: queries get a constant 1 appended and keys their mask bias
  (0 or -1e4), so the mask rides inside the Q·K MatMul instead of costing an elementwise pass over each
  N×N matrix. The softmax scale is folded into the queries for the same reason.
* Cross-attention computes each direction with its own MatMul and a last-axis softmax, instead of
  transposing the N×N similarity (faster in both TensorRT and ONNX Runtime).
* The dual-softmax assignment is written as ``2·sim + a_i + b_j`` with the row and column
  log-sum-exps folded into ``a`` and ``b``: the same log-assignment, without materialising two
  log-softmax matrices. Each log-sum-exp is ``max + log Σ exp(x − max)`` (``logsumexp_last``), not
  ReduceLogSumExp, whose axes OpenVINO's ONNX importer ignores.
* ``rotate_half`` is a constant 64×64 matrix and the positional encoding duplicates the rows of its
  projection (a constant Gather), avoiding ``repeat_interleave`` and unflatten/unbind with -1 sizes,
  which the TorchScript exporter mistranslates.
* All axes are positive; nothing depends on data for its shape (no NonZero).

Outputs follow the contract in ``trt/contract.py``: mutual nearest neighbours of the assignment
without dustbins, score ``exp(max)``, kept above ``threshold``; -1 and 0 for unmatched and padding.
"""

import torch
import torch.nn.functional as F
from torch import nn

from trt.contract import ATTENTION_HEADS, MATCHER_DIM, MATCHER_LAYERS
from trt.extractors import Extractor

NUM_LAYERS = MATCHER_LAYERS
NUM_HEADS = ATTENTION_HEADS
DESCRIPTOR_DIM = MATCHER_DIM
HEAD_DIM = DESCRIPTOR_DIM // NUM_HEADS
MASK_BIAS = -1e4  # added to padded keys' logits: exp(-1e4) is 0 in FP32 and FP16 alike


def normalize_keypoints(kpts: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Pixels to [-1, 1] about the image centre, scaled by the long edge (as the reference does).

    kpts [B, N, 2] (x, y); size [B, 2] (width, height).
    """
    shift = size / 2
    scale = size.max(dim=1, keepdim=True).values / 2
    return (kpts - shift.unsqueeze(1)) / scale.unsqueeze(1)


def key_bias(valid: torch.Tensor) -> torch.Tensor:
    """[B, N] bool → [B, N] float: 0 for real keypoints, MASK_BIAS for padding."""
    return (1.0 - valid.to(torch.float32)) * MASK_BIAS


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ + bias_j)·v with the bias carried by an extra column of q and k.

    q [B, H, Nq, d] already scaled; k, v [B, H, Nk, d]; bias [B, Nk].
    """
    ones = torch.ones_like(q[:, :, :, :1])
    key_bias_column = bias.unsqueeze(1).unsqueeze(3).expand(k.shape[0], k.shape[1], k.shape[2], 1)
    sim = torch.matmul(torch.cat([q, ones], dim=3), torch.cat([k, key_bias_column], dim=3).transpose(2, 3))
    return torch.matmul(F.softmax(sim, dim=3), v)


def logsumexp_last(x: torch.Tensor) -> torch.Tensor:
    """log Σ_j exp(x_ij) over the last axis of a [B, N, M] tensor, as ``max + log Σ exp(x − max)``.

    The same function as ``torch.logsumexp(x, dim=2)``, written with ReduceMax and ReduceSum:
    ``torch.logsumexp`` exports as ReduceLogSumExp, whose ``axes`` attribute (opset ≤ 17) OpenVINO's
    ONNX importer ignores, reducing over every axis (tests/test_openvino.py records whether it still does).
    """
    peak = x.max(dim=2, keepdim=True).values
    return (peak + torch.log(torch.exp(x - peak).sum(dim=2, keepdim=True))).squeeze(2)


def rotate_half_matrix(dim: int) -> torch.Tensor:
    """R with x·R == rotate_half(x) of the reference: (x1, x2) → (-x2, x1) on each interleaved pair."""
    matrix = torch.zeros(dim, dim)
    for i in range(0, dim, 2):
        matrix[i + 1, i] = -1.0
        matrix[i, i + 1] = 1.0
    return matrix


class LearnableFourierPositionalEncoding(nn.Module):
    """cos/sin of a learned projection of (x, y[, scale, ori]), each value repeated for a rotary pair."""

    def __init__(self, num_inputs: int, head_dim: int) -> None:
        super().__init__()
        self.Wr = nn.Linear(num_inputs, head_dim // 2, bias=False)
        self.register_buffer("pair_rows", torch.arange(head_dim) // 2, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, M] → (cos, sin), each [B, 1, N, head_dim] to broadcast over heads."""
        projected = F.linear(x, self.Wr.weight[self.pair_rows]).unsqueeze(1)
        return torch.cos(projected), torch.sin(projected)


def feed_forward(dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2 * dim, 2 * dim),
        nn.LayerNorm(2 * dim, elementwise_affine=True),
        nn.GELU(),
        nn.Linear(2 * dim, dim),
    )


def split_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, N, H·d] → [B, H, N, d]."""
    return x.reshape(x.shape[0], x.shape[1], NUM_HEADS, HEAD_DIM).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d] → [B, N, H·d]."""
    x = x.transpose(1, 2)
    return x.reshape(x.shape[0], x.shape[1], DESCRIPTOR_DIM)


class SelfBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = feed_forward(dim)
        # The reference splits Wqkv's output as (head, d, q|k|v); these rows pick q, k and v by head.
        rows = torch.arange(3 * dim).reshape(NUM_HEADS, HEAD_DIM, 3)
        for index, name in enumerate(("q_rows", "k_rows", "v_rows")):
            self.register_buffer(name, rows[:, :, index].reshape(-1), persistent=False)
        self.register_buffer("rotate_half", rotate_half_matrix(HEAD_DIM), persistent=False)

    def _project(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return split_heads(F.linear(x, self.Wqkv.weight[rows], self.Wqkv.bias[rows]))

    def _rotary(self, t: torch.Tensor, encoding: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cos, sin = encoding
        return t * cos + torch.matmul(t, self.rotate_half) * sin

    def forward(self, x, encoding, bias) -> torch.Tensor:
        q = self._rotary(self._project(x, self.q_rows), encoding) * HEAD_DIM**-0.5
        k = self._rotary(self._project(x, self.k_rows), encoding)
        v = self._project(x, self.v_rows)
        message = self.out_proj(merge_heads(masked_attention(q, k, v, bias)))
        return x + self.ffn(torch.cat([x, message], dim=2))


class CrossBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = feed_forward(dim)

    def forward(self, x0, x1, bias0, bias1) -> tuple[torch.Tensor, torch.Tensor]:
        # The reference scales both sides by d**-0.25: together, the usual d**-0.5.
        qk0, qk1 = (split_heads(self.to_qk(x)) * HEAD_DIM**-0.25 for x in (x0, x1))
        v0, v1 = split_heads(self.to_v(x0)), split_heads(self.to_v(x1))
        m0 = self.to_out(merge_heads(masked_attention(qk0, qk1, v1, bias1)))
        m1 = self.to_out(merge_heads(masked_attention(qk1, qk0, v0, bias0)))
        return x0 + self.ffn(torch.cat([x0, m0], dim=2)), x1 + self.ffn(torch.cat([x1, m1], dim=2))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.self_attn = SelfBlock(dim)
        self.cross_attn = CrossBlock(dim)

    def forward(self, desc0, desc1, encoding0, encoding1, bias0, bias1):
        desc0 = self.self_attn(desc0, encoding0, bias0)
        desc1 = self.self_attn(desc1, encoding1, bias1)
        return self.cross_attn(desc0, desc1, bias0, bias1)


class MatchAssignment(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.matchability = nn.Linear(dim, 1)
        self.final_proj = nn.Linear(dim, dim)

    def forward(self, desc0, desc1, bias0, bias1) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's log-assignment without dustbins, as scores01 [B, N0, N1] and its transpose.

        log_softmax_j(s)_ij + log_softmax_i(s)_ij = 2·s_ij − lse_j(s_i·) − lse_i(s_·j), so with the
        certainties logσ(z) the whole matrix is 2·s + a_i + b_j. Padding is masked in both log-sum-exps
        and pushed to MASK_BIAS in a and b, so it is never anyone's best match.
        """
        mdesc0 = self.final_proj(desc0) * DESCRIPTOR_DIM**-0.25
        mdesc1 = self.final_proj(desc1) * DESCRIPTOR_DIM**-0.25
        sim01 = torch.matmul(mdesc0, mdesc1.transpose(1, 2)) + bias1.unsqueeze(1)
        sim10 = torch.matmul(mdesc1, mdesc0.transpose(1, 2)) + bias0.unsqueeze(1)
        a = F.logsigmoid(self.matchability(desc0)).squeeze(2) - logsumexp_last(sim01) + bias0
        b = F.logsigmoid(self.matchability(desc1)).squeeze(2) - logsumexp_last(sim10) + bias1
        scores01 = 2 * sim01 + a.unsqueeze(2) + b.unsqueeze(1)
        scores10 = 2 * sim10 + b.unsqueeze(2) + a.unsqueeze(1)
        return scores01, scores10


class TokenConfidence(nn.Module):
    """Early-stopping head of the reference: how settled each point's descriptor is after a layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())

    def forward(self, desc: torch.Tensor) -> torch.Tensor:
        """desc [B, N, d] → confidence [B, N] in (0, 1)."""
        return self.token(desc).squeeze(2)


def confidence_thresholds(num_layers: int = NUM_LAYERS) -> torch.Tensor:
    """The reference's per-layer confidence thresholds ``0.8 + 0.1·exp(−4ℓ/L)``, float32 as its buffer."""
    layers = torch.arange(num_layers, dtype=torch.float64)
    return (0.8 + 0.1 * torch.exp(-4.0 * layers / num_layers)).clamp(0, 1).to(torch.float32)


def valid_rows(count: torch.Tensor, rows: int) -> torch.Tensor:
    """[B] counts → [B, rows] bool: the leading ``count`` rows of each pair are real."""
    return torch.arange(rows).unsqueeze(0) < count.unsqueeze(1)


def mutual_matches(scores01, scores10, valid0, valid1, threshold):
    """Mutual nearest neighbours of the log-assignment, scored exp(max), kept above ``threshold``.

    Returns matches0 [B, N0], matches1 [B, N1] (int32, -1 for none) and mscores0, mscores1 (float32).
    """
    max0, best0 = scores01.max(dim=2)
    best1 = scores10.max(dim=2).indices
    mutual0 = torch.gather(best1, 1, best0) == torch.arange(best0.shape[1]).unsqueeze(0)
    mutual1 = torch.gather(best0, 1, best1) == torch.arange(best1.shape[1]).unsqueeze(0)
    mutual0 = mutual0 & valid0
    mutual1 = mutual1 & valid1
    zero = torch.zeros_like(max0)
    mscores0 = torch.where(mutual0, torch.exp(max0), zero)
    mscores1 = torch.where(mutual1, torch.gather(mscores0, 1, best1), torch.zeros_like(best1, dtype=max0.dtype))
    keep0 = mutual0 & (mscores0 > threshold)
    keep1 = mutual1 & torch.gather(keep0, 1, best1)
    none0 = torch.full_like(best0, -1)
    none1 = torch.full_like(best1, -1)
    matches0 = torch.where(keep0, best0, none0).to(torch.int32)
    matches1 = torch.where(keep1, best1, none1).to(torch.int32)
    return matches0, matches1, mscores0, mscores1


class LightGlue(nn.Module):
    """LightGlue matcher for one extractor, taking and returning the tensors of the matcher contract."""

    def __init__(self, extractor: Extractor) -> None:
        super().__init__()
        self.extractor = extractor
        d = DESCRIPTOR_DIM
        if extractor.descriptor_dim != d:
            self.input_proj = nn.Linear(extractor.descriptor_dim, d)
        else:
            self.input_proj = nn.Identity()
        self.posenc = LearnableFourierPositionalEncoding(4 if extractor.scale_ori else 2, HEAD_DIM)
        self.transformers = nn.ModuleList([TransformerLayer(d) for _ in range(NUM_LAYERS)])
        self.log_assignment = nn.ModuleList([MatchAssignment(d) for _ in range(NUM_LAYERS)])
        self.token_confidence = nn.ModuleList([TokenConfidence(d) for _ in range(NUM_LAYERS - 1)])
        # The reference's early-stopping thresholds (its state dicts carry them); the adaptive host loop
        # (trt/runtime/adaptive.py) reads the same values from the stages manifest.
        self.register_buffer("confidence_thresholds", confidence_thresholds())

    @property
    def input_names(self) -> list[str]:
        from trt.contract import input_specs

        return [spec.name for spec in input_specs(self.extractor.descriptor_dim, self.extractor.scale_ori)]

    def forward(self, *inputs: torch.Tensor):
        """Inputs in contract order (see ``input_names``); returns matches0, matches1, mscores0, mscores1."""
        named = dict(zip(self.input_names, inputs))
        valid0 = valid_rows(named["count0"], named["kpts0"].shape[1])
        valid1 = valid_rows(named["count1"], named["kpts1"].shape[1])
        bias0, bias1 = key_bias(valid0), key_bias(valid1)
        (desc0, encoding0), (desc1, encoding1) = self.encode(named, 0), self.encode(named, 1)
        for layer in self.transformers:
            desc0, desc1 = layer(desc0, desc1, encoding0, encoding1, bias0, bias1)
        scores01, scores10 = self.log_assignment[NUM_LAYERS - 1](desc0, desc1, bias0, bias1)
        return mutual_matches(scores01, scores10, valid0, valid1, named["threshold"])

    def encode(self, named: dict, side: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One image's projected descriptors [B, N, d] and positional encoding (cos, sin), each [B, 1, N, head_dim]."""
        return self.input_proj(named[f"desc{side}"]), self.posenc(self._position_features(named, side))

    def _position_features(self, named: dict, side: int) -> torch.Tensor:
        kpts = normalize_keypoints(named[f"kpts{side}"], named[f"size{side}"])
        if not self.extractor.scale_ori:
            return kpts
        return torch.cat([kpts, named[f"scales{side}"].unsqueeze(2), named[f"oris{side}"].unsqueeze(2)], dim=2)


# -- the matcher as stages, for adaptive depth and width (trt/runtime/adaptive.py runs the loop) ------------
#
# Between stages each image's state is two tensors with the keypoint axis second, so the host can drop a
# pruned point's rows with one gather along axis 1: ``state`` [B, N, d] (the descriptors so far) and
# ``encoding`` [B, N, 2, head_dim] (cos and sin of the positional encoding). Padding follows the contract:
# ``count0/count1`` say how many leading rows are real.


def pack_encoding(encoding: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(cos, sin), each [B, 1, N, h] → [B, N, 2, h]."""
    return torch.stack([encoding[0].squeeze(1), encoding[1].squeeze(1)], dim=2)


def unpack_encoding(encoding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, N, 2, h] → (cos, sin), each [B, 1, N, h]."""
    return encoding[:, :, 0].unsqueeze(1), encoding[:, :, 1].unsqueeze(1)


class EncodeStage(nn.Module):
    """Input projection and positional encoding: the contract's inputs but ``count``/``threshold`` →
    state0, state1, encoding0, encoding1."""

    def __init__(self, matcher: LightGlue) -> None:
        super().__init__()
        self.matcher = matcher
        self.input_names = [name for name in matcher.input_names if not name.startswith(("count", "threshold"))]

    def forward(self, *inputs: torch.Tensor):
        named = dict(zip(self.input_names, inputs))
        (state0, encoding0), (state1, encoding1) = self.matcher.encode(named, 0), self.matcher.encode(named, 1)
        return state0, state1, pack_encoding(encoding0), pack_encoding(encoding1)


class LayerStage(nn.Module):
    """Transformer layer ℓ and what the host decides on after it: state0, state1, encoding0, encoding1,
    count0, count1 → next_state0, next_state1 and, but after the last layer, confidence0/1 (the token
    confidence head ℓ) and matchability0/1 (sigmoid of assignment ℓ's matchability), each [B, N]."""

    def __init__(self, matcher: LightGlue, layer: int) -> None:
        super().__init__()
        self.transformer = matcher.transformers[layer]
        self.final = layer == NUM_LAYERS - 1
        if not self.final:
            self.token_confidence = matcher.token_confidence[layer]
            self.matchability = matcher.log_assignment[layer].matchability

    def forward(self, state0, state1, encoding0, encoding1, count0, count1):
        bias0 = key_bias(valid_rows(count0, state0.shape[1]))
        bias1 = key_bias(valid_rows(count1, state1.shape[1]))
        state0, state1 = self.transformer(state0, state1, unpack_encoding(encoding0), unpack_encoding(encoding1),
                                          bias0, bias1)
        if self.final:
            return state0, state1
        return (state0, state1, self.token_confidence(state0), self.token_confidence(state1),
                torch.sigmoid(self.matchability(state0)).squeeze(2), torch.sigmoid(self.matchability(state1)).squeeze(2))


class AssignStage(nn.Module):
    """Assignment ℓ with mutual matching: state0, state1, count0, count1, threshold → the contract's outputs."""

    def __init__(self, matcher: LightGlue, layer: int) -> None:
        super().__init__()
        self.assignment = matcher.log_assignment[layer]

    def forward(self, state0, state1, count0, count1, threshold):
        valid0, valid1 = valid_rows(count0, state0.shape[1]), valid_rows(count1, state1.shape[1])
        scores01, scores10 = self.assignment(state0, state1, key_bias(valid0), key_bias(valid1))
        return mutual_matches(scores01, scores10, valid0, valid1, threshold)
