"""The shared option checks (deltanet.options) and the all-or-nothing folder writer
(pysim.atomic.atomic_dir)."""

from __future__ import annotations

import argparse
import math
import os
import stat
from pathlib import Path

import pytest
from deltanet.pysim.atomic import atomic_dir, staging_folder

from deltanet.cli import build_parser
from deltanet.options import (
    CliError,
    check_output_dir,
    check_output_file,
    float_in,
    int_in,
    one_line,
    path_arg,
)

#: numeric options defined outside this work's files (deltanet/arch.py), range-checked later by
#: deltanet.arch.check_obs_words and the cycle models (one line, exit code 2, before any work)
UNTYPED_ELSEWHERE = {"--obs-words"}


def tree(root: Path) -> dict:
    """Every entry under ``root`` -> its kind, and for a file its size and mtime (a folder's
    mtime changes when a probe file comes and goes)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = ("dir",) if stat.S_ISDIR(st.st_mode) else \
                (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


# ---- int_in / float_in ------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [("1", 1), ("64", 64), (" 7 ", 7), ("+3", 3)])
def test_int_in_accepts(text, want):
    assert int_in(1, 64)(text) == want


@pytest.mark.parametrize("text", ["0", "65", "-1", "2.5", "1e3", "nan", "inf", "", "abc",
                                  "99999999999999999999999"])
def test_int_in_refuses_with_value_and_range(text):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        int_in(1, 64)(text)
    assert "1..64" in str(e.value) and repr(text) in str(e.value)


def test_int_in_open_top():
    t = int_in(0)
    assert t("123456789") == 123456789 and t.range_text == ">= 0"
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0"):
        t("-1")


@pytest.mark.parametrize("text, ok", [("0", True), ("0.999", True), ("1", False), ("-0.1", False),
                                      ("nan", False), ("inf", False), ("-inf", False),
                                      ("1e400", False), ("x", False)])
def test_float_in_half_open(text, ok):
    t = float_in(0, 1, hi_open=True)
    assert t.range_text == "[0, 1)"
    if ok:
        assert t(text) == float(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError) as e:
            t(text)
        assert "a finite number in [0, 1)" in str(e.value) and repr(text) in str(e.value)


def test_float_in_open_low_and_infinite():
    assert float_in(0, lo_open=True).range_text == "> 0"
    with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
        float_in(0, lo_open=True)("0")
    assert float_in(0, finite=False)("inf") == math.inf
    with pytest.raises(argparse.ArgumentTypeError):
        float_in(0, finite=False)("nan")  # never a number in any range
    with pytest.raises(ValueError, match="empty range"):
        float_in(1, 1, hi_open=True)
    with pytest.raises(ValueError, match="empty range"):
        int_in(2, 1)


def test_path_arg_refuses_empty():
    assert path_arg("a/b") == Path("a/b")
    for text in ("", "  "):
        with pytest.raises(argparse.ArgumentTypeError, match="empty path"):
            path_arg(text)


def test_one_line():
    assert one_line("a\n\n  b  \nc") == "a; b; c"
    assert one_line("") == ""


# ---- the parser -------------------------------------------------------------------------------
def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_numeric_option_is_range_checked():
    untyped = []
    for name, p in _subparsers().items():
        for a in p._actions:
            if a.type in (int, float) and a.option_strings[0] not in UNTYPED_ELSEWHERE:
                untyped.append(f"{name} {a.option_strings[0]}")
    assert not untyped, f"numeric options without int_in/float_in: {untyped}"


def test_help_states_range_and_default():
    for name, p in _subparsers().items():
        text = " ".join(p.format_help().split())
        for a in p._actions:
            rng = getattr(a.type, "range_text", None)
            if rng is None:
                continue
            want = f"range {rng}" + (", default " if a.default is not None else ")")
            assert want in text, (name, a.option_strings)


def test_usage_error_is_one_line(capsys):
    from deltanet.cli import main

    assert main(["eval", "--model", "m.npz", "--episodes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deltanet eval: error: argument --episodes")
    assert "'0'" in err and "1..100000" in err


# ---- output paths -----------------------------------------------------------------------------
@pytest.fixture
def place(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("keep")
    return tmp_path


def test_output_file_good(place):
    before = tree(place)
    check_output_file(place / "new.json", "--json")
    check_output_file(place / "afile", "--json")  # replaced atomically: fine
    check_output_file(place / "a" / "b" / "c.json", "--json")  # parents can be made
    check_output_file(None, "--json")
    assert tree(place) == before  # nothing created, not even the parents


@pytest.mark.parametrize("rel, needle", [
    ("adir", "is a folder"),
    ("afile/x.json", "afile is a file, not a folder"),
    ("afile/sub/x.json", "afile is a file, not a folder"),
    ("n" * 250, "name too long"),
])
def test_output_file_bad(place, rel, needle):
    before = tree(place)
    with pytest.raises(CliError) as e:
        check_output_file(place / rel, "--out")
    assert str(e.value).startswith(f"--out {place / rel}: ") and needle in str(e.value)
    assert "\n" not in str(e.value)
    assert tree(place) == before


def test_output_file_unwritable_and_special():
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc")
    with pytest.raises(CliError, match="cannot write in folder /proc"):
        check_output_file("/proc/x.json", "--json")
    with pytest.raises(CliError, match="cannot create folder /proc/nodir"):
        check_output_file("/proc/nodir/x.json", "--json")
    with pytest.raises(CliError, match="not a regular file"):
        check_output_file("/dev/null", "--json")
    with pytest.raises(CliError, match="empty path"):
        check_output_file("", "--json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_read_only_folder(place):
    ro = place / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CliError, match="cannot write in folder"):
            check_output_file(ro / "x.json", "--json")
        with pytest.raises(CliError, match="cannot write in folder"):
            check_output_dir(ro, "--out")
        with pytest.raises(CliError, match="cannot create folder"):
            check_output_dir(ro / "sub", "--out")
    finally:
        ro.chmod(0o755)


def test_output_dir(place):
    before = tree(place)
    check_output_dir(place / "adir", "--out")
    check_output_dir(place / "new" / "deeper", "--out", staged=True)
    assert tree(place) == before
    with pytest.raises(CliError, match="is a file; expected a folder"):
        check_output_dir(place / "afile", "--out")
    with pytest.raises(CliError, match="afile is a file, not a folder"):
        check_output_dir(place / "afile" / "sub", "--out")
    with pytest.raises(CliError, match="name too long"):
        check_output_dir(place / ("d" * 250), "--out", staged=True)
    with pytest.raises(CliError, match="empty path"):
        check_output_dir("", "--out")
    (place / "dangling").symlink_to(place / "nowhere")
    with pytest.raises(CliError, match="link to nothing"):
        check_output_dir(place / "dangling", "--out")


# ---- atomic_dir -------------------------------------------------------------------------------
def test_atomic_dir_new_folder_appears_whole(tmp_path):
    out = tmp_path / "a" / "design"
    with atomic_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".design.tmp-")
        assert not out.exists()  # nothing visible until the block ends
        (tmp / "x.v").write_text("v")
        (tmp / "x.json").write_text("j")
    assert sorted(p.name for p in out.iterdir()) == ["x.json", "x.v"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["design"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0o700


def test_atomic_dir_replaces_files_and_keeps_others(tmp_path):
    out = tmp_path / "design"
    out.mkdir()
    (out / "x.v").write_text("old v")
    (out / "x.json").write_text("old j")
    (out / "notes.txt").write_text("mine")
    with atomic_dir(out) as tmp:
        (tmp / "x.v").write_text("new v")
        (tmp / "x.json").write_text("new j")
        assert (out / "x.v").read_text() == "old v"
    assert (out / "x.v").read_text() == "new v" and (out / "x.json").read_text() == "new j"
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design"]


@pytest.mark.parametrize("exc", [RuntimeError("generator failed"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [True, False])
def test_atomic_dir_failure_leaves_everything_as_it_was(tmp_path, exc, existing):
    out = tmp_path / "new" / "design"
    if existing:
        out.mkdir(parents=True)
        (out / "x.v").write_text("old v")
        (out / "x.json").write_text("old j")
    before = tree(tmp_path)
    with pytest.raises(type(exc)), atomic_dir(out) as tmp:
        (tmp / "x.v").write_text("new v")
        raise exc
    assert tree(tmp_path) == before  # old files, no temporary, no new parent folder


def test_atomic_dir_rolls_back_a_failed_commit(tmp_path):
    out = tmp_path / "design"
    out.mkdir()
    (out / "a.v").write_text("old a")
    (out / "b.json").write_text("old b")
    (out / "c.txt").mkdir()  # a folder in the way of one new file: that replace fails
    (out / "c.txt" / "inner").write_text("x")
    with pytest.raises(OSError), atomic_dir(out) as tmp:
        for name in ("a.v", "b.json", "c.txt", "d.new"):
            (tmp / name).write_text(f"new {name}")
    assert (out / "a.v").read_text() == "old a" and (out / "b.json").read_text() == "old b"
    assert not (out / "d.new").exists() and (out / "c.txt" / "inner").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design"]


def test_staging_folder(tmp_path):
    assert staging_folder(tmp_path / "x") == tmp_path
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert staging_folder(tmp_path / "link") == (tmp_path / "real").resolve().parent
