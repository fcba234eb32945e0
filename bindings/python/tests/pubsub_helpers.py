"""Small helpers over Google's Python Pub/Sub client, for the tests that use the emulator."""

import collections
import time

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1

LINES = [
    "the quick brown fox jumps over the lazy dog",
    "Lorem ipsum dolor sit amet, consectetur adipisci velit",
    "neque porro quisquam est qui dolorem ipsum",
    "it's the fox's den",
]


class Bus:
    """Topics and subscriptions of one project on the emulator."""

    def __init__(self, project):
        self.project = project
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def topic(self, name):
        path = self.publisher.topic_path(self.project, name)
        try:
            self.publisher.create_topic(request={"name": path})
        except AlreadyExists:
            pass
        return path

    def subscription(self, topic, name):
        path = self.subscriber.subscription_path(self.project, name)
        try:
            self.subscriber.create_subscription(request={"name": path, "topic": self.topic(topic)})
        except AlreadyExists:
            pass
        return path

    def publish(self, topic, data, attributes):
        return self.publisher.publish(self.topic(topic), data, **attributes).result(timeout=30)

    def pull(self, subscription, until, timeout=60):
        """Pulls (and acks) messages until `until(messages)` holds or `timeout` passes."""
        messages = []
        deadline = time.monotonic() + timeout
        while not until(messages) and time.monotonic() < deadline:
            response = self.subscriber.pull(
                request={"subscription": subscription, "max_messages": 500, "return_immediately": False}, timeout=10
            )
            received = response.received_messages
            if received:
                self.subscriber.acknowledge(
                    request={"subscription": subscription, "ack_ids": [m.ack_id for m in received]}
                )
                messages += [m.message for m in received]
            else:
                time.sleep(0.2)
        return messages


def summed(messages):
    """Each window's counts over replicas and panes, each (replica, window, pane, word) once."""
    parts = {}
    for message in messages:
        word, count = message.data.decode().rsplit(": ", 1)
        a = message.attributes
        parts[(a["replica"], a["window_start"], a["pane"], word)] = int(count)
    totals = collections.Counter()
    for (_, _, _, word), count in parts.items():
        totals[word] += count
    return totals
