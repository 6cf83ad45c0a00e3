"""HTTP doors of the gateway: the proxy and the merged API documentation."""
