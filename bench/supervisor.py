#!/usr/bin/env python3
"""`bench/run supervisor`: clutch's daemon and CLI against PM2's, in one run, each with 2 instances of bench/hello.js.

  bench/supervisor.py CLUTCH     env: SAMPLES (5) per timed metric, RELOADS (2) per reload mode, LS_RUNS (10)

Three sides: PM2 (cluster mode: `pm2 start bench/hello.js -i 2`), clutch with the app taking clutch's socket at
fd 3 (`clutch start --listen … -- node bench/hello.js`), and "clutch node": the unmodified app under PM2's very
command line (`clutch start bench/hello.js -i 2`), its listen() served by clutch's Node cluster protocol.

PM2 is the one in bench/pm2 (npm ci there if missing); each side gets a daemon home of its own in a temp dir
(PM2_HOME, CLUTCH_HOME), so nothing touches ~/.pm2. Only one supervisor runs while cold starts are timed; for the
rest both run side by side, each on its own port, and their samples alternate so the machine's noise falls on both.
  daemon RSS       VmRSS of PM2's God daemon / clutch's daemon, 1 s after `start` has returned, at each cold start
  start -> port    from `start` with no daemon running until a GET on the port is answered (2 ms polls)
  SIGKILL -> new   SIGKILL to the worker that answered a GET, until a GET is answered by a pid not seen before
  worker RSS       VmRSS of each worker once the app is up (the same app alone, without a supervisor: a row)
  reload           wrk -t1 -cN -d6s, `reload hello` 1.5 s in: failed requests (socket errors + non-2xx);
                   with the app graceful on SIGINT/SIGTERM (the stop handler of docs/pm2-migration.md, N = 64
                   kept-alive connections), then abrupt (HELLO_ABRUPT=1, N = 16), then with no signal handler
                   at all (HELLO_NO_HANDLER=1, N = 16)
  ls               wall time of `pm2 ls` / `clutch ls` with the app running
  daemon SIGKILL   SIGKILL to the daemon (its workers go with it) under wrk -c16, until the app answers from a new
                   worker: PM2 by `pm2 resurrect` after a `pm2 save`; clutch by a new `clutch daemon` started at
                   once (as systemd's Restart=always), which restores the apps by itself; with wrk's failed
                   requests (mostly connections refused while nothing listens)
Progress goes to stderr, the report to stdout.
"""
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# wrk's output, read as the cluster benchmark reads it (bench/cluster.py; its main() runs only as a script).
from cluster import ERRORS, wrk_result

ROOT = Path(__file__).resolve().parent.parent
PM2_DIR = ROOT / 'bench' / 'pm2'
PM2 = PM2_DIR / 'node_modules' / '.bin' / 'pm2'
HELLO = ROOT / 'bench' / 'hello.js'
SAMPLES = int(os.environ.get('SAMPLES', '5'))
RELOADS = int(os.environ.get('RELOADS', '2'))
LS_RUNS = int(os.environ.get('LS_RUNS', '10'))
WORKERS = 2
POLL = 0.002          # s between polls of the port
SETTLE = 1.0          # s after `start` returns before the daemon's RSS is read
UP = 1.2              # s a (re)started worker lives before the next kill: PM2 counts exits before its min_uptime
                      # (1 s) as unstable restarts and gives up after 16 of them
WRK_SECONDS, RELOAD_AFTER = 6, 1.5
CONNECTIONS = {'graceful': 64, 'abrupt': 16, 'no handler': 16}
MODE_ENV = {'graceful': {}, 'abrupt': {'HELLO_ABRUPT': '1'}, 'no handler': {'HELLO_NO_HANDLER': '1'}}
DOC = ROOT / 'docs' / 'pm2-migration.md'


def documented_handler_is_run():
    """True when bench/hello.js's stop handler is, word for word, the one docs/pm2-migration.md gives."""
    hello = HELLO.read_text()
    begin, end = '// --- docs/pm2-migration.md: the stop handler ---\n', '// --- docs/pm2-migration.md: end ---'
    if begin not in hello or end not in hello:
        return False
    block = hello[hello.index(begin) + len(begin):hello.index(end)]
    return block.strip() and block in DOC.read_text()
