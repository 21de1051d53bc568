"""The one upload path of every route that takes audio: the recording (and, for report search, a text query)
from the request body, whatever its shape.

A body is one of: the recording itself (``Content-Type: audio/...`` or ``application/octet-stream``, as
``curl --data-binary`` sends it); ``multipart/form-data`` with the recording in the field ``file`` and, where
a route takes them, text fields; or ``application/x-www-form-urlencoded`` text fields. It is read as it
streams in and only what the route asked for is kept, in memory: FastAPI's ``UploadFile`` would spool every
part to a temporary file and validate the form as a model, on the event loop (docs/PERFORMANCE.md), and two
upload paths would disagree about limits. ``BodyLimitMiddleware`` has already bounded how much can arrive and
for how long, and authentication has already run: nothing here reads a byte for a request the service will
not serve.

Every way a body can be malformed is a problem with a code (``invalid_request`` 422,
``unsupported_media_type`` 415), never an exception from the parser: a boundary longer than RFC 2046 allows,
a part without a name, a field sent twice (which one would count?), more than :data:`MAX_PARTS` parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from acula.service.api.errors import ApiError

FILE_FIELD = "file"
MAX_PARTS = 16  # a form with more parts than this is not a client of ours; refuse before parsing them all
MAX_BOUNDARY = 70  # RFC 2046 section 5.1.1
MAX_FIELD_BYTES = (
    16 * 1024
)  # a text field (a query is at most 2,000 characters; UTF-8 takes up to 4 bytes each)
MAX_FORM_BYTES = 64 * 1024  # a whole urlencoded form
SUPPORTED = (
    "send the recording as multipart/form-data (field 'file') or as the body with Content-Type audio/*"
)

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_RAW_AUDIO = {"audio/*": _BINARY, "application/octet-stream": _BINARY}
_FILE_PROPERTY = {
    "type": "string",
    "format": "binary",
    "description": "The recording: WAV, FLAC, OGG, MP3 or another supported format.",
}


def upload_openapi(text_fields: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The request body of an upload route in OpenAPI (FastAPI cannot infer it: the route reads the body
    itself). Without text fields the recording is required; with them, the route takes one or the other."""
    properties = {FILE_FIELD: _FILE_PROPERTY, **(text_fields or {})}
    multipart: dict[str, Any] = {"type": "object", "properties": properties}
    content: dict[str, Any] = {**_RAW_AUDIO, "multipart/form-data": {"schema": multipart}}
    if text_fields:
        form = {"type": "object", "properties": text_fields}
        content["application/x-www-form-urlencoded"] = {"schema": form}
    else:
        multipart["required"] = [FILE_FIELD]
    return {"requestBody": {"required": True, "content": content}}


UPLOAD_OPENAPI = upload_openapi()


@dataclass
class Upload:
    """What a body held: the recording's bytes, and the text fields the route asked for."""

    recording: bytes | None = None
    fields: dict[str, str] = field(default_factory=dict)


def is_raw_audio(content_type: str) -> bool:
    """A body that is the recording itself (``curl --data-binary @a.wav -H 'Content-Type: audio/wav'``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("audio/") or media == "application/octet-stream"


class _Parts:
    """python-multipart callbacks that keep the ``file`` part and the wanted text fields, nothing else."""

    def __init__(self, text_fields: frozenset[str]) -> None:
        self.text_fields = text_fields
        self.kept: dict[str, bytearray] = {}
        self.parts = 0
        self.complete = False  # the closing boundary was seen
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._current: bytearray | None = None
        self._limit: int | None = None

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
        if len(self._header_value) > MAX_FIELD_BYTES:
            raise ApiError("invalid_request", "a multipart part header is too long")

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        raw = options.get(b"name")
        if raw is None:
            raise ApiError("invalid_request", "a multipart part has no name in its Content-Disposition")
        name = raw.decode("latin-1")
        if name != FILE_FIELD and name not in self.text_fields:
            self._current = None  # a field this route does not take: skipped, as browsers' extra fields are
            return
        if name in self.kept:
            raise ApiError("invalid_request", f"the multipart body has more than one '{name}' part: send one")
        self._current = self.kept[name] = bytearray()
        self._limit = None if name == FILE_FIELD else MAX_FIELD_BYTES

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current += data[start:end]
            if self._limit is not None and len(self._current) > self._limit:
                raise ApiError("invalid_request", f"a text field is longer than {self._limit} bytes")

    def _on_part_end(self) -> None:
        self._current = None

    def _on_end(self) -> None:
        self.complete = True


async def read_upload(request: Request, text_fields: frozenset[str] = frozenset()) -> Upload:
    """The recording and the ``text_fields`` of the body, or a problem: 415 for a body that is neither
    audio nor a form, 422 for a malformed one."""
    content_type = request.headers.get("content-type", "")
    if is_raw_audio(content_type):
        return Upload(recording=await request.body())
    media_type, options = parse_options_header(content_type)
    media = media_type.decode("latin-1").lower()
    if media == "application/x-www-form-urlencoded" and text_fields:
        return Upload(fields=await _read_urlencoded(request, text_fields))
    if media != "multipart/form-data":
        raise ApiError("unsupported_media_type", f"{SUPPORTED}, not {content_type or 'no type'}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError("invalid_request", "multipart/form-data without a boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise ApiError(
            "invalid_request", f"the multipart boundary is {len(boundary)} characters; at most {MAX_BOUNDARY}"
        )
    parts = _Parts(text_fields)
    try:
        parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise ApiError("invalid_request", f"malformed multipart body: {exc}") from None
    if not parts.complete:
        raise ApiError("invalid_request", "the multipart body ends before its closing boundary")
    recording = parts.kept.pop(FILE_FIELD, None)
    try:
        fields = {name: bytes(value).decode("utf-8") for name, value in parts.kept.items()}
    except UnicodeDecodeError:
        raise ApiError("invalid_request", "a text field is not UTF-8") from None
    return Upload(recording=None if recording is None else bytes(recording), fields=fields)


async def _read_urlencoded(request: Request, text_fields: frozenset[str]) -> dict[str, str]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError("invalid_request", f"the form is longer than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARTS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError("invalid_request", f"malformed form body: {exc}") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in text_fields:
            continue
        if name in fields:
            raise ApiError("invalid_request", f"the form has more than one '{name}' field: send one")
        fields[name] = value
    return fields


async def read_recording(request: Request) -> bytes:
    """The recording of a route that takes nothing else (``/predict``, ``/embed``)."""
    upload = await read_upload(request)
    if upload.recording is None:
        raise ApiError("invalid_request", f"the multipart body has no field '{FILE_FIELD}'")
    return upload.recording
