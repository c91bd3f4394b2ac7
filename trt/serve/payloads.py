"""What an HTTP request carries, read into the project's own values and checked by ``trt.validation``.

Pure functions (no Ray, no web framework), so that each is testable alone and every refusal is a
``UserError`` the ingress answers with a 4xx. Two request kinds:

- ``POST /match``: ``multipart/form-data`` with the files ``image0`` and ``image1`` and the optional text
  fields ``threshold``, ``max_keypoints`` and ``resize`` (``trt_infer.py``'s flags, same ranges; resize 0:
  the original size). The images stay encoded here: the replica decodes them (``decode_image``).
- ``POST /match_features``: both images' features, as JSON ``{"features0": {...}, "features1": {...},
  "threshold": 0.1}`` where each features object has ``keypoints`` [N, 2], ``descriptors`` [N, D],
  ``image_size`` (width, height) and, where the model reads them, ``scales`` and ``oris`` [N] (``scores``
  [N] optional); or as an npz with the arrays ``keypoints0``, ``descriptors0``, ``image_size0``, ... and
  ``keypoints1``, ... (and an optional 0-d ``threshold``).
"""

import email.parser
import email.policy
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from trt.errors import UserError
from trt.features.base import Features
from trt.validation import check_max_keypoints, check_threshold, parse_int, parse_resize, parse_threshold

IMAGE_FIELDS = ("image0", "image1")
SETTING_FIELDS = ("threshold", "max_keypoints", "resize")
FEATURE_FIELDS = ("keypoints", "descriptors", "image_size", "scores", "scales", "oris")
REQUIRED_FEATURE_FIELDS = ("keypoints", "descriptors", "image_size")


class PayloadTooLarge(UserError):
    """A request body over the server's size limit (HTTP 413)."""


@dataclass(frozen=True)
class Settings:
    """Per-request matching settings; None: the server's own (its command-line flags)."""

    threshold: Optional[float] = None
    max_keypoints: Optional[int] = None
    resize: Optional[int] = None  # 0: the original size


@dataclass
class MatchRequest:
    """One pair to match: two encoded images (with their upload names) or two Features."""

    items: tuple  # (bytes, bytes) or (Features, Features)
    names: tuple[str, str]  # what the record calls them: upload file names, "" for features
    settings: Settings

    @property
    def is_images(self) -> bool:
        return not isinstance(self.items[0], Features)


def check_body_size(content_length: Optional[str], limit: int) -> None:
    """Refuse a body whose declared length is over ``limit`` bytes, before reading it."""
    if content_length is None:
        return
    try:
        length = int(content_length)
    except ValueError:
        raise UserError(f"the Content-Length header {content_length!r} is not a number") from None
    if length > limit:
        raise PayloadTooLarge(f"the request body is {length} bytes, over the server's limit of {limit} bytes "
                              "(trt_serve.py --max-body-mb)")


