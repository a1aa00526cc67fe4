"""The one place that knows how an ``http`` trigger's ``api_path`` reads.

``/users/:id/posts`` is three segments; a segment ``:name`` (a colon and at least one more
character) is a parameter that matches one non-empty request segment, any other segment
matches itself. Slashes at either end do not count, so ``users/:id/`` is ``/users/:id``.
The route table matches with it, registration compares route shapes with it, and the
OpenAPI document turns it into ``/users/{id}``. Registration also refuses a path without
its leading slash and parameters without a name or with one name twice (:func:`path_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass


def split_path(path: str) -> tuple[str, ...]:
    """``/users/:id/`` → ``("users", ":id")``: the leading and trailing slash do not count."""
    path = path.strip("/")
    return tuple(path.split("/")) if path else ()


def is_param(segment: str) -> bool:
    """``:id`` is a parameter; a lone ``:`` is an ordinary segment here (registration
    refuses it, see :func:`path_problem`)."""
    return len(segment) > 1 and segment[0] == ":"


@dataclass(frozen=True)
class PathPattern:
    """A parsed ``api_path``: its segments, and where its parameters and literals sit."""

    segments: tuple[str, ...]
    params: tuple[tuple[int, str], ...]
    """``(position, name)`` of each parameter, in order."""
    literals: tuple[tuple[int, str], ...]
    """``(position, text)`` of each other segment."""

    @classmethod
    def parse(cls, api_path: str) -> PathPattern:
        segments = split_path(api_path)
        return cls(segments,
                   params=tuple((i, s[1:]) for i, s in enumerate(segments) if is_param(s)),
                   literals=tuple((i, s) for i, s in enumerate(segments) if not is_param(s)))

    @property
    def path(self) -> str:
        """The normalized ``api_path``: one leading slash, none trailing."""
        return "/" + "/".join(self.segments)

    @property
    def shape(self) -> tuple[str, ...]:
        """The path with parameter names left out: ``/users/:id`` and ``/users/:uid`` are one
        route (``("users", ":")``)."""
        return tuple(":" if is_param(s) else s for s in self.segments)

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names, in order."""
        return tuple(name for _, name in self.params)

    @property
    def specificity(self) -> tuple[int, ...]:
        """A sort key that puts a literal before a parameter, position by position."""
        return tuple(1 if is_param(s) else 0 for s in self.segments)

    def match(self, parts: tuple[str, ...]) -> dict[str, str] | None:
        """The path params when ``parts`` (a :func:`split_path`) fits, else None."""
        if len(parts) != len(self.segments):
            return None
        for i, text in self.literals:
            if parts[i] != text:
                return None
        params = {}
        for i, name in self.params:
            part = parts[i]
            if not part:
                return None
            params[name] = part
        return params

    def template(self, names: tuple[str, ...] | None = None) -> str:
        """The OpenAPI path: ``/users/:id`` → ``/users/{id}``; ``names`` renames the
        parameters in order (routes of one shape must share them in OpenAPI)."""
        renamed = dict(zip((i for i, _ in self.params), names or self.names, strict=True))
        return "/" + "/".join(f"{{{renamed[i]}}}" if i in renamed else s
                              for i, s in enumerate(self.segments))


def path_problem(api_path: str) -> str | None:
    """Why ``api_path`` cannot be registered, or None: it must start with ``/``, and each
    parameter needs a name of its own (``/e/:`` and ``/a/:id/:id`` are refused). The
    parser itself stays lenient, for what the registry already holds."""
    if not api_path.startswith("/"):
        return f"is {api_path!r}: it must start with '/' (e.g. '/{api_path.lstrip('/')}')"
    seen: set[str] = set()
    for segment in split_path(api_path):
        if segment == ":":
            return f"is {api_path!r}: a parameter needs a name after ':' (e.g. ':id')"
        if is_param(segment):
            if segment[1:] in seen:
                return (f"is {api_path!r}: parameter {segment!r} appears twice; give each "
                        "parameter its own name")
            seen.add(segment[1:])
    return None


def route_shape(api_path: str) -> tuple[str, ...]:
    """``/users/:id`` and ``users/:name/`` are the same route: ``("users", ":")``."""
    return PathPattern.parse(api_path).shape
