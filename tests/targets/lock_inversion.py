"""Two threads take two locks in opposite orders and deadlock: worker-a holds Catalog._lock and waits
for Inventory._lock (`with`), worker-b holds Inventory._lock and waits for Catalog._lock (acquire()).
argv[1]: lock (threading.Lock) or rlock (threading.RLock). A third thread waits for the global
AUDIT_LOCK, held by the main thread, which sleeps (a wait that is no deadlock); a fourth only sleeps."""
import sys
import threading
import time

KIND = threading.RLock if sys.argv[1:] == ["rlock"] else threading.Lock
AUDIT_LOCK = KIND()
both = threading.Barrier(2)


class Inventory:
    def __init__(self):
        self._lock = KIND()

    def reserve(self, catalog):
        with self._lock:
            both.wait()
            catalog._lock.acquire()   # blocks: worker-a holds it
            catalog._lock.release()


class Catalog:
    def __init__(self, inventory):
        self._lock = KIND()
        self.inventory = inventory

    def update(self):
        with self._lock:
            both.wait()
            with self.inventory._lock:   # blocks: worker-b holds it
                pass


def audit():
    with AUDIT_LOCK:   # blocks: the main thread holds it
        pass


def idle():
    while True:
        time.sleep(0.05)


inventory = Inventory()
catalog = Catalog(inventory)
AUDIT_LOCK.acquire()
threads = [threading.Thread(target=catalog.update, name="worker-a", daemon=True),
           threading.Thread(target=inventory.reserve, args=(catalog,), name="worker-b", daemon=True),
           threading.Thread(target=audit, name="auditor", daemon=True),
           threading.Thread(target=idle, name="idler", daemon=True)]
for t in threads:
    t.start()
time.sleep(0.2)
print("READY", flush=True)
while True:
    time.sleep(0.1)
