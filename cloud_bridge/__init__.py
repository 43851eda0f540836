"""The edge-to-cloud bridge (``bridge``: heavy tasks up through an on-disk outbox, ``store``;
results and commands down; sensor uplink aggregation, ``aggregate``) and the ``fogmesh
bridge`` / ``fogmesh cloud-worker`` commands (``cli``)."""
