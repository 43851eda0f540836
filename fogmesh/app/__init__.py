"""The application layer, above every other part: the ``fogmesh`` command
(``cli``, whose subcommands' options live beside their packages) and the
``fogmesh up`` demo (``up``). Nothing imports from here but ``python -m
fogmesh`` and the console script."""
