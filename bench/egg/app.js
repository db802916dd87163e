'use strict';

// App-worker side of the benchmark, loaded by framework/index.js in the (single)
// app worker. Starts when the master broadcasts 'egg-ready' (agent and worker up,
// worker listening), runs both phases, and sends the figures to run.js with
// messenger.send(..., 'parent') (worker -> master -> run.js).

const fs = require('fs');
const { execFileSync } = require('child_process');

const MESSAGES = int('MESSAGES', 200000);
const ROUNDS = int('ROUNDS', 5000);
const CHUNK = int('CHUNK', 1000);        // sendToAgent calls per event-loop turn
const WARMUP = int('WARMUP', 200);       // untimed ping-pongs before the timed ones
const STALL_MS = int('STALL_MS', 30000); // after the last send, give up waiting for 'bench-done'

function int(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${v}`);
  return n;
}

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', [ 'CLK_TCK' ], { encoding: 'utf8' }).trim()) || 100;
} catch (_) { /* keep 100 */ }

// utime+stime of a whole process (all threads), in ms; clock-tick resolution
function statCpuMs(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
  return (Number(f[11]) + Number(f[12])) * 1000 / CLK_TCK; // fields 14 utime, 15 stime
}

// on-CPU time summed over the live threads of a process, in ms (ns resolution)
function schedCpuMs(pid) {
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch (_) { /* thread gone */ }
  }
  return ns / 1e6;
}

// syscall counters from /proc/<pid>/io (null if not readable)
function ioSyscalls(pid) {
  try {
    const io = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
    const get = k => Number((io.match(new RegExp(`^${k}: (\\d+)`, 'm')) || [])[1]);
    return { r: get('syscr'), w: get('syscw') };
  } catch (_) {
    return null;
  }
}

const ioDelta = (a, b, k) => (a && b ? b[k] - a[k] : null);

function round(x, d = 1) {
  const k = 10 ** d;
  return Math.round(x * k) / k;
}

function waitFor(m, action, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      m.removeListener(action, on);
      reject(new Error(`no '${action}' within ${ms} ms`));
    }, ms);
    function on(data) {
      clearTimeout(timer);
      resolve(data);
    }
    m.once(action, on);
  });
}

module.exports = app => {
  const m = app.messenger;
  m.once('egg-ready', () => {
    run(m).then(
      result => m.send('bench-result', result, 'parent'),
      err => m.send('bench-error', { message: String(err && err.stack || err) }, 'parent')
    );
  });
};

async function run(m) {
  const masterPid = process.ppid; // the egg-cluster master (cluster primary)

  // handshake (also the first trip over the path): tells the agent our pid and N
  const helloAck = waitFor(m, 'bench-hello-ack', 10000);
  m.sendToAgent('bench-hello', { pid: process.pid, messages: MESSAGES });
  const { agentPid } = await helloAck;

  // ---- throughput: N x sendToAgent('bench', {i}) ----
  const cpu0 = {
    master: statCpuMs(masterPid), masterHi: schedCpuMs(masterPid),
    agent: statCpuMs(agentPid), worker: statCpuMs(process.pid),
    masterIo: ioSyscalls(masterPid), workerIo: ioSyscalls(process.pid),
  };
  let lastSendNs = 0n;
  const backpressured0 = m.sendsBackpressured;
  const t0 = process.hrtime.bigint();
  const outcome = await new Promise(resolve => {
    let stallTimer = null;
    m.once('bench-done', data => {
      const t1 = process.hrtime.bigint();
      clearTimeout(stallTimer);
      resolve({ t1, data, lost: 0 });
    });
    let i = 0;
    const pump = () => {
      const end = Math.min(i + CHUNK, MESSAGES);
      for (; i < end; i++) m.sendToAgent('bench', { i });
      if (i < MESSAGES) {
        setImmediate(pump);
        return;
      }
      lastSendNs = process.hrtime.bigint();
      stallTimer = setTimeout(() => {
        // 'bench-done' never came: ask how many the agent got
        m.removeAllListeners('bench-done');
        waitFor(m, 'bench-status-reply', 10000).then(
          data => resolve({ t1: null, data, lost: MESSAGES - data.received }),
          () => resolve({ t1: null, data: null, lost: null })
        );
        m.sendToAgent('bench-status');
      }, STALL_MS);
    };
    if (MESSAGES === 0) {
      m.removeAllListeners('bench-done');
      resolve({ t1: t0, data: { received: 0, outOfOrder: 0 }, lost: 0 });
      return;
    }
    pump();
  });
  const cpu1 = {
    master: statCpuMs(masterPid), masterHi: schedCpuMs(masterPid),
    agent: statCpuMs(agentPid), worker: statCpuMs(process.pid),
    masterIo: ioSyscalls(masterPid), workerIo: ioSyscalls(process.pid),
  };

  const elapsedMs = outcome.t1 === null ? null : Number(outcome.t1 - t0) / 1e6;
  const throughput = {
    messages: MESSAGES,
    chunk: CHUNK,
    received: outcome.data ? outcome.data.received : null,
    lost: outcome.lost,
    out_of_order: outcome.data ? outcome.data.outOfOrder : null,
    elapsed_ms: elapsedMs === null ? null : round(elapsedMs, 2),
    send_loop_ms: lastSendNs ? round(Number(lastSendNs - t0) / 1e6, 2) : null,
    // sends that found > 128 KiB queued in the worker's IPC pipe (process.send() === false;
    // egg ignores this, the message is queued anyway)
    sends_backpressured: m.sendsBackpressured - backpressured0,
    msgs_per_s: elapsedMs ? Math.round(MESSAGES / (elapsedMs / 1000)) : null,
    master_cpu_ms: round(cpu1.master - cpu0.master, 0),
    master_cpu_ms_hires: round(cpu1.masterHi - cpu0.masterHi, 1),
    agent_cpu_ms: round(cpu1.agent - cpu0.agent, 0),
    worker_cpu_ms: round(cpu1.worker - cpu0.worker, 0),
    // write()/writev() syscalls of the process during the phase (IPC + anything else, e.g.
    // logs). Not reads: libuv reads IPC pipes with recvmsg(), which syscr does not count.
    master_syscalls_write: ioDelta(cpu0.masterIo, cpu1.masterIo, 'w'),
    worker_syscalls_write: ioDelta(cpu0.workerIo, cpu1.workerIo, 'w'),
  };
  if (outcome.lost !== 0) return { masterPid, agentPid, workerPid: process.pid, throughput, latency: null };

  // ---- latency: sequential ping (worker -> master -> agent) / pong (agent -> master -> worker) ----
  const pingLoop = (total, samples) => new Promise(resolve => {
    if (total === 0) return resolve();
    let k = 0;
    let t = 0n;
    const send = () => {
      t = process.hrtime.bigint();
      m.sendToAgent('ping', { i: k });
    };
    const onPong = () => {
      const dt = process.hrtime.bigint() - t;
      if (samples) samples[k] = Number(dt) / 1000;
      if (++k === total) {
        m.removeListener('pong', onPong);
        resolve();
      } else {
        send();
      }
    };
    m.on('pong', onPong);
    send();
  });
  await pingLoop(WARMUP, null);
  const samples = new Float64Array(ROUNDS);
  const c0 = statCpuMs(masterPid);
  const l0 = process.hrtime.bigint();
  await pingLoop(ROUNDS, samples);
  const l1 = process.hrtime.bigint();
  const c1 = statCpuMs(masterPid);
  samples.sort();
  const pct = p => (ROUNDS ? round(samples[Math.max(0, Math.ceil(p * ROUNDS) - 1)], 1) : null);
  const latency = {
    rounds: ROUNDS,
    warmup: WARMUP,
    rtt_us_median: ROUNDS ? round(ROUNDS % 2 ? samples[(ROUNDS - 1) / 2] : (samples[ROUNDS / 2 - 1] + samples[ROUNDS / 2]) / 2, 1) : null,
    rtt_us_p99: pct(0.99),
    rtt_us_min: ROUNDS ? round(samples[0], 1) : null,
    rtt_us_max: ROUNDS ? round(samples[ROUNDS - 1], 1) : null,
    elapsed_ms: round(Number(l1 - l0) / 1e6, 2),
    master_cpu_ms: round(c1 - c0, 0),
  };

  return { masterPid, agentPid, workerPid: process.pid, clk_tck: CLK_TCK, throughput, latency };
}
