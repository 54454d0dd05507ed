"""A master with two Python workers (multiprocessing), as gunicorn/celery run: list_processes must
mark them. The master prints READY once its workers started; a worker ends when its master is gone."""
import multiprocessing
import os
import time


def serve(master):
    while os.getppid() == master:   # a worker ends with its master (the test kills the master)
        time.sleep(0.1)


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")   # workers say `from multiprocessing.spawn import ...`
    workers = [multiprocessing.Process(target=serve, args=(os.getpid(),), daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    print("READY", flush=True)
    while True:
        time.sleep(0.1)
