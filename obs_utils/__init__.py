"""One file API over obs://, s3://, file:// and local paths (MoXing on ModelArts, boto3 elsewhere).

    import obs_utils
    obs_utils.copy_tree("obs://bucket/garbage/train_data/", "/cache/data")
    obs_utils.write_text("obs://bucket/out/metrics.json", text)

Configuration comes from the environment: see obs_utils/s3_config.py and the README.
"""
from .api import (cached_copy, copy, copy_tree, exists, forget_cached, is_dir, listdir,
                  local_path, make_dirs, read_bytes, read_text, remove, write_bytes, write_text)
from .errors import (AccessDeniedError, CredentialsError, EndpointError, NotFoundError, ObsError,
                     UnsafeKeyError)
from .tree import CopyStats
from .urls import is_remote, join, parse

# Library loggers that print a line per request at INFO; applications set them to WARNING.
CHATTY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")

__all__ = [
    "cached_copy", "copy", "copy_tree", "exists", "forget_cached", "is_dir", "listdir", "local_path", "make_dirs", "read_bytes",
    "read_text", "remove", "write_bytes", "write_text", "is_remote", "join", "parse", "CopyStats",
    "ObsError", "NotFoundError", "AccessDeniedError", "CredentialsError", "EndpointError",
    "UnsafeKeyError", "CHATTY_LOGGERS",
]
