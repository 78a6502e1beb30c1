#!/usr/bin/env python3
"""A fault-injecting HTTP proxy in front of a moto server, for tests of the AWS commands' retries.

    proxy.py --moto-url URL --port-file F [--fail REGEX COUNT KIND]...

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

Everything else is forwarded to moto unchanged. Each injected fault is logged on stdout, one line.
"""

import argparse
import json
import os
import re
import threading
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


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
        is_query = b"Action=" in body
        kind = self.server.take_fault(f"{self.command} {self.path} {body.decode(errors='replace')}")
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

    def __init__(self, moto_url, rules):
        self.moto_url = moto_url.rstrip("/")
        self.rules = [
            [re.compile(pattern), None if count == "forever" else int(count), kind]
            for pattern, count, kind in rules
        ]
        self.lock = threading.Lock()
        self.down = False
        super().__init__(("127.0.0.1", 0), Handler)

    def take_fault(self, request):
        with self.lock:
            kind = "down" if self.down else self.matching_rule(request)
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
    args = parser.parse_args()
    server = Server(args.moto_url, args.fail)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
