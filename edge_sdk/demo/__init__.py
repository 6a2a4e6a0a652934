"""``edge-sdk demo``: the shipped detector converted, run on a generated video and published over MQTT.

``run``: the demo job and its summary; ``broker``: the MQTT broker it publishes to (the one given,
else Mosquitto, else an embedded one). The converter is imported only when the demo converts.
"""
