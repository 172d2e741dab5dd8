"""Body views: decoding, classification and the defensive fallbacks of ``app.inspect``."""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
import zlib

import pytest

from app.inspect.bodyview import BodyView, build_view
from app.inspect.display import hex_dump, human_size
from app.inspect.multipart import Part

JSON = [("Content-Type", "application/json")]
KINDS = {"empty", "json", "form", "multipart", "text", "binary"}


def ct(value: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Content-Type", value), *extra]


# -- human_size / hex_dump ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1048575, "1.0 MiB"),
        (25 << 20, "25.0 MiB"),
        (3 << 30, "3.0 GiB"),
    ],
)
def test_human_size(n, expected):
    assert human_size(n) == expected


def test_hex_dump_format():
    data = b"Hello\x00World\x01\x02\x03\x04\x05\x7f\xffabc"
    lines, truncated = hex_dump(data, 1024)
    assert not truncated
    assert lines == [
        "00000000  48 65 6c 6c 6f 00 57 6f  72 6c 64 01 02 03 04 05  |Hello.World.....|",
        "00000010  7f ff 61 62 63                                    |..abc|",
    ]
    # Every line has the ASCII column in the same place.
    assert {line.index("|") for line in lines} == {60}


def test_hex_dump_cap():
    lines, truncated = hex_dump(bytes(range(256)) * 4, 40)
    assert truncated
    assert len(lines) == 3
    assert lines[2].startswith("00000020  20 21 22 23 24 25 26 27 ")
    assert hex_dump(b"", 10) == ([], False)
    assert hex_dump(b"abc", 0) == ([], True)


# -- basics ------------------------------------------------------------------------------------


def test_empty_body():
    view = build_view(b"", JSON)
    assert view == BodyView(kind="empty")


def test_binary_with_nul_gets_hex_lines():
    body = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(40))
    view = build_view(body, ct("image/png"))
    assert view.kind == "binary"
    assert view.note is None
    assert view.hex_lines is not None
    assert view.hex_lines[0] == (
        "00000000  89 50 4e 47 0d 0a 1a 0a  00 00 00 0d 49 48 44 52  |.PNG........IHDR|"
    )
    assert len(view.hex_lines) == 4
    assert view.text is None and view.pretty is None


def test_binary_hex_cap_note():
    body = b"\x00" * 1000
    view = build_view(body, [], hex_cap=256)
    assert view.kind == "binary"
    assert len(view.hex_lines) == 16
    assert view.note == "hex dump shows the first 256 B"


def test_header_lookup_is_case_insensitive_and_accepts_lists():
    view = build_view(b'{"a": 1}', [["CONTENT-TYPE", "Application/JSON; Charset=UTF-8"]])
    assert view.kind == "json"
    assert view.pretty == '{\n  "a": 1\n}'


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "<div hx-get=/x hx-trigger=load>",
        "{{ 7*7 }} {% raw %} ${7*7}",
        '"><img src=x onerror=alert(1)>',
    ],
)
def test_hostile_text_is_returned_unchanged(hostile):
    for headers in ([], ct("text/html"), ct("text/plain; charset=utf-8")):
        view = build_view(hostile.encode(), headers)
        assert view.kind == "text"
        assert view.text == hostile
        assert view.note is None
        assert view.hex_lines is None


def test_text_charset_is_honoured():
    view = build_view("caf\u00e9".encode("latin-1"), ct("text/plain; charset=ISO-8859-1"))
    assert (view.kind, view.text, view.note) == ("text", "caf\u00e9", None)
    view = build_view("h\u00e9".encode("utf-16"), ct("text/plain; charset=utf-16"))
    assert view.text == "h\u00e9"


def test_text_with_invalid_utf8_is_replaced_with_note():
    view = build_view(b"abc\xffdef", ct("text/plain"))
    assert view.kind == "text"
    assert view.text == "abc\ufffddef"
    assert "replaced" in view.note


@pytest.mark.parametrize("charset", ["bogus", "punycode", "base64", "unicode_escape", "a\x00b"])
def test_unknown_or_unsafe_charset_falls_back_to_utf8(charset):
    view = build_view("na\u00efve \\u0041".encode(), ct(f"text/plain; charset={charset}"))
    assert view.kind == "text"
    assert view.text == "na\u00efve \\u0041"
    assert "unknown charset" in view.note


