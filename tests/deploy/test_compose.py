"""Static checks of docker-compose.yml (no Docker engine here, so no `docker compose config`).

The file is interpolated the way compose does it and validated against the Compose
Specification schema that check-jsonschema ships; then the checks compose would make at `up`
(dependencies, volumes) and the ones this project requires: start order, health checks,
pinned images, hardened careloop containers, published ports, and secrets that are only ever
marked local-development placeholders which production settings refuse.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from careloop_cli.registry import SERVICES
from careloop_cli.wiring import SECRET_SETTINGS
from careloop_identity.settings import IdentitySettings
from careloop_kit.settings import LOCAL_DEVELOPMENT_PLACEHOLDER, KitSettings
from careloop_messaging.settings import MessagingSettings

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CARELOOP_IMAGE = "careloop:local"

# One-shot containers that write into fresh named volumes (owned by root until then): root
# with CHOWN as the only capability, to hand the files to the careloop user.
VOLUME_SEEDERS = {"certs", "vault-init"}
TRACE_VIEWER = "jaeger"
TRACE_VIEWER_UI_PORT = 16686
ONE_SHOT_RESTART = re.compile(r"no|on-failure(:\d+)?")


# ------------------------------------------------------------------ interpolation


class UnsetVariableError(LookupError):
    """A `${VAR}` without a default whose variable is not set: compose refuses the file."""


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<bad>))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?")


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one value: `$$` is a literal `$`; `${VAR}` and `$VAR` must
    be set; `${VAR:-default}` (unset or empty), `${VAR-default}` (unset), `${VAR:?error}`,
    `${VAR?error}`, `${VAR:+alternative}`, `${VAR+alternative}`."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            name = match["named"]
            if name not in env:
                raise UnsetVariableError(name)
            return env[name]
        if match["braced"] is None:
            raise ValueError(f"invalid interpolation in {text!r}: a lone $ (write $$)")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise ValueError(f"invalid interpolation ${{{match['braced']}}} in {text!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        value = env.get(name)
        if op is None:
            if value is None:
                raise UnsetVariableError(name)
            return value
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if (value if op == ":?" else value is not None) and value is not None:
                return value
            raise UnsetVariableError(f"{name}: {arg}")
        if op == ":+":
            return arg if value else ""
        return arg if value is not None else ""

    return _REFERENCE.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value of a loaded compose document (keys are left alone, as
    compose does)."""
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate_text("${SET:-d}|${EMPTY:-d}|${UNSET:-d}", env) == "value|d|d"
    assert interpolate_text("${EMPTY-d}|${UNSET-d}", env) == "|d"
    assert interpolate_text("$SET ${SET} $$SET $${SET}", env) == "value value $SET ${SET}"
    assert interpolate_text("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    assert interpolate_text("a-b ${UNSET:-x-y:z}", env) == "a-b x-y:z"
    with pytest.raises(UnsetVariableError, match="MISSING"):
        interpolate_text("postgres://u:${MISSING}@h/db", env)
    with pytest.raises(UnsetVariableError, match="MISSING"):
        interpolate_text("$MISSING", env)
    with pytest.raises(UnsetVariableError, match="NEEDED: say so"):
        interpolate_text("${NEEDED:?say so}", env)
    with pytest.raises(ValueError, match="lone"):
        interpolate_text("test $? -ne 1", env)
    assert interpolate({"k": ["${SET}", 1, None]}, env) == {"k": ["value", 1, None]}


# ------------------------------------------------------------------ loading


def _raw() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The file as written (after YAML anchors and merge keys), before interpolation."""
    return _raw()


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as compose sees it with nothing set in the environment: every default."""
    try:
        interpolated = interpolate(raw, {})
    except UnsetVariableError as unset:
        pytest.fail(f"docker-compose.yml needs variable {unset} set: give it a default")
    assert isinstance(interpolated, dict)
    return interpolated


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def _environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) if "=" in item else [item, None] for item in env]
        return {key: value for key, value in pairs}
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: "service_started" for name in depends}
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def _is_one_shot(service: Mapping[str, Any]) -> bool:
    return bool(ONE_SHOT_RESTART.fullmatch(str(service.get("restart", "no"))))


