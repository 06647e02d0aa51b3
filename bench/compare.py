#!/usr/bin/env python3
"""ihp-infra against Terraform, side by side, on the same machine and stack.

For each tool and run, against a fresh moto server of its own (pinned, see
localstack/moto.sh), with the same stack values: plan of an empty account,
apply, a second plan, a no-op apply, destroy. For each phase: wall time, the
AWS API calls the emulator recorded, and the peak resident memory of the
tool's whole process tree (Terraform plus its AWS provider). Prints a table
with min and median and the ratios, checks the targets of issue 6, and
writes the raw numbers as JSON.

With --latency-ms N every request goes through a local proxy that holds it
back N ms, as AWS's round trips do; ihp-infra's apply is then compared with
its own critical path (the longest chain of calls that depend on one
another, which it reports at -v), times N.

    bench/compare.py                      3 runs, both tools, release build
    bench/compare.py --latency-ms 100
    bench/compare.py --runs 1 --phases plan --binary target/debug/ihp-infra
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ["plan", "apply", "plan-again", "apply-noop", "destroy"]
REGION = "eu-central-1"
PASSWORD = "bench-password-123"
KEY = "bench-key"


def cache_dir() -> Path:
    return Path(os.environ.get("IHP_INFRA_CACHE", Path.home() / ".cache/ihp-infra"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the emulator ---------------------------------------------------------


def die_with_parent():
    """Linux: the emulator is killed when this script dies, even by kill -9,
    so an interrupted benchmark leaves nothing running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except OSError:
        pass


class Moto:
    """A fresh moto server recording every request."""

    def __init__(self, workdir: Path):
        subprocess.run([ROOT / "localstack/moto.sh", "install"], check=True)
        server = subprocess.run(
            [ROOT / "localstack/moto.sh", "path"], check=True, capture_output=True, text=True
        ).stdout.strip()
        amis = subprocess.run(
            [ROOT / "localstack/moto.sh", "amis"], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.port = free_port()
        self.recording = workdir / f"moto-{self.port}.jsonl"
        env = dict(
            os.environ,
            MOTO_ENABLE_RECORDING="true",
            MOTO_RECORDER_FILEPATH=str(self.recording),
            MOTO_AMIS_PATH=amis,
        )
        self.log = open(workdir / f"moto-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto did not start")
        subprocess.run(
            [ROOT / "localstack/moto.sh", "key-pair", str(self.port), REGION, KEY], check=True
        )

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_count(self):
        self.recording.write_text("")

    def calls(self) -> int:
        try:
            return sum(1 for line in self.recording.read_text().splitlines() if line.strip())
        except FileNotFoundError:
            return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --- the latency proxy ----------------------------------------------------


class LatencyProxy:
    """Holds each HTTP request back `delay` seconds, then passes it on; the
    answers come back at once. Requests are read whole (head and
    Content-Length body), so each is delayed exactly once."""

    def __init__(self, upstream: int, delay: float):
        self.upstream, self.delay = upstream, delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait()

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, started):
        asyncio.set_event_loop(self.loop)

        def quiet(loop, context):
            # Pumps still waiting when the proxy stops between runs are expected.
            if "Task was destroyed" not in context.get("message", ""):
                loop.default_exception_handler(context)

        self.loop.set_exception_handler(quiet)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        started.set()
        self.loop.run_forever()
        server.close()

    async def _serve(self, client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_w.close()
            return

        async def answers():
            try:
                while data := await up_r.read(65536):
                    client_w.write(data)
                    await client_w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                client_w.close()

        pump = asyncio.ensure_future(answers())
        try:
            while True:
                head = await client_r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await client_r.readexactly(length) if length else b""
                await asyncio.sleep(self.delay)
                up_w.write(head + body)
                await up_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            up_w.close()
            await pump

    def stop(self):
        async def shutdown():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=5)
        except Exception:  # already stopped, or stuck: it is a daemon thread
            pass


# --- measuring a command --------------------------------------------------


