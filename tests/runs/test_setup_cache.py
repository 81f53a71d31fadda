"""Old setup results go: a repository keeps its most recent keys, and the cache its size, on disk and in the store."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from bot.blobs import DatabaseBlobs
from bot.models import Run, RunStatus, Step, StepStatus
from bot.runs import queries, records, setup_cache
from bot.settings import SetupCacheLimits
from bot.store import Store


def archive(*members: tuple[str, bytes, bytes] | tuple[str, bytes, bytes, str]) -> bytes:
    """A gzipped tar of (name, type, data[, link target]) members, as an attacker with the store would make it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, data, *target in members:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.linkname = kind, len(data), target[0] if target else ""
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SHOP, BLOG = Run(installation_id=1, repository="octo/shop"), Run(installation_id=2, repository="octo/blog")


def made(root: Path, run: Run, key: str, *, used_at: float, size: int = 40_000) -> Path:
    """A finished setup result of `size` bytes (not compressible), last used at `used_at`."""
    directory = setup_cache.repository_dir(root, run) / key
    (directory / "lib").mkdir(parents=True)
    (directory / "lib" / "package.so").write_bytes(os.urandom(size))
    (directory / setup_cache.DONE_MARKER).write_text(json.dumps({"duration_s": 1.0}))
    os.utime(directory / setup_cache.DONE_MARKER, (used_at, used_at))
    return directory


def on_disk(root: Path) -> set[str]:
    return {marker.parent.name for marker in root.glob(f"*/*/*/*/{setup_cache.DONE_MARKER}")}


def shared(blobs: DatabaseBlobs) -> set[str]:
    return {name.rsplit("/", 1)[1].removesuffix(".tar.gz") for name, _, _ in blobs.list(setup_cache.PREFIX)}


async def test_a_repository_keeps_its_most_recently_used_keys_on_disk_and_its_newest_in_the_store(
    any_store: Store, tmp_path: Path
) -> None:
    blobs, root = DatabaseBlobs(any_store), tmp_path / "setup"
    limits = SetupCacheLimits(keep=3)
    for n in range(5):  # shared in this order: k4 is the newest archive
        await setup_cache.share(blobs, SHOP, made(root, SHOP, f"k{n}", used_at=1_000 + n), limits)
    await setup_cache.share(blobs, BLOG, made(root, BLOG, "b0", used_at=500), limits)
    setup_cache.touch(setup_cache.repository_dir(root, SHOP) / "k0")  # a run reused k0 just now

    gone = await setup_cache.evict(blobs, root, setup_cache.repository_dir(root, SHOP) / "k4", limits)

    assert on_disk(root) == {"k0", "k3", "k4", "b0"}  # used most recently; another repository's key stays
    assert shared(blobs) == {"k2", "k3", "k4", "b0"}  # the store goes by when a result was shared
    assert len(gone) == 4
    assert not (setup_cache.repository_dir(root, SHOP) / "k1.lock").exists()


async def test_over_the_total_size_the_oldest_go_but_never_the_result_in_use(any_store: Store, tmp_path: Path) -> None:
    blobs, root = DatabaseBlobs(any_store), tmp_path / "setup"
    roomy = SetupCacheLimits()
    for n, run in enumerate([SHOP, BLOG, SHOP]):
        await setup_cache.share(blobs, run, made(root, run, f"k{n}", used_at=1_000 + n), roomy)
    in_use = made(root, BLOG, "big", used_at=10, size=200_000)  # the least recently used, yet in use
    await setup_cache.share(blobs, BLOG, in_use, roomy)

    await setup_cache.evict(blobs, root, in_use, SetupCacheLimits(total_bytes=270_000))

    assert on_disk(root) == {"big", "k2"}  # about 200 KB + 40 KB; k1 would pass 270 KB
    assert shared(blobs) == {"big", "k2"}


def setup_run(store: Store, run_id: str, key: str, status: RunStatus) -> Run:
    """A run of octo/shop whose `setup` step made or reused `key`."""
    run = Run(
        id=run_id, installation_id=1, repository="octo/shop", thread_number=1, thread_kind="issue", request="r",
        requester="octocat", trigger="comment", plan={}, config={}, status=status,
    )  # fmt: skip
    step = Step(
        id=f"{run_id}-setup", run_id=run_id, position=0, name="setup", tool="setup", inputs={}, depends_on=[],
        policy={}, idempotency_key=f"{run_id}:setup", status=StepStatus.succeeded, output={"key": key},
    )  # fmt: skip
    with store.session() as session:
        session.add(run)
        session.commit()
        session.add(step)
        session.commit()
        session.refresh(run)
        session.expunge(run)
    return run


