"""COLMAP's geometric verification and incremental mapping through pycolmap (4.x), on a database a pairs
job wrote (``trt.jobs.colmap.write_database``), and COLMAP's own SIFT as the baseline: what ``make sfm`` runs.

``verify`` runs COLMAP's geometric verification on every matched pair, ``reconstruct`` its incremental
mapper, ``colmap_sift`` the same mapping on COLMAP's own features and matches.
"""

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from trt.jobs.colmap import colmap_log_level, import_pycolmap

RANSAC_MAX_TRIALS = 20000  # geometric verification as hloc runs it for learned matchers
RANSAC_MIN_INLIER_RATIO = 0.1
# The initial pair must see its points under this angle (COLMAP's default: 16 degrees). With fewer
# matches per pair than COLMAP's 8k SIFT features give, the pairs wide enough for 16 degrees often have
# too few inliers, and the mapper settled for a 2-6 image model in 4 of 10 runs on the Sacre-Coeur
# photos; at 8 degrees every run registered all ten. Both reconstructions of make sfm use it.
INIT_MIN_TRI_ANGLE = 8.0


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
