"""Where the CI signing keys come from: explicit keys, the environment, a profile file, or an assumed STS role.

Built on ``tencentcloud.common.credential`` (its ``Credential`` checks the key pair; ``CommonClient`` calls STS
``AssumeRole``), but the chain is our own: the SDK's ``DefaultCredentialProvider`` ends in the CVM metadata step,
which can hang off a CVM, and reads neither SCF's variable names nor a profile path we choose. Every step here
is fast and local except STS, which has a short timeout.

Keys are wrapped in :class:`jobwatch.redact.Secret` the moment they are read, so no repr, log line or error
message built from a :class:`Credentials` shows them.
"""

from __future__ import annotations

import configparser
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence
from urllib.parse import urlparse

from jobwatch.core.errors import CredentialsError, RetryableError, ValidationError
from jobwatch.core.redact import Secret, scrub

# (secret id, secret key, session token) variable names, tried in this order.
JOBWATCH_ENV = ("JOBWATCH_SECRET_ID", "JOBWATCH_SECRET_KEY", "JOBWATCH_SESSION_TOKEN")
# What SCF injects for a function's execution role (temporary keys, rotated by the platform).
SCF_ENV = ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SESSIONTOKEN")
# What the SDK's EnvironmentVariableCredential reads (no token).
SDK_ENV = ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", None)
DEFAULT_ENV_SETS: tuple[tuple[str, str, str | None], ...] = (JOBWATCH_ENV, SCF_ENV, SDK_ENV)

DEFAULT_PROFILE_PATHS = ("~/.tencentcloud/credentials", "/etc/tencentcloud/credentials")
STS_DEFAULT_ENDPOINT = "sts.tencentcloudapi.com"
STS_DEFAULT_REGION = "ap-guangzhou"


class NoCredentials(CredentialsError):
    """This source has no credentials at all; a chain moves on to the next source."""


class CredentialsUnavailable(RetryableError):
    """A credentials service (STS) could not be reached; a later attempt may succeed."""


@dataclass(frozen=True)
class Credentials:
    """One key pair (and token, for temporary keys), frozen for the duration of one signed request."""

    secret_id: str
    secret_key: Secret
    token: Secret | None = None
    expires_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.secret_key, Secret):
            object.__setattr__(self, "secret_key", Secret(self.secret_key))
        if self.token is not None and not isinstance(self.token, Secret):
            object.__setattr__(self, "token", Secret(self.token) if self.token else None)

    def __repr__(self) -> str:
        return (
            f"Credentials(secret_id={_show_id(self.secret_id)!r}, secret_key='***', "
            f"token={'***' if self.token else None!r}, expires_at={self.expires_at!r})"
        )

    __str__ = __repr__


def _show_id(secret_id: str) -> str:
    """A SecretId is not the secret, but it names the account: show enough to recognise it, not all of it."""
    return secret_id[:6] + "..." if len(secret_id) > 8 else "***"


class CredentialsProvider(Protocol):
    """Anything that hands out current credentials; called once per signed attempt, so it must be cheap."""

    def get(self) -> Credentials: ...


def _make(secret_id: str, secret_key: str, token: str | None, *, source: str,
          expires_at: float | None = None) -> Credentials:
    """Check a pair with the SDK's ``Credential`` (empty or space-padded keys are refused) and freeze it."""
    from tencentcloud.common.credential import Credential
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    try:
        Credential(secret_id, secret_key, token or None)
    except TencentCloudSDKException as exc:
        # The SDK's messages name the problem, never the value.
        raise CredentialsError(f"{source}: {exc.message}") from None
    return Credentials(secret_id, Secret(secret_key), Secret(token) if token else None, expires_at)


class StaticProvider:
    """Explicit keys (configuration or arguments)."""

    def __init__(self, secret_id: str, secret_key: str | Secret, token: str | Secret | None = None) -> None:
        key = secret_key.reveal() if isinstance(secret_key, Secret) else secret_key
        tok = token.reveal() if isinstance(token, Secret) else token
        self._creds = _make(secret_id, key, tok, source="explicit credentials")

    def get(self) -> Credentials:
        return self._creds

    def __repr__(self) -> str:
        return f"StaticProvider({self._creds!r})"


