"""Intents: the jobs a message can ask for. Look them up through intents.registry."""
