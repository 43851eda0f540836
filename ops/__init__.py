"""Running fogmesh on real boxes: ``fogmesh service install`` (systemd units,
``units`` pure and ``service_cli``) and ``fogmesh doctor`` (``doctor``, with
its ``broker_checks``, ``host_checks`` and ``report``)."""