def _careloop(services: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == CARELOOP_IMAGE}


# ------------------------------------------------------------------ schema


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = (
        importlib.resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    )
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(
        validator_class(schema).iter_errors(compose), key=lambda e: list(e.absolute_path)
    )
    messages = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    assert not messages, "\n".join(messages[:20])


def test_values_from_the_environment_take_effect(raw: dict[str, Any]) -> None:
    env = {"CARELOOP_DB_PASSWORD_PATIENTS": "from-the-environment"}
    patients = interpolate(raw, env)["services"]["patients"]
    assert "from-the-environment@" in _environment(patients)["CARELOOP_DATABASE_URL"]  # type: ignore[operator]


# ------------------------------------------------------------------ what compose checks at up


def test_dependencies_exist_and_their_conditions_hold(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
            if condition == "service_healthy":
                check = services[target].get("healthcheck")
                assert check, f"{name} waits for {target} to be healthy: it has no healthcheck"
                assert not check.get("disable"), f"{target}'s healthcheck is disabled"
            if condition == "service_completed_successfully":
                assert _is_one_shot(services[target]), (
                    f"{name} waits for {target} to complete, but {target} restarts"
                )


def test_no_dependency_cycle(services: dict[str, Any]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for target in _depends_on(services[name]):
            visit(target, (*path, name))
        done.add(name)

    for name in services:
        visit(name, ())


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":", 1)[0]
                if ":" in volume and not source.startswith((".", "/", "~")):
                    used.add(source)
            elif volume.get("type") == "volume":
                assert volume.get("source"), f"{name}: anonymous volume at {volume['target']}"
                used.add(volume["source"])
    assert used - declared == set(), f"undeclared volumes: {sorted(used - declared)}"
    assert declared - used == set(), f"declared but unused volumes: {sorted(declared - used)}"


def test_bind_mounted_files_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if isinstance(source, str) and source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# ------------------------------------------------------------------ what the project requires


def test_long_running_services_have_health_checks(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if _is_one_shot(service):
            continue
        if service.get("healthcheck"):
            assert not service["healthcheck"].get("disable")
            assert service["healthcheck"]["test"], name
            continue
        reason = service.get("x-healthcheck-absent", "")
        assert len(reason) > 40, f"{name} runs for good but has no healthcheck (or reason)"


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        if image == CARELOOP_IMAGE:
            build = service.get("build")
            assert build == {"context": ".", "dockerfile": "deploy/Dockerfile"}, name
            continue
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        # At least major.minor (PostgreSQL's exact releases have two parts, others three).
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?", tag), f"{name}: {image} is not exact"
        assert not service.get("build"), name


def test_expected_images(services: dict[str, Any]) -> None:
    images = {name: service["image"] for name, service in services.items()}
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", images["kafka"])
    assert re.fullmatch(r"postgres:17\.\d+-bookworm", images["postgres"])
    assert re.fullmatch(r"openbao/openbao:2\.\d+\.\d+", images["openbao"])
    assert re.fullmatch(
        r"otel/opentelemetry-collector-contrib:\d+\.\d+\.\d+", images["otel-collector"]
    )
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", images[TRACE_VIEWER])


def test_openbao_is_a_real_server(services: dict[str, Any]) -> None:
    openbao = services["openbao"]
    command = " ".join(openbao.get("command") or [])
    assert "server" in command
    assert "-dev" not in command
    config = (ROOT / "deploy/compose/openbao/config.hcl").read_text()
    assert re.search(r'storage\s+"(raft|file)"', config)
    assert "tls_cert_file" in config
    assert "tls_disable" not in config
    mounts = [v for v in openbao["volumes"] if isinstance(v, str)]
    assert any(v.startswith("openbao-data:") for v in mounts), "OpenBao storage is not a volume"


def test_careloop_containers_are_hardened(services: dict[str, Any]) -> None:
    careloop = _careloop(services)
    assert set(SERVICES) | VOLUME_SEEDERS | {"topics"} <= set(careloop)
    for name, service in careloop.items():
        assert service.get("read_only") is True, f"{name} must run with a read-only root"
        assert "/tmp" in service.get("tmpfs", []), f"{name} needs a tmpfs /tmp"
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        user = str(service.get("user", ""))
        assert re.fullmatch(r"\d+:\d+", user), f"{name}: user must be numeric uid:gid"
        if name in VOLUME_SEEDERS:
            assert _is_one_shot(service)
            assert service.get("cap_add") == ["CHOWN"], name
        else:
            assert user == "10001:10001", f"{name} must run as the image's user"
            assert not service.get("cap_add"), name


def test_only_the_gateway_and_the_trace_viewer_publish_ports(services: dict[str, Any]) -> None:
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert set(published) == {"gateway", TRACE_VIEWER}
    gateway_port = SERVICES["gateway"].default_port
    assert published["gateway"] == [f"127.0.0.1:{gateway_port}:{gateway_port}"]
    assert published[TRACE_VIEWER] == [f"127.0.0.1:{TRACE_VIEWER_UI_PORT}:{TRACE_VIEWER_UI_PORT}"]


def test_every_service_runs_on_its_port_after_its_initialisation(
    services: dict[str, Any],
) -> None:
    for name, entry in SERVICES.items():
        service = services[name]
        env = _environment(service)
        assert service["command"] == ["serve", name]
        assert not _is_one_shot(service)
        assert env["CARELOOP_ENVIRONMENT"] == "development"
        assert env["CARELOOP_HTTP_PORT"] == str(entry.default_port)
        assert env["CARELOOP_LOG_JSON"] == "true"
        assert env["CARELOOP_OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        token_file = env["CARELOOP_VAULT_TOKEN_FILE"]
        assert token_file == f"/vault-tokens/{name}/vault-token"
        token_mounts = [
            v for v in service["volumes"] if isinstance(v, dict) and v["source"] == "vault-tokens"
        ]
        assert token_mounts == [
            {
                "type": "volume",
                "source": "vault-tokens",
                "target": f"/vault-tokens/{name}",
                "read_only": True,
                "volume": {"subpath": name},
            }
        ], f"{name} must see its own Vault token only, read-only"
        assert service["healthcheck"]["test"] == [
            "CMD",
            "careloop",
            "probe",
            f"http://127.0.0.1:{entry.default_port}/readyz",
        ]
        depends = _depends_on(service)
        for init in ("certs", "vault-init", "topics", f"migrate-{name}"):
            assert depends.get(init) == "service_completed_successfully", f"{name} -> {init}"
        for server in ("postgres", "kafka", "openbao"):
            assert depends.get(server) == "service_healthy", f"{name} -> {server}"


def test_initialisation_commands(services: dict[str, Any]) -> None:
    assert services["topics"]["command"] == ["topics", "apply"]
    assert _depends_on(services["topics"])["kafka"] == "service_healthy"
    for name in SERVICES:
        migrate = services[f"migrate-{name}"]
        assert migrate["command"] == ["migrate", name]
        assert _is_one_shot(migrate)
        assert _depends_on(migrate)["postgres"] == "service_healthy"
        assert (
            _environment(migrate)["CARELOOP_DATABASE_URL"]
            == _environment(services[name])["CARELOOP_DATABASE_URL"]
        )
    certs = " ".join(services["certs"]["command"])
    hosts = set(re.findall(r"--host\s+(\S+)", certs))
    assert "careloop dev certs --out /certs" in certs
    assert {"kafka", "postgres", "openbao"} <= hosts
    vault_init = " ".join(services["vault-init"]["command"])
    assert "careloop vault bootstrap --token-dir /vault-tokens --unseal-state /vault-state" in (
        vault_init
    )
    assert _depends_on(services["vault-init"])["openbao"] == "service_healthy"


def test_clients_use_tls_to_the_servers(services: dict[str, Any]) -> None:
    for name in SERVICES:
        env = _environment(services[name])
        assert env["CARELOOP_VAULT_ADDR"] == "https://openbao:8200"
        assert env["CARELOOP_VAULT_CA_CERT"] == "/certs/ca.crt"
        assert env["CARELOOP_KAFKA_SECURITY_PROTOCOL"] == "SSL"
        assert env["CARELOOP_KAFKA_SSL_CAFILE"] == "/certs/ca.crt"
        assert env["PGSSLROOTCERT"] == "/certs/ca.crt"
        url = env["CARELOOP_DATABASE_URL"] or ""
        assert url.startswith(f"postgresql+asyncpg://careloop_{name}:")
        assert url.endswith(f"@postgres:5432/careloop_{name}?ssl=verify-full")
    kafka = _environment(services["kafka"])
    listeners = dict(
        item.split(":", 1)
        for item in (kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] or "").split(",")
    )
    bootstrap = _environment(services["gateway"])["CARELOOP_KAFKA_BOOTSTRAP"]
    advertised = (kafka["KAFKA_ADVERTISED_LISTENERS"] or "").split(",")
    client_listener = next(a.split("://")[0] for a in advertised if a.endswith(f"//{bootstrap}"))
    assert listeners[client_listener] == "SSL"
    # The image's start script insists on JKS files once an advertised listener reads SSL://.
    assert "SSL://" not in (kafka["KAFKA_ADVERTISED_LISTENERS"] or "")
    assert kafka["KAFKA_SSL_KEYSTORE_TYPE"] == "PEM"
    # The broker (the image's own user) reads its key through a group only it is given.
    keystore = kafka["KAFKA_SSL_KEYSTORE_LOCATION"]
    certs = " ".join(services["certs"]["command"])
    owner = re.search(rf"chown 0:(\d+) {re.escape(keystore or '')}\n", certs)
    assert owner, f"certs does not hand {keystore} to a group"
    assert services["kafka"]["group_add"] == [owner.group(1)]
    for name, service in _careloop(services).items():
        assert owner.group(1) not in str(service.get("user")), name
    postgres = " ".join(services["postgres"]["command"])
    assert "-c ssl=on" in postgres
    hba = (ROOT / "deploy/compose/postgres/pg_hba.conf").read_text()
    network_rules = [
        line.split()
        for line in hba.splitlines()
        if line.strip() and not line.startswith("#") and line.split()[0].startswith("host")
    ]
    for rule in network_rules:
        assert rule[0] == "hostssl" or rule[3] in ("127.0.0.1/32", "::1/128"), rule


def test_postgres_creates_one_database_per_service(services: dict[str, Any]) -> None:
    script = (ROOT / "deploy/compose/postgres/init-databases.sh").read_text()
    created = set(re.findall(r"^create_service_database (\w+) ", script, re.MULTILINE))
    assert created == set(SERVICES)
    postgres_env = _environment(services["postgres"])
    for name in SERVICES:
        variable = f"CARELOOP_DB_PASSWORD_{name.upper()}"
        assert f'"${variable}"' in script
        password = postgres_env[variable]
        url = _environment(services[name])["CARELOOP_DATABASE_URL"] or ""
        assert f":{password}@" in url, f"{name}'s URL does not use {variable}"


# ------------------------------------------------------------------ secrets


_DEFAULTED = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*):-(?P<default>[^}]*)\}")


