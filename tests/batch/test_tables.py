"""Shards, unusable lines, parts and merging (no model)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokensift.batch.tables import (
    ERROR,
    RAW,
    Shard,
    arrow_table,
    input_columns,
    merge_parts,
    part_path,
    plan_shards,
    read_shard,
    table_format,
    write_part,
)
from tokensift.errors import InputFileError, ParameterError


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_jsonl_shards_cover_every_line_once_in_order(tmp_path):
    lines = [json.dumps({"i": i, "text": f"row {i}"}) for i in range(10)]
    source = write_lines(tmp_path / "in.jsonl", lines)
    shards = plan_shards(source, 4)
    assert [(s.start, s.rows) for s in shards] == [(0, 4), (4, 4), (8, 2)]
    assert shards[-1].byte_stop == source.stat().st_size
    rows = [row for shard in shards for row in read_shard(source, shard)]
    assert [row["i"] for row in rows] == list(range(10))


def test_unusable_lines_become_rows_with_their_text_and_error(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", ['{"text": "ok"}', "", "{broken", "[1, 2]", "null"])
    rows = read_shard(source, plan_shards(source, 100)[0])
    assert rows[0] == {"text": "ok"}
    assert rows[1] == {RAW: "", ERROR: "line 2 is blank"}
    assert rows[2][RAW] == "{broken" and rows[2][ERROR].startswith("line 3 is not valid JSON:")
    assert rows[3] == {RAW: "[1, 2]", ERROR: "line 4 is a JSON list, not an object"}
    assert rows[4] == {RAW: "null", ERROR: "line 5 is a JSON NoneType, not an object"}


def test_parquet_shards_read_across_row_groups(tmp_path):
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"i": list(range(25)), "text": [f"t{i}" for i in range(25)]}), source, row_group_size=7)
    shards = plan_shards(source, 10)
    assert [(s.start, s.rows) for s in shards] == [(0, 10), (10, 10), (20, 5)]
    assert [r["i"] for r in read_shard(source, shards[1])] == list(range(10, 20))
    assert input_columns(source) == ["i", "text"]


def test_formats_come_from_the_file_name(tmp_path):
    assert table_format(tmp_path / "a.JSONL", "INPUT") == "jsonl"
    assert table_format(tmp_path / "a.pq", "OUTPUT") == "parquet"
    with pytest.raises(ParameterError, match=r"must end in \.jsonl"):
        table_format(tmp_path / "a.csv", "INPUT")
    with pytest.raises(InputFileError, match="input not found"):
        plan_shards(tmp_path / "missing.jsonl", 4)


def test_a_column_of_mixed_types_becomes_text():
    table = arrow_table([{"a": 1, "b": "x"}, {"a": "two", "b": None}, {"a": [3]}])
    assert table["a"].to_pylist() == ["1", "two", "[3]"]
    assert table["b"].to_pylist() == ["x", None, None]


def test_parts_are_renamed_into_place_and_merge_in_order(tmp_path):
    shards = [Shard(0, 0, 2), Shard(1, 2, 1)]
    write_part(part_path(tmp_path, shards[0], "parquet"), [{"i": 0, "v": 1}, {"i": 1, "v": 2}], "parquet")
    write_part(part_path(tmp_path, shards[1], "parquet"), [{"i": 2, "v": "text", "extra": True}], "parquet")
    assert not list(tmp_path.glob("*.partial"))
    out = tmp_path / "out.parquet"
    as_text = merge_parts([part_path(tmp_path, s, "parquet") for s in shards], out, "parquet")
    assert as_text == ["v"]
    table = pq.read_table(out)
    assert table["i"].to_pylist() == [0, 1, 2]
    assert table["v"].to_pylist() == ["1", "2", "text"]
    assert table["extra"].to_pylist() == [None, None, True]


def test_jsonl_parts_merge_byte_for_byte(tmp_path):
    shards = [Shard(0, 0, 1), Shard(1, 1, 1)]
    write_part(part_path(tmp_path, shards[0], "jsonl"), [{"text": "é", "n": 1}], "jsonl")
    write_part(part_path(tmp_path, shards[1], "jsonl"), [{"text": "b", "n": None}], "jsonl")
    out = tmp_path / "out.jsonl"
    merge_parts([part_path(tmp_path, s, "jsonl") for s in shards], out, "jsonl")
    assert out.read_text(encoding="utf-8") == '{"text": "é", "n": 1}\n{"text": "b", "n": null}\n'


def test_vector_columns_are_stored_as_float32_lists(tmp_path):
    path = tmp_path / "part.parquet"
    write_part(path, [{"embedding": [0.5, -1.25]}, {"embedding": None}], "parquet", ("embedding",))
    table = pq.read_table(path)
    assert str(table.schema.field("embedding").type) == "list<element: float>"
    assert table["embedding"].to_pylist() == [[0.5, -1.25], None]


def test_a_line_that_is_not_utf8_is_a_row_with_its_error_and_a_bom_is_ignored(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n{"text": "caf\xe9"}\n')
    rows = read_shard(source, plan_shards(source, 10)[0])
    assert rows[0] == {"text": "a"}
    assert rows[1] == {RAW: '{"text": "caf\ufffd"}', ERROR: "line 2 is not valid UTF-8 (byte 0xe9 at offset 13)"}
