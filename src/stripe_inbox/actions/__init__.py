"""What the inbox does in the outside world: notification channels, ticket trackers, and the outbox that
delivers both with retries."""
