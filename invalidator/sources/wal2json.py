"""Decoding wal2json output (format-version 2 records and format-version 1 documents).

Pure functions over bytes/str; no driver imports. Values keep their types: integers
are exact whatever their size, ``numeric`` columns become ``Decimal`` (so ``1.10`` stays
``1.10``, as psycopg hands it to the app), floating types become ``float``; everything
else is what wal2json printed (PostgreSQL's text form).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import orjson

from invalidator.core.changes import Begin, Change, ChangeKind, Commit, Event, Message
from invalidator.errors import DecodeError

_EXACT_TYPES = (b'"type":"numeric', b'"type":"decimal')
_FLOAT_TYPES = frozenset({"double precision", "real", "float8", "float4"})
_KINDS: dict[str, ChangeKind] = {"I": "insert", "U": "update", "D": "delete"}
_V1_KINDS: dict[str, ChangeKind] = {"insert": "insert", "update": "update", "delete": "delete"}


def _exact_loads(data: bytes | str) -> Any:
    # The stdlib parser keeps big integers exact and can give Decimal for fractions.
    return json.loads(data, parse_float=Decimal)


class _Inexact(Exception):
    """orjson gave a float where the column's type needs an exact number."""


def _is_float_type(type_name: str | None) -> bool:
    return type_name is not None and (
        type_name in _FLOAT_TYPES or type_name.startswith(("double", "real", "float"))
    )


def parse_json(data: bytes | str) -> Any:
    """Parse one JSON text: fast (orjson) unless it names numeric columns or lacks types."""
    if isinstance(data, str):
        data = data.encode()
    if any(marker in data for marker in _EXACT_TYPES) or b'"type"' not in data:
        return _exact_loads(data)
    return orjson.loads(data)


def _typed(value: Any, type_name: str | None) -> Any:
    if type(value) is float and not _is_float_type(type_name):
        # orjson turns integers beyond 64 bits into floats: parse this record exactly.
        raise _Inexact
    if isinstance(value, Decimal) and _is_float_type(type_name):
        return float(value)
    return value


def _row(columns: Any, what: str) -> dict[str, Any]:
    if not isinstance(columns, list):
        raise DecodeError(f"'{what}' is not a list")
    row: dict[str, Any] = {}
    for column in columns:
        try:
            name = column["name"]
            value = column.get("value")
            type_name = column.get("type")
        except (TypeError, KeyError, AttributeError):
            raise DecodeError(f"malformed column in '{what}': {column!r:.80}") from None
        if not isinstance(name, str):
            raise DecodeError(f"column name in '{what}' is not a string")
        row[name] = _typed(value, type_name)
    return row


def _text(record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        raise DecodeError(f"record has no string '{field}'")
    return value


def _opt_int(record: dict[str, Any], field: str) -> int | None:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, int):
        raise DecodeError(f"'{field}' is not an integer")
    return value


def _opt_text(record: dict[str, Any], field: str) -> str | None:
    value = record.get(field)
    if value is None or isinstance(value, str):
        return value
    raise DecodeError(f"'{field}' is not a string")


def decode_v2_record(record: Any) -> Event:
    """One parsed format-version 2 record → one event."""
    if not isinstance(record, dict):
        raise DecodeError("record is not a JSON object")
    action = record.get("action")
    if action in ("I", "U", "D"):
        kind = _KINDS[action]
        new = _row(record["columns"], "columns") if "columns" in record else None
        old = _row(record["identity"], "identity") if "identity" in record else None
        if kind != "delete" and new is None:
            raise DecodeError(f"'{action}' record has no 'columns'")
        if kind == "delete" and old is None:
            raise DecodeError("'D' record has no 'identity'")
        return Change(
            kind,
            _text(record, "schema"),
            _text(record, "table"),
            new,
            old,
            _opt_text(record, "lsn"),
        )
    if action == "B":
        return Begin(
            _opt_int(record, "xid"), _opt_text(record, "lsn"), _opt_text(record, "timestamp")
        )
    if action == "C":
        return Commit(
            _opt_int(record, "xid"),
            _opt_text(record, "lsn"),
            _opt_text(record, "nextlsn"),
            _opt_text(record, "timestamp"),
        )
    if action == "T":
        return Change(
            "truncate",
            _text(record, "schema"),
            _text(record, "table"),
            lsn=_opt_text(record, "lsn"),
        )
    if action == "M":
        return Message(
            bool(record.get("transactional")),
            _text(record, "prefix"),
            _text(record, "content"),
            _opt_text(record, "lsn"),
        )
    if action is None:
        raise DecodeError("record has no 'action' (not wal2json format-version 2?)")
    raise DecodeError(f"unknown action {action!r}")