def _secretive(variable: str) -> bool:
    """A secret setting, or any password, token or secret (not a URL or path naming one)."""
    if variable in SECRET_SETTINGS:
        return True
    named = re.search(r"PASSWORD|TOKEN|SECRET", variable)
    return bool(named) and not re.search(r"_(URL|PATH)$", variable)


def test_secrets_are_marked_placeholders_or_files(raw: dict[str, Any]) -> None:
    checked = 0
    for name, service in raw["services"].items():
        for variable, value in _environment(service).items():
            if not _secretive(variable):
                continue
            checked += 1
            if value is None:
                continue  # passed through from the environment; no value in the file
            if variable.endswith("_FILE"):
                assert value.startswith("/"), f"{name}: {variable} must be a path"
                continue
            references = list(_DEFAULTED.finditer(value))
            assert references, f"{name}: {variable} holds a literal value"
            for reference in references:
                assert LOCAL_DEVELOPMENT_PLACEHOLDER in reference["default"], (
                    f"{name}: {variable}'s default for ${reference['name']} lacks the marker"
                )
            # Nothing secret outside the ${...}: the rest is the URL's shape.
            rest = _DEFAULTED.sub("", value)
            assert not re.search(r"://[^:/@]+:[^@]+@", rest), f"{name}: {variable} {rest}"
    assert checked >= len(SERVICES) * 2


