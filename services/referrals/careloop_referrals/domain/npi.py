"""National Provider Identifier: ten digits, the last a Luhn check digit.

CMS computes the check digit over the first nine digits prefixed with 80840 (the ISO
7812 issuer prefix for US health applications), so a typo in a directory entry is
caught before a referral is sent to the wrong provider.
"""

from __future__ import annotations

_HEALTH_PREFIX = "80840"


class InvalidNpi(ValueError):
    """The value is not a valid NPI; the message says which rule it broke."""


def _luhn_check_digit(payload: str) -> int:
    total = 0
    # Doubling starts at the rightmost payload digit, the one beside the check digit.
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def check_digit(first_nine: str) -> int:
    """The check digit CMS would assign to an NPI starting with `first_nine`."""
    if len(first_nine) != 9 or not first_nine.isdigit():
        raise InvalidNpi("An NPI starts with nine digits before its check digit.")
    return _luhn_check_digit(_HEALTH_PREFIX + first_nine)


def validate_npi(value: str) -> str:
    """`value` with surrounding blanks removed, or `InvalidNpi` saying what is wrong."""
    npi = value.strip()
    if len(npi) != 10 or not npi.isdigit():
        raise InvalidNpi("An NPI is exactly ten digits.")
    if npi[0] not in "12":
        raise InvalidNpi("An NPI starts with 1 (a person) or 2 (an organization).")
    if int(npi[9]) != check_digit(npi[:9]):
        raise InvalidNpi("The NPI's check digit does not match: check it for a typo.")
    return npi
