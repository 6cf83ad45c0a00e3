"""Pure identity logic: roles, password policy, lockout, TOTP, sessions, token shapes. No I/O."""
