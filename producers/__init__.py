"""The publishing side: event contracts, the Kafka publisher, traffic generators."""
