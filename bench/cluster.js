// Node 20's side of `bench/run cluster`: a `cluster` hello world that does what clutch's examples/cluster_http does.
//   node bench/cluster.js [--workers N] [--port P]
// Workers answer GET / with "worker success <pid>\n". The primary prints one line per event on stdout, in
// cluster_http's words, which bench/cluster.py reads:
//   worker <id> online pid <pid> | worker <id> listening pid <pid> on <addr>:<port>
//   worker <id> exit pid <pid> code <c> | ... signal <s>       reload done | reload failed: <why>
// A worker that dies unasked is replaced at once; SIGHUP replaces the workers one by one (rolling reload);
// SIGTERM stops them gracefully, and the primary exits once they are all gone.
// Node's default scheduling on Linux is round-robin: the primary accepts and hands each connection to a worker.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const workers = arg('--workers', os.availableParallelism());
const port = arg('--port', 8000);
const host = '127.0.0.1';
// --timestamps: listening and exit lines end with " at <seconds>" on CLOCK_MONOTONIC (libuv's hrtime), as clutch's.
const at = () => (process.argv.includes('--timestamps') ? ` at ${(Number(process.hrtime.bigint()) / 1e9).toFixed(6)}` : '');

if (cluster.isWorker) {
  const body = `worker success ${process.pid}\n`;
  http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/') {
      res.setHeader('Content-Type', 'text/plain');
      res.end(body);
    } else {
      res.statusCode = 404;
      res.end();
    }
  }).listen(port, host);
  // Nothing more: the primary's worker.disconnect() closes this worker's server, which (Node 19 on) destroys the
  // keep-alive connections idle at that moment and waits for the busy ones, then the worker exits. A request
  // already on its way over an idle connection is lost with it: the plain Node way, measured as it is.
  return;
}

// Pipes are written synchronously on Linux, so each line is out before the next event.
const say = (line) => process.stdout.write(`${line}\n`);
const live = new Set();
let stopping = false;
let reloading = false;

cluster.on('online', (w) => say(`worker ${w.id} online pid ${w.process.pid}`));
cluster.on('listening', (w, a) => say(`worker ${w.id} listening pid ${w.process.pid} on ${a.address}:${a.port}${at()}`));
cluster.on('exit', (w, code, signal) => {
  // Signals by number, as cluster_http prints them.
  say(`worker ${w.id} exit pid ${w.process.pid} ${signal ? `signal ${os.constants.signals[signal]}` : `code ${code}`}${at()}`);
  live.delete(w);
  if (stopping) {
    if (live.size === 0) process.exit(0);
  } else if (!w.exitedAfterDisconnect) {
    fork();
  }
});

function fork() {
  const w = cluster.fork();
  live.add(w);
  return w;
}

// Resolves when `w` listens; rejects if it exits first or takes longer than 10 s.
function listening(w) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      w.process.kill('SIGKILL');
      reject(new Error(`worker ${w.id} not listening after 10 s`));
    }, 10000);
    w.once('listening', () => {
      clearTimeout(timer);
      resolve();
    });
    w.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`worker ${w.id} exited before listening`));
    });
  });
}

process.on('SIGHUP', async () => {
  if (reloading || stopping) return say(`reload failed: ${stopping ? 'stopping' : 'a reload is under way'}`);
  reloading = true;
  try {
    for (const old of [...live]) {
      await listening(fork());
      if (old.isDead()) continue;  // it died meanwhile, and was replaced already
      const gone = new Promise((resolve) => old.once('exit', resolve));
      old.disconnect();
      await gone;
    }
    say('reload done');
  } catch (err) {
    say(`reload failed: ${err.message}`);
  }
  reloading = false;
});

process.on('SIGTERM', () => {
  stopping = true;
  if (live.size === 0) process.exit(0);
  for (const w of live) w.disconnect();
});

for (let i = 0; i < workers; i++) fork();
