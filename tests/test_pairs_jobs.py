"""Pairs jobs (trt/jobs/) in one process: features once per image, resuming, bad pairs reported
with their line while the job goes on, unique output names, hloc's h5 layout, the COLMAP database.

Real engines (tensorrt-rtx, served through the ONNX Runtime fallback) on small copies of HPatches images.
"""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_trt_infer import GRAFFITI, build, error_line, run_cli

from trt.errors import PairsFailed, UserError
from trt.jobs.job import JobReport, prepare_output_dir, run_pairs_job
from trt.jobs.pairs import check_unique_outputs, read_pairs, require_relative_names
from trt.jobs.stages import LocalStages
from trt.jobs.writers import PairFiles, output_key
from trt.runtime.matcher import Matcher

KEYPOINTS = "256"


@pytest.fixture(scope="session")
def nn_engine(sift_nn_onnx, model_cache) -> Path:
    return build(sift_nn_onnx, model_cache)


@pytest.fixture(scope="session")
def photos(data_dir, tmp_path_factory) -> Path:
    """Four half-size graffiti photos, a.jpg … d.jpg, and copies of a.jpg as sub/a.jpg and sub-a.jpg
    (whose flattened names collide)."""
    folder = tmp_path_factory.mktemp("photos")
    for name, index in zip("abcd", (1, 2, 3, 4)):
        image = cv2.imread(str(data_dir / GRAFFITI / f"{index}.jpg"))
        cv2.imwrite(str(folder / f"{name}.jpg"), image[::2, ::2])
    (folder / "sub").mkdir()
    shutil.copy(folder / "a.jpg", folder / "sub" / "a.jpg")
    shutil.copy(folder / "a.jpg", folder / "sub-a.jpg")
    return folder


