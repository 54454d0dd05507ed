"""session.workers: blocking work off the caller's thread, on threads that are reused."""
import threading

from flight_mcp.session import workers


def test_a_job_runs_off_the_callers_thread_and_its_thread_is_reused():
    seen = []
    gate = threading.Event()
    job = workers.run(lambda: (gate.wait(5), seen.append(threading.get_ident())))
    assert job.is_alive()   # the caller never waits for it
    gate.set()
    job.join(5)
    assert not job.is_alive() and seen and seen[0] != threading.get_ident()
    for _ in range(3):   # one at a time: the same idle thread each time, however a job ended
        workers.run(lambda: 1 / 0).join(5)
        workers.run(lambda: seen.append(threading.get_ident())).join(5)
    assert len(set(seen)) == 1


def test_jobs_at_once_each_get_a_thread_and_only_a_few_stay_idle():
    gate = threading.Event()
    running = []
    jobs = [workers.run(lambda: (running.append(threading.get_ident()), gate.wait(5))) for _ in range(8)]
    for _ in range(500):
        if len(running) == 8:
            break
        threading.Event().wait(0.01)
    assert len(set(running)) == 8   # none waited for another
    gate.set()
    for job in jobs:
        job.join(5)
    threading.Event().wait(0.1)
    assert len(workers._idle) <= workers.KEEP_IDLE
