"""The embedded SQLite FTS5 catalog: search semantics, hostile terms, persistence."""

from __future__ import annotations

import json
import threading

import pytest

from zexec.adapters.catalog_sqlite import SAMPLE_DATASETS, SqliteCatalog, load_seed_file
from zexec.core.errors import ConfigurationError, InvalidQuery


@pytest.fixture(scope="module")
def cat():
    return SqliteCatalog(seed=load_seed_file(SAMPLE_DATASETS))


def names(results):
    return [r["name"] for r in results]


def test_sample_datasets_are_ckan_packages():
    pkgs = load_seed_file(SAMPLE_DATASETS)
    assert 12 <= len(pkgs) <= 20
    assert len({p["name"] for p in pkgs}) == len(pkgs)
    for p in pkgs:
        assert {"id", "name", "title", "notes", "tags", "organization", "resources"} <= set(p)
        assert p["resources"] and all(r["url"] and r["format"] for r in p["resources"])


def test_every_term_must_match_and_prefixes_count(cat):
    assert set(names(cat.search(["wildfire"]))) == {
        "wifire-burnpro3d-fuel-maps",
        "wifire-hpwren-camera-stream",
    }
    assert names(cat.search(["wildfire", "kafka"])) == ["wifire-hpwren-camera-stream"]
    assert "noaa-oisst-v2-1-daily" in names(cat.search(["temperat"]))
    assert cat.search(["wildfire", "hyperspectral"]) == []


def test_results_are_datasource_dicts(cat):
    (hit,) = cat.search(["hurdat2"])
    assert hit["owner_org"] == "noaa"
    assert hit["description"].startswith("Six-hourly")
    assert hit["resources"][0]["format"] == "TXT"
    assert hit["extras"] == {"source": "National Hurricane Center"}
    assert "hurricane" in hit["tags"]


def test_keys_restrict_the_field(cat):
    assert set(names(cat.search(["noaa"], ["owner_org"]))) == {
        "noaa-oisst-v2-1-daily",
        "noaa-hurdat2-atlantic",
    }
    # "satellite" appears in the OISST notes but is not its title
    assert "noaa-oisst-v2-1-daily" not in names(cat.search(["satellite"], ["title"]))
    assert "noaa-oisst-v2-1-daily" in names(cat.search(["satellite"], ["null"]))
    assert names(cat.search(["GAGE"], ["processing_center"])) == ["earthscope-gnss-daily-positions"]
    with pytest.raises(InvalidQuery):
        cat.search(["a", "b"], ["title"])


@pytest.mark.parametrize(
    "term",
    [
        '"',
        "'",
        'ocean" OR "x',
        "NEAR(a b)",
        "*",
        "title:ocean",
        "a AND",
        "-",
        "^",
        "(",
        "'; DROP TABLE packages; --",
        "\x00",
        "ö",
        "💥",
    ],
)
def test_hostile_terms_are_data_not_syntax(cat, term):
    cat.search([term])
    cat.search([term], ["title"])
    cat.advanced_search({"search_term": term, "dataset_title": term})
    assert cat.count() == len(load_seed_file(SAMPLE_DATASETS))


def test_advanced_search_resource_fields_keep_matching_resources_only(cat):
    res = cat.advanced_search({"resource_format": "GEOTIFF", "owner_org": "opentopography"})
    assert names(res) == ["opentopography-lidar-sierra"]
    assert [r["name"] for r in res[0]["resources"]] == ["dem-1m"]
    assert cat.advanced_search({"resource_name": "nope"}) == []


def test_advanced_search_fields(cat):
    assert names(cat.advanced_search({"dataset_name": "USGS-3DEP-ELEVATION"})) == [
        "usgs-3dep-elevation"
    ]
    assert names(cat.advanced_search({"search_term": "soil, satellite"})) == [
        "nasa-smap-soil-moisture"
    ]
    assert names(cat.advanced_search({"filter_list": ["kafka_topic:hpwren.images"]})) == [
        "wifire-hpwren-camera-stream"
    ]
    assert len(cat.advanced_search({"limit": 3})) == 3
    with pytest.raises(InvalidQuery):
        cat.advanced_search({"filter_list": ["missing-colon"]})


def test_limit(cat):
    assert len(cat.search([""], limit=2)) == 2
    with pytest.raises(InvalidQuery):
        cat.search(["x"], limit="10")


def test_file_catalog_persists_and_load_replaces_by_name(tmp_path):
    db = tmp_path / "sub" / "catalog.db"
    c = SqliteCatalog(str(db), seed=[{"name": "a", "title": "Alpha lake"}])
    c.load([{"name": "a", "title": "Alpha river"}, {"name": "b", "title": "Beta"}])
    c.close()
    again = SqliteCatalog(str(db), seed=[{"name": "ignored"}])  # not empty: no reseed
    assert again.count() == 2
    assert names(again.search(["river"])) == ["a"]
    assert again.search(["lake"]) == []
    with pytest.raises(ConfigurationError):
        again.load([{"title": "no name"}])
    assert again.count() == 2


def test_concurrent_searches_from_threads(cat):
    errors = []

    def worker():
        try:
            for _ in range(50):
                assert cat.search(["ocean"])
        except Exception as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_seed_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigurationError):
        load_seed_file(bad)
    bad.write_text(json.dumps({"x": 1}))
    with pytest.raises(ConfigurationError):
        load_seed_file(bad)
    ckan = tmp_path / "ckan.json"
    ckan.write_text(json.dumps({"result": {"results": [{"name": "x"}]}}))
    assert load_seed_file(ckan) == [{"name": "x"}]
