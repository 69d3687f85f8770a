"""Chat robots: WeCom group robot, DingTalk custom robot, Feishu/Lark custom bot, Slack incoming webhook.

Each takes readable markdown from :mod:`render` and signs as its vendor documents. All four can answer HTTP 200
with an error in the body (WeCom/DingTalk ``errcode``, Feishu ``code``, Slack any text but ``ok``): that is a
failure, and the vendor's "too many requests" codes are retryable while a bad key or signature is not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import quote, unquote

import requests

from jobwatch.core.errors import ValidationError
from jobwatch.core.models import Notice
from jobwatch.core.redact import Secret
from jobwatch.notify import render
from jobwatch.notify.base import Sink, SinkSpec, dumps, json_answer, post_json

WECOM_BASE = "https://qyapi.weixin.qq.com"
DINGTALK_BASE = "https://oapi.dingtalk.com"
FEISHU_BASE = "https://open.feishu.cn"
LARK_BASE = "https://open.larksuite.com"
SLACK_BASE = "https://hooks.slack.com"

# Codes a later attempt can cure: system busy and the per-robot frequency limits.
WECOM_RETRYABLE = frozenset({-1, 45009})
DINGTALK_RETRYABLE = frozenset({-1, 130101})
FEISHU_RETRYABLE = frozenset({9499, 11232})


class _Robot(Sink):
    base_url = ""  # the vendor's API host; endpoint= overrides it

    @classmethod
    def token_from(cls, spec: SinkSpec) -> Secret:
        token = unquote(spec.target).strip("/")
        if not token or "/" in token:
            raise ValidationError("key", "***" if token else "", f"expected {cls.kind}://<robot key or token>")
        return Secret(token)

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "_Robot":
        signing = {"secret": spec.secret()} if "secret" in cls.options else {}
        return cls(spec.name, cls.token_from(spec), base=spec.endpoint or cls.base_url, session=spec.session,
                   **signing, **spec.common)

    def __init__(self, name: str, token: Secret, *, base: str, session: requests.Session, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.token = token
        self.base = base.rstrip("/")
        self.session = session

    def _check_code(self, answer: dict[str, Any], field: str, retryable_codes: frozenset[int]) -> None:
        code = answer.get(field)
        if code is None:
            raise self.fail(f"answer without {field}", retryable=True)
        if code != 0:
            msg = answer.get("errmsg") or answer.get("msg") or answer.get("StatusMessage") or ""
            raise self.fail(f"{field} {code}: {msg}", retryable=code in retryable_codes)


class WeComSink(_Robot):
    """``POST /cgi-bin/webhook/send?key=<key>`` with a markdown message (about 20 a minute per robot)."""

    kind = "wecom"
    default_rate = "20/min"
    base_url = WECOM_BASE

    def body(self, notice: Notice) -> dict[str, Any]:
        return {"msgtype": "markdown", "markdown": {"content": render.markdown(notice)}}

    def _deliver(self, notice: Notice, timeout: float) -> None:
        url = f"{self.base}/cgi-bin/webhook/send?key={quote(self.token.reveal(), safe='')}"
        _, data = post_json(self, self.session, url, dumps(self.body(notice)), timeout)
        self._check_code(json_answer(self, data), "errcode", WECOM_RETRYABLE)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")); URL-encoding is left to the caller."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class DingTalkSink(_Robot):
    """``POST /robot/send?access_token=..&timestamp=..&sign=..`` (the signature is optional on the robot)."""

    kind = "dingtalk"
    options = frozenset({"secret"})
    default_rate = "20/min"
    base_url = DINGTALK_BASE

    def __init__(self, name: str, token: Secret, *, secret: Secret | None, **kw: Any) -> None:
        super().__init__(name, token, **kw)
        self.secret = secret

    def body(self, notice: Notice) -> dict[str, Any]:
        return {"msgtype": "markdown",
                "markdown": {"title": render.title(notice), "text": render.markdown(notice)}}

    def _deliver(self, notice: Notice, timeout: float) -> None:
        url = f"{self.base}/robot/send?access_token={quote(self.token.reveal(), safe='')}"
        if self.secret is not None:
            ts = int(self.wall() * 1000)
            url += f"&timestamp={ts}&sign={quote(dingtalk_sign(self.secret.reveal(), ts), safe='')}"
        _, data = post_json(self, self.session, url, dumps(self.body(notice)), timeout)
        self._check_code(json_answer(self, data), "errcode", DINGTALK_RETRYABLE)


def feishu_sign(secret: str, timestamp: int) -> str:
    """base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")) — the key is the string, the message empty."""
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


_FEISHU_COLOUR = {"Failed": "red", "Cancel": "orange", "vanished": "orange", "stalled": "yellow",
                  "Success": "green", "recovered": "green"}


class FeishuSink(_Robot):
    """``POST /open-apis/bot/v2/hook/<id>`` with an interactive card (Lark: open.larksuite.com)."""

    kind = "feishu"
    options = frozenset({"secret"})
    default_rate = "100/min"
    base_url = FEISHU_BASE

    def __init__(self, name: str, token: Secret, *, secret: Secret | None, **kw: Any) -> None:
        super().__init__(name, token, **kw)
        self.secret = secret

    def body(self, notice: Notice) -> dict[str, Any]:
        card = {
            "header": {"title": {"tag": "plain_text", "content": render.title(notice)},
                       "template": _FEISHU_COLOUR.get(notice.outcome, "blue")},
            "elements": [{"tag": "div", "text": {"tag": "lark_md",
                                                 "content": render.markdown(notice, with_title=False)}}],
        }
        out: dict[str, Any] = {}
        if self.secret is not None:
            ts = int(self.wall())
            out.update({"timestamp": str(ts), "sign": feishu_sign(self.secret.reveal(), ts)})
        out.update({"msg_type": "interactive", "card": card})
        return out

    def _deliver(self, notice: Notice, timeout: float) -> None:
        url = f"{self.base}/open-apis/bot/v2/hook/{quote(self.token.reveal(), safe='')}"
        _, data = post_json(self, self.session, url, dumps(self.body(notice)), timeout)
        answer = json_answer(self, data)
        self._check_code(answer, "code" if "code" in answer else "StatusCode", FEISHU_RETRYABLE)


class LarkSink(FeishuSink):
    """Feishu's international edition: the same API on its own host."""

    kind = "lark"
    base_url = LARK_BASE


class SlackSink(_Robot):
    """Incoming webhook ``POST /services/T/B/X``; about one message a second, 429 with Retry-After beyond."""

    kind = "slack"
    default_rate = "1/s"

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> "SlackSink":
        host, _, path = spec.target.partition("/")
        if host != "hooks.slack.com" or not path.startswith("services/") or path.count("/") < 3:
            raise ValidationError("url", "slack://" + host + "/...",
                                  "expected slack://hooks.slack.com/services/T.../B.../...")
        return cls(spec.name, Secret(path), base=spec.endpoint or SLACK_BASE, session=spec.session, **spec.common)

    def body(self, notice: Notice) -> dict[str, Any]:
        return {"text": render.title(notice),
                "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                        "text": render.markdown(notice, flavour="slack")}}]}

    def _deliver(self, notice: Notice, timeout: float) -> None:
        url = f"{self.base}/{self.token.reveal().lstrip('/')}"
        _, data = post_json(self, self.session, url, dumps(self.body(notice)), timeout)
        answer = data.decode("utf-8", "replace").strip()
        if answer != "ok":
            raise self.fail(f"answered {answer[:100]!r}", retryable=False)
