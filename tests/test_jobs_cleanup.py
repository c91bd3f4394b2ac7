"""A failed run leaves the file system as it found it (issue 20, item 3): every failing command removes
the files and folders it created and leaves what existed untouched; a run that ends with some pairs
failed (exit status 3) keeps its valid outputs only. Also the pairs a folder of images makes
(``--pairs exhaustive|sequential[:K]``) and where a job says names are looked for (issue 23, item 6).
"""

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from bad_inputs import snapshot
from hypothesis import strategies as st
from test_pairs_jobs import KEYPOINTS, match_cli, nn_engine, pairs_file, photos  # noqa: F401 - fixtures
from test_trt_infer import error_line, run_cli

from trt.errors import UserError
from trt.fileio import CreatedPaths
from trt.jobs.job import prepare_output_dir, run_pairs_job
from trt.jobs.pairs import make_pairs, pairing, read_pairs
from trt.jobs.stages import LocalStages
from trt.jobs.writers import PairFiles
from trt.runtime.matcher import Matcher


# --- the rule, on random trees -------------------------------------------------------------------------------

parts = st.sampled_from(["a", "b", "c"])
paths = st.lists(parts, min_size=1, max_size=4).map(lambda names: Path(*names))


@settings(max_examples=60, deadline=None)
@given(existing=st.lists(paths, max_size=5), created=st.lists(st.tuples(paths, st.booleans()), min_size=1, max_size=5),
       fails=st.booleans())
def test_created_paths_are_removed_on_failure_and_nothing_else(tmp_path_factory, existing, created, fails):
    """Whatever existed (files, folders) stays byte for byte; whatever the block created goes if it fails."""
    root = tmp_path_factory.mktemp("tree")
    for path in existing:  # a file where one fits; paths below an existing file are skipped
        target = root / path
        if not any((root / parent).is_file() for parent in path.parents) and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(path))
    before = snapshot(root)
    try:
        with CreatedPaths() as tracker:
            for path, is_folder in created:
                target = root / path
                if any(p.is_file() for p in (target, *target.parents)) or target.is_dir():
                    continue  # cannot create (a file in the way), or nothing to create
                if is_folder:
                    tracker.track_folder(target)
                    target.mkdir(parents=True)
                else:
                    tracker.track(target)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text("new")
            if fails:
                raise RuntimeError("the command failed")
    except RuntimeError:
        pass
    after = snapshot(root)
    if fails:
        assert after == before
    else:
        assert {k: v for k, v in after.items() if k in before} == before


def test_an_existing_folder_loses_only_what_was_added_to_it(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError), CreatedPaths() as tracker:
        tracker.track_folder(tmp_path / "out")
        (tmp_path / "out" / "new.json").write_text("{}")
        (tmp_path / "out" / "sub").mkdir()
        raise RuntimeError
    assert set(snapshot(tmp_path)) == {"out", "out/mine.txt"} and (tmp_path / "out" / "mine.txt").read_text() == "keep"


# --- the rule, on the commands -------------------------------------------------------------------------------


def failing_commands(engine: Path, photos: Path, work: Path) -> dict[str, list]:
    """Commands that fail (exit status 2) after creating output folders, by what they get wrong."""
    pairs = pairs_file(work, f"{photos}/a.jpg {photos}/b.jpg", name="pairs.txt")
    missing_engine = work / "no.engine"
    return {
        "pairs job, no engine": ["--engine", missing_engine, "--pairs", pairs, "--output-dir", work / "new" / "out"],
        "pairs job into an existing folder": ["--engine", missing_engine, "--pairs", pairs, "--output-dir", work / "old"],
        "pairs job with a COLMAP database": ["--engine", missing_engine, "--pairs", pairs, "--output-dir", work / "out",
                                             "--colmap-db", work / "db" / "colmap.db"],
        "pairs of a folder, no engine": ["--engine", missing_engine, "--pairs", "exhaustive", "--image-dir", photos,
                                         "--output-dir", work / "made"],
        "one pair, a missing image": ["--engine", engine, photos / "a.jpg", work / "gone.jpg",
                                      "--output", work / "m" / "m.json", "--viz", work / "v" / "v.png"],
        "one pair, no engine": ["--engine", missing_engine, photos / "a.jpg", photos / "b.jpg",
                                "--output", work / "m" / "deep" / "m.npz"],
    }


FAILING = ["pairs job, no engine", "pairs job into an existing folder", "pairs job with a COLMAP database",
           "pairs of a folder, no engine", "one pair, a missing image", "one pair, no engine"]


@pytest.mark.parametrize("case", FAILING)
def test_a_failing_command_leaves_the_file_system_as_it_found_it(nn_engine, photos, tmp_path, case):  # noqa: F811
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("the user's own file")
    args = failing_commands(nn_engine, photos, tmp_path)[case]
    before = snapshot(tmp_path)
    done = run_cli(*args)
    error_line(done)  # one clear error, no traceback
    assert done.returncode == 2, done.stderr
    assert snapshot(tmp_path) == before


