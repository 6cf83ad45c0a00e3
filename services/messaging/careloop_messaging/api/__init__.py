"""HTTP doors of messaging: provider webhooks."""
