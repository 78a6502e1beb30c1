#!/usr/bin/env python3
"""A local stand-in for AWS IoT Core's MQTT endpoint and its data plane's DeleteConnection,
backed by a moto server and Debian's mosquitto.

    mqtts://127.0.0.1:<mqtt port>                      devices (mutual TLS, MQTT 3.1.1 or 5)
    DELETE http://127.0.0.1:<data port>/connections/<clientId>?cleanSession=&preventWillMessage=

moto serves no MQTT and implements no DeleteConnection, so the tests run this. It is a TLS front
of its own in front of a real mosquitto (plain MQTT on a loopback port it starts and stops): the
front holds every device's network connection, so it can judge a connection the way AWS IoT
does and close it when told, and mosquitto does MQTT itself (sessions, subscriptions, QoS,
will messages).

What it does, and on what authority:

- Documented by AWS, done here:
  1. A device authenticates with its certificate (mutual TLS >= 1.2); it must chain to a CA
     registered and ACTIVE, and be registered and ACTIVE itself: "Devices cannot use a
     certificate that is not in the ACTIVE state to reconnect" (UpdateCertificate). Read from
     moto at every connection.
  2. The first MQTT packet is CONNECT; its client id must be allowed by iot:Connect on
     arn:aws:iot:<region>:<account>:client/<client id> by the IoT policies attached to the
     certificate, with the policy variable ${iot:Connection.Thing.ThingName} (and the condition
     key iot:Connection.Thing.IsAttached) set when a Thing of that name is attached to the
     certificate. Refused: the connection is closed.
  3. A second connection with the same client id closes the first.
  4. DeleteConnection "disconnects a connected MQTT client ... AWS IoT Core closes the client's
     network connection and optionally cleans the session state"; an unknown client id answers
     404 ResourceNotFoundException. preventWillMessage=true: mosquitto is sent a DISCONNECT
     first, so no will message goes out; otherwise the upstream connection just drops and
     mosquitto publishes the will, as AWS does.
- Inferred or simplified:
  - AWS IoT drops a connection whose certificate left ACTIVE "within a few minutes"; no bound
    is documented. --sweep-seconds N models it by checking every N s (default 0: never, which
    is what the "before" figures of scripts/bench-silence.sh need).
  - cleanSession=true is not modelled (mosquitto here keeps no state across connections:
    persistence off); the tests' devices use clean sessions.
  - Topic permissions come from mosquitto's ACL (things/<client id>/#, the project's IoT
    policy), not from evaluating iot:Publish/Subscribe/Receive.
  - The data API checks that a request is signed with Signature Version 4 for AWS IoT's data
    plane (signing name iotdata); it does not verify the signature (the operator's
    credentials are moto's "testing").
"""

import argparse
import hashlib
import json
import logging
import os
import re
import select
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "credprov"))
import server as credprov  # noqa: E402  (the same moto reader and policy evaluation)

from botocore.exceptions import ClientError  # noqa: E402

log = logging.getLogger("iotcore")


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def read_packet(sock):
    """One MQTT control packet: (first byte, the whole packet)."""
    head = read_exact(sock, 1)
    length, shift, raw = 0, 0, b""
    while True:
        b = read_exact(sock, 1)
        raw += b
        length |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            break
        shift += 7
        if shift > 21:
            raise ValueError("malformed remaining length")
    body = read_exact(sock, length)
    return head[0], head + raw + body, body


def varint(data, i):
    value, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def connect_client_id(body):
    """The client id of a CONNECT packet's body (MQTT 3.1.1 or 5)."""
    n = int.from_bytes(body[0:2], "big")
    protocol = body[2 : 2 + n]
    if protocol not in (b"MQTT", b"MQIsdp"):
        raise ValueError(f"not MQTT: {protocol!r}")
    i = 2 + n
    level = body[i]
    i += 1 + 1 + 2  # level, flags, keep alive
    if level == 5:
        props, i = varint(body, i)
        i += props
    n = int.from_bytes(body[i : i + 2], "big")
    return body[i + 2 : i + 2 + n].decode("utf-8"), level