class EnvProvider:
    """Keys from environment variables, re-read on every call: SCF rotates a role's temporary keys in place."""

    def __init__(self, environ: Mapping[str, str] | None = None,
                 sets: Sequence[tuple[str, str, str | None]] = DEFAULT_ENV_SETS) -> None:
        self._environ = environ
        self._sets = tuple(sets)

    def get(self) -> Credentials:
        env = os.environ if self._environ is None else self._environ
        for id_name, key_name, token_name in self._sets:
            sid = env.get(id_name) or ""
            key = env.get(key_name) or ""
            if not sid and not key:
                continue
            if not sid or not key:
                have, missing = (id_name, key_name) if sid else (key_name, id_name)
                raise CredentialsError(f"environment: {have} is set but {missing} is not")
            token = (env.get(token_name) or None) if token_name else None
            return _make(sid, key, token, source=f"environment ({id_name})")
        names = ", ".join(s[0] for s in self._sets)
        raise NoCredentials(f"environment: none of {names} is set")

    def __repr__(self) -> str:
        return f"EnvProvider({[s[0] for s in self._sets]})"


class ProfileProvider:
    """Keys from an INI profile file (the SDK's ``~/.tencentcloud/credentials`` format: ``secret_id``,
    ``secret_key``, optional ``token``). Re-read only when the file changes."""

    def __init__(self, path: str | os.PathLike[str] | None = None, profile: str = "default") -> None:
        self._explicit = path is not None
        self._paths = [os.fspath(path)] if path is not None else [os.path.expanduser(p) for p in DEFAULT_PROFILE_PATHS]
        self._profile = profile
        self._cache: tuple[str, float, Credentials] | None = None
        self._lock = threading.Lock()

    def get(self) -> Credentials:
        path = next((p for p in self._paths if os.path.isfile(p)), None)
        if path is None:
            raise NoCredentials(f"profile: no file at {', '.join(self._paths)}")
        mtime = os.stat(path).st_mtime
        with self._lock:
            if self._cache and self._cache[0] == path and self._cache[1] == mtime:
                return self._cache[2]
            creds = self._read(path)
            self._cache = (path, mtime, creds)
            return creds

    def _read(self, path: str) -> Credentials:
        conf = configparser.ConfigParser(interpolation=None)
        try:
            conf.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            # configparser quotes offending lines, which may hold a key: name the file and the error type only.
            raise CredentialsError(f"profile {path}: not a valid INI file ({type(exc).__name__})") from None
        if not conf.has_section(self._profile):
            raise NoCredentials(f"profile {path}: no [{self._profile}] section")
        sec = conf[self._profile]
        sid = (sec.get("secret_id") or "").strip().strip('"')
        key = (sec.get("secret_key") or "").strip().strip('"')
        token = (sec.get("token") or sec.get("session_token") or "").strip().strip('"')
        if not sid or not key:
            missing = "secret_id" if not sid else "secret_key"
            raise CredentialsError(f"profile {path} [{self._profile}]: {missing} is missing or empty")
        return _make(sid, key, token or None, source=f"profile {path}")

    def __repr__(self) -> str:
        return f"ProfileProvider({self._paths}, profile={self._profile!r})"


