#!/usr/bin/env python3
"""`bench/run cluster`: clutch's examples/cluster_http against Node's cluster module and nginx, in one run.

  bench/cluster.py [CLUSTER_HTTP]     env: BENCH_SECONDS (10) per throughput run, ROUNDS (2)

Each server is started on a free port of 127.0.0.1, measured with wrk, and stopped before the next:
  throughput      wrk -t1 at 64 and 256 connections; the server list is run ROUNDS times over, medians reported
  rolling reload  SIGHUP to the primary under load: failed requests, and whether `reload done` came
  worker crash    SIGKILL to one worker under load: time until a new worker is listening, and wrk's errors;
                  then, separately, which requests fail when a worker dies: its own, others', or waiting connections
Progress goes to stderr, the report to stdout.
"""
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if len(sys.argv) > 2:
    sys.exit('usage: bench/cluster.py [CLUSTER_HTTP]')
CLUTCH = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / 'build/release/examples/cluster_http'
SECONDS = int(os.environ.get('BENCH_SECONDS', '10'))
ROUNDS = int(os.environ.get('ROUNDS', '2'))
WORKERS = 2
POLICIES = ['round-robin', 'shared', 'reuseport']
# label: (connections, a new connection per request). Keep-alive loads measure the workers; `close` also measures
# how connections reach them (the scheduling policy).
LOADS = {'c64': (64, False), 'c256': (256, False), 'c64 close': (64, True)}
LISTENING = re.compile(r'worker (\d+) listening pid (\d+) on ')


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    # The kernel picks a port nobody holds; the server binds it a moment later, a race we accept on loopback.
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """One server under test, in a session of its own so that a stuck one can be killed with its workers. For the
    clutch and Node primaries, `lines` holds their stdout events as (time.monotonic() on arrival, line)."""

    def __init__(self, name, argv, port, events=True, tmpdir=None):
        self.name, self.port, self.events, self.tmpdir = name, port, events, tmpdir
        self.lines, self.eof, self.cond = [], False, threading.Condition()
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE if events else subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        if events:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            t = time.monotonic()
            with self.cond:
                self.lines.append((t, line.rstrip('\n')))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_line(self, match, deadline, start=0):
        """The first (time, line, match) from line `start` on where match(line) is truthy; None at deadline or EOF."""
        i = start
        with self.cond:
            while True:
                for t, line in self.lines[i:]:
                    if m := match(line):
                        return t, line, m
                i = len(self.lines)
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    return None
                self.cond.wait(left)

    def listening_pids(self):
        with self.cond:
            return [int(m[2]) for _, line in self.lines if (m := LISTENING.match(line))]

    def ready(self, timeout=10):
        """Every worker listening (when the server says so), then GET / answered; False after `timeout` s."""
        deadline = time.monotonic() + timeout
        seen = set()

        def all_listening(line):
            if m := LISTENING.match(line):
                seen.add(m[2])
            return len(seen) >= WORKERS

        if self.events and not self.wait_line(all_listening, deadline):
            return False
        while time.monotonic() < deadline and self.proc.poll() is None:
            conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=1)
            try:
                conn.request('GET', '/')
                response = conn.getresponse()
                if response.status == 200 and response.read().startswith(b'worker success'):
                    return True
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """SIGTERM to the primary, SIGKILL to its whole session if it has not exited 5 s later."""
        stuck = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                stuck = True
                log(f'  {self.name}: still running 5 s after SIGTERM: SIGKILL to its session')
        try:  # workers left behind by a primary that did exit are a bug to report, and must not linger
            os.killpg(self.proc.pid, signal.SIGKILL)
            if not stuck:
                log(f'  {self.name}: its primary exited, leaving processes behind: killed')
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def start_clutch(policy):
    port = free_port()
    return Server(f'clutch {policy}', [str(CLUTCH), '--workers', str(WORKERS), '--port', str(port),
                                       '--policy', policy, '--timestamps'], port)


def start_node():
    port = free_port()
    return Server('Node cluster', ['node', 'bench/cluster.js', '--workers', str(WORKERS), '--port', str(port),
                                   '--timestamps'], port)