async def test_a_result_an_unfinished_run_uses_stays_until_it_ends_and_its_steps_find_it_on_another_worker(
    any_store: Store, tmp_path: Path
) -> None:
    blobs, root, elsewhere = DatabaseBlobs(any_store), tmp_path / "a" / "setup", tmp_path / "b" / "setup"
    limits = SetupCacheLimits(keep=3)
    running = setup_run(any_store, "r1", "aa0", RunStatus.running)  # its gates come later, on any worker
    setup_run(any_store, "r2", "aa1", RunStatus.succeeded)
    for key in ("aa0", "aa1"):
        await setup_cache.share(blobs, SHOP, made(root, SHOP, key, used_at=1_000), limits)

    for n in range(3):  # three newer keys, each evicting after it is made
        newest = made(root, SHOP, f"bb{n}", used_at=2_000 + n)
        await setup_cache.share(blobs, SHOP, newest, limits)
        used = setup_cache.in_use(root, queries.setup_steps_in_use(any_store))
        await setup_cache.evict(blobs, root, newest, limits, used)

    # The three most recent of the repository, the one in use counted: aa1's run is over, and bb0 the oldest after it.
    assert on_disk(root) == shared(blobs) == {"aa0", "bb1", "bb2"}
    other = setup_cache.RepositorySetups(setup_cache.repository_dir(elsewhere, running), running, blobs)
    assert await other.ensure("aa0")
    assert setup_cache.done(other.path("aa0")) == {"duration_s": 1.0}

    records.cancel(any_store, running.id, by="octocat")
    made(root, SHOP, "bb3", used_at=3_000)  # made elsewhere, say: no setup here evicts, the sweeper's timer does
    setup_cache.trim(blobs, root, limits, setup_cache.in_use(root, queries.setup_steps_in_use(any_store)))
    assert on_disk(root) == {"bb1", "bb2", "bb3"}  # then it goes like any other


async def test_a_result_over_the_share_limit_stays_on_its_worker_and_another_says_so(
    any_store: Store, tmp_path: Path
) -> None:
    blobs, root = DatabaseBlobs(any_store), tmp_path / "setup"
    result = made(root, SHOP, "k0", used_at=1_000)

    said = await setup_cache.share(blobs, SHOP, result, SetupCacheLimits(share_bytes=10_000))

    assert said.startswith("not shared: it is over NOFX_SETUP_SHARE_MB (0.0 MiB) packed"), said
    assert shared(blobs) == set()
    elsewhere = setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "elsewhere", SHOP), SHOP, blobs)
    assert await elsewhere.ensure("k0") is False
    assert "NOFX_SETUP_SHARE_MB" in setup_cache.missing("k0")


async def test_a_later_setup_on_another_worker_unpacks_the_result_instead_of_setting_up_again(
    any_store: Store, tmp_path: Path
) -> None:
    blobs = DatabaseBlobs(any_store)
    first = setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "a", SHOP), SHOP, blobs)
    second = setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "b", SHOP), SHOP, blobs)

    async def install(directory: Path) -> dict[str, object]:
        (directory / "bin").mkdir()
        (directory / "bin" / "python").symlink_to("/usr/bin/python3")  # a venv's, by absolute path
        (directory / "bin" / "tool").write_text("#!/bin/sh\n")
        os.link(directory / "bin" / "tool", directory / "bin" / "tool-1")  # as uv links from its cache
        return {"duration_s": 2.5}

    async def never(directory: Path) -> dict[str, object]:
        raise AssertionError("set up again")

    made, reused = await first.reuse_or_make("k0", install)
    await setup_cache.share(blobs, SHOP, first.path("k0"), SetupCacheLimits())

    assert (made, reused) == ({"duration_s": 2.5}, False)
    assert await second.reuse_or_make("k0", never) == ({"duration_s": 2.5}, True)
    assert os.readlink(second.path("k0") / "bin" / "python") == "/usr/bin/python3"
    assert os.stat(second.path("k0") / "bin" / "tool-1").st_ino == os.stat(second.path("k0") / "bin" / "tool").st_ino


async def test_an_archive_nofx_did_not_make_is_not_unpacked(any_store: Store, tmp_path: Path) -> None:
    blobs = DatabaseBlobs(any_store)
    results = setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "b", SHOP), SHOP, blobs)

    marker = (setup_cache.DONE_MARKER, tarfile.REGTYPE, b"{}")
    blobs.put(setup_cache.blob_key(SHOP, "k0"), archive(marker, ("pipe", tarfile.FIFOTYPE, b"")))
    blobs.put(setup_cache.blob_key(SHOP, "k1"), archive(marker, ("../../escaped", tarfile.REGTYPE, b"x")))
    blobs.put(setup_cache.blob_key(SHOP, "k2"), archive(marker)[:40])  # cut short

    assert await results.ensure("k0") is True and not (results.path("k0") / "pipe").exists()
    assert await results.ensure("k1") is False and not (results.directory.parent / "escaped").exists()
    assert await results.ensure("k2") is False
    assert sorted(p.name for p in results.directory.iterdir()) == ["k0", "k0.lock", "k1.lock", "k2.lock"]


