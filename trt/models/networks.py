"""The learned extractor networks as torch modules, with their weights: official checkpoints (downloaded
and verified, loaded strictly) or seeded random weights of the official layout, for tests.

``build_network`` is what export calls; the table of networks is ``trt.extractors.NETWORKS``.
"""

from pathlib import Path

import torch
from torch import nn

from trt.errors import WeightsError
from trt.extractors import NETWORKS, ExtractorNetwork
from trt.official_weights import cached_sha256
from trt.models.weights import WeightsSource, load_state_dict_strict, read_checkpoint, resolve_weights, verify_official

WEIGHTS_HINT = "pass --extractor-weights FILE, or use --extractor-random-weights SEED for a test export (not trained)"


def make_module(network: ExtractorNetwork, max_num_keypoints: int, detection_threshold: float,
                nms_radius: int) -> nn.Module:
    """The untrained torch module of ``network`` with its detection settings, in eval mode."""
    if network.feature == "aliked":
        from trt.models.aliked import ALIKED

        module = ALIKED(network.name, max_num_keypoints, detection_threshold, nms_radius)
    elif network.feature == "superpoint":
        from trt.models.superpoint import SuperPoint

        module = SuperPoint(max_num_keypoints, detection_threshold, nms_radius, remove_borders=nms_radius,
                            descriptor_dim=network.descriptor_dim)
    elif network.feature == "disk":
        from trt.models.disk import DISK

        module = DISK(max_num_keypoints, detection_threshold, nms_radius, descriptor_dim=network.descriptor_dim)
    else:
        raise ValueError(f"no module for network {network.name}")
    return module.eval()


def fp16_scopes(network: ExtractorNetwork) -> tuple[str, ...]:
    """ONNX node-name prefixes of the network's dense part, which the mixed-precision variant runs in FP16."""
    from trt.models import aliked, disk, superpoint

    return {"aliked": aliked.FP16_SCOPES, "superpoint": superpoint.FP16_SCOPES, "disk": disk.FP16_SCOPES}[network.feature]


def random_state_dict(module: nn.Module, seed: int) -> dict:
    """Seeded random weights with exactly the module's layout, scaled so activations neither vanish nor explode.

    Convolutions get He-uniform weights (the ReLU/PReLU/SELU stacks keep their scale, so the score maps
    have real contrast) and small biases; PReLU slopes 0.25 (PyTorch's default); batch norms the
    identity; any other parameter (ALIKED's aggregation weights) uniform in ±1/√fan-in. For tests only.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound

    values = {}
    for name, child in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(child, nn.Conv2d):
            fan_in = child.weight[0].numel()
            values[prefix + "weight"] = uniform(child.weight.shape, (6 / fan_in) ** 0.5)
            if child.bias is not None:
                values[prefix + "bias"] = uniform(child.bias.shape, 0.1 / fan_in ** 0.5)
        elif isinstance(child, nn.PReLU):
            values[prefix + "weight"] = torch.full_like(child.weight, 0.25)
        elif isinstance(child, nn.BatchNorm2d):
            for key, tensor in child.state_dict().items():
                values[prefix + key] = torch.ones_like(tensor) if key in ("weight", "running_var") else torch.zeros_like(tensor)
    state_dict = {}
    for key, tensor in module.state_dict().items():
        value = values.get(key)
        if value is None:
            value = uniform(tensor.shape, tensor.shape[-2] ** -0.5 if tensor.dim() > 1 else 0.1)
        state_dict[key] = value.to(tensor.dtype)
    return state_dict


def official_layout(network: ExtractorNetwork, state_dict: dict) -> dict:
    """``state_dict`` as the official file holds it (DISK nests it under ``extractor``)."""
    return {network.checkpoint_key: state_dict} if network.checkpoint_key else state_dict


def load_network_checkpoint(module: nn.Module, network: ExtractorNetwork, path: Path) -> WeightsSource:
    """Load ``path`` strictly into ``module``; the official file of another network is an error naming it."""
    digest = cached_sha256(path)
    for other in NETWORKS.values():
        if other.weights_sha256 == digest and other.name != network.name:
            raise WeightsError(f"{path} is the official {other.name} checkpoint, not {network.name}'s: "
                               f"export it with --extractor-model {other.name}")
    state_dict = read_checkpoint(path, network.checkpoint_key)
    load_state_dict_strict(module, state_dict, str(path), f"a {network.name} checkpoint")
    return verify_official(path, network)


def build_network(network: ExtractorNetwork, weights: Path | None, random_seed: int | None, weights_dir: Path,
                  max_num_keypoints: int, detection_threshold: float, nms_radius: int) -> tuple[nn.Module, WeightsSource]:
    """The module with the requested weights (a file, seeded random ones, or the official file, downloaded
    when absent) and a description of them for the metadata."""
    module = make_module(network, max_num_keypoints, detection_threshold, nms_radius)
    if random_seed is not None:
        if weights is not None:
            raise WeightsError("choose one of --extractor-weights and --extractor-random-weights")
        load_state_dict_strict(module, random_state_dict(module, random_seed), f"random seed {random_seed}")
        return module, WeightsSource("random", f"random seed {random_seed} (for tests, not trained)")
    path = resolve_weights(network, weights, weights_dir, hint=WEIGHTS_HINT)
    return module, load_network_checkpoint(module, network, path)
