"""A master with two Python workers (multiprocessing), as gunicorn/celery run: list_processes must
mark them. The workers print READY once started."""
import multiprocessing
import time


def serve():
    while True:
        time.sleep(0.1)


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")   # workers say `from multiprocessing.spawn import ...`
    workers = [multiprocessing.Process(target=serve, daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    print("READY", flush=True)
    while True:
        time.sleep(0.1)
