"""Tables and repositories of the referrals database, one repository per aggregate."""
