// `bench/run supervisor`'s app, the same for PM2 and clutch: an HTTP hello world answering "hello from <pid>\n".
//   PORT=N node bench/hello.js          listens on 127.0.0.1:N (PM2's cluster mode shares it among the instances)
//   LISTEN_FDS=1 node bench/hello.js    listens on fd 3, the socket clutch bound and passed (systemd style)
//   HELLO_ABRUPT=1                      dies at once on SIGINT/SIGTERM, dropping whatever is in flight
// By default SIGINT and SIGTERM are graceful: stop accepting, answer what comes on the open connections with
// `Connection: close`, and exit once the last one has ended.
'use strict';
const http = require('http');
const net = require('net');

const body = `hello from ${process.pid}\n`;
let stopping = false;
const server = http.createServer((req, res) => {
  const headers = { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) };
  if (stopping) headers.Connection = 'close'; // a busy kept-alive connection ends after this response
  res.writeHead(200, headers);
  res.end(body);
});
server.keepAliveTimeout = 1000; // an idle kept-alive connection does not hold a graceful stop for long

if (process.env.LISTEN_FDS) {
  server.listen({ fd: 3 });
} else {
  server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');
}

function stop() {
  if (process.env.HELLO_ABRUPT === '1') process.exit(0);
  if (stopping) return;
  stopping = true;
  // net.Server's close, not http.Server's: the latter also drops the kept-alive connections idle at that moment,
  // and a client may have a request on its way on one of them (wrk always has), which then fails. This way each
  // kept-alive connection ends after its next response (`Connection: close` above) or keepAliveTimeout idle, and
  // the callback runs once the last one has.
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref(); // a client that never lets go does not keep the worker alive
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
