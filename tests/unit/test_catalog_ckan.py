"""The CKAN catalog adapter against a respx-mocked ``package_search`` action."""

from __future__ import annotations

import httpx
import pytest
import respx

from zexec.adapters.catalog_ckan import CkanCatalog, solr_escape, solr_phrase
from zexec.adapters.catalog_sqlite import SAMPLE_DATASETS, load_seed_file
from zexec.core.errors import CatalogUnavailable, InvalidQuery

URL = "https://ckan.example.org/api/3/action/package_search"
PKGS = load_seed_file(SAMPLE_DATASETS)


def ok(results):
    return httpx.Response(
        200, json={"success": True, "result": {"count": len(results), "results": results}}
    )


def by_name(*names):
    return [p for p in PKGS if p["name"] in names]


@pytest.fixture
def ckan():
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(URL)
        cat = CkanCatalog("https://ckan.example.org/", api_key="secret-key")
        yield cat, route
        cat.close()


def test_search_builds_an_escaped_solr_query_and_converts(ckan):
    cat, route = ckan
    route.mock(return_value=ok(by_name("noaa-hurdat2-atlantic")))
    res = cat.search(["hurricane", "noaa"], ["null", "owner_org"], limit=5)
    params = route.calls.last.request.url.params
    assert params["q"] == '"hurricane" AND organization:"noaa"'
    assert params["rows"] == "100"
    assert route.calls.last.request.headers["authorization"] == "secret-key"
    assert [r["name"] for r in res] == ["noaa-hurdat2-atlantic"]
    assert res[0]["owner_org"] == "noaa" and res[0]["extras"]["source"]


def test_user_text_is_escaped(ckan):
    cat, route = ckan
    route.mock(return_value=ok([]))
    cat.search(['a:b OR (c) "d"*\\'], ["weird:key"])
    q = route.calls.last.request.url.params["q"]
    assert q == r'extras_weird\:key:"a:b OR (c) \"d\"*\\"'
    assert solr_escape("x/y&&z") == r"x\/y\&\&z"
    assert solr_phrase('say "OR"') == r'"say \"OR\""'


def test_results_are_filtered_so_every_term_occurs(ckan):
    cat, route = ckan
    # Solr stemming may return more; each term must occur in the dataset's text.
    route.mock(return_value=ok(by_name("noaa-hurdat2-atlantic", "usgs-3dep-elevation")))
    assert [r["name"] for r in cat.search(["atlantic"])] == ["noaa-hurdat2-atlantic"]


def test_advanced_search_uses_fq_and_resource_filters(ckan):
    cat, route = ckan
    route.mock(return_value=ok(by_name("opentopography-lidar-sierra", "usgs-3dep-elevation")))
    res = cat.advanced_search(
        {
            "resource_format": "geotiff",
            "owner_org": "opentopography",
            "search_term": "lidar",
            "filter_list": ["tags:dem"],
        }
    )
    params = route.calls.last.request.url.params
    assert params["q"] == '"lidar"'
    assert params["fq"] == 'tags:"dem" AND organization:"opentopography" AND res_format:"geotiff"'
    assert [r["name"] for r in res] == ["opentopography-lidar-sierra"]
    assert [r["name"] for r in res[0]["resources"]] == ["dem-1m"]


@pytest.mark.parametrize(
    "response, error",
    [
        (httpx.Response(500, text="<html>oops</html>"), CatalogUnavailable),
        (
            httpx.Response(200, json={"success": False, "error": {"__type": "Internal"}}),
            CatalogUnavailable,
        ),
        (
            httpx.Response(
                409,
                json={
                    "success": False,
                    "error": {"__type": "Search Query Error", "message": "bad q"},
                },
            ),
            InvalidQuery,
        ),
        (httpx.Response(200, json={"success": True, "result": {}}), CatalogUnavailable),
    ],
)
def test_ckan_failures_map_to_catalog_errors(ckan, response, error):
    cat, route = ckan
    route.mock(return_value=response)
    with pytest.raises(error):
        cat.search(["x"])


def test_unreachable_ckan_is_catalog_unavailable(ckan):
    cat, route = ckan
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(CatalogUnavailable, match="unreachable"):
        cat.advanced_search({})
