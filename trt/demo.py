"""A demo image pair with known geometry, generated from scikit-image's sample photos.

Nothing from ../shared/data is used (licences): image 0 is scikit-image's ``rocket`` photo (public
domain), image 1 the same photo warped by a fixed homography, so every match can be checked.

    python -m trt.demo pair out/demo            # writes image0.png, image1.png, H_0_1.txt
    python -m trt.demo check out/demo/matches.json out/demo/H_0_1.txt
"""

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from trt.cli import run
from trt.errors import UserError
from trt.evaluation.metrics import corner_error
from trt.fileio import atomic_path, write_text_atomic

# Rotation by 12°, scale 0.9 and a mild perspective, about the image centre.
DEMO_HOMOGRAPHY_PARAMETERS = {"angle_deg": 12.0, "scale": 0.9, "perspective": (2e-4, -1e-4)}


def demo_homography(width: int, height: int) -> np.ndarray:
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    angle = np.deg2rad(DEMO_HOMOGRAPHY_PARAMETERS["angle_deg"])
    scale = DEMO_HOMOGRAPHY_PARAMETERS["scale"]
    similarity = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 0],
                           [scale * np.sin(angle), scale * np.cos(angle), 0], [0, 0, 1]])
    perspective = np.eye(3)
    perspective[2, :2] = DEMO_HOMOGRAPHY_PARAMETERS["perspective"]
    return np.linalg.inv(centre) @ perspective @ similarity @ centre


def make_demo_pair(folder: Path) -> tuple[Path, Path, Path]:
    """Write image0.png, image1.png and the homography H_0_1.txt (image-0 pixels → image-1 pixels)."""
    from skimage import data

    image0 = cv2.cvtColor(data.rocket(), cv2.COLOR_RGB2BGR)
    height, width = image0.shape[:2]
    homography = demo_homography(width, height)
    image1 = cv2.warpPerspective(image0, homography, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "image0.png", folder / "image1.png", folder / "H_0_1.txt"
    for path, image in zip(paths[:2], (image0, image1)):
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp.with_suffix(".png")), image):
                raise UserError(f"cannot write {path}")
            tmp.with_suffix(".png").replace(tmp)
    write_text_atomic(paths[2], "\n".join(" ".join(f"{v:.10g}" for v in row) for row in homography) + "\n")
    return paths


def check_matches(matches_json: Path, homography_txt: Path) -> float:
    """Corner error of the homography fitted to the matches written by trt_infer.py --output."""
    try:
        result = json.loads(Path(matches_json).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read matches from {matches_json}: {error}") from None
    keypoints0, keypoints1 = np.array(result["keypoints0"]), np.array(result["keypoints1"])
    matches = np.array(result["matches"], dtype=int).reshape(-1, 2)
    homography = np.loadtxt(homography_txt)
    size = tuple(int(v) for v in result["image_size0"])
    return corner_error(keypoints0[matches[:, 0]], keypoints1[matches[:, 1]], homography, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pair = commands.add_parser("pair", help="write the demo pair and its homography")
    pair.add_argument("folder", type=Path)
    check = commands.add_parser("check", help="corner error of trt_infer.py matches against the true homography")
    check.add_argument("matches_json", type=Path)
    check.add_argument("homography", type=Path)
    args = parser.parse_args()
    if args.command == "pair":
        for path in make_demo_pair(args.folder):
            print(f"wrote {path}")
    else:
        error = check_matches(args.matches_json, args.homography)
        print(f"homography from the matches: mean corner error {error:.2f} px against the true warp")
        if not error < 3.0:
            sys.exit(1)


if __name__ == "__main__":
    run(main)