def test_declared_text_with_nul_is_binary():
    view = build_view(b"abc\x00def", ct("text/plain"))
    assert view.kind == "binary"
    assert "NUL" in view.note
    assert view.hex_lines


def test_sniffing():
    assert build_view("plain \u00fcber\r\n\tline".encode(), []).kind == "text"
    assert build_view(b"<a>xml</a>", ct("application/xml")).kind == "text"
    assert build_view(b"<a/>", ct("application/atom+xml")).kind == "text"
    assert build_view(b"let x = 1", ct("application/javascript")).kind == "text"
    assert build_view(b"ok text", ct("application/octet-stream")).kind == "text"
    # Control characters other than tab/CR/LF mean binary, as does invalid UTF-8.
    assert build_view(b"bell\x07", []).kind == "binary"
    assert build_view(b"\xc3\x28", ct("application/octet-stream")).kind == "binary"


# -- JSON --------------------------------------------------------------------------------------


def test_json_keeps_key_order_and_unicode():
    body = '{"z": 1, "a": {"\u00e9t\u00e9": "\u2603", "b": [1, 2.5, null, true]}}'.encode()
    view = build_view(body, JSON)
    assert view.kind == "json"
    assert view.note is None
    assert view.pretty == (
        "{\n"
        '  "z": 1,\n'
        '  "a": {\n'
        '    "\u00e9t\u00e9": "\u2603",\n'
        '    "b": [\n'
        "      1,\n"
        "      2.5,\n"
        "      null,\n"
        "      true\n"
        "    ]\n"
        "  }\n"
        "}"
    )
    assert view.text is None and view.hex_lines is None


@pytest.mark.parametrize(
    "content_type",
    ["application/vnd.api+json", "application/json; charset=utf-8", "application/problem+json"],
)
def test_json_content_types(content_type):
    assert build_view(b"[1]", ct(content_type)).kind == "json"


def test_json_sniffed_without_content_type():
    view = build_view(b'  {"b": 2, "a": 1}', [])
    assert view.kind == "json"
    assert view.pretty == '{\n  "b": 2,\n  "a": 1\n}'
    # Starts like JSON but is not: plain text, no note.
    view = build_view(b"{not json", [])
    assert (view.kind, view.text, view.note) == ("text", "{not json", None)
    # A text/plain body is not sniffed.
    assert build_view(b"[1]", ct("text/plain")).kind == "text"


def test_json_with_bom_and_duplicate_keys():
    view = build_view(b'\xef\xbb\xbf{"a": 1, "a": 2}', JSON)
    assert view.kind == "json"
    assert view.pretty == '{\n  "a": 1,\n  "a": 2\n}'
    assert "duplicate" in view.note


def test_json_lone_surrogate_stays_encodable():
    view = build_view(b'{"s": "\\ud800x"}', JSON)
    assert view.kind == "json"
    assert view.pretty == '{\n  "s": "\\ud800x"\n}'
    view.pretty.encode("utf-8")


def test_invalid_json_with_json_type_is_text_with_note():
    view = build_view(b'{"a": 1,}', JSON)
    assert view.kind == "text"
    assert view.text == '{"a": 1,}'
    assert view.note.startswith("invalid JSON (")
    assert view.note.endswith("; shown as text")
    assert "line 1 column 9" in view.note


def test_json_huge_integer_is_text():
    view = build_view(b"[" + b"9" * 5000 + b"]", JSON)
    assert view.kind == "text"
    assert "invalid JSON" in view.note


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
)
def test_deep_nesting_does_not_crash(body):
    view = build_view(body, JSON)
    assert view.kind == "text"
    assert view.note == "JSON nesting deeper than 200 levels; shown as text"
    assert view.text == body.decode()
    # Without a content type the sniffer must survive it too.
    assert build_view(body, []).kind == "text"


def test_nesting_within_limit_and_brackets_in_strings():
    ok = b"[" * 200 + b"]" * 200
    assert build_view(ok, JSON).kind == "json"
    # Brackets inside strings don't count towards depth.
    body = json.dumps(["[" * 500, {"k": "{" * 500}]).encode()
    assert build_view(body, JSON).kind == "json"


