"""Edge-to-cloud bridge and cloud workers (not built yet; see README.md)."""
