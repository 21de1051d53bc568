"""The recording of an upload: the multipart field ``file``, or the whole body when it is sent as audio.

FastAPI's ``UploadFile`` path spools every part into a ``SpooledTemporaryFile`` through per-chunk callbacks
and then validates the form as a model: on a 2-core host that was a fifth of the event loop's time per
``/predict`` (docs/PERFORMANCE.md). Here the body is fed, as it streams in, to python-multipart (the parser
Starlette itself uses) and only the ``file`` part is kept, in memory; ``BodyLimitMiddleware`` has already
bounded how much can arrive. Integrators that do not want multipart at all send the recording as the body
with ``Content-Type: audio/...`` or ``application/octet-stream``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from acula.service.api.errors import ApiError

FILE_FIELD = "file"
MAX_PARTS = 16  # a form with more parts than this is not a client of ours; refuse before parsing them all

_BINARY = {"schema": {"type": "string", "format": "binary"}}
# The request body of a route that also takes the recording as the raw body (merged into FastAPI's own).
RAW_AUDIO_OPENAPI: dict[str, Any] = {
    "requestBody": {"content": {"audio/*": _BINARY, "application/octet-stream": _BINARY}}
}
# The request body of the upload routes in OpenAPI (FastAPI cannot infer it: the route reads the body itself).
UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            **RAW_AUDIO_OPENAPI["requestBody"]["content"],
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "The recording: WAV, FLAC, OGG, MP3 or another supported format.",
                        }
                    },
                }
            },
        },
    }
}


def is_raw_audio(content_type: str) -> bool:
    """A body that is the recording itself (``curl --data-binary @a.wav -H 'Content-Type: audio/wav'``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("audio/") or media == "application/octet-stream"


class _FilePart:
    """python-multipart callbacks that keep the bytes of the first ``file`` part and nothing else."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.found = False
        self.parts = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._collecting = False
        self.complete = False  # the closing boundary was seen

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError("invalid_request", f"the multipart body has more than {MAX_PARTS} parts")
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise ApiError("invalid_request", "a multipart part has no name in its Content-Disposition")
        self._collecting = name == FILE_FIELD.encode() and not self.found
        self.found = self.found or self._collecting

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._collecting:
            self.data += data[start:end]

    def _on_part_end(self) -> None:
        self._collecting = False

    def _on_end(self) -> None:
        self.complete = True


async def read_recording(request: Request) -> bytes:
    """The uploaded recording's bytes, or a problem: 415 for a body that is neither multipart nor audio, 422
    for a multipart body that is malformed or has no ``file`` field."""
    content_type = request.headers.get("content-type", "")
    if is_raw_audio(content_type):
        return await request.body()
    media_type, options = parse_options_header(content_type)
    if media_type.decode("latin-1").lower() != "multipart/form-data":
        raise ApiError(
            "unsupported_media_type",
            f"send the recording as multipart/form-data (field '{FILE_FIELD}') or as the body with "
            f"Content-Type audio/* or application/octet-stream, not {content_type or 'no type'}",
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError("invalid_request", "multipart/form-data without a boundary")
    part = _FilePart()
    parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError("invalid_request", f"malformed multipart body: {exc}") from None
    if not part.complete:
        raise ApiError("invalid_request", "the multipart body ends before its closing boundary")
    if not part.found:
        raise ApiError("invalid_request", f"the multipart body has no field '{FILE_FIELD}'")
    return bytes(part.data)
