"""Loaders for real behavior logs: Foursquare NYC check-ins and generic CSV / Parquet tables.

Both build the vocabulary from the data (sorted names, so ids are deterministic) unless one
is given, and raise `DataError` naming the file, the row (data rows count from 1; the header
is not a row), the column and the value.

Foursquare ("mobility intent" setting, like the paper's Tencent dataset; see
``../shared/data/foursquare_nyc/SOURCE.md``):

- behavior = the venue's root category (10 types);
- location = the user's own top-10 venues by check-in count, named ``zone_1`` (most
  visited) .. ``zone_10``, every other venue ``other`` - the paper's App. B maps each user's
  top-10 activity zones to area ids the same way; ties are broken by first appearance;
- day = the weekday name, minute = hour * 60 (the data has hours only);
- week = the rank of the trajectory id (one user-week) among the user's trajectory ids,
  sorted numerically: the data has no calendar date and trajectory ids are the only order
  across weeks (SOURCE.md: not guaranteed chronological, so cross-week order is
  approximate); rows keep their file order inside a trajectory (they are in time order);
- repeated check-ins that map to the same (week, day, hour, zone, category) are merged
  (``same_hour="drop"``, the count goes to ``dataset.info``), or kept one minute apart
  (``same_hour="spread"``: minute = hour * 60 + rank inside the hour).

Generic tables (`load_table`): one row per event with a user column, a behavior column, a
location column and either a timestamp column (parsed by pandas; day = weekday, minute =
hour * 60 + minute, week = weeks since the Monday of the user's first event; rows are
sorted by time per user) or day + time columns (day as ``Mon``/``Monday``/0-6, time as
``HH:MM`` or minutes; week from a week column if named, else it starts at 0 and advances
whenever a user's day/time goes backwards in file order). Spaces in location names become
underscores (the event text format writes ``@name``).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

from bua.events import DAY_ABBRS, DAY_NAMES, DataError, Dataset, Event, UserHistory, validate_events
from bua.vocab import Vocabulary

__all__ = ["FOURSQUARE_GROUPS", "TableColumns", "load_foursquare", "load_table"]

FOURSQUARE_FILES = ("specific_train.csv", "specific_test.csv")
FOURSQUARE_GROUPS = {
    "Food": "meal", "Shop & Service": "errand", "Travel & Transport": "commute",
    "Residence": "routine", "Professional & Other Places": "work",
    "College & University": "study", "Outdoors & Recreation": "leisure",
    "Nightlife Spot": "leisure", "Arts & Entertainment": "leisure", "Event": "leisure",
}
_DAY_LOOKUP = {**{n.lower(): i for i, n in enumerate(DAY_NAMES)},
               **{a.lower(): i for i, a in enumerate(DAY_ABBRS)}}


def _read(path: Path, usecols: Sequence[str] | None = None):
    import pandas as pd

    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(str(path), "file not found", has_value=False)
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            _check_utf8(path)
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                             keep_default_na=False)
        else:
            raise DataError(str(path), "unknown table format (use .csv, .tsv or .parquet)",
                            field="path", value=suffix)
    except DataError:
        raise
    except Exception as e:
        raise DataError(str(path), f"cannot read: {e}", has_value=False) from e
    if usecols is not None:
        missing = [c for c in usecols if c not in df.columns]
        if missing:
            raise DataError(str(path), f"missing column(s) {missing}; the file has "
                            f"{list(df.columns)}", field=missing[0], has_value=False)
    return df


def _check_utf8(path: Path) -> None:
    """A text table must be UTF-8: name the data row and byte of the first that is not."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start)  # 0 = the header line
        raise DataError(str(path), f"not UTF-8 text: byte 0x{raw[err.start]:02x} at file offset {err.start} "
                        f"(line {line + 1}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
                        row=line if line > 0 else None, has_value=False) from None


