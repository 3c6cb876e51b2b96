"""Project-wide people and access: staff roles, the act-for-any-user permission, the staff audit
log, and the caller's identity over the API. Every domain app may import it; it imports none."""
