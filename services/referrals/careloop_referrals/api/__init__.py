"""HTTP routes of the referrals service (a door)."""
