#!/usr/bin/env python3
"""A fault-injecting HTTP proxy in front of a moto server, for tests of the AWS commands' retries.

    proxy.py --moto-url URL --port-file F [--fail REGEX COUNT KIND]... [--throttle-above TPS]

Each request is matched as "METHOD PATH BODY" (IAM's query actions are in the body as
Action=..., AWS IoT's REST actions are the method and path). The first COUNT requests matching
a rule (COUNT "forever": every one) get the fault KIND instead of moto's answer:

- "500": InternalFailure, in the protocol of the service;
- "throttle": Throttling, in the protocol of the service;
- "lost": forwarded to moto, which acts on it, but the answer is replaced by a 500 (a reply
  lost on the way back: the client cannot know the call took effect);
- "role-not-ready": what AWS IoT answers a call naming an IAM role it cannot use yet because
  IAM has not propagated it (a role just created or updated): HTTP 400, InvalidRequestException
  in the x-amzn-ErrorType header and the JSON body's __type, and a message naming the role ARN
  the request carried (worded as AWS IoT words it when it cannot assume a role a call names,
  e.g. CreateTopicRule; the client goes by the code, not the words);
- "down": the service goes away: this request and every later one, whatever it matches, has
  its connection closed without an answer (the client finds AWS unreachable).

With --throttle-above TPS, every API (see api_name) that has had TPS requests forwarded within
the last second gets "throttle" instead, as AWS throttles an account above its quota for the API.

Everything else is forwarded to moto unchanged. Each injected fault is logged on stdout, one line.
GET /zkiot-proxy/counts answers, as JSON, how many requests each API got (faults included) and how
many of them were throttled; ?reset=1 also starts the counts again.
"""

import argparse
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}

# AWS IoT's REST APIs the tests meet, as (method, path pattern, name); a path segment in braces
# is any one segment.
IOT_APIS = [
    ("GET", "/things", "ListThings"),
    ("GET", "/things/{}", "DescribeThing"),
    ("POST", "/things/{}", "CreateThing"),
    ("PATCH", "/things/{}", "UpdateThing"),
    ("DELETE", "/things/{}", "DeleteThing"),
    ("GET", "/things/{}/principals", "ListThingPrincipals"),
    ("PUT", "/things/{}/principals", "AttachThingPrincipal"),
    ("DELETE", "/things/{}/principals", "DetachThingPrincipal"),
    ("GET", "/things/{}/thing-groups", "ListThingGroupsForThing"),
    ("GET", "/principals/things", "ListPrincipalThings"),
    ("GET", "/certificates", "ListCertificates"),
    ("GET", "/certificates/{}", "DescribeCertificate"),
    ("PUT", "/certificates/{}", "UpdateCertificate"),
    ("GET", "/certificates-by-ca/{}", "ListCertificatesByCA"),
    ("POST", "/certificate/register", "RegisterCertificate"),
    ("POST", "/certificate/register-no-ca", "RegisterCertificateWithoutCA"),
    ("GET", "/cacertificate/{}", "DescribeCACertificate"),
    ("POST", "/cacertificate", "RegisterCACertificate"),
    ("GET", "/registrationcode", "GetRegistrationCode"),
    ("PUT", "/target-policies/{}", "AttachPolicy"),
    ("POST", "/attached-policies/{}", "ListAttachedPolicies"),
    ("GET", "/policies/{}", "GetPolicy"),
    ("POST", "/policies/{}", "CreatePolicy"),
    ("GET", "/policies/{}/version", "ListPolicyVersions"),
    ("POST", "/policies/{}/version", "CreatePolicyVersion"),
    ("GET", "/role-aliases/{}", "DescribeRoleAlias"),
    ("POST", "/role-aliases/{}", "CreateRoleAlias"),
    ("PUT", "/role-aliases/{}", "UpdateRoleAlias"),
    ("GET", "/endpoint", "DescribeEndpoint"),
    ("POST", "/indices/search", "SearchIndex"),
    ("GET", "/indexing/config", "GetIndexingConfiguration"),
    ("POST", "/indexing/config", "UpdateIndexingConfiguration"),
    ("GET", "/thing-groups/{}", "DescribeThingGroup"),
    ("POST", "/thing-groups/{}", "CreateThingGroup"),
    ("GET", "/thing-groups/{}/things", "ListThingsInThingGroup"),
    ("PUT", "/thing-groups/addThingToThingGroup", "AddThingToThingGroup"),
    ("GET", "/thing-types/{}", "DescribeThingType"),
    ("POST", "/thing-types/{}", "CreateThingType"),
]


