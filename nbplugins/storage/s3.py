"""S3 profiles -> one resolved endpoint with keys -> s3fs options and botocore clients.

A profile comes from ``[s3.NAME]`` in the config file and the ``AWS_*`` environment; keys
are static (file or environment), botocore's own chain (``~/.aws``, ``AWS_PROFILE``), or
exchanged from the OIDC access token through Keystone for an EC2 credential, the exchange
the pangeo-eosc guide does by hand. Every key is registered with :mod:`nbplugins.secrets`.

Retries: botocore's own retries are limited to one attempt (``total_max_attempts=1``) for
clients built here; :mod:`nbplugins.retry` owns retrying. s3fs keeps its small internal
retry loop for the filesystem face (it retries throttling and reset errors 5 times).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbplugins import config as config_mod
from nbplugins import files, secrets
from nbplugins.config import S3Profile
from nbplugins.errors import ConfigError, ServiceError, StorageError
from nbplugins.retry import Retry, describe

log = logging.getLogger(__name__)

CREDENTIAL_MODES = ("auto", "static", "env", "keystone", "aws")
CHECKSUM_MODES = ("when_required", "when_supported")


@dataclass(frozen=True)
class S3Settings:
    """A profile resolved against the environment: everything a client needs."""

    name: str
    endpoint_url: str | None
    region: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    credential_source: str = "none"
    aws_profile: str | None = None
    path_style: bool = True
    checksum: str = "when_required"
    concurrency: int = 16
    max_pool_connections: int = 20
    part_size: int = 16 * 2**20
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    verify: bool | str = True

    @property
    def is_aws(self) -> bool:
        return is_aws_endpoint(self.endpoint_url)

    def botocore_config(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``botocore.config.Config``: pool, timeouts, checksums, no retries."""
        conf: dict[str, Any] = {
            "max_pool_connections": self.max_pool_connections,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "request_checksum_calculation": self.checksum,
            "response_checksum_validation": self.checksum,
            "s3": {"addressing_style": "path" if self.path_style else "auto"},
        }
        conf.update(overrides)
        return conf

    def s3fs_options(self) -> dict[str, Any]:
        """Options for ``s3fs.S3FileSystem`` (also usable as fsspec ``storage_options``)."""
        opts: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": self.botocore_config(retries={"max_attempts": 2, "mode": "standard"}),
            "max_concurrency": self.concurrency,
            "default_block_size": self.part_size,
            "use_ssl": not (self.endpoint_url or "https").startswith("http://"),
        }
        if self.verify is not True:
            opts["client_kwargs"]["verify"] = self.verify
        if self.access_key_id:
            opts.update(key=self.access_key_id, secret=self.secret_access_key)
            if self.session_token:
                opts["token"] = self.session_token
        elif self.aws_profile:
            opts["profile"] = self.aws_profile
        return opts

    def client(self, *, raw_timestamps: bool = False, **config_overrides: Any) -> Any:
        """A thread-safe botocore S3 client for this profile (retries left to nbplugins.retry).

        ``raw_timestamps``: leave timestamps (``LastModified``...) as the server's strings
        instead of parsing each one with dateutil (a tenth of botocore's CPU per small GET).
        """
        import botocore.config
        import botocore.session

        session = botocore.session.Session(profile=self.aws_profile) if self.aws_profile else botocore.session.get_session()
        if raw_timestamps:
            session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "endpoint_url": self.endpoint_url,
            "config": botocore.config.Config(**self.botocore_config(**config_overrides)),
            "verify": self.verify,
        }
        if self.access_key_id:
            kwargs.update(aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                          aws_session_token=self.session_token)
        return session.create_client("s3", **kwargs)

    def transfer_client(self) -> Any:
        """A client for staging, whose every upload carries Content-MD5: the body is not SHA-256 signed.

        Over ``http://`` botocore signs each body with SHA-256 (about 1 s of CPU per GiB,
        and the server re-hashes it to check). Staging sends ``Content-MD5`` with every
        ``PutObject``/``UploadPart``; that header is itself covered by the SigV4 signature and
        the server refuses a body that does not match it (``BadDigest``), so the body stays
        bound to the signed request, as with botocore's own default over https. Other
        clients (no Content-MD5) keep signed payloads. Staging builds every request itself
        and reads no timestamps, so parameter validation and timestamp parsing are off:
        per-request CPU matters with thousands of small objects on a 2-core notebook.
        """
        return self.client(raw_timestamps=True, parameter_validation=False,
                           s3={"addressing_style": "path" if self.path_style else "auto",
                               "payload_signing_enabled": False})