HELLO_PID = re.compile(rb'hello from (\d+)')


def installed_pm2():
    """bench/pm2's PM2, installed there from its lock file if missing (never globally): its version."""
    if not PM2.exists():
        log('installing PM2 into bench/pm2 (npm ci)')
        subprocess.run(['npm', 'ci', '--no-audit', '--no-fund'], cwd=PM2_DIR, check=True, stdout=sys.stderr)
    return json.loads((PM2_DIR / 'node_modules/pm2/package.json').read_text())['version']


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    """A port nobody holds, below the ephemeral range. A port inside it can be taken by a client's own socket: a
    connect() to a port where nothing listens (a tight poll, or wrk reconnecting) now and then gets that very port
    as its source, a TCP self-connect, and then holds it so that the server cannot bind it."""
    low = int(Path('/proc/sys/net/ipv4/ip_local_port_range').read_text().split()[0])
    for _ in range(100):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
                return port
            except OSError:
                pass
    sys.exit('bench/supervisor.py: no free port below the ephemeral range')


def get_pid(port, timeout=1.0):
    """The pid in the body of one GET / on a new connection; None if it failed."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('GET', '/')
        response = conn.getresponse()
        body = response.read()
        m = HELLO_PID.match(body)
        return int(m[1]) if response.status == 200 and m else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def rss_kib(pid):
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    raise Failed(f'no VmRSS for pid {pid}')


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Failed(Exception):
    """A step of one supervisor failed; its remaining metrics are skipped."""


class Supervisor:
    """One side: its CLI, its daemon's home in a temp dir, and the app `hello` on `port`."""
    name = ''
    home_var = ''

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix=f'clutch-bench-{self.name.lower().replace(" ", "-")}-')
        base = {k: v for k, v in os.environ.items()
                if k not in ('PORT', 'LISTEN_FDS', 'LISTEN_PID', 'HELLO_ABRUPT', 'HELLO_NO_HANDLER')}
        self.env = dict(base, **{self.home_var: self.home})
        self.port = None
        self.broken = None  # why this side is not measured at all
        self.failed = {}  # step -> why it failed; its remaining samples, and the steps that need it, are skipped
        self.started = None  # the CLI of a timed start, still running
        self.seen = set()  # every pid that answered a GET since the app's last start
        self.known = set()  # every daemon and worker pid met, for the cleanup

    def run(self, *args, timeout=30, env=None, check=True):
        try:
            out = subprocess.run(self.argv(*args), cwd=ROOT, env=env or self.env, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f'`{" ".join(args[:2])}` still running after {timeout} s') from None
        except OSError as e:
            raise Failed(f'`{" ".join(args[:2])}`: {e}') from None
        if check and out.returncode != 0:
            raise Failed(f'`{" ".join(args[:2])}` exited with {out.returncode}: '
                         f'{(out.stderr or out.stdout).strip()[-500:]}')
        return out

    def launch(self, mode):
        """The start command, without waiting for it; on a new port."""
        self.port = free_port()
        argv, env = self.start_argv(mode)
        self.started = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)

    def finish_start(self, timeout=30):
        """Waits for the start command launched by launch(); Failed if it did not succeed."""
        proc, self.started = self.started, None
        try:
            err = proc.communicate(timeout=timeout)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise Failed(f'`start` still running after {timeout} s') from None
        if proc.returncode != 0:
            raise Failed(f'`start` exited with {proc.returncode}: {err.strip()[-500:]}')

    def start(self, mode='graceful'):
        """Starts the app (and the daemon if needed) and returns once both workers answer, then UP s later."""
        self.launch(mode)
        self.finish_start()
        t0 = time.monotonic()
        self.seen = answered = set()
        while time.monotonic() < t0 + 15:
            if (pid := get_pid(self.port)) is not None:
                answered.add(pid)
                self.known.add(pid)
                listed = self.listed_pids()
                # Without a listing, WORKERS pids answering, or 3 s of answers, will do.
                if len(answered if listed is None else listed) >= WORKERS or (
                        listed is None and time.monotonic() > t0 + 3):
                    time.sleep(UP)
                    return
            time.sleep(0.05)
        raise Failed(f'app not answering with {WORKERS} workers 15 s after start')

    def listed_pids(self):
        """worker_pids(), or None if the listing fails (noted once: it is not needed for any metric)."""
        try:
            pids = self.worker_pids()
            self.known |= pids
            return pids
        except Failed as e:
            if 'worker listing' not in self.failed:
                self.failed['worker listing'] = str(e)
                log(f'  {self.name}: worker listing: {e}; pids from the answers only')
            return None

    def daemon_pid(self):
        try:
            pid = int(Path(self.home, self.pid_file).read_text().strip())
        except (OSError, ValueError):
            return None
        self.known.add(pid)
        return pid

    def daemon_alive(self):
        pid = self.daemon_pid()
        return pid is not None and alive(pid)

    def ensure_down(self):
        """No daemon running, by the supervisor's own kill."""
        self.kill()

    def ours(self):
        """The processes of this side still running: those whose environment names its home (the daemon, and what
        it started with that environment), and the daemon and worker pids met that still run the daemon or the app
        (not a pid reused since)."""
        mark = f'{self.home_var}={self.home}'.encode()
        pids = []
        for d in Path('/proc').iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    cmdline = Path(d, 'cmdline').read_bytes()
                    if mark in Path(d, 'environ').read_bytes().split(b'\0') or int(d.name) in self.known and (
                            str(HELLO).encode() in cmdline or self.home.encode() in cmdline or
                            Path(d, 'exe').resolve() == Path(self.argv()[0]).resolve()):
                        pids.append(int(d.name))
                except OSError:
                    pass
        return pids

    def cleanup(self):
        """The supervisor's own kill, then SIGKILL to anything of ours it left behind, then the home goes."""
        if self.started:
            self.started.kill()
            self.started.wait()
        if not self.broken:
            try:
                self.ensure_down()
            except Failed as e:
                log(f'  {self.name}: {e}')
        time.sleep(0.2)
        left = self.ours()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            log(f'  {self.name}: processes left behind after its kill: {left}, SIGKILLed')
        shutil.rmtree(self.home, ignore_errors=True)