def _timestamps(raw, path: Path, col: str):
    """A timestamp column as naive wall-clock datetimes. pandas infers one format from the first
    row; rows in another format or with another UTC offset are parsed one by one, and a time
    with an offset keeps its local clock time (the time of day is what the model reads)."""
    import pandas as pd

    try:
        with warnings.catch_warnings():  # "could not infer format": the per-row fallback below handles it
            warnings.simplefilter("ignore", UserWarning)
            ts = pd.to_datetime(raw, errors="coerce")
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_localize(None)
    except (ValueError, TypeError, AttributeError):  # e.g. mixed UTC offsets
        ts = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    bad = ts.isna().to_numpy()
    if bad.any():
        fixed = [_one_timestamp(v) for v in raw[bad].tolist()]
        ts = ts.copy()
        ts[bad] = pd.to_datetime(pd.Series(fixed, dtype="object"), errors="coerce").to_numpy()
        still = ts.isna().to_numpy()
        if still.any():
            i = int(np.argmax(still))
            raise _bad(path, i, col, "not a timestamp (e.g. 2024-01-08 09:30, 2024-01-08T09:30:00+01:00, "
                       "01/08/2024 09:30)", raw.iloc[i])
    return ts


def _one_timestamp(value):
    import pandas as pd

    try:
        t = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError, OverflowError):
        return None
    if t is pd.NaT or not 1678 < t.year < 2262:  # outside what datetime64[ns] can hold
        return None
    return t.tz_localize(None) if t.tzinfo is not None else t


def _bad(path, row_idx: int, col: str, reason: str, value) -> DataError:
    return DataError(str(path), reason, row=int(row_idx) + 1, field=col, value=value)


def _int_column(df, col: str, path, lo: int, hi: int) -> np.ndarray:
    out = np.empty(len(df), dtype=np.int64)
    for i, v in enumerate(df[col].tolist()):
        try:
            x = int(str(v).strip())
        except ValueError:
            raise _bad(path, i, col, "not an integer", v) from None
        if not lo <= x <= hi:
            raise _bad(path, i, col, f"outside {lo}..{hi}", v)
        out[i] = x
    return out


def _day_column(df, col: str, path) -> np.ndarray:
    out = np.empty(len(df), dtype=np.int64)
    for i, v in enumerate(df[col].tolist()):
        s = str(v).strip()
        d = _DAY_LOOKUP.get(s.lower())
        if d is None and s.isdigit() and int(s) <= 6:
            d = int(s)
        if d is None:
            raise _bad(path, i, col, "unknown day (use Mon..Sun, Monday..Sunday or 0-6 "
                       "with 0 = Monday)", v)
        out[i] = d
    return out


def _time_column(df, col: str, path) -> np.ndarray:
    out = np.empty(len(df), dtype=np.int64)
    for i, v in enumerate(df[col].tolist()):
        s = str(v).strip()
        m = None
        if ":" in s:
            parts = s.split(":")
            if 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
                hh, mm = int(parts[0]), int(parts[1])
                if hh <= 23 and mm <= 59:
                    m = hh * 60 + mm
        elif s.isdigit() and int(s) < 1440:
            m = int(s)
        if m is None:
            raise _bad(path, i, col, "time must be HH:MM (00:00..23:59) or minutes 0..1439",
                       v)
        out[i] = m
    return out


def _names(df, col: str, path, *, location: bool) -> list[str]:
    out = []
    for i, v in enumerate(df[col].tolist()):
        s = "" if v is None else str(v).strip()
        if not s or s.lower() == "nan":
            raise _bad(path, i, col, "empty value", v)
        if any(ord(c) < 32 for c in s):
            raise _bad(path, i, col, "control character (newline, tab, ...) in name", v)
        if location:
            s = "_".join(s.split())
        if s.startswith("@"):
            raise _bad(path, i, col, "names may not start with '@'", v)
        out.append(s)
    return out


def _ids(names: list[str], vocab: Vocabulary, kind: str, path, col: str) -> np.ndarray:
    index = vocab._behavior_index if kind == "behavior" else vocab._location_index
    known = vocab.behaviors if kind == "behavior" else vocab.locations
    out = np.empty(len(names), dtype=np.int64)
    for i, n in enumerate(names):
        j = index.get(n)
        if j is None:
            raise _bad(path, i, col, Vocabulary._unknown(kind, n, known), n)
        out[i] = j
    return out