def is_aws_endpoint(endpoint_url: str | None) -> bool:
    """True when the endpoint is Amazon's own (unset means AWS)."""
    if not endpoint_url:
        return True
    host = urlsplit(endpoint_url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _env(environ: dict[str, str], *names: str) -> str | None:
    for name in names:
        if environ.get(name):
            return environ[name]
    return None


def profile_names(cfg: config_mod.Config | None = None) -> list[str]:
    """The ``[s3.NAME]`` profiles in the config file."""
    cfg = cfg or config_mod.get()
    return sorted(cfg.s3)


def resolve(profile: str | None = None, *, cfg: config_mod.Config | None = None,
            environ: dict[str, str] | None = None, token_provider: Any = None) -> S3Settings:
    """Resolve a profile (``None``: the default one) into endpoint, region, options and keys.

    The default profile takes the ``AWS_*`` environment over the file (environment wins, as
    everywhere in nbplugins); a profile named explicitly keeps its file values and takes the
    environment only for what it leaves unset, so ``AWS_ENDPOINT_URL_S3`` never redirects
    ``[s3.cesnet]`` somewhere else.
    """
    cfg = cfg or config_mod.get()
    env = dict(os.environ if environ is None else environ)
    explicit = profile is not None
    name = profile or cfg.storage.profile or "default"
    if name in cfg.s3:
        prof = cfg.s3[name]
    elif explicit:
        known = ", ".join(sorted(cfg.s3)) or "none configured"
        raise ConfigError(f"unknown S3 profile {name!r} (known: {known}); add [s3.{name}] to {config_mod.config_path()}")
    else:
        prof = S3Profile()
    if prof.credentials not in CREDENTIAL_MODES:
        raise ConfigError(f"[s3.{name}] credentials = {prof.credentials!r}: use one of {', '.join(CREDENTIAL_MODES)}")

    def pick(file_value: Any, *env_names: str) -> Any:
        env_value = _env(env, *env_names)
        if explicit:
            return file_value if file_value not in (None, "") else env_value
        return env_value if env_value is not None else file_value

    endpoint = pick(prof.endpoint_url, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"S3 profile {name!r}: endpoint {endpoint!r} must start with http:// or https://")
    region = pick(prof.region, "AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1"
    aws = is_aws_endpoint(endpoint)
    checksum = prof.checksum or ("when_supported" if aws else "when_required")
    if checksum not in CHECKSUM_MODES:
        raise ConfigError(f"[s3.{name}] checksum = {checksum!r}: use when_required or when_supported")
    if prof.concurrency < 1 or prof.part_size_mib < 5:
        raise ConfigError(f"[s3.{name}]: concurrency must be >= 1 and part_size_mib >= 5 (S3's minimum part)")
    settings = S3Settings(
        name=name, endpoint_url=endpoint, region=region,
        path_style=prof.path_style if prof.path_style is not None else not aws,
        checksum=checksum, concurrency=prof.concurrency,
        max_pool_connections=prof.max_pool_connections or prof.concurrency + 4,
        part_size=prof.part_size_mib * 2**20,
        connect_timeout=prof.connect_timeout, read_timeout=prof.read_timeout,
        verify=prof.ca_bundle or prof.verify,
    )
    return _with_credentials(settings, prof, env, explicit, token_provider)


def _with_credentials(settings: S3Settings, prof: S3Profile, env: dict[str, str], explicit: bool,
                      token_provider: Any) -> S3Settings:
    mode = prof.credentials
    file_keys = (prof.access_key_id, prof.secret_access_key, prof.session_token)
    env_keys = (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"))
    for value, label in zip(env_keys, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), strict=True):
        secrets.register(value, label)
    where = f"[s3.{settings.name}]"
    if mode in ("auto", "static", "env"):
        order = {"static": [("config", file_keys)], "env": [("environment", env_keys)],
                 "auto": [("config", file_keys), ("environment", env_keys)] if explicit
                 else [("environment", env_keys), ("config", file_keys)]}[mode]
        for source, (key, secret, token) in order:
            if key and secret:
                return replace(settings, access_key_id=key, secret_access_key=secret,
                               session_token=token, credential_source=source)
            if key or secret:
                missing = "secret_access_key (AWS_SECRET_ACCESS_KEY)" if key else "access_key_id (AWS_ACCESS_KEY_ID)"
                raise ConfigError(f"S3 profile {settings.name!r}: {source} has a key without its pair: set {missing}")
        if mode != "auto":
            raise ConfigError(f"{where} credentials = {mode!r} but no access key pair is set there")
    if mode == "keystone" or (mode == "auto" and (prof.keystone_url or prof.site) and (prof.project_id or prof.site)):
        cred = _keystone_keys(settings, prof, token_provider)
        return replace(settings, access_key_id=cred["access"], secret_access_key=cred["secret"],
                       credential_source=f"keystone EC2 credential for project {prof.project_id}")
    aws_profile = prof.aws_profile or env.get("AWS_PROFILE")
    return replace(settings, aws_profile=aws_profile, credential_source="botocore chain")


# ----------------------------------------------------------------------------- Keystone exchange

_exchange_lock = threading.Lock()
_check_lock = threading.Lock()
_fresh: set[str] = set()  # fingerprints of key pairs Keystone handed out in this process
_checked: set[tuple[str, str]] = set()  # (endpoint, fingerprint) of cached pairs already checked against S3
DEAD_KEY_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch")  # AccessDenied can be a valid key without rights


def cache_dir() -> Path:
    """Where exchanged EC2 credentials are cached (0600 files): ``$XDG_CACHE_HOME/nbplugins/ec2``."""
    return config_mod.cache_root() / "ec2"


def keystone_site(prof: S3Profile) -> Any:
    """The OpenStack site an S3 profile exchanges keys at (an :class:`nbplugins.openstack.Site`).

    Its own ``keystone_url``, ``project_id``, ``identity_provider`` and ``protocol``, or the
    ``[openstack.sites.NAME]`` it names in ``site`` (with its own ``project_id`` winning), so
    the site and the S3 profile that uses it share one definition.
    """
    from nbplugins import openstack

    name = getattr(prof, "site", None)  # S3Profile.site, once config has it
    if name:
        target = openstack.site(name)
        if prof.project_id:
            target = replace(target, project_id=openstack.check_project_id(prof.project_id, "S3 profile project_id"))
    elif prof.keystone_url and prof.project_id:
        target = openstack.Site(None, openstack.keystone_v3_url(prof.keystone_url),
                                openstack.check_project_id(prof.project_id, "S3 profile project_id"), None,
                                prof.identity_provider, prof.protocol, prof.ca_bundle or prof.verify)
    else:
        raise ConfigError("credentials = 'keystone' needs keystone_url and project_id in the S3 profile")
    if not target.project_id:
        raise ConfigError(f"credentials = 'keystone': {target.where} has no project_id; set it in the S3 profile")
    return target


def _cache_file(target: Any, token: Any) -> Path:
    """The cache file of one Keystone URL, project and token subject."""
    subject = token.claims.subject or hashlib.sha256(token.value.encode()).hexdigest()[:16]
    key = f"{target.auth_url.rstrip('/')}|{target.project_id}|{subject}"
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _fingerprint(cred: dict[str, str]) -> str:
    return hashlib.sha256(f"{cred['access']}\0{cred['secret']}".encode()).hexdigest()


def _keystone_keys(settings: S3Settings, prof: S3Profile, token_provider: Any) -> dict[str, str]:
    """EC2 keys for a profile; cached ones are checked against S3 once per process and replaced if refused.

    A credential deleted or revoked in OpenStack stays in the cache file; without the check
    every later run would use it and fail until the file is removed by hand.
    """
    with _check_lock:
        cred = ec2_credentials(prof, token_provider=token_provider)
        seen = (settings.endpoint_url or "", _fingerprint(cred))
        if seen[1] in _fresh or seen in _checked:
            return cred
        if not _s3_refuses(settings, cred):
            _checked.add(seen)
            return cred
        forget_cached(prof, token_provider=token_provider)
        log.info("S3 at %s refused the cached EC2 credential of project %s; asking Keystone for another",
                 settings.endpoint_url or "AWS", prof.project_id)
        return ec2_credentials(prof, token_provider=token_provider, refresh=True, refused=cred)


def _s3_refuses(settings: S3Settings, cred: dict[str, str]) -> bool:
    """True when S3 says the access key does not exist or the secret is wrong; False when fine or unknown.

    One ``ListBuckets``: a server that is down, slow or answering 5xx cannot tell, and the
    real operation reports that; ``AccessDenied`` can be a valid key without that right.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    probe = replace(settings, access_key_id=cred["access"], secret_access_key=cred["secret"], session_token=None)
    try:
        probe.client(connect_timeout=min(settings.connect_timeout, 5.0),
                     read_timeout=min(settings.read_timeout, 15.0)).list_buckets()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") in DEAD_KEY_CODES:
            return True
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        log.debug("cannot check the cached EC2 credential at %s: HTTP %s %s", settings.endpoint_url, status,
                  error.get("Code", ""))
    except (BotoCoreError, OSError) as exc:
        log.debug("cannot check the cached EC2 credential at %s: %s", settings.endpoint_url,
                  secrets.redact(describe(exc)))
    return False


def _keystone_retryable(exc: BaseException) -> bool:
    """What the OpenStack sessions retry (:func:`nbplugins.openstack.retryable`): one rule for both."""
    from nbplugins import openstack

    return openstack.retryable(exc)


def ec2_credentials(prof: S3Profile, *, token_provider: Any = None, refresh: bool = False,
                    retry: Retry | None = None, refused: dict[str, str] | None = None) -> dict[str, str]:
    """An EC2 key pair for ``prof.project_id``: cached, else reused from Keystone, else created.

    The OIDC access token comes only from :mod:`nbplugins.tokens`. Keystone is asked through
    :func:`nbplugins.openstack.auth_plugin`, the plugin of every OpenStack session
    (keystoneauth1's ``v3oidcaccesstoken`` with the token layer: identity provider, protocol, project);
    ``GET /v3/users/{id}/credentials/OS-EC2`` lists existing credentials and one for the
    project is reused before ``POST`` creates one. ``refresh`` skips the cache; a listed
    credential with the same pair as ``refused`` (S3 said it is dead) is not reused.
    """
    from nbplugins import tokens

    target = keystone_site(prof)
    provider = token_provider or tokens.default_resolver()
    path = _cache_file(target, provider.get())
    with _exchange_lock:
        if not refresh:
            cached = _read_cache(path)
            if cached is not None:
                return cached
        cred = _exchange(target, provider, retry, refused)  # a refused token is refreshed once in there
        secrets.register(cred["access"], "EC2 access key")
        secrets.register(cred["secret"], "EC2 secret key")
        files.write_atomic(path, json.dumps({**cred, "created": time.time()}))
        _fresh.add(_fingerprint(cred))
        return cred


def _read_cache(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data[k] for k in ("access", "secret")):
        return None
    if path.stat().st_mode & 0o077:
        log.warning("ignoring %s: readable by others", path)
        return None
    secrets.register(data["access"], "EC2 access key")
    secrets.register(data["secret"], "EC2 secret key")
    return {"access": data["access"], "secret": data["secret"], "project_id": data.get("project_id", "")}


def forget_cached(prof: S3Profile, *, token_provider: Any = None) -> bool:
    """Drop the cached EC2 credential of this profile and token subject (after S3 refused it).

    Only that one file: other Keystone URLs, projects and users keep theirs. True if one was there.
    """
    from nbplugins import tokens

    try:
        target = keystone_site(prof)
    except ConfigError:
        return False
    path = _cache_file(target, (token_provider or tokens.default_resolver()).get())
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _exchange(target: Any, token_provider: Any, retry: Retry | None,
              refused: dict[str, str] | None = None) -> dict[str, str]:
    """Log in at ``target`` through the OpenStack session's plugin, then reuse or create an EC2 credential."""
    from keystoneauth1 import session as ks_session

    from nbplugins import openstack

    auth = openstack.auth_plugin(target, token_provider=token_provider, retry=retry)
    sess = ks_session.Session(auth=auth, verify=target.verify, timeout=30)
    where, project = target.where, target.project_id

    def call(what: str, fn: Any) -> Any:
        return openstack.call(fn, where, what, retry)

    user_id = call("authenticate and scope to the project", lambda: auth.get_user_id(sess))
    url = f"{target.auth_url}/users/{user_id}/credentials/OS-EC2"
    # log=False: keystoneauth1 logs response bodies at DEBUG, and these hold secret keys
    listing = call("list EC2 credentials", lambda: sess.get(url, log=False).json())
    dead = _fingerprint(refused) if refused else None
    for cred in listing.get("credentials", []):
        if (cred.get("tenant_id") == project and cred.get("access") and cred.get("secret")
                and _fingerprint(cred) != dead):
            log.info("reusing an EC2 credential of project %s", project)
            return {"access": cred["access"], "secret": cred["secret"], "project_id": project}
    created = call("create an EC2 credential",
                   lambda: sess.post(url, json={"tenant_id": project}, log=False).json())
    cred = created.get("credential") or {}
    if not cred.get("access") or not cred.get("secret"):
        raise ServiceError(f"{where}: the EC2 credential it created has no access/secret pair")
    log.info("created an EC2 credential for project %s", project)
    return {"access": cred["access"], "secret": cred["secret"], "project_id": project}


def storage_error(exc: BaseException, what: str) -> StorageError:
    """A readable StorageError from a botocore/s3fs failure (no keys, no signed URLs)."""
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code", "")
    hints = {
        "NoSuchBucket": "the bucket does not exist",
        "InvalidAccessKeyId": "the access key is not known to this endpoint",
        "SignatureDoesNotMatch": "the secret key is wrong",
        "AccessDenied": "access denied for these keys",
        "NoSuchKey": "no such object",
        "404": "not found",
        "403": "access denied (wrong keys or no rights)",
    }
    reason = hints.get(code) or describe(exc)
    return StorageError(f"{what}: {reason}")
