"""The daemon's audit retention: the housekeeping task prunes a database's expired audit rows at start-up,
in passes of at most `audit_prune_batch` rows, records each pass, touches nothing else, and counts it on
/metrics. The store's pruning on its own is tests/unit/test_mauthserver_audit.py."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from mauthcore.rules import Rule
from mauthserver import daemon as daemon_module
from mauthserver.config import Options
from mauthserver.core import DesiredRule, Put
from mauthserver.daemon import Daemon
from mauthserver.store import Store
from tests.loopback.test_mauthserver_metrics import samples
from tests.support import waiting

DAY = 86400.0


def test_housekeeping_prunes_an_old_backlog_in_batches_and_counts_it(tmp_path, monkeypatch):
    now = time.time()
    old = now - 100 * DAY
    store = Store.open(tmp_path / "m.db", now=old)  # create-db, 100 days ago
    rule = DesiredRule(Rule.make("192.0.2.10", "239.1.1.1", 8), created=old, updated=old, actor="test")
    store.commit([Put(rule)], actor="test", action="add-sender", detail={}, now=old)
    with store.transaction(old) as tx:
        tx.db.executemany("INSERT INTO audit (at, actor, action, detail) VALUES (?, 'x', 'mode', '{}')",
                          [(old + i,) for i in range(21)])
    with store.transaction(now - DAY) as tx:
        tx.audit("alice", "flush", {"removed": 0})  # recent: kept
    store.close()

    monkeypatch.setattr(Daemon, "audit_prune_batch", 10)
    monkeypatch.setattr(daemon_module, "AUDIT_PRUNE_AGAIN", 0.01)
    opts = Options(db=str(tmp_path / "m.db"), api=("127.0.0.1", 0), sap=False, listen=None,
                   metrics=("127.0.0.1", 0), audit_max_age=30, audit_max_rows=0)
    d = Daemon(opts, "t" * 20, None)

    async def main():
        run = asyncio.get_running_loop().create_task(d.run())
        try:
            await waiting.until(lambda: d.audit_pruned == 23, 15.0, "23 old audit rows pruned")
            host, port = d._metrics_runner.addresses[0][:2]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://{host}:{port}/metrics") as resp:
                    return samples(await resp.text())
        finally:
            d._stop.set()
            assert await asyncio.wait_for(run, 10) == 0

    scraped = asyncio.run(main())
    assert scraped[("mauthserver_audit_pruned_rows_total", ())] == 23
    assert scraped[("mauthserver_audit_rows", ())] == 4

    store = Store.open(tmp_path / "m.db", now=time.time())
    try:
        rows = store.audit_log()
        assert [r["action"] for r in rows] == ["audit-pruned", "audit-pruned", "audit-pruned", "flush"]
        assert [(r["actor"], r["detail"]["removed"], r["detail"]["by"]) for r in rows[:3]] == \
            [("mauthserver", 3, "age"), ("mauthserver", 10, "age"), ("mauthserver", 10, "age")]
        assert rows[0]["detail"]["oldest_kept_id"] == rows[3]["id"]
        assert [r.rule for r in store.rules()] == [rule.rule]  # as old as the rows pruned, and kept
    finally:
        store.close()
