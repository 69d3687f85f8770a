"""Fan-out on SCF itself: a timer invocation that could not poll every due job hands the rest, in shards of
job keys, to asynchronous invocations of this same function (``Invoke`` with ``InvocationType=Event``).

Parallel instances then share the work through the shared store: each shard is a direct ``poll`` of its keys,
and the store's leases keep two instances from polling one job at once. A failed ``Invoke`` is reported and the
remaining shards are dropped: the jobs stay due, so the next tick takes them. The Tencent Cloud SDK is imported
only here, and only when a shard is actually sent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import structlog

from jobwatch.core.models import JobKey

log = structlog.get_logger("jobwatch.app.fanout")

# The SDK fan-out imports (an optional dependency): `config check` imports it, `jobwatch package` adds the extra.
EXTRA = "scf"
MODULES = ("tencentcloud.scf.v20180416.scf_client",)
MAX_CLIENT_CONTEXT = 120 * 1024  # SCF accepts 128 KB for an asynchronous event; keep a margin


def encode_shard(keys: Sequence[JobKey]) -> str:
    """The ``ClientContext`` of a fan-out invocation: a direct poll of those of these keys still due when the
    shard runs (an asynchronous invocation may start late, after a timer tick polled some of them). The
    triggers' direct-event parser reads it back."""
    return json.dumps({"action": "poll", "keys": [str(k) for k in keys], "due_only": True}, separators=(",", ":"))


@dataclass
class FanoutResult:
    shards: int = 0  # invocations accepted by SCF
    keys: int = 0  # job keys in those shards
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "keys": self.keys, "errors": self.errors}


@dataclass(frozen=True)
class Target:
    """Which function to invoke, and where."""

    function_name: str
    namespace: str
    region: str
    qualifier: str | None = None
    endpoint: str | None = None  # http(s)://host[:port] override (tests); None = scf.tencentcloudapi.com

    @classmethod
    def resolve(cls, settings: Any, context: Mapping[str, Any],
                environ: Mapping[str, str] | None = None) -> "Target":
        """What is configured first, then the invocation's own context (a function deployed to namespace
        ``prod`` and invoked as version 7 fans out to ``prod``, version 7), then SCF's variables. Raises
        ``ValueError`` naming what is missing."""
        env = os.environ if environ is None else environ
        name = settings.function_name or context.get("function_name")
        if not name:
            raise ValueError("fan-out needs the function's name: set JOBWATCH_FUNCTION_NAME")
        region = (context.get("tencentcloud_region") or env.get("TENCENTCLOUD_REGION") or settings.default_region)
        if not region:
            raise ValueError("fan-out needs the function's region: set JOBWATCH_DEFAULT_REGION")
        namespace = (settings.function_namespace or context.get("namespace") or env.get("SCF_NAMESPACE")
                     or "default")
        version = settings.function_qualifier or context.get("function_version")
        qualifier = str(version) if version not in (None, "") else None
        return cls(str(name), str(namespace), str(region), qualifier, settings.scf_endpoint)


def shard(keys: Sequence[JobKey], size: int, max_shards: int) -> list[list[JobKey]]:
    """Split ``keys`` into at most ``max_shards`` shards of at most ``size`` keys, each small enough to be an
    asynchronous event (a shard too large in bytes is split further)."""
    out: list[list[JobKey]] = []
    for i in range(0, len(keys), max(1, size)):
        chunk = list(keys[i:i + size])
        while chunk:
            n = len(chunk)
            while n > 1 and len(encode_shard(chunk[:n])) > MAX_CLIENT_CONTEXT:
                n //= 2
            out.append(chunk[:n])
            chunk = chunk[n:]
    return out[:max_shards]


Invoker = Callable[[Target, str], str]
"""Sends one asynchronous invocation with this ``ClientContext``; returns SCF's request ID, raises on failure."""


def sdk_invoker(credentials: Callable[[], Any], timeout: float = 5.0) -> Invoker:
    """An :data:`Invoker` through ``tencentcloud-sdk-python-scf`` (TC3-signed by the SDK)."""

    def invoke(target: Target, client_context: str) -> str:
        from tencentcloud.common import credential
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile
        from tencentcloud.scf.v20180416 import models, scf_client

        c = credentials()
        reveal = lambda v: v.reveal() if hasattr(v, "reveal") else v  # noqa: E731
        http = HttpProfile(reqTimeout=timeout)
        if target.endpoint:
            scheme, _, host = target.endpoint.partition("://")
            http.protocol = http.scheme = scheme
            http.endpoint = host.rstrip("/")
        profile = ClientProfile(httpProfile=http)
        profile.disable_region_breaker = True
        client = scf_client.ScfClient(credential.Credential(c.secret_id, reveal(c.secret_key), reveal(c.token)),
                                      target.region, profile)
        req = models.InvokeRequest()
        params: dict[str, Any] = {"FunctionName": target.function_name, "InvocationType": "Event",
                                  "Namespace": target.namespace, "ClientContext": client_context}
        if target.qualifier:
            params["Qualifier"] = target.qualifier
        req.from_json_string(json.dumps(params))
        resp = client.Invoke(req)
        return str(getattr(resp, "RequestId", "") or "")

    return invoke


def fan_out(keys: Sequence[JobKey], target: Target, invoker: Invoker, *, shard_size: int,
            max_shards: int) -> FanoutResult:
    """Send the shards; stop at the first failure (the rest stay due for the next tick)."""
    result = FanoutResult()
    for chunk in shard(keys, shard_size, max_shards):
        try:
            rid = invoker(target, encode_shard(chunk))
        except Exception as exc:  # the SDK's errors, the network, credentials: report, never sink the tick
            from jobwatch.core.redact import scrub

            code = getattr(exc, "code", None)  # the SDK's exception carries the API's error code
            text = getattr(exc, "message", None) or exc
            msg = scrub(f"{code or type(exc).__name__}: {text}")[:300]
            result.errors.append(msg)
            log.warning("fanout_failed", function=target.function_name, keys=len(chunk), error=msg)
            break
        result.shards += 1
        result.keys += len(chunk)
        log.info("fanout_shard", function=target.function_name, keys=len(chunk), scf_request_id=rid)
    return result


__all__ = ["FanoutResult", "Target", "shard", "encode_shard", "sdk_invoker", "fan_out", "Invoker"]