def test_pretty_json_is_capped():
    # Deep nesting around many small values: indentation would blow the output up ~200 times.
    body = b"[" * 150 + b"0," * 20_000 + b"0" + b"]" * 150
    view = build_view(body, JSON, max_decoded=64 << 10)
    assert view.kind == "json"
    assert len(view.pretty) == 4 * (64 << 10)
    assert "pretty-printed JSON truncated" in view.note


# -- form --------------------------------------------------------------------------------------


def test_form_repeats_blanks_and_order():
    body = b"b=2&a=1&a=&flag&name=J%C3%BCrgen+M&plus=%2B&b=3"
    view = build_view(body, ct("application/x-www-form-urlencoded"))
    assert view.kind == "form"
    assert view.fields == [
        ("b", "2"),
        ("a", "1"),
        ("a", ""),
        ("flag", ""),
        ("name", "J\u00fcrgen M"),
        ("plus", "+"),
        ("b", "3"),
    ]
    assert view.note is None


def test_form_latin1_fallback_and_charset():
    form = ct("application/x-www-form-urlencoded")
    assert build_view(b"n=caf%E9", form).fields == [("n", "caf\u00e9")]
    assert build_view(b"n=caf\xc3\xa9", form).fields == [("n", "caf\u00e9")]
    latin = ct("application/x-www-form-urlencoded; charset=iso-8859-1")
    assert build_view(b"n=%C3%A9", latin).fields == [("n", "\u00c3\u00a9")]


def test_form_field_cap():
    body = b"&".join(b"k=%d" % i for i in range(10_050))
    view = build_view(body, ct("application/x-www-form-urlencoded"))
    assert len(view.fields) == 10_000
    assert "10050 form fields" in view.note


# -- multipart ---------------------------------------------------------------------------------

BOUNDARY = "----hookbinBoundary7MA4YWxkTrZu0gW"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\r\n--not-the-boundary\r\n\xff\x00\r"
NAIVE = "na\u00efve text\r\nsecond line\n".encode()


def multipart_body(boundary: str = BOUNDARY) -> bytes:
    b = boundary.encode()
    return b"".join(
        [
            b"preamble is ignored\r\n",
            b"--" + b + b"\r\n",
            b'Content-Disposition: form-data; name="greeting"\r\n\r\n',
            b"hello",
            b"\r\n--" + b + b"\r\n",
            b'Content-Disposition: form-data; name="greeting"\r\n\r\n',
            b"",
            b"\r\n--" + b + b"\r\n",
            b'Content-Disposition: form-data; name="upload"; filename="../../x.png"\r\n',
            b"Content-Type: image/png\r\n\r\n",
            PNG,
            b"\r\n--" + b + b"\r\n",
            b'Content-Disposition: form-data; name="doc"; filename="naive.txt"; '
            b"filename*=UTF-8''na%C3%AFve.txt\r\n",
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
            NAIVE,
            b"\r\n--" + b + b"--\r\n",
            b"epilogue is ignored",
        ]
    )


def test_multipart_parts():
    headers = ct(f'multipart/form-data; boundary="{BOUNDARY}"')
    view = build_view(multipart_body(), headers)
    assert view.kind == "multipart"
    assert view.note is None
    assert [p.name for p in view.parts] == ["greeting", "greeting", "upload", "doc"]
    greeting, blank, upload, doc = view.parts
    assert greeting == Part(
        name="greeting",
        filename=None,
        content_type=None,
        size=5,
        headers=[("Content-Disposition", 'form-data; name="greeting"')],
        text="hello",
    )
    assert (blank.size, blank.text) == (0, "")
    assert upload.filename == "../../x.png"
    assert upload.content_type == "image/png"
    assert upload.size == len(PNG)
    assert upload.text is None
    assert doc.filename == "na\u00efve.txt"
    assert doc.content_type == "text/plain; charset=utf-8"
    assert doc.size == len(NAIVE)
    assert doc.text == NAIVE.decode()


def test_multipart_unquoted_boundary_and_lf_only_lines():
    # Some clients end lines with a bare LF. (Content ending in CR would be ambiguous there: the
    # CR would read as part of a CRLF before the delimiter, so this blob ends differently.)
    blob = PNG[:-1]
    body = (
        b'--xyz\nContent-Disposition: form-data; name="greeting"\n\nhello\n'
        b'--xyz\nContent-Disposition: form-data; name="upload"; filename="x.png"\n\n'
        + blob
        + b"\n--xyz--\n"
    )
    view = build_view(body, ct("multipart/form-data; boundary=xyz"))
    assert view.kind == "multipart"
    assert view.note is None
    assert [p.name for p in view.parts] == ["greeting", "upload"]
    assert view.parts[0].text == "hello"
    assert view.parts[1].size == len(blob)