class StsRoleProvider:
    """Temporary keys for a role (e.g. another account's bucket), from STS ``AssumeRole``, refreshed ``margin``
    seconds before they expire.

    Uses the SDK's ``CommonClient`` rather than ``STSAssumeRoleCredential``: that class reads the wall clock,
    refreshes only after 10 % of the duration has passed, waits up to 60 s, and cannot reach a plain-HTTP
    endpoint; we need an injected clock, a short timeout, and a loopback STS in tests.
    """

    def __init__(
        self,
        base: CredentialsProvider,
        role_arn: str,
        session_name: str = "jobwatch",
        duration: int = 3600,
        endpoint: str | None = None,
        *,
        region: str = STS_DEFAULT_REGION,
        clock: Callable[[], float] = time.time,
        margin: float = 300.0,
        timeout: int = 5,
    ) -> None:
        if not isinstance(role_arn, str) or not role_arn.startswith("qcs::cam::"):
            raise ValidationError("role_arn", role_arn, "expected qcs::cam::uin/<uin>:roleName/<name>")
        if not isinstance(duration, int) or not 900 <= duration <= 43200:
            raise ValidationError("role_duration", duration, "expected 900 to 43200 seconds")
        if not isinstance(session_name, str) or not 2 <= len(session_name) <= 128:
            raise ValidationError("role_session_name", session_name, "expected 2 to 128 characters")
        self._base = base
        self._role_arn = role_arn
        self._session_name = session_name
        self._duration = duration
        self._region = region
        self._clock = clock
        self._margin = min(margin, duration / 2)
        self._timeout = timeout
        self._scheme, self._host = _split_endpoint(endpoint)
        self._creds: Credentials | None = None
        self._lock = threading.Lock()

    def get(self) -> Credentials:
        with self._lock:
            c = self._creds
            if c is None or c.expires_at is None or self._clock() >= c.expires_at - self._margin:
                self._creds = c = self._assume()
            return c

    def _assume(self) -> Credentials:
        from tencentcloud.common.common_client import CommonClient
        from tencentcloud.common.credential import Credential
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile

        _quiet_sdk_logger()
        base = self._base.get()
        cred = Credential(base.secret_id, base.secret_key.reveal(), base.token.reveal() if base.token else None)
        profile = ClientProfile(httpProfile=HttpProfile(protocol=self._scheme, endpoint=self._host,
                                                        reqTimeout=self._timeout))
        client = CommonClient("sts", "2018-08-13", cred, self._region, profile=profile)
        params = {"RoleArn": self._role_arn, "RoleSessionName": self._session_name,
                  "DurationSeconds": self._duration}
        try:
            rsp = client.call_json("AssumeRole", params)
        except TencentCloudSDKException as exc:
            msg = scrub(str(exc.message))[:300]
            if exc.code in ("ClientNetworkError", "ServerNetworkError") or str(exc.code).startswith("InternalError"):
                raise CredentialsUnavailable(f"STS AssumeRole {self._role_arn}: {exc.code}: {msg}") from None
            raise CredentialsError(
                f"STS AssumeRole {self._role_arn} refused: {exc.code}: {msg} (request id {exc.requestId})"
            ) from None
        except ValueError:  # a body that is not JSON
            raise CredentialsUnavailable(f"STS AssumeRole {self._role_arn}: unreadable answer") from None
        try:
            r = rsp["Response"]
            c = r["Credentials"]
            expires = float(r["ExpiredTime"])
            return _make(c["TmpSecretId"], c["TmpSecretKey"], c["Token"], source="STS AssumeRole",
                         expires_at=expires)
        except (KeyError, TypeError, ValueError):
            raise CredentialsUnavailable(f"STS AssumeRole {self._role_arn}: answer lacks Credentials") from None

    def __repr__(self) -> str:
        return f"StsRoleProvider(role_arn={self._role_arn!r}, base={self._base!r})"


def _quiet_sdk_logger() -> None:
    """The SDK logs whole requests (our token header) and responses (the new TmpSecretKey) at DEBUG; keep its
    logger at WARNING or above whatever the root level is."""
    import logging

    sdk = logging.getLogger("tencentcloud_sdk_common")
    if sdk.getEffectiveLevel() < logging.WARNING:
        sdk.setLevel(logging.WARNING)


def _split_endpoint(endpoint: str | None) -> tuple[str, str]:
    """``http://127.0.0.1:9000`` -> (http, 127.0.0.1:9000); a bare host means HTTPS."""
    if not endpoint:
        return "https", STS_DEFAULT_ENDPOINT
    if "://" in endpoint:
        u = urlparse(endpoint)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValidationError("sts_endpoint", endpoint, "expected host[:port] or http(s)://host[:port]")
        return u.scheme, u.netloc
    return "https", endpoint


class ChainProvider:
    """The first source that has credentials wins; a source that is misconfigured stops the chain (silently
    falling through to other keys would sign with an identity nobody chose)."""

    def __init__(self, providers: Sequence[CredentialsProvider]) -> None:
        self._providers = list(providers)

    def get(self) -> Credentials:
        reasons: list[str] = []
        for p in self._providers:
            try:
                return p.get()
            except NoCredentials as exc:
                reasons.append(str(exc))
        raise NoCredentials("no credentials found: " + "; ".join(reasons))

    def __repr__(self) -> str:
        return f"ChainProvider({self._providers!r})"


def provider_from_settings(
    *,
    secret_id: str | None = None,
    secret_key: str | Secret | None = None,
    session_token: str | Secret | None = None,
    profile_path: str | None = None,
    profile_name: str = "default",
    role_arn: str | None = None,
    role_session_name: str = "jobwatch",
    role_duration: int = 3600,
    sts_endpoint: str | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> CredentialsProvider:
    """The provider for plain settings: explicit keys if given, else environment then profile; wrapped in an
    STS role when ``role_arn`` is set (the base keys then only serve to assume the role)."""
    base: CredentialsProvider
    if secret_id or secret_key:
        if not secret_id or not secret_key:
            missing = "secret_id" if not secret_id else "secret_key"
            raise CredentialsError(f"explicit credentials: {missing} is missing")
        base = StaticProvider(secret_id, secret_key, session_token)
    else:
        base = ChainProvider([EnvProvider(environ), ProfileProvider(profile_path, profile_name)])
    if role_arn:
        return StsRoleProvider(base, role_arn, role_session_name, role_duration, sts_endpoint, clock=clock)
    return base
