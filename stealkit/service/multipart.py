"""multipart/form-data bodies (already read, under the byte limit) -> the files they hold, in memory.

python-multipart's streaming parser with our own limits: more files than the batch limit is a 413 the
moment the one too many begins (not the framework's 400), more than `max_parts` parts or a malformed
body a 422. Parts without a filename (plain form fields) are skipped; file parts are kept in order.
"""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from stealkit.service.decode import BadInput


def parse_files(body: bytes, content_type: str, max_files: int, max_parts: int = 100) -> list[tuple[str, bytes]]:
    """-> [(description, bytes)] of the file parts ("file 0 (images: 'a.png')")."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise BadInput(422, "malformed multipart body: no boundary in the Content-Type header")
    files: list[tuple[str, bytes]] = []
    state = {"parts": 0, "field": b"", "value": b"", "headers": {}, "chunks": None, "what": ""}

    def part_begin():
        state["parts"] += 1
        if state["parts"] > max_parts + max_files:
            raise BadInput(422, f"malformed multipart body: more than {max_parts + max_files} parts")
        state["headers"], state["chunks"] = {}, None

    def header_field(data, start, end):
        state["field"] += data[start:end]

    def header_value(data, start, end):
        state["value"] += data[start:end]

    def header_end():
        state["headers"][state["field"].strip().lower()] = state["value"].strip()
        state["field"], state["value"] = b"", b""

    def headers_finished():
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if b"filename" not in disp:
            return  # a plain field: ignored
        if len(files) + 1 > max_files:
            raise BadInput(413, f"more than {max_files} files in one request (the batch limit); split the batch")
        name = disp.get(b"name", b"").decode("latin-1")[:64]
        state["what"] = f"file {len(files)} ({name}: {disp[b'filename'].decode('latin-1')[:64]!r})"
        state["chunks"] = []

    def part_data(data, start, end):
        if state["chunks"] is not None:
            state["chunks"].append(data[start:end])

    def part_end():
        if state["chunks"] is not None:
            chunks = state["chunks"]
            files.append((state["what"], chunks[0] if len(chunks) == 1 else b"".join(chunks)))
            state["chunks"] = None

    callbacks = {
        "on_part_begin": part_begin, "on_header_field": header_field, "on_header_value": header_value,
        "on_header_end": header_end, "on_headers_finished": headers_finished, "on_part_data": part_data, "on_part_end": part_end,
    }
    parser = MultipartParser(boundary, callbacks, max_header_count=16, max_header_size=8192)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadInput(422, f"malformed multipart body: {str(exc).splitlines()[0][:200]}") from None
    if parser.state not in (MultipartState.END, MultipartState.BOUNDARY_PADDING):
        raise BadInput(422, "malformed multipart body: it ends before its closing boundary (truncated?)")
    return files
