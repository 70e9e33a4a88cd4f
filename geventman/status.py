"""Status and connection reports: files written by the processes, read by the CLI.

``status`` makes the master write ``master.json`` (global facts and its children) and
each child write ``<pid>.json`` (its counters) into the status folder next to the pid
file. The CLI waits a bounded time for them; a child that does not answer in time
(stuck in a handler) is shown as busy instead of hanging the command.
"""
import json
import os
import time

from geventman import reserve, table
from geventman.log import log

BUSY = "[busy]"


def write_json(path, data):
    """Write atomically. A report that cannot be written (the folder was cleared by
    another ``status`` meanwhile, a full disk) is logged: it must not end the master,
    which writes from its only loop."""
    try:
        reserve.retry(_write, path, data)  # at the open-file limit too
    except OSError as error:
        log("cannot write %s: %s" % (path, error))


def _write(path, data):
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def clear(directory):
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def collect(directory, suffix, timeout=1.0):
    """Wait for master.json, then for one ``<pid><suffix>`` per child; bounded by timeout."""
    deadline = time.monotonic() + timeout
    master = None
    while master is None and time.monotonic() < deadline:
        master = read_json(os.path.join(directory, "master.json"))
        time.sleep(0.01)
    if master is None:
        return None, {}
    answers = {}
    pids = [child["pid"] for child in master["children"]]
    while time.monotonic() < deadline + timeout:
        for pid in pids:
            if pid not in answers:
                answer = read_json(os.path.join(directory, "%d%s" % (pid, suffix)))
                if answer is not None:
                    answers[pid] = answer
        if len(answers) == len(pids):
            break
        time.sleep(0.01)
    return master, answers


def memory_of(pid):
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss
    except Exception:  # gone, or psutil missing: the column says N/A
        return None


def readable_time(seconds):
    """Local time without a space (the tables split on whitespace): 2026-01-05T10:00:00."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def process_rows(master, answers):
    """One dict per child: the child's own report, or a busy placeholder. When the
    child started comes from the master, which knows it even for a busy child."""
    rows = []
    for child in master["children"]:
        row = answers.get(child["pid"]) or {
            "pid": child["pid"], "name": child["name"], "listen": child["listen"],
            "connections": None, "total_request": None, "send_fail": None,
            "throw_exception": None, "timers": None, "busy": True}
        row.setdefault("busy", False)
        row["memory"] = memory_of(child["pid"])
        row["start_time"] = child.get("start_time")
        row["timestamp"] = readable_time(row["start_time"])
        rows.append(row)
    return rows


def _megabytes(value):
    return "N/A" if value is None else "%.2fM" % (value / 1048576.0)


PROCESS_COLUMNS = ("pid", "memory", "listening", "timestamp", "worker_name", "connections",
                   "send_fail", "timers", "total_request", "throw_exception", "qps", "status")


def render(master, rows, qps=None):
    """The text of ``status``: Workerman's GLOBAL STATUS and PROCESS STATUS blocks."""
    processes = table.format_rows(PROCESS_COLUMNS, [
        (row["pid"], _megabytes(row["memory"]), row["listen"], row["timestamp"], row["name"],
         row["connections"], row["send_fail"], row["timers"], row["total_request"],
         row["throw_exception"], (qps or {}).get(row["pid"], 0),
         BUSY if row["busy"] else "[idle]") for row in rows])
    exits = table.format_rows(("worker_name", "exit_status", "exit_count"), [
        (name, code, count) for name, counts in master["exits"].items()
        for code, count in (sorted(counts.items(), key=lambda item: int(item[0]))
                            or [(0, 0)])])
    started = master["start_time"]
    uptime = int(time.time() - started)
    facts = [
        "geventman version:%s          Python version:%s   hot path:%s" % (
            master["version"], master["python"], master.get("hot_path", "?")),
        "start time:%s   run %d days %d hours %d minutes" % (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            uptime // 86400, uptime % 86400 // 3600, uptime % 3600 // 60),
        "load average: %s" % ", ".join("%.2f" % x for x in master["load"]),
        "%d workers       %d processes" % (len(master["workers"]), len(master["children"])),
    ]
    gateways = gateway_rows(rows)
    width = table.width(facts + exits + processes + gateways)
    blocks = [table.title("GLOBAL STATUS", width)] + facts + exits
    blocks += [table.title("PROCESS STATUS", width)] + processes
    if gateways:
        blocks += [table.title("GATEWAY STATUS", width)] + gateways
    return "\n".join(blocks + ["-" * width])


#: Status fields of gateway processes (clients held, messages relayed, business workers
#: linked) and business worker processes (gateways linked, events handled).
GATEWAY_COLUMNS = ("pid", "worker_name", "clients", "relayed", "business_workers",
                   "gateways", "handled")


def gateway_rows(rows):
    """The GATEWAY STATUS block's lines, or [] when no process is a gateway or a
    business worker."""
    found = [row for row in rows if "clients" in row or "handled" in row]
    if not found:
        return []
    return table.format_rows(GATEWAY_COLUMNS, [
        (row["pid"], row["name"]) + tuple(row.get(key, "-") for key in GATEWAY_COLUMNS[2:])
        for row in found])


CONNECTION_COLUMNS = ("PID", "Worker", "CID", "Trans", "Protocol", "Send-Q", "Bytes-R",
                      "Bytes-W", "Status", "Local Address", "Foreign Address")


def render_connections(master, answers):
    """The text of ``connections``. Two headers have a space in them (as netstat's):
    a busy child's row ends with [busy] where the columns would be."""
    rows = []
    for child in master["children"]:
        found = answers.get(child["pid"])
        if found is None:
            rows.append((child["pid"], child["name"], BUSY))
            continue
        for row in found:
            rows.append((child["pid"], row["worker"], row["id"], row["transport"],
                         row["protocol"], row["send_q"], row["bytes_read"],
                         row["bytes_written"], row["state"], row["local"], row["remote"])
                        + _client_columns(row))
    columns = CONNECTION_COLUMNS
    if any(len(row) > len(CONNECTION_COLUMNS) for row in rows):
        columns += CLIENT_COLUMNS
        rows = [row + ("-",) * (len(columns) - len(row)) if len(row) > 3 else row
                for row in rows]
    return "\n".join(table.format_rows(columns, rows))


#: Extra columns for the clients of a gateway.
CLIENT_COLUMNS = ("Client-ID", "Uid", "Groups")


def _client_columns(row):
    if "client_id" not in row:
        return ()
    return (row["client_id"], row["uid"] or "-", ",".join(row["groups"]) or "-")
