"""One signed-request path to ModelArts through Huawei's official SDK (huaweicloudsdkcore /
huaweicloudsdkmodelarts): every call is (method, path, JSON body) sent by the SDK client's
call_api, which signs it (SDK-HMAC-SHA256) and fills {project_id}. The v1 model import and
service deploy have no SDK methods, so one path serves all, and --dry-run can print exactly
what would be sent. The SDK is imported only here (its own requirements file)."""
import json
import os

CREDENTIALS = ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_PROJECT_ID")
INSTALL = "pip install -r requirements-cloud.txt"


class CloudError(RuntimeError):
    """A ModelArts call failed; the message says what to do. `transient`: a 5xx or a lost
    connection, worth another try."""

    def __init__(self, message, transient=False):
        super().__init__(message)
        self.transient = transient


def _words(status, code, message):
    """What a user can act on, for the errors users hit."""
    if status in (401, 403):
        return ("the keys were refused: check HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK (and "
                "HUAWEICLOUD_SDK_SECURITY_TOKEN for temporary keys), the project id and the "
                f"region ({code}: {message})")
    if status == 404:
        return f"not found ({code}: {message}): check the id, the project and the region"
    if "quota" in str(message).lower():
        return f"quota exceeded ({code}: {message}): stop other jobs or ask for more quota"
    return f"ModelArts answered {status} {code}: {message}"


class Client:
    """Signed JSON calls to one ModelArts endpoint; dry_run prints instead of sending."""

    def __init__(self, region="", endpoint="", dry_run=False, printer=print):
        self.dry_run, self.printer = dry_run, printer
        self.endpoint = (endpoint or os.environ.get("MODELARTS_ENDPOINT")
                         or (f"https://modelarts.{region}.myhuaweicloud.com" if region else ""))
        if not self.endpoint:
            raise CloudError("no region: pass --region=cn-north-4 (or --endpoint=URL, or set "
                             "MODELARTS_ENDPOINT)")
        self.project_id = os.environ.get("HUAWEICLOUD_SDK_PROJECT_ID", "")
        self._sdk = None if dry_run else self._build()

    def _build(self):
        missing = [name for name in CREDENTIALS if not os.environ.get(name)]
        if missing:
            raise CloudError(f"{', '.join(missing)} not set: export your access key, secret key "
                             "and project id (My Credentials in the Huawei Cloud console)")
        try:
            from huaweicloudsdkcore.auth.credentials import BasicCredentials
            from huaweicloudsdkcore.http.http_config import HttpConfig
            from huaweicloudsdkmodelarts.v1 import ModelArtsClient
        except ImportError:
            raise CloudError(f"Huawei Cloud's SDK is not installed: {INSTALL}") from None
        credentials = BasicCredentials(os.environ["HUAWEICLOUD_SDK_AK"],
                                       os.environ["HUAWEICLOUD_SDK_SK"], self.project_id)
        token = os.environ.get("HUAWEICLOUD_SDK_SECURITY_TOKEN")
        if token:
            credentials = credentials.with_security_token(token)
        config = HttpConfig.get_default_config()
        config.timeout = (10, 60)
        return (ModelArtsClient.new_builder().with_http_config(config)
                .with_credentials(credentials).with_endpoint(self.endpoint).build())

    def call(self, method, path, body=None, query=None, **path_params):
        """`path` with {project_id} and {name} placeholders -> the reply's JSON (None for an
        empty reply, or in a dry run)."""
        if self.dry_run:
            shown = path.format(project_id=self.project_id or "{project_id}", **path_params)
            line = f"{method} {self.endpoint}{shown}"
            if query:
                line += "?" + "&".join(f"{k}={v}" for k, v in query)
            self.printer(line if body is None else
                         line + "\n" + json.dumps(body, indent=2, ensure_ascii=False))
            return None
        from huaweicloudsdkcore.exceptions import exceptions
        from huaweicloudsdkcore.sdk_response import SdkResponse
        from requests import RequestException

        class RawResponse(SdkResponse):  # the reply as JSON, whatever its fields
            openapi_types, attribute_map = {}, {}

        try:
            reply = self._sdk.call_api(path, method, path_params=path_params,
                                       query_params=list(query or []), body=body,
                                       header_params={"Content-Type": "application/json"},
                                       response_type=RawResponse)
        except exceptions.ServiceResponseException as exc:
            raise CloudError(_words(exc.status_code, exc.error_code, exc.error_msg),
                             transient=exc.status_code >= 500) from None
        except (exceptions.SdkException, RequestException) as exc:
            raise CloudError(f"cannot reach ModelArts at {self.endpoint}: "
                             f"{str(exc).splitlines()[0][:200]}", transient=True) from None
        return reply.to_json_object() if reply.raw_content else None
