"""Dev-only tools (the Stripe stand-in): never imported by production code."""
