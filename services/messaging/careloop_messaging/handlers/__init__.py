"""Event consumers and the delivery worker."""
