"""Pure logic of the audit log: canonical records, hashes, Merkle roots, verification."""
