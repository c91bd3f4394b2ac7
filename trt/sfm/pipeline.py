"""``make sfm``: a folder of photos to a COLMAP sparse model, with our matcher and with COLMAP's own SIFT.

Steps, all in OUTPUT:

1. pairs: every pair of images (``exhaustive``, written to ``pairs-exhaustive.txt`` by the job), or a
   pairs file naming images below IMAGES;
2. the pairs job (``trt.jobs``, on Ray when asked): hloc's ``features.h5`` and ``matches.h5``;
3. ``database.db``: cameras, images, keypoints and raw matches (``trt.jobs.colmap.write_database``);
4. COLMAP's geometric verification and incremental mapping: ``sparse/0`` is the largest model;
5. the baseline, unless skipped: COLMAP's SIFT extraction and matching of the same pairs, and the same
   mapping, in ``colmap-sift/`` (``database.db``, ``sparse/0``).

Both reconstructions are printed side by side (registered images, 3D points, mean track length, mean
reprojection error, time) and written to ``summary.json``; ``reconstruction.png`` shows each from
above (cameras and points) when matplotlib is installed.
"""

import io
import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from trt.fileio import write_bytes_atomic, write_text_atomic
from trt.jobs.job import JobReport, run_pairs_file
from trt.jobs.pairs import EXHAUSTIVE, list_images, pairing, pairs_filename
from trt.sfm import colmap

# SfM keeps weaker matches than serving's 0.1 (verification drops the wrong ones; more matches make
# longer tracks) and more keypoints than serving needs: with the nearest-neighbour weights these two
# registered all ten Sacre-Coeur photos in every seeded run tried (README, "SfM").
SFM_THRESHOLD = 0.03
SFM_KEYPOINTS = 4096
SUMMARY_FILE = "summary.json"
PICTURE_FILE = "reconstruction.png"