def tree_rss_kib(root: int) -> int:
    """Resident memory of a process and all its descendants, in KiB: from
    /proc on Linux, from ps(1) elsewhere (macOS has no /proc)."""
    if Path("/proc/self/status").exists():
        return walk_tree(root, proc_rss_and_children)
    # `ps -A -o pid=,ppid=,rss=` is POSIX; rss in KiB.
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,rss="], capture_output=True, text=True
    ).stdout
    children, rss = {}, {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            continue
        pid, ppid, kib = map(int, fields)
        rss[pid] = kib
        children.setdefault(ppid, []).append(pid)
    return walk_tree(root, lambda pid: (rss.get(pid, 0), children.get(pid, [])))


def proc_rss_and_children(pid: int):
    """A process's resident KiB and child pids, from /proc."""
    kib, children = 0, []
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                kib = int(line.split()[1])
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.extend(int(c) for c in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return kib, children


def walk_tree(root: int, rss_and_children) -> int:
    """The sum of rss_and_children(pid)[0] over root and its descendants."""
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        kib, children = rss_and_children(pid)
        total += kib
        todo.extend(children)
    return total


def measure(cmd, cwd, env, moto: Moto):
    """Runs cmd; returns (exit code, wall seconds, calls, peak KiB, stderr)."""
    moto.reset_count()
    peak = 0
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    stderr_chunks = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()))
    reader.start()
    while proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.02)
    wall = time.monotonic() - started
    reader.join()
    # The recorder writes after answering: let the last lines land.
    time.sleep(0.2)
    stderr = b"".join(stderr_chunks).decode(errors="replace")
    return proc.returncode, wall, moto.calls(), peak, stderr


# --- the two tools --------------------------------------------------------


def stack_yaml(prefix: str) -> str:
    return (
        f"prefix: {prefix}\nregion: {REGION}\naz_1: {REGION}a\naz_2: {REGION}b\n"
        f"key_name: {KEY}\ndb_password: \"{PASSWORD}\"\n"
        "instance:\n  nixos_release: \"26.05\"\n  architecture: x86_64\n"
        "database:\n  engine_version: \"16\"\n"
    )


class IhpInfra:
    name = "ihp-infra"

    def __init__(self, binary: Path, workdir: Path):
        self.binary, self.dir = binary, workdir / "ihp-infra"
        self.dir.mkdir(exist_ok=True)
        (self.dir / "stack.yaml").write_text(stack_yaml("bench"))

    def env(self, endpoint):
        return dict(
            PATH=os.environ["PATH"],
            HOME=str(self.dir),
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_EC2_METADATA_DISABLED="true",
        )

    def prepare(self, endpoint):
        pass

    def command(self, phase):
        b = str(self.binary)
        return {
            "plan": [b, "plan"],
            "apply": [b, "apply", "--auto-approve"],
            "plan-again": [b, "plan", "--detailed-exitcode"],
            "apply-noop": [b, "apply", "--auto-approve"],
            "destroy": [b, "destroy", "--auto-approve", "--skip-final-snapshot"],
        }[phase]