def test_a_run_whose_pairs_all_failed_leaves_nothing(nn_engine, photos, tmp_path):  # noqa: F811
    """Exit status 3 keeps valid outputs only: with none, no folder, settings or empty h5 file is left."""
    pairs = pairs_file(tmp_path, "a.jpg gone.jpg", "gone.jpg b.jpg")
    for args in (("--output-dir", tmp_path / "json"), ("--output-dir", tmp_path / "hloc", "--format", "hloc")):
        done = run_cli("--engine", nn_engine, "--pairs", pairs, "--image-dir", photos, *args)
        assert done.returncode == 3 and "2 of 2 pairs failed" in error_line(done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.txt"]


# --- pairs made from a folder ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("exhaustive", ("exhaustive", 0)), ("sequential", ("sequential", 10)), ("sequential:3", ("sequential", 3)),
    ("pairs.txt", None), ("sequential.txt", None), ("exhaustive/pairs.txt", None),
])
def test_pairing_names(spec, expected):
    assert pairing(spec) == expected


@pytest.mark.parametrize("spec", ["sequential:0", "sequential:x", "sequential:", "sequential:-2"])
def test_a_bad_overlap_is_refused(spec):
    with pytest.raises(UserError, match="sequential:K pairs each image with the next K, a whole number of at least 1"):
        pairing(spec)


def test_exhaustive_and_sequential_pairs():
    names = ["a", "b", "c", "d"]
    assert make_pairs(names, "exhaustive") == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert make_pairs(names, "sequential", 2) == [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert make_pairs(names, "sequential", 10) == make_pairs(names, "exhaustive")


def test_sequential_pairs_of_a_folder_on_the_command_line(nn_engine, photos, tmp_path):  # noqa: F811
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(photos / name, folder / name)
    out = tmp_path / "out"
    done = run_cli("--engine", nn_engine, "--pairs", "sequential:1", "--image-dir", folder, "--output-dir", out,
                   "--max-keypoints", KEYPOINTS)
    assert done.returncode == 0, done.stderr
    assert (out / "pairs-sequential-1.txt").read_text() == "a.jpg b.jpg\nb.jpg c.jpg\n"
    assert sorted(p.name for p in out.glob("[!.]*.json")) == ["a.jpg__b.jpg.json", "b.jpg__c.jpg.json"]
    assert "2 pairs: 2 matched" in done.stdout


@pytest.mark.parametrize("args, message", [
    (("{photos}", "{photos}/a.jpg"), "is a folder: to match its images, give --pairs exhaustive"),
    (("--pairs", "exhaustive", "--output-dir", "{tmp}/out"), "--pairs exhaustive pairs the images of a folder: give it with --image-dir"),
    (("--pairs", "sequential:0", "--image-dir", "{photos}", "--output-dir", "{tmp}/out"), "sequential:K pairs each image"),
])
def test_folder_mistakes_are_explained(photos, tmp_path, args, message):  # noqa: F811
    args = [arg.format(photos=photos, tmp=tmp_path) for arg in args]
    done = run_cli("--engine", tmp_path / "any.engine", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_the_first_missing_image_says_where_names_are_looked_for(nn_engine, photos, tmp_path):  # noqa: F811
    """Names relative to the photos, the pairs file elsewhere, --image-dir forgotten: every pair fails, and
    the first failure says why."""
    pairs = pairs_file(tmp_path, "a.jpg b.jpg", "b.jpg c.jpg")
    done = match_cli(nn_engine, pairs, tmp_path / "out")
    assert done.returncode == 3
    assert (f"{pairs}:1: no image at {tmp_path / 'a.jpg'} (image names are relative to the pairs file's folder, "
            f"{tmp_path}, unless an image folder is given: --image-dir)") in done.stdout
    assert f"{pairs}:2: no image at {tmp_path / 'b.jpg'}\n" in done.stdout  # said once


def test_progress_moves_with_each_engine_call(nn_engine, photos, tmp_path):  # noqa: F811
    """A local job matches one engine batch per call (at most the profile's batch, 4 here), so its
    progress moves as pairs are matched, not 16 pairs at a time."""
    pairs = read_pairs(pairs_file(tmp_path, "a.jpg b.jpg", "a.jpg c.jpg", "a.jpg d.jpg", "b.jpg c.jpg", "b.jpg d.jpg",
                                  "c.jpg d.jpg"), photos)
    seen = []
    with Matcher.from_engine(nn_engine, max_keypoints=int(KEYPOINTS)) as matcher:
        with LocalStages(matcher, spill_parent=tmp_path) as stages:
            assert stages.chunk_size(6) == 4  # the test profile's batch: 1 to 4
            run_pairs_job(pairs, PairFiles(prepare_output_dir(tmp_path / "out"), "json", 0.1), stages,
                          progress=False, on_chunk=lambda report: seen.append(report.written))
    assert seen == [4, 6]
