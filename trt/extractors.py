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
