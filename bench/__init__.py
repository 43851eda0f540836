"""Benchmarks behind ``fogmesh bench``: each module has ``run(args)``, which
measures and returns a report (what ``--json`` prints), and ``render(report)``,
the table; ``fogmesh bench`` (:mod:`fogmesh.bench.cli`) calls the two. Targets
print as "met" / "not met", never as a test that fails."""


def targets_line(targets: dict[str, bool]) -> str:
    return "targets: " + ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in targets.items())
