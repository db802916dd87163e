#!/usr/bin/env python3
"""`bench/run install`: what `npm install -g` costs a Node user, clutch's package against PM2's, in one run.

  bench/install.py DIST     DIST: build/package/dist of `make package`; env: RUNS (5)

Both are installed with `npm install -g --offline` into a temp prefix of their own, RUNS times each, alternating:
clutch from its tarball (clutch-VERSION.tgz), PM2 at bench/pm2's version from npm's cache (bench/run fills it with
`npm ci` in bench/pm2). Offline on both sides, so the network is not measured, only npm's work and the disk.
  install          wall time of npm install -g, median of RUNS
  size, files      what the install put under the prefix (du -k; regular files)
(Not the first command's time: PM2's --version already starts its daemon. bench/supervisor.py measures a start.)
Progress goes to stderr, the report to stdout.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get('RUNS', '5'))


def timed(args, **kw):
    start = time.monotonic()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return (time.monotonic() - start) * 1000


def size_kib(folder):
    return int(subprocess.run(['du', '-sk', folder], check=True, capture_output=True, text=True).stdout.split()[0])


def files(folder):
    return sum(len(f) for _, _, f in os.walk(folder))


def main():
    dist = Path(sys.argv[1])
    tarball = next(dist.glob('clutch-*.tgz'))
    pm2 = 'pm2@' + json.loads((ROOT / 'bench/pm2/package.json').read_text())['dependencies']['pm2']
    sides = {'PM2': (pm2, 'pm2'), 'clutch': (str(tarball), 'clutch')}
    result = {name: {'install': []} for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(RUNS):
            for name, (what, command) in sides.items():
                prefix = Path(tmp, f'{name}-{run}')
                result[name]['install'].append(timed(['npm', 'install', '-g', '--offline', '--no-audit', '--no-fund',
                                                      '--prefix', str(prefix), what]))
                if not (prefix / 'bin' / command).exists():
                    raise SystemExit(f'bench/install.py: {name} installed no bin/{command}')
                result[name]['size'] = size_kib(prefix / 'lib')
                result[name]['files'] = files(prefix / 'lib')
                print(f'{name} run {run + 1}: install {result[name]["install"][-1]:.0f} ms', file=sys.stderr)
    m = {name: {k: statistics.median(v) for k, v in r.items() if isinstance(v, list)} for name, r in result.items()}
    print(f'npm install -g, offline ({RUNS} runs each, medians)   PM2 ({pm2})    clutch ({tarball.name})   ratio')
    print(f'  install                       {m["PM2"]["install"]:10.0f} ms  {m["clutch"]["install"]:10.0f} ms'
          f'   {m["PM2"]["install"] / m["clutch"]["install"]:.1f}x')
    print(f'  installed size                {result["PM2"]["size"]:10d} KiB {result["clutch"]["size"]:10d} KiB'
          f'  {result["PM2"]["size"] / result["clutch"]["size"]:.1f}x')
    print(f'  files                         {result["PM2"]["files"]:10d}     {result["clutch"]["files"]:10d}')


if __name__ == '__main__':
    main()
