"""COLMAP databases and reconstructions through pycolmap (4.x): what ``--colmap-db`` and ``make sfm`` run.

``write_database`` puts a pairs job's images, keypoints and raw matches into a new COLMAP database:
cameras and images come from ``pycolmap.import_images`` (one camera per image, COLMAP's SIMPLE_RADIAL
with its focal-length prior, exactly as COLMAP's own feature extractor makes them), keypoints are
shifted by +0.5 px to COLMAP's convention (the top-left pixel's corner at (0, 0)), and each unordered
pair's matches are written once. ``verify`` runs COLMAP's geometric verification on every matched pair,
``reconstruct`` its incremental mapper. The database is written to a temporary file and renamed onto
its path, so an existing database is replaced only by a complete one.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from trt.errors import UserError
from trt.fileio import atomic_path, check_writable

COLMAP_PIXEL_OFFSET = 0.5  # COLMAP puts (0, 0) at the top-left corner of the image, we at the first pixel's centre
RANSAC_MAX_TRIALS = 20000  # geometric verification as hloc runs it for learned matchers
RANSAC_MIN_INLIER_RATIO = 0.1
# The initial pair must see its points under this angle (COLMAP's default: 16 degrees). With fewer
# matches per pair than COLMAP's 8k SIFT features give, the pairs wide enough for 16 degrees often have
# too few inliers, and the mapper settled for a 2-6 image model in 4 of 10 runs on the Sacre-Coeur
# photos; at 8 degrees every run registered all ten. Both reconstructions of make sfm use it.
INIT_MIN_TRI_ANGLE = 8.0


@functools.lru_cache(maxsize=None)
def import_pycolmap():
    """pycolmap, imported safely: its wheel exports the zlib it bundles, and when it is loaded before
    the system's zlib, other libraries' zlib calls land in it (Pillow's PNG writer, under matplotlib,
    then aborts with "free(): invalid pointer"). Loading the system zlib globally first prevents that."""
    try:
        ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:  # no shared system zlib (not Linux): nothing for pycolmap's to displace
        pass
    try:
        import pycolmap
    except ImportError:
        raise UserError("COLMAP outputs need pycolmap: pip install 'lightglue-trt[sfm]'") from None
    return pycolmap


@contextlib.contextmanager
def colmap_log_level(level: int = 1) -> Iterator[None]:
    """COLMAP's log below ``level`` (glog: 0 info, 1 warning, 2 error) silenced for the block."""
    logging = import_pycolmap().logging
    previous = logging.minloglevel
    logging.minloglevel = level
    try:
        yield
    finally:
        logging.minloglevel = previous


def check_database_path(path: Path) -> Path:
    """Fail before any work when the database cannot be written at ``path``."""
    import_pycolmap()
    return check_writable(Path(path))


def write_database(path: Path, image_dir: Path, pairs: Iterable) -> str:
    """A new COLMAP database at ``path`` with the images, keypoints and raw matches of ``pairs``:
    (PairEntry, PairMatches) as ``Outputs.read_all`` yields them. Image names are paths below
    ``image_dir``. Returns one line describing it."""
    pycolmap = import_pycolmap()
    keypoints: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    matches: dict[tuple[str, str], np.ndarray] = {}
    for entry, pair in pairs:
        for name, points, size in ((entry.name0, pair.keypoints0, pair.image_size0), (entry.name1, pair.keypoints1, pair.image_size1)):
            known = keypoints.setdefault(name, points)
            if known is not points and not np.array_equal(known, points):
                raise UserError(
                    f"the outputs hold two different keypoint sets of {name}, so they come from different runs: "
                    "rerun the job with --overwrite"
                )
            sizes[name] = tuple(int(round(v)) for v in size)
        if (entry.name1, entry.name0) not in matches:  # COLMAP keeps one match list per unordered pair
            matches[(entry.name0, entry.name1)] = pair.matches
    if not keypoints:
        raise UserError(f"no matched pairs to write into the COLMAP database {path}")
    with atomic_path(Path(path)) as tmp, colmap_log_level():
        pycolmap.Database.open(tmp).close()
        pycolmap.import_images(tmp, image_dir, camera_mode=pycolmap.CameraMode.AUTO, image_names=sorted(keypoints))
        with pycolmap.Database.open(tmp) as database:
            images = {image.name: image for image in database.read_all_images()}
            for name, points in keypoints.items():
                camera = database.read_camera(images[name].camera_id)
                if (camera.width, camera.height) != sizes[name]:
                    raise UserError(
                        f"COLMAP reads {name} as {camera.width}x{camera.height} pixels but the matcher saw "
                        f"{sizes[name][0]}x{sizes[name][1]} (an EXIF orientation COLMAP ignores?): rotate the file itself"
                    )
                database.write_keypoints(images[name].image_id, np.asarray(points, np.float32) + COLMAP_PIXEL_OFFSET)
            for (name0, name1), pair_matches in matches.items():
                database.write_matches(images[name0].image_id, images[name1].image_id, np.asarray(pair_matches, np.uint32))
            counts = database.num_images(), database.num_keypoints(), database.num_matched_image_pairs(), database.num_matches()
    return (f"COLMAP database {path}: {counts[0]} images, {counts[1]} keypoints, "
            f"{counts[2]} image pairs with {counts[3]} raw matches")


