"""The pure parts of container kinds, run everywhere (no engine needed):
``--image-kind`` options, which cause and fix an engine's error means (the
texts are what podman 4.3 with runc and docker print), and which local
image the doctor starts a container from. The engine itself:
tests/test_containers.py."""

from __future__ import annotations

import pytest

from fogmesh.container_diagnosis import diagnose, parse_size, smallest_image
from fogmesh.containers import ImageKindSpec, parse_image_kind


def test_image_kind_options_are_read_and_bad_ones_refused() -> None:
    assert parse_image_kind("resize=localhost/resize:1,memory=256m,cpus=0.5,service") == ImageKindSpec(
        "resize", "localhost/resize:1", memory="256m", cpus="0.5", service=True)
    assert parse_image_kind("r=localhost/r:1") == ImageKindSpec("r", "localhost/r:1")
    for bad, says in (("resize=localhost/resize:1,gpu=1", "unknown option"), ("resize", "use NAME=IMAGE"),
                      ("=localhost/r:1", "use NAME=IMAGE"), ("r=localhost/r:1,memory=", "unknown option")):
        with pytest.raises(ValueError, match=says):
            parse_image_kind(bad)


ERRORS = [
    # (engine, its stderr, cause, words of the fix)
    ("podman", "Error: runc: runc create failed: unable to start container process: error during container init: "
               "error setting rlimits for ready process: error setting rlimit type 7: operation not permitted: "
               "OCI permission denied", "rlimits", "default_ulimits = []"),
    ("podman", 'Error: default OCI runtime "crun" not found: invalid argument', "runtime", 'runtime = "runc"'),
    ("docker", "docker: Error response from daemon: unknown or invalid runtime name: crun.", "runtime",
     "install runc"),
    ("podman", 'time="2026-12-07T19:48:30Z" level=warning msg="Failed to add conmon to systemd sandbox cgroup: '
               'dial unix /run/systemd/private: connect: no such file or directory"\n'
               "Error: OCI runtime error: runc: runc create failed: systemd not running on this host, cannot use "
               "systemd cgroups manager", "cgroups", 'cgroup_manager = "cgroupfs"'),
    ("podman", "Error: crun: opening file `memory.max` for writing: No such file or directory: OCI runtime "
               "attempted to invoke a command that was not found", "cgroups", "cgroup_enable=memory"),
    ("docker", "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: "
               "write /sys/fs/cgroup/docker/x/cpu.max: no such file or directory", "cgroups", "cgroups v2"),
    ("podman", 'Error: "/var/lib/containers/storage/btrfs" is not on a btrfs filesystem: prerequisites for driver '
               "not satisfied (wrong filesystem?)", "storage", "storage.conf"),
    ("podman", "Error: writing blob: adding layer with blob: no space left on device", "storage",
     "podman system df"),
    ("podman", 'time="x" level=error msg="cannot find UID/GID for user pi: no subuid ranges found for user \\"pi\\" '
               'in /etc/subuid - check rootless mode in man pages."\nError: cannot set up namespace using '
               '"/usr/bin/newuidmap": exit status 1', "permission", "usermod --add-subuids"),
    ("docker", "docker: permission denied while trying to connect to the Docker daemon socket at "
               "unix:///var/run/docker.sock", "permission", "group docker"),
    ("docker", "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon "
               "running?", "daemon", "systemctl enable --now docker"),
    ("podman", "Error: localhost/doctor-nope:1: image not known", "image", "podman pull IMAGE"),
    ("podman", 'Error: runc: runc create failed: unable to start container process: exec: "true": executable file '
               "not found in $PATH: OCI runtime attempted to invoke a command that was not found", "no-command",
     "shell"),
    ("podman", "Error: something nobody has seen", "other", "podman run --rm IMAGE true"),
]


@pytest.mark.parametrize("engine, text, cause, fix", ERRORS, ids=[f"{e[0]}-{e[2]}-{i}" for i, e in enumerate(ERRORS)])
def test_an_engines_error_is_read_into_its_cause_and_fix(engine: str, text: str, cause: str, fix: str) -> None:
    d = diagnose(engine, text)
    assert d.cause == cause, d
    assert fix in d.fix, d.fix
    assert text.strip().splitlines()[-1][:40] in d.reason, d.reason     # the engine's own words stay in it


def test_the_last_error_line_decides_and_a_warning_before_it_only_when_it_says_nothing_known() -> None:
    warned = ('time="x" level=warning msg="Using rootless single mapping into the namespace. This might break some '
              'images. Check /etc/subuid and /etc/subgid"\nError: localhost/x:1: image not known')
    assert diagnose("podman", warned).cause == "image"
    assert diagnose("podman", "").cause == "other" and "without a message" in diagnose("podman", "").reason


def test_the_doctor_starts_the_smallest_named_image_on_the_box() -> None:
    assert parse_size("241 MB") == 241e6 and parse_size("4.26MB") == 4.26e6 and parse_size("5.6 kB") == 5600
    assert parse_size("1.2GB") == 1.2e9 and parse_size("12 MiB") == 12 * 2**20 and parse_size("big") is None
    rows = [("localhost/fogmesh:latest", "639 MB"), ("127.0.0.1:5000/dsvc:<none>", "1 kB"),
            ("docker.io/library/busybox:latest", "4.26MB"), ("localhost/odd:1", "?")]
    assert smallest_image(rows) == "docker.io/library/busybox:latest"
    assert smallest_image([("<none>:<none>", "1 kB")]) is None and smallest_image([]) is None
    assert smallest_image([("localhost/odd:1", "?")]) == "localhost/odd:1"
