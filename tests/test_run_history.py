"""A session that runs for weeks keeps a bounded history of finished runs, final images only for
the newest few, while the latest run and the status stay what clients read."""

from bridge.live import runner as runner_mod
from _live import WsClient, is_json, live_session


def test_run_history_stays_bounded_after_many_runs(tiny_engine, monkeypatch):
    monkeypatch.setattr(runner_mod, "HISTORY_RUNS", 4)
    monkeypatch.setattr(runner_mod, "HISTORY_IMAGES", 2)
    runs = 9
    with live_session(tiny_engine, mode="installation", playlist=["a red apple", "a blue bird"], steps=1,
                      pause=0.0, loops=0) as session:
        client = WsClient(session.websocket.url)
        r = session.runner
        assert r.wait_for(lambda r: r.runs_done >= runs, 240), f"only {r.runs_done} runs finished"
        r.set_mode("vj", None)  # stop the playlist; the history is read with no run going
        assert r.wait_for(lambda r: r.state == "idle", 60)
        done = r.runs_done
        history = list(r.runs)
        client.send({"type": "status"})
        status = client.until(is_json("status", run_id=r.run_id))
        client.close()
    assert done >= runs and len(history) == 4
    assert all(end.status == "completed" for end in history)
    assert history[-1].run_id == r.run_id == session.status()["run_id"] == status["run_id"]
    assert [end.image is not None for end in history] == [False, False, True, True]
    assert history[-1].image.shape == (64, 64, 3)