class Connection:
    def __init__(self, client_id, cert_id, device, upstream):
        self.client_id = client_id
        self.cert_id = cert_id
        self.device = device
        self.upstream = upstream
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def close(self, prevent_will=False, reason=""):
        with self.lock:
            if self.closed.is_set():
                return
            self.closed.set()
        log.info("closing %s (certificate %s): %s", self.client_id, self.cert_id, reason)
        if prevent_will:
            try:
                self.upstream.sendall(b"\xe0\x00")  # DISCONNECT, normal: no will message
            except OSError:
                pass
        for sock in (self.device, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


class Core:
    """Connections by client id, and the checks of a new one."""

    def __init__(self, moto, region, mosquitto_port):
        self.moto = moto
        self.region = region
        self.mosquitto_port = mosquitto_port
        self.connections = {}
        self.lock = threading.Lock()

    def admit(self, peer_der, client_id):
        """None if AWS IoT would accept this connection, else why not."""
        cert_id = hashlib.sha256(peer_der).hexdigest()
        try:
            desc = self.moto.iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
        except ClientError:
            return cert_id, "certificate not registered"
        if desc.get("status") != "ACTIVE":
            return cert_id, f"certificate {desc.get('status')}"
        arn = desc["certificateArn"]
        account = arn.split(":")[4]
        things = self.moto.iot.list_principal_things(principal=arn).get("things", [])
        context = {"iot:Connection.Thing.IsAttached": "true" if client_id in things else "false",
                   "iot:ClientId": client_id}
        variables = dict(context)
        if client_id in things:
            variables["iot:Connection.Thing.ThingName"] = client_id
        documents = []
        for attached in self.moto.iot.list_attached_policies(target=arn).get("policies", []):
            policy = self.moto.iot.get_policy(policyName=attached["policyName"])
            try:
                documents.append(json.loads(policy["policyDocument"]))
            except (TypeError, ValueError):
                continue
        documents = credprov.substitute(documents, variables)
        resource = f"arn:aws:iot:{self.region}:{account}:client/{client_id}"
        try:
            decision = credprov.decide(documents, "iot:connect", resource, context)
        except credprov.Unsupported as e:
            return cert_id, f"cannot evaluate {e}"
        if decision != "allow":
            return cert_id, f"iot:Connect on {resource}: {decision}"
        return cert_id, None

    def register(self, conn):
        with self.lock:
            old = self.connections.get(conn.client_id)
            self.connections[conn.client_id] = conn
        if old is not None:
            old.close(reason="a new connection with the same client id")

    def forget(self, conn):
        with self.lock:
            if self.connections.get(conn.client_id) is conn:
                del self.connections[conn.client_id]

    def delete(self, client_id, prevent_will):
        with self.lock:
            conn = self.connections.pop(client_id, None)
        if conn is None:
            return False
        conn.close(prevent_will=prevent_will, reason="DeleteConnection")
        return True

    def sweep(self):
        """Closes the connections whose certificate is no longer ACTIVE."""
        with self.lock:
            current = list(self.connections.values())
        for conn in current:
            try:
                status = self.moto.iot.describe_certificate(certificateId=conn.cert_id)[
                    "certificateDescription"
                ]["status"]
            except ClientError:
                status = "missing"
            if status != "ACTIVE":
                self.forget(conn)
                conn.close(reason=f"certificate {status} (sweep)")


class MqttFront(credprov.ActiveCaTls, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, core, cert, key):
        self.core = core
        self.init_tls(core.moto, cert, key)
        super().__init__(address, socketserver.BaseRequestHandler)

    def finish_request(self, request, client_address):
        tls = self.handshake(request, client_address)
        if tls is None:
            return
        try:
            self.serve(tls)
        except (EOFError, OSError, ValueError) as e:
            log.info("%s: %s", client_address[0], e)
            try:
                tls.close()
            except OSError:
                pass

    def serve(self, tls):
        first, packet, body = read_packet(tls)
        if first >> 4 != 1:
            raise ValueError("the first packet is not CONNECT")
        client_id, level = connect_client_id(body)
        cert_id, refusal = self.core.admit(tls.getpeercert(binary_form=True), client_id)
        if refusal:
            log.info("refused %s (certificate %s): %s", client_id, cert_id, refusal)
            tls.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.core.mosquitto_port), timeout=10)
        upstream.settimeout(None)
        tls.settimeout(None)
        upstream.sendall(packet)
        conn = Connection(client_id, cert_id, tls, upstream)
        self.core.register(conn)
        log.info("connected %s (MQTT level %d, certificate %s)", client_id, level, cert_id)

        # One thread per connection moves bytes both ways (an SSL object must not be read
        # and written from two threads at once).
        try:
            while not conn.closed.is_set():
                readable = [tls] if tls.pending() else select.select([tls, upstream], [], [])[0]
                if tls in readable:
                    data = tls.recv(65536)
                    if not data:
                        break
                    upstream.sendall(data)
                if upstream in readable:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    tls.sendall(data)
        except (OSError, ValueError):
            pass
        self.core.forget(conn)
        conn.close(reason="closed by a peer")


