"""Contracts shared by every Switchboard service: events, wire frames, error codes, names."""
