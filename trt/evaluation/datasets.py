"""Image pairs with known geometry from the shared data, and the named subsets (presets) evaluated.

Two kinds of ground truth (see ../shared/data/README.md):

* ``homography``: HPatches ``v_graffiti``; ``H_1_j`` maps pixels of image 1 to image j.
* ``similarity``: Sacre-Coeur photos ``mapping/X.jpg`` against ``mapping_rot/X_rotD.jpg`` (rotated by
  D degrees) and ``mapping_scale/X_scaleS.jpg`` (scaled by S), on the same canvas:
  x' = s R(D) (x − c) + c about the image centre, D positive in image coordinates (y down).

The sign and the centre were checked on the data, not only read: warping ``02928139_3448003521.jpg``
with the ground truth and comparing with the rotated file gives a mean absolute grey-level difference
of 4.4 (45°), 2.5 (90°) and 2.1 (180°) with D as written, against 66 and 60 with −D (45°, 90°). Over
a grid of centres, the best one is (W/2, H/2) in pixel-corner coordinates, i.e. ((W−1)/2, (H−1)/2)
in the matcher's pixel-centre coordinates, to within half a pixel (the 90° files are shifted by half
a pixel along x: far below the 3 px thresholds). ``tests/test_metrics.py`` repeats the sign check.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from trt.errors import UserError
from trt.evaluation.runs import named_preset
from trt.evaluation.metrics import similarity_matrix

HPATCHES = "images/hpatches/v_graffiti"
SACRE_COEUR = "images/sacre_coeur"
_SIMILARITY_NAME = re.compile(r"^(?P<base>.+)_(?:rot(?P<angle>-?\d+(?:\.\d+)?)|scale(?P<scale>\d+(?:\.\d+)?))$")


@dataclass(frozen=True)
class Pair:
    """Two images and the ground truth mapping image-0 pixels to image-1 pixels.

    ``homography``: 3×3 for kind "homography"; ``angle_deg`` and ``scale``: for kind "similarity"
    (its matrix depends on the image size, see ``ground_truth``).
    """

    name: str
    image0: Path
    image1: Path
    kind: str  # "homography" | "similarity"
    homography: Optional[np.ndarray] = field(default=None, compare=False)
    angle_deg: float = 0.0
    scale: float = 1.0

    def ground_truth(self, size0: tuple[float, float]) -> np.ndarray:
        """3×3 matrix from image-0 pixels to image-1 pixels; ``size0`` is image 0's (width, height)."""
        if self.kind == "homography":
            return self.homography
        return similarity_matrix(self.angle_deg, self.scale, size0)


@dataclass(frozen=True)
class Dataset:
    name: str  # "hpatches-graffiti", "sacre-coeur-rot", ...
    kind: str
    pairs: tuple[Pair, ...]


def parse_similarity_name(path: Path) -> tuple[str, float, float]:
    """(base name, angle in degrees, scale) from ``X_rotD.jpg`` (scale 1) or ``X_scaleS.jpg`` (angle 0)."""
    match = _SIMILARITY_NAME.match(Path(path).stem)
    if match is None:
        raise UserError(f"{Path(path).name} is not named like X_rotD.jpg or X_scaleS.jpg")
    if match["angle"] is not None:
        return match["base"], float(match["angle"]), 1.0
    return match["base"], 0.0, float(match["scale"])


def hpatches_pairs(data_dir: Path, targets: tuple[int, ...]) -> tuple[Pair, ...]:
    folder = Path(data_dir) / HPATCHES
    pairs = []
    for j in targets:
        homography = np.loadtxt(_existing(folder / f"H_1_{j}"))
        pairs.append(Pair(f"v_graffiti-1-{j}", _existing(folder / "1.ppm"), _existing(folder / f"{j}.ppm"),
                          "homography", homography=homography))
    return tuple(pairs)


def similarity_pairs(data_dir: Path, bases: tuple[str, ...], variants: tuple[str, ...]) -> tuple[Pair, ...]:
    """Pairs of ``mapping/X.jpg`` with ``mapping_rot/X_rotD.jpg`` or ``mapping_scale/X_scaleS.jpg``.

    ``variants``: suffixes such as ``rot45`` or ``scale0.5``.
    """
    root = Path(data_dir) / SACRE_COEUR
    pairs = []
    for base in bases:
        for variant in variants:
            folder = "mapping_rot" if variant.startswith("rot") else "mapping_scale"
            image1 = _existing(root / folder / f"{base}_{variant}.jpg")
            _, angle, scale = parse_similarity_name(image1)
            pairs.append(Pair(f"{base}-{variant}", _existing(root / "mapping" / f"{base}.jpg"), image1,
                              "similarity", angle_deg=angle, scale=scale))
    return tuple(pairs)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"evaluation data missing: {path} (set LG_DATA_DIR to the shared data folder)")
    return path


SACRE_COEUR_BASES = ("02928139_3448003521", "03903474_1471484089", "10265353_3838484249")

# Named subsets, hloc-style: the output file names carry the preset's name. ``max_num_keypoints`` and
# ``resize`` are the SIFT front-end's settings for every image of the preset.
PRESETS = {
    "standard": {
        "description": "v_graffiti 1-2..1-6; 3 Sacre-Coeur photos rotated by 45/90/180 deg and scaled by 0.5/0.8",
        "hpatches": (2, 3, 4, 5, 6),
        "sacre_coeur_bases": SACRE_COEUR_BASES,
        "rotations": (45, 90, 180),
        "scales": (0.5, 0.8),
        "max_num_keypoints": 2048,
        "resize": 1024,
    },
    "ci": {
        "description": "v_graffiti 1-2, 1-3; one Sacre-Coeur photo rotated by 45 deg and scaled by 0.5; 1024 "
                       "keypoints: the CI-sized bf16 gate",
        "hpatches": (2, 3),
        "sacre_coeur_bases": SACRE_COEUR_BASES[:1],
        "rotations": (45,),
        "scales": (0.5,),
        "max_num_keypoints": 1024,
        "resize": 1024,
    },
    "smoke": {
        "description": "one pair (v_graffiti 1-2) with 512 keypoints: for tests",
        "hpatches": (2,),
        "sacre_coeur_bases": (),
        "rotations": (),
        "scales": (),
        "max_num_keypoints": 512,
        "resize": 640,
    },
}


def get_preset(name: str) -> dict:
    return named_preset(PRESETS, name, "evaluation")


def load_datasets(preset: dict, data_dir: Path) -> list[Dataset]:
    """The non-empty datasets of a preset, read from ``data_dir`` (the shared data folder)."""
    bases = tuple(preset["sacre_coeur_bases"])
    candidates = [
        Dataset("hpatches-graffiti", "homography", hpatches_pairs(data_dir, tuple(preset["hpatches"]))),
        Dataset("sacre-coeur-rot", "similarity",
                similarity_pairs(data_dir, bases, tuple(f"rot{d:g}" for d in preset["rotations"]))),
        Dataset("sacre-coeur-scale", "similarity",
                similarity_pairs(data_dir, bases, tuple(f"scale{s:g}" for s in preset["scales"]))),
    ]
    return [dataset for dataset in candidates if dataset.pairs]
