"""The image's entrypoint, run the way the image runs it, without a container engine.

The test reads the Dockerfile's final stage (ENTRYPOINT, CMD, ENV, USER, WORKDIR), so it breaks
when the Dockerfile changes in a way the image's assumptions no longer hold, and runs that
command from the project's virtualenv as the image's user (uid 10001, through setpriv) with:

- the working directory read-only (root-owned, 0555), as /app is in the image;
- HOME an existing directory the user cannot write (the image's HOME does not exist);
- only the data volume (ROLLOUT_DATA_DIR) and /tmp (TMPDIR, XDG_CACHE_HOME) writable, as
  the chart mounts them on a read-only root filesystem.

It waits for GET /readyz on ROLLOUT_METRICS_PORT, checks that every file the worker wrote is
under the data volume or /tmp (files owned by uid 10001 anywhere it could write), then stops
it with SIGTERM and checks it exits cleanly. Runs as root (to switch user); elsewhere it skips,
and under CI=true it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from tests.conftest import in_ci

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_UID = 10001
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
#: directories any user may write on this machine: where a stray write of the worker would land
WORLD_WRITABLE = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


# ---- the Dockerfile ----------------------------------------------------------------------------


@dataclass
class ImageConfig:
    """What the final stage of the Dockerfile says about how the image runs."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    volumes: list[str] = field(default_factory=list)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, arguments = logical.partition(" ")
        yield keyword.upper(), arguments.strip()
        logical = ""


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not the exec form: {arguments}"
    return [str(part) for part in parsed]


def parse_image(text: str) -> ImageConfig:
    config = ImageConfig()
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            config = ImageConfig()  # the final stage is what runs
        elif keyword == "ENV":
            for pair in shlex.split(arguments):
                name, sep, value = pair.partition("=")
                assert sep, f"ENV {pair}: use the NAME=value form"
                config.env[name] = value
        elif keyword == "USER":
            config.user = arguments
        elif keyword == "WORKDIR":
            config.workdir = str(Path(config.workdir, arguments))
        elif keyword == "ENTRYPOINT":
            config.entrypoint = exec_form(arguments)
        elif keyword == "CMD":
            config.cmd = exec_form(arguments)
        elif keyword == "VOLUME":
            config.volumes = exec_form(arguments)
    return config


def test_the_image_runs_the_worker_as_uid_10001_with_its_data_on_the_volume() -> None:
    image = parse_image(DOCKERFILE.read_text())
    assert ["rollout"] == image.entrypoint
    assert ["worker"] == image.cmd
    assert f"{IMAGE_UID}" == image.user.split(":")[0]
    assert [image.env["ROLLOUT_DATA_DIR"]] == image.volumes
    assert "1" == image.env["PYTHONDONTWRITEBYTECODE"]


# ---- running it --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def translate(value: str, paths: dict[str, Path]) -> str:
    """An image path in an ENV value, as the directory standing in for it here."""
    for image_path, here in sorted(paths.items(), key=lambda item: -len(item[0])):
        if value == image_path or value.startswith(image_path.rstrip("/") + "/"):
            return str(here) + value[len(image_path.rstrip("/")) :]
    return value


def owned_by(uid: int, roots: tuple[Path, ...], skip: Path) -> set[Path]:
    """Every file and folder under `roots` owned by `uid`, except under `skip`."""
    found = set()
    for root in roots:
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root, onerror=lambda _: None):
            here = Path(folder)
            if here == skip or skip in here.parents:
                dirs[:] = []
                continue
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    if (here / name).lstat().st_uid == uid:
                        found.add(here / name)
    return found


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the worker exited ({proc.returncode}):\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"not ready in {READY_TIMEOUT_S:g} s ({last}):\n{log.read_text()}")


def delete_topics(admin: KafkaAdminClient, prefixes: tuple[str, ...]) -> None:
    with contextlib.suppress(KafkaError):
        mine = [t for t in admin.list_topics() if t.startswith(prefixes)]
        if mine:
            admin.delete_topics(mine)


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A folder the image's user can reach (pytest's tmp_path is under a root-only 0700
    folder), removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="rollout-image-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_entrypoint_runs_unprivileged_on_a_read_only_root(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, image_root: Path
) -> None:
    if os.geteuid() != 0:
        reason = "switching to the image's uid 10001 needs root"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
        pytest.skip(reason)
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to run as uid 10001"
    image = parse_image(DOCKERFILE.read_text())
    uid, _, gid = image.user.partition(":")
    as_user = [setpriv, f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups"]

    # The project must be readable by the image's user from where it is installed. (Here the
    # venv's interpreter lives under root's 0700 home: as uid 10001 the loader cannot reach
    # its libpython and takes the system's Python 3.11 library instead, with the venv's
    # packages: the same minor version as the image's.) Where even the project cannot be
    # read, nothing is copied: the worker runs as this user with the read-only working
    # directory, and stray writes are looked for in the working directory and HOME only.
    probe = subprocess.run(
        [*as_user, sys.executable, "-c", "import controller.cli"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        warnings.warn(
            f"uid {uid} cannot import the project from {ROOT} ({probe.stderr.strip()[-200:]}): "
            f"the worker runs as uid {os.geteuid()}, with a weaker check",
            stacklevel=1,
        )
        as_user = []

    # the image's filesystem, here: read-only except the volume and /tmp
    cwd, home, data, tmp = (image_root / name for name in ("app", "home", "data", "tmp"))
    for folder in (cwd, home):
        folder.mkdir()
        folder.chmod(0o555)  # root's, and nobody may write it
    for folder in (data, tmp):
        folder.mkdir()
        os.chown(folder, int(uid), int(gid or uid))
        folder.chmod(0o700)
    paths = {
        image.env["ROLLOUT_DATA_DIR"]: data,
        "/tmp": tmp,
        image.env["HOME"]: home,
        image.workdir: cwd,
    }
    suffix = uuid.uuid4().hex[:10]
    prefix = f"test.image.{suffix}."
    group = f"test-image-{suffix}"
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        **{name: translate(value, paths) for name, value in image.env.items()},
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ROLLOUT_TOPIC_PREFIX": prefix,
        "ROLLOUT_CONSUMER_GROUP": group,
        "ROLLOUT_TOPIC_PARTITIONS": "1",
        "ROLLOUT_METRICS_PORT": str(port),
        "ROLLOUT_METRICS_HOST": "127.0.0.1",
        # the label join writes its RocksDB store on the volume too
        "ROLLOUT_LABEL_JOIN": "true",
    }
    entrypoint = shutil.which(image.entrypoint[0], path=env["PATH"])
    assert entrypoint is not None, f"{image.entrypoint[0]} is not installed in the venv"

    before = owned_by(int(uid), WORLD_WRITABLE, skip=image_root)
    log = image_root / "worker.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*as_user, entrypoint, *image.entrypoint[1:], *image.cmd],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(port, proc, log)
            if as_user:
                written = owned_by(int(uid), WORLD_WRITABLE, skip=image_root) - before
                assert set() == written, f"written outside the volume and /tmp: {sorted(written)}"
            assert set() == listing(cwd) | listing(home)
            assert {f"{group}-data", f"{group}-join"} <= listing(data)

            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        output = log.read_text(errors="replace")
        assert 0 == returncode, output
        assert "Traceback" not in output, output
    finally:
        delete_topics(kafka_admin, (prefix, group))