def _build(path, name: str, vocab: Vocabulary, users: np.ndarray, week, day, minute, loc, beh,
           rows: np.ndarray, duplicates: str, info: dict,
           row_files: np.ndarray | None = None) -> Dataset:
    """Groups rows by user (order of first appearance), validates with file rows in errors."""
    order_users: dict[str, list[int]] = {}
    for i, u in enumerate(users.tolist()):
        order_users.setdefault(u, []).append(i)
    histories = []
    dropped = 0
    for uid, idx in order_users.items():
        idx = np.asarray(idx)
        events = [Event(int(day[i]), int(minute[i]), int(loc[i]), int(beh[i]), int(week[i]))
                  for i in idx]
        file_rows = rows[idx]
        if duplicates == "drop":
            keep, seen = [], set()
            for j, e in enumerate(events):
                if e in seen:
                    dropped += 1
                    continue
                seen.add(e)
                keep.append(j)
            events = [events[j] for j in keep]
            file_rows = file_rows[keep]
        try:
            validate_events(events, vocab, source=f"user {uid}")
        except DataError as e:
            r = None if e.row is None else int(file_rows[e.row]) + 1
            src = str(path)
            if row_files is not None and e.row is not None:
                src = str(row_files[idx[keep[e.row]] if duplicates == "drop" else idx[e.row]])
            raise DataError(src, f"user {uid}: {e.reason}", row=r, field=e.field,
                            value=e.value) from None
        histories.append(UserHistory(str(uid), tuple(events)))
    info = dict(info, duplicates_dropped=dropped, n_rows=len(users))
    return Dataset(name, vocab, tuple(histories), info, validate=False)