def test_secret_detection() -> None:
    assert _secretive("CARELOOP_DB_PASSWORD_AUDIT")
    assert _secretive("POSTGRES_PASSWORD")
    assert _secretive("CARELOOP_VAULT_TOKEN_FILE")
    assert _secretive("CARELOOP_DATABASE_URL")
    assert not _secretive("CARELOOP_IDENTITY_TOKEN_URL")
    assert not _secretive("CARELOOP_TOTP_KEY_SECRET_PATH")


def test_every_defaulted_secret_variable_is_marked() -> None:
    text = COMPOSE_FILE.read_text()
    for reference in _DEFAULTED.finditer(text):
        if _secretive(reference["name"]):
            assert LOCAL_DEVELOPMENT_PLACEHOLDER in reference["default"], reference.group(0)


# A production configuration the kit accepts, so that each refusal below comes from the one
# compose value swapped in (a service's own checks run only once the kit's pass).
_PRODUCTION_KIT = {
    "environment": "production",
    "http_tls_certfile": "/etc/careloop/tls/tls.crt",
    "http_tls_keyfile": "/etc/careloop/tls/tls.key",
    "vault_addr": "https://vault.example.org:8200",
    "vault_token": "s.production-token-from-the-vault-agent",
    "auth_jwks_url": "https://identity.example.org/.well-known/jwks.json",
    "kafka_security_protocol": "SSL",
    "database_url": "postgresql+asyncpg://u:real-password@db.example.org/careloop?ssl=verify-full",
}


def test_production_refuses_the_compose_database_urls(services: dict[str, Any]) -> None:
    KitSettings(**_PRODUCTION_KIT)  # the reference values alone are accepted
    for name in SERVICES:
        url = _environment(services[name])["CARELOOP_DATABASE_URL"]
        with pytest.raises(ValueError, match="database_url still holds the local-development"):
            KitSettings(**{**_PRODUCTION_KIT, "database_url": url})


def test_production_refuses_the_compose_bootstrap_token(services: dict[str, Any]) -> None:
    token = _environment(services["identity"])["CARELOOP_BOOTSTRAP_TOKEN"]
    IdentitySettings(**_PRODUCTION_KIT, bootstrap_token="a-real-operator-secret-value")
    with pytest.raises(ValueError, match="bootstrap_token still holds the local-development"):
        IdentitySettings(**_PRODUCTION_KIT, bootstrap_token=token)


def test_production_refuses_the_compose_twilio_token(services: dict[str, Any]) -> None:
    token = _environment(services["messaging"])["CARELOOP_TWILIO_AUTH_TOKEN"]
    with pytest.raises(ValueError, match="twilio_auth_token still holds the local-development"):
        MessagingSettings(**_PRODUCTION_KIT, twilio_auth_token=token)
