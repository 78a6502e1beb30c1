#!/usr/bin/env python3
"""Many devices at once, with keys in files, as the silencing tests and the time-to-silence
benchmark need them: each gets temporary AWS credentials from the (local) credentials provider
and uses them against the AWS IoT API (DescribeThing on its own Thing, through the provider's
IAM gate), and holds an MQTT 3.1.1 session open on the (local) AWS IoT broker, on its own topic
things/<thing>/echo.

Usage: fleet_devices.py CONFIG.json, then one JSON command a line on stdin, one JSON answer a
line on stdout:

  {"cmd": "credentials", "things": [...]}  fetch credentials: {thing: HTTP status}
  {"cmd": "connect", "things": [...]}      open MQTT sessions: {thing: "connected" | why not}
  {"cmd": "probe", "things": [...]}        use both now: {thing: {"credentials": "ok" | error
                                           code, "mqtt": "ok" | "closed" | "timeout" | "none"}}
  {"cmd": "watch", "things": [...], "run": [argv], "seconds": S, "interval": I}
        probes every I s while running argv (the silencing command), and S s after it returned:
        per thing and mechanism, the last success and first failure, relative to its return
  {"cmd": "quit"}

CONFIG: {"region", "provider": {"connect": "127.0.0.1:PORT", "host", "ca", "alias"},
"gate": URL, "broker": {"port", "host", "ca"}, "devices": [{"thing", "cert", "key"}]}.
Secrets (the credentials) stay in this process: they are never printed.
"""

import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

ROUND_TRIP_TIMEOUT = 2.0


