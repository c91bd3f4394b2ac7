"""`make sfm` on the ten Sacre-Coeur photos: every photo registered, sub-pixel reprojection error, and
COLMAP's own SIFT reconstruction of the same photos printed beside it.

The matcher is the nearest-neighbour-weights engine (trained weights are unavailable here), built by
the make chain from the session's ONNX with one 1-4096 keypoint profile.
"""

import importlib.util
import json
import re

import pytest
from conftest import profile_toml
from test_make import make

# Not imported here: pycolmap must load after the system zlib (trt.jobs.colmap.import_pycolmap).
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pycolmap") is None or importlib.util.find_spec("h5py") is None,
    reason="make sfm needs the sfm extra (pycolmap, h5py)",
)


@pytest.mark.slow
def test_make_sfm_registers_every_sacre_coeur_photo(sift_nn_onnx, data_dir, tmp_path):
    profiles = tmp_path / "n4096.toml"
    profiles.write_text(profile_toml(("n4096", 1, 4096, 4096), batch=(1, 1, 4)))
    out = tmp_path / "sfm"
    images = data_dir / "images" / "sacre_coeur" / "mapping"
    done = make("sfm", f"IMAGES={images}", f"OUT={out}", "EXTRACTOR=sift", "WEIGHTS=nn", f"ONNX={sift_nn_onnx}",
                f"ENGINE={tmp_path / 'sift-nn.engine'}", f"PROFILES={profiles}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("LightGlue (this engine)"):]
    print(table)  # both columns, in the test log
    assert re.search(r"registered images\s+10 / 10\s+10 / 10", table), table
    assert "COLMAP SIFT" in table and "mean reprojection error" in table and "mean track length" in table

    summary = json.loads((out / "summary.json").read_text())
    ours, colmap_sift = summary["ours"], summary["colmap_sift"]
    assert ours["registered"] == ours["images"] == 10 and ours["reprojection_error"] < 1.0
    assert ours["points3D"] > 300 and ours["track_length"] > 2.5
    assert colmap_sift["registered"] == 10 and colmap_sift["reprojection_error"] < 1.0
    assert summary["pairs"] == 45 and summary["database"]["images"] == 10
    assert summary["database"]["matched_pairs"] == 45 and summary["database"]["verified_pairs"] > 0

    from trt.jobs.colmap import import_pycolmap

    model = import_pycolmap().Reconstruction(out / "sparse" / "0")
    assert model.num_reg_images() == 10 and model.num_points3D() == ours["points3D"]
    assert sorted(image.name for image in model.images.values()) == sorted(p.name for p in images.glob("*.jpg"))
    assert (out / "database.db").is_file() and (out / "features.h5").is_file() and (out / "matches.h5").is_file()
    assert (out / "colmap-sift" / "sparse" / "0").is_dir()
    assert (out / "reconstruction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_sfm_needs_images_and_an_output_folder(tmp_path):
    assert "make sfm needs IMAGES=" in make("sfm", f"OUT={tmp_path}").stderr
    assert "make sfm needs OUT=" in make("sfm", f"IMAGES={tmp_path}").stderr


def test_comparison_table_puts_the_methods_side_by_side():
    from trt.sfm.colmap import ModelSummary
    from trt.sfm.pipeline import comparison_table

    lines = comparison_table({"ours": ModelSummary(10, 10, 866, 3.77, 0.487, 60.0),
                              "colmap_sift": ModelSummary(9, 10, 1520, 3.88, 0.319, 17.0)})
    assert lines[0].split() == ["LightGlue", "(this", "engine)", "COLMAP", "SIFT"]
    assert lines[1].split() == ["registered", "images", "10", "/", "10", "9", "/", "10"]
    assert lines[4].split()[-4:] == ["0.487", "px", "0.319", "px"]