def decode_v2(line: bytes | str) -> Event:
    """One format-version 2 line → one event."""
    try:
        record = parse_json(line)
        try:
            return decode_v2_record(record)
        except _Inexact:
            return decode_v2_record(_exact_loads(line))
    except ValueError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None


def _v1_row(names: Any, values: Any, types: Any, what: str) -> dict[str, Any]:
    if not isinstance(names, list) or not isinstance(values, list) or len(names) != len(values):
        raise DecodeError(f"'{what}' names and values do not match")
    if not isinstance(types, list) or len(types) != len(names):
        types = [None] * len(names)
    return {str(n): _typed(v, t) for n, v, t in zip(names, values, types, strict=True)}


def decode_v1_document(doc: Any) -> list[Event]:
    """One format-version 1 document (a whole transaction) → its events."""
    if not isinstance(doc, dict) or not isinstance(doc.get("change"), list):
        raise DecodeError("format-version 1 document has no 'change' list")
    xid = _opt_int(doc, "xid")
    ts = _opt_text(doc, "timestamp")
    nextlsn = _opt_text(doc, "nextlsn")
    events: list[Event] = [Begin(xid, None, ts)]
    for item in doc["change"]:
        if not isinstance(item, dict):
            raise DecodeError("change entry is not an object")
        kind = item.get("kind")
        if kind == "message":
            events.append(
                Message(
                    bool(item.get("transactional")), _text(item, "prefix"), _text(item, "content")
                )
            )
            continue
        if kind not in _V1_KINDS:
            raise DecodeError(f"unknown change kind {kind!r}")
        new = None
        if "columnnames" in item:
            new = _v1_row(
                item["columnnames"], item.get("columnvalues"), item.get("columntypes"), "columns"
            )
        old = None
        keys = item.get("oldkeys")
        if isinstance(keys, dict):
            old = _v1_row(
                keys.get("keynames"), keys.get("keyvalues"), keys.get("keytypes"), "oldkeys"
            )
        if _V1_KINDS[kind] == "delete" and old is None:
            raise DecodeError("delete has no 'oldkeys'")
        if _V1_KINDS[kind] != "delete" and new is None:
            raise DecodeError(f"{kind} has no 'columnnames'")
        events.append(
            Change(_V1_KINDS[kind], _text(item, "schema"), _text(item, "table"), new, old)
        )
    events.append(Commit(xid, None, nextlsn, ts))
    return events


def _decode_document(doc: Any) -> list[Event]:
    if isinstance(doc, dict) and "action" in doc:
        return [decode_v2_record(doc)]
    return decode_v1_document(doc)


def read_stream(lines: Iterable[str], source: str) -> Iterator[Event]:
    """Decode a file of wal2json output: v2 lines, or v1 documents (possibly multi-line).

    Errors are raised as ``DecodeError`` located at ``source:line``.
    """
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not pending:
            if not line:
                continue
            start = number
            if line.startswith('{"action"'):
                try:
                    yield decode_v2(line)
                except DecodeError as exc:
                    raise exc.at(source, number) from None
                continue
        pending.append(line)
        text = "".join(pending)
        try:
            doc = parse_json(text)
        except ValueError as exc:
            if text.startswith("{") and text.count("{") > text.count("}"):
                continue  # a v1 document printed over several lines; keep reading
            raise DecodeError(f"invalid JSON: {exc}").at(source, start) from None
        pending.clear()
        try:
            try:
                decoded = _decode_document(doc)
            except _Inexact:
                decoded = _decode_document(_exact_loads(text))
        except DecodeError as exc:
            raise exc.at(source, start) from None
        yield from decoded
    if pending:
        raise DecodeError("truncated JSON document at end of input").at(source, start)