def api_name(method, path, body):
    """The API a request calls: IAM's and STS's Action=, an AWS IoT REST API by its method and
    path, else the method and the path with every second segment taken for a name."""
    if b"Action=" in body:
        action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
        return action
    segments = urllib.parse.urlsplit(path).path.strip("/").split("/")
    for api_method, pattern, name in IOT_APIS:
        wanted = pattern.strip("/").split("/")
        if api_method == method and len(wanted) == len(segments) and all(
            w == "{}" or w == s for w, s in zip(wanted, segments)
        ):
            return name
    return method + " /" + "/".join(s if i % 2 == 0 else "{}" for i, s in enumerate(segments))


def role_not_ready_message(body):
    try:
        role_arn = json.loads(body or b"{}").get("roleArn", "")
    except ValueError:
        role_arn = ""
    return (
        f"AWS IoT (credentials.iot.amazonaws.com) is unable to assume role (sts:AssumeRole) on "
        f"resource: {role_arn}.  If the role was just created or updated, please try again in a "
        f"few seconds."
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def handle_any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/zkiot-proxy/counts"):
            reset = "reset=1" in self.path
            self.reply(200, json.dumps(self.server.take_counts(reset)).encode(), {"Content-Type": "application/json"})
            return
        is_query = b"Action=" in body
        api = api_name(self.command, self.path, body)
        kind = self.server.take_fault(f"{self.command} {self.path} {body.decode(errors='replace')}", api)
        if kind == "500":
            self.internal_failure()
        elif kind == "lost":
            self.forward(body, deliver=False)
            self.internal_failure()
        elif kind == "throttle" and is_query:
            xml = b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>"
            self.reply(400, xml, {"Content-Type": "text/xml"})
        elif kind == "throttle":
            self.reply(429, b'{"message": "Rate exceeded"}', {"x-amzn-ErrorType": "ThrottlingException"})
        elif kind == "down":
            self.close_connection = True
        elif kind == "role-not-ready":
            error = "InvalidRequestException"
            data = json.dumps({"__type": error, "message": role_not_ready_message(body)}).encode()
            self.reply(
                400,
                data,
                {
                    "Content-Type": "application/json",
                    "x-amzn-ErrorType": error,
                    "x-amzn-RequestId": str(uuid.uuid4()),
                },
            )
        else:
            self.forward(body)

    def internal_failure(self):
        self.reply(500, b'{"message": "Internal failure"}', {"x-amzn-ErrorType": "InternalFailureException"})

    def forward(self, body, deliver=True):
        request = urllib.request.Request(
            self.server.moto_url + self.path, data=body if body else None, method=self.command
        )
        for name, value in self.headers.items():
            if name.lower() not in HOP_HEADERS:
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request) as answer:
                status, data, headers = answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as e:
            status, data, headers = e.code, e.read(), dict(e.headers)
        if deliver:
            self.reply(status, data, headers)

    def reply(self, status, data, headers):
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in HOP_HEADERS and name.lower() not in {"server", "date"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, moto_url, rules, throttle_above=None):
        self.moto_url = moto_url.rstrip("/")
        self.throttle_above = throttle_above
        self.recent = {}  # API -> times of the requests forwarded within the last second
        self.requests = Counter()
        self.throttled = Counter()
        self.rules = [
            [re.compile(pattern), None if count == "forever" else int(count), kind]
            for pattern, count, kind in rules
        ]
        self.lock = threading.Lock()
        self.down = False
        super().__init__(("127.0.0.1", 0), Handler)

    def take_counts(self, reset):
        with self.lock:
            counts = {"requests": dict(self.requests), "throttled": dict(self.throttled)}
            if reset:
                self.requests.clear()
                self.throttled.clear()
            return counts

    def over_rate(self, api):
        """Whether `api` already had its TPS within the last second; if not, this request counts."""
        if self.throttle_above is None:
            return False
        now = time.monotonic()
        times = self.recent.setdefault(api, deque())
        while times and now - times[0] >= 1.0:
            times.popleft()
        if len(times) >= self.throttle_above:
            return True
        times.append(now)
        return False

    def take_fault(self, request, api):
        with self.lock:
            self.requests[api] += 1
            kind = "down" if self.down else self.matching_rule(request)
            if kind is None and self.over_rate(api):
                kind = "throttle"
            if kind == "throttle":
                self.throttled[api] += 1
            self.down = kind == "down"
            if kind is not None:
                method, path = request.split(" ", 2)[:2]
                print(f"injected {kind}: {method} {path}", flush=True)
            return kind

    def matching_rule(self, request):
        for rule in self.rules:
            if (rule[1] is None or rule[1] > 0) and rule[0].search(request):
                if rule[1] is not None:
                    rule[1] -= 1
                return rule[2]
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moto-url", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--fail", nargs=3, action="append", default=[], metavar=("REGEX", "COUNT", "KIND"))
    parser.add_argument("--throttle-above", type=float, metavar="TPS")
    args = parser.parse_args()
    server = Server(args.moto_url, args.fail, args.throttle_above)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
