"""Matcher weights: official files (downloaded and verified), seeded random ones, and strict loading.

The loading, verification and download helpers also serve the extractor networks
(``trt/models/networks.py``): they take anything with the ``weights_*`` fields of ``Extractor``.

Loading is strict: after the rename table below, every parameter of the model must be in the file
and nothing else may be (only the derived ``confidence_thresholds`` buffer may be absent, and the unused
``log_assignment.{i}.r`` of the official DISK file is dropped). A file of
another layout is an error listing the keys, never a silently half-random model.
"""

import os
import re
import sys
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from trt.errors import WeightsError
from trt.extractors import Extractor
from trt.fileio import atomic_path, check_regular_file, sha256_file

# Checkpoints of v0.1 name the transformer blocks ``self_attn.{i}`` / ``cross_attn.{i}``.
RENAMES = [
    (re.compile(r"^self_attn\.(\d+)\."), r"transformers.\1.self_attn."),
    (re.compile(r"^cross_attn\.(\d+)\."), r"transformers.\1.cross_attn."),
]
OPTIONAL_KEYS = {"confidence_thresholds"}
# The official DISK file (v0.1_arxiv) also holds ``log_assignment.{i}.r``, 1.0 in every layer, which no
# LightGlue reads (cvg and kornia load with strict=False and never use it): dropped, not an unexpected key.
UNUSED_KEYS = re.compile(r"^log_assignment\.\d+\.r$")
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class WeightsSource:
    """Which weights a model carries, as recorded in the ONNX metadata and engine manifest."""

    kind: str  # "official", "file" (a checkpoint with another hash), "random" or "nearest-neighbour"
    description: str  # "sha256:<hex>", "random seed N", ...


def rename_keys(state_dict: dict) -> dict:
    renamed = {}
    for key, value in state_dict.items():
        if UNUSED_KEYS.match(key):
            continue
        for pattern, replacement in RENAMES:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict, origin: str,
                           layout: str = "a LightGlue checkpoint") -> None:
    """Load after renaming; missing, unexpected or mis-shaped keys are one error listing them."""
    state_dict = rename_keys(state_dict)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict) - OPTIONAL_KEYS)
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(
        f"{key} {tuple(state_dict[key].shape)} (expected {tuple(expected[key].shape)})"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or mis_shaped:
        problems = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:12]) + (f", … ({len(keys)} in all)" if len(keys) > 12 else "")
                problems.append(f"{label}: {shown}")
        raise WeightsError(f"{origin} is not {layout} of this layout; " + "; ".join(problems))
    model.load_state_dict({**expected, **state_dict}, strict=True)


def read_checkpoint(path: Path, key: str | None = None) -> dict:
    """torch.load with weights_only=True; unreadable or truncated files are a WeightsError.

    ``key``: the state dict is nested under this key of the file (DISK's ``extractor``).
    """
    check_regular_file(path, "weights file", WeightsError)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors...
        raise WeightsError(f"cannot read weights file {path} (truncated or not a PyTorch checkpoint): {error}") from None
    if key is not None:
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get(key), dict):
            raise WeightsError(f"weights file {path} has no {key!r} entry holding a state dict")
        state_dict = state_dict[key]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return state_dict


def verify_official(path: Path, extractor: Extractor) -> WeightsSource:
    """sha256 of a checkpoint; a hash other than the official one is a warning naming both."""
    digest = sha256_file(path)
    if digest == extractor.weights_sha256:
        return WeightsSource("official", f"sha256:{digest}")
    warnings.warn(
        f"{path} has sha256 {digest}, not the official {extractor.weights_sha256} of "
        f"{extractor.weights_filename}; exporting it anyway",
        stacklevel=2,
    )
    return WeightsSource("file", f"sha256:{digest}")


# Messages name flags; under make, trt.cli writes them as make variables (WEIGHTS=FILE, WEIGHTS=nn, ...).
MATCHER_HINT = ("pass --weights FILE, or export test weights (not trained): --nearest-neighbour-weights, "
                "--sharp-weights SEED or --random-weights SEED")


def download_official(extractor: Extractor, destination: Path, progress: bool = True, hint: str = MATCHER_HINT) -> Path:
    """Fetch the official checkpoint with a progress bar; offline, one message with the URL, the path and
    ``hint`` (the flags that give weights another way)."""
    url = extractor.weights_url
    try:
        response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, OSError) as error:
        raise WeightsError(
            f"no weights at {destination} and they cannot be downloaded ({getattr(error, 'reason', error)}). "
            f"Download {url} and put it at {destination}, {hint}"
        ) from None
    from tqdm import tqdm

    total = int(response.headers.get("Content-Length") or 0) or extractor.weights_bytes
    with atomic_path(destination) as tmp, open(tmp, "wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, desc=extractor.weights_filename, disable=not progress, file=sys.stderr
    ) as bar:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            out.write(chunk)
            bar.update(len(chunk))
    return destination


def resolve_weights(extractor: Extractor, weights: Path | None, weights_dir: Path = Path("weights"),
                    hint: str = MATCHER_HINT) -> Path:
    """The checkpoint to load: ``weights`` if given, else the official file, downloaded when absent."""
    if weights is not None:
        return check_regular_file(weights, "weights file", WeightsError)
    path = weights_dir / extractor.weights_filename
    if not os.path.lexists(path):
        download_official(extractor, path, hint=hint)
    return check_regular_file(path, "weights file", WeightsError)


def load_checkpoint(model: torch.nn.Module, extractor: Extractor, path: Path) -> WeightsSource:
    state_dict = read_checkpoint(path)
    load_state_dict_strict(model, state_dict, str(path))
    return verify_official(path, extractor)


def random_state_dict(model: torch.nn.Module, seed: int) -> dict:
    """A seeded random checkpoint with exactly the official layout (v0.1 key names included).

    Linear weights are drawn like PyTorch's default initialisation, so activations stay in the range
    of a real model; the positional encoding uses the reference's N(0, 1) init. For tests only.
    """
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, tensor in model.state_dict().items():
        if key in OPTIONAL_KEYS:
            continue
        if key.endswith(".ffn.1.weight"):  # LayerNorm gain
            value = 1.0 + 0.1 * torch.randn(tensor.shape, generator=generator)
        elif key.startswith("posenc."):
            value = torch.randn(tensor.shape, generator=generator)
        else:
            fan_in = tensor.shape[-1] if tensor.dim() > 1 else None
            bound = (fan_in or 256) ** -0.5
            value = (torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound
        state_dict[key] = value.to(tensor.dtype)
    legacy = {}
    for key, value in state_dict.items():
        key = re.sub(r"^transformers\.(\d+)\.(self_attn|cross_attn)\.", r"\2.\1.", key)
        legacy[key] = value
    return legacy
