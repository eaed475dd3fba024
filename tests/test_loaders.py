"""bua.loaders: Foursquare NYC check-ins (real data from ../shared) and generic tables."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bua.events import DataError, Event
from bua.loaders import TableColumns, load_foursquare, load_table
from bua.vocab import Vocabulary

FSQ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "foursquare_nyc"
needs_fsq = pytest.mark.skipif(not (FSQ / "specific_train.csv").is_file(),
                               reason=f"Foursquare NYC data not found at {FSQ} (../shared)")

HEADER = "tid,label,lat,lon,day,hour,poi,category,price,rating,weather\n"


@pytest.fixture(scope="module")
def fsq():
    return load_foursquare(FSQ)


@needs_fsq
def test_foursquare_loads_real_data(fsq):
    import pandas as pd

    raw = pd.concat([pd.read_csv(FSQ / "specific_train.csv"),
                     pd.read_csv(FSQ / "specific_test.csv")])
    assert len(fsq) == raw.label.nunique() == 193
    assert fsq.n_events + fsq.info["duplicates_dropped"] == len(raw)
    assert sorted(fsq.vocab.behaviors) == sorted(raw.category.unique())
    assert fsq.vocab.locations == [f"zone_{k}" for k in range(1, 11)] + ["other"]
    assert fsq.vocab.group_of("Travel & Transport") == "commute"
    classes = Counter(fsq.vocab.frequency_classes(fsq).values())
    assert classes["head"] >= 1 and classes["tail"] >= 1  # 'Event' is very rare
    # zone_1 is each user's most checked-in venue; weeks are trajectory ranks
    uid = str(raw.label.iloc[0])
    mine = raw[raw.label.astype(str) == uid]
    top_poi_count = mine.poi.value_counts().iloc[0]
    u = fsq.user(uid)
    zone1 = sum(1 for e in u.events if e.location == 0)
    assert zone1 <= top_poi_count and zone1 >= 0.8 * top_poi_count
    assert max(e.week for e in u.events) == mine.tid.nunique() - 1
    assert all(e.minute % 60 == 0 for e in u.events)


@needs_fsq
def test_foursquare_spread_keeps_every_checkin():
    ds = load_foursquare([FSQ / "specific_test.csv"], same_hour="spread")
    import pandas as pd

    assert ds.n_events == len(pd.read_csv(FSQ / "specific_test.csv"))
    assert ds.info["duplicates_dropped"] == 0
    assert any(e.minute % 60 for u in ds for e in u.events)


def _write(tmp_path, text, name="fsq.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_foursquare_format_errors(tmp_path):
    ok = "1,7,40.0,-73.0,Monday,8,11,Food,1,8.0,Clear\n"
    p = _write(tmp_path, HEADER + ok + "1,7,40.0,-73.0,Funday,9,12,Food,1,8.0,Clear\n")
    with pytest.raises(DataError, match=r"fsq.csv: row 2: field 'day': unknown day.*'Funday'"):
        load_foursquare(p)
    p = _write(tmp_path, HEADER + ok + "1,7,40.0,-73.0,Monday,24,12,Food,1,8.0,Clear\n")
    with pytest.raises(DataError, match=r"row 2: field 'hour': outside 0..23 \(got '24'\)"):
        load_foursquare(p)
    p = _write(tmp_path, "tid,label,day,hour,poi\n1,7,Monday,8,11\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['category'\]"):
        load_foursquare(p)
    p = _write(tmp_path, HEADER + ok + "1,8,40.0,-73.0,Monday,9,12,Food,1,8.0,Clear\n")
    with pytest.raises(DataError, match=r"row 2: field 'tid': trajectory 1 belongs to users 7 "
                                        r"and 8"):
        load_foursquare(p)
    with pytest.raises(DataError, match="file not found"):
        load_foursquare(tmp_path / "nope.csv")


def test_foursquare_small_file_semantics(tmp_path):
    rows = ["5,7,0,0,Monday,8,100,Residence,1,1,x", "5,7,0,0,Monday,8,100,Residence,1,1,x",
            "5,7,0,0,Monday,12,200,Food,1,1,x", "3,7,0,0,Tuesday,9,200,Food,1,1,x",
            "3,7,0,0,Tuesday,20,100,Residence,1,1,x", "3,7,0,0,Tuesday,21,300,Food,1,1,x"]
    p = _write(tmp_path, HEADER + "\n".join(rows) + "\n")
    ds = load_foursquare(p, n_zones=2)
    u = ds.user("7")
    v = ds.vocab
    assert v.locations == ["zone_1", "zone_2", "other"]
    # tid 3 < tid 5: week 0 is trajectory 3; venue 100 (3 check-ins) is zone_1
    assert [(e.week, e.day, e.minute // 60, v.locations[e.location], v.behaviors[e.behavior])
            for e in u.events] == [
        (0, 1, 9, "zone_2", "Food"), (0, 1, 20, "zone_1", "Residence"),
        (0, 1, 21, "other", "Food"), (1, 0, 8, "zone_1", "Residence"),
        (1, 0, 12, "zone_2", "Food")]
    assert ds.info["duplicates_dropped"] == 1


def test_table_csv_with_timestamps(tmp_path):
    p = _write(tmp_path, "uid,ts,place,act\n"
               "a,2024-03-05 08:10:00,my home,check weather\n"   # a Tuesday
               "b,2024-03-04 09:00:00,office,email\n"
               "a,2024-03-04 23:59:00,my home,gaming\n"          # earlier: sorted by time
               "a,2024-03-11 07:00:00,office,email\n", "log.csv")
    ds = load_table(p, TableColumns(user="uid", timestamp="ts", location="place",
                                    behavior="act"))
    assert ds.name == "log" and [u.user_id for u in ds] == ["a", "b"]
    v = ds.vocab
    assert v.locations == ["my_home", "office"]  # spaces -> underscores
    assert ds.user("a").events == (
        Event(0, 1439, 0, v.behavior_id("gaming"), 0),
        Event(1, 490, 0, v.behavior_id("check weather"), 0),
        Event(0, 420, 1, v.behavior_id("email"), 1))


def test_table_parquet_day_time_and_week_inference(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"user": ["u", "u", "u", "u"], "day": ["Sat", "Sunday", "0", "Mon"],
                       "time": ["23:00", "01:30", "07:05", "420"],
                       "location": ["home", "home", "home", "gym"],
                       "behavior": ["gaming", "gaming", "alarm clock", "fitness"]})
    p = tmp_path / "log.parquet"
    df.to_parquet(p)
    ds = load_table(p, {"day": "day", "time": "time"})
    ev = ds.user("u").events
    # no week column: a new week starts whenever day/time goes backwards in file order
    assert [(e.week, e.day, e.minute) for e in ev] == [(0, 5, 1380), (0, 6, 90), (1, 0, 425),
                                                     (2, 0, 420)]


@pytest.mark.parametrize("rows, msg", [
    ("u,Mon,08:00,home,a\nu,Mon,25:00,home,b\n",
     r"log.csv: row 2: field 'time': time must be HH:MM .* \(got '25:00'\)"),
    ("u,Mon,08:00,home,a\nu,Xyz,08:00,home,b\n", r"row 2: field 'day': unknown day"),
    ("u,Mon,08:00,home,a\nu,Mon,09:00,,b\n", r"row 2: field 'location': empty value"),
    ("u,Mon,08:00,home,a\nu,Mon,09:00,@home,b\n", r"row 2: field 'location': names may not "
                                                  r"start with '@'"),
    ("u,Mon,08:00,home,a\nu,Mon,08:00,home,a\n",
     r"log.csv: row 2: field 'event': user u: duplicate event \(same as row 0\)"),
])
def test_table_errors_name_file_row_column_value(tmp_path, rows, msg):
    p = _write(tmp_path, "user,day,time,location,behavior\n" + rows, "log.csv")
    with pytest.raises(DataError, match=msg):
        load_table(p, TableColumns(day="day", time="time"))


def test_table_unsorted_with_week_column_and_duplicates_drop(tmp_path):
    p = _write(tmp_path, "user,week,day,time,location,behavior\n"
               "u,0,Mon,08:00,home,a\nu,1,Mon,08:00,home,a\nu,0,Tue,08:00,home,b\n", "log.csv")
    with pytest.raises(DataError, match=r"log.csv: row 3: field 'time': user u: events not in "
                                        r"time order"):
        load_table(p, TableColumns(day="day", time="time", week="week"))
    p2 = _write(tmp_path, "user,timestamp,location,behavior\n"
                "u,2024-01-01 08:00,home,a\nu,2024-01-01 08:00,home,a\n", "dup.csv")
    ds = load_table(p2, duplicates="drop")
    assert ds.n_events == 1 and ds.info["duplicates_dropped"] == 1


def test_table_known_vocabulary_and_bad_columns(tmp_path):
    p = _write(tmp_path, "user,timestamp,location,behavior\nu,2024-01-01 08:00,home,gamng\n",
               "log.csv")
    v = Vocabulary(["gaming"], ["home"])
    with pytest.raises(DataError, match=r"log.csv: row 1: field 'behavior': unknown behavior "
                                        r"'gamng'; close names: 'gaming'"):
        load_table(p, vocab=v)
    with pytest.raises(DataError, match=r"missing column\(s\) \['when'\]"):
        load_table(p, TableColumns(timestamp="when"))
    bad_ts = _write(tmp_path, "user,timestamp,location,behavior\nu,yesterday,home,a\n", "t.csv")
    with pytest.raises(DataError, match=r"t.csv: row 1: field 'timestamp': not a timestamp"):
        load_table(bad_ts)
    with pytest.raises(DataError, match="unknown table format"):
        load_table(_write(tmp_path, "x", "log.json"))
    with pytest.raises(ValueError, match="both the day and the time"):
        load_table(p, TableColumns(day="d"))


def test_table_accepts_timestamps_whose_format_or_offset_differs_from_row_1(tmp_path):
    rows = ["user,timestamp,behavior,location", "u1,2024-01-01 09:00,work,office",
            "u1,2024-01-01T09:50:00+01:00,gym,gym", "u1,01/08/2024 10:00,work,office",
            "u1,2024-01-08T11:00:00-05:00,read,home"]
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(rows) + "\n")
    events = load_table(path).users[0].events
    # Wall-clock times: an offset does not move the time of day; 01/08/2024 is Monday 8 January.
    assert [(e.week, e.day, e.minute) for e in events] == [(0, 0, 540), (0, 0, 590), (1, 0, 600), (1, 0, 660)]


def test_table_that_is_not_utf8_names_the_row_and_byte(tmp_path):
    rows = ["user,timestamp,behavior,location"] + [f"u1,2024-01-0{d} 09:00,work,office" for d in range(1, 5)]
    rows[3] = "u1,2024-01-03 09:00,caf\u00e9,office"
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(DataError, match=rf"row 3: not UTF-8 text: byte 0xe9 at file offset {offset}"):
        load_table(path)


def test_unknown_column_field_lists_the_valid_ones(tmp_path):
    from bua.loaders import parse_column_options

    with pytest.raises(ValueError, match="unknown table field 'bogus'.*valid fields: user, location, behavior"):
        parse_column_options(["bogus=uid"])
    with pytest.raises(ValueError, match="unknown table field 'usr'"):
        load_table(tmp_path / "x.csv", {"usr": "uid"})
    assert parse_column_options(["user=uid", "behavior=act"]) == {"user": "uid", "behavior": "act"}