class Pm2(Supervisor):
    name, home_var, pid_file = 'PM2', 'PM2_HOME', 'pm2.pid'

    def argv(self, *args):
        return [str(PM2), *args]

    def start_argv(self, mode):
        env = dict(self.env, PORT=str(self.port), **MODE_ENV[mode])
        return self.argv('start', str(HELLO), '-i', str(WORKERS), '--name', 'hello'), env

    def worker_pids(self):
        out = self.run('jlist').stdout
        line = next((s for s in reversed(out.splitlines()) if s.startswith('[')), None)
        if line is None:
            raise Failed(f'`pm2 jlist` printed no JSON: {out.strip()[-300:]}')
        return {p['pid'] for p in json.loads(line)
                if p.get('name') == 'hello' and p.get('pm2_env', {}).get('status') == 'online' and p.get('pid')}

    def kill(self):
        self.run('kill')

    def ensure_down(self):
        if self.daemon_alive():  # `pm2 kill` with no daemon would spawn one to kill it
            self.kill()

    def reload_args(self):
        return ('reload', 'hello')

    def ls_args(self):
        return ('ls',)

    def prepare_crash(self):
        self.run('save')

    def recover(self):
        self.run('resurrect')


class Clutch(Supervisor):
    name, home_var, pid_file = 'clutch', 'CLUTCH_HOME', 'daemon.pid'

    def __init__(self, binary):
        self.binary = binary
        self.daemons = []  # daemons this benchmark started itself (after a crash), reaped at the cleanup
        super().__init__()

    def cleanup(self):
        super().cleanup()
        for d in self.daemons:
            try:
                d.wait(timeout=10)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()

    def argv(self, *args):
        return [str(self.binary), *args]

    def start_argv(self, mode):
        env_args = [a for k, v in MODE_ENV[mode].items() for a in ('--env', f'{k}={v}')]
        return self.argv('start', '--name', 'hello', '--workers', str(WORKERS), '--listen', f'127.0.0.1:{self.port}',
                         *env_args, '--', shutil.which('node') or 'node', str(HELLO)), self.env

    def worker_pids(self):
        out = self.run('ls', '--json').stdout
        try:
            apps = json.loads(out)
            return {p['pid'] for a in apps if a.get('name') == 'hello' for p in a.get('processes', [])
                    if p.get('role') != 'agent' and p.get('pid')}
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise Failed(f'`clutch ls --json`: {e}: {out.strip()[-300:]}') from None

    def kill(self):
        self.run('kill')

    def ensure_down(self):
        if self.daemon_alive():
            self.kill()
        else:
            self.run('kill', check=False)  # in case the daemon runs without its pid file

    def reload_args(self):
        return ('reload', 'hello')

    def ls_args(self):
        return ('ls',)

    def prepare_crash(self):
        pass  # its live table is written after every change

    def recover(self):
        """A new daemon at once, as systemd's Restart=always starts one; it restores the apps by itself."""
        self.daemons.append(subprocess.Popen(self.argv('daemon'), cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


class ClutchNode(Clutch):
    """The unmodified app, started as PM2 starts it: its listen(PORT) goes to clutch (Node's cluster protocol)."""
    name = 'clutch node'

    def start_argv(self, mode):
        env = dict(self.env, PORT=str(self.port), **MODE_ENV[mode])
        return self.argv('start', str(HELLO), '-i', str(WORKERS), '--name', 'hello'), env


def worker_rss(sup):
    """The median VmRSS (KiB) of the app's workers now."""
    pids = sup.listed_pids()
    if not pids:
        raise Failed('no worker listed')
    return statistics.median(rss_kib(p) for p in pids)


def alone_rss():
    """VmRSS (KiB) of bench/hello.js run by node alone, once it answers: what a supervisor's worker adds to."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ('LISTEN_FDS', 'LISTEN_PID', 'NODE_CHANNEL_FD')}
    proc = subprocess.Popen(['node', str(HELLO)], env=dict(env, PORT=str(port)), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while get_pid(port) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(UP)
        return rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def attempt(sup, step, fn, *args, needs=()):
    """fn(*args), or None if sup is broken or step or one it needs has failed; a Failed marks step failed."""
    if sup.broken or step in sup.failed or any(n in sup.failed for n in needs):
        return None
    try:
        return fn(*args)
    except Failed as e:
        sup.failed[step] = str(e)
        log(f'  {sup.name}: {step}: {e}; not measured from then on')
        return None


def cold_start(sup):
    """(ms from the start command to the first answered GET, the daemon's RSS in KiB) with no daemon before."""
    sup.ensure_down()
    t0 = time.monotonic()
    sup.launch('graceful')
    deadline = t0 + 20
    while get_pid(sup.port, timeout=0.5) is None:
        if time.monotonic() > deadline:
            raise Failed('port not answering 20 s after start')
        if sup.started.poll() not in (None, 0):
            sup.finish_start()  # raises with its stderr
        time.sleep(POLL)
    took = (time.monotonic() - t0) * 1e3
    sup.finish_start()
    time.sleep(SETTLE)
    pid = sup.daemon_pid()
    rss = rss_kib(pid) if pid is not None and alive(pid) else None
    if rss is None and 'daemon RSS' not in sup.failed:
        sup.failed['daemon RSS'] = f'no live daemon pid in {sup.home}/{sup.pid_file}'
        log(f'  {sup.name}: daemon RSS: {sup.failed["daemon RSS"]}')
    sup.kill()
    log(f'  {sup.name}: start -> port {took:.0f} ms, daemon RSS {rss} KiB')
    return took, rss


def kill_worker(sup):
    """ms from SIGKILL to the worker that answered a GET until a GET is answered by a pid not seen before."""
    listed = sup.listed_pids() or set()
    answered = {p for p in (get_pid(sup.port) for _ in range(8)) if p}
    victim = next((p for p in answered if p in listed), None) if listed else next(iter(answered), None)
    if victim is None:
        raise Failed(f'no worker to kill (listed {sorted(listed)}, answered {sorted(answered)})')
    # Without a listing, an old worker that never answered would count as new: all answers so far count as old.
    sup.seen |= answered
    sup.known |= answered
    before = listed | sup.seen
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    deadline = t0 + 10
    while True:
        pid = get_pid(sup.port, timeout=0.5)
        if pid is not None and pid not in before:
            took = (time.monotonic() - t0) * 1e3
            sup.seen.add(pid)
            sup.known.add(pid)
            break
        if time.monotonic() > deadline:
            raise Failed(f'no new pid answering 10 s after SIGKILL to {victim}')
        time.sleep(POLL)
    # Back to WORKERS before the next sample, the new ones older than PM2's min_uptime.
    while time.monotonic() < deadline and (pids := sup.listed_pids()) is not None:
        if len(pids) >= WORKERS and victim not in pids:
            break
        time.sleep(0.05)
    time.sleep(UP)
    log(f'  {sup.name}: SIGKILL {victim} -> new pid {pid} answering: {took:.1f} ms')
    return took




def daemon_crash(sup):
    """ms from SIGKILL to the daemon until the app answers again from a new worker, the daemon brought back as
    each side's own means do it: clutch's next daemon restores the apps by itself (started at once here, as
    systemd's Restart=always would), PM2's needs `pm2 resurrect` (after a `pm2 save`). Under load: wrk -c16 runs
    from RELOAD_AFTER before the kill to the end of WRK_SECONDS; its result goes with the time."""
    sup.prepare_crash()
    old = sup.daemon_pid()
    if old is None or not alive(old):
        raise Failed('no live daemon to kill')
    before = (sup.listed_pids() or set()) | sup.seen
    load = subprocess.Popen(['wrk', '-t1', '-c16', f'-d{WRK_SECONDS}s', f'http://127.0.0.1:{sup.port}/'],
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(RELOAD_AFTER)
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        sup.recover()
        deadline = t0 + 30
        while True:
            pid = get_pid(sup.port, timeout=0.5)
            if pid is not None and pid not in before:
                took = (time.monotonic() - t0) * 1e3
                break
            if time.monotonic() > deadline:
                raise Failed('the app not answering from a new worker 30 s after the daemon was killed')
            time.sleep(POLL)
    finally:
        r = wrk_result(load, WRK_SECONDS)
    sup.seen = {pid}
    sup.known.add(pid)
    while time.monotonic() < deadline and len(sup.listed_pids() or ()) < WORKERS:
        time.sleep(0.05)
    time.sleep(UP)
    log(f'  {sup.name}: daemon SIGKILLed under wrk -c16 -> the app answering again: {took:.0f} ms; '
        f'{r["requests"]} requests, {r["failed"]} failed')
    return took, r


def reload_under_load(sup, mode):
    """wrk's result, with the reload command's wall time in ms, for one `reload hello` under load."""
    load = subprocess.Popen(['wrk', '-t1', f'-c{CONNECTIONS[mode]}', f'-d{WRK_SECONDS}s',
                             f'http://127.0.0.1:{sup.port}/'],
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(RELOAD_AFTER)
        t0 = time.monotonic()
        sup.run(*sup.reload_args())
        took = (time.monotonic() - t0) * 1e3
    finally:
        r = wrk_result(load, WRK_SECONDS)
    r['took'] = took
    if r['requests'] == 0:
        raise Failed('wrk made no request')
    log(f'  {sup.name}: reload took {took:.0f} ms; {r["requests"]} requests, {r["failed"]} failed')
    time.sleep(UP)
    return r


def ls_time(sup):
    t0 = time.monotonic()
    sup.run(*sup.ls_args())
    return (time.monotonic() - t0) * 1e3


def spread(xs, fmt):
    """'median (min-max)' of xs."""
    if not xs:
        return '-'
    return f'{statistics.median(xs):{fmt}} ({min(xs):{fmt}}-{max(xs):{fmt}})'


HEAD = f'{"took ms":>9}{"requests":>10}{"failed":>8}{"connect":>9}{"read":>6}{"write":>6}{"timeout":>8}{"non-2xx":>8}'


def errors_row(r):
    late = '  (the reload outlasted wrk)' if r['took'] > (WRK_SECONDS - RELOAD_AFTER) * 1e3 else ''
    return f'{r["took"]:9.0f}{r["requests"]:10d}{r["failed"]:8d}' + ''.join(
        f'{r[e]:{w}d}' for e, w in zip(ERRORS, [9, 6, 6, 8, 8])) + late


def report(sides, res, alone):
    pm2, others = sides[0], sides[1:]
    width = 26
    print(f'\n{"":28}' + ''.join(f'{s.name + " median (min-max)":>{width}}' for s in sides) +
          ''.join(f'{"PM2/" + s.name:>16}' for s in others) + f'{"target":>9}{"met":>5}')

    def ratio_of(a, b):
        return statistics.median(a) / statistics.median(b) if a and b and statistics.median(b) > 0 else None

    def row(label, key, fmt, target):
        ratios = [ratio_of(res[pm2.name][key], res[s.name][key]) for s in others]
        met = '-' if None in ratios else 'yes' if all(r >= target for r in ratios) else 'no'
        print(f'{label:28}' + ''.join(f'{spread(res[s.name][key], fmt):>{width}}' for s in sides) +
              ''.join(f'{"-" if r is None else f"{r:.2f}x":>16}' for r in ratios) + f'{f">= {target:g}x":>9}{met:>5}')

    row('daemon RSS KiB', 'rss', '.0f', 10)
    row('start -> port ms', 'start', '.0f', 3)
    row('SIGKILL -> new pid ms', 'sigkill', '.1f', 1.5)
    row(f'ls ms ({LS_RUNS} runs)', 'ls', '.1f', 10)
    row('daemon SIGKILL -> serving ms', 'crash', '.0f', 1.5)
    crash_cell = lambda s: '-' if not res[s.name]['crash_load'] else \
        f'{res[s.name]["crash_load"][0]["failed"]} of {res[s.name]["crash_load"][0]["requests"]}'
    print(f'{"  failed under wrk -c16":28}' + ''.join(f'{crash_cell(s):>{width}}' for s in sides))
    print(f'{"worker RSS KiB":28}' + ''.join(f'{spread(res[s.name]["worker_rss"], ".0f"):>{width}}' for s in sides) +
          f'   (the app alone: {alone if alone else "-"} KiB)')
    if alone:
        over = {s.name: [r - alone for r in res[s.name]['worker_rss']] for s in sides}
        print(f'{"  over the app alone KiB":28}' + ''.join(f'{spread(over[s.name], ".0f"):>{width}}' for s in sides))
    for mode, target in (('graceful', 'clutch: 0'), ('abrupt', 'fewer'), ('no handler', 'fewer')):
        failed = {s.name: sum(r['failed'] for r in res[s.name][mode]) if res[s.name][mode] else None for s in sides}
        cell = lambda s: '-' if failed[s.name] is None else \
            f'{failed[s.name]} of {sum(r["requests"] for r in res[s.name][mode])}'
        fa = failed[pm2.name]
        oks = [failed[s.name] is not None and (failed[s.name] == 0 if mode == 'graceful' else
                                                fa is not None and failed[s.name] < fa) for s in others]
        met = 'yes' if all(oks) else 'no'
        print(f'{f"reload failed, {mode}":28}' + ''.join(f'{cell(s):>{width}}' for s in sides) +
              f'{"":>{16 * len(others)}}{target:>9}{met:>5}')
    print(f'(reload: failed requests of all, summed over {RELOADS} run(s); RSS and start over {SAMPLES} cold starts,'
          f' SIGKILL over {SAMPLES} kills)')

    for mode, how in (('graceful', 'graceful on SIGINT/SIGTERM with the stop handler of docs/pm2-migration.md'),
                      ('abrupt', 'HELLO_ABRUPT=1: exits at once'),
                      ('no handler', 'HELLO_NO_HANDLER=1: no signal handler at all')):
        print(f'\nreload under load, app {how}: wrk -t1 -c{CONNECTIONS[mode]} -d{WRK_SECONDS}s, `reload hello`'
              f' {RELOAD_AFTER} s in;'
              ' took = the reload command\'s wall time')
        print(f'{"":28}{"run":>4}' + HEAD)
        for sup in sides:
            for i, r in enumerate(res[sup.name][mode]):
                print(f'{sup.name:28}{i + 1:4d}' + errors_row(r))
            if not res[sup.name][mode]:
                print(f'{sup.name:28}  no result')
    for sup in sides:
        if sup.broken:
            print(f'\n{sup.name}: not measured: {sup.broken}')
        for step, why in sup.failed.items():
            print(f'\n{sup.name}, {step} failed (not measured from then on): {why}')


def main():
    sys.stdout.reconfigure(line_buffering=True)
    if len(sys.argv) != 2:
        sys.exit('usage: bench/supervisor.py CLUTCH')
    if not shutil.which('wrk'):
        sys.exit('bench/supervisor.py: wrk is missing (scripts/install-deps --bench installs it)')
    pm2_version = installed_pm2()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the cleanup below runs on SIGTERM too
    clutch_bin = Path(sys.argv[1]).resolve()
    pm2, clutch, clutch_node = Pm2(), Clutch(clutch_bin), ClutchNode(clutch_bin)
    sides = [pm2, clutch, clutch_node]
    if not os.access(clutch_bin, os.X_OK):
        clutch.broken = clutch_node.broken = f'{clutch_bin} is missing (bench/run supervisor builds it)'
    res = {s.name: {k: [] for k in ('rss', 'start', 'sigkill', 'ls', 'worker_rss', 'crash', 'crash_load', *MODE_ENV)}
           for s in sides}
    node_version = subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()
    print(f'supervisor benchmark: PM2 {pm2_version} vs clutch ({clutch_bin.relative_to(ROOT) if clutch_bin.is_relative_to(ROOT) else clutch_bin}),'
          f' {WORKERS} instances of bench/hello.js each, Node {node_version}, 127.0.0.1; {os.cpu_count()} CPUs'
          ' shared with the load; clutch node: the same app under `clutch start bench/hello.js -i 2`')
    if not documented_handler_is_run():
        sys.exit('bench/supervisor.py: the stop handler in bench/hello.js is not the one docs/pm2-migration.md gives')
    started = time.monotonic()
    try:
        log(f'cold starts, {SAMPLES} each, one supervisor at a time')
        for i in range(SAMPLES):
            for sup in sides:
                if (r := attempt(sup, 'cold start', cold_start, sup)) is not None:
                    res[sup.name]['start'].append(r[0])
                    if r[1] is not None:
                        res[sup.name]['rss'].append(r[1])

        log('app up on each, graceful')
        for sup in sides:
            attempt(sup, 'app start', lambda s: (s.ensure_down(), s.start()), sup)
        for sup in sides:
            if (r := attempt(sup, 'worker RSS', worker_rss, sup, needs=['app start'])) is not None:
                res[sup.name]['worker_rss'].append(r)
        log(f'SIGKILL to a worker, {SAMPLES} each')
        for i in range(SAMPLES):
            for sup in sides:
                if (r := attempt(sup, 'SIGKILL', kill_worker, sup, needs=['app start'])) is not None:
                    res[sup.name]['sigkill'].append(r)
        log(f'ls, {LS_RUNS} each')
        for i in range(LS_RUNS):
            for sup in sides:
                if (r := attempt(sup, 'ls', ls_time, sup, needs=['app start'])) is not None:
                    res[sup.name]['ls'].append(r)
        log('the daemon SIGKILLed, once each')
        for sup in sides:
            if (r := attempt(sup, 'daemon crash', daemon_crash, sup, needs=['app start'])) is not None:
                res[sup.name]['crash'].append(r[0])
                res[sup.name]['crash_load'].append(r[1])
        for mode in MODE_ENV:
            app = 'app start'
            if mode != 'graceful':
                app = f'app start, {mode}'
                log(f'app restarted on each, {mode}')
                for sup in sides:
                    attempt(sup, app, lambda s: (s.ensure_down(), s.start(mode)), sup)
            log(f'reload under load, {mode}, {RELOADS} each')
            for i in range(RELOADS):
                for sup in sides:
                    if (r := attempt(sup, f'reload, {mode}', reload_under_load, sup, mode, needs=[app])) is not None:
                        res[sup.name][mode].append(r)
    finally:
        for sup in sides:
            sup.cleanup()
    alone = alone_rss()
    log(f'done in {time.monotonic() - started:.0f} s')
    report(sides, res, alone)


if __name__ == '__main__':
    main()
