"""The feature extractors LightGlue was trained for, and what the matcher needs to know of each.

One table, read by export (model shape, weights), by the engine builder (profile files) and by the
runtime (which inputs an engine takes). An unknown name is an error listing the valid ones.
"""

from dataclasses import dataclass

from trt.errors import UserError

WEIGHTS_URL = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/{name}_lightglue.pth"


@dataclass(frozen=True)
class Extractor:
    name: str
    descriptor_dim: int  # D of desc0/desc1
    scale_ori: bool  # the matcher also reads scales and orientations (DoG detectors)
    weights_sha256: str  # of the official {name}_lightglue.pth
    weights_bytes: int | None  # official size, None where unpublished

    @property
    def weights_filename(self) -> str:
        return f"{self.name}_lightglue.pth"

    @property
    def weights_url(self) -> str:
        return WEIGHTS_URL.format(name=self.name)


EXTRACTORS = {
    e.name: e
    for e in (
        Extractor("sift", 128, True, "5b52b8d9982d43532dc042606b346bb9594c9f5a4bd6f64362c63866287b4ac0", 47_632_573),
        Extractor("superpoint", 256, False, "6ff7040d0a497fc6639337946d7538dae07428c18f77a067a0b5a960e7cc551a", 47_500_279),
        Extractor("disk", 128, False, "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335", 47_631_405),
        Extractor("aliked", 128, False, "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503", 47_632_827),
        Extractor("doghardnet", 128, True, "21468c1b417a1b15f83a7c3b5ae2bd5e1d7c31d392aa2732e247e7223bb4aa40", None),
    )
}


def get_extractor(name: str) -> Extractor:
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise UserError(f"unknown extractor {name!r}: choose one of {', '.join(EXTRACTORS)}") from None


# ---------------------------------------------------------------------------------------------------
# The learned extractor networks: one ONNX and one engine each (contract: trt/extractor_contract.py).
# SIFT and DoGHardNet have none: their features come from OpenCV on the host.

# How a front-end brings an image to a multiple of the network's stride, as the reference does:
# ALIKED pads around the centre, replicating the border (its InputPadder); kornia's DISK pads zeros at
# the bottom and right; SuperPoint does not pad at all (it drops the last partial cell), so padding
# the bottom and right by replication changes nothing where its keypoints can be.
PADDINGS = ("centre-replicate", "bottom-right-replicate", "bottom-right-zero")


@dataclass(frozen=True)
class ExtractorNetwork:
    name: str  # "aliked-n16": the --extractor-model choice and the checkpoint's stem
    feature: str  # the feature type it makes: the matcher trained for it is EXTRACTORS[feature]
    channels: int  # C of the image input: 1 (grayscale) or 3 (RGB), values in [0, 1]
    stride: int  # image height and width must be multiples of it
    descriptor_dim: int
    detection_threshold: float  # the reference's default
    nms_radius: int  # the reference's default
    padding: str  # one of PADDINGS
    weights_filename: str  # the official checkpoint's file name
    weights_url: str
    weights_sha256: str
    weights_bytes: int
    checkpoint_key: str | None = None  # the official file nests the state dict under this key


_ALIKED_URL = "https://github.com/Shiaoming/ALIKED/raw/main/models/{}.pth"
NETWORKS = {
    n.name: n
    for n in (
        ExtractorNetwork("aliked-n16", "aliked", 3, 32, 128, 0.2, 2, "centre-replicate", "aliked-n16.pth",
                         _ALIKED_URL.format("aliked-n16"),
                         "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2", 2_738_091),
        ExtractorNetwork("aliked-n16rot", "aliked", 3, 32, 128, 0.2, 2, "centre-replicate", "aliked-n16rot.pth",
                         _ALIKED_URL.format("aliked-n16rot"),
                         "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332", 2_738_325),
        ExtractorNetwork("aliked-n32", "aliked", 3, 32, 128, 0.2, 2, "centre-replicate", "aliked-n32.pth",
                         _ALIKED_URL.format("aliked-n32"),
                         "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890", 3_946_667),
        ExtractorNetwork("aliked-t16", "aliked", 3, 32, 64, 0.2, 2, "centre-replicate", "aliked-t16.pth",
                         _ALIKED_URL.format("aliked-t16"),
                         "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085", 794_859),
        ExtractorNetwork("superpoint", "superpoint", 1, 8, 256, 0.0005, 4, "bottom-right-replicate", "superpoint_v1.pth",
                         "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/superpoint_v1.pth",
                         "52b6708629640ca883673b5d5c097c4ddad37d8048b33f09c8ca0d69db12c40e", 5_206_086),
        ExtractorNetwork("disk", "disk", 3, 16, 128, 0.0, 2, "bottom-right-zero", "depth-save.pth",
                         "https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
                         "9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe", 4_375_832,
                         checkpoint_key="extractor"),
    )
}
# The network cvg/LightGlue uses for each feature type (its matcher weights were trained on it).
DEFAULT_NETWORKS = {"aliked": "aliked-n16", "superpoint": "superpoint", "disk": "disk"}


def get_network(feature: str, name: str | None = None) -> ExtractorNetwork:
    """The network making ``feature`` features: ``name`` if given (it must make them), else the default."""
    get_extractor(feature)  # an unknown feature type lists the valid ones
    if feature not in DEFAULT_NETWORKS:
        raise UserError(f"{feature} features come from OpenCV on the host, not from a network: "
                        f"learned extractors are {', '.join(DEFAULT_NETWORKS)}")
    name = DEFAULT_NETWORKS[feature] if name is None else name
    if name not in NETWORKS:
        raise UserError(f"unknown extractor network {name!r}: choose one of {', '.join(NETWORKS)}")
    network = NETWORKS[name]
    if network.feature != feature:
        raise UserError(f"network {name} makes {network.feature} features, not {feature}: "
                        f"choose one of {', '.join(n for n, v in NETWORKS.items() if v.feature == feature)}")
    return network
