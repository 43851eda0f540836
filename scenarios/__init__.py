"""The scenarios ``fogmesh simulate NAME`` knows by name (TOML files shipped
with the package; installed as ``fogmesh.scenarios``)."""
