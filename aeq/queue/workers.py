"""Live workers: each ``aeq worker`` keeps a heartbeat in Redis, and clients read who is there.

    aeq:workers          set     names of the workers that have beaten (readers prune the dead)
    aeq:worker:NAME      string  JSON: name, host, pid, queue, concurrency, started_at; written
                                 every HEARTBEAT_INTERVAL_S with a time to live of HEARTBEAT_TTL_S

The worker's main process beats from a thread once Celery says it consumes its queue
(``worker.lifetime``), so a worker busy with a chunk, even in the solo pool, keeps beating; it
deletes its key when it shuts down, and a killed worker's key expires within HEARTBEAT_TTL_S.
Redis keeps the time (a TTL, not a timestamp), so clocks on other machines do not matter.

Why not Celery's ``inspect().ping()``: that is a broadcast over the broker's pidbox that waits
its whole reply timeout (1 s by default) for answers that may never come; reading the heartbeats
is one round trip, costs nothing when nothing changed, and needs no Celery in the reader. JSON,
never pickle.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis

WORKERS_KEY = "aeq:workers"
WORKER_KEY_PREFIX = "aeq:worker:"
# A worker rewrites its heartbeat this often, and it lives this long: a worker that dies (or
# stops beating) drops out of the list within HEARTBEAT_TTL_S. Three missed beats are tolerated
# on a loaded machine; a client that checks every second notices a loss within about 4.5 s.
HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_TTL_S = 3.5

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself in its heartbeat."""

    name: str
    host: str
    pid: int
    queue: str
    concurrency: int
    started_at: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerInfo:
        data = json.loads(raw)
        return cls(
            name=str(data["name"]),
            host=str(data.get("host", "")),
            pid=int(data.get("pid", 0)),
            queue=str(data.get("queue", "")),
            concurrency=int(data.get("concurrency", 1)),
            started_at=float(data.get("started_at", 0.0)),
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def worker_key(name: str) -> str:
    return f"{WORKER_KEY_PREFIX}{name}"


def beat(client: redis.Redis, info: WorkerInfo, ttl_s: float = HEARTBEAT_TTL_S) -> None:
    """Write ``info``'s heartbeat (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.set(worker_key(info.name), info.to_json(), px=int(ttl_s * 1000))
    pipe.sadd(WORKERS_KEY, info.name)
    pipe.execute()


def leave(client: redis.Redis, name: str) -> None:
    """Remove ``name``'s heartbeat at once (a worker shutting down)."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(worker_key(name))
    pipe.srem(WORKERS_KEY, name)
    pipe.execute()


def live_workers(client: redis.Redis, queue: str | None = None) -> list[WorkerInfo]:
    """The workers whose heartbeat has not expired (those consuming ``queue``, if given), by
    name; names whose heartbeat expired are pruned from the set."""
    names = sorted(
        n.decode() if isinstance(n, bytes) else str(n) for n in client.smembers(WORKERS_KEY)
    )
    if not names:
        return []
    raws = client.mget([worker_key(name) for name in names])
    gone = [name for name, raw in zip(names, raws, strict=True) if raw is None]
    if gone:
        client.srem(WORKERS_KEY, *gone)
    workers = []
    for raw in raws:
        if raw is None:
            continue
        try:
            workers.append(WorkerInfo.from_json(raw))
        except (ValueError, KeyError, TypeError):
            continue  # not ours to judge: an unreadable heartbeat counts as no worker
    return [w for w in workers if queue is None or w.queue == queue]


class Heartbeat:
    """A daemon thread that beats for one worker until ``stop()`` (which also leaves)."""

    def __init__(
        self,
        client: redis.Redis,
        info: WorkerInfo,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        ttl_s: float = HEARTBEAT_TTL_S,
    ) -> None:
        self.client = client
        self.info = info
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aeq-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and delete the heartbeat (a lost Redis only logs)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s * 2)
        try:
            leave(self.client, self.info.name)
        except redis.RedisError as error:
            logger.warning("could not remove the heartbeat of %s: %s", self.info.name, error)

    def _run(self) -> None:
        failing = False
        while not self._stopped.is_set():
            try:
                beat(self.client, self.info, self.ttl_s)
                if failing:
                    logger.info("heartbeat of %s written again", self.info.name)
                failing = False
            except redis.RedisError as error:
                if not failing:
                    logger.warning("cannot write the heartbeat of %s: %s", self.info.name, error)
                failing = True
            self._stopped.wait(self.interval_s)


Notice = Callable[[str], None]


class Liveness:
    """Tells a waiting user, one line each time, when no worker consumes the queue, when the
    workers vanish, and when one comes (reads the heartbeats at most every ``interval_s``)."""

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        notify: Notice,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.queue = queue
        self.notify = notify
        self.interval_s = interval_s
        self.clock = clock
        self._next_check = 0.0
        # None until the first check; then the names last seen.
        self.seen: list[str] | None = None
        # Worker processes (each worker's concurrency, summed) at the last check.
        self.slots = 0

    def check(self, job: str, force: bool = False) -> None:
        """Read the heartbeats if ``interval_s`` has passed since the last read (or ``force``);
        say what changed (raises redis-py's errors: the caller rides out a lost Redis)."""
        now = self.clock()
        if now < self._next_check and not force:
            return
        self._next_check = now + self.interval_s
        workers = live_workers(self.client, self.queue)
        names = [worker.name for worker in workers]
        self.slots = sum(worker.concurrency for worker in workers)
        before, self.seen = self.seen, names
        if not names and before is None:
            self.notify(
                f"no worker is consuming queue '{self.queue}': job {job} waits safely in Redis "
                "until one starts ('aeq worker')"
            )
        elif not names and before:
            self.notify(
                f"the worker(s) stopped ({', '.join(before)} gone): job {job} waits safely in "
                "Redis until one starts ('aeq worker'); a chunk that was running comes back "
                "after the visibility timeout"
            )
        elif names and before == []:
            self.notify(
                f"worker {', '.join(names)} is consuming queue '{self.queue}': job {job} goes on"
            )

    def count_slots(self) -> int:
        """Read how many worker processes consume the queue now (no notice)."""
        self.slots = sum(w.concurrency for w in live_workers(self.client, self.queue))
        return self.slots

    def progressed(self, job: str) -> None:
        """A chunk finished: if no worker was seen, look again at once (one came)."""
        if self.seen == []:
            self.check(job, force=True)
