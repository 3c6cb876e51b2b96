"""Dev-only tools for `make run` and the tests: the Stripe stand-in (with its clock and meters), a
faulty Stripe front, the embedded Kafka broker, a Redis server a test owns, and the process
supervisor. Never imported by production code and left out of the image (`.dockerignore`)."""