# ---------------------------------------------------------------------- Foursquare
def load_foursquare(source: str | os.PathLike | Iterable[str | os.PathLike], *,
                    n_zones: int = 10, same_hour: Literal["drop", "spread"] = "drop",
                    vocab: Vocabulary | None = None, name: str = "foursquare_nyc") -> Dataset:
    """Loads MARC's Foursquare NYC check-ins (a directory holding ``specific_train.csv`` and
    ``specific_test.csv``, or explicit files) as one `Dataset` (see module doc)."""
    import pandas as pd

    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        files = [p / f for f in FOURSQUARE_FILES] if p.is_dir() else [p]
    else:
        files = [Path(f) for f in source]
    if not files:
        raise DataError("load_foursquare", "no files given", has_value=False)
    cols = ["tid", "label", "day", "hour", "poi", "category"]
    frames = []
    for f in files:
        df = _read(f, cols)[cols].copy()
        df["_file"] = str(f)
        df["_row"] = np.arange(len(df))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    n = len(df)
    if n == 0:
        raise DataError(", ".join(map(str, files)), "no rows", has_value=False)

    def check(col, parse):
        # per file, so errors name the right file and row
        out = np.empty(n, dtype=np.int64)
        for f in files:
            sel = (df["_file"] == str(f)).to_numpy()
            if sel.any():
                out[sel] = parse(df.loc[sel].reset_index(drop=True), col, f)
        return out

    tid = check("tid", lambda d, c, f: _int_column(d, c, f, 0, 2**62))
    day = check("day", _day_column)
    hour = check("hour", lambda d, c, f: _int_column(d, c, f, 0, 23))
    poi = check("poi", lambda d, c, f: _int_column(d, c, f, -2**62, 2**62))
    for f in files:
        sel = (df["_file"] == str(f)).to_numpy()
        _names(df.loc[sel].reset_index(drop=True), "category", f, location=False)
        _names(df.loc[sel].reset_index(drop=True), "label", f, location=False)
    users = df["label"].astype(str).str.strip().to_numpy()
    cats = df["category"].astype(str).str.strip().tolist()

    # a trajectory belongs to one user
    tid_user: dict[int, str] = {}
    for i, (t, u) in enumerate(zip(tid.tolist(), users.tolist())):
        if tid_user.setdefault(t, u) != u:
            raise DataError(df["_file"][i], f"trajectory {t} belongs to users "
                            f"{tid_user[t]} and {u}", row=int(df["_row"][i]) + 1, field="tid",
                            value=t)
    # week = rank of the trajectory id among the user's ids
    week = np.empty(n, dtype=np.int64)
    user_tids: dict[str, list[int]] = {}
    for t, u in tid_user.items():
        user_tids.setdefault(u, []).append(t)
    rank = {t: r for ts in user_tids.values() for r, t in enumerate(sorted(ts))}
    week[:] = [rank[t] for t in tid.tolist()]

    # per-user top zones by check-in count (ties: first appearance)
    zone_names = [f"zone_{k}" for k in range(1, n_zones + 1)] + ["other"]
    zone_of: dict[tuple[str, int], int] = {}
    counts: dict[str, dict[int, list[int]]] = {}
    for i, (u, p) in enumerate(zip(users.tolist(), poi.tolist())):
        c = counts.setdefault(u, {})
        if p in c:
            c[p][0] += 1
        else:
            c[p] = [1, i]
    for u, c in counts.items():
        ranked = sorted(c, key=lambda p: (-c[p][0], c[p][1]))
        for k, p in enumerate(ranked):
            zone_of[(u, p)] = k if k < n_zones else n_zones
    if vocab is None:
        present = sorted(set(cats))
        groups = {c: FOURSQUARE_GROUPS[c] for c in present if c in FOURSQUARE_GROUPS}
        vocab = Vocabulary(present, zone_names, groups or None)
    loc = np.array([vocab.location_id(zone_names[zone_of[(u, p)]])
                    for u, p in zip(users.tolist(), poi.tolist())], dtype=np.int64)
    beh = np.empty(n, dtype=np.int64)
    for i, c in enumerate(cats):
        j = vocab._behavior_index.get(c)
        if j is None:
            raise DataError(df["_file"][i], Vocabulary._unknown("behavior", c, vocab.behaviors),
                            row=int(df["_row"][i]) + 1, field="category", value=c)
        beh[i] = j

    # stable time order per user: week, day, hour, then file order
    file_rank = np.arange(n)
    order = np.lexsort((file_rank, hour, day, week, users))
    # restore users' first-appearance order afterwards (by _build)
    minute = hour * 60
    if same_hour == "spread":
        key = list(zip(users[order].tolist(), week[order].tolist(), day[order].tolist(),
                       hour[order].tolist()))
        r = 0
        off = np.zeros(n, dtype=np.int64)
        for j in range(n):
            r = r + 1 if j > 0 and key[j] == key[j - 1] else 0
            off[order[j]] = min(r, 59)
        minute = minute + off
    elif same_hour != "drop":
        raise ValueError(f"same_hour must be 'drop' or 'spread', got {same_hour!r}")
    first = {}
    for i, u in enumerate(users.tolist()):
        first.setdefault(u, i)
    order = sorted(order.tolist(), key=lambda i: first[users[i]])  # stable: keeps time order
    order = np.asarray(order)
    rows = df["_row"].to_numpy()[order]
    info = {"source": "foursquare_nyc", "files": [str(f) for f in files], "n_zones": n_zones,
            "same_hour": same_hour}
    return _build(", ".join(str(f) for f in files), name, vocab, users[order], week[order],
                  day[order], minute[order], loc[order], beh[order], rows, "drop", info,
                  df["_file"].to_numpy()[order])