def test_multipart_built_with_email_mime():
    from email.mime.application import MIMEApplication
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    msg = MIMEMultipart("form-data", boundary="emailBoundary42")
    text = MIMEText("hi there", "plain", "utf-8")
    text.add_header("Content-Disposition", "form-data", name="msg")
    msg.attach(text)
    blob = MIMEApplication(b"\x00\x01binary", "octet-stream")
    blob.add_header("Content-Disposition", "form-data", name="f", filename="b.bin")
    msg.attach(blob)
    body = msg.as_bytes().split(b"\n\n", 1)[1]  # drop the message's own headers
    view = build_view(body, ct(msg["Content-Type"]))
    assert view.kind == "multipart"
    assert [(p.name, p.filename) for p in view.parts] == [("msg", None), ("f", "b.bin")]
    # Transfer encodings are shown as sent (base64 here), not undone: sizes are wire sizes.
    assert view.parts[1].headers[-1] == (
        "Content-Disposition",
        'form-data; name="f"; filename="b.bin"',
    )


def test_multipart_quoted_params_and_windows_paths():
    body = (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="a;b"; filename="C:\\dir\\say \\"hi\\".txt"\r\n'
        b"\r\n"
        b"x\r\n--b--"
    )
    (part,) = build_view(body, ct("multipart/form-data; boundary=b")).parts
    assert part.name == "a;b"
    assert part.filename == 'C:\\dir\\say "hi".txt'


def test_multipart_part_cap():
    body = b"".join(
        b"--b\r\nContent-Disposition: form-data; name=f\r\n\r\nv\r\n" for _ in range(1200)
    )
    view = build_view(body + b"--b--", ct("multipart/form-data; boundary=b"))
    assert view.kind == "multipart"
    assert len(view.parts) == 1000
    assert view.note == "more than 1000 parts; showing the first 1000"


def test_multipart_large_part_has_no_text():
    big = b"a" * (64 << 10) + b"b"
    body = b"--b\r\nContent-Type: text/plain\r\n\r\n" + big + b"\r\n--b--\r\n"
    (part,) = build_view(body, ct("multipart/form-data; boundary=b")).parts
    assert part.size == len(big)
    assert part.text is None


@pytest.mark.parametrize(
    ("body", "content_type", "note"),
    [
        (multipart_body(), "multipart/form-data", "without a boundary"),
        (multipart_body(), 'multipart/form-data; boundary=""', "without a boundary"),
        (multipart_body(), "multipart/form-data; boundary=other", "boundary not found"),
    ],
)
def test_multipart_without_usable_boundary_falls_back(body, content_type, note):
    view = build_view(body, ct(content_type))
    assert view.kind == "binary"  # the PNG part makes the whole body binary
    assert note in view.note
    assert view.hex_lines


def test_multipart_without_boundary_text_fallback():
    view = build_view(b"--x\r\n\r\nhello\r\n--x--", ct("multipart/form-data"))
    assert view.kind == "text"
    assert "without a boundary" in view.note


@pytest.mark.parametrize("cut", [5, 40, 120, 200, 300, 420, -30, -25, -23])
def test_truncated_multipart(cut):
    body = multipart_body()[:cut]
    view = build_view(body, ct(f"multipart/form-data; boundary={BOUNDARY}"))
    assert view.kind in KINDS
    if view.kind == "multipart":
        assert "closing boundary" in view.note


def test_truncated_multipart_keeps_partial_parts():
    body = multipart_body()
    cut = body.index(b"filename*")
    view = build_view(body[:cut], ct(f"multipart/form-data; boundary={BOUNDARY}"))
    assert view.kind == "multipart"
    assert view.note == "multipart body ends without a closing boundary"
    assert [p.name for p in view.parts][:3] == ["greeting", "greeting", "upload"]
    assert view.parts[2].size == len(PNG)


# -- Content-Encoding --------------------------------------------------------------------------