def tls_context(ca, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    return ctx


class Mqtt:
    """One MQTT 3.1.1 session over TLS, subscribed to things/<thing>/echo."""

    def __init__(self, thing, device, broker):
        self.thing = thing
        self.topic = f"things/{thing}/echo".encode()
        ctx = tls_context(broker["ca"], device["cert"], device["key"])
        raw = socket.create_connection(("127.0.0.1", broker["port"]), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=broker["host"])
        self.lock = threading.Lock()
        self.closed = False
        self.acked = set()
        self.received = set()
        self.next_id = 1
        client_id = thing.encode()
        # CONNECT: MQTT 3.1.1, clean session, no keep alive.
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
        self.sock.sendall(b"\x10" + self.length(len(body)) + body)
        first, body = self.read_packet()
        if first != 0x20 or body[1] != 0:
            raise ConnectionError(f"CONNACK refused: {body.hex()}")
        body = b"\x00\x01" + len(self.topic).to_bytes(2, "big") + self.topic + b"\x01"
        self.sock.sendall(b"\x82" + self.length(len(body)) + body)
        first, body = self.read_packet()
        if first != 0x90 or body[2] == 0x80:
            raise ConnectionError(f"SUBACK refused: {body.hex()}")
        self.sock.settimeout(None)

    @staticmethod
    def length(n):
        out = b""
        while True:
            b = n % 128
            n //= 128
            out += bytes([b | 0x80 if n else b])
            if not n:
                return out

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def read_packet(self):
        first = self.read_exact(1)[0]
        n, shift = 0, 0
        while True:
            b = self.read_exact(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        return first, self.read_exact(n)

    def handle(self, first, body):
        kind = first >> 4
        if kind == 4:  # PUBACK
            self.acked.add(int.from_bytes(body[:2], "big"))
        elif kind == 3:  # PUBLISH
            n = int.from_bytes(body[:2], "big")
            i = 2 + n
            if (first >> 1) & 3:
                self.sock.sendall(b"\x40\x02" + body[i : i + 2])
                i += 2
            self.received.add(body[i:])

    def round_trip(self):
        """Publishes at QoS 1 on its topic and waits for the PUBACK and the message back (one
        thread reads and writes the socket: an SSL object is not shared between threads)."""
        with self.lock:
            if self.closed:
                return "closed"
            packet_id = self.next_id
            self.next_id = self.next_id % 65535 + 1
            payload = os.urandom(8).hex().encode()
            body = len(self.topic).to_bytes(2, "big") + self.topic + packet_id.to_bytes(2, "big") + payload
            deadline = time.monotonic() + ROUND_TRIP_TIMEOUT
            try:
                self.sock.sendall(b"\x32" + self.length(len(body)) + body)
                while not (packet_id in self.acked and payload in self.received):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return "timeout"
                    if not self.sock.pending() and not select.select([self.sock], [], [], left)[0]:
                        continue
                    self.handle(*self.read_packet())
            except (EOFError, OSError, ValueError):
                self.closed = True
                return "closed"
            self.acked.discard(packet_id)
            self.received.discard(payload)
        return "ok"

    def close(self):
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
        except OSError:
            pass


class Fleet:
    def __init__(self, config):
        self.config = config
        self.devices = {d["thing"]: d for d in config["devices"]}
        self.credentials = {}
        self.clients = {}
        self.sessions = {}
        self.pool = ThreadPoolExecutor(max_workers=max(4, len(self.devices)))

    def each(self, things, work):
        things = things or list(self.devices)
        return dict(zip(things, self.pool.map(work, things)))

    def fetch(self, thing):
        p = self.config["provider"]
        d = self.devices[thing]
        host, port = p["connect"].rsplit(":", 1)
        ctx = tls_context(p["ca"], d["cert"], d["key"])
        try:
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=p["host"]) as tls:
                    tls.sendall(
                        f"GET /role-aliases/{p['alias']}/credentials HTTP/1.1\r\nHost: {p['host']}\r\n"
                        f"x-amzn-iot-thingname: {thing}\r\nConnection: close\r\n\r\n".encode()
                    )
                    data = b""
                    while chunk := tls.recv(65536):
                        data += chunk
        except (OSError, ssl.SSLError):
            return 0  # no HTTP answer: the handshake was refused
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if status == 200:
            creds = json.loads(body)["credentials"]
            self.credentials[thing] = creds
            self.clients[thing] = boto3.client(
                "iot",
                endpoint_url=self.config["gate"],
                region_name=self.config["region"],
                aws_access_key_id=creds["accessKeyId"],
                aws_secret_access_key=creds["secretAccessKey"],
                aws_session_token=creds["sessionToken"],
                config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
            )
        return status

    def connect(self, thing):
        old = self.sessions.pop(thing, None)
        if old:
            old.close()
        try:
            self.sessions[thing] = Mqtt(thing, self.devices[thing], self.config["broker"])
            return "connected"
        except (OSError, ssl.SSLError, EOFError, ConnectionError) as e:
            return f"refused: {type(e).__name__}"

    def use_credentials(self, thing):
        client = self.clients.get(thing)
        if client is None:
            return "none"
        try:
            client.describe_thing(thingName=thing)
            return "ok"
        except ClientError as e:
            return e.response["Error"]["Code"]
        except EndpointConnectionError:
            return "unreachable"

    def use_mqtt(self, thing):
        session = self.sessions.get(thing)
        return session.round_trip() if session else "none"

    def probe(self, thing):
        return {"credentials": self.use_credentials(thing), "mqtt": self.use_mqtt(thing)}

    def watch(self, things, argv, seconds, interval):
        things = things or list(self.devices)
        seen = {t: {m: {"last_ok": None, "first_fail": None} for m in ("credentials", "mqtt")} for t in things}
        stop = threading.Event()

        def watcher(thing, mechanism, use):
            while not stop.is_set():
                result = use(thing)
                at = time.time()
                entry = seen[thing][mechanism]
                if result == "ok":
                    entry["last_ok"] = at
                elif entry["first_fail"] is None:
                    entry["first_fail"] = at
                    entry["failure"] = result
                stop.wait(interval)

        threads = [
            threading.Thread(target=watcher, args=(t, m, use), daemon=True)
            for t in things
            for m, use in (("credentials", self.use_credentials), ("mqtt", self.use_mqtt))
        ]
        for t in threads:
            t.start()
        time.sleep(max(1.0, 2 * interval))
        started = time.time()
        run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        returned = time.time()
        stop.wait(seconds)
        stop.set()
        for t in threads:
            t.join(10)
        rel = lambda t: None if t is None else round(t - returned, 3)  # noqa: E731
        return {
            "exit": run.returncode,
            "stderr": run.stderr[-2000:],
            "command_seconds": round(returned - started, 3),
            "returned_at": returned,
            "watched_seconds": seconds,
            "things": {
                t: {
                    m: {"last_ok": rel(e["last_ok"]), "first_fail": rel(e["first_fail"]),
                        "failure": e.get("failure")}
                    for m, e in per.items()
                }
                for t, per in seen.items()
            },
            "expiration": {t: self.credentials[t]["expiration"] for t in things if t in self.credentials},
        }


def main():
    with open(sys.argv[1]) as f:
        fleet = Fleet(json.load(f))
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        things = cmd.get("things")
        if cmd["cmd"] == "credentials":
            answer = fleet.each(things, fleet.fetch)
        elif cmd["cmd"] == "connect":
            answer = fleet.each(things, fleet.connect)
        elif cmd["cmd"] == "probe":
            answer = fleet.each(things, fleet.probe)
        elif cmd["cmd"] == "watch":
            answer = fleet.watch(things, cmd["run"], cmd.get("seconds", 5), cmd.get("interval", 0.1))
        elif cmd["cmd"] == "quit":
            break
        else:
            answer = {"error": f"unknown command {cmd['cmd']!r}"}
        print(json.dumps(answer), flush=True)
    for session in fleet.sessions.values():
        session.close()


if __name__ == "__main__":
    main()
