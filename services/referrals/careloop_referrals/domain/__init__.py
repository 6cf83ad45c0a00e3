"""Pure referral logic: the lifecycle, NPI check digits, stage clocks, loop closure."""
