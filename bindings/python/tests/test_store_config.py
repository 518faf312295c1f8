"""The store selector: the top-level ``store`` section, the per-feature ``store`` fields, the
older fields they replace (still read as aliases), and the errors that name the field."""
from __future__ import annotations

from typing import Any

import pytest

import bitsec

SECRET = "0123456789abcdef0123456789abcdef"


def doc(redis: dict | None = None, store: dict | None = None, rate_limits: dict | None = None,
        revocation: dict | None = None, totp: dict | None = None) -> dict:
    d: dict[str, Any] = {
        "allow_inline_secrets": True,
        "rate_limits": rate_limits if rate_limits is not None else {},
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}],
                   "issuer": "iss", "audience": "aud"},
        "totp": totp if totp is not None else {},
    }
    if revocation is not None:
        d["tokens"]["revocation"] = revocation
    if redis is not None:
        d["redis"] = redis
    if store is not None:
        d["store"] = store
    return d


def kinds(rt: bitsec.Runtime) -> tuple[str, str, str]:
    s = rt.describe()["sections"]
    return s["rate_limits"]["store"], s["tokens"]["revocation"], s["totp"]["store"]


def config_error(cfg: dict) -> str:
    with pytest.raises(bitsec.ConfigError) as e:
        bitsec.Runtime(cfg)
    return e.value.detail


def test_without_redis_every_feature_is_in_process() -> None:
    with bitsec.Runtime(doc()) as rt:
        assert kinds(rt) == ("process", "process", "process")
        assert rt.describe()["sections"]["store"] == {"default": "process", "host": None}


def test_with_redis_every_feature_defaults_to_redis(redis_mode_config: dict) -> None:
    with bitsec.Runtime(doc(redis=redis_mode_config["redis"])) as rt:
        assert kinds(rt) == ("redis", "redis", "redis")
        assert rt.describe()["sections"]["store"]["default"] == "redis"


def test_store_default_and_per_feature_overrides(redis_config: dict) -> None:
    cfg = doc(redis=redis_config["redis"], store={"default": "process"},
              rate_limits={"store": "redis"}, totp={"store": "redis"})
    with bitsec.Runtime(cfg) as rt:
        assert kinds(rt) == ("redis", "process", "redis")
    cfg = doc(redis=redis_config["redis"], revocation={"store": "process"})
    with bitsec.Runtime(cfg) as rt:
        assert kinds(rt) == ("redis", "process", "redis")


def test_older_fields_are_aliases(redis_config: dict) -> None:
    cfg = doc(redis=redis_config["redis"], rate_limits={"store": "local"},
              revocation={"backend": "memory"}, totp={"state": "memory"})
    with bitsec.Runtime(cfg) as rt:
        assert kinds(rt) == ("process", "process", "process")
    cfg = doc(redis=redis_config["redis"], store={"default": "process"}, rate_limits={"store": "redis"},
              revocation={"backend": "redis"}, totp={"state": "redis"})
    with bitsec.Runtime(cfg) as rt:
        assert kinds(rt) == ("redis", "redis", "redis")
    # backend "auto" is the default, whatever it is.
    with bitsec.Runtime(doc(redis=redis_config["redis"], store={"default": "process"},
                            revocation={"backend": "auto"})) as rt:
        assert kinds(rt)[1] == "process"
    with bitsec.Runtime(doc(redis=redis_config["redis"], revocation={"backend": "auto"})) as rt:
        assert kinds(rt)[1] == "redis"


def test_older_and_newer_field_together_is_an_error() -> None:
    assert config_error(doc(revocation={"backend": "memory", "store": "process"})) == (
        "tokens.revocation.store and tokens.revocation.backend are both set: "
        "give only tokens.revocation.store (backend is its older name)")
    assert config_error(doc(totp={"state": "memory", "store": "process"})).startswith(
        "totp.store and totp.state are both set")


def test_redis_without_a_redis_section_names_the_field() -> None:
    assert config_error(doc(rate_limits={"store": "redis"})) == (
        "rate_limits.store is redis but the configuration has no redis section")
    assert config_error(doc(revocation={"store": "redis"})) == (
        "tokens.revocation.store is redis but the configuration has no redis section")
    assert config_error(doc(revocation={"backend": "redis"})) == (
        "tokens.revocation.backend is redis but the configuration has no redis section")
    assert config_error(doc(totp={"state": "redis"})) == (
        "totp.state is redis but the configuration has no redis section")
    assert config_error(doc(store={"default": "redis"})) == (
        "store.default is redis but the configuration has no redis section")


def test_host_without_a_region_name_names_the_field() -> None:
    assert config_error(doc(rate_limits={"store": "host"})) == (
        "rate_limits.store is host but store.host.name is not set (the shared region's name)")
    assert config_error(doc(totp={"store": "host"}, store={"host": {"directory": "/dev/shm"}})) == (
        "totp.store is host but store.host.name is not set (the shared region's name)")
    assert config_error(doc(store={"default": "host"})) == (
        "store.default is host but store.host.name is not set (the shared region's name)")


def test_bad_values_and_unknown_fields_are_errors() -> None:
    assert config_error(doc(rate_limits={"store": "memory"})) == (
        "rate_limits.store must be one of process, host, redis, local")
    assert config_error(doc(totp={"store": "local"})) == "totp.store must be one of process, host, redis"
    assert config_error(doc(totp={"state": "process"})) == "totp.state must be one of memory, redis"
    assert config_error(doc(store={"default": "disk"})) == "store.default must be one of process, host, redis"
    assert config_error(doc(store={"defualt": "process"})) == "unknown field store.defualt"
    assert config_error(doc(store={"host": {"name": "a", "size": 1}})) == "unknown field store.host.size"
    assert config_error(doc(store={"host": {"name": "../etc"}})) == (
        "store.host.name: 1-64 characters of A-Z a-z 0-9 _ - .")
    assert config_error(doc(store={"host": {"name": "x" * 65}})).startswith("store.host.name: ")
    assert config_error(doc(store={"host": {"name": "a", "directory": "relative"}})) == (
        "store.host.directory must be an absolute path")
    assert config_error(doc(store={"host": {"name": "a", "max_bytes": 1024}})).startswith(
        "store.host.max_bytes must be between")


def test_host_settings_are_described_without_a_host_feature() -> None:
    cfg = doc(store={"default": "process", "host": {"name": "orders-api", "max_bytes": 8 << 20}})
    with bitsec.Runtime(cfg) as rt:
        assert rt.describe()["sections"]["store"] == {
            "default": "process",
            "host": {"name": "orders-api", "directory": "/dev/shm", "max_bytes": 8 << 20}}
        assert kinds(rt) == ("process", "process", "process")
