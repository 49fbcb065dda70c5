"""Conversation logs -> chat samples: sources, sessions, persona selection, splits, the dataset artifact."""
