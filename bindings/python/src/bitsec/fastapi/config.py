"""Application policy of the HTTP layer, as configuration with defaults: which rate-limit
category a path falls in (``PathCategories``) and which security headers every response
carries, the Content-Security-Policy first (``DEFAULT_CSP``, ``DEFAULT_SECURITY_HEADERS``).
``HTTPPolicy.from_mapping`` reads both from a plain mapping (a section of the application's
own JSON configuration); docs/fastapi.md lists the keys and the defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

#: The default Content-Security-Policy: an API loads nothing from anywhere, may not be
#: framed, and sets no base URI or form target elsewhere.
DEFAULT_CSP = "default-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"

#: The default security headers, tightened for an API: ``DEFAULT_CSP``, HSTS for a year with
#: subdomains, no framing, no MIME sniffing, ``X-XSS-Protection: 0`` (``1; mode=block`` turns
#: on a filter that browsers removed and that could itself be abused; OWASP recommends 0).
DEFAULT_SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": DEFAULT_CSP,
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-XSS-Protection": "0",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_RULE_KEYS = frozenset({"category", "segment", "segment_prefix", "path_prefix", "methods"})


@dataclass(frozen=True)
class CategoryRule:
    """One rule of ``PathCategories``: requests whose path has a segment equal to ``segment``,
    or a segment starting with ``segment_prefix``, or that start with ``path_prefix`` (each
    condition that is given must hold), and whose method is in ``methods`` (empty: any) fall
    in ``category``."""

    category: str
    segment: str | None = None
    segment_prefix: str | None = None
    path_prefix: str | None = None
    methods: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.category:
            raise ValueError("a category rule needs a category")
        if self.segment is None and self.segment_prefix is None and self.path_prefix is None:
            raise ValueError(f"category rule {self.category!r}: give segment, segment_prefix or path_prefix")
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "CategoryRule":
        unknown = set(m) - _RULE_KEYS
        if unknown:
            raise ValueError(f"unknown key(s) in a category rule: {', '.join(sorted(unknown))}")
        methods = m.get("methods") or ()
        if isinstance(methods, str):
            methods = (methods,)
        return cls(str(m.get("category") or ""), m.get("segment"), m.get("segment_prefix"), m.get("path_prefix"),
                   frozenset(str(x) for x in methods))

    def matches(self, method: str, path: str, segments: list[str]) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.segment is not None and self.segment not in segments:
            return False
        if self.segment_prefix is not None and not any(s.startswith(self.segment_prefix) for s in segments):
            return False
        return True


@dataclass(frozen=True)
class PathCategories:
    """Rate-limit categories by request path: the first matching rule wins, ``default``
    otherwise. Callable as ``categorize(method, path)`` (what ``RateLimitMiddleware`` takes).
    Rules can come from configuration: ``PathCategories.from_config([{"category": "auth",
    "segment": "auth"}, ...], default="default")``."""

    rules: tuple[CategoryRule, ...] = ()
    default: str = "default"

    @classmethod
    def from_config(cls, rules: Iterable[Mapping[str, Any] | CategoryRule], default: str = "default") -> "PathCategories":
        return cls(tuple(r if isinstance(r, CategoryRule) else CategoryRule.from_mapping(r) for r in rules), default)

    @property
    def categories(self) -> frozenset[str]:
        """Every category these rules can give (the default included)."""
        return frozenset({self.default, *(r.category for r in self.rules)})

    def __call__(self, method: str, path: str) -> str:
        segments = [s for s in path.split("/") if s]
        for rule in self.rules:
            if rule.matches(method, path, segments):
                return rule.category
        return self.default


#: The default categories: a path with an ``auth`` segment -> ``auth``; a POST with an
#: ``artifacts`` segment -> ``upload``; a segment starting with ``infer`` -> ``inference``;
#: anything else -> ``default``.
DEFAULT_PATH_CATEGORIES = PathCategories((
    CategoryRule("auth", segment="auth"),
    CategoryRule("upload", segment="artifacts", methods=frozenset({"POST"})),
    CategoryRule("inference", segment_prefix="infer"),
), "default")


def adr007_category(method: str, path: str) -> str:
    """The default categories (``DEFAULT_PATH_CATEGORIES``): ``/auth/`` -> auth, POST under
    ``/artifacts/`` -> upload, ``/infer`` -> inference, everything else -> default."""
    return DEFAULT_PATH_CATEGORIES(method, path)


_POLICY_KEYS = frozenset({"rate_limit_categories", "default_category", "csp", "security_headers"})


@dataclass(frozen=True)
class HTTPPolicy:
    """The HTTP layer's application policy in one object: the path categories of
    ``RateLimitMiddleware`` and the headers of ``SecurityHeadersMiddleware`` (``headers()``:
    the defaults, then ``security_headers`` by name, a None value removing one, then ``csp``
    when given)."""

    categories: PathCategories = DEFAULT_PATH_CATEGORIES
    csp: str | None = None
    security_headers: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> "HTTPPolicy":
        """From configuration: ``{"rate_limit_categories": [rule, ...], "default_category":
        "default", "csp": "...", "security_headers": {"Name": "value" | null}}``; every key
        is optional (a missing one keeps its default), an unknown key is an error."""
        m = m or {}
        unknown = set(m) - _POLICY_KEYS
        if unknown:
            raise ValueError(f"unknown key(s) in the HTTP policy: {', '.join(sorted(unknown))}")
        rules = m.get("rate_limit_categories")
        default = str(m.get("default_category") or "default")
        if rules is None:
            categories = PathCategories(DEFAULT_PATH_CATEGORIES.rules, default)
        else:
            categories = PathCategories.from_config(rules, default)
        headers = m.get("security_headers") or {}
        if not isinstance(headers, Mapping):
            raise ValueError("security_headers must be a mapping of header name to value (or null)")
        csp = m.get("csp")
        if csp is not None and not isinstance(csp, str):
            raise ValueError("csp must be a string")
        return cls(categories, csp, {str(k): (None if v is None else str(v)) for k, v in headers.items()})

    def headers(self) -> dict[str, str]:
        merged: dict[str, str | None] = {k.lower(): v for k, v in DEFAULT_SECURITY_HEADERS.items()}
        for k, v in self.security_headers.items():
            merged[k.lower()] = v
        if self.csp is not None:
            merged["content-security-policy"] = self.csp or None
        return {k: v for k, v in merged.items() if v is not None}
