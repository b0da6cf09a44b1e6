"""Local mode: with no broker configured, a job runs in this process.

Same chunking, same ``run_chunk`` (``Engine.run``, and scoring for ``score``) as a worker, no
Celery and no Redis: what a new user meets first, and the in-process reference the service is
measured against.
"""

from __future__ import annotations

from aeq.client.client import ChunkWriter, Progress, Submission
from worker.inference import Engine
from worker.scoring import run_chunk

LOCAL_MODE_NOTICE = (
    "local mode: AEQ_BROKER_URL is not set, running in this process "
    "(set it to redis://HOST:6379/0 to queue the job to workers)"
)


def run_local(
    submission: Submission,
    writer: ChunkWriter,
    engine: Engine,
    on_progress: Progress | None = None,
) -> int:
    """Run every chunk of ``submission`` through ``engine`` and write it; return the item count.

    Memory holds one chunk's input and output at a time.
    """
    done = 0
    for names, items in submission.source.chunks(submission.chunk_size):
        result = run_chunk(engine, submission.version, submission.op, items)
        writer.write(done, names, result.array)
        done += len(items)
        if on_progress:
            on_progress(done)
    return done
