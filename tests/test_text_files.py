"""Issue 20, class 2: pairs files and profile files are read as editors write them.

One reading rule (``trt.fileio.read_text``): UTF-8 with or without a byte-order mark, LF, CRLF or CR line
ends; the pairs parser then takes tabs or several spaces between names and whitespace around them, and
TOML takes them around keys and values. Anything else (Latin-1, UTF-16, binary) is one message naming
the file and the line. The properties are Hypothesis runs with a fixed seed and a bounded number of
examples: the same on every run, about two seconds.
"""

import re
from pathlib import Path

import pytest
from conftest import profile_toml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from trt.engine.profiles import read_profile_file
from trt.errors import ProfileError, UserError
from trt.fileio import read_text
from trt.jobs.pairs import read_pairs

BOUNDED = settings(max_examples=60, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])
UTF8_BOM = b"\xef\xbb\xbf"

# How an editor may end and pad a line.
line_ends = st.sampled_from(["\n", "\r\n", "\r"])
gaps = st.sampled_from([" ", "\t", "  ", " \t ", "\t\t", "    "])
margins = st.sampled_from(["", " ", "\t", "  \t"])
# Image names as users have them: letters of any script, digits, dots, dashes; no whitespace or '#' start.
names = st.text(st.sampled_from("abcxyzÉéßøçλд日本写真0189._-"), min_size=1, max_size=10).filter(
    lambda name: name not in (".", "..") and not name.startswith("#"))


@st.composite
def written_pairs_file(draw):
    """(the file's bytes as some editor wrote it, the pairs it names in order)."""
    pairs = draw(st.lists(st.tuples(names, names).filter(lambda p: p[0] != p[1]), min_size=1, max_size=8,
                          unique=True))
    lines = []
    for name0, name1 in pairs:
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "  ", "\t", "# a comment", "  # indented comment\t"])))
        lines.append(draw(margins) + name0 + draw(gaps) + name1 + draw(margins))
    text = "".join(line + draw(line_ends) for line in lines)
    if not draw(st.booleans()):  # no line end after the last line
        text = text.rstrip("\r\n")
    data = text.encode()
    return (UTF8_BOM + data if draw(st.booleans()) else data), pairs


@seed(20)
@BOUNDED
@given(written=written_pairs_file())
def test_pairs_files_are_read_as_editors_write_them(written, tmp_path):
    data, pairs = written
    path = tmp_path / "pairs.txt"
    path.write_bytes(data)
    entries = read_pairs(path).entries
    assert [entry.names for entry in entries] == pairs


@st.composite
def written_profile_file(draw):
    """(the bytes of a profile file as some editor wrote it, the canonical text of the same file)."""
    tops = draw(st.lists(st.integers(1, 4096), min_size=1, max_size=4, unique=True).map(sorted))
    buckets = [(f"n{top}", low, top, top) for low, top in zip([1] + [t + 1 for t in tops], tops)]
    canonical = profile_toml(*buckets, batch=(1, 1, draw(st.integers(1, 8))))
    lines = []
    for line in canonical.split("\n"):
        if line:
            # Whitespace around every '=' and at both ends of the line, as hand-edited files have it.
            line = re.sub(r" = ", lambda _: draw(margins) + "=" + draw(margins), line)
            line = draw(margins) + line + draw(margins)
        lines.append(line)
    text = draw(line_ends).join(lines)
    data = text.encode()
    return (UTF8_BOM + data if draw(st.booleans()) else data), canonical


@seed(20)
@BOUNDED
@given(written=written_profile_file())
def test_profile_files_are_read_as_editors_write_them(written, tmp_path):
    data, canonical = written
    path = tmp_path / "profiles.toml"
    path.write_text(canonical)
    expected = read_profile_file(path)
    path.write_bytes(data)
    assert read_profile_file(path) == expected


@st.composite
def foreign_text(draw):
    """(bytes of a text file that is not UTF-8 from a line on, that line, what the message says of it)."""
    good = draw(st.lists(st.sampled_from(["a.jpg b.jpg", "# pairs", "", "x.png\ty.png"]), max_size=5))
    end = draw(line_ends)
    head = "".join(line + end for line in good).encode()
    kind = draw(st.sampled_from(["latin-1", "cp1252", "binary"]))
    if kind == "binary":
        bad = b"\x89PNG\x00\x00\x00\rIHDR"  # an image given as the pairs file
        says = "a NUL byte: a binary file, not text"  # found before the 0x89, which is not UTF-8 either
    else:
        bad = "café.jpg thé.jpg".encode(kind)
        says = "byte 0xe9 at column 4 is not UTF-8"
    line = len(good) + 1
    return head + bad + end.encode() + b"a.jpg b.jpg" + end.encode(), line, says


@seed(20)
@BOUNDED
@given(written=foreign_text())
def test_another_encoding_or_binary_is_refused_with_its_line(written, tmp_path):
    data, line, says = written
    path = tmp_path / "pairs.txt"
    path.write_bytes(data)
    with pytest.raises(UserError) as error:
        read_pairs(path)
    assert str(error.value).startswith(f"pairs file {path}, line {line}: "), error.value
    assert says in str(error.value)


PROFILE_WITH_A_COMMENT = profile_toml(("n512", 1, 512, 512)) + "# réglé à la main\n"  # the comment is line 9


@pytest.mark.parametrize("data, line, says", [
    (PROFILE_WITH_A_COMMENT.encode("utf-16"), 1, "UTF-16 text (by its byte-order mark); save it as UTF-8"),
    (b"\xfe\xff" + PROFILE_WITH_A_COMMENT.encode("utf-16-be"), 1, "UTF-16 text"),
    (PROFILE_WITH_A_COMMENT.encode("utf-32"), 1, "UTF-32 text"),
    (PROFILE_WITH_A_COMMENT.encode("latin-1"), 9, "byte 0xe9 at column 4 is not UTF-8"),
    (PROFILE_WITH_A_COMMENT.replace("\n", "\r\n").encode("cp1252"), 9, "byte 0xe9 at column 4 is not UTF-8"),
], ids=["utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252-crlf"])
def test_profile_files_in_another_encoding_name_the_file_and_line(data, line, says, tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(data)
    with pytest.raises(ProfileError) as error:
        read_profile_file(path)
    assert str(error.value).startswith(f"profile file {path}, line {line}: {says}"), error.value


def test_only_lf_crlf_and_cr_end_a_line(tmp_path):
    """Unicode line separators and NEL inside a line stay in it (str.splitlines would split there)."""
    path = tmp_path / "notes.txt"
    path.write_text("a\u2028b \x85c\r\nd\re\n", encoding="utf-8", newline="")
    assert read_text(path).split("\n") == ["a\u2028b \x85c", "d", "e", ""]


def test_a_pairs_file_with_a_bom_matches_its_images(tmp_path):
    """The instance the issue reported: a BOM glued to the first name made its image "missing"."""
    (tmp_path / "a.jpg").write_bytes(b"")
    path = tmp_path / "pairs.txt"
    path.write_bytes(UTF8_BOM + b"a.jpg\tb.jpg  \r\n")
    (entry,) = read_pairs(path).entries
    assert entry.path0 == Path(tmp_path / "a.jpg") and entry.path0.exists()
