"""A multi-tenant service for monitor: twelve tenants called in turn by a worker thread; two of them
(initech, umbrella) are slow (one request in six), one (hooli) always raises. Prints READY."""
import threading
import time

TENANTS = ["acme", "globex", "initech", "hooli", "stark", "wayne", "umbrella", "wonka", "tyrell", "cyberdyne",
           "soylent", "massive"]
SLOW = {"initech": 0.03, "umbrella": 0.025}
FAILING = "hooli"
COUNTS = {"calls": 0}


class TenantError(Exception):
    pass


class Service:
    def __init__(self, name):
        self.name = name

    def handle(self, tenant, request_id, priority=0):
        COUNTS["calls"] += 1
        time.sleep(SLOW.get(tenant, 0.002))
        if tenant == FAILING:
            raise TenantError("tenant %s is suspended (request %d)" % (tenant, request_id))
        return {"tenant": tenant, "request": request_id}


def worker(service):
    request_id = 0
    while True:
        for tenant in TENANTS:
            request_id += 1
            try:
                service.handle(tenant, request_id)
            except TenantError:
                pass


def main():
    service = Service("tenants")
    threading.Thread(target=worker, args=(service,), name="tenant-worker", daemon=True).start()
    print("READY", flush=True)
    while True:
        time.sleep(0.5)


if __name__ == "__main__":
    main()
