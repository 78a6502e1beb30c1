#!/usr/bin/env python3
"""A local stand-in for the AWS IoT credentials provider, backed by a moto server.

    GET https://<endpoint host>/role-aliases/<alias>/credentials     (mutual TLS)

No emulator serves this endpoint, so the tests and the local end-to-end flow use this one. It
answers like AWS and makes AWS's checks, in AWS's order, against moto's state as it is at the
moment of each request (a certificate revoked a millisecond ago is refused):

 1. TLS >= 1.2, and a client certificate is required. It must chain to a CA certificate that is
    registered in moto and ACTIVE, and be within its validity; otherwise the handshake fails.
 2. SNI must equal the endpoint host, else 403 "Certificate is invalid on this endpoint".
 3. The certificate is registered (looked up by SHA-256 of its DER, AWS's certificate id) and
    ACTIVE, else 403 "Access Denied".
 4. If the request names a thing (x-amzn-iot-thingname), that thing is attached to the
    certificate, else 403 "Invalid thing name passed".
 5. An IoT policy attached to the certificate allows iot:AssumeRoleWithCertificate on the role
    alias ARN and none denies it, else 403 "Access Denied".
 6. The role alias exists, else 404 "Role alias does not exist".
 7. The role exists and trusts credentials.iot.amazonaws.com, else 400; the alias duration is at
    most the role's MaxSessionDuration, else 400.
 8. 200 {"credentials": {accessKeyId, secretAccessKey, sessionToken, expiration}} from moto's
    sts:AssumeRole, so the credentials work against moto.

Finding the registered CAs: moto implements no ListCACertificates. Its state dump
(GET /moto-api/data.json) lists every FakeCaCertificate instance moto has made; each id found
there is confirmed with DescribeCACertificate (which also gives the current status and PEM), so
a CA that was deleted or deactivated is not trusted. The trust store is rebuilt for every
handshake.

With --iot-port-file it also serves the AWS IoT API to devices (plain HTTP on 127.0.0.1), the
way AWS would judge their calls with the temporary credentials issued above: moto checks no
permission at all, so this gate does. It records, for every credential it issued, the
certificate it was issued to, the Thing named, and when it was issued and expires. A request
must carry credentials this provider issued (access key and session token), not expired, and a
valid Signature Version 4 for the service "iot"; its action (DescribeThing,
ListThingPrincipals, DescribeCertificate, UpdateThing; anything else is refused) is then judged
against the role's IAM policies as they are at that moment (inline and attached managed, read
from moto on every call), with IAM's evaluation logic: an applicable Deny wins, else an
applicable Allow, else an implicit deny. A statement applies when its action, resource and
Condition all match, the request context being:

    credentials-iot:AwsCertificateId   the certificate the credentials were issued to
    credentials-iot:ThingName          the Thing named in the credentials request, if any
    aws:TokenIssueTime, aws:CurrentTime, aws:EpochTime, aws:PrincipalArn

and the same names as ${...} variables in Resource. Condition operators evaluated: String*
(Equals, NotEquals, EqualsIgnoreCase, Like, NotLike), Arn* (Equals, Like, NotEquals, NotLike),
Bool, Null, Date* and Numeric* (Equals, NotEquals, LessThan[Equals], GreaterThan[Equals]), each
with IfExists; a missing key matches no positive operator and every negated one. Any other
operator (ForAnyValue:, ForAllValues:, ...) is refused with a 500 naming it, never guessed.
Allowed requests are forwarded to moto and moto's answer returned.

What AWS documents and what this infers: IAM evaluates a role session's permissions on every
request, and "it might take a few minutes for policy updates to take effect"; this gate applies
a change at once, so delays measured here are the least AWS can do. The credentials provider
"provides credentials-iot:AwsCertificateId as a context variable" (documented as a policy
variable); that it can key a Condition, as here, is an inference (see README, Silencing).

With --fault-file, faults are injected for tests of the client: while that file holds
{"mode": M, "count": N} with N > 0, the next credentials requests (after the handshake) each
take one off N and, instead of the checks above, get M: "500" (InternalFailureException),
"throttle" (429 ThrottlingException), "hang" (no answer for --hang-seconds, then the connection
closes) or "malformed" (200 with a body that is not the expected JSON).

Errors carry x-amzn-ErrorType and a JSON body {"message": ...}. The server's own certificate comes
from a test root that stands in for Amazon's root CA; point the client's CA bundle at that root.
"""

