"""The base images the stack needs, pulled, or built locally when no registry answers.

Needed: every `image:` of a docker-compose.yml service without a `build:`, and every `FROM` of
the services' Dockerfiles. An image already present is used as it is (so a second run skips
all of this: the cache is the image's tag). Else `docker pull`; when that fails (no registry
reachable, as on the project's machines) a stand-in is built under the same tag from Debian
bookworm's packages: `debootstrap --variant=minbase` with the mirror apt is configured with,
imported as `redis-platform/debian:bookworm`, then `devtools/images/<name>/Dockerfile` adds
the package and the entrypoint behaviour the compose file relies on. The host's extra CA
certificates (`/usr/local/share/ca-certificates`) go into the base, so HTTPS from a build
(pip, uv) trusts what the host trusts (an egress proxy's CA, say).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import yaml

from devtools.docker_engine import ROOT, DockerSetupError, Log, apt_install, debian_mirror, run

BASE: Final = "redis-platform/debian:bookworm"
IMAGES_DIR: Final = ROOT / "devtools" / "images"
# image the stack names → folder of devtools/images holding its stand-in
STAND_INS: Final = {
    "python:3.11-slim": "python",
    "redis:7-alpine": "redis",
    "postgres:15-alpine": "postgres",
    "nginx:1.27-alpine": "nginx",
}
EXTRA_CA_DIR: Final = Path("/usr/local/share/ca-certificates")
_FROM = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)", re.MULTILINE | re.IGNORECASE)


def required_images(compose_file: Path = ROOT / "docker-compose.yml") -> list[str]:
    services = yaml.safe_load(compose_file.read_text())["services"]
    built = {s.get("image") for s in services.values() if "build" in s}
    images = {s["image"] for s in services.values() if "image" in s and "build" not in s} - built
    for service in services.values():
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            text = dockerfile.read_text()
            stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
            images |= {name for name in _FROM.findall(text) if name not in stages}
    return sorted(images)


def present(image: str) -> bool:
    return run("docker", "image", "inspect", image, check=False, timeout=30).returncode == 0


def ensure_images(images: list[str], log: Log) -> dict[str, str]:
    """Every image present, pulled or built; returns how each one came."""
    how: dict[str, str] = {}
    missing = []
    for image in images:
        if present(image):
            how[image] = "present"
        elif run("docker", "pull", "-q", image, check=False, timeout=300).returncode == 0:
            how[image] = "pulled"
        elif image in STAND_INS:
            missing.append(image)
        else:
            raise DockerSetupError(f"{image}: not present, no registry answers, no stand-in")
    if missing:
        log(f"no registry answers: building stand-ins for {', '.join(missing)}")
        if not present(BASE):
            build_base(log)
        # Each build is mostly apt downloads: a few at once (bounded; the machine has 2 cores).
        with ThreadPoolExecutor(max_workers=4) as pool:
            for image in pool.map(build_stand_in, missing):
                how[image] = "stand-in built"
    return how


def build_stand_in(image: str) -> str:
    folder = IMAGES_DIR / STAND_INS[image]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx plugin needed
    run("docker", "build", "-q", "-t", image, str(folder), env=env, timeout=900)
    return image


def build_base(log: Log) -> None:
    """debootstrap a minimal bookworm, with this host's CA certificates, into `BASE`."""
    if os.geteuid() != 0:
        raise DockerSetupError("building base images needs root (debootstrap, chroot)")
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    mirror = debian_mirror()
    log(f"debootstrap --variant=minbase bookworm from {mirror}")
    rootfs = Path(tempfile.mkdtemp(prefix="rp-rootfs-", dir="/var/tmp"))
    try:
        run(
            "debootstrap", "--variant=minbase", "--include=ca-certificates",
            "bookworm", str(rootfs), mirror, timeout=900,
        )  # fmt: skip
        _configure_rootfs(rootfs, mirror)
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(
                ["docker", "import", "-c", "ENV LANG=C.UTF-8", "-c", 'CMD ["bash"]', "-", BASE],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        if imported.returncode != 0 or tar.returncode != 0:
            raise DockerSetupError(f"docker import {BASE} failed: {imported.stderr.strip()}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _configure_rootfs(rootfs: Path, mirror: str) -> None:
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n"
    )
    # The mirror may be a frozen snapshot whose Release files are past their Valid-Until.
    (rootfs / "etc/apt/apt.conf.d/90redis-platform").write_text(
        'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
    )
    policy = rootfs / "usr/sbin/policy-rc.d"  # no service starts inside an image build
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    if EXTRA_CA_DIR.is_dir():
        target = rootfs / "usr/local/share/ca-certificates"
        for cert in EXTRA_CA_DIR.rglob("*.crt"):
            shutil.copy2(cert, target / cert.name)
    run("chroot", str(rootfs), "update-ca-certificates")
