"""Domain events: a transactional outbox, its catalog of types and schemas, and the relay to Kafka.

Every domain app writes its events with `services.event_record` inside the transaction that makes
the change, so an event exists exactly when the change committed. A separate process
(`manage.py events_relay`) publishes the rows to Kafka and marks them published once the broker
acknowledged them. The domain apps declare their event types in their own `events.py` (found at
start-up); this package imports none of them.
"""
