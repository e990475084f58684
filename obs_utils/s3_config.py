"""Build the boto3 S3 client from the environment: OBS on Huawei Cloud, or any S3-compatible store.

Looked up in this order (first set wins):
  endpoint     OBS_ENDPOINT, S3_ENDPOINT (set by ModelArts, a host; S3_USE_HTTPS=0 means http,
               S3_VERIFY_SSL=0 skips certificate checks), AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
  keys         OBS_ACCESS_KEY_ID / OBS_SECRET_ACCESS_KEY / OBS_SECURITY_TOKEN,
               HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK / HUAWEICLOUD_SDK_SECURITY_TOKEN,
               then boto3's own chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ~/.aws, ...)
  region       OBS_REGION, AWS_REGION, AWS_DEFAULT_REGION, else read from an OBS endpoint
               (obs.<region>.myhuaweicloud.com), else us-east-1
  addressing   OBS_ADDRESSING_STYLE = path | virtual | auto (default: path for an IP address or
               localhost endpoint, virtual otherwise, which is what OBS expects)
  signature    OBS_SIGNATURE_VERSION (default s3v4)
  retries      OBS_MAX_ATTEMPTS (default 5, per request; a tree copy retries each small file
               itself instead), OBS_CONNECT_TIMEOUT / OBS_READ_TIMEOUT seconds
               (default 10 / 60)
"""
import ipaddress
import os
import re
import threading
from urllib.parse import urlparse

import boto3
from botocore.config import Config

from .errors import SettingError
from .signed import SignedRequests

# Variables boto3's own credential chain reads: a change to any of them means a new client.
_BOTO3_CHAIN_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")
MAX_POOL_CONNECTIONS = 128  # the most threads a tree copy runs: one connection each
_lock = threading.Lock()
_client = None
_client_key = None
_signed = None
_environ_seen = None


def _first(*names):
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _false(value):
    return str(value).strip().lower() in ("0", "false", "no", "off")


def endpoint_url():
    """The endpoint URL from the environment, or None for boto3's default (AWS)."""
    explicit = _first("OBS_ENDPOINT")
    if explicit:
        return explicit if "://" in explicit else "https://" + explicit
    modelarts = _first("S3_ENDPOINT")
    if modelarts:
        if "://" in modelarts:
            return modelarts
        scheme = "http" if _false(os.environ.get("S3_USE_HTTPS", "1")) else "https"
        return f"{scheme}://{modelarts}"
    return _first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _region(endpoint):
    region = _first("OBS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        return region
    match = re.match(r"obs\.([a-z0-9-]+)\.", urlparse(endpoint or "").hostname or "")
    return match.group(1) if match else "us-east-1"


def _addressing_style(endpoint):
    style = _first("OBS_ADDRESSING_STYLE", "S3_ADDRESSING_STYLE")
    if style:
        if style not in ("path", "virtual", "auto"):
            raise SettingError(f"OBS_ADDRESSING_STYLE={style!r}: use path, virtual or auto")
        return style
    host = urlparse(endpoint or "").hostname or ""
    if host == "localhost":
        return "path"
    try:
        ipaddress.ip_address(host)
        return "path"
    except ValueError:
        return "virtual"


def _credentials():
    key = _first("OBS_ACCESS_KEY_ID", "HUAWEICLOUD_SDK_AK")
    secret = _first("OBS_SECRET_ACCESS_KEY", "HUAWEICLOUD_SDK_SK")
    if key and secret:
        token = _first("OBS_SECURITY_TOKEN", "HUAWEICLOUD_SDK_SECURITY_TOKEN")
        return {"aws_access_key_id": key, "aws_secret_access_key": secret,
                "aws_session_token": token}
    return {}  # boto3's default chain: AWS_* variables, shared files, instance roles


def _number(name, default, kind):
    value = _first(name)
    if value is None:
        return kind(default)
    try:
        return kind(value)
    except ValueError:
        raise SettingError(f"{name}={value!r}: expected a number, e.g. {default}") from None


def client_settings():
    """Everything the client is built from, as plain values (the secret is never included)."""
    endpoint = endpoint_url()
    return {
        "endpoint_url": endpoint,
        "region": _region(endpoint),
        "addressing_style": _addressing_style(endpoint),
        "signature_version": _first("OBS_SIGNATURE_VERSION") or "s3v4",
        "verify": not _false(os.environ.get("S3_VERIFY_SSL", "1")),
        "max_attempts": _number("OBS_MAX_ATTEMPTS", 5, int),
        "connect_timeout": _number("OBS_CONNECT_TIMEOUT", 10, float),
        "read_timeout": _number("OBS_READ_TIMEOUT", 60, float),
    }


def get_client():
    """A shared boto3 S3 client, rebuilt when the environment it was made from has changed."""
    return _build()[0]


def get_signed():
    """The SignedRequests twin of get_client() (same endpoint, credentials, timeouts), or None
    where it does not apply: SigV2 (OBS_SIGNATURE_VERSION=s3) or no credentials found."""
    return _build()[1]


def _build():
    """(client, signed), made anew only when the settings they are made from have changed.
    An environment unchanged since the last call is the common case, and a tree copy asks once
    per file from every thread: that is answered from a copy of os.environ's own dict of bytes
    (CPython's `_data`: 0.1 us to copy and compare, where dict(os.environ) decodes every
    variable, 30 us, and the settings take 200)."""
    global _client, _client_key, _signed, _environ_seen
    environ = getattr(os.environ, "_data", os.environ).copy()
    with _lock:
        if _client is not None and environ == _environ_seen:
            return _client, _signed
    settings = client_settings()
    credentials = _credentials()
    chain = tuple(os.environ.get(name) for name in _BOTO3_CHAIN_VARS)
    key = (tuple(sorted(settings.items())), tuple(sorted(credentials.items())), chain)
    with _lock:
        if _client is None or key != _client_key:
            config = Config(
                signature_version=settings["signature_version"],
                s3={"addressing_style": settings["addressing_style"]},
                retries={"max_attempts": settings["max_attempts"], "mode": "standard"},
                connect_timeout=settings["connect_timeout"],
                read_timeout=settings["read_timeout"],
                max_pool_connections=MAX_POOL_CONNECTIONS,
                # OBS (and other non-AWS stores) reject the CRC trailers boto3 >= 1.36 adds.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            session = boto3.session.Session(**credentials)
            _client = session.client("s3", endpoint_url=settings["endpoint_url"],
                                     region_name=settings["region"], verify=settings["verify"],
                                     config=config)
            _client_key = key
            found = session.get_credentials()
            _signed = None
            if settings["signature_version"] in ("s3v4", "v4") and found is not None:
                _signed = SignedRequests(_client.meta.endpoint_url, settings["region"],
                                         settings["addressing_style"], found,
                                         verify=settings["verify"],
                                         connect_timeout=settings["connect_timeout"],
                                         read_timeout=settings["read_timeout"],
                                         max_pool_connections=MAX_POOL_CONNECTIONS,
                                         max_attempts=settings["max_attempts"])
        _environ_seen = environ
        return _client, _signed