def pairs_file(folder: Path, *lines: str, name: str = "pairs.txt") -> Path:
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def match_cli(engine: Path, pairs: Path, out: Path, *extra):
    return run_cli("--engine", engine, "--pairs", pairs, "--output-dir", out, "--max-keypoints", KEYPOINTS,
                   "--threshold", "0", *extra)


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files a job must never leave behind."""
    return [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial")) or p.name.startswith(".features-")]


# --- the job -----------------------------------------------------------------------------------------------


def test_each_image_is_extracted_once_and_a_rerun_resumes(nn_engine, photos, tmp_path):
    """Exhaustive pairs of four images: four extractions, not eight; a rerun matches nothing again; a
    damaged output is redone alone; other settings are refused rather than mixed in."""
    pairs = pairs_file(tmp_path, "a.jpg b.jpg", "a.jpg c.jpg", "a.jpg d.jpg", "b.jpg c.jpg", "b.jpg d.jpg", "c.jpg d.jpg")
    out = tmp_path / "out"
    with Matcher.from_engine(nn_engine, max_keypoints=int(KEYPOINTS), threshold=0) as matcher:
        extracted = []
        extract = matcher.extract
        matcher.extract = lambda image: extracted.append(image) or extract(image)
        stages = LocalStages(matcher, spill_parent=out, max_feature_bytes=1)  # spill all but one image
        outputs = PairFiles(prepare_output_dir(out), "npz", threshold=0)
        report = run_pairs_job(read_pairs(pairs, photos), outputs, stages, progress=False)
        stages.close()
        assert len(extracted) == 4 and report.images == 4
        direct = matcher.match(photos / "a.jpg", photos / "b.jpg")
    with np.load(out / "a.jpg__b.jpg.npz") as npz:  # both images' features went through the spill folder
        np.testing.assert_array_equal(npz["matches"], direct.matches)
        np.testing.assert_array_equal(npz["keypoints1"], direct.keypoints1)
    assert (report.written, report.skipped, report.failed) == (6, 0, 0)
    written = sorted(out.glob("*.npz"))
    assert [p.name for p in written][:2] == ["a.jpg__b.jpg.npz", "a.jpg__c.jpg.npz"] and len(written) == 6
    assert leftovers(out) == []  # the spill folder is gone

    resume = ("--format", "npz", "--image-dir", photos)
    done = match_cli(nn_engine, pairs, out, *resume)
    assert done.returncode == 0, done.stderr
    assert "resuming: 6 of 6 pairs are already done" in done.stderr and "6 pairs: 0 matched, 6 already done" in done.stdout

    written[2].write_bytes(written[2].read_bytes()[:100])  # a damaged file is not a valid output
    before = {p: p.stat().st_mtime_ns for p in written}
    done = match_cli(nn_engine, pairs, out, *resume)
    assert done.returncode == 0 and "1 matched, 5 already done" in done.stdout, done.stdout + done.stderr
    assert [p for p in written if p.stat().st_mtime_ns != before[p]] == [written[2]]
    with np.load(written[2]) as npz:
        assert len(npz["matches"]) > 0

    refused = match_cli(nn_engine, pairs, out, *resume, "--threshold", "0.5")
    assert "holds the outputs of a job with other settings (threshold 0.0 now 0.5)" in error_line(refused)
    assert "--overwrite" in error_line(refused)


def test_single_process_matches_equal_one_match_call_each(nn_engine, photos, tmp_path):
    pairs = pairs_file(tmp_path, f"{photos}/a.jpg {photos}/b.jpg", f"{photos}/c.jpg {photos}/a.jpg")
    done = match_cli(nn_engine, pairs, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    with Matcher.from_engine(nn_engine, max_keypoints=int(KEYPOINTS), threshold=0) as matcher:
        direct = matcher.match(photos / "c.jpg", photos / "a.jpg")
    flat = str(photos).strip("/").replace("/", "-")
    record = json.loads((tmp_path / "out" / f"{flat}-c.jpg__{flat}-a.jpg.json").read_text())
    np.testing.assert_array_equal(record["matches"], direct.matches)
    assert record["image0"] == str(photos / "c.jpg")


# --- bad input ----------------------------------------------------------------------------------------------


def test_bad_pairs_are_reported_with_their_line_and_the_job_goes_on(nn_engine, photos, tmp_path):
    (tmp_path / "text.jpg").write_text("not an image\n")
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(photos / name, tmp_path / name)
    pairs = pairs_file(tmp_path, "a.jpg b.jpg", "a.jpg gone.jpg", "text.jpg b.jpg", "b.jpg a.jpg")
    out = tmp_path / "out"
    done = match_cli(nn_engine, pairs, out)
    assert done.returncode == 3, done.stderr  # 3: some pairs failed, the others are written
    line = error_line(done)
    assert line.startswith("error: 2 of 4 pairs failed") and f"{pairs}:2: no image at {tmp_path / 'gone.jpg'}" in line
    assert f"failed: {pairs}:3: cannot read image {tmp_path / 'text.jpg'}" in done.stdout
    assert "2 matched, 0 already done, 2 failed" in done.stdout and "wrote 2 json file(s)" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [".job.json", "a.jpg__b.jpg.json", "b.jpg__a.jpg.json"]
    for path in out.glob("*.json"):
        if path.name != ".job.json":
            assert len(json.loads(path.read_text())["matches"]) > 0


@pytest.mark.parametrize(
    "lines, message",
    [
        (["a.jpg b.jpg", "c.jpg c.jpg"], "pairs.txt:2: names the image c.jpg twice"),
        (["a.jpg ./sub/../a.jpg"], "pairs.txt:1: names the image a.jpg twice"),
        (["sub/a.jpg b.jpg", "sub-a.jpg b.jpg"], "pairs.txt:2 \\(sub-a.jpg b.jpg\\) and line 1 \\(sub/a.jpg b.jpg\\) would both write sub-a.jpg__b.jpg.json"),
        (["a.jpg b.jpg c.jpg"], "pairs.txt:1: expected two image paths, got 3"),
    ],
)
def test_a_bad_pairs_file_is_refused_before_any_work(nn_engine, photos, tmp_path, lines, message):
    import re

    pairs = pairs_file(tmp_path, *lines)
    done = match_cli(nn_engine, pairs, tmp_path / "out", "--image-dir", photos)
    line = error_line(done)
    assert done.returncode == 2 and re.search(message, line), line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_hloc_names_that_collide_are_refused(photos, tmp_path):
    pairs = read_pairs(pairs_file(tmp_path, "sub/a.jpg b.jpg", "sub-a.jpg b.jpg"), image_dir=photos)
    with pytest.raises(UserError, match=":2 .* would both write sub-a.jpg/b.jpg"):
        check_unique_outputs(pairs, output_key("hloc"))


def test_a_repeated_pair_is_matched_once(photos, tmp_path):
    with pytest.warns(UserWarning, match=r"pairs.txt:3 repeats the pair of line 1: .*matched once"):
        pairs = read_pairs(pairs_file(tmp_path, "a.jpg b.jpg", "b.jpg a.jpg", "./a.jpg b.jpg"), image_dir=photos)
    assert [(e.line, e.names) for e in pairs.entries] == [(1, ("a.jpg", "b.jpg")), (2, ("b.jpg", "a.jpg"))]


def test_output_dir_that_is_a_file_is_named(nn_engine, photos, tmp_path):
    pairs = pairs_file(tmp_path, "a.jpg b.jpg")
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    line = error_line(match_cli(nn_engine, pairs, target, "--image-dir", photos))
    assert line == f"error: the output folder {target} is a file" and "probe" not in line
    assert target.read_text() == "keep me\n"


def test_unwritable_output_dir(nn_engine, photos, tmp_path):
    pairs = pairs_file(tmp_path, "a.jpg b.jpg")
    target = Path("/sys/lightglue-out")  # sysfs: no new folders, even for root
    if target.exists():
        pytest.skip(f"{target} exists here")
    line = error_line(match_cli(nn_engine, pairs, target, "--image-dir", photos))
    assert line.startswith(f"error: cannot create the output folder {target}: "), line
    if os.geteuid() != 0:  # root writes through permissions: a read-only folder needs another user
        folder = tmp_path / "read-only"
        folder.mkdir()
        (folder / "earlier.json").write_text("{}\n")
        folder.chmod(0o500)
        try:
            line = error_line(match_cli(nn_engine, pairs, folder, "--image-dir", photos))
        finally:
            folder.chmod(0o700)
        assert line.startswith(f"error: cannot write in the output folder {folder}: Permission denied"), line
        assert [p.name for p in folder.iterdir()] == ["earlier.json"]


def test_a_failed_write_ends_the_job_and_earlier_outputs_stay_valid(nn_engine, photos, tmp_path):
    pairs = pairs_file(tmp_path, "a.jpg b.jpg", "a.jpg c.jpg", "b.jpg c.jpg")
    out = tmp_path / "out"
    (out / "a.jpg__c.jpg.json").mkdir(parents=True)  # the second pair's output cannot be written
    line = error_line(match_cli(nn_engine, pairs, out, "--image-dir", photos))
    assert "cannot write the outputs: output path" in line and "a.jpg__c.jpg.json is a directory" in line
    assert "the 1 pairs written before are valid, and a rerun resumes from them" in line
    assert json.loads((out / "a.jpg__b.jpg.json").read_text())["matches"]
    assert not (out / "b.jpg__c.jpg.json").exists() and leftovers(out) == []


# --- hloc and COLMAP ----------------------------------------------------------------------------------------


def test_hloc_files_and_colmap_database(nn_engine, photos, tmp_path):
    """features.h5 / matches.h5 in hloc's layout (read with h5py as hloc's readers do), the same
    matches as the json output, and a COLMAP database with the right images, keypoints and matches."""
    h5py = pytest.importorskip("h5py")
    from trt.jobs.colmap import import_pycolmap

    pycolmap = import_pycolmap()  # after the system zlib, not pytest.importorskip (see its docstring)
    from trt.jobs.hloc import names_to_pair

    pairs = pairs_file(tmp_path, "a.jpg b.jpg", "sub/a.jpg c.jpg", "b.jpg c.jpg")
    common = ("--image-dir", photos)
    assert match_cli(nn_engine, pairs, tmp_path / "json", *common).returncode == 0
    database = tmp_path / "db" / "colmap.db"
    done = match_cli(nn_engine, pairs, tmp_path / "hloc", *common, "--format", "hloc", "--colmap-db", database)
    assert done.returncode == 0, done.stderr
    assert leftovers(tmp_path / "hloc") == [] and sorted(p.name for p in (tmp_path / "hloc").iterdir()) == [
        ".job.json", "features.h5", "matches.h5"]

    images = ["a.jpg", "b.jpg", "c.jpg", "sub/a.jpg"]
    with h5py.File(tmp_path / "hloc" / "features.h5", "r") as features, \
            h5py.File(tmp_path / "hloc" / "matches.h5", "r") as matches:
        names = set()
        features.visititems(lambda _, obj: names.add(obj.parent.name.strip("/")) if isinstance(obj, h5py.Dataset) else None)
        assert names == set(images)  # hloc.utils.io.list_h5_names
        counts = {}
        for name in images:
            group = features[name]
            keypoints, descriptors = group["keypoints"][()], group["descriptors"][()]
            assert keypoints.dtype == np.float32 and keypoints.shape[1] == 2
            assert descriptors.dtype == np.float32 and descriptors.shape == (128, len(keypoints))  # [D, N]
            np.testing.assert_allclose(np.linalg.norm(descriptors, axis=0), 1, atol=1e-5)  # RootSIFT columns
            assert group["scores"].shape == (len(keypoints),) and group["image_size"].dtype == np.int64
            assert list(group["image_size"][()]) == [400, 320]  # (width, height)
            assert group["keypoints"].attrs["uncertainty"] == pytest.approx(400 / 1024)
            counts[name] = len(keypoints)
        for line in pairs.read_text().splitlines():
            name0, name1 = line.split()
            group = matches[names_to_pair(name0, name1)]
            matches0, scores0 = group["matches0"][()], group["matching_scores0"][()]
            assert matches0.dtype == np.int16 and scores0.dtype == np.float16 and matches0.shape == (counts[name0],)
            index = np.flatnonzero(matches0 != -1)  # hloc.utils.io.get_matches
            record = json.loads((tmp_path / "json" / f"{name0.replace('/', '-')}__{name1}.json").read_text())
            np.testing.assert_array_equal(np.stack([index, matches0[index]], -1), record["matches"])
            np.testing.assert_allclose(scores0[index], record["scores"], rtol=1e-3)
            assert (scores0[matches0 == -1] == 0).all()
            np.testing.assert_array_equal(features[name0]["keypoints"][()], np.float32(record["keypoints0"]))
    assert "sub-a.jpg" in matches_keys(tmp_path / "hloc" / "matches.h5")

    again = match_cli(nn_engine, pairs, tmp_path / "hloc", *common, "--format", "hloc")
    assert again.returncode == 0 and "0 matched, 3 already done" in again.stdout, again.stdout + again.stderr

    with pycolmap.Database.open(database) as db:
        assert db.num_images() == 4 and db.num_cameras() == 4
        assert db.num_keypoints() == sum(counts.values())
        assert db.num_matched_image_pairs() == 3 and db.num_matches() == sum(
            len(json.loads(p.read_text())["matches"]) for p in (tmp_path / "json").glob("*__*.json"))
        ids = {image.name: image.image_id for image in db.read_all_images()}
        assert set(ids) == set(images)
        with h5py.File(tmp_path / "hloc" / "features.h5", "r") as features:
            np.testing.assert_allclose(db.read_keypoints(ids["b.jpg"])[:, :2], features["b.jpg"]["keypoints"][()] + 0.5)


def matches_keys(path: Path) -> set[str]:
    import h5py

    with h5py.File(path, "r") as file:
        return set(file)


def test_colmap_needs_names_below_the_image_folder(tmp_path, photos):
    pairs = read_pairs(pairs_file(tmp_path, f"{photos}/a.jpg {photos}/b.jpg"))
    with pytest.raises(UserError, match="COLMAP names images by their path below the image folder"):
        require_relative_names(pairs, "COLMAP")


def test_failures_raise_with_exit_status_3():
    report = JobReport(pairs=5, written=3, failures=[("p.txt:2", "no image at x.jpg"), ("p.txt:4", "bad")])
    with pytest.raises(PairsFailed, match=r"2 of 5 pairs failed \(listed above; first p.txt:2: no image at x.jpg\)") as error:
        report.raise_for_failures()
    assert error.value.exit_status == 3


def test_pairs_jobs_ray_and_sfm_import_no_torch():
    """The serving side stays light: Ray jobs, hloc and COLMAP outputs import neither torch nor the exporter."""
    import subprocess
    import sys

    driver = (
        "import importlib.util, sys\n"
        "import trt.jobs.ray_stages, trt.sfm.pipeline, trt.jobs.hloc\n"
        "if importlib.util.find_spec('ray'):\n"
        "    import ray\n"
        "from trt.jobs.colmap import import_pycolmap\n"
        "import_pycolmap()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'tensorrt', 'tensorrt_rtx')"
        " or m.startswith(('trt.onnx', 'trt.models'))]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
