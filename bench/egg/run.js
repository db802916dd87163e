#!/usr/bin/env node
'use strict';

// Benchmark of egg-cluster's messenger: app worker -> (master) -> agent.
//
//   cd bench/egg && npm install && node run.js
//
// env: MESSAGES (200000)  ROUNDS (5000)  CHUNK (1000)  WARMUP (200)
//      BENCH_PORT (17001, app worker's HTTP port on 127.0.0.1)  TIMEOUT_MS (120000)
//
// stdout: exactly one line of JSON. Everything else (egg-cluster's logs included)
// goes to stderr. Exit 0 ok, 1 failure, 2 overall timeout, 3 messages lost.

const path = require('path');
const { fork } = require('child_process');

const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 120000);
const SHUTDOWN_MS = 15000;
const version = require('egg-cluster/package.json').version;

const log = (...args) => console.error('[run]', ...args);

const env = Object.assign({}, process.env, {
  // bound egg-cluster's graceful close (default 5000 ms each)
  EGG_APP_CLOSE_TIMEOUT: process.env.EGG_APP_CLOSE_TIMEOUT || '3000',
  EGG_AGENT_CLOSE_TIMEOUT: process.env.EGG_AGENT_CLOSE_TIMEOUT || '3000',
});

const tSpawn = Date.now();
// own process group (detached) so that the master, the agent and the app worker
// can all be killed at once with kill(-pgid) if anything goes wrong.
const master = fork(path.join(__dirname, 'master.js'), [], {
  cwd: __dirname,
  env,
  detached: true,
  stdio: [ 'ignore', 2, 2, 'ipc' ], // master's (and its children's) stdout -> our stderr
});
const pgid = master.pid;
log(`egg-cluster ${version} master pid ${master.pid}, node ${process.version}`);

let finishing = false;
let masterExited = false;
let startupMs = null;

function killGroup(signal) {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (_) {
    return false; // ESRCH: nobody left in the group
  }
}

function groupAlive() {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (_) {
    return false;
  }
}

const overall = setTimeout(() => {
  log(`overall timeout (${TIMEOUT_MS} ms): killing process group ${pgid}`);
  killGroup('SIGKILL');
  process.exit(2);
}, TIMEOUT_MS);

for (const sig of [ 'SIGINT', 'SIGTERM' ]) {
  process.on(sig, () => {
    log(`got ${sig}: killing process group ${pgid}`);
    killGroup('SIGKILL');
    process.exit(130);
  });
}

master.on('message', msg => {
  if (!msg || typeof msg !== 'object') return;
  if (msg.action === 'egg-ready') {
    startupMs = Date.now() - tSpawn;
    log(`cluster ready in ${startupMs} ms (${msg.data && msg.data.address})`);
  } else if (msg.action === 'bench-result') {
    onResult(msg.data);
  } else if (msg.action === 'bench-error') {
    log('benchmark failed in the app worker:', msg.data && msg.data.message);
    shutdown(1);
  }
});

master.on('exit', (code, signal) => {
  masterExited = true;
  if (!finishing) {
    log(`master exited early (code ${code}, signal ${signal})`);
    shutdown(1);
  }
});

function onResult(r) {
  const tp = r.throughput;
  const lat = r.latency || {};
  const out = {
    peer: `egg-cluster ${version}`,
    messages: tp.messages,
    msgs_per_s: tp.msgs_per_s,
    rtt_us_median: lat.rtt_us_median === undefined ? null : lat.rtt_us_median,
    rtt_us_p99: lat.rtt_us_p99 === undefined ? null : lat.rtt_us_p99,
    rounds: lat.rounds === undefined ? null : lat.rounds,
    master_cpu_ms: tp.master_cpu_ms,
    // extras (not part of the common schema)
    lost: tp.lost,
    out_of_order: tp.out_of_order,
    chunk: tp.chunk,
    throughput_ms: tp.elapsed_ms,
    send_loop_ms: tp.send_loop_ms,
    sends_backpressured: tp.sends_backpressured,
    master_cpu_ms_hires: tp.master_cpu_ms_hires,
    agent_cpu_ms: tp.agent_cpu_ms,
    worker_cpu_ms: tp.worker_cpu_ms,
    master_syscalls_write: tp.master_syscalls_write,
    worker_syscalls_write: tp.worker_syscalls_write,
    rtt_us_min: lat.rtt_us_min === undefined ? null : lat.rtt_us_min,
    rtt_us_max: lat.rtt_us_max === undefined ? null : lat.rtt_us_max,
    rtt_master_cpu_ms: lat.master_cpu_ms === undefined ? null : lat.master_cpu_ms,
    warmup: lat.warmup === undefined ? null : lat.warmup,
    startup_ms: startupMs,
    node: process.version,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  shutdown(tp.lost === 0 ? 0 : 3);
}

function shutdown(code) {
  if (finishing) return;
  finishing = true;
  clearTimeout(overall);
  const hard = setTimeout(() => {
    log(`graceful stop took more than ${SHUTDOWN_MS} ms: SIGKILL to process group ${pgid}`);
    killGroup('SIGKILL');
    process.exit(code || 1);
  }, SHUTDOWN_MS);

  const afterMaster = () => {
    // the master SIGTERMs its app worker and agent before exiting; make sure
    // nothing of the group survived it
    let tries = 0;
    const check = () => {
      if (!groupAlive()) {
        clearTimeout(hard);
        process.exit(code);
      }
      if (++tries === 20) { // ~2 s
        log(`leftover processes in group ${pgid}: SIGKILL`);
        killGroup('SIGKILL');
      }
      setTimeout(check, 100);
    };
    check();
  };

  if (masterExited) {
    afterMaster();
  } else {
    master.once('exit', afterMaster);
    master.kill('SIGTERM'); // egg-cluster: close app workers, then the agent, then exit(0)
  }
}