def verify(database: Path, seed: int = 0) -> None:
    """COLMAP's geometric verification of every matched pair in ``database`` (two-view geometries);
    ``seed`` makes its RANSAC repeatable."""
    pycolmap = import_pycolmap()
    options = pycolmap.TwoViewGeometryOptions()
    options.ransac.max_num_trials = RANSAC_MAX_TRIALS
    options.ransac.min_inlier_ratio = RANSAC_MIN_INLIER_RATIO
    options.ransac.random_seed = seed
    with colmap_log_level():
        pycolmap.geometric_verification(database, two_view_geometry_options=options)


@dataclass
class ModelSummary:
    registered: int
    images: int
    points3D: int
    track_length: float
    reprojection_error: float  # pixels
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(reconstruction, images: int, seconds: float = 0.0) -> ModelSummary:
    if reconstruction is None:
        return ModelSummary(0, images, 0, 0.0, float("nan"), seconds)
    return ModelSummary(
        reconstruction.num_reg_images(), images, reconstruction.num_points3D(),
        float(reconstruction.compute_mean_track_length()), float(reconstruction.compute_mean_reprojection_error()),
        seconds,
    )


def reconstruct(database: Path, image_dir: Path, output: Path, seed: int = 0) -> list:
    """COLMAP's incremental mapping (its defaults but ``INIT_MIN_TRI_ANGLE``); the models, largest
    first, written as ``output/0``, ``output/1``, … (COLMAP numbers them in the order it finds them).
    ``seed`` makes a run repeatable."""
    pycolmap = import_pycolmap()
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = seed
    options.mapper.init_min_tri_angle = INIT_MIN_TRI_ANGLE
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix=".mapping-", dir=output.parent if output.parent.exists() else None) as scratch, colmap_log_level():
        models = pycolmap.incremental_mapping(database, image_dir, scratch, options=options)
        ordered = sorted(models.values(), key=lambda r: (-r.num_reg_images(), -r.num_points3D()))
        if output.exists():
            shutil.rmtree(output)
        for index, reconstruction in enumerate(ordered):
            folder = output / str(index)
            folder.mkdir(parents=True)
            reconstruction.write(folder)
    return ordered


def database_counts(database: Path) -> dict:
    """Images, keypoints and matches in a COLMAP database (what a test or a user checks first)."""
    pycolmap = import_pycolmap()
    with pycolmap.Database.open(database) as db:
        return {
            "images": db.num_images(),
            "cameras": db.num_cameras(),
            "keypoints": db.num_keypoints(),
            "matched_pairs": db.num_matched_image_pairs(),
            "matches": db.num_matches(),
            "verified_pairs": db.num_verified_image_pairs(),
            "inlier_matches": db.num_inlier_matches(),
        }


def colmap_sift(image_dir: Path, output: Path, image_names: list[str], pairs_file: Optional[Path] = None,
                seed: int = 0) -> tuple[list, float]:
    """The baseline: COLMAP's own SIFT extraction and matching (exhaustive, or the pairs of
    ``pairs_file``) and the same incremental mapping, in ``output`` (database.db, sparse/0). Returns the
    models and the seconds it took."""
    import time

    pycolmap = import_pycolmap()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    database = output / "database.db"
    database.unlink(missing_ok=True)
    start = time.perf_counter()
    verification = pycolmap.TwoViewGeometryOptions()  # COLMAP's defaults, seeded
    verification.ransac.random_seed = seed
    with colmap_log_level(2):  # its warning that SIFT on every CPU thread takes memory is no news here
        pycolmap.set_random_seed(seed)
        pycolmap.extract_features(database, image_dir, image_names=image_names, camera_mode=pycolmap.CameraMode.AUTO)
    with colmap_log_level():
        if pairs_file is None:
            pycolmap.match_exhaustive(database, verification_options=verification)
        else:
            pairing = pycolmap.ImportedPairingOptions(match_list_path=str(pairs_file))
            pycolmap.match_image_pairs(database, pairing_options=pairing, verification_options=verification)
    models = reconstruct(database, image_dir, output / "sparse", seed=seed)
    return models, time.perf_counter() - start
