"""OpenAPI 3.1 document generated from the route table and the msgspec models the handlers use."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from servermanager.common import rest as m
from servermanager.core.http.routing import Route

_REF = "#/components/schemas/{name}"


_EXTRA = {
    401: "Wrong credentials, a missing second factor, or a token that no longer works",
    404: "No such thing",
    413: "Request body too large",
    409: "Conflicts with the current state (e.g. the node is offline)",
    429: "Too many attempts; Retry-After says when to try again",
    502: "The agent could not do it; the message says why",
    503: "Not available now; the message says why",
}


def build_openapi(routes: list[Route], version: str) -> dict[str, Any]:
    models: list[Any] = [m.ErrorBody]
    for r in routes:
        models += [t for t in (r.body, r.response) if t is not None]
    schemas, components = msgspec.json.schema_components(models, ref_template=_REF)
    by_type = dict(zip(models, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    error = {"content": {"application/json": {"schema": by_type[m.ErrorBody]}}}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag], "operationId": r.handler.__name__}
        params: list[dict[str, Any]] = []
        for name in re.findall(r"{(\w+)}", r.path):
            kind = "integer" if name == "id" else "string"
            params.append({"name": name, "in": "path", "required": True, "schema": {"type": kind}})
        if r.query is not None:
            for f in msgspec.structs.fields(r.query):
                params.append(
                    {
                        "name": f.encode_name,
                        "in": "query",
                        "required": f.required,
                        "schema": msgspec.json.schema(f.type),
                    }
                )
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[r.body]}},
            }
        responses: dict[str, Any] = {}
        if r.response is not None:
            responses[str(r.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": by_type[r.response]}},
            }
        elif r.content_type is not None:
            responses[str(r.status)] = {
                "description": "OK",
                "content": {r.content_type: {"schema": {"type": "string"}}},
            }
        elif r.status == 204:
            responses["204"] = {"description": "Done"}
        else:
            responses[str(r.status)] = {"description": "OK"}
        has_path_params = "{" in r.path
        if r.body is not None or r.query is not None or has_path_params:
            responses["400"] = {"description": "Invalid input; the message names the field", **error}
        if r.role is not None:
            op["security"] = [{"bearer": []}]
            if r.enroll_token:
                op["description"] = "An agent enrollment token is accepted in place of a user's token."
            responses["401"] = {"description": "Missing or invalid token", **error}
            responses["403"] = {
                "description": f"Needs the {r.role.value} role (or two-factor set-up, or a step-up)",
                **error,
            }
        if has_path_params:
            responses["404"] = {"description": "No such thing", **error}
        if r.method != "GET":
            responses["409"] = {
                "description": "Conflicts with the current state; the message says how",
                **error,
            }
            responses["503"] = {"description": "The core's disk is full; nothing was stored", **error}
        for code, what in _EXTRA.items():
            if code in r.errors or (code == 413 and r.body is not None):
                responses[str(code)] = {"description": what, **error}
        op["responses"] = responses
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Server Manager core API", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
