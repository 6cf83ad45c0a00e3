"""Integrity verification of the whole log; the steps live in `usecases.verification`.

Kept so `careloop audit verify` (`careloop_cli.main`) keeps importing `verify_trail` here.
"""

from careloop_audit.usecases.verification import (
    CheckpointStatus,
    VerificationReport,
    run_verification,
    verify_trail,
)

__all__ = ["CheckpointStatus", "VerificationReport", "run_verification", "verify_trail"]