def start_nginx():
    port, tmpdir = free_port(), tempfile.mkdtemp(prefix='clutch-bench-nginx-')
    conf = Path(tmpdir, 'nginx.conf')
    conf.write_text((ROOT / 'bench/nginx.conf').read_text().replace('@PORT@', str(port)))
    return Server('nginx', ['nginx', '-p', tmpdir + '/', '-c', str(conf), '-e', 'stderr', '-g', 'daemon off;'], port,
                  events=False, tmpdir=tmpdir)


def wrk(port, conns, seconds, close=False):
    header = ['-H', 'Connection: close'] if close else []
    return subprocess.Popen(['wrk', '-t1', f'-c{conns}', f'-d{seconds}s', '--latency', *header,
                             f'http://127.0.0.1:{port}/'], stdout=subprocess.PIPE, text=True)


MS = {'us': 1e-3, 'ms': 1, 's': 1e3, 'm': 60e3}
ERRORS = ['connect', 'read', 'write', 'timeout', 'non2xx']


def wrk_result(proc, seconds):
    """wrk's requests/s, p99 in ms, request count, and errors; the non-2xx count is wrk's "Non-2xx or 3xx"."""
    try:
        out = proc.communicate(timeout=seconds + 30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    r = dict(rps=0.0, p99=float('nan'), requests=0, **dict.fromkeys(ERRORS, 0))
    if m := re.search(r'Requests/sec:\s+([\d.]+)', out):
        r['rps'] = float(m[1])
    if m := re.search(r'^\s*99%\s+([\d.]+)(us|ms|s|m)\b', out, re.M):
        r['p99'] = float(m[1]) * MS[m[2]]
    if m := re.search(r'(\d+) requests in', out):
        r['requests'] = int(m[1])
    if m := re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', out):
        r.update(zip(ERRORS, map(int, m.groups())))
    if m := re.search(r'Non-2xx or 3xx responses: (\d+)', out):
        r['non2xx'] = int(m[1])
    r['failed'] = sum(r[e] for e in ERRORS)
    return r


def run_wrk(port, conns, seconds, close=False):
    return wrk_result(wrk(port, conns, seconds, close), seconds)


def throughput(servers):
    runs = {name: {c: [] for c in LOADS} for name, _ in servers}
    for round_ in range(ROUNDS):
        for name, start in servers:
            log(f'throughput round {round_ + 1}/{ROUNDS}: {name}')
            with start() as s:
                if not s.ready():
                    log(f'  {name}: not ready within 10 s, skipped')
                    continue
                run_wrk(s.port, 64, 1)  # warm-up: Node's JIT, and the first connections' setup, for every server
                for c, (conns, close) in LOADS.items():
                    runs[name][c].append(run_wrk(s.port, conns, SECONDS, close))
    print(f'throughput: wrk -t1, {SECONDS} s per run, median of {ROUNDS} rounds; failed = socket errors + non-2xx,'
          ' summed over rounds')
    print(f'{"":22}' + ''.join(f'{f"{c} req/s":>16}{"p99 ms":>9}{"failed":>8}' for c in LOADS))
    medians = {}
    for name, _ in servers:
        if not all(runs[name][c] for c in LOADS):
            print(f'{name:22}  no result')
            continue
        medians[name] = {c: statistics.median(r['rps'] for r in runs[name][c]) for c in LOADS}
        row = ''
        for c in LOADS:
            p99 = statistics.median(r['p99'] for r in runs[name][c])
            row += f'{medians[name][c]:16.0f}{p99:9.2f}{sum(r["failed"] for r in runs[name][c]):8d}'
        print(f'{name:22}{row}')
    peers = [(short, p) for short, p in (('Node', 'Node cluster'), ('nginx', 'nginx')) if p in medians]
    clutches = [n for n in medians if n.startswith('clutch')]
    if peers and clutches:
        print('\nreq/s ratios (above 1: clutch faster)')
        print(f'{"":22}' + ''.join(f'{f"vs {short} {c}":>17}' for short, _ in peers for c in LOADS))
        for name in clutches:
            print(f'{name:22}' + ''.join(f'{medians[name][c] / medians[p][c]:16.2f}x' for _, p in peers for c in LOADS))


HEAD = f'{"requests":>10}{"failed":>8}{"connect":>9}{"read":>6}{"write":>6}{"timeout":>8}{"non-2xx":>8}'


def errors_row(r):
    """The columns of HEAD for one wrk run."""
    return f'{r["requests"]:10d}{r["failed"]:8d}' + ''.join(f'{r[e]:{w}d}' for e, w in zip(ERRORS, [9, 6, 6, 8, 8]))


def reload_under_load(name, start, seconds=8, after=2):
    log(f'rolling reload: {name}')
    with start() as s:
        if not s.ready():
            return f'{name:22}  not ready within 10 s'
        load = wrk(s.port, 64, seconds)
        time.sleep(after)
        first = len(s.lines)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGHUP)
        hit = s.wait_line(lambda line: line.startswith('reload '), t0 + seconds + 10, first)
        r = wrk_result(load, seconds)
    outcome = 'no answer' if hit is None else 'done' if hit[1] == 'reload done' else 'failed'
    took = f'{(hit[0] - t0) * 1e3:.0f}' if hit else '-'
    why = f'  ({hit[1]})' if outcome == 'failed' else ''
    return f'{name:22}{outcome:>10}{took:>9}' + errors_row(r) + why