def test_gzip_body():
    raw = json.dumps({"hello": "w\u00f6rld"}, ensure_ascii=False).encode()
    for coding in ("gzip", "x-gzip", "GZIP"):
        view = build_view(gzip.compress(raw), [("content-encoding", coding), *JSON])
        assert view.kind == "json"
        assert view.decoded_from == "gzip"
        assert view.note is None
        assert json.loads(view.pretty) == {"hello": "w\u00f6rld"}


def test_multi_member_gzip():
    body = gzip.compress(b"hello ") + gzip.compress(b"world")
    view = build_view(body, [("Content-Encoding", "gzip")])
    assert (view.kind, view.text, view.note) == ("text", "hello world", None)


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_deflate_zlib_and_raw(wbits):
    c = zlib.compressobj(wbits=wbits)
    body = c.compress(b"a=1&b=2") + c.flush()
    headers = [("Content-Encoding", "deflate"), *ct("application/x-www-form-urlencoded")]
    view = build_view(body, headers)
    assert view.kind == "form"
    assert view.decoded_from == "deflate"
    assert view.fields == [("a", "1"), ("b", "2")]


def test_stacked_encodings():
    body = gzip.compress(zlib.compress(b"layered"))
    view = build_view(body, [("Content-Encoding", "deflate, gzip")])
    assert (view.kind, view.text, view.decoded_from) == ("text", "layered", "deflate, gzip")


def test_gzip_bomb_is_capped():
    bomb = gzip.compress(b"\x00" * (50 << 20), compresslevel=9)
    assert len(bomb) < 100 << 10
    limit = 1 << 20
    tracemalloc.start()
    try:
        view = build_view(bomb, [("Content-Encoding", "gzip")], max_decoded=limit)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert view.kind == "binary"
    assert view.decoded_from == "gzip"
    assert "decoded view truncated at 1 MiB" in view.note
    assert len(view.hex_lines) == (64 << 10) // 16
    # Bounded by the cap (plus the view's own copies), nowhere near the 50 MiB inflated size.
    assert peak < 6 * limit


def test_gzip_bomb_of_text_decodes_to_exactly_max_decoded():
    bomb = gzip.compress(b"a" * (20 << 20))
    view = build_view(bomb, [("Content-Encoding", "gzip")], max_decoded=1000)
    assert view.kind == "text"
    assert view.text == "a" * 1000
    assert view.note == "decoded view truncated at 1000 B"


def test_invalid_gzip_is_shown_raw():
    view = build_view(b'{"not": "compressed"}', [("Content-Encoding", "gzip"), *JSON])
    assert view.kind == "json"
    assert view.decoded_from is None
    assert view.note == "invalid gzip data; shown raw"
    view = build_view(b"\x1f\x8b\x08garbage\x00\xff", [("Content-Encoding", "gzip")])
    assert view.kind == "binary"
    assert view.note == "invalid gzip data; shown raw"


