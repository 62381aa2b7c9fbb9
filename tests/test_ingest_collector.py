"""Reading a run's reply stream on a real Redis, and writing results in seq order."""

import io
import json
import threading

import redis

from ingest.app.collector import Collector, OrderedWriter
from ingest.wire import Result

REPLY = "emostream:results:run"


def result(seq: int) -> Result:
    return Result("run", seq, 100.0 + seq, "m1")


def test_poll_reads_every_result_once_in_arrival_order(redis_client):
    collector = Collector(redis_client, REPLY)
    assert collector.poll(0) == []
    for seq in (3, 1, 2):
        redis_client.xadd(REPLY, result(seq).encode())
    assert [r.seq for r in collector.poll(0.1)] == [3, 1, 2]
    redis_client.xadd(REPLY, result(4).encode())
    assert [r.seq for r in collector.poll(0.1)] == [4]
    assert collector.poll(0) == []
    assert redis_client.xlen(REPLY) <= 1  # what was read is trimmed away


def test_poll_waits_for_the_first_result(redis_client, redis_server):
    def late() -> None:
        client = redis.Redis.from_url(redis_server.url)
        client.xadd(REPLY, result(0).encode())
        client.close()

    timer = threading.Timer(0.2, late)
    timer.start()
    try:
        assert [r.seq for r in Collector(redis_client, REPLY).poll(10)] == [0]
    finally:
        timer.join()


def test_malformed_results_are_counted_and_skipped(redis_client):
    collector = Collector(redis_client, REPLY)
    redis_client.xadd(REPLY, {"v": "1", "json": "{not json"})
    redis_client.xadd(REPLY, {"v": "99", "json": "{}"})
    redis_client.xadd(REPLY, result(5).encode())
    assert [r.seq for r in collector.poll(0)] == [5] and collector.malformed == 2


def test_close_removes_the_reply_stream(redis_client):
    redis_client.xadd(REPLY, result(0).encode())
    Collector(redis_client, REPLY).close()
    assert not redis_client.exists(REPLY)


def test_writer_releases_results_in_seq_order_only_below_the_oldest_in_flight():
    out = io.StringIO()
    writer = OrderedWriter(out)
    for seq in (4, 0, 2):
        writer.add(result(seq))
    writer.flush(before=1)
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [0]
    writer.add(result(1))
    writer.flush(before=4)
    writer.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == [0, 1, 2, 4] and writer.written == 4
    assert lines[0] == result(0).to_json()
