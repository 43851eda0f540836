"""Discrete-event simulation of a fog fabric, driving the agents' own placement policies."""