def crash_under_load(name, start, loaded=True, seconds=8, after=2):
    """SIGKILL to each of the two first workers in turn (2 s and about 4 s in), under wrk or idle. Returns the two
    kill-to-listening times in ms (None where no replacement listened within 10 s) and wrk's result."""
    log(f'worker crash ({"under load" if loaded else "idle"}): {name}')
    with start() as s:
        if not s.ready():
            return None, None
        load = wrk(s.port, 64, seconds) if loaded else None
        time.sleep(after)
        took = []
        for victim in s.listening_pids()[:2]:
            before = set(s.listening_pids())
            first = len(s.lines)
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            hit = s.wait_line(lambda line: (m := LISTENING.match(line)) and int(m[2]) not in before, t0 + 10, first)
            # The server's own clock reading (CLOCK_MONOTONIC, as time.monotonic()) when it saw the worker listen;
            # the arrival time here would add this script's wake-up on a loaded machine.
            when = float(m[1]) if hit and (m := re.search(r' at ([\d.]+)$', hit[1])) else hit and hit[0]
            took.append((when - t0) * 1e3 if hit else None)
            time.sleep(1.5)
        return took, wrk_result(load, seconds) if loaded else None


def crashes(name, start, loaded=True):
    """crash_under_load ROUNDS times: every kill-to-listening time, and the first run's errors under load."""
    times, first = [], None
    for _ in range(ROUNDS):
        took, r = crash_under_load(name, start, loaded)
        if took is None:
            return f'{name:22}  not ready within 10 s'
        times += took
        first = first or r
    got = sorted(t for t in times if t is not None)
    missing = len(times) - len(got)
    summary = f'{statistics.median(got):10.1f}{got[0]:7.1f}{got[-1]:7.1f}' if got else f'{"-":>24}'
    never = f' ({missing} never listened)' if missing else ''
    return f'{name:22}{summary}{len(times):4d}' + (errors_row(first) if first else '') + never


REQUEST = b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'


def answer(sock, deadline):
    """The pid in one 'worker success <pid>' response on sock, or None if the connection failed or time ran out."""
    buf = b''
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if b'\r\n\r\n' in buf:
                head, body = buf.split(b'\r\n\r\n', 1)
                length = int(re.search(rb'(?i)content-length:\s*(\d+)', head)[1])
                if len(body) >= length:
                    m = re.match(rb'worker success (\d+)', body)
                    return int(m[1]) if m else -1
            chunk = sock.recv(4096)
            if not chunk:
                return None
            buf += chunk
    except (OSError, TypeError):
        return None


