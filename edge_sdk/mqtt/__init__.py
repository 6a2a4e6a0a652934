"""MQTT: the publisher, its durable outbox, topics, payloads and fleet commands.

Nothing here is imported by ``import edge_sdk``; paho-mqtt loads only when a broker is configured.
"""
