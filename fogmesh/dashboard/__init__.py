"""``fogmesh dashboard``: the fleet in a browser. ``model`` turns broker
messages into what the page shows (pure), ``server`` subscribes and serves the
page and its event stream, ``cli`` is the subcommand; ``static/`` is the page
itself (plain HTML, CSS and JavaScript, shipped in the package)."""
