"""COLMAP databases of pairs jobs through pycolmap (4.x): what ``--colmap-db`` writes (and ``make sfm``
reconstructs from, ``trt.sfm.colmap``).

``write_database`` puts a pairs job's images, keypoints and raw matches into a new COLMAP database:
cameras and images come from ``pycolmap.import_images`` (one camera per image, COLMAP's SIMPLE_RADIAL
with its focal-length prior, exactly as COLMAP's own feature extractor makes them), keypoints are
shifted by +0.5 px to COLMAP's convention (the top-left pixel's corner at (0, 0)), and each unordered
pair's matches are written once. The database is written to a temporary file and renamed onto
its path, so an existing database is replaced only by a complete one.
"""

import contextlib
import ctypes
import ctypes.util
import functools
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from trt.errors import UserError
from trt.fileio import atomic_path, check_writable

COLMAP_PIXEL_OFFSET = 0.5  # COLMAP puts (0, 0) at the top-left corner of the image, we at the first pixel's centre


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
