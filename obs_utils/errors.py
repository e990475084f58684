"""The errors obs_utils raises, and the translation of boto3's errors into words a user can act on.

Every error is an ObsError carrying one message: what failed, on which URL, and what to do.
Secret keys never appear in a message (nothing here reads them).
"""
import botocore.exceptions as bce


class ObsError(Exception):
    """Base class: a storage operation failed; str(e) is the message to show the user."""


class NotFoundError(ObsError, FileNotFoundError):
    """The bucket, object or local path does not exist."""


class AccessDeniedError(ObsError, PermissionError):
    """The endpoint refused the credentials or the operation."""


class CredentialsError(ObsError):
    """No credentials are configured for a remote URL."""


class EndpointError(ObsError, ConnectionError):
    """The endpoint could not be reached, or stopped answering."""


class SettingError(ObsError, ValueError):
    """A URL or an OBS_* / S3_* setting is malformed; the message says how to write it."""


class UnsafeKeyError(ObsError, ValueError):
    """An object key would be written outside the destination folder."""


_CREDENTIAL_HELP = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or OBS_ACCESS_KEY_ID and "
                    "OBS_SECRET_ACCESS_KEY) to the keys of an account that may use this bucket, "
                    "and the endpoint in OBS_ENDPOINT, S3_ENDPOINT or AWS_ENDPOINT_URL (e.g. "
                    "https://obs.cn-north-4.myhuaweicloud.com)")
_ENDPOINT_HELP = ("check the endpoint (OBS_ENDPOINT, S3_ENDPOINT or AWS_ENDPOINT_URL, e.g. "
                  "https://obs.cn-north-4.myhuaweicloud.com) and that this machine can reach it")

_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
                 "403", "AllAccessDisabled", "InvalidToken", "ExpiredToken", "TokenRefreshRequired"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}


def _endpoint_of(client):
    return getattr(getattr(client, "meta", None), "endpoint_url", None) or "the default endpoint"


def translate(exc, url, client=None):
    """Turn a boto3/botocore exception raised while working on `url` into an ObsError."""
    endpoint = _endpoint_of(client)
    if isinstance(exc, ObsError):
        return exc
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return CredentialsError(f"no credentials for {url}: {_CREDENTIAL_HELP}")
    if isinstance(exc, bce.SSLError):
        return EndpointError(f"the TLS certificate of the storage endpoint {endpoint} was refused "
                             f"for {url} ({exc}); check the endpoint's address, or for a private "
                             "endpoint you trust, set S3_VERIFY_SSL=0")
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
        return EndpointError(f"cannot reach the storage endpoint {endpoint} for {url}: "
                             f"{_ENDPOINT_HELP}")
    if isinstance(exc, bce.ReadTimeoutError | bce.ConnectionClosedError
                  | bce.ResponseStreamingError | bce.IncompleteReadError | bce.HTTPClientError):
        return EndpointError(f"the storage endpoint {endpoint} stopped answering while working on "
                             f"{url} ({type(exc).__name__}); run the same command again to resume: "
                             "files already complete are skipped")
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return NotFoundError(f"bucket not found: {url} (endpoint {endpoint}); check the bucket "
                                 "name and that the endpoint is the bucket's region")
        if code in _MISSING_KEY_CODES or status == 404:
            return NotFoundError(f"not found: {url} (no such object or folder)")
        if code == "PreconditionFailed" or status == 412:
            return ObsError(f"{url} changed while it was being copied (it is no longer the "
                            "object the listing showed); run the same command again")
        if code == "RequestTimeTooSkewed":
            return AccessDeniedError(f"the endpoint {endpoint} refused {url} because this "
                                     "machine's clock is more than 15 minutes off: fix the clock")
        if code in _DENIED_CODES or status == 403:
            return AccessDeniedError(f"access denied to {url} (endpoint {endpoint}, {code}): the "
                                     "access key or secret key is wrong, or the account may not "
                                     f"use this bucket; {_CREDENTIAL_HELP}")
        if status is not None and status >= 500:
            return EndpointError(f"the storage endpoint {endpoint} failed on {url} with {status} "
                                 f"{code}; it kept failing after retries, try again later")
        return ObsError(f"storage error on {url}: {code or status} {error.get('Message', '')}")
    if isinstance(exc, bce.BotoCoreError):
        return ObsError(f"storage error on {url}: {exc}")
    return ObsError(f"storage error on {url}: {type(exc).__name__}: {exc}")


def is_slowdown(exc):
    """True when the store asked us to send requests more slowly (503 SlowDown, throttling)."""
    if not isinstance(exc, bce.ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("SlowDown", "Throttling", "ThrottlingException", "503") or status == 503


def is_transient(exc):
    """True for failures worth retrying: timeouts, dropped connections, 5xx, throttling."""
    if isinstance(exc, bce.ReadTimeoutError | bce.ConnectionClosedError | bce.ResponseStreamingError
                  | bce.IncompleteReadError | bce.ConnectTimeoutError | bce.EndpointConnectionError
                  | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, bce.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
    return False