import argparse
import datetime
import fnmatch
import hashlib
import json
import logging
import os
import re
import signal
import socketserver
import ssl
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CREDENTIALS_PRINCIPAL = "credentials.iot.amazonaws.com"
ACTION = "iot:assumerolewithcertificate"
PATH = re.compile(r"^/role-aliases/([^/?]+)/credentials/?(\?.*)?$")

log = logging.getLogger("credprov")


class Refusal(Exception):
    """An AWS-style error answer."""

    def __init__(self, status, message, error_type):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


def access_denied():
    return Refusal(403, "Access Denied", "AccessDeniedException")


class Moto:
    """Reads moto's state: the clients are shared (boto3 clients are thread-safe)."""

    def __init__(self, url, region):
        self.url = url.rstrip("/")
        self.region = region
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=region,
        )
        config = Config(retries={"max_attempts": 2, "mode": "standard"})
        self.iot = session.client("iot", endpoint_url=self.url, config=config)
        self.iam = session.client("iam", endpoint_url=self.url, config=config)
        self.sts = session.client("sts", endpoint_url=self.url, config=config)

    def active_ca_pems(self):
        """PEMs of the CA certificates registered and ACTIVE right now."""
        with urllib.request.urlopen(self.url + "/moto-api/data.json", timeout=10) as answer:
            dump = json.load(answer)
        ids = []
        for instance in dump.get("iot", {}).get("FakeCaCertificate", []):
            cert_id = instance.get("certificate_id")
            if cert_id and cert_id not in ids:
                ids.append(cert_id)
        pems = []
        for cert_id in ids:
            try:
                desc = self.iot.describe_ca_certificate(certificateId=cert_id)[
                    "certificateDescription"
                ]
            except ClientError:
                continue  # deleted since
            if desc.get("status") == "ACTIVE" and desc.get("certificatePem"):
                pems.append(desc["certificatePem"])
        return pems


def statements(document):
    body = document.get("Statement", [])
    return body if isinstance(body, list) else [body]


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def action_matches(patterns, action):
    return any(fnmatch.fnmatchcase(action, p.lower()) for p in as_list(patterns))


def resource_matches(patterns, resource):
    return any(fnmatch.fnmatchcase(resource, p) for p in as_list(patterns))


class Unsupported(Exception):
    """A policy uses something this stand-in cannot evaluate: refused, never guessed."""


def _keyed(context):
    return {k.lower(): v for k, v in (context or {}).items()}


def _parse_date(text):
    text = str(text)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return datetime.datetime.fromtimestamp(float(text), datetime.timezone.utc)
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _compare(kind, op, actual, wanted):
    """One value test of a positive (not negated) operator."""
    if kind == "String":
        if op == "Equals":
            return actual == wanted
        if op == "EqualsIgnoreCase":
            return actual.lower() == wanted.lower()
        if op == "Like":
            return fnmatch.fnmatchcase(actual, wanted)
    elif kind == "Arn":
        if op in ("Equals", "Like"):
            return fnmatch.fnmatchcase(actual, wanted)
    elif kind in ("Date", "Numeric"):
        parse = _parse_date if kind == "Date" else float
        a, w = parse(actual), parse(wanted)
        return {
            "Equals": a == w,
            "LessThan": a < w,
            "LessThanEquals": a <= w,
            "GreaterThan": a > w,
            "GreaterThanEquals": a >= w,
        }.get(op)
    elif kind == "Bool" and op == "":
        return str(actual).lower() == str(wanted).lower()
    return None


OPERATOR = re.compile(r"^(String|Arn|Date|Numeric|Bool)(Not)?([A-Za-z]*?)(IfExists)?$")


def condition_holds(operator, block, context):
    """Whether one operator block of a Condition holds: every key in it (AND), any value (OR)."""
    keyed = _keyed(context)
    if operator in ("Null",):
        return all(
            (key.lower() not in keyed) == (str(v).lower() == "true")
            for key, values in block.items()
            for v in as_list(values)
        )
    match = OPERATOR.match(operator)
    if not match or ":" in operator:
        raise Unsupported(f"condition operator {operator}")
    kind, negated, op, if_exists = match.groups()
    for key, values in block.items():
        actual = keyed.get(key.lower())
        if actual is None:
            if if_exists or negated:
                continue
            return False
        actuals = as_list(actual)
        results = []
        for a in actuals:
            for w in as_list(values):
                r = _compare(kind, op, str(a), str(w))
                if r is None:
                    raise Unsupported(f"condition operator {operator}")
                results.append(r)
        hit = any(results)
        if hit == bool(negated):
            return False
    return True


