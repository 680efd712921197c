"""A stream's alert state survives its replica: AlertMonitor snapshots, the checkpoint store, the registry's
restore (preprocess_service/stream/checkpoints.py). The two-replica run is in test_stream_affinity.py."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from support.stream_events import kinds

from avpenet import contract
from preprocess_service.stream.affinity import routing_key
from preprocess_service.stream.alerts import AlertMonitor, Window
from preprocess_service.stream.checkpoints import RayCheckpoints, Store
from preprocess_service.stream.limits import StreamLimits
from preprocess_service.stream.protocol import Start, StreamConfig, StreamRejected
from preprocess_service.stream.registry import StreamRegistry, resume_events, resume_fields


def feed(mon: AlertMonitor, scores, first: int = 0) -> list[dict]:
    """Window i covers media [i, i + 3) s of its own stream (one per second, as streams are cut)."""
    events = []
    for i, s in enumerate(scores, start=first):
        end = i + contract.WINDOW_SECONDS
        events += mon.feed(Window(i, float(i), end, s, s - 1, s + 1, contract.level_of(s), 0.5, 0.5))
    return events


def moved(mon: AlertMonitor, now_s: float) -> AlertMonitor:
    """The monitor's state carried to a new stream (through JSON: the snapshot is plain data)."""
    new = AlertMonitor(mon.config)
    new.restore(json.loads(json.dumps(mon.snapshot(now_s))))
    return new


def test_an_alert_on_stays_on_and_clears_only_after_its_calm_windows():
    cfg = StreamConfig(threshold=6, windows=3, clear_windows=4)
    mon = AlertMonitor(cfg)
    assert kinds(feed(mon, [8] * 4), "alert")
    new = moved(mon, now_s=6.0)
    assert new.alerting
    assert not kinds(feed(new, [8] * 5), "alert")  # still the same episode: no second alert
    events = feed(new, [1] * 4, first=5)
    assert [e["window"] for e in kinds(events, "alert_cleared")] == [8]  # the 4th calm window, not earlier


def test_a_run_under_way_goes_on_and_its_start_is_before_time_zero():
    cfg = StreamConfig(threshold=6, windows=5)
    mon = AlertMonitor(cfg)
    assert not kinds(feed(mon, [2, 8, 8, 8]), "alert")  # three windows of the five, the run from 1 s
    new = moved(mon, now_s=6.0)  # the last window ended at 6 s: the new stream's 0
    (alert,) = kinds(feed(new, [8, 8]), "alert")
    assert alert["window"] == 1 and alert["windows"] == 5 and alert["since_s"] == -5.0
    fresh = AlertMonitor(cfg)
    assert not kinds(feed(fresh, [8, 8]), "alert")  # what a resume that starts afresh did


def test_the_baseline_period_goes_on_for_what_it_had_left_with_its_scores():
    cfg = StreamConfig(threshold=3, windows=2, baseline_s=10, baseline_margin=2)
    mon = AlertMonitor(cfg)
    feed(mon, [5, 5, 5, 5])  # windows ending at 3-6 s: baseline
    new = moved(mon, now_s=6.0)
    events = feed(new, [5, 6.5, 6.5])  # new windows end at 3, 4, 5 s = 9, 10, 11 s monitored
    assert [e["baseline"] for e in kinds(events, "score")] == [True, True, False]
    assert new.baseline == 5.0 and new.threshold() == 7.0  # the median over both streams' baseline windows
    assert not kinds(events, "alert")


def test_open_handling_still_suppresses_after_the_restore():
    cfg = StreamConfig(threshold=6, windows=2, handling_grace_s=0)
    mon = AlertMonitor(cfg)
    mon.handling.set(True, 4.0)  # a nappy change under way
    feed(mon, [2, 2])
    new = moved(mon, now_s=4.0)
    assert all(e["suppressed"] for e in kinds(feed(new, [8] * 3), "score"))
    new.handling.set(False, 5.0)
    assert [e["window"] for e in kinds(feed(new, [8] * 4, first=3), "alert")] == [6]  # [5, 8), [6, 9)


