"""Local infrastructure for development and tests: real Kafka, PostgreSQL and OpenBao servers.

Nothing here runs in production; production points the services at managed Kafka,
PostgreSQL and Vault through settings. Import the submodules directly
(``careloop_kit.infra.kafka`` ...) so that importing this package stays cheap.
"""

from careloop_kit.infra.ports import free_port, free_port_pair

__all__ = ["free_port", "free_port_pair"]
