"""Atomic writes: an interrupted write leaves the previous file, and no debris."""

import os

import pytest

from gwlite.atomic import atomic_open, atomic_write_bytes, temp_target


def test_write_bytes_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "results.csv"
    atomic_write_bytes(target, b"old\n")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new\n")
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in target.parent.iterdir()] == ["results.csv"]


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half of a new re")
        raise RuntimeError("interrupted")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]


def test_text_and_binary_round_trip(tmp_path):
    with atomic_open(tmp_path / "a.txt", newline="") as handle:
        handle.write("x,y\r\n1,2\r\n")
    assert (tmp_path / "a.txt").read_bytes() == b"x,y\r\n1,2\r\n"
    atomic_write_bytes(tmp_path / "b.bin", bytes(range(5)), durable=False)
    assert (tmp_path / "b.bin").read_bytes() == bytes(range(5))
    assert oct((tmp_path / "b.bin").stat().st_mode & 0o777) == oct(0o644)


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "a"):
        pass


@pytest.mark.parametrize("name", ["result.json", "state.pt", ".hidden", "a.b.tmp.csv"])
def test_a_write_in_flight_is_recognised_as_a_leftover_of_its_target(tmp_path, name):
    """What a killed writer leaves is the temporary file seen during the write: its
    name maps back to the target; the target's own name and ordinary names do not."""
    target = tmp_path / name
    with atomic_open(target, "w") as handle:
        handle.write("x")
        (temp,) = [p.name for p in tmp_path.iterdir()]
    assert temp_target(temp) == name
    assert temp_target(name) is None
    assert temp_target(".tmp") is None and temp_target("x.tmp") is None
