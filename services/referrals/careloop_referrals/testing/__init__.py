"""Doubles of the outside systems referrals delivers to, for tests."""
