// `bench/run supervisor`'s app, the same for PM2 and clutch: an HTTP hello world answering "hello from <pid>\n".
//   PORT=N node bench/hello.js          listens on 127.0.0.1:N (PM2's cluster mode shares it among the instances)
//   LISTEN_FDS=1 node bench/hello.js    listens on fd 3, the socket clutch bound and passed (systemd style)
//   HELLO_ABRUPT=1                      dies at once on SIGINT/SIGTERM, dropping whatever is in flight
//   HELLO_NO_HANDLER=1                  no signal handler at all (Node's default: SIGINT/SIGTERM end it at once)
// By default SIGINT and SIGTERM are graceful, with the stop handler docs/pm2-migration.md gives (the part between
// the two "docs/pm2-migration.md" lines below, which bench/supervisor.py checks is the doc's text, word for word).
'use strict';
const http = require('http');
const net = require('net');

const body = `hello from ${process.pid}\n`;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 1000; // an idle kept-alive connection does not hold a graceful stop for long

if (process.env.LISTEN_FDS) {
  server.listen({ fd: 3 });
} else {
  server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');
}

if (process.env.HELLO_NO_HANDLER === '1') {
  // as most apps are written
} else if (process.env.HELLO_ABRUPT === '1') {
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
} else {
// --- docs/pm2-migration.md: the stop handler ---
let stopping = false;
// While stopping, every response says `Connection: close`: a client with a request on its way on a kept-alive
// connection gets its answer, then opens its next connection elsewhere.
server.prependListener('request', (req, res) => {
  if (stopping) res.setHeader('Connection', 'close');
});
function stop() {
  if (stopping) return;
  stopping = true;
  // net.Server's close, not http.Server's: since Node 19 the latter also drops the kept-alive connections idle
  // at that moment, and a client may have a request on its way on one of them, which then fails. The callback
  // runs once the last connection has ended (after its next response, or keepAliveTimeout idle).
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => process.exit(0), 4000).unref(); // a client that never lets go: before clutch's kill_timeout
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, stop);
// --- docs/pm2-migration.md: end ---
}
