"""The container image: the Dockerfile lints clean (hadolint), builds with podman, and
its binaries run against the emulator.

No registry is reachable here, so the test makes the runtime base itself (the glibc
libraries the binaries link, CA certificates, the user nonroot, 65532, as distroless
`cc` has them) and packages the binaries the test build made (`BINARIES=prebuilt`)
instead of compiling the workspace again. `podman run` is refused by this machine's
limits, so a container of the image is made and mounted (`podman mount`), and its
binaries run in that root file system with `chroot` as user 65532: the same files,
libraries and user as in a container."""

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARIES = ["publisher", "pipeline", "subscriber", "debug-subscriber"]


def run(*args, **kwargs):
    result = subprocess.run(list(map(str, args)), capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_dockerfile_lints_clean():
    hadolint = pathlib.Path(sys.executable).with_name("hadolint")
    run(hadolint, ROOT / "Dockerfile")


def runtime_base(podman, work):
    """A base image as distroless cc: the binaries' shared libraries, CA certificates,
    /etc/passwd with nonroot, a /tmp; nothing else (no shell)."""
    rootfs = work / "base"
    libraries = set()
    for binary in BINARIES:
        for line in run("ldd", ROOT / "target" / "debug" / binary).splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                libraries.add(path)
    for library in libraries:
        target = rootfs / library.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library, target)
    certs = rootfs / "etc/ssl/certs"
    certs.mkdir(parents=True)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", certs)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n")
    (rootfs / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
    (rootfs / "tmp").mkdir(mode=0o1777)
    os.chmod(rootfs / "tmp", 0o1777)
    archive = work / "base.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    tag = f"localhost/pubsub-envelope-test-base:{uuid.uuid4().hex[:8]}"
    run(podman, "import", archive, tag)
    archive.unlink()
    shutil.rmtree(rootfs)
    return tag


def free_mib(path):
    return shutil.disk_usage(path).free // (1 << 20)


def test_the_image_builds_and_its_binaries_run_against_the_emulator(tmp_path):
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (apt-get install podman): the image is not built")
    if os.geteuid() != 0:
        pytest.skip("running the image's files needs chroot, so root: the image is built but not run")
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    assert host, "scripts/test.sh starts the emulator and exports PUBSUB_EMULATOR_HOST"

    # The binaries go in without their symbols and line tables (145 MB for the four
    # instead of 300 MB), and podman's storage holds them twice: the prebuilt stage and
    # the image's layer. The container is then mounted, not exported, so there is no
    # third or fourth copy. A CI machine's disk can be nearly full after the build (one
    # run died there copying the binaries): where there is not room for those two
    # copies, the test says so and skips rather than fail halfway through podman.
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        pytest.skip("objcopy is not installed (apt-get install binutils): the image is not built")
    storage = run(podman, "info", "--format", "{{.Store.GraphRoot}}").strip()
    while not os.path.exists(storage):
        storage = os.path.dirname(storage)
    prebuilt = ROOT / "target" / "image-bin"
    shutil.rmtree(prebuilt, ignore_errors=True)
    prebuilt.mkdir()
    before = set(run(podman, "images", "-a", "-q", "--no-trunc").split())
    image = f"localhost/pubsub-envelope:test-{uuid.uuid4().hex[:8]}"
    base = None
    container = None
    try:
        for binary in BINARIES:
            run(objcopy, "--strip-all", ROOT / "target" / "debug" / binary, prebuilt / binary)
        size = sum((prebuilt / binary).stat().st_size for binary in BINARIES) >> 20
        need = 2 * size + 256
        if free_mib(storage) < need:
            pytest.skip(f"the image test needs {need} MiB free under {storage} and {free_mib(storage)} MiB are: "
                        "the image is not built")
        base = runtime_base(podman, tmp_path)
        run(podman, "build", "--build-arg", f"RUNTIME_BASE={base}", "--build-arg", "BINARIES=prebuilt",
            "-t", image, ROOT)
        shutil.rmtree(prebuilt, ignore_errors=True)
        config = run(podman, "image", "inspect", image, "--format", "{{.Config.User}} {{json .Config.Entrypoint}}")
        assert config.split() == ["65532:65532", '["/usr/local/bin/pipeline"]'], config

        # The container's root file system, as it would run: the image's layers with a
        # writable layer on top (a keyring is written to /tmp).
        container = run(podman, "create", image).strip()
        rootfs = run(podman, "mount", container).strip()
        assert not os.path.exists(os.path.join(rootfs, "bin", "sh")), "the runtime image has no shell"
        run_the_image(rootfs, host)
    finally:
        if container:
            subprocess.run([podman, "umount", container], capture_output=True)
            subprocess.run([podman, "rm", "-f", container], capture_output=True)
        made = set(run(podman, "images", "-a", "-q", "--no-trunc").split()) - before
        subprocess.run([podman, "rmi", "-f", image, *([base] if base else []), *made], capture_output=True)
        shutil.rmtree(prebuilt, ignore_errors=True)


def run_the_image(rootfs, host):
    """The image's binaries, as user 65532 in its root file system, against the emulator:
    each answers --version, and a message the publisher seals is OPENED by
    debug-subscriber."""
    chroot = shutil.which("chroot")

    def inside(*args):
        return [chroot, "--userspec=65532:65532", str(rootfs), *args]

    env = {"PUBSUB_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": f"image-{uuid.uuid4().hex[:8]}",
           "PUBSUB_ENVELOPE_KMS": "local:/tmp/keyring.json", "RUST_LOG": "info", "PATH": "/usr/local/bin"}
    for binary in BINARIES:
        assert run(*inside(f"/usr/local/bin/{binary}", "--version"), env=env).startswith(binary)
    key = "projects/tenant-1/locations/us-central1/keyRings/r/cryptoKeys/key1"
    run(*inside("/usr/local/bin/publisher", "keyring", "create", key), env=env)
    # debug-subscriber first, so that its subscription exists before the publish.
    reader = subprocess.Popen(inside("/usr/local/bin/debug-subscriber", "--trusted_kms_key", "projects/tenant-1/*",
                                     "--idle_exit_secs", "10"),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        for line in reader.stderr:
            if "reading" in line or time.monotonic() > deadline:
                break
        run(*inside("/usr/local/bin/publisher", "--mode", "encrypt", "--kms_key", key, "--message", "from the image"),
            env=env)
        out, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    assert "OPENED" in out and "from the image" in out, out + err