def crash_with_queue(name, start, conns=32, queued=32):
    """The two counts the crash target separates. One worker is stopped (SIGSTOP) while every open connection has
    a request in flight and `queued` new connections wait to be accepted, then SIGKILLed: requests in flight on its
    own connections may fail; a connection still waiting to be accepted must reach a worker."""
    log(f'worker crash with waiting connections: {name}')
    with start() as s:
        if not s.ready():
            return f'{name:22}  not ready within 10 s'
        victim = s.listening_pids()[0]
        deadline = time.monotonic() + 10
        own = []
        for _ in range(conns):
            sock = socket.create_connection(('127.0.0.1', s.port), timeout=5)
            sock.sendall(REQUEST)
            own.append((sock, answer(sock, deadline)))
        os.kill(victim, signal.SIGSTOP)
        for sock, _ in own:
            sock.sendall(REQUEST)
        waiting = []
        for _ in range(queued):
            sock = socket.create_connection(('127.0.0.1', s.port), timeout=5)
            sock.sendall(REQUEST)
            waiting.append(sock)
        time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        mine = [answer(sock, deadline) is None for sock, pid in own if pid == victim]
        others = [answer(sock, deadline) is None for sock, pid in own if pid != victim]
        lost = [answer(sock, deadline) is None for sock in waiting]
        for sock in [c for c, _ in own] + waiting:
            sock.close()
    return (f'{name:22}{f"{sum(mine)} of {len(mine)}":>16}{f"{sum(others)} of {len(others)}":>16}'
            f'{f"{sum(lost)} of {len(lost)}":>16}')


def main():
    sys.stdout.reconfigure(line_buffering=True)  # each report line as it comes, in order with the progress on stderr
    if not shutil.which('wrk'):
        sys.exit('bench/cluster.py: wrk is missing (scripts/install-deps --bench installs it)')
    clutch = [(f'clutch {p}', lambda p=p: start_clutch(p)) for p in POLICIES]
    if not os.access(CLUTCH, os.X_OK):
        print(f'clutch: {CLUTCH} is missing, so its rows are skipped (bench/run cluster builds it)\n')
        clutch = []
    node = [('Node cluster', start_node)]
    nginx = [('nginx', start_nginx)] if shutil.which('nginx') else []
    if not nginx:
        print('nginx: missing, so its row is skipped (scripts/install-deps --bench installs it)\n')
    print(f'cluster benchmark: {WORKERS} workers each, hello world on 127.0.0.1; wrk shares the {os.cpu_count()} CPUs\n')
    throughput(clutch + node + nginx)

    print('\nrolling reload under load: wrk -t1 -c64 -d8s, SIGHUP to the primary 2 s in; took = SIGHUP to its answer')
    print(f'{"":22}{"reload":>10}{"took ms":>9}' + HEAD)
    for name, start in clutch + node:
        print(reload_under_load(name, start))

    print(f"\nworker crash under load: kill to replacement listening (on the server's own clock); wrk -t1 -c64 -d8s,"
          f' SIGKILL to one worker 2 s in, to the other 1.5 s after its replacement listens; {ROUNDS} runs')
    print(f'{"":22}{"median ms":>10}{"min":>7}{"max":>7}{"n":>4}' + HEAD + '  (wrk: first run)')
    for name, start in clutch + node:
        print(crashes(name, start))
    print(f'\nworker crash, idle: the same kills without load; {ROUNDS} runs')
    print(f'{"":22}{"median ms":>10}{"min":>7}{"max":>7}{"n":>4}')
    for name, start in clutch + node:
        print(crashes(name, start, loaded=False))

    print('\nworker crash with connections waiting: 32 kept-alive connections each with a request in flight, 32 new'
          ' ones waiting to be accepted; one worker SIGSTOPped, then SIGKILLed; failed requests')
    print(f'{"":22}{"its own conns":>16}{"other workers":>16}{"waiting conns":>16}')
    for name, start in clutch + node:
        print(crash_with_queue(name, start))


if __name__ == '__main__':
    main()
