// Node 20's side of `bench/run ipc`: fork/send between two Node processes, printed as one JSON object.
//   node bench/ipc.js ROUNDTRIPS SMALL_MESSAGES LARGE_MESSAGES
//   node bench/ipc.js huge
'use strict';
const { fork } = require('node:child_process');

if (process.argv[2] === 'child') {
  // echo: answer each {"seq"} at once; count: count until "end", then report.
  let count = 0;
  let bytes = 0;
  process.on('message', (m) => {
    if (m === 'end') {
      process.send({ count, bytes });
      count = 0;
      bytes = 0;
    } else if (m && m.seq !== undefined && m.echo) {
      process.send(m);
    } else {
      count++;
      if (typeof m === 'string') bytes += m.length;
    }
  });
  process.on('disconnect', () => process.exit(0));
  return;
}

const child = fork(__filename, ['child']);
let onMessage = null;
child.on('message', (m) => onMessage(m));
const now = () => process.hrtime.bigint();

if (process.argv[2] === 'huge') {  // one 100 MiB message, sent and parsed by the child
  const t0 = now();
  onMessage = () => {
    process.stdout.write(JSON.stringify({ huge_s: Number(now() - t0) / 1e9 }) + '\n');
    child.disconnect();
  };
  child.send('h'.repeat(100 * 1024 * 1024));
  child.send('end');
  return;
}
const [roundtrips, small, large] = process.argv.slice(2).map(Number);

function roundTrip() {
  return new Promise((resolve) => {
    let seq = 0;
    const t0 = now();
    onMessage = () => {
      if (++seq === roundtrips) return resolve(Number(now() - t0) / 1e3 / roundtrips);
      child.send({ seq, echo: true });
    };
    child.send({ seq, echo: true });
  });
}

// Sends `count` copies of make(i) while send() says the queue is under its high-water mark; past it, the next send
// carries a callback and sending resumes once that message is written. Resolves with the seconds taken.
function oneWay(count, make) {
  return new Promise((resolve) => {
    const t0 = now();
    onMessage = () => resolve(Number(now() - t0) / 1e9);
    let i = 0;
    const pump = () => {
      while (i < count) {
        if (!child.send(make(i++))) {
          if (i < count) child.send(make(i++), pump);
          break;
        }
      }
      if (i === count) child.send('end');
    };
    pump();
  });
}

(async () => {
  await roundTrip();  // warm-up
  const rtt = await roundTrip();
  const smallSeconds = await oneWay(small, (i) => ({ seq: i }));
  const big = 'x'.repeat(65536);
  const largeSeconds = await oneWay(large, () => big);
  process.stdout.write(JSON.stringify({
    rtt_us: rtt,
    small_per_s: small / smallSeconds,
    large_mb_per_s: (large * 65536) / 1e6 / largeSeconds,
  }) + '\n');
  child.disconnect();
})();
