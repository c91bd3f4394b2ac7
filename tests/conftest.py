"""Shared fixtures. Exported models are made once per test session and reused across test files."""

from pathlib import Path

import pytest

from trt.datasets import DATA_DIR_VARIABLE, shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder (``$LG_DATA_DIR`` or ``../shared/data``); tests that need it skip without it."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set {DATA_DIR_VARIABLE})")
    return path


def profile_toml(*buckets: tuple[str, int, int, int], batch: tuple[int, int, int] = (1, 1, 1)) -> str:
    """A profile file's text: ``buckets`` of (name, min, opt, max) keypoints, one batch range."""
    lines = ["[batch]", f"min = {batch[0]}", f"opt = {batch[1]}", f"max = {batch[2]}"]
    for name, low, opt, high in buckets:
        lines += ["", "[[profile]]", f'name = "{name}"', f"keypoints = {{ min = {low}, opt = {opt}, max = {high} }}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def _cached(cache: Path, name: str, export, **kwargs) -> Path:
    """``cache/name.onnx``, exported by ``export(output=..., **kwargs)`` the first time."""
    path = cache / f"{name}.onnx"
    if not path.exists():
        export(output=path, **kwargs)
    return path


def _export(cache: Path, name: str, **kwargs) -> Path:
    from trt.onnx.export import export_matcher

    return _cached(cache, name, export_matcher, **kwargs)


@pytest.fixture(scope="session")
def sift_onnx(model_cache) -> Path:
    """SIFT matcher, dynamic shapes, seeded random weights of the official layout."""
    return _export(model_cache, "sift_random0", extractor="sift", random_seed=0, dynamic=True)


@pytest.fixture(scope="session")
def sift_nn_onnx(model_cache) -> Path:
    """SIFT matcher with the hand-set nearest-neighbour weights (meaningful matches without training)."""
    return _export(model_cache, "sift_nn", extractor="sift", nearest_neighbour=True, dynamic=True)


@pytest.fixture(scope="session")
def sift_sharp_onnx(model_cache) -> Path:
    """SIFT matcher with the sharp test weights (trt.models.sharp): what every backend-accuracy check uses."""
    return _export(model_cache, "sift_sharp0", extractor="sift", sharp_seed=0, dynamic=True)


@pytest.fixture(scope="session")
def superpoint_onnx(model_cache) -> Path:
    return _export(model_cache, "superpoint_random0", extractor="superpoint", random_seed=0, dynamic=True)


def _export_extractor(cache: Path, name: str, **kwargs) -> Path:
    from trt.onnx.export_extractor import export_extractor

    return _cached(cache, name, export_extractor, **kwargs)


@pytest.fixture(scope="session")
def aliked_checkpoint(data_dir) -> Path:
    """The official aliked-n16.pth from the shared data (never copied into the project)."""
    return data_dir / "aliked" / "aliked-n16.pth"


@pytest.fixture(scope="session")
def aliked_extractor_onnx(model_cache, aliked_checkpoint) -> Path:
    """ALIKED-n16 extractor, dynamic shapes, the official weights, K = 2048, the reference's threshold."""
    return _export_extractor(model_cache, "aliked-n16", extractor="aliked", weights=aliked_checkpoint)


@pytest.fixture(scope="session")
def superpoint_extractor_onnx(model_cache) -> Path:
    """SuperPoint extractor, dynamic shapes, seeded random weights of the official layout."""
    return _export_extractor(model_cache, "superpoint-random0", extractor="superpoint", random_seed=0)


@pytest.fixture(scope="session")
def disk_extractor_onnx(model_cache) -> Path:
    """DISK extractor, dynamic shapes, seeded random weights of the official layout."""
    return _export_extractor(model_cache, "disk-random0", extractor="disk", random_seed=0)


@pytest.fixture(scope="session")
def aliked_nn_onnx(model_cache) -> Path:
    """ALIKED matcher (128-D, no scales or orientations) with the hand-set nearest-neighbour weights."""
    return _export(model_cache, "aliked_nn", extractor="aliked", nearest_neighbour=True, dynamic=True)


def build_extractor_engine(onnx_path: Path, folder: Path, precision: str = "fp32", profiles: Path | None = None) -> Path:
    """A real tensorrt-rtx extractor engine (SM 8.9): the default image profiles unless ``profiles``."""
    from trt.engine.builder import build_engine

    return build_engine(onnx_path, profiles, folder / f"extractor-{precision}.engine", precision=precision,
                        builder="tensorrt-rtx", target_sm="8.9", progress=False)


@pytest.fixture(scope="session")
def aliked_engine(aliked_extractor_onnx, tmp_path_factory) -> Path:
    """ALIKED-n16 extractor engine, FP32, the default image profiles (profiles/extractors/aliked.toml)."""
    return build_extractor_engine(aliked_extractor_onnx, tmp_path_factory.mktemp("aliked"))


@pytest.fixture(scope="session")
def superpoint_engine(superpoint_extractor_onnx, tmp_path_factory) -> Path:
    """SuperPoint extractor engine (seeded random weights), FP32, the default image profiles."""
    return build_extractor_engine(superpoint_extractor_onnx, tmp_path_factory.mktemp("superpoint"))