def conditions_hold(stmt, context):
    return all(
        condition_holds(operator, block, context)
        for operator, block in (stmt.get("Condition") or {}).items()
    )


def statement_applies(stmt, action, resource, context=None):
    """Whether a policy statement covers (action, resource) in this request context."""
    if "Action" in stmt:
        if not action_matches(stmt["Action"], action):
            return False
    elif "NotAction" in stmt:
        if action_matches(stmt["NotAction"], action):
            return False
    else:
        return False
    if "Resource" in stmt:
        if not resource_matches(stmt["Resource"], resource):
            return False
    elif "NotResource" in stmt:
        if resource_matches(stmt["NotResource"], resource):
            return False
    else:
        return False
    return conditions_hold(stmt, context)


def decide(documents, action, resource, context=None):
    """IAM's evaluation: "deny" (an applicable Deny), "allow", or "implicit" (nothing allows)."""
    allowed = False
    for document in documents:
        for stmt in statements(document):
            if not statement_applies(stmt, action, resource, context):
                continue
            if stmt.get("Effect") == "Deny":
                return "deny"
            if stmt.get("Effect") == "Allow":
                allowed = True
    return "allow" if allowed else "implicit"


def policies_allow(documents, action, resource, context=None):
    return decide(documents, action, resource, context) == "allow"


def trusts_credentials_provider(trust):
    for stmt in statements(trust):
        if stmt.get("Effect") != "Allow" or "Condition" in stmt:
            continue
        services = as_list((stmt.get("Principal") or {}).get("Service"))
        if CREDENTIALS_PRINCIPAL in services and action_matches(
            stmt.get("Action"), "sts:assumerole"
        ):
            return True
    return False


