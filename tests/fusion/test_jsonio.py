"""Atomic JSON Lines writing and careful reading."""

from __future__ import annotations

import json

import pytest

from fusion.jsonio import read_jsonl, write_json_atomic, write_jsonl_atomic


def test_round_trip_and_replace(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    write_jsonl_atomic(path, [{"a": 1}, {"b": "é"}])
    assert read_jsonl(path) == [{"a": 1}, {"b": "é"}]
    write_jsonl_atomic(path, iter([{"c": 3}]))
    assert path.read_text(encoding="utf-8") == '{"c": 3}\n'
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"ok": True}])
    with pytest.raises(TypeError):
        write_jsonl_atomic(path, [{"fine": 1}, {"bad": object()}])
    assert read_jsonl(path) == [{"ok": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_json_document(tmp_path):
    path = write_json_atomic(tmp_path / "summary.json", {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}


def test_read_jsonl_skips_blank_lines_and_reports_bad_ones(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n   \n[2]\nnot json\n')
    with pytest.raises(ValueError, match="line 4"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n   \n[2]\n')
    assert read_jsonl(path) == [{"a": 1}, [2]]