class DataApi(BaseHTTPRequestHandler):
    server_version = "zkiot-iot-data-standin"
    protocol_version = "HTTP/1.1"
    PATH = re.compile(r"^/connections/([^/?]+)$")

    def log_message(self, fmt, *args):
        log.info("data %s %s", self.address_string(), fmt % args)

    def answer(self, status, body, error_type=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def do_DELETE(self):
        url = urllib.parse.urlsplit(self.path)
        match = self.PATH.match(url.path)
        if not match:
            return self.answer(404, {"message": "Not Found"}, "ResourceNotFoundException")
        auth = self.headers.get("Authorization", "")
        if not re.match(r"AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/[^/]+/iotdata/aws4_request,", auth):
            return self.answer(403, {"message": "Missing or malformed Signature Version 4 for iotdata"}, "ForbiddenException")
        client_id = urllib.parse.unquote(match.group(1))
        query = urllib.parse.parse_qs(url.query)
        prevent_will = query.get("preventWillMessage", ["false"])[0].lower() == "true"
        if not self.server.core.delete(client_id, prevent_will):
            return self.answer(404, {"message": f"No connection found for client {client_id}"}, "ResourceNotFoundException")
        self.answer(200, None)

    def do_GET(self):
        self.answer(405, {"message": "Method Not Allowed"}, "MethodNotAllowedException")

    do_POST = do_PUT = do_GET


class DataServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, core):
        self.core = core
        super().__init__(address, DataApi)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """In the child: SIGTERM when this process dies, however it dies (even SIGKILL)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_mosquitto(binary, workdir):
    """mosquitto on a free loopback port, plain MQTT, each client on things/<client id>/#."""
    acl = os.path.join(workdir, "acl")
    with open(acl, "w") as f:
        f.write("pattern readwrite things/%c/#\n")
    for _ in range(5):
        port = free_port()
        conf = os.path.join(workdir, "mosquitto.conf")
        logfile = os.path.join(workdir, "mosquitto.log")
        with open(conf, "w") as f:
            f.write(
                f"persistence false\nlog_dest file {logfile}\nlog_type all\n"
                f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
            )
            if os.geteuid() == 0:
                f.write("user root\n")
        child = subprocess.Popen([binary, "-c", conf], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=die_with_parent)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and child.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return child, port
            except OSError:
                time.sleep(0.02)
        child.kill()
        child.wait()
    raise RuntimeError("mosquitto did not start")


def write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moto-url", required=True)
    parser.add_argument("--cert", required=True, help="the broker's server certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--mqtt-port-file", required=True)
    parser.add_argument("--data-port-file", required=True)
    parser.add_argument("--log-file")
    parser.add_argument("--work-dir", help="mosquitto's configuration and log (default: a new temporary folder)")
    parser.add_argument("--mosquitto", default=os.environ.get("ZKIOT_MOSQUITTO", "/usr/sbin/mosquitto"))
    parser.add_argument("--sweep-seconds", type=float, default=0.0,
                        help="close connections whose certificate left ACTIVE every N s (0: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(filename=args.log_file, level=logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")

    workdir = args.work_dir or tempfile.mkdtemp(prefix="zkiot-iotcore-")
    os.makedirs(workdir, exist_ok=True)
    mosquitto, mosquitto_port = start_mosquitto(args.mosquitto, workdir)
    try:
        core = Core(credprov.Moto(args.moto_url, args.region), args.region, mosquitto_port)
        front = MqttFront(("127.0.0.1", 0), core, args.cert, args.key)
        data = DataServer(("127.0.0.1", 0), core)
        threading.Thread(target=data.serve_forever, daemon=True).start()
        if args.sweep_seconds > 0:
            def sweeper():
                while True:
                    time.sleep(args.sweep_seconds)
                    core.sweep()
            threading.Thread(target=sweeper, daemon=True).start()
        write_port(args.data_port_file, data.server_address[1])
        write_port(args.mqtt_port_file, front.server_address[1])
        import signal

        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=front.shutdown).start())
        front.serve_forever()
    finally:
        mosquitto.kill()
        mosquitto.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
