"""Small objects in one signed request each: GET and PUT without botocore's client pipeline.

A tree copy of small files spends its time in the client, not on the wire: botocore's put_object
costs about 3.3 ms of CPU per 4 KB file here (endpoint rules, event hooks, the user agent, and for
a file body an `Expect: 100-continue` round trip), and the copy's threads share one GIL, so 16 or
64 threads top out near 250 files/s. Signing the same request with botocore's own SigV4 signer
and sending it on botocore's own urllib3 session costs about 1 ms (bench/obs_sync.py, the
profile in its docstring). Only whole-object GET and PUT below the multipart threshold go this
way; listing, multipart, server-side copies and SigV2 stay on the boto3 client.
"""
import re
import socket
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.endpoint import get_environ_proxies
from botocore.exceptions import ClientError
from botocore.httpsession import URLLib3Session

_DNS_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class SignedRequests:
    """Sign and send single S3 requests to one endpoint with one set of credentials.

    `credentials` is botocore's credential object (refreshable ones are frozen per request, so
    a temporary token renews as it would in the client); errors come back as the ClientError or
    connection errors the boto3 client raises, so errors.translate and is_transient apply."""

    def __init__(self, endpoint_url, region, addressing_style, credentials, verify=True,
                 connect_timeout=10.0, read_timeout=60.0, max_pool_connections=64):
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.addressing_style = addressing_style
        self.credentials = credentials
        # TCP_NODELAY, urllib3's own default that botocore's session drops: urllib3 2 sends the
        # headers and the body in two writes, and Nagle's algorithm then holds the body back
        # until the server's delayed ACK, 40 ms a request.
        self.http = URLLib3Session(verify=verify, proxies=get_environ_proxies(endpoint_url),
                                   timeout=(connect_timeout, read_timeout),
                                   max_pool_connections=max_pool_connections,
                                   socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])

    def url(self, bucket, key):
        """The object's URL: path style (endpoint/bucket/key) or virtual (bucket.endpoint/key),
        as the boto3 client builds it; 'auto' is virtual where the bucket is a DNS label."""
        quoted = quote(key, safe="/~")
        virtual = self.addressing_style == "virtual" or (
            self.addressing_style == "auto" and _DNS_LABEL.match(bucket) is not None)
        if not virtual:
            return f"{self.endpoint_url}/{bucket}/{quoted}"
        parts = urlsplit(self.endpoint_url)
        return f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}/{quoted}"

    def send(self, method, bucket, key, body=b"", operation=""):
        """One signed request; returns botocore's AWSResponse (2xx), raises ClientError else."""
        url = self.url(bucket, key)
        headers = {"Content-Length": str(len(body))} if method == "PUT" else {}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        response = self.http.send(request.prepare())
        if response.status_code >= 300:
            raise _client_error(response, operation or method)
        return response

    def put(self, bucket, key, data):
        """PutObject of `data` (bytes); returns the ETag the store gave it."""
        reply = self.send("PUT", bucket, key, data, "PutObject")
        return reply.headers.get("ETag", "").strip('"')

    def get(self, bucket, key):
        """GetObject: the whole body as bytes."""
        return self.send("GET", bucket, key, operation="GetObject").content


def _client_error(response, operation):
    """The ClientError botocore raises for the same reply: the code and message of the XML error
    body, or the bare status code when there is none (a HEAD, a proxy's page)."""
    code, message = str(response.status_code), ""
    try:
        root = ElementTree.fromstring(response.content)
        code = root.findtext("Code") or code
        message = root.findtext("Message") or ""
    except ElementTree.ParseError:
        pass
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": response.status_code,
                                             "HTTPHeaders": dict(response.headers)}}, operation)
