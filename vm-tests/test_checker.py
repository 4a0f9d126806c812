"""Unit tests of the history checker on synthetic histories: cd vm-tests && python3 -m unittest"""

import unittest

import checker


def ack(i, server, tl, sent, ack_=None, via="proxy", target=None, lsn="0/1000000"):
    return {"id": i, "server": server, "timeline": tl, "sent": sent,
            "ack": sent + 0.01 if ack_ is None else ack_, "via": via,
            "target": target or ("proxy1" if via == "proxy" else "pg1"), "lsn": lsn}


def clean_failover():
    """A master on tl1 until 10 s, nothing for 8 s, a new master on tl2 from 18 s."""
    h = [ack(n, "10.0.0.1", 1, n * 0.1) for n in range(100)]
    h += [ack(1000 + n, "10.0.0.2", 2, 18 + n * 0.1) for n in range(50)]
    return h


class Reigns(unittest.TestCase):
    def test_clean_failover_has_two_reigns_and_no_window(self):
        h = clean_failover()
        self.assertEqual(len(checker.reigns(h)), 2)
        self.assertEqual(checker.dual_master_windows(h), [])

    def test_old_master_acknowledging_after_the_new_one_is_a_certain_window(self):
        h = clean_failover()
        # The isolated old master still takes a direct write at 20 s.
        h.append(ack(5000, "10.0.0.1", 1, 20.0, via="direct"))
        w = checker.dual_master_windows(h)
        self.assertEqual(len(w), 1)
        self.assertTrue(w[0]["certain"])
        self.assertEqual(w[0]["reigns"], ["10.0.0.1/tl1", "10.0.0.2/tl2"])
        self.assertAlmostEqual(w[0]["start"], 18.01)
        self.assertAlmostEqual(w[0]["end"], 20.01)

    def test_a_late_acknowledgement_is_an_uncertain_window_that_still_counts(self):
        h = clean_failover()
        # Sent at 17.9 s to the old master, acknowledged at 18.05 s: after the new master's first
        # ack (18.01 s) but the commit may have happened before it.
        h.append(ack(5000, "10.0.0.1", 1, 17.9, 18.05))
        w = checker.dual_master_windows(h)
        self.assertEqual(len(w), 1)
        self.assertFalse(w[0]["certain"])
        v = checker.check(h, [{"type": "crash", "at": 12.0}], [a["id"] for a in h], "sync", 1 << 20)
        self.assertEqual(v["dual_master_windows"], 1)
        self.assertTrue(v["reasons"])

    def test_same_server_new_timeline_is_a_new_reign(self):
        h = [ack(1, "10.0.0.1", 1, 0.0), ack(2, "10.0.0.1", 1, 1.0),
             ack(3, "10.0.0.2", 2, 5.0), ack(4, "10.0.0.1", 3, 9.0)]
        self.assertEqual(len(checker.reigns(h)), 3)
        self.assertEqual(checker.dual_master_windows(h), [])

    def test_three_overlapping_reigns_count_each_pair(self):
        h = [ack(1, "a", 1, 0.0), ack(2, "a", 1, 10.0), ack(3, "b", 2, 1.0), ack(4, "b", 2, 9.0),
             ack(5, "c", 3, 2.0), ack(6, "c", 3, 8.0)]
        self.assertEqual(len(checker.dual_master_windows(h)), 3)


