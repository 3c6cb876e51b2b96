"""dj-stripe's app under the name staff see: its tables are a read-only mirror of Stripe."""

from djstripe.apps import DjstripeAppConfig


class StripeMirrorConfig(DjstripeAppConfig):
    # Same name and label as dj-stripe (its tables and migrations keep theirs); only the heading
    # of its group in the admin changes, so it is not mistaken for our own billing tables.
    verbose_name = "Stripe mirror"