def run_sfm(
    images: Path,
    output: Path,
    matcher_options: dict,
    pairs: str = EXHAUSTIVE,
    baseline: bool = True,
    ray: Optional[str] = None,
    workers: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Reconstruct the photos in ``images`` into ``output`` with our matcher (and COLMAP's SIFT when
    ``baseline``); print both side by side; return the summary written to ``summary.json``.

    ``pairs``: "exhaustive", "sequential[:K]" (``trt.jobs.pairs.pairing``) or a pairs file of image
    names below ``images``. ``seed``: COLMAP's random
    seed, for repeatable runs. Failed pairs are left out of the reconstruction and raised at the end
    (``PairsFailed``), after everything else is written.
    """
    images, output = Path(images), Path(output)
    names = list_images(images)
    generated = pairing(pairs)
    pairs_file = output / pairs_filename(*generated) if generated is not None else Path(pairs)
    database = output / "database.db"

    start = time.perf_counter()
    report: JobReport = run_pairs_file(
        pairs, output, matcher_options, fmt="hloc", image_dir=images, ray=ray, workers=workers,
        colmap_db=database, progress=progress,
    )
    for line in report.lines():
        print(line)
    if report.written + report.skipped == 0:
        report.raise_for_failures()  # every pair failed: the job left nothing to reconstruct from
    colmap.verify(database, seed=seed)
    models = colmap.reconstruct(database, images, output / "sparse", seed=seed)
    ours = colmap.summarise(models[0] if models else None, len(names), time.perf_counter() - start)

    results = {"ours": ours}
    models_by_method = {"ours": models[0] if models else None}
    if baseline:
        sift_models, seconds = colmap.colmap_sift(
            images, output / "colmap-sift", names, None if pairs == EXHAUSTIVE else pairs_file, seed=seed
        )
        results["colmap_sift"] = colmap.summarise(sift_models[0] if sift_models else None, len(names), seconds)
        models_by_method["colmap_sift"] = sift_models[0] if sift_models else None

    print()
    for line in comparison_table(results):
        print(line)
    summary = {
        "images": len(names),
        "pairs": report.pairs,
        "pairs_file": str(pairs_file),
        "matcher": {key: str(value) if isinstance(value, Path) else value for key, value in matcher_options.items()},
        "database": colmap.database_counts(database),
        **{method: result.as_dict() for method, result in results.items()},
    }
    write_text_atomic(output / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
    print(f"wrote {output / 'sparse' / '0'}, {database} and {output / SUMMARY_FILE}")
    if draw_reconstructions(models_by_method, output / PICTURE_FILE):
        print(f"wrote {output / PICTURE_FILE}")
    report.raise_for_failures()
    return summary


LABELS = {"ours": "LightGlue (this engine)", "colmap_sift": "COLMAP SIFT"}


def comparison_table(results: dict) -> list[str]:
    """The reconstructions side by side, one column per method."""
    rows = [
        ("registered images", lambda r: f"{r.registered} / {r.images}"),
        ("3D points", lambda r: f"{r.points3D}"),
        ("mean track length", lambda r: f"{r.track_length:.2f}"),
        ("mean reprojection error", lambda r: f"{r.reprojection_error:.3f} px"),
        ("time", lambda r: f"{r.seconds:.1f} s"),
    ]
    width = max(len(LABELS[m]) for m in results) + 2
    lines = ["".ljust(25) + "".join(LABELS[m].ljust(width) for m in results).rstrip()]
    for label, cell in rows:
        lines.append(label.ljust(25) + "".join(cell(r).ljust(width) for r in results.values()).rstrip())
    return lines


def top_view(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A model seen from above: its points, camera centres and viewing directions on the ground plane.

    "Down" is the cameras' mean image y-axis (photos are mostly taken upright); on the plane across it,
    x is the points' main axis, turned so that the cameras are on its left, and y completes a
    right-handed frame, so that two models of one scene come out alike. Points further than twice the
    95th-percentile distance from their median are left out.
    """
    images = [model.images[i] for i in model.reg_image_ids()]
    down = np.mean([image.cam_from_world().rotation.matrix()[1] for image in images], axis=0)
    down /= np.linalg.norm(down)
    points = np.array([point.xyz for point in model.points3D.values()])
    centre = np.median(points, axis=0)
    distance = np.linalg.norm(points - centre, axis=1)
    points = points[distance < 2 * np.percentile(distance, 95)] - centre
    flat = points - np.outer(points @ down, down)
    _, _, axes = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    x = axes[0]
    cameras = np.array([image.projection_center() for image in images]) - centre
    if np.mean(cameras @ x) > 0:
        x = -x
    plane = np.stack([x, np.cross(down, x)], axis=1)
    headings = np.array([image.viewing_direction() for image in images]) @ plane
    return points @ plane, cameras @ plane, headings


def draw_reconstructions(models: dict, path: Path) -> bool:
    """Each model from above (``top_view``): points in grey, cameras in red with their viewing direction.
    Returns False, drawing nothing, without matplotlib (the serving install does not need it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    views = {method: top_view(model) for method, model in models.items() if model is not None and model.num_points3D() > 2}
    if not views:
        return False
    spans = [np.ptp(np.vstack([points, cameras]), axis=0) for points, cameras, _ in views.values()]
    aspect = min(1.0, max(0.3, max(height / max(width, 1e-9) for width, height in spans)))
    figure, axes = plt.subplots(1, len(views), figsize=(6 * len(views), 6 * aspect + 0.6), squeeze=False)
    for axis, (method, (points, cameras, headings)), (width, _) in zip(axes[0], views.items(), spans):
        axis.scatter(points[:, 0], points[:, 1], s=1, c="0.5", linewidths=0)
        axis.quiver(cameras[:, 0], cameras[:, 1], headings[:, 0], headings[:, 1], color="tab:red",
                    angles="xy", scale_units="xy", scale=1 / (0.05 * width), width=0.004)
        axis.plot(cameras[:, 0], cameras[:, 1], "o", color="tab:red", markersize=4)
        model = models[method]
        axis.set_title(f"{LABELS[method]}: {model.num_reg_images()} cameras, {model.num_points3D()} points")
        axis.set_aspect("equal", adjustable="datalim")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return True
