"""How the environment (ModelArts', AWS-style or OBS-named variables) becomes the S3 client."""
from obs_utils import s3_config


def settings(env, **values):
    for name, value in values.items():
        env.setenv(name, value)
    return s3_config.client_settings()


def test_modelarts_variables(clean_storage_env):
    got = settings(clean_storage_env, S3_ENDPOINT="obs.cn-north-4.myhuaweicloud.com")
    assert got["endpoint_url"] == "https://obs.cn-north-4.myhuaweicloud.com"
    assert got["region"] == "cn-north-4"
    assert got["addressing_style"] == "virtual" and got["signature_version"] == "s3v4"
    got = settings(clean_storage_env, S3_USE_HTTPS="0", S3_VERIFY_SSL="0")
    assert got["endpoint_url"] == "http://obs.cn-north-4.myhuaweicloud.com"
    assert got["verify"] is False


def test_precedence_and_local_endpoints(clean_storage_env):
    got = settings(clean_storage_env, AWS_ENDPOINT_URL="http://127.0.0.1:9000")
    assert got["endpoint_url"] == "http://127.0.0.1:9000" and got["addressing_style"] == "path"
    got = settings(clean_storage_env, S3_ENDPOINT="obs.ap-southeast-1.myhuaweicloud.com")
    assert got["endpoint_url"] == "https://obs.ap-southeast-1.myhuaweicloud.com"
    got = settings(clean_storage_env, OBS_ENDPOINT="http://localhost:8333", OBS_REGION="x-1",
                   OBS_ADDRESSING_STYLE="virtual", OBS_MAX_ATTEMPTS="2")
    assert got["endpoint_url"] == "http://localhost:8333"
    assert (got["region"], got["addressing_style"], got["max_attempts"]) == ("x-1", "virtual", 2)


def test_obs_named_keys_take_precedence_and_the_secret_is_never_shown(clean_storage_env,
                                                                      caplog):
    """The OBS_* pair wins over AWS_* (the key and the secret alike), and a failed call (here
    an endpoint that refuses connections) names the endpoint, never the secret, in its error
    or in the log."""
    import pytest

    import obs_utils

    clean_storage_env.setenv("AWS_ACCESS_KEY_ID", "aws-key")
    clean_storage_env.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    clean_storage_env.setenv("OBS_ACCESS_KEY_ID", "obs-key")
    clean_storage_env.setenv("OBS_SECRET_ACCESS_KEY", "obs-secret-value")
    clean_storage_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    clean_storage_env.setenv("OBS_MAX_ATTEMPTS", "1")  # refused at once: no retries to wait
    client = s3_config.get_client()
    credentials = client._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key) == ("obs-key", "obs-secret-value")
    caplog.set_level("DEBUG")
    with pytest.raises(obs_utils.ObsError) as failed:
        obs_utils.exists("obs://bucket/key.txt")
    assert "127.0.0.1:1" in str(failed.value)
    assert "obs-secret-value" not in str(failed.value) + caplog.text
    clean_storage_env.delenv("OBS_ACCESS_KEY_ID")
    clean_storage_env.delenv("OBS_SECRET_ACCESS_KEY")
    client = s3_config.get_client()
    assert client._request_signer._credentials.access_key == "aws-key"
