"""Tencent Cloud sinks through the official SDK: EventBridge ``PutEvents``, TDMQ CMQ ``SendCmqMsg`` /
``PublishCmqMsg``, and SES ``SendEmail``.

The SDK signs (TC3-HMAC-SHA256); we choose everything else. Credentials are asked for at each send, because
SCF's role keys rotate. The SDK's own retryer is left off (it retries without jitter and can duplicate a send);
the outbox retries with the idempotency key instead. We read the answer ourselves rather than trust the SDK's
error check, which only looks at bodies whose Content-Type is exactly ``application/json``. The product modules
are imported at first send: each costs tens of milliseconds at cold start.

TDMQ CMQ's send actions are limited to 20 requests/s (10/s for a sub-account) and documented by Tencent as meant
for testing; prefer EventBridge for production fan-out.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any, Callable, Protocol

from jobwatch.core.errors import NotifyError, ValidationError
from jobwatch.core.models import Notice, validate_region
from jobwatch.core.redact import Secret, scrub
from jobwatch.notify import render
from jobwatch.notify.base import Sink, SinkSpec

_EMAIL_RE = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_EB_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_QUEUE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class CredentialsLike(Protocol):
    secret_id: Any
    secret_key: Any
    token: Any


CredentialsSource = Callable[[], CredentialsLike]

# Error codes a later attempt can cure (throttling, service faults, expired temporary keys re-read next time).
RETRYABLE_PREFIXES = ("RequestLimitExceeded", "InternalError", "ServiceUnavailable", "ResourceUnavailable",
                      "FailedOperation.ServiceBusy", "AuthFailure.TokenFailure", "AuthFailure.SignatureExpire",
                      "ClientNetworkError", "ServerNetworkError")


def is_retryable_code(code: str) -> bool:
    return any(code == p or code.startswith(p + ".") for p in RETRYABLE_PREFIXES)


def _reveal(v: Any) -> str | None:
    if v is None:
        return None
    return v.reveal() if isinstance(v, Secret) else str(v)


class _TencentSink(Sink):
    module = ""  # e.g. tencentcloud.eb.v20210416.eb_client
    client_class = ""
    action = ""

    @staticmethod
    def tencent_args(spec: SinkSpec, default_region: str | None = None) -> dict[str, Any]:
        """The common arguments plus the API's region, credentials and endpoint override."""
        region = spec.options.get("region", default_region)
        if region is None:
            raise ValidationError("region", "", f"required for {spec.scheme} (e.g. region=ap-guangzhou)")
        return dict(spec.common, region=validate_region(region), credentials=spec.credentials,
                    endpoint=spec.endpoint)

    @staticmethod
    def named(spec: SinkSpec, field: str, pattern: re.Pattern[str], expected: str) -> str:
        if not pattern.match(spec.target):
            raise ValidationError(field, spec.target, expected)
        return spec.target

    def __init__(self, name: str, *, region: str, credentials: CredentialsSource | None,
                 endpoint: str | None = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.region = region
        self.credentials = credentials
        self.endpoint = endpoint  # "http://127.0.0.1:8080" in tests; None for the public endpoint

    def params(self, notice: Notice) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, response: dict[str, Any]) -> None:
        """Hook for actions whose success answer can still say "not done"."""

    def _client(self, timeout: float) -> Any:
        from tencentcloud.common import credential
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile

        if self.credentials is None:
            raise self.fail("no Tencent Cloud credentials configured", retryable=False)
        try:
            c = self.credentials()
        except Exception as exc:  # a provider's failure (STS down, no keys) - retry later
            raise self.fail(f"credentials unavailable ({type(exc).__name__})", retryable=True) from None
        sid, skey, token = _reveal(c.secret_id), _reveal(c.secret_key), _reveal(c.token)
        if not sid or not skey:
            raise self.fail("credentials without secret_id/secret_key", retryable=False)
        http = HttpProfile(reqTimeout=timeout)  # handed to requests as is, so a float works
        if self.endpoint:
            scheme, _, host = self.endpoint.partition("://")
            http.protocol = http.scheme = scheme
            http.endpoint = host.rstrip("/")
        profile = ClientProfile(httpProfile=http)
        profile.disable_region_breaker = True  # its failure path swallows errors and returns None
        cls = getattr(importlib.import_module(self.module), self.client_class)
        return cls(credential.Credential(sid, skey, token), self.region, profile)

    def _deliver(self, notice: Notice, timeout: float) -> None:
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

        client = self._client(timeout)
        try:
            raw = client.call(self.action, self.params(notice))
        except TencentCloudSDKException as exc:
            code = str(exc.code or "ClientError")
            if code == "ServerNetworkError":  # a non-200 status; its body may still be the API's error
                raise self._network_error(exc) from None
            if code == "ClientNetworkError":
                raise self.fail("connection failed or timed out", retryable=True) from None
            raise self._api_error(code, exc.message, exc.requestId) from None
        self._answer(raw)

    def _answer(self, raw: bytes | str) -> None:
        try:
            resp = json.loads(raw)["Response"]
            if not isinstance(resp, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise self.fail("unreadable answer (no Response object)", retryable=True) from None
        err = resp.get("Error")
        if err:
            raise self._api_error(str(err.get("Code") or "Unknown"), err.get("Message"), resp.get("RequestId"))
        self.check(resp)

    def _network_error(self, exc: Any) -> NotifyError:
        body = exc.message
        if isinstance(body, bytes):
            try:
                self._answer(body)
            except NotifyError as e:
                return e
        return self.fail("HTTP error from the API", retryable=True)

    def _api_error(self, code: str, message: Any, request_id: Any) -> NotifyError:
        msg = scrub(str(message or ""))[:300]
        return self.fail(f"{self.action} {code}: {msg} (request id {request_id or '-'})",
                         retryable=is_retryable_code(code))

    def describe(self) -> str:
        return f"{self.name} ({self.action} in {self.region})"


class EventBridgeSink(_TencentSink):
    """One CloudEvent-like event per notice on an event bus; EventBridge routes it on (1,000 requests/s)."""

    kind = "eventbridge"
    options = frozenset({"region", "source", "type"})
    default_rate = "1000/s"
    module = "tencentcloud.eb.v20210416.eb_client"
    extra = "eb"
    modules = (module,)
    client_class = "EbClient"
    action = "PutEvents"

    def __init__(self, name: str, bus_id: str, *, source: str = "ci-jobwatch", type_prefix: str = "jobwatch",
                 **kw: Any) -> None:
        super().__init__(name, **kw)
        self.bus_id = bus_id
        self.source = source
        self.type_prefix = type_prefix

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "EventBridgeSink":
        bus = cls.named(spec, "event_bus_id", _EB_RE, "expected eventbridge://<EventBusId>")
        return cls(spec.name, bus, source=spec.options.get("source", "ci-jobwatch"),
                   type_prefix=spec.options.get("type", "jobwatch"), **cls.tencent_args(spec))

    def params(self, notice: Notice) -> dict[str, Any]:
        event = {
            "Source": self.source,
            "Data": json.dumps(notice.payload(), ensure_ascii=False, separators=(",", ":")),
            "Type": f"{self.type_prefix}:{notice.kind.value}:{notice.outcome}",
            "Subject": str(notice.key),
            "Time": int(notice.observed_at.timestamp() * 1000),
            "Region": notice.key.region,
            "Id": notice.idempotency_key,
        }
        return {"EventBusId": self.bus_id, "EventList": [event]}


class TdmqQueueSink(_TencentSink):
    """TDMQ CMQ queue ``SendCmqMsg`` (20 requests/s; documented by Tencent as test-grade)."""

    kind = "tdmq-queue"
    options = frozenset({"region"})
    default_rate = "20/s"
    target_field = "queue"
    module = "tencentcloud.tdmq.v20200217.tdmq_client"
    extra = "tdmq"
    modules = (module,)
    client_class = "TdmqClient"
    action = "SendCmqMsg"

    def __init__(self, name: str, queue: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.queue = queue

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "TdmqQueueSink":
        name = cls.named(spec, cls.target_field, _QUEUE_RE,
                         "expected a name: a letter, then letters, digits, '-' or '_' (up to 64)")
        return cls(spec.name, name, **cls.tencent_args(spec))

    def params(self, notice: Notice) -> dict[str, Any]:
        return {"QueueName": self.queue, "MsgContent": json.dumps(notice.payload(), ensure_ascii=False),
                "DelaySeconds": 0}

    def check(self, response: dict[str, Any]) -> None:
        if response.get("Result") is False:
            raise self.fail(f"{self.action} answered Result=false (request id {response.get('RequestId')})",
                            retryable=True)


class TdmqTopicSink(TdmqQueueSink):
    """TDMQ CMQ topic ``PublishCmqMsg``, tagged with the outcome so subscriptions can filter."""

    kind = "tdmq-topic"
    target_field = "topic"
    action = "PublishCmqMsg"

    def params(self, notice: Notice) -> dict[str, Any]:
        return {"TopicName": self.queue, "MsgContent": json.dumps(notice.payload(), ensure_ascii=False),
                "MsgTag": [notice.outcome]}


class SesSink(_TencentSink):
    """An email through an approved SES template (20 requests/s; regions ap-guangzhou and ap-hongkong).

    The template receives :func:`render.fields` (title, job_name, job_id, bucket, from_state, to_state, ran_for,
    code, message, ...) plus ``text``, the whole message as plain text."""

    kind = "ses"
    options = frozenset({"region", "from", "to", "subject"})
    default_rate = "20/s"
    module = "tencentcloud.ses.v20201002.ses_client"
    extra = "ses"
    modules = (module,)
    client_class = "SesClient"
    action = "SendEmail"

    def __init__(self, name: str, template_id: int, *, sender: str, recipients: list[str],
                 subject: str | None = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.template_id = template_id
        self.sender = sender
        self.recipients = recipients
        self.subject = subject

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "SesSink":
        args = cls.tencent_args(spec, default_region="ap-guangzhou")
        if not spec.target.isdigit():
            raise ValidationError("template_id", spec.target, "expected ses://<numeric TemplateID>")
        sender = spec.options.get("from", "")
        recipients = [a.strip() for a in spec.options.get("to", "").split(",") if a.strip()]
        if not _EMAIL_RE.match(sender.rpartition("<")[2].rstrip(">").strip() or "-"):
            raise ValidationError("from", sender, "expected a sender address (approved in SES)")
        bad = [a for a in recipients if not _EMAIL_RE.match(a)]
        if not recipients or bad or len(recipients) > 50:
            raise ValidationError("to", ",".join(bad) or spec.options.get("to", ""),
                                  "expected 1-50 addresses, comma-separated")
        return cls(spec.name, int(spec.target), sender=sender, recipients=recipients,
                   subject=spec.options.get("subject"), **args)

    def params(self, notice: Notice) -> dict[str, Any]:
        data = render.fields(notice)
        data["text"] = render.text(notice)
        return {
            "FromEmailAddress": self.sender,
            "Destination": list(self.recipients),
            "Subject": self.subject or data["title"],
            "Template": {"TemplateID": self.template_id, "TemplateData": json.dumps(data, ensure_ascii=False)},
            "TriggerType": 1,
        }