def test_the_store_keeps_per_key_for_its_ttl_and_forgets_the_oldest_past_its_cap():
    clock = [100.0]
    store = Store(ttl_s=60, max_entries=2, clock=lambda: clock[0])
    store.put("a", "key-1", {"n": 1})
    assert store.get("a", "key-1") == {"n": 1} and store.get("a", "key-2") is None  # another API key
    clock[0] += 30
    store.put("b", "key-1", {"n": 2})
    store.put("a", "key-1", {"n": 3})  # rewritten: now the newest
    store.put("c", "key-1", {"n": 4})  # over the cap: the oldest write (b) goes
    assert store.get("b", "key-1") is None and store.get("a", "key-1") == {"n": 3}
    clock[0] += 61
    assert store.get("a", "key-1") is None  # past the TTL since its last write
    store.put_many({"d": ("key-1", {}), "e": ("key-2", {"n": 5})})
    store.drop("d")
    assert list(store.entries) == ["e"]
    store.put_many({"f": ("key-2", {"n": 6})}, ttl_s=5)  # replicas with a new resume_ttl_s: the actor
    clock[0] += 6  # outlived the old ones; a write keeps its own sender's TTL
    assert store.get("f", "key-2") is None and store.get("e", "key-2") == {"n": 5}


def test_a_replica_sends_each_streams_latest_checkpoint_in_one_call_a_flush():
    calls = []
    actor = SimpleNamespace(
        put_many=SimpleNamespace(remote=lambda batch, ttl_s: calls.append(("put_many", dict(batch), ttl_s))),
        drop=SimpleNamespace(remote=lambda key: calls.append(("drop", key))),
    )

    async def scenario() -> None:
        ckpt = RayCheckpoints(actor, ttl_s=60.0, flush_s=0.05)
        for n in range(3):  # three windows of bed-1, one of bed-2, one of bed-3 (which then ends)
            ckpt.put("bed-1-ward", "key-1", {"n": n})
        ckpt.put("bed-2-ward", "key-1", {"n": 9})
        ckpt.put("bed-3-ward", "key-1", {"n": 7})
        ckpt.drop("bed-3-ward", "key-1")
        assert [c[0] for c in calls] == ["drop"]  # no checkpoint sent before the flush
        await asyncio.sleep(0.2)
        ckpt.put("bed-1-ward", "key-1", {"n": 3})
        await asyncio.sleep(0.2)
        ckpt.put("bed-2-ward", "key-1", {"n": 10}, now=True)  # its connection ended: sent at once

    asyncio.run(scenario())
    first, second = routing_key("bed-1-ward", "key-1"), routing_key("bed-2-ward", "key-1")
    assert calls == [
        ("drop", routing_key("bed-3-ward", "key-1")),
        ("put_many", {first: ("key-1", {"n": 2}), second: ("key-1", {"n": 9})}, 60.0),
        ("put_many", {first: ("key-1", {"n": 3})}, 60.0),
        ("put_many", {second: ("key-1", {"n": 10})}, 60.0),
    ]


def start(**kw) -> Start:
    return Start(type="start", mode="audio", stream_id="bed-3-ckpt", **kw)


def checkpointed(config: StreamConfig) -> tuple[StreamRegistry, dict]:
    """A stream with an alert on, held by another replica (`other`): the checkpoint it wrote."""
    other = StreamRegistry(StreamLimits(), 10**7)
    entry, _ = other.acquire(start(config=config), "bed-3-ckpt", "key-1")
    for event in feed(entry.monitor, [8] * 6):
        event["seq"] = entry.event_seq
        entry.event_seq += 1
    assert entry.monitor.alerting
    return other, entry.checkpoint()


