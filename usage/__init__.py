"""Usage: the usage ledger (each event counted once), quotas checked and counted atomically per
period, reservations, thresholds, staff adjustments, and the hand-over of closed windows of metered
usage to billing's meter reports. Builds on the other domain apps (docs/usage.md)."""
