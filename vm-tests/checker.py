"""History checker of the host-failure suite. Pure: takes the writer's acknowledgements (dicts as
writer.py records them), the faults injected and the ids present on the final master; no I/O.

Definitions (all times on the client host's clock):
- reign: one master period of one PostgreSQL, identified by (server address, WAL timeline) as
  returned with each acknowledgement. A promotion starts a new timeline, so a server that is
  master twice has two reigns.
- dual-master window: two reigns whose [first ack, last ack] intervals overlap. Each window also
  says whether the overlap is certain: the commit of a write happened somewhere in [sent, ack],
  so two reigns certainly accepted writes at once when each has a write acknowledged before the
  other sent a later one (A.first_ack < B.last_sent and B.first_ack < A.last_sent). Both kinds
  count: the suite fails on any window.
- lost acknowledged write: acknowledged by any reign, absent from the final master.
- failover time of a fault: fault → first write acknowledged through a proxy by a reign other
  than the one that acknowledged the last proxy write before the fault (None when no other
  reign took over); unavailable_seconds: the longest gap between proxy acknowledgements from
  the fault to the end of the history (or the next fault).
"""

from collections import defaultdict


def reigns(acks):
    """(server, timeline) -> {first_ack, last_ack, first_sent, last_sent, count, min_lsn, max_lsn}."""
    out = {}
    for a in acks:
        key = (a["server"], a["timeline"])
        r = out.get(key)
        if r is None:
            r = out[key] = {"server": a["server"], "timeline": a["timeline"], "first_ack": a["ack"],
                            "last_ack": a["ack"], "last_sent": a["sent"], "count": 0}
        r["first_ack"] = min(r["first_ack"], a["ack"])
        r["last_ack"] = max(r["last_ack"], a["ack"])
        r["last_sent"] = max(r["last_sent"], a["sent"])
        r["count"] += 1
    return out


def dual_master_windows(acks):
    """Every pair of reigns whose [first ack, last ack] intervals overlap, earliest first."""
    rs = sorted(reigns(acks).values(), key=lambda r: r["first_ack"])
    windows = []
    for i, a in enumerate(rs):
        for b in rs[i + 1:]:
            start, end = max(a["first_ack"], b["first_ack"]), min(a["last_ack"], b["last_ack"])
            if start <= end:
                in_window = defaultdict(int)
                for x in acks:
                    if start <= x["ack"] <= end and (x["server"], x["timeline"]) in (
                            (a["server"], a["timeline"]), (b["server"], b["timeline"])):
                        in_window[f'{x["server"]}/tl{x["timeline"]} via {x["target"]}'] += 1
                windows.append({
                    "reigns": [f'{a["server"]}/tl{a["timeline"]}', f'{b["server"]}/tl{b["timeline"]}'],
                    "start": start, "end": end, "seconds": round(end - start, 3),
                    "certain": a["first_ack"] < b["last_sent"] and b["first_ack"] < a["last_sent"],
                    "acks_in_window": dict(in_window),
                })
    return windows


def parse_lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def lost_writes(acks, final_ids):
    final = set(final_ids)
    return [a for a in acks if a["id"] not in final]


def lost_within_lag(lost, max_standby_lag, slack=64 * 1024):
    """Asynchronous replication may lose what the promoted standby had not received: per reign,
    the WAL span of the lost writes must stay within maxStandbyLag (plus a little slack for the
    writes of the last instants before the standby's last report)."""
    by_reign = defaultdict(list)
    for a in lost:
        by_reign[(a["server"], a["timeline"])].append(parse_lsn(a["lsn"]))
    spans = {f"{s}/tl{t}": max(v) - min(v) for (s, t), v in by_reign.items()}
    return all(span <= max_standby_lag + slack for span in spans.values()), spans


def failover_figures(acks, faults, end=None):
    """Per fault (dicts with "type" and "at", sorted by "at"): failover_seconds and
    unavailable_seconds (see the module doc)."""
    proxy = sorted((a for a in acks if a["via"] == "proxy"), key=lambda a: a["ack"])
    if end is None:
        end = max((a["ack"] for a in acks), default=0.0)
    out = []
    for i, f in enumerate(faults):
        at = f["at"]
        until = faults[i + 1]["at"] if i + 1 < len(faults) else end
        before = [a for a in proxy if a["ack"] <= at]
        old = (before[-1]["server"], before[-1]["timeline"]) if before else None
        new = next((a for a in proxy if a["ack"] > at and (a["server"], a["timeline"]) != old), None)
        failover = round(new["ack"] - at, 3) if new is not None and new["ack"] <= until else None
        times = [at] + [a["ack"] for a in proxy if at < a["ack"] <= until] + [until]
        gap = max(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else 0.0
        out.append({"type": f["type"], "at": at, "failover_seconds": failover,
                    "new_master": f"{new['server']}/tl{new['timeline']}" if failover is not None else None,
                    "unavailable_seconds": round(gap, 3)})
    return out


def check(acks, faults, final_ids, replication, max_standby_lag, end=None):
    """The verdict of one scenario: figures plus a list of failure reasons (empty: passed).
    `end`: when the writer stopped (default: the last acknowledgement)."""
    windows = dual_master_windows(acks)
    lost = lost_writes(acks, final_ids)
    figures = failover_figures(acks, faults, end)
    reasons = []
    if windows:
        reasons.append(f"{len(windows)} dual-master window(s): " + "; ".join(
            f'{w["reigns"][0]} and {w["reigns"][1]} for {w["seconds"]} s'
            f'{" (certain)" if w["certain"] else ""}' for w in windows))
    lag_ok, spans = lost_within_lag(lost, max_standby_lag)
    if lost and replication == "sync":
        reasons.append(f"{len(lost)} acknowledged write(s) lost with synchronous replication "
                       f"(first ids: {[a['id'] for a in lost[:5]]})")
    elif lost and not lag_ok:
        reasons.append(f"{len(lost)} acknowledged write(s) lost, WAL spans {spans} beyond "
                       f"maxStandbyLag {max_standby_lag}")
    if not acks:
        reasons.append("no write was acknowledged at all")
    fo = [f["failover_seconds"] for f in figures if f["failover_seconds"] is not None]
    return {
        "acknowledged_writes": len(acks),
        "lost_acknowledged_writes": len(lost),
        "lost_wal_spans": spans,
        "dual_master_windows": len(windows),
        "windows": windows,
        "failover_seconds": max(fo) if fo else None,
        "failovers": figures,
        "reigns": [{**r, "reign": f'{r["server"]}/tl{r["timeline"]}'}
                   for r in sorted(reigns(acks).values(), key=lambda r: r["first_ack"])],
        "reasons": reasons,
    }
