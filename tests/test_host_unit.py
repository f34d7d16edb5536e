"""A worker host's release, in-process (no Ray actor): the guest's cyclic garbage is collected,
what survives is frozen so later releases do not walk it again, and every FULL_COLLECT_EVERY-th
release collects the frozen objects too. And which idle host the pool lends first."""

from __future__ import annotations

import asyncio
import gc
import weakref

from raystream.runtime.host import FULL_COLLECT_EVERY, WorkerHost


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


class Guest:
    """Holds a reference cycle, as a finished task's operators and state often do."""

    def __init__(self) -> None:
        a, b = Node(), Node()
        a.other, b.other = b, a
        self.cycle = a

    async def dispose(self) -> None:
        return None


def host_and_release(host: WorkerHost, guest_id: str) -> weakref.ref:
    guest = Guest()
    ref = weakref.ref(guest.cycle)
    host._admit(guest, guest_id)  # noqa: SLF001 - what host_task does after building the guest
    del guest
    assert asyncio.run(host.release(guest_id)) is True
    return ref


def test_a_release_collects_the_guests_cycles_and_freezes_the_rest():
    gc.unfreeze()
    host = WorkerHost()
    try:
        dead = host_and_release(host, "g1")
        assert dead() is None  # the cycle went at the release, not at some later collection
        assert gc.get_freeze_count() > 0
        assert host.guest is None and host.guests_hosted == 1
    finally:
        gc.unfreeze()


def test_garbage_among_frozen_objects_is_collected_every_so_many_releases():
    gc.unfreeze()
    host = WorkerHost()
    try:
        host_and_release(host, "first")  # freezes what lives now...
        orphan = Node()
        orphan.other = Node()
        orphan.other.other = orphan
        gc.freeze()  # ...and this cycle, still referenced
        ref = weakref.ref(orphan)
        del orphan  # garbage now, but frozen: ordinary releases do not see it
        for i in range(2, FULL_COLLECT_EVERY):
            host_and_release(host, f"g{i}")
            assert ref() is not None, f"release {i} walked the frozen objects"
        host_and_release(host, "full")
        assert ref() is None
    finally:
        gc.unfreeze()


def test_the_pool_lends_a_used_host_then_a_started_spare_then_the_oldest():
    from raystream.runtime.pool import WorkerPool, _Host

    def host(i: int, warm: bool = False, served: bool = False) -> _Host:
        return _Host(i, None, "k", {}, 0.0, warm, served)

    idle = [host(1), host(2, warm=True), host(3, True, True), host(4, True, True), host(5, True)]
    take = WorkerPool._take  # noqa: SLF001
    assert [take(idle).id for _ in range(5)] == [4, 3, 2, 5, 1]
