"""A function's ``request_schema``, checked against the bodies of its HTTP requests.

A function that declares a ``request_schema`` (JSON Schema, see
:class:`~iii_broker.function.FunctionDef`) has the JSON body of its POST/PUT/PATCH routes
validated by the web process before the function is called: a violation is 400
``INVALID_BODY`` naming where (``$.items[0].name``) and which rule (``type``,
``required``, ``minimum``...) failed. The schema was checked when the function
registered; its validator is compiled once per function and schema, when the route table
reloads (:class:`SchemaCache`), never per request.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ...function import schema_problem

log = logging.getLogger("iii.web")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""The methods whose body the request schema describes (as in the OpenAPI document)."""


class BodyViolation(ValueError):
    """The request body does not match the function's ``request_schema``."""

    def __init__(self, message: str, path: str, rule: str) -> None:
        super().__init__(message)
        self.path = path
        self.rule = rule


@dataclass(frozen=True, eq=False)
class BodySchema:
    """One function's compiled ``request_schema``."""

    function_id: str
    validator: Any
    """A ``jsonschema`` validator of the schema's draft."""
    best_match: Any
    """``jsonschema.exceptions.best_match``: the most relevant of a body's errors."""

    def check(self, body: Any) -> None:
        """Raises :class:`BodyViolation` naming the path and rule ``body`` breaks."""
        error = self.best_match(self.validator.iter_errors(body))
        if error is None:
            return
        path, rule = error.json_path, str(error.validator)
        raise BodyViolation(f"the request body does not match the request_schema of "
                            f"{self.function_id!r}: at {path}, {rule}: {error.message}",
                            path, rule)


class SchemaCache:
    """Compiled request schemas by function id and schema: a reload of the route table
    compiles only what changed (one entry per function)."""

    def __init__(self) -> None:
        self._compiled: dict[str, tuple[str, BodySchema | None]] = {}

    def get(self, function_id: str, schema: Any) -> BodySchema | None:
        """The compiled ``request_schema`` of a function (from its registry info), or None
        when it declares none (or an invalid one, which is logged once)."""
        if schema is None:
            return None
        text = json.dumps(schema, sort_keys=True, default=str)
        cached = self._compiled.get(function_id)
        if cached is not None and cached[0] == text:
            return cached[1]
        compiled: BodySchema | None = None
        problem = schema_problem(schema)
        if problem is None:
            from jsonschema import exceptions, validators  # loaded by schema_problem already

            compiled = BodySchema(function_id, validators.validator_for(schema)(schema),
                                  exceptions.best_match)
        else:  # registration refuses these; a worker not written with iii-broker may not
            log.warning("not validating requests to %r: its request_schema %s", function_id,
                        problem)
        self._compiled[function_id] = (text, compiled)
        return compiled
