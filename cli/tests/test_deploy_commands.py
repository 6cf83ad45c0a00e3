"""The commands containers run before and beside the services: `careloop dev certs`,
`vault bootstrap`, `probe`, and settings from a secrets directory."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hvac
import pytest
from cryptography import x509
from typer.testing import CliRunner

from careloop_cli.main import app, load_settings
from careloop_cli.registry import SERVICES
from careloop_kit.infra.openbao import OpenBaoServer
from careloop_kit.infra.ports import free_port
from careloop_kit.settings import KitSettings

runner = CliRunner()


def test_dev_certs_make_a_ca_and_host_certificates_a_tls_client_accepts(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    first = runner.invoke(app, ["dev", "certs", "--out", str(out), "--host", "kafka"])
    assert first.exit_code == 0, first.output
    assert "5 file(s) created" in first.output
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    host = x509.load_pem_x509_certificate((out / "kafka.crt").read_bytes())
    assert host.issuer == ca.subject
    names = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kafka" in names.get_values_for_type(x509.DNSName)
    assert ((out / "ca.key").stat().st_mode & 0o777) == 0o600

    async def handshake() -> str:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(out / "kafka.crt", out / "kafka.key")

        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"ok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        client_context = ssl.create_default_context(cafile=out / "ca.crt")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="kafka"
        )
        data = await reader.read()
        writer.close()
        server.close()
        return data.decode()

    assert asyncio.run(handshake()) == "ok"
    # The PEM keystore file carries key, certificate and CA, as Kafka reads it.
    pem = (out / "kafka.pem").read_text()
    assert pem.count("PRIVATE KEY-----") == 2
    assert pem.count("BEGIN CERTIFICATE") == 2

    again = runner.invoke(
        app, ["dev", "certs", "--out", str(out), "--host", "kafka", "--host", "postgres"]
    )
    assert again.exit_code == 0, again.output
    assert "3 file(s) created, 5 kept" in again.output
    assert x509.load_pem_x509_certificate((out / "ca.crt").read_bytes()) == ca


def _blind_index(addr: str, root_token: str) -> str:
    read = hvac.Client(url=addr, token=root_token).secrets.kv.v2.read_secret_version(
        path="careloop/patients/blind-index", mount_point="secret", raise_on_deleted_version=True
    )
    return str(read["data"]["data"]["key"])


def test_vault_bootstrap_initialises_unseals_and_writes_a_token_per_service(
    tmp_path: Path,
) -> None:
    server = OpenBaoServer.persistent(tmp_path / "bao", port=free_port(), cluster_port=free_port())
    state, tokens = tmp_path / "state", tmp_path / "tokens"
    command = ["vault", "bootstrap", "--token-dir", str(tokens), "--unseal-state", str(state)]
    env = {"CARELOOP_VAULT_ADDR": server.addr}
    server.start(unseal=False)
    try:
        first = runner.invoke(app, command, env=env)
        assert first.exit_code == 0, first.output
        assert "initialising a new OpenBao" in first.output
        root_token = json.loads((state / "init.json").read_text())["root_token"]
        blind_index = _blind_index(server.addr, root_token)
        for name in SERVICES:
            token_file = tokens / name / "vault-token"
            assert (token_file.stat().st_mode & 0o777) == 0o600
            looked_up = hvac.Client(url=server.addr, token=token_file.read_text().strip())
            assert f"careloop-{name}" in looked_up.auth.token.lookup_self()["data"]["policies"]
        patients = hvac.Client(
            url=server.addr, token=(tokens / "patients" / "vault-token").read_text().strip()
        )
        patients.secrets.transit.generate_data_key(name="careloop-phi", key_type="plaintext")

        # A restart seals it: the next run unseals and keeps every key.
        server.stop()
        server.start(unseal=False)
        assert hvac.Client(url=server.addr).sys.is_sealed()
        second = runner.invoke(app, command, env=env)
        assert second.exit_code == 0, second.output
        assert "unsealing" in second.output
        assert _blind_index(server.addr, root_token) == blind_index
    finally:
        server.stop()


def test_vault_bootstrap_without_a_root_token_says_how_to_give_one(tmp_path: Path) -> None:
    server = OpenBaoServer.persistent(tmp_path / "bao", port=free_port(), cluster_port=free_port())
    server.start()
    try:
        result = runner.invoke(
            app,
            ["vault", "bootstrap", "--token-dir", str(tmp_path / "t")],
            env={"CARELOOP_VAULT_ADDR": server.addr, "CARELOOP_VAULT_ROOT_TOKEN": ""},
        )
        assert result.exit_code != 0
        assert "CARELOOP_VAULT_ROOT_TOKEN" in str(result.exception)
    finally:
        server.stop()


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_probe_exits_zero_only_on_200(health_server: str) -> None:
    assert runner.invoke(app, ["probe", f"{health_server}/readyz"]).exit_code == 0
    failing = runner.invoke(app, ["probe", f"{health_server}/other"])
    assert failing.exit_code == 1
    assert "HTTP 503" in failing.output
    closed = runner.invoke(app, ["probe", f"http://127.0.0.1:{free_port()}/readyz"])
    assert closed.exit_code == 1


def test_secret_settings_come_from_the_secrets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+asyncpg://careloop_audit:from-a-file@db/careloop_audit?ssl=require"
    (tmp_path / "careloop_database_url").write_text(url)
    monkeypatch.setenv("CARELOOP_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("CARELOOP_DATABASE_URL", raising=False)
    monkeypatch.setenv("CARELOOP_STATE_DIR", str(tmp_path / "no-local-stack"))
    assert load_settings("audit", KitSettings).database_url.get_secret_value() == url

    monkeypatch.setenv("CARELOOP_DATABASE_URL", "postgresql+asyncpg://env@db/x")
    assert load_settings("audit", KitSettings).database_url.get_secret_value().endswith("env@db/x")

    monkeypatch.setenv("CARELOOP_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="is not a directory"):
        load_settings("audit", KitSettings)
