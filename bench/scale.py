#!/usr/bin/env python3
"""`bench/run scale`: one daemon with many apps, clutch's against PM2's, in one run.

  bench/scale.py CLUTCH     env: APPS ("10,25,100": the sizes), WORKERS (4 per app), IDLE_SECONDS (30), LS_RUNS (5)

Each app is WORKERS processes of bench/idle.c (a C program that waits in pause()); PM2 runs them in fork mode
(its cluster mode runs only Node scripts). Both sides start their apps from one file each (clutch: a TOML file of
[[app]] tables; PM2: an ecosystem file), each with a daemon home of its own in a temp dir. At each size:
  start all        from the start command with no daemon running until every process of every app runs
  daemon RSS       VmRSS of clutch's daemon / PM2's God daemon, 2 s after all run
  ls               wall time of `clutch ls` / `pm2 ls`, median of LS_RUNS
  idle CPU         the daemon's user+system time over IDLE_SECONDS, as % of one core (both sides in the same window);
                   then clutch's again with the dashboard's sampling on (after `clutch dashboard`), beside PM2's
                   idle figure (PM2's daemon samples its processes all the time)
  reload all       wall time of `clutch reload all` / `pm2 reload all`
Goals for clutch at 100 apps: RSS <= 16 MiB, ls <= 30 ms, idle CPU <= 0.5 %, reload all <= 10 s; with 100 workers
(25 apps), the dashboard's sampling (idle CPU with it on, less without) <= 0.5 %.
Progress goes to stderr, the report to stdout.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from supervisor import ROOT, Clutch, Failed, Pm2, installed_pm2, log, rss_kib

SIZES = [int(n) for n in os.environ.get('APPS', '10,25,100').split(',')]
WORKERS = int(os.environ.get('WORKERS', '4'))
IDLE_SECONDS = float(os.environ.get('IDLE_SECONDS', '30'))
LS_RUNS = int(os.environ.get('LS_RUNS', '5'))
TICK = os.sysconf('SC_CLK_TCK')


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return int(fields[11]) + int(fields[12])


class ClutchSide(Clutch):
    def write_file(self, n, program):
        path = Path(self.home, 'apps.toml')
        path.write_text(''.join(f'[[app]]\nname = "app{i}"\ncommand = "{program}"\nworkers = {WORKERS}\n\n'
                                for i in range(n)))
        return path

    def running(self):
        apps = json.loads(self.run('ls', '--json', timeout=60).stdout)
        return sum(1 for a in apps for p in a.get('processes', []) if p.get('pid'))

    def start_file(self, path):
        self.run('start', str(path), timeout=300)

    def reload_all(self):
        self.run('reload', 'all', timeout=300)


class Pm2Side(Pm2):
    def write_file(self, n, program):
        path = Path(self.home, 'ecosystem.config.js')
        apps = [{'name': f'app{i}', 'script': str(program), 'interpreter': 'none', 'exec_mode': 'fork',
                 'instances': WORKERS, 'autorestart': True} for i in range(n)]
        path.write_text('module.exports = ' + json.dumps({'apps': apps}, indent=1) + ';\n')
        return path

    def running(self):
        out = self.run('jlist', timeout=120).stdout
        line = next((s for s in reversed(out.splitlines()) if s.startswith('[')), None)
        if line is None:
            raise Failed(f'`pm2 jlist` printed no JSON: {out.strip()[-300:]}')
        return sum(1 for p in json.loads(line) if p.get('pm2_env', {}).get('status') == 'online' and p.get('pid'))

    def start_file(self, path):
        self.run('start', str(path), timeout=600)

    def reload_all(self):
        self.run('reload', 'all', timeout=600)


def start_all(sup, n, program):
    """Starts n apps from a file with no daemon running; the seconds until every process runs."""
    sup.ensure_down()
    path = sup.write_file(n, program)
    t0 = time.monotonic()
    sup.start_file(path)
    want = n * WORKERS
    while (have := sup.running()) < want:
        if time.monotonic() > t0 + 600:
            raise Failed(f'{have} of {want} processes running 600 s after start')
        time.sleep(0.1)
    return time.monotonic() - t0


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def fmt(v, spec):
    return '-' if v is None else f'{v:{spec}}'


def main():
    sys.stdout.reconfigure(line_buffering=True)
    if len(sys.argv) != 2:
        sys.exit('usage: bench/scale.py CLUTCH')
    pm2_version = installed_pm2()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the cleanup below runs on SIGTERM too
    clutch_bin = Path(sys.argv[1]).resolve()
    build = Path(tempfile.mkdtemp(prefix='clutch-bench-scale-'))
    program = build / 'idle'
    subprocess.run(['cc', '-O2', '-o', str(program), str(ROOT / 'bench' / 'idle.c')], check=True)
    print(f'scale benchmark: PM2 {pm2_version} (fork mode) vs clutch, N apps x {WORKERS} processes of bench/idle.c'
          f' in one daemon; {os.cpu_count()} CPUs; idle CPU over {IDLE_SECONDS:g} s, ls median of {LS_RUNS}')
    pm2, clutch = Pm2Side(), ClutchSide(clutch_bin)
    sides = [pm2, clutch]
    res = {}  # (side, n) -> {metric: value}
    started = time.monotonic()
    try:
        for n in SIZES:
            for sup in sides:
                r = res[(sup.name, n)] = {}
                try:
                    log(f'{sup.name}: starting {n} apps x {WORKERS}')
                    r['start'] = start_all(sup, n, program)
                except Failed as e:
                    r['failed'] = str(e)
                    log(f'  {sup.name}: {e}')
            time.sleep(2)
            for sup in sides:
                r = res[(sup.name, n)]
                if 'failed' in r or (pid := sup.daemon_pid()) is None:
                    continue
                r['rss'] = rss_kib(pid) / 1024
            log(f'ls, {LS_RUNS} each')
            up = [sup for sup in sides if 'failed' not in res[(sup.name, n)]]
            ls = {sup.name: [] for sup in up}
            for _ in range(LS_RUNS):  # alternating, so that the machine's noise falls on both
                for sup in up:
                    ls[sup.name].append(timed(lambda: sup.run('ls', timeout=120)) * 1e3)
            for sup in up:
                res[(sup.name, n)]['ls'] = statistics.median(ls[sup.name])
            log(f'idle CPU over {IDLE_SECONDS:g} s, both daemons in the same window')
            before = {sup.name: (pid, cpu_ticks(pid)) for sup in up if (pid := sup.daemon_pid())}
            time.sleep(IDLE_SECONDS)
            for name, (pid, ticks) in before.items():
                res[(name, n)]['cpu'] = (cpu_ticks(pid) - ticks) / TICK / IDLE_SECONDS * 100
            for sup in sides:
                r = res[(sup.name, n)]
                if 'failed' in r:
                    continue
                log(f'{sup.name}: reload all')
                try:
                    r['reload'] = timed(sup.reload_all)
                except Failed as e:
                    r['reload failed'] = str(e)
                    log(f'  {sup.name}: {e}')
            # Last, so that the figures above are what they were before it: the dashboard's sampling (every app's
            # processes and accept queues, once a second) runs once a status port does, and `clutch dashboard`
            # starts one. PM2's daemon samples its processes all the time.
            if clutch in up and (pid := clutch.daemon_pid()):
                log(f'clutch: idle CPU over {IDLE_SECONDS:g} s with the dashboard\'s sampling on')
                time.sleep(2)  # the reload's last steps done
                clutch.run('dashboard')
                time.sleep(1)
                ticks = cpu_ticks(pid)
                time.sleep(IDLE_SECONDS)
                res[('clutch', n)]['cpu_dash'] = (cpu_ticks(pid) - ticks) / TICK / IDLE_SECONDS * 100
            for sup in sides:
                sup.ensure_down()
    finally:
        for sup in sides:
            sup.cleanup()
        shutil.rmtree(build, ignore_errors=True)
    log(f'done in {time.monotonic() - started:.0f} s')

    print(f'\n{"":24}' + ''.join(f'{f"PM2 {n}":>12}{f"clutch {n}":>12}{"ratio":>8}' for n in SIZES))
    rows = [('start all s', 'start', '.1f'), ('daemon RSS MiB', 'rss', '.1f'), ('ls ms (median)', 'ls', '.1f'),
            ('idle CPU % of a core', 'cpu', '.2f'), ('  with dashboard on', 'cpu_dash', '.2f'),
            ('reload all s', 'reload', '.2f')]
    for label, key, spec in rows:
        line = f'{label:24}'
        for n in SIZES:
            vals = [res.get((side, n), {}).get(key if side == 'clutch' or key != 'cpu_dash' else 'cpu')
                    for side in ('PM2', 'clutch')]
            ratio = vals[0] / vals[1] if None not in vals and vals[1] > 0 else None
            line += f'{fmt(vals[0], spec):>12}{fmt(vals[1], spec):>12}{fmt(ratio, ".1f") + ("x" if ratio else ""):>8}'
        print(line)
    big = max(SIZES)
    c = res.get(('clutch', big), {})
    goals = [('RSS <= 16 MiB', c.get('rss'), lambda v: v <= 16), ('ls <= 30 ms', c.get('ls'), lambda v: v <= 30),
             ('idle CPU <= 0.5 %', c.get('cpu'), lambda v: v <= 0.5),

             ('reload all <= 10 s', c.get('reload'), lambda v: v <= 10)]
    print(f'\nclutch at {big} apps: ' + ', '.join(
        f'{g}: {"-" if v is None else "met" if ok(v) else "NOT met"}' for g, v, ok in goals))
    # The dashboard's goal is the issue's: its sampling costs <= 0.5 % of a core for 100 workers.
    for n in SIZES:
        r = res.get(('clutch', n), {})
        if n * WORKERS == 100 and r.get('cpu_dash') is not None and r.get('cpu') is not None:
            cost = r['cpu_dash'] - r['cpu']
            print(f'clutch with {n * WORKERS} workers: the dashboard\'s sampling costs {cost:.2f} % of a core '
                  f'(goal <= 0.5 %: {"met" if cost <= 0.5 else "NOT met"})')
    small = min(SIZES)
    if small != big:
        parts = []
        for label, key, _ in rows:
            a, b = res.get(('clutch', small), {}).get(key), res.get(('clutch', big), {}).get(key)
            grow = b / a if a and b else None
            parts.append(f'{label} {fmt(grow, ".1f")}x' if grow else f'{label} -')
        print(f'growth of clutch from {small} to {big} apps ({big / small:g}x the apps): ' + ', '.join(parts))
    for (side, n), r in res.items():
        for k in ('failed', 'reload failed'):
            if k in r:
                print(f'{side} at {n} apps: {k}: {r[k]}')



if __name__ == '__main__':
    main()
