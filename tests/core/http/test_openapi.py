"""The OpenAPI document, generated from the route table and its models, as a real core serves it."""

from __future__ import annotations

import re

from devkit.cores import RunningCore
from servermanager.core.http.api import ROUTES


async def test_openapi_is_generated_from_models(core_server: RunningCore) -> None:
    status, _ = await core_server.request("GET", "/api/v1/openapi.json")
    assert status == 401
    status, doc = await core_server.request("GET", "/api/v1/openapi.json", await core_server.admin_token())
    assert status == 200
    assert doc["openapi"].startswith("3.")
    for r in ROUTES:
        assert r.method.lower() in doc["paths"][r.path], r.path
    schemas = doc["components"]["schemas"]
    login = schemas["LoginRequest"]
    assert set(login["required"]) == {"username", "password"}
    patch = schemas["NodePatch"]["properties"]["tags"]
    assert "pattern" in str(patch)
    history = doc["paths"]["/api/v1/nodes/{id}/metrics"]["get"]
    names = {prm["name"] for prm in history["parameters"]}
    assert {"id", "from", "to", "resolution", "fields"} <= names
    assert re.match(r"^\d+\.\d+", doc["info"]["version"])
