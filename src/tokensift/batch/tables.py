"""Batch inputs and outputs: JSONL and Parquet tables cut into shards, shard parts written atomically.

A job's input is cut into *shards* of ``shard_rows`` consecutive rows (JSONL: byte ranges found in one
streaming pass; Parquet: row ranges, read through the row groups they touch), so a worker holds one shard at a
time and a re-run can skip the shards already written. Every input row comes back as one output row, in input
order: a line that is blank or not a JSON object still becomes a row (its text in ``raw``, the problem in
``error``). Parts are written to a temporary name and renamed, so a part on disk is always whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokensift.errors import InputFileError, ParameterError

JSONL = (".jsonl", ".ndjson", ".json")
PARQUET = (".parquet", ".pq")
RAW = "raw"
"""Column holding the text of an input line that is not a JSON object (so nothing is lost)."""
ERROR = "error"
"""Column holding each row's problem (null when the row was processed)."""


def table_format(path: Path, role: str) -> str:
    """``jsonl`` or ``parquet`` from the file name; anything else is a :class:`ParameterError`."""
    suffix = path.suffix.lower()
    if suffix in JSONL:
        return "jsonl"
    if suffix in PARQUET:
        return "parquet"
    raise ParameterError(
        f"{role} {path} must end in .jsonl, .ndjson, .json (JSON lines) or .parquet", option=role.lower()
    )


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, start + rows)`` of the input; for JSONL also their byte range."""

    index: int
    start: int
    rows: int
    byte_start: int = 0
    byte_stop: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _check_input(path: Path) -> None:
    if not path.exists():
        raise InputFileError(f"input not found: {path}")
    if path.is_dir():
        raise InputFileError(f"input {path} is a directory; give a .jsonl or .parquet file")


def plan_shards(path: Path, shard_rows: int) -> list[Shard]:
    """Cut ``path`` into shards of ``shard_rows`` rows (the last may be shorter); one streaming pass."""
    _check_input(path)
    if table_format(path, "INPUT") == "parquet":
        total = _parquet_file(path).metadata.num_rows
        return [Shard(i, start, min(shard_rows, total - start)) for i, start in enumerate(range(0, total, shard_rows))]
    shards: list[Shard] = []
    start_byte, offset, rows, row = 0, 0, 0, 0
    with path.open("rb") as handle:
        for line in handle:
            offset += len(line)
            rows += 1
            if rows == shard_rows:
                shards.append(Shard(len(shards), row, rows, start_byte, offset))
                row, start_byte, rows = row + rows, offset, 0
    if rows:
        shards.append(Shard(len(shards), row, rows, start_byte, offset))
    return shards


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for a file that is not Parquet
        raise InputFileError(f"{path} is not a readable Parquet file: {exc}") from None


def _json_row(line: bytes, number: int) -> dict[str, Any]:
    """One JSONL line as a row: the object itself, or ``raw`` + ``error`` when it is not one."""
    try:
        text = line.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        kept = line.decode("utf-8", errors="replace").rstrip("\r\n")
        return {
            RAW: kept,
            ERROR: f"line {number} is not valid UTF-8 (byte 0x{line[exc.start]:02x} at offset {exc.start})",
        }
    if not text.strip():
        return {RAW: text, ERROR: f"line {number} is blank"}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {RAW: text, ERROR: f"line {number} is not valid JSON: {exc.msg} (column {exc.colno})"}
    if not isinstance(value, dict):
        return {RAW: text, ERROR: f"line {number} is a JSON {type(value).__name__}, not an object"}
    return value


def unusable(row: dict[str, Any]) -> bool:
    """A row :func:`_json_row` made from a line that is not a JSON object: only its ``raw`` text and ``error``."""
    return set(row) == {RAW, ERROR}


def read_shard(path: Path, shard: Shard) -> list[dict[str, Any]]:
    """The shard's rows, each a dict of the input's columns (see the module doc for unusable lines)."""
    if table_format(path, "INPUT") == "parquet":
        return _parquet_rows(path, shard)
    with path.open("rb") as handle:
        handle.seek(shard.byte_start)
        data = handle.read(shard.byte_stop - shard.byte_start)
    lines = data.splitlines(keepends=True)
    if len(lines) != shard.rows:
        raise InputFileError(f"{path} changed while the job ran (shard {shard.index} no longer has {shard.rows} rows)")
    return [_json_row(line, shard.start + i + 1) for i, line in enumerate(lines)]


def _parquet_rows(path: Path, shard: Shard) -> list[dict[str, Any]]:
    """Rows of a Parquet row range, reading only the row groups that hold them."""
    import pyarrow as pa

    parquet = _parquet_file(path)
    groups, first, seen = [], None, 0
    for group in range(parquet.metadata.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if seen + size > shard.start and seen < shard.start + shard.rows:
            groups.append(group)
            first = seen if first is None else first
        seen += size
    if not groups or first is None:
        return []
    table = pa.concat_tables([parquet.read_row_group(g) for g in groups])
    rows: list[dict[str, Any]] = table.slice(shard.start - first, shard.rows).to_pylist()
    return rows


def input_columns(path: Path) -> list[str]:
    """The input's column names (Parquet: its schema; JSONL: the first line that is an object)."""
    if table_format(path, "INPUT") == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            row = _json_row(line, number)
            if ERROR not in row or RAW not in row:
                return list(row)
    return []