def test_truncated_gzip_shows_what_decoded():
    rng = random.Random(7)
    text = "".join(rng.choice("abcdefghij \n") for _ in range(200_000)).encode()
    body = gzip.compress(text)
    view = build_view(body[: len(body) // 2], [("Content-Encoding", "gzip")])
    assert view.decoded_from == "gzip"
    assert "gzip data is truncated after" in view.note
    assert view.kind == "text"
    assert 0 < len(view.text) < len(text)
    assert text.startswith(view.text.encode())


def test_gzip_trailing_garbage_noted():
    view = build_view(gzip.compress(b"ok") + b"\x00\x00junk", [("Content-Encoding", "gzip")])
    assert (view.kind, view.text) == ("text", "ok")
    assert view.note == "6 B of trailing data after the gzip stream ignored"


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, br", "compress"])
def test_unsupported_encoding_is_binary(coding):
    view = build_view(b"{}plain-looking", [("Content-Encoding", coding), *JSON])
    assert view.kind == "binary"
    assert view.decoded_from is None
    assert "is not supported; shown raw" in view.note
    assert view.hex_lines[0].startswith("00000000  7b 7d 70 6c")


def test_identity_encoding_is_ignored():
    view = build_view(b"hi", [("Content-Encoding", "identity")])
    assert (view.kind, view.text, view.decoded_from) == ("text", "hi", None)


def test_empty_gzip_stream_is_empty():
    view = build_view(gzip.compress(b""), [("Content-Encoding", "gzip")])
    assert (view.kind, view.decoded_from) == ("empty", "gzip")


def test_large_plain_body_view_is_truncated():
    body = ("\u00e9" * 1000).encode()  # 2000 bytes; byte 1001 is half a character
    view = build_view(body, ct("text/plain"), max_decoded=1001)
    assert view.kind == "text"
    assert view.text == "\u00e9" * 500  # the half character at the cut is dropped, not replaced
    assert view.note == "body is 2.0 KiB; view truncated at 1001 B"
    view = build_view(b'{"a": "' + b"x" * 100 + b'"}', JSON, max_decoded=50)
    assert view.kind == "text"
    assert "truncated" in view.note


# -- fuzz --------------------------------------------------------------------------------------

CONTENT_TYPES = [
    None,
    "",
    "application/json",
    "application/json; charset=utf-16",
    "application/x+json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-7",
    "multipart/form-data; boundary=b",
    "multipart/form-data; boundary=",
    'multipart/mixed; boundary="b;\\"x"',
    "multipart/form-data",
    "text/plain",
    "text/plain; charset=utf-7",
    "text/html; charset=shift_jis",
    "text/plain; charset=punycode",
    "application/xml",
    "application/octet-stream",
    "image/png",
    ';;;=;"',
    "garbage",
]
ENCODINGS = [None, "gzip", "deflate", "br", "gzip, gzip", "x-gzip", "identity", "bogus"]
FRAGMENTS = [
    b"--b\r\n",
    b"--b--",
    b"\r\n\r\n",
    b"Content-Disposition: form-data; name=\"a\"; filename*=UTF-8''%ff%C3\r\n",
    b"Content-Type: text/plain; charset=utf-16\r\n",
    b"{",
    b"[",
    b'"',
    b"\\",
    b"}",
    b"&",
    b"=",
    b"%",
    b"\x00",
    b"\xff",
    b"\x1f\x8b\x08\x00",
    b"\xc3",
    b"+2AA-",
]


def random_body(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        body = rng.randbytes(rng.randrange(0, 300))
    else:
        body = b"".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(0, 40)))
    roll = rng.random()
    if roll < 0.15:
        body = gzip.compress(body)
    elif roll < 0.2:
        body = zlib.compress(body)
    if rng.random() < 0.2 and body:
        # Flip or cut bytes, e.g. inside a compressed stream.
        pos = rng.randrange(len(body))
        body = (
            body[:pos]
            + bytes([body[pos] ^ 0xFF])
            + body[pos + 1 : rng.randrange(pos, len(body) + 1)]
        )
    return body


def check_invariants(view: BodyView) -> None:
    assert isinstance(view, BodyView)
    assert view.kind in KINDS
    # The last-resort handler in build_view must not be what kept us from raising.
    assert not (view.note or "").startswith("could not build a view")
    if view.kind == "binary":
        assert view.hex_lines is not None
    else:
        assert view.hex_lines is None
    payload = {
        "json": view.pretty,
        "form": view.fields,
        "multipart": view.parts,
        "text": view.text,
    }
    if view.kind in payload:
        assert payload[view.kind] is not None
    # Everything must survive being written into a UTF-8 response.
    strings = [view.pretty, view.text, view.note, *(view.hex_lines or [])]
    for k, v in view.fields or []:
        strings += [k, v]
    for part in view.parts or []:
        strings += [part.name, part.filename, part.content_type, part.text]
        for k, v in part.headers:
            strings += [k, v]
    for s in strings:
        if s is not None:
            s.encode("utf-8")


def test_fuzz_never_raises():
    rng = random.Random(1234)
    for _ in range(2000):
        headers = []
        content_type = rng.choice(CONTENT_TYPES)
        if content_type is not None:
            headers.append((rng.choice(["Content-Type", "content-type"]), content_type))
        encoding = rng.choice(ENCODINGS)
        if encoding is not None:
            headers.append(("Content-Encoding", encoding))
        view = build_view(random_body(rng), headers, max_decoded=rng.choice([64, 1 << 20]))
        check_invariants(view)


@pytest.mark.parametrize(
    "headers",
    [None, [], [("only-one",)], [(None, None)], {"Content-Type": "application/json"}, [1, 2]],
)
def test_odd_header_shapes(headers):
    check_invariants(build_view(b'{"a": 1}', headers))