def test_a_reconnect_elsewhere_restores_the_alert_state_and_says_what_it_missed():
    cfg = StreamConfig(threshold=6, windows=3)
    _, snap = checkpointed(cfg)
    here = StreamRegistry(StreamLimits(), 10**7)
    entry, resumed = here.acquire(start(config=cfg, last_event=5), "bed-3-ckpt", "key-1", restore=snap)
    assert not resumed and entry.restored and entry.monitor.alerting
    assert entry.event_seq == snap["event_seq"] > 5  # event numbers go on from the old stream's
    started, replay = resume_events(entry, resumed, last_event=5)
    assert started["restored"] and started["alerting"] and not started["resumed"]
    assert replay[0]["code"] == "events_missed" and replay[0]["count"] == snap["event_seq"] - 6


@pytest.mark.parametrize("changed", [{"threshold": 7}, {"windows": 4}])
def test_a_reconnect_with_another_config_starts_afresh(changed):
    cfg = StreamConfig(threshold=6, windows=3)
    _, snap = checkpointed(cfg)
    here = StreamRegistry(StreamLimits(), 10**7)
    other_cfg = cfg.model_copy(update=changed)
    entry, _ = here.acquire(start(config=other_cfg, last_event=5), "bed-3-ckpt", "key-1", restore=snap)
    assert not entry.restored and not entry.monitor.alerting
    # nor does a checkpoint of another config displace a copy held here with this one
    here.detach(entry)
    again, resumed = here.acquire(start(config=other_cfg, last_event=5), "bed-3-ckpt", "key-1", restore=snap)
    assert again is entry and resumed


def test_a_copy_left_behind_gives_way_to_the_checkpoint_of_one_that_went_on():
    cfg = StreamConfig(threshold=6, windows=3)
    other, snap = checkpointed(cfg)
    here = StreamRegistry(StreamLimits(), 10**7)
    stale, _ = here.acquire(start(config=cfg), "bed-3-ckpt", "key-1")  # an earlier copy of the same id
    here.detach(stale)
    entry, resumed = here.acquire(start(config=cfg, last_event=5), "bed-3-ckpt", "key-1", restore=snap)
    assert entry is not stale and entry.restored and entry.monitor.alerting and not resumed
    here.detach(entry)
    # the holder's own (older or equal) checkpoint does not replace it
    again, resumed = here.acquire(start(config=cfg, last_event=5), "bed-3-ckpt", "key-1", restore=snap)
    assert again is entry and resumed


def test_a_copy_left_behind_numbers_on_after_what_the_client_already_holds():
    """With no newer checkpoint, the copy left at event 99 went on numbering from 100 while the client held
    events up to 120: a client dropping duplicate seqs lost real scores and alerts."""
    here = StreamRegistry(StreamLimits(), 10**7)
    entry, _ = here.acquire(start(), "bed-4-ckpt", "key-1")
    entry.event_seq = 100
    here.detach(entry)
    again, resumed = here.acquire(start(last_event=120), "bed-4-ckpt", "key-1")
    assert again is entry and resumed and entry.event_seq == 121


def test_a_resume_with_another_start_names_the_field_and_the_way_out():
    here = StreamRegistry(StreamLimits(), 10**7)
    entry, _ = here.acquire(start(age_group="adult"), "bed-5-ckpt", "key-1")
    here.detach(entry)
    with pytest.raises(
        StreamRejected, match="'age_group' differs. To start anew, use a new stream_id"
    ) as info:
        here.acquire(start(age_group="neonate", last_event=3), "bed-5-ckpt", "key-1")
    assert info.value.code == "bad_start"