def parse_multipart(body: bytes, content_type: Optional[str]) -> dict[str, tuple[Optional[str], bytes]]:
    """{field name: (file name or None, content)} of a ``multipart/form-data`` body."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise UserError(f"POST /match takes multipart/form-data (the files image0 and image1), not {content_type or 'no content type'}")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise UserError("the multipart body could not be read: check its boundary")
    fields: dict[str, tuple[Optional[str], bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise UserError("a part of the multipart body has no name (Content-Disposition: form-data; name=...)")
        if name in fields:
            raise UserError(f"the field {name!r} is given twice")
        fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _text(fields: dict, name: str) -> Optional[str]:
    if name not in fields:
        return None
    _, content = fields[name]
    try:
        return content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"the field {name} must be text") from None


def settings_from_text(values: dict[str, Optional[str]]) -> Settings:
    """Settings from form fields (text, None when absent), checked as ``trt_infer.py`` checks its flags."""
    def field(name, parse):
        text = values.get(name)
        if text is None or text == "":
            return None
        try:
            return parse(text)
        except UserError as error:
            raise UserError(f"{name}: {error}") from None

    return Settings(field("threshold", parse_threshold),
                    field("max_keypoints", lambda text: check_max_keypoints(parse_int(text), "max_keypoints")),
                    field("resize", parse_resize))


def match_request_from_form(fields: dict[str, tuple[Optional[str], bytes]]) -> MatchRequest:
    """The pair of a ``POST /match`` form; a UserError names a missing or unknown field."""
    unknown = sorted(set(fields) - set(IMAGE_FIELDS) - set(SETTING_FIELDS))
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(unknown)}: POST /match takes {', '.join(IMAGE_FIELDS + SETTING_FIELDS)}")
    missing = [name for name in IMAGE_FIELDS if name not in fields]
    if missing:
        raise UserError(f"missing field(s) {', '.join(missing)}: send both images as files image0 and image1")
    settings = settings_from_text({name: _text(fields, name) for name in SETTING_FIELDS})
    images = tuple(fields[name][1] for name in IMAGE_FIELDS)
    names = tuple(fields[name][0] or "" for name in IMAGE_FIELDS)
    return MatchRequest(images, names, settings)


def features_from_record(record, name: str) -> Features:
    """Features from a {field: array-like} record; the values themselves are checked by ``check_features``."""
    if not isinstance(record, dict):
        raise UserError(f"{name} must be an object with {', '.join(REQUIRED_FEATURE_FIELDS)}, not {type(record).__name__}")
    missing = [key for key in REQUIRED_FEATURE_FIELDS if key not in record]
    if missing:
        raise UserError(f"{name}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(record) - set(FEATURE_FIELDS))
    if unknown:
        raise UserError(f"{name}: unknown field(s) {', '.join(unknown)}; features have {', '.join(FEATURE_FIELDS)}")
    return Features(**{key: record.get(key) for key in FEATURE_FIELDS})


def features_request_from_json(body: bytes) -> MatchRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise UserError("the body must be a JSON object with features0, features1 and optionally threshold")
    unknown = sorted(set(document) - {"features0", "features1", "threshold"})
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(unknown)}: POST /match_features takes features0, features1, threshold")
    missing = [key for key in ("features0", "features1") if key not in document]
    if missing:
        raise UserError(f"missing field(s) {', '.join(missing)}")
    threshold = document.get("threshold")
    settings = Settings(threshold=None if threshold is None else check_threshold(threshold))
    return MatchRequest((features_from_record(document["features0"], "features0"),
                         features_from_record(document["features1"], "features1")),
                        ("", ""), settings)


def features_request_from_npz(body: bytes) -> MatchRequest:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise UserError(f"the body is not an npz file numpy can read without pickles: {error}") from None
    known = {f"{key}{side}" for key in FEATURE_FIELDS for side in "01"} | {"threshold"}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise UserError(f"unknown array(s) {', '.join(unknown)}: the npz holds keypoints0, descriptors0, image_size0, "
                        "... keypoints1, ... and optionally threshold")
    sides = [features_from_record({key: arrays[f"{key}{side}"] for key in FEATURE_FIELDS if f"{key}{side}" in arrays},
                                  f"features{side}") for side in "01"]
    threshold = arrays.get("threshold")
    if threshold is not None:
        if threshold.shape != () or threshold.dtype.kind not in "iuf":
            raise UserError(f"threshold must be one number (a 0-d array), not an array of shape {threshold.shape}")
        threshold = check_threshold(threshold.item())
    return MatchRequest(tuple(sides), ("", ""), Settings(threshold=threshold))


def features_request(body: bytes, content_type: Optional[str]) -> MatchRequest:
    """The pair of a ``POST /match_features`` body: JSON (application/json) or npz (application/octet-stream,
    application/x-npz, or any body that starts as a zip file)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json" or (not kind and body[:1] in (b"{", b" ", b"\n")):
        return features_request_from_json(body)
    if kind in ("application/octet-stream", "application/x-npz", "application/zip") or body[:2] == b"PK":
        return features_request_from_npz(body)
    raise UserError(f"POST /match_features takes application/json or an npz (application/octet-stream), not {kind}")


