"""Pure messaging rules: PHI-safe templates and the outbound channel port."""
