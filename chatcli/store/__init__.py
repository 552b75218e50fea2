"""Where rooms' durable state lives: the store port and its implementations."""
