"""The IP section of the settings: allow and deny lists, trusted proxies, per-path rules."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_settings import NoDecode

from secmw.core.paths import PathTable
from secmw.core.section import Section, StrList
from secmw.ip.addresses import strict_network
from secmw.ip.forwarded import MAX_HOPS, UNIX, ProxyHeader


def _check_networks(values: list[str], *, unix: bool = False) -> list[str]:
    for value in values:
        if not (unix and value.strip() == UNIX):
            strict_network(value)  # pydantic reports the ValueError under the variable's name
    return values


class IPRule(Section):
    """Per-path lists: ``allow`` (when given) replaces the global allow list, ``deny`` adds."""

    allow: StrList | None = Field(None, description="Networks allowed on this path.")
    deny: StrList = Field(default_factory=list, description="Networks refused on this path.")


class IPSettings(Section):
    """IP allowlisting and client address resolution (``ip.*``)."""

    enabled: bool = Field(True, description="Run the IP layer.")
    allow: StrList = Field(
        default_factory=list,
        description="Allowed networks or addresses; empty allows all but `deny`.",
    )
    deny: StrList = Field(
        default_factory=list, description="Refused networks or addresses (deny wins)."
    )
    trusted_proxies: StrList = Field(
        default_factory=list,
        description="Proxies whose forwarding header is read; `unix`: a peerless socket.",
    )
    proxy_header: Annotated[ProxyHeader, BeforeValidator(lambda v: str(v).strip().lower())] = Field(
        "x-forwarded-for", description="`x-forwarded-for`, `forwarded` or `none`."
    )
    depth: int | None = Field(
        None,
        ge=1,
        le=MAX_HOPS,
        description="Take the N-th header entry from the right (fixed proxy chain).",
    )
    rules: Annotated[dict[str, IPRule], NoDecode] = Field(
        default_factory=dict,
        description='Path pattern to {"allow": [...], "deny": [...]}; allow replaces, deny adds.',
    )
    rewrite_client: bool = Field(
        True, description='Write the client to ASGI scope["client"] / WSGI REMOTE_ADDR.'
    )

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _check_networks(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        return _check_networks(value, unix=True)

    @field_validator("rules", mode="wrap")
    @classmethod
    def _rules(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, IPRule]:
        if isinstance(value, str):  # NoDecode: parsed here so a JSON error names the variable
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        try:
            rules: dict[str, IPRule] = handler(value)
        except ValidationError as exc:  # report under ip.rules, not a path-shaped name
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None
        for pattern, rule in rules.items():
            PathTable([(pattern, None)], setting=f"rule {pattern!r}")
            for item in [*(rule.allow or ()), *rule.deny]:
                try:
                    strict_network(item)
                except ValueError as exc:
                    raise ValueError(f"rule {pattern!r}: {exc}") from None
        return rules
