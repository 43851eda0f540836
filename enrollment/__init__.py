"""The fleet: boxes join with a one-time token and are revoked in one command
(``fogmesh fleet enroll|serve|revoke|list``, ``fogmesh join``; topics.md, "Fleet")."""
