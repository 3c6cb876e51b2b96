"""The staff console's pages that span the domain apps: the customer page and the global search.

The one place allowed to read every domain app at once (billing, subscriptions, entitlements,
usage): nothing imports it but the admin site, so imports stay one-way."""