async def test_an_archive_cannot_write_through_its_own_links_nor_link_to_a_host_file(
    any_store: Store, tmp_path: Path
) -> None:
    blobs, host = DatabaseBlobs(any_store), tmp_path / "host"
    host.mkdir()
    (host / "secret.pem").write_text("the App's private key")
    results = setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "b", SHOP), SHOP, blobs)
    marker = (setup_cache.DONE_MARKER, tarfile.REGTYPE, b"{}")
    through = ("lib", tarfile.SYMTYPE, b"", str(host)), ("lib/planted", tarfile.REGTYPE, b"x")
    blobs.put(setup_cache.blob_key(SHOP, "k0"), archive(marker, *through))
    blobs.put(
        setup_cache.blob_key(SHOP, "k1"), archive(marker, ("key", tarfile.LNKTYPE, b"", str(host / "secret.pem")))
    )
    to_a_link = ("link", tarfile.SYMTYPE, b"", str(host / "secret.pem")), ("key", tarfile.LNKTYPE, b"", "link")
    blobs.put(setup_cache.blob_key(SHOP, "k2"), archive(marker, *to_a_link))
    twice = ("lib", tarfile.DIRTYPE, b""), ("lib", tarfile.SYMTYPE, b"", str(host)), ("lib/x", tarfile.REGTYPE, b"")
    blobs.put(setup_cache.blob_key(SHOP, "k3"), archive(marker, *twice))

    for key in ("k0", "k1", "k2", "k3"):
        assert await results.ensure(key) is False, key
    assert sorted(p.name for p in host.iterdir()) == ["secret.pem"]
    assert os.stat(host / "secret.pem").st_nlink == 1


async def test_unpacking_stops_at_the_cache_size_whatever_the_archive_compresses_to(
    any_store: Store, tmp_path: Path
) -> None:
    blobs = DatabaseBlobs(any_store)
    limits = SetupCacheLimits(total_bytes=2**20)
    results = setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "b", SHOP), SHOP, blobs, limits)
    zeros = [(f"z{n}", tarfile.REGTYPE, bytes(2**18)) for n in range(5)]  # 1.25 MiB that gzip makes ~1 KiB
    blobs.put(setup_cache.blob_key(SHOP, "k0"), archive((setup_cache.DONE_MARKER, tarfile.REGTYPE, b"{}"), *zeros))

    assert await results.ensure("k0") is False
    assert sorted(p.name for p in results.directory.iterdir()) == ["k0.lock"]


async def test_packing_stops_once_the_archive_passes_the_share_limit(any_store: Store, tmp_path: Path) -> None:
    blobs, root = DatabaseBlobs(any_store), tmp_path / "setup"
    result = made(root, SHOP, "k0", used_at=1_000, size=4 * 2**20)  # incompressible

    said = await setup_cache.share(blobs, SHOP, result, SetupCacheLimits(share_bytes=2**20))

    assert said.startswith("not shared: it is over NOFX_SETUP_SHARE_MB (1.0 MiB) packed"), said
    assert shared(blobs) == set()


def test_a_marker_that_is_a_symlink_is_not_read_through(tmp_path: Path) -> None:
    host = tmp_path / "credentials.json"
    host.write_text(json.dumps({"private_key": "-----BEGIN"}))
    directory = tmp_path / "k0"
    directory.mkdir()
    (directory / setup_cache.DONE_MARKER).symlink_to(host)

    assert setup_cache.done(directory) is None


async def test_a_result_is_never_served_to_another_repository_that_has_or_had_the_name(
    any_store: Store, tmp_path: Path
) -> None:
    blobs = DatabaseBlobs(any_store)
    private = Run(installation_id=1, repository="octo/shop", repository_id=10)
    same_name_since = Run(installation_id=1, repository="octo/shop", repository_id=11)
    renamed = Run(installation_id=1, repository="octo/shop-private", repository_id=10)
    dotted, plain = Run(installation_id=1, repository="octo/.github"), Run(installation_id=1, repository="octo/github")

    async def install(directory: Path) -> dict[str, object]:
        (directory / "bin").mkdir()
        return {"duration_s": 1.0}

    for run in (private, dotted):
        made = setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "a", run), run, blobs)
        await made.reuse_or_make("k0", install)
        await setup_cache.share(blobs, run, made.path("k0"), SetupCacheLimits())

    def elsewhere(run: Run) -> setup_cache.RepositorySetups:
        return setup_cache.RepositorySetups(setup_cache.repository_dir(tmp_path / "b", run), run, blobs)

    assert await elsewhere(same_name_since).ensure("k0") is False
    assert await elsewhere(plain).ensure("k0") is False
    assert await elsewhere(renamed).ensure("k0") is True
    assert await elsewhere(dotted).ensure("k0") is True
