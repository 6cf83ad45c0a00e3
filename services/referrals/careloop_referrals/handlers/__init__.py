"""Event subscribers of the referrals service (a door)."""
