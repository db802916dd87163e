#!/usr/bin/env python3
"""`bench/run app`: clutch's messenger (worker -> agent) against egg-cluster's, in one run.

  bench/app.py APP_BENCH      env: ROUNDS (3), MESSAGES (1000000, the direct channel), PEER_MESSAGES (200000)

Each round runs, one after the other: clutch through the direct channel (MESSAGES), clutch through the master
(PEER_MESSAGES), and egg-cluster (PEER_MESSAGES, bench/egg/run.js). Medians over the rounds; ratios against egg.
Progress goes to stderr, the report to stdout.
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EGG = ROOT / 'bench' / 'egg'
ROUNDS = int(os.environ.get('ROUNDS', '3'))
MESSAGES = int(os.environ.get('MESSAGES', '1000000'))
PEER_MESSAGES = int(os.environ.get('PEER_MESSAGES', '200000'))
PINGS = 5000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, cwd=None, env=None):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f'bench/app.py: {cmd[0]} failed ({out.returncode}):\n{out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: bench/app.py APP_BENCH')
    bench = sys.argv[1]
    if not (EGG / 'node_modules' / 'egg-cluster').is_dir():
        log('installing egg-cluster into bench/egg (npm ci)')
        subprocess.run(['npm', 'ci', '--no-audit', '--no-fund'], cwd=EGG, check=True, stdout=sys.stderr)
    runs = {
        'clutch, direct channel': lambda: run([bench, '--messages', str(MESSAGES), '--rounds', str(PINGS)]),
        'clutch, through the master': lambda: run(
            [bench, '--through-master', '--messages', str(PEER_MESSAGES), '--rounds', str(PINGS)]),
        'egg-cluster': lambda: run(['node', 'run.js'], cwd=EGG,
                                   env=dict(os.environ, MESSAGES=str(PEER_MESSAGES), ROUNDS=str(PINGS))),
    }
    results = {name: [] for name in runs}
    for r in range(ROUNDS):
        for name, go in runs.items():
            res = go()
            log(f'round {r + 1} {name}: {res["msgs_per_s"]:,.0f} msg/s, rtt median {res["rtt_us_median"]:.0f} us, '
                f'master cpu {res["master_cpu_ms"]:.1f} ms for {res["messages"]:,} messages')
            results[name].append(res)

    def med(name, key):
        return statistics.median(x[key] for x in results[name])

    egg_version = results['egg-cluster'][0].get('peer', 'egg-cluster')
    print(f'Messenger, one app worker -> the agent; median of {ROUNDS} rounds; {egg_version}, Node {results["egg-cluster"][0].get("node", "")}')
    print()
    print(f'| path | messages | msg/s | RTT median us | RTT p99 us | master CPU ms | master CPU us/msg |')
    print('|---|---|---|---|---|---|---|')
    for name in runs:
        n = results[name][0]['messages']
        cpu = med(name, 'master_cpu_ms')
        print(f'| {name} | {n:,} | {med(name, "msgs_per_s"):,.0f} | {med(name, "rtt_us_median"):.0f} | '
              f'{med(name, "rtt_us_p99"):.0f} | {cpu:.2f} | {cpu * 1000 / n:.3f} |')
    print()
    egg = med('egg-cluster', 'msgs_per_s')
    egg_rtt = med('egg-cluster', 'rtt_us_median')
    for name in ('clutch, direct channel', 'clutch, through the master'):
        print(f'{name} vs egg-cluster: throughput {med(name, "msgs_per_s") / egg:.1f}x, '
              f'round trip {egg_rtt / med(name, "rtt_us_median"):.1f}x faster')
    print(f'target: direct channel >= 10x egg throughput; master CPU near zero during the direct exchange '
          f'({med("clutch, direct channel", "master_cpu_ms"):.2f} ms for {MESSAGES:,} messages)')


if __name__ == '__main__':
    main()