class Terraform:
    name = "terraform"

    def __init__(self, workdir: Path):
        self.dir = workdir / "terraform"
        self.dir.mkdir(exist_ok=True)
        shutil.copy(ROOT / "bench/terraform/main.tf", self.dir / "main.tf")
        mirror = os.environ.get("TF_PLUGIN_MIRROR", "/opt/tf-plugins")
        rc = (ROOT / "bench/terraform/offline.tfrc").read_text().replace("MIRROR", mirror)
        (self.dir / "offline.tfrc").write_text(rc)

    def env(self, endpoint):
        return dict(
            PATH=os.environ["PATH"],
            HOME=str(self.dir),
            TF_CLI_CONFIG_FILE=str(self.dir / "offline.tfrc"),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            TF_VAR_endpoint=endpoint,
            TF_VAR_prefix="bench",
            TF_VAR_region=REGION,
            TF_VAR_key_name=KEY,
            TF_VAR_db_password=PASSWORD,
        )

    def prepare(self, endpoint):
        """Init once per run (not measured); no state from an earlier run."""
        for leftover in self.dir.glob("terraform.tfstate*"):
            leftover.unlink()
        subprocess.run(
            ["terraform", "init", "-input=false", "-no-color"],
            cwd=self.dir,
            env=self.env(endpoint),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def command(self, phase):
        return {
            "plan": ["terraform", "plan", "-input=false", "-no-color", "-lock=false"],
            "apply": ["terraform", "apply", "-auto-approve", "-input=false", "-no-color"],
            "plan-again": ["terraform", "plan", "-detailed-exitcode", "-input=false", "-no-color"],
            "apply-noop": ["terraform", "apply", "-auto-approve", "-input=false", "-no-color"],
            "destroy": ["terraform", "destroy", "-auto-approve", "-input=false", "-no-color"],
        }[phase]


def critical_path_calls(stderr: str):
    """ihp-infra's own critical path, from its -v JSON log."""
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        fields = event.get("fields", {})
        if "critical_path_calls" in fields:
            return fields["critical_path_calls"]
    return None


def warm_up(moto: Moto, binary: Path, workdir: Path):
    """moto loads each service on its first call (about a second): make
    those calls before measuring, the same for both tools."""
    warm = workdir / "warm-up"
    warm.mkdir(exist_ok=True)
    (warm / "stack.yaml").write_text(stack_yaml("warm"))
    env = dict(PATH=os.environ["PATH"], HOME=str(warm), AWS_ENDPOINT_URL=moto.endpoint(),
               AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    subprocess.run([binary, "plan"], cwd=warm, env=env, check=True, stdout=subprocess.DEVNULL)


def run_tool(tool, phases, runs, latency_ms, workdir, results, binary):
    for run in range(runs):
        moto = Moto(workdir)
        warm_up(moto, binary, workdir)
        proxy = LatencyProxy(moto.port, latency_ms / 1000) if latency_ms else None
        endpoint = proxy.endpoint() if proxy else moto.endpoint()
        try:
            tool.prepare(endpoint)
            for phase in phases:
                cmd = tool.command(phase)
                if latency_ms and tool.name == "ihp-infra" and phase == "apply":
                    cmd = cmd + ["-v", "--log-format", "json"]
                code, wall, calls, peak, stderr = measure(cmd, tool.dir, tool.env(endpoint), moto)
                # plan-again runs with --detailed-exitcode: 2 would mean changes.
                if code not in (0, 2) or (code == 2 and phase != "plan-again"):
                    sys.stderr.write(stderr[-3000:])
                    raise RuntimeError(f"{tool.name} {phase} exited {code}")
                entry = dict(
                    tool=tool.name, run=run + 1, phase=phase, seconds=round(wall, 3),
                    calls=calls, peak_rss_mib=round(peak / 1024, 1), exit_code=code,
                )
                if latency_ms and tool.name == "ihp-infra" and phase == "apply":
                    entry["critical_path_calls"] = critical_path_calls(stderr)
                results.append(entry)
                print(
                    f"  {tool.name:9} run {run + 1} {phase:10} {wall:7.2f} s "
                    f"{calls:4} calls {peak / 1024:7.1f} MiB",
                    file=sys.stderr,
                )
        finally:
            if proxy:
                proxy.stop()
            moto.stop()


def summarize(results, phases, latency_ms):
    def stats(tool, phase, key):
        values = [r[key] for r in results if r["tool"] == tool and r["phase"] == phase]
        return (min(values), statistics.median(values)) if values else (None, None)

    tools = sorted({r["tool"] for r in results}, key=lambda t: t != "ihp-infra")
    lines = []
    header = "| phase | " + " | ".join(
        f"{t} s (min / median) | {t} calls | {t} MiB" for t in tools
    )
    if len(tools) == 2:
        header += " | time ratio | calls ratio | memory ratio"
    lines.append(header + " |")
    lines.append("|" + " --- |" * (header.count("|")))
    checks = []
    for phase in phases:
        row = f"| {phase} |"
        per = {}
        for t in tools:
            smin, smed = stats(t, phase, "seconds")
            _, cmed = stats(t, phase, "calls")
            _, mmed = stats(t, phase, "peak_rss_mib")
            per[t] = (smed, cmed, mmed)
            row += f" {smin:.2f} / {smed:.2f} | {cmed:.0f} | {mmed:.0f} |"
        if len(tools) == 2:
            (i_s, i_c, i_m), (t_s, t_c, t_m) = per["ihp-infra"], per["terraform"]
            row += f" {t_s / i_s:.0f}x | {i_c / t_c:.2f} | {i_m / t_m:.3f} |"
            want = {"plan": 50, "apply": 20, "destroy": 20}.get(phase)
            if want and not latency_ms:
                checks.append((f"{phase}: at least {want}x faster", t_s / i_s >= want, f"{t_s / i_s:.0f}x"))
            checks.append((f"{phase}: no more calls than Terraform", i_c <= t_c, f"{i_c:.0f} vs {t_c:.0f}"))
        lines.append(row)
    if len(tools) == 2:
        i_peak = max(r["peak_rss_mib"] for r in results if r["tool"] == "ihp-infra")
        t_peak = max(r["peak_rss_mib"] for r in results if r["tool"] == "terraform")
        checks.append(("peak memory at most 1/20 of Terraform's", i_peak * 20 <= t_peak,
                       f"{i_peak:.0f} vs {t_peak:.0f} MiB"))
    for t in tools:
        again = [r["exit_code"] for r in results if r["tool"] == t and r["phase"] == "plan-again"]
        if again:
            checks.append((f"{t}: second plan shows no changes", all(c == 0 for c in again),
                           f"--detailed-exitcode gave {sorted(set(again))}"))
    if latency_ms:
        applies = [r for r in results if r["tool"] == "ihp-infra" and r["phase"] == "apply"]
        for r in applies:
            if r.get("critical_path_calls"):
                floor = r["critical_path_calls"] * latency_ms / 1000
                ratio = r["seconds"] / floor
                r["critical_path_seconds"] = round(floor, 3)
                checks.append((
                    f"apply run {r['run']} within 1.5x its critical path",
                    ratio <= 1.5,
                    f"{r['seconds']:.2f} s vs {r['critical_path_calls']} calls x {latency_ms} ms = {floor:.2f} s ({ratio:.2f}x)",
                ))
    return "\n".join(lines), checks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="ihp-infra,terraform")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--binary", help="an ihp-infra binary (default: build the release one)")
    ap.add_argument("--out", help="where the raw numbers go (default bench/results/<mode>.json)")
    args = ap.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        ap.error(f"unknown phases {sorted(unknown)}; allowed: {', '.join(PHASES)}")
    tools = args.tools.split(",")

    if args.binary:
        binary = Path(args.binary).resolve()
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", cache_dir() / "target"))
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=str(target)))
        binary = target / "release/ihp-infra"

    results = []
    with tempfile.TemporaryDirectory(prefix="ihp-infra-bench-") as tmp:
        workdir = Path(tmp)
        for name in tools:
            tool = IhpInfra(binary, workdir) if name == "ihp-infra" else Terraform(workdir)
            run_tool(tool, phases, args.runs, args.latency_ms, workdir, results, binary)

    table, checks = summarize(results, phases, args.latency_ms)
    machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.platform()}"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = f"{args.latency_ms} ms added latency" if args.latency_ms else "no added latency"
    print(f"\n{when}, {machine}; moto 5.2.5; {mode}; {args.runs} run(s); binary {binary.name} ({binary.parent.name})\n")
    print(table)
    if checks:
        print()
        for what, ok, detail in checks:
            print(f"  {'ok  ' if ok else 'MISS'} {what}: {detail}")
    out = Path(args.out) if args.out else ROOT / "bench/results" / (
        f"latency-{args.latency_ms}ms.json" if args.latency_ms else "no-latency.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        when=when, machine=machine, mode=mode, runs=args.runs, phases=phases,
        results=results, checks=[dict(what=w, ok=o, detail=d) for w, o, d in checks],
    ), indent=2) + "\n")
    print(f"\nraw numbers: {out}")


if __name__ == "__main__":
    main()