class Provider:
    def __init__(self, moto, host, region):
        self.moto = moto
        self.host = host
        self.region = region
        # access key id -> what the credentials were issued for (for the IoT API gate)
        self.issued = {}
        self.issued_lock = threading.Lock()

    def credentials(self, peer_der, sni, alias, thing):
        # 2. The endpoint the client meant.
        if sni != self.host:
            raise Refusal(403, "Certificate is invalid on this endpoint", "AccessDeniedException")

        # 3. The certificate, as registered now.
        cert_id = hashlib.sha256(peer_der).hexdigest()
        try:
            desc = self.moto.iot.describe_certificate(certificateId=cert_id)[
                "certificateDescription"
            ]
        except ClientError as e:
            if e.response["Error"]["Code"] == "ResourceNotFoundException":
                raise access_denied()
            raise
        registered_der = ssl.PEM_cert_to_DER_cert(desc["certificatePem"])
        if registered_der != peer_der or desc.get("status") != "ACTIVE":
            raise access_denied()
        cert_arn = desc["certificateArn"]
        # arn:aws:iot:<region>:<account>:cert/<id>
        account = cert_arn.split(":")[4]

        # 4. The thing named in the request is this certificate's.
        if thing is not None:
            things = self.moto.iot.list_principal_things(principal=cert_arn).get("things", [])
            if thing not in things:
                raise Refusal(403, "Invalid thing name passed", "AccessDeniedException")

        # 5. The certificate's policies allow this alias (conditions on keys this request
        # does not carry hold for no Allow and no Deny).
        alias_arn = f"arn:aws:iot:{self.region}:{account}:rolealias/{alias}"
        documents = []
        for attached in self.moto.iot.list_attached_policies(target=cert_arn).get("policies", []):
            policy = self.moto.iot.get_policy(policyName=attached["policyName"])
            try:
                documents.append(json.loads(policy["policyDocument"]))
            except (TypeError, ValueError):
                continue  # AWS refuses such documents; they grant nothing
        if not policies_allow(documents, ACTION, alias_arn):
            raise access_denied()

        # 6. The alias.
        try:
            alias_desc = self.moto.iot.describe_role_alias(roleAlias=alias)["roleAliasDescription"]
        except ClientError as e:
            if e.response["Error"]["Code"] == "ResourceNotFoundException":
                raise Refusal(404, "Role alias does not exist", "ResourceNotFoundException")
            raise
        role_arn = alias_desc["roleArn"]
        duration = int(alias_desc.get("credentialDurationSeconds") or 3600)

        # 7. The role behind it.
        unable = Refusal(
            400,
            "Unable to assume the role, or the role to assume does not exist",
            "InvalidRequestException",
        )
        role_name = role_arn.split(":role/", 1)[-1].split("/")[-1]
        try:
            role = self.moto.iam.get_role(RoleName=role_name)["Role"]
        except ClientError:
            raise unable
        if role.get("Arn") != role_arn:
            raise unable
        trust = role.get("AssumeRolePolicyDocument") or {}
        if isinstance(trust, str):
            try:
                trust = json.loads(urllib.parse.unquote(trust))
            except ValueError:
                raise unable
        if not trusts_credentials_provider(trust):
            raise unable
        if duration > int(role.get("MaxSessionDuration") or 3600):
            raise Refusal(
                400,
                "The requested CredentialDurationSeconds exceeds the MaxSessionDuration set for the role",
                "InvalidRequestException",
            )

        # 8. Credentials from moto's STS.
        assumed = self.moto.sts.assume_role(
            RoleArn=role_arn, RoleSessionName=cert_id[:64], DurationSeconds=duration
        )["Credentials"]
        issued_at = datetime.datetime.now(datetime.timezone.utc)
        expiration = issued_at + datetime.timedelta(seconds=duration)
        with self.issued_lock:
            self.issued[assumed["AccessKeyId"]] = {
                "secret": assumed["SecretAccessKey"],
                "token": assumed["SessionToken"],
                "role_name": role_name,
                "account": account,
                "thing": thing,
                "cert_id": cert_id,
                "issued_at": issued_at,
                "expiration": expiration,
            }
        log.info("issued credentials %s… to certificate %s (thing %s) until %s",
                 assumed["AccessKeyId"][:8], cert_id, thing, expiration.isoformat())
        return {
            "credentials": {
                "accessKeyId": assumed["AccessKeyId"],
                "secretAccessKey": assumed["SecretAccessKey"],
                "sessionToken": assumed["SessionToken"],
                "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        }


class Handler(BaseHTTPRequestHandler):
    server_version = "zkiot-credentials-provider"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)

    def answer(self, status, body, error_type=None):
        self.send_json(status, json.dumps(body).encode(), error_type)

    def send_json(self, status, data, error_type=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        match = PATH.match(self.path)
        if not match:
            self.answer(404, {"message": "Not Found"}, "ResourceNotFoundException")
            return
        if self.inject_fault():
            return
        alias = urllib.parse.unquote(match.group(1))
        thing = self.headers.get("x-amzn-iot-thingname")
        peer_der = self.connection.getpeercert(binary_form=True)
        sni = getattr(self.connection, "zkiot_sni", None)
        try:
            body = self.server.provider.credentials(peer_der, sni, alias, thing)
        except Refusal as r:
            log.info("refused %s: %s %s", alias, r.status, r.message)
            self.answer(r.status, {"message": r.message}, r.error_type)
            return
        except Exception as e:  # moto unreachable, unexpected answers
            log.exception("internal error")
            self.answer(500, {"message": f"Internal error: {e}"}, "InternalFailureException")
            return
        self.answer(200, body)

    def inject_fault(self):
        """Answers with the next injected fault, if one is due (see --fault-file)."""
        mode = self.server.take_fault()
        if mode is None:
            return False
        log.info("injected fault: %s", mode)
        if mode == "500":
            self.answer(500, {"message": "Internal failure"}, "InternalFailureException")
        elif mode == "throttle":
            self.answer(429, {"message": "Rate exceeded"}, "ThrottlingException")
        elif mode == "hang":
            self.server.stopping.wait(self.server.hang_seconds)
            self.close_connection = True
        elif mode == "malformed":
            self.send_json(200, b'{"credentials": {"accessKeyId": "ASIA')
        else:
            raise ValueError(f"unknown fault mode {mode!r}")
        return True

    def do_POST(self):
        self.answer(405, {"message": "Method Not Allowed"}, "MethodNotAllowedException")

    do_PUT = do_DELETE = do_POST


class ActiveCaTls:
    """The server side of mutual TLS as AWS IoT's endpoints do it: at each handshake (SNI or
    not) the client certificate must chain to a CA registered and ACTIVE in moto at that
    moment. The SNI is kept on the connection as `zkiot_sni`. Call `init_tls` first."""

    def init_tls(self, moto, cert, key):
        self.tls_moto = moto
        self.cert = cert
        self.key = key
        self.base_context = self.make_context([])
        self.base_context.sni_callback = self.on_client_hello

    def make_context(self, ca_pems):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(self.cert, self.key)
        if ca_pems:
            ctx.load_verify_locations(cadata="\n".join(ca_pems))
        return ctx

    def on_client_hello(self, sslobj, server_name, _ctx):
        sslobj.zkiot_sni = server_name
        try:
            sslobj.context = self.make_context(self.tls_moto.active_ca_pems())
        except Exception:
            log.exception("cannot read the registered CAs from moto")
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def handshake(self, request, client_address):
        """The TLS connection, or None (logged) when the handshake is refused."""
        request.settimeout(30)
        try:
            return self.base_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.info("%s: handshake refused: %s", client_address[0], e)
            return None


class Server(ActiveCaTls, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, provider, cert, key, fault_file=None, hang_seconds=5.0):
        self.provider = provider
        self.fault_file = fault_file
        self.hang_seconds = hang_seconds
        self.fault_lock = threading.Lock()
        self.stopping = threading.Event()
        self.init_tls(provider.moto, cert, key)
        super().__init__(address, Handler)

    def take_fault(self):
        """The mode of the next injected fault, counted off the fault file, or None."""
        if not self.fault_file:
            return None
        with self.fault_lock:
            try:
                with open(self.fault_file) as f:
                    fault = json.load(f)
            except FileNotFoundError:
                return None
            if fault.get("count", 0) <= 0:
                return None
            fault["count"] -= 1
            tmp = self.fault_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(fault, f)
            os.replace(tmp, self.fault_file)
            return fault["mode"]

    def finish_request(self, request, client_address):
        # Handshake here, in the connection's own thread, so a slow client blocks no one.
        tls = self.handshake(request, client_address)
        if tls is None:
            return
        try:
            Handler(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


IOT_ROUTES = [
    ("GET", re.compile(r"^/things/([^/?]+)$"), "iot:DescribeThing", "thing"),
    ("GET", re.compile(r"^/things/([^/?]+)/principals$"), "iot:ListThingPrincipals", "thing"),
    ("GET", re.compile(r"^/certificates/([^/?]+)$"), "iot:DescribeCertificate", "cert"),
    ("PATCH", re.compile(r"^/things/([^/?]+)$"), "iot:UpdateThing", "thing"),
]


def role_policy_documents(iam, role_name):
    """The role's inline and attached managed policy documents."""
    documents = []
    for name in iam.list_role_policies(RoleName=role_name).get("PolicyNames", []):
        doc = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        documents.append(json.loads(urllib.parse.unquote(doc)) if isinstance(doc, str) else doc)
    for attached in iam.list_attached_role_policies(RoleName=role_name).get("AttachedPolicies", []):
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = iam.get_policy_version(
            PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]["Document"]
        documents.append(
            json.loads(urllib.parse.unquote(version)) if isinstance(version, str) else version
        )
    return documents


def substitute(documents, variables):
    """Policy documents with ${credentials-iot:...} replaced; a statement naming a variable
    that has no value is dropped (it cannot match)."""
    out = []
    for document in documents:
        kept = []
        for stmt in statements(document):
            text = json.dumps(stmt)
            missing = False
            for name in re.findall(r"\$\{([^}]+)\}", text):
                value = variables.get(name)
                if value is None:
                    missing = True
                    break
                text = text.replace("${" + name + "}", value)
            if not missing:
                kept.append(json.loads(text))
        out.append({"Statement": kept})
    return out


class IotGate(BaseHTTPRequestHandler):
    server_version = "zkiot-iot-api-gate"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.info("iot %s %s", self.address_string(), fmt % args)

    answer = Handler.answer
    send_json = Handler.send_json

    def handle_call(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        provider = self.server.provider
        auth = self.headers.get("Authorization", "")
        match = re.match(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
            r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$",
            auth,
        )
        if not match:
            return self.answer(403, {"message": "Missing or malformed Authorization"}, "AccessDeniedException")
        key_id, _date, region, service, signed, signature = match.groups()
        with provider.issued_lock:
            issued = provider.issued.get(key_id)
        invalid = {"message": "The security token included in the request is invalid."}
        if issued is None or self.headers.get("X-Amz-Security-Token") != issued["token"]:
            return self.answer(403, invalid, "UnrecognizedClientException")
        now = datetime.datetime.now(datetime.timezone.utc)
        if now >= issued["expiration"]:
            return self.answer(403, {"message": "The security token included in the request is expired"}, "ExpiredTokenException")
        if service != "iot" or region != provider.region:
            return self.answer(403, {"message": "Credential should be scoped to a valid region and service iot"}, "InvalidSignatureException")
        # Recompute the signature the way AWS does (botocore's SigV4 implementation).
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        headers = {name: self.headers.get(name, "") for name in signed.split(";")}
        request = AWSRequest(
            method=self.command,
            url=f"http://{self.headers.get('Host')}{self.path}",
            data=body,
            headers=headers,
        )
        request.context["timestamp"] = self.headers.get("X-Amz-Date", "")
        signer = SigV4Auth(Credentials(key_id, issued["secret"], issued["token"]), "iot", region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != signature:
            return self.answer(403, {"message": "The request signature we calculated does not match the signature you provided."}, "InvalidSignatureException")

        path = urllib.parse.urlsplit(self.path).path
        for method, pattern, action, kind in IOT_ROUTES:
            route = pattern.match(path)
            if method == self.command and route:
                break
        else:
            return self.answer(403, {"message": f"{self.command} {path} is not served to devices here"}, "AccessDeniedException")
        name = urllib.parse.unquote(route.group(1))
        resource = f"arn:aws:iot:{provider.region}:{issued['account']}:{kind}/{name}"
        session = f"arn:aws:sts::{issued['account']}:assumed-role/{issued['role_name']}/{issued['cert_id'][:64]}"
        variables = {
            "credentials-iot:AwsCertificateId": issued["cert_id"],
            "aws:TokenIssueTime": issued["issued_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:CurrentTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:EpochTime": str(int(now.timestamp())),
            "aws:PrincipalArn": f"arn:aws:iam::{issued['account']}:role/{issued['role_name']}",
        }
        if issued["thing"] is not None:
            variables["credentials-iot:ThingName"] = issued["thing"]
        try:
            documents = substitute(role_policy_documents(provider.moto.iam, issued["role_name"]), variables)
            decision = decide(documents, action.lower(), resource, variables)
        except Unsupported as e:
            return self.answer(500, {"message": f"the test stand-in cannot evaluate {e}"}, "InternalFailureException")
        if decision != "allow":
            why = " with an explicit deny in an identity-based policy" if decision == "deny" else ""
            log.info("iot gate: %s on %s by certificate %s: %s", action, resource, issued["cert_id"], decision)
            return self.answer(
                403,
                {"message": f"User: {session} is not authorized to perform: {action} on resource: {resource}{why}"},
                "AccessDeniedException",
            )
        forward = urllib.request.Request(
            provider.moto.url + self.path, data=body if body else None, method=self.command,
            headers={"Content-Type": "application/json", "Authorization": auth},
        )
        try:
            with urllib.request.urlopen(forward, timeout=30) as reply:
                status, data = reply.status, reply.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        self.send_json(status, data)

    def do_GET(self):
        self.handle_call()

    do_PATCH = do_POST = do_PUT = do_DELETE = do_GET


class GateServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, provider):
        self.provider = provider
        super().__init__(address, IotGate)


def write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moto-url", required=True, help="moto server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--host", required=True, help="the endpoint host name (expected SNI)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--cert", required=True, help="server certificate (PEM) for --host")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--log-file", help="log requests here (default: stderr)")
    parser.add_argument(
        "--iot-port-file",
        help="also serve the AWS IoT API to devices (plain HTTP, --bind, a free port) and write its port here",
    )
    parser.add_argument("--fault-file", help="inject the faults this file asks for (see above)")
    parser.add_argument(
        "--hang-seconds", type=float, default=5.0, help='how long a "hang" fault holds a request'
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    provider = Provider(Moto(args.moto_url, args.region), args.host, args.region)
    server = Server(
        (args.bind, args.port), provider, args.cert, args.key, args.fault_file, args.hang_seconds
    )
    port = server.server_address[1]
    if args.iot_port_file:
        gate = GateServer((args.bind, 0), provider)
        threading.Thread(target=gate.serve_forever, daemon=True).start()
        write_port(args.iot_port_file, gate.server_address[1])
    if args.port_file:
        write_port(args.port_file, port)
    print(f"credentials provider for {args.host} on https://{args.bind}:{port}", flush=True)
    def stop(*_):
        server.stopping.set()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