def test_a_late_write_of_a_copy_left_behind_neither_replaces_nor_shortens_the_one_that_went_on():
    """Replica A's close-write arrived after the writes of replica B, where the stream went on: the store
    kept A's (fewer events, the alert on again after B had cleared it) and A's shorter TTL (an older
    config) applied to the stream, so its checkpoint expired while B still wrote it."""
    cfg = StreamConfig(threshold=6, windows=3, clear_windows=2)
    _, a_snap = checkpointed(cfg)  # A: the alert on, its last checkpoint
    b_reg = StreamRegistry(StreamLimits(), 10**7)
    b_entry, _ = b_reg.acquire(start(config=cfg, last_event=5), "bed-3-ckpt", "key-1", restore=a_snap)
    for event in feed(b_entry.monitor, [1, 1, 1]):  # on B the patient settles: the alert clears
        event["seq"] = b_entry.event_seq
        b_entry.event_seq += 1
    assert not b_entry.monitor.alerting
    clock = [0.0]
    store, key = Store(ttl_s=60, clock=lambda: clock[0]), routing_key("bed-3-ckpt", "key-1")
    store.put_many({key: ("key-1", b_entry.checkpoint())}, ttl_s=300)  # B runs with resume_ttl_s 300
    clock[0] += 1
    store.put_many({key: ("key-1", a_snap)}, ttl_s=60)  # A's late close-write, resume_ttl_s 60
    kept = store.get(key, "key-1")
    assert kept is not None and kept["event_seq"] == b_entry.event_seq and not kept["alert"]["alerting"]
    clock[0] += 120  # past A's TTL, within B's
    assert store.get(key, "key-1") == b_entry.checkpoint()
    store.put_many({key: ("key-1", b_entry.checkpoint())}, ttl_s=300)  # as far: B's own rewrite is taken
    restarted = start(config=cfg.model_copy(update={"threshold": 7}))  # another start: another stream
    store.put_many({key: ("key-1", {"start": resume_fields(restarted), "event_seq": 0})}, ttl_s=300)
    assert store.get(key, "key-1")["event_seq"] == 0


def test_an_expired_copy_does_not_keep_a_later_one_of_the_same_start_out():
    """An expired copy with more events (a stream that ran long, then stopped) stayed in a quiet store and
    turned away every write of the same start with fewer events, so a failover found nothing to restore."""
    clock = [0.0]
    store, key = Store(ttl_s=60, clock=lambda: clock[0]), routing_key("bed-4-ckpt", "key-1")
    fields = resume_fields(start())
    store.put(key, "key-1", {"start": fields, "event_seq": 50})
    clock[0] += 61  # past its TTL, not yet swept (nothing else was written)
    store.put(key, "key-1", {"start": fields, "event_seq": 3})
    assert store.get(key, "key-1") == {"start": fields, "event_seq": 3}


def test_a_modality_lost_before_the_restore_gets_its_signal_back_after_it():
    """The camera was lost on replica A (signal_lost), A died, the resume was restored on B: B's stream
    started with nothing lost, so the camera's return said nothing and a bedside "video lost" indicator
    stayed on."""
    start = Start(type="start", mode="landmarks", image_size=(640, 480), stream_id="bed-21-signal")
    held, _ = StreamRegistry(StreamLimits(), 10**7).acquire(start, "bed-21-signal", "key-1")
    held.state.signals.events(0, 0.0, True, True)
    assert kinds(held.state.signals.events(1, 1.0, True, False), "signal_lost")
    checkpoint = held.checkpoint()  # as the store keeps it (pickled through Ray)
    resume = start.model_copy(update={"last_event": held.event_seq - 1})
    restored, resumed = StreamRegistry(StreamLimits(), 10**7).acquire(
        resume, "bed-21-signal", "key-1", checkpoint
    )
    assert not resumed and restored.restored
    back = restored.state.signals.events(0, 0.0, True, True)
    assert [(e["type"], e["modality"]) for e in back] == [("signal_back", "visual")]
    del checkpoint["signals_lost"]  # a checkpoint written before the field: nothing lost, as before
    older, _ = StreamRegistry(StreamLimits(), 10**7).acquire(resume, "bed-21-signal", "key-1", checkpoint)
    assert older.state.signals.events(0, 0.0, True, True) == []
