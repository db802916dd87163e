// The supervisor demo's program (scripts/supervisor-demo): a Node HTTP server that knows nothing of clutch beyond
// systemd's socket protocol. It serves on fd 3 when clutch passes a socket (LISTEN_FDS), on PORT otherwise, and
// stops gracefully on SIGTERM: no new connection, the open ones answered, then exit 0.
'use strict';
const http = require('http');

const id = process.env.CLUTCH_WORKER_ID || '-';
const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end(`hello from worker ${id} (pid ${process.pid})\n`);
});
server.listen(process.env.LISTEN_FDS ? { fd: 3 } : Number(process.env.PORT || 8080), () => {
  console.log(`worker ${id} listening`);
});
process.on('SIGTERM', () => {
  console.log(`worker ${id} stopping`);
  server.close(() => process.exit(0));
});