# --- parts ---------------------------------------------------------------------------------------------------
def part_path(folder: Path, shard: Shard, fmt: str) -> Path:
    return folder / f"part-{shard.index:06d}.{'parquet' if fmt == 'parquet' else 'jsonl'}"


def _jsonable(value: Any) -> Any:
    """Values Parquet gives back that JSON does not know (bytes, dates, decimals) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _as_text(value: Any) -> str | None:
    """A value of a mixed-type column: strings as they are, anything else as JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(_jsonable(value), ensure_ascii=False)


def arrow_table(rows: list[dict[str, Any]], vectors: tuple[str, ...] = ()) -> Any:
    """Rows as an Arrow table; a column whose values mix types (possible in JSONL) becomes text: strings as
    they are, other values as JSON."""
    import pyarrow as pa

    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            kind = pa.list_(pa.float32()) if name in vectors else None
            columns[name] = pa.array(values, kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array([_as_text(v) for v in values], pa.string())
    return pa.table(columns) if columns else pa.table({ERROR: pa.array([None] * len(rows), pa.string())})


def write_part(path: Path, rows: list[dict[str, Any]], fmt: str, vectors: tuple[str, ...] = ()) -> None:
    """Write a shard's output rows whole or not at all (temporary file, fsync, rename); Parquet keeps the
    ``vectors`` columns as lists of float32 (the models' own precision: half the bytes of doubles)."""
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(arrow_table(rows, vectors), partial)
    else:
        with partial.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(_jsonable(row), ensure_ascii=False) + "\n")
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def part_rows(path: Path) -> int:
    """Rows in a written part."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: int = pq.ParquetFile(path).metadata.num_rows
        return rows
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def merge_parts(parts: list[Path], output: Path, fmt: str) -> list[str]:
    """Concatenate ``parts`` (in order) into ``output``; returns the columns written as JSON text because their
    type differs between parts. Streams: one part in memory at a time."""
    partial = output.with_name(output.name + ".partial")
    if fmt == "jsonl":
        with partial.open("wb") as target:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(1 << 20):
                        target.write(block)
        os.replace(partial, output)
        return []
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.ParquetFile(p).schema_arrow for p in parts]
    as_text: list[str] = []
    schema = _unify(schemas, as_text)
    with pq.ParquetWriter(partial, schema) as writer:
        for part in parts:
            table = pq.read_table(part)
            for name in as_text:
                if name in table.column_names and table.schema.field(name).type != pa.string():
                    values = [_as_text(v) for v in table[name].to_pylist()]
                    table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.string()))
            missing = [f for f in schema if f.name not in table.column_names]
            for field in missing:
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
            writer.write_table(table.select(schema.names).cast(schema))
    os.replace(partial, output)
    return as_text


def _unify(schemas: list[Any], as_text: list[str]) -> Any:
    """One schema for every part (types promoted where Arrow can); columns it cannot unify become strings."""
    import pyarrow as pa

    while True:
        try:
            return pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError) as exc:
            culprit = next((n for n in _names(schemas) if n not in as_text and _conflicts(schemas, n)), None)
            if culprit is None:
                raise InputFileError(f"the shard parts cannot be merged: {exc}") from None
            as_text.append(culprit)
            schemas = [
                s.set(s.get_field_index(culprit), pa.field(culprit, pa.string())) if culprit in s.names else s
                for s in schemas
            ]


def _names(schemas: list[Any]) -> Iterator[str]:
    seen: dict[str, None] = {}
    for schema in schemas:
        seen.update(dict.fromkeys(schema.names))
    yield from seen


def _conflicts(schemas: list[Any], name: str) -> bool:
    import pyarrow as pa

    types = {str(s.field(name).type) for s in schemas if name in s.names and s.field(name).type != pa.null()}
    return len(types) > 1
