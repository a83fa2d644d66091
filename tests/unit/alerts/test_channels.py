"""Channel details that need no receiver."""

from __future__ import annotations

import pytest

from herald.alerts.channels import alertmanager_api


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        ("https://ops.example/am/", "https://ops.example/am/api/v2/alerts"),
        # a proxy in front that wants a token in the query: it was glued after the query
        ("https://ops.example/am?token=t1", "https://ops.example/am/api/v2/alerts?token=t1"),
    ],
)
def test_the_alerts_endpoint_keeps_the_base_urls_path_and_query(base: str, endpoint: str) -> None:
    assert alertmanager_api(base) == endpoint
