"""A small client of ``trt_serve.py``, standard library only (a client machine needs nothing else).

    client = MatchClient("http://127.0.0.1:8000")
    record = client.match("a.jpg", "b.jpg", threshold=0.2)   # the record trt_infer.py --output x.json writes
    record["matches"]                                        # [[i, j], ...] into keypoints0 / keypoints1

A refused request raises ``ServerError`` with the HTTP status and the server's ``error`` text; a 503
(a replica lost while it held the request) is retried ``retries`` times after the server's Retry-After.
"""

import io
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Optional, Union

import numpy as np

from trt.errors import UserError


class ServerError(UserError):
    """The server refused a request: ``status`` (HTTP) and its ``{"error": ...}`` message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def encode_multipart(files: dict[str, tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request: ``files`` {field: (file name, content)},
    ``fields`` {field: text}."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def match_form(image0: Union[str, Path, bytes], image1: Union[str, Path, bytes], **settings) -> tuple[bytes, str]:
    """The body of ``POST /match`` for two images (paths, or encoded bytes) and settings (threshold=...,
    max_keypoints=..., resize=...; None ones left out)."""
    files = {}
    for side, image in enumerate((image0, image1)):
        files[f"image{side}"] = ((f"image{side}", image) if isinstance(image, bytes)
                                 else (Path(image).name, Path(image).read_bytes()))
    return encode_multipart(files, {key: str(value) for key, value in settings.items() if value is not None})


def features_npz(features0: dict, features1: dict, threshold: Optional[float] = None) -> bytes:
    """The npz body of ``POST /match_features``: {keypoints, descriptors, image_size, ...} of each image."""
    arrays = {f"{key}{side}": np.asarray(value) for side, features in enumerate((features0, features1))
              for key, value in features.items() if value is not None}
    if threshold is not None:
        arrays["threshold"] = np.float64(threshold)  # as given: the record repeats it
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class MatchClient:
    def __init__(self, url: str, timeout_s: float = 120.0, retries: int = 3):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries

    def match(self, image0, image1, **settings) -> dict:
        """POST /match: two images (paths or encoded bytes) and optional threshold, max_keypoints, resize."""
        body, content_type = match_form(image0, image1, **settings)
        return self.post("/match", body, content_type)

    def match_features(self, features0: dict, features1: dict, threshold: Optional[float] = None) -> dict:
        """POST /match_features with both images' features (dicts of arrays), sent as npz."""
        return self.post("/match_features", features_npz(features0, features1, threshold), "application/octet-stream")

    def info(self) -> dict:
        return self.request("GET", "/info")

    def healthy(self) -> bool:
        try:
            self.request("GET", "/healthz", retries=0)
        except (ServerError, OSError):
            return False
        return True

    def post(self, path: str, body: bytes, content_type: str) -> dict:
        return self.request("POST", path, body, {"Content-Type": content_type})

    def request(self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None,
                retries: Optional[int] = None) -> dict:
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                try:
                    message = json.loads(error.read()).get("error", error.reason)
                except (json.JSONDecodeError, AttributeError):
                    message = str(error.reason)
                if error.code == 503 and attempt < retries:
                    attempt += 1
                    time.sleep(float(error.headers.get("Retry-After", 1)))
                    continue
                raise ServerError(error.code, message) from None
