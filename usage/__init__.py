"""Usage: consumption tracking, quotas and metered billing (to come). Builds on the other domain apps."""