class Lost(unittest.TestCase):
    def test_sync_loses_nothing(self):
        h = clean_failover()
        v = checker.check(h, [{"type": "crash", "at": 12.0}], [a["id"] for a in h], "sync", 1 << 20)
        self.assertEqual(v["reasons"], [])
        self.assertEqual(v["lost_acknowledged_writes"], 0)
        self.assertEqual(v["acknowledged_writes"], 150)

    def test_sync_with_one_lost_write_fails(self):
        h = clean_failover()
        final = [a["id"] for a in h if a["id"] != 99]
        v = checker.check(h, [{"type": "crash", "at": 12.0}], final, "sync", 1 << 20)
        self.assertEqual(v["lost_acknowledged_writes"], 1)
        self.assertIn("lost with synchronous replication", v["reasons"][0])

    def test_async_loss_within_max_standby_lag_passes_and_is_reported(self):
        h = [ack(n, "a", 1, n * 0.1, lsn=f"0/{0x1000000 + n * 200:X}") for n in range(100)]
        h += [ack(1000 + n, "b", 2, 20 + n * 0.1) for n in range(10)]
        final = [a["id"] for a in h if not 90 <= a["id"] < 100]
        v = checker.check(h, [{"type": "crash", "at": 10.0}], final, "async", 1 << 20)
        self.assertEqual(v["lost_acknowledged_writes"], 10)
        self.assertEqual(v["reasons"], [])

    def test_async_loss_beyond_max_standby_lag_fails(self):
        h = [ack(n, "a", 1, n * 0.1, lsn=f"0/{0x1000000 + n * 0x10000:X}") for n in range(100)]
        h += [ack(1000, "b", 2, 20.0)]
        final = [1000]
        v = checker.check(h, [{"type": "crash", "at": 10.0}], final, "async", 1 << 20)
        self.assertEqual(v["lost_acknowledged_writes"], 100)
        self.assertIn("beyond maxStandbyLag", v["reasons"][0])


class Failover(unittest.TestCase):
    def test_failover_time_is_fault_to_first_new_reign_ack_through_a_proxy(self):
        h = clean_failover()
        # A direct write to the new master earlier than any proxy ack does not count.
        h.append(ack(7000, "10.0.0.2", 2, 17.0, via="direct"))
        f = checker.failover_figures(h, [{"type": "crash_master", "at": 10.0}])
        self.assertAlmostEqual(f[0]["failover_seconds"], 8.01)
        self.assertEqual(f[0]["new_master"], "10.0.0.2/tl2")
        self.assertAlmostEqual(f[0]["unavailable_seconds"], 8.01, places=2)

    def test_no_new_master_gives_none_and_the_outage(self):
        h = [ack(n, "a", 1, n * 0.1) for n in range(50)] + [ack(100 + n, "a", 1, 15 + n * 0.1) for n in range(10)]
        f = checker.failover_figures(h, [{"type": "etcd_quorum_loss", "at": 5.0}])
        self.assertIsNone(f[0]["failover_seconds"])
        self.assertGreater(f[0]["unavailable_seconds"], 10.0)

    def test_each_fault_of_a_campaign_has_its_figure(self):
        h = [ack(n, "a", 1, n * 0.1) for n in range(50)]
        h += [ack(100 + n, "b", 2, 8 + n * 0.1) for n in range(50)]
        h += [ack(200 + n, "c", 3, 16 + n * 0.1) for n in range(50)]
        f = checker.failover_figures(h, [{"type": "x", "at": 5.0}, {"type": "y", "at": 13.0}])
        self.assertAlmostEqual(f[0]["failover_seconds"], 3.01)
        self.assertAlmostEqual(f[1]["failover_seconds"], 3.01)
        v = checker.check(h, [{"type": "x", "at": 5.0}, {"type": "y", "at": 13.0}],
                          [a["id"] for a in h], "sync", 1 << 20)
        self.assertAlmostEqual(v["failover_seconds"], 3.01)
        self.assertEqual(v["dual_master_windows"], 0)

    def test_an_outage_lasting_to_the_end_counts_to_when_the_writer_stopped(self):
        h = [ack(n, "a", 1, n * 0.1) for n in range(50)]
        f = checker.failover_figures(h, [{"type": "partition_master", "at": 5.0}], end=90.0)
        self.assertIsNone(f[0]["failover_seconds"])
        self.assertAlmostEqual(f[0]["unavailable_seconds"], 85.0)

    def test_no_acks_fails(self):
        v = checker.check([], [], [], "sync", 1 << 20)
        self.assertIn("no write was acknowledged at all", v["reasons"])


if __name__ == "__main__":
    unittest.main()
