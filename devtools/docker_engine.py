"""A Docker engine and the Compose v2 plugin, found or brought up: what `make compose-test` needs.

Engine: a running one (whatever `docker info` reaches) is used as it is; else an installed
`dockerd` is started in the background with its defaults (left running for the next run, its
log in `/var/log/redis-platform-dockerd.log`); else, as root only, Debian's `docker.io` is installed
with apt and started. Compose: `docker compose` when it answers; else the v2 plugin is taken
from Debian trixie's `docker-compose` package (bookworm ships only Compose v1), unpacked with
`dpkg -x` into `$DOCKER_CONFIG/cli-plugins` (default `~/.docker/cli-plugins`). Both use the
Debian mirror apt is already configured with.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
DOCKERD_LOG: Final = Path("/var/log/redis-platform-dockerd.log")  # dockerd outlives the clone
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
COMPOSE_SUITE: Final = "trixie"  # the first Debian release with Compose v2 (`docker compose`)
ENGINE_PACKAGES: Final = ("docker.io", "debootstrap")

Log = Callable[[str], None]


class DockerSetupError(RuntimeError):
    """The engine or the compose plugin could not be found, started or installed."""


def run(
    *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command with its output captured; a failure raises with the command's stderr."""
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise DockerSetupError(f"{' '.join(args[:4])}… failed: " + " | ".join(message))
    return done


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            run(
                "docker", "info", "--format", "{{.ServerVersion}}", check=False, timeout=20
            ).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def ensure_engine(log: Log) -> str:
    """Make `docker info` answer; returns how: running, started or installed."""
    if engine_answers():
        return "running"
    how = "started"
    if shutil.which("dockerd") is None:
        if os.geteuid() != 0:
            raise DockerSetupError(
                "no Docker engine is running and none is installed; installing Debian's "
                "docker.io needs root: run as root, or start an engine and run again"
            )
        log("no dockerd: installing Debian's docker.io (apt-get)")
        apt_install(*ENGINE_PACKAGES)
        how = "installed"
    start_dockerd(log)
    return how


def apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages, env=env)


def start_dockerd(log: Log, deadline_s: float = 60) -> None:
    if os.geteuid() != 0:
        raise DockerSetupError("dockerd is installed but not running; starting it needs root")
    logfile = DOCKERD_LOG
    with logfile.open("ab") as out:
        # Its own session: it outlives this run (the next one finds it running).
        process = subprocess.Popen(
            ["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + deadline_s
    while not engine_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            raise DockerSetupError(f"dockerd did not come up; see {logfile}")
        time.sleep(0.5)
    log(f"started dockerd (pid {process.pid}, left running; log {logfile})")


def compose_answers() -> bool:
    return run("docker", "compose", "version", check=False, timeout=30).returncode == 0


def ensure_compose(log: Log) -> str:
    """Make `docker compose` (v2) answer; returns how: present or installed."""
    if compose_answers():
        return "present"
    plugins = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "cli-plugins"
    log(f"no `docker compose`: unpacking Debian {COMPOSE_SUITE}'s docker-compose into {plugins}")
    with tempfile.TemporaryDirectory(prefix="compose-plugin-") as tmp:
        deb = download_deb("docker-compose", COMPOSE_SUITE, Path(tmp))
        unpacked = Path(tmp) / "x"
        run("dpkg", "-x", str(deb), str(unpacked))
        binary = unpacked / "usr/libexec/docker/cli-plugins/docker-compose"
        plugins.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, plugins / "docker-compose")
    if not compose_answers():
        raise DockerSetupError("the docker-compose plugin was unpacked but does not answer")
    return "installed"


def download_deb(package: str, suite: str, workdir: Path) -> Path:
    """`apt-get download` from another suite, with apt state of its own (the host's apt lists
    and sources stay as they are)."""
    sources = workdir / "sources.list"
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    sources.write_text(f"deb [signed-by={keyring}] {debian_mirror()} {suite} main\n")
    for sub in ("lists/partial", "cache/archives/partial"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    options = [
        f"-oDir::Etc::SourceList={sources}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={workdir / 'lists'}",
        f"-oDir::Cache={workdir / 'cache'}",
        "-oAPT::Sandbox::User=root",
    ]
    run("apt-get", *options, "update", "-qq")
    subprocess.run(  # apt-get download writes into the working directory
        ["apt-get", *options, "download", package],
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=300,
    )
    found = sorted(workdir.glob(f"{package}_*.deb"))
    if not found:
        raise DockerSetupError(f"apt-get download {package} ({suite}) gave no .deb")
    return found[-1]


def debian_mirror() -> str:
    """The Debian archive apt uses here (deb822 or one-line sources), else deb.debian.org."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        if not path.is_file() or path.suffix not in {".list", ".sources", ""}:
            continue
        for uri in re.findall(r"(?:^URIs:|^deb)\s+(?:\[[^]]*\]\s+)?(\S+)", path.read_text(), re.M):
            if uri.rstrip("/").endswith("/debian"):
                return str(uri).rstrip("/")
    return DEFAULT_MIRROR
