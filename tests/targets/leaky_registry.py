"""Target for the mem tests: a real leak. Every 20 ms a request subscribes a listener to a topic and
never unsubscribes, so Subscription objects pile up in SubscriptionRegistry._by_topic (a dict of
lists), held by the module global REGISTRY. Prints READY once the leak is running."""
import sys
import threading
import time


class Subscription(object):
    def __init__(self, topic, callback):
        self.topic = topic
        self.callback = callback
        self.created = time.time()


class SubscriptionRegistry(object):
    def __init__(self):
        self._by_topic = {}

    def subscribe(self, topic, callback):
        sub = Subscription(topic, callback)
        self._by_topic.setdefault(topic, []).append(sub)
        return sub


REGISTRY = SubscriptionRegistry()
STEADY = [{"n": i} for i in range(2000)]   # a stable population: must not show as growing


def handle_request(i):
    topic = "topic-%d" % (i % 7)
    REGISTRY.subscribe(topic, lambda event: event)   # the leak: never unsubscribed
    scratch = [str(i)] * 10                          # garbage freed at once
    return len(scratch)


def serve():
    i = 0
    while True:
        handle_request(i)
        i += 1
        time.sleep(0.02)


threading.Thread(target=serve, name="server", daemon=True).start()
time.sleep(0.2)
print("READY")
sys.stdout.flush()
while True:
    time.sleep(1)
