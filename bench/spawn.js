// Node 20's side of `bench/run spawn`: the same operations as spawn_bench.cpp, printed as one JSON object.
//   node bench/spawn.js ITERATIONS ROUNDS [PARENT_MB]
'use strict';
const { exec, execFile, spawn, spawnSync } = require('node:child_process');

const iterations = Number(process.argv[2] || 200);
const rounds = Number(process.argv[3] || 5);
const parentMb = Number(process.argv[4] || 0);

// Touched memory, so that fork() has real page tables to copy, as a big server process would.
const ballast = parentMb > 0 ? Buffer.alloc(parentMb * 1024 * 1024, 1) : null;

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// ms per call of a sequential loop of `one(callback)`, median over rounds
async function perCall(one) {
  const times = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) await new Promise((resolve, reject) => one((err) => (err ? reject(err) : resolve())));
    times.push(Number(process.hrtime.bigint() - t0) / 1e6 / iterations);
  }
  return median(times);
}

// spawns per second with `inFlight` execFile calls outstanding at all times
async function throughput(inFlight) {
  const rates = [];
  for (let r = 0; r < rounds; r++) {
    let started = 0;
    const t0 = process.hrtime.bigint();
    await new Promise((resolve, reject) => {
      let done = 0;
      const next = () => {
        if (started === iterations) return;
        started++;
        execFile('/bin/true', (err) => {
          if (err) return reject(err);
          if (++done === iterations) return resolve();
          next();
        });
      };
      for (let i = 0; i < inFlight; i++) next();
    });
    rates.push(iterations / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  return median(rates);
}

(async () => {
  const out = {};
  if (parentMb > 0) {
    out.execFile = await perCall((cb) => execFile('/bin/true', cb));
  } else {
    out.exec = await perCall((cb) => exec('true', cb));
    out.execFile = await perCall((cb) => execFile('/bin/true', cb));
    out.spawnEcho = await perCall((cb) => {
      const c = spawn('echo', ['hello']);
      let text = '';
      c.stdout.on('data', (d) => (text += d));
      c.on('close', () => cb(text === 'hello\n' ? null : new Error('bad output')));
    });
    out.spawnSync = await perCall((cb) => cb(spawnSync('/bin/true').status === 0 ? null : new Error('failed')));
    out.throughput2 = await throughput(2);
  }
  if (ballast) out.ballast = ballast[ballast.length - 1];
  process.stdout.write(JSON.stringify(out) + '\n');
})();