# ---------------------------------------------------------------------- generic tables
@dataclass(frozen=True)
class TableColumns:
    """Column names of a behavior log table. Give `timestamp`, or `day` and `time`."""

    user: str = "user"
    location: str = "location"
    behavior: str = "behavior"
    timestamp: str | None = "timestamp"
    day: str | None = None
    time: str | None = None
    week: str | None = None

    @classmethod
    def from_mapping(cls, columns: Mapping[str, str | None]) -> "TableColumns":
        """From {field: column name}; an unknown field is an error that lists the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in columns if k not in valid]
        if unknown:
            raise ValueError(f"unknown table field {unknown[0]!r} (in --column {unknown[0]}=...); "
                             f"valid fields: {', '.join(valid)}")
        return cls(**columns)


def parse_column_options(items: Sequence[str]) -> dict[str, str]:
    """`--column FIELD=NAME` options -> {field: column name}, fields checked (TableColumns)."""
    columns: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--column expects FIELD=NAME, got {item!r}")
        columns[key.strip()] = value
    TableColumns.from_mapping(columns)
    return columns


def load_table(path: str | os.PathLike, columns: TableColumns | dict | None = None, *,
               vocab: Vocabulary | None = None, name: str | None = None,
               duplicates: Literal["error", "drop"] = "error") -> Dataset:
    """Loads a CSV / TSV / Parquet behavior log (see module doc)."""
    import pandas as pd

    path = Path(path)
    cols = columns if isinstance(columns, TableColumns) else TableColumns.from_mapping(columns or {})
    if cols.day is not None or cols.time is not None:
        if cols.day is None or cols.time is None:
            raise ValueError("give both the day and the time column (or a timestamp column)")
        cols = TableColumns(cols.user, cols.location, cols.behavior, None, cols.day, cols.time,
                            cols.week)
    elif cols.timestamp is None:
        raise ValueError("give a timestamp column, or day and time columns")
    need = [cols.user, cols.location, cols.behavior] + (
        [cols.timestamp] if cols.timestamp else [cols.day, cols.time]) + (
        [cols.week] if cols.week else [])
    df = _read(path, need).reset_index(drop=True)
    if len(df) == 0:
        raise DataError(str(path), "no rows", has_value=False)
    if duplicates not in ("error", "drop"):
        raise ValueError(f"duplicates must be 'error' or 'drop', got {duplicates!r}")
    users = np.array(_names(df, cols.user, path, location=False), dtype=object)
    locs = _names(df, cols.location, path, location=True)
    behs = _names(df, cols.behavior, path, location=False)
    n = len(df)
    if cols.timestamp:
        ts = _timestamps(df[cols.timestamp], path, cols.timestamp)
        day = ts.dt.day_of_week.to_numpy().astype(np.int64)
        minute = (ts.dt.hour * 60 + ts.dt.minute).to_numpy().astype(np.int64)
        days = (ts.dt.normalize() - pd.Timestamp("1970-01-05")).dt.days.to_numpy()  # a Monday
        week_abs = np.floor_divide(days, 7).astype(np.int64)
        sec = ts.to_numpy().astype("datetime64[s]").astype(np.int64)
        first_week: dict[str, int] = {}
        for u, w in zip(users.tolist(), week_abs.tolist()):
            first_week[u] = min(first_week.get(u, w), w)
        week = np.array([w - first_week[u] for u, w in zip(users.tolist(), week_abs.tolist())],
                        dtype=np.int64)
        first: dict[str, int] = {}
        for i, u in enumerate(users.tolist()):
            first.setdefault(u, i)
        user_rank = np.array([first[u] for u in users.tolist()], dtype=np.int64)
        # users in order of first appearance; each user's rows by time, file order on ties
        order = np.lexsort((np.arange(n), sec, user_rank))
    else:
        day = _day_column(df, cols.day, path)
        minute = _time_column(df, cols.time, path)
        if cols.week:
            week = _int_column(df, cols.week, path, 0, 10**6)
        else:
            week = np.zeros(n, dtype=np.int64)
            last: dict[str, tuple[int, int, int]] = {}
            for i, u in enumerate(users.tolist()):
                w, d0, m0 = last.get(u, (0, -1, -1))
                if (day[i], minute[i]) < (d0, m0):
                    w += 1
                week[i] = w
                last[u] = (w, int(day[i]), int(minute[i]))
        order = np.arange(n)
    if vocab is None:
        vocab = Vocabulary(sorted(set(behs)), sorted(set(locs)))
    loc_ids = _ids(locs, vocab, "location", path, cols.location)
    beh_ids = _ids(behs, vocab, "behavior", path, cols.behavior)
    info = {"source": str(path), "columns": cols.__dict__.copy(), "duplicates": duplicates}
    return _build(path, name or path.stem, vocab, users[order], week[order], day[order],
                  minute[order], loc_ids[order], beh_ids[order], order, duplicates, info)
