// clutch's preload for the Node cluster workers it runs (NODE_OPTIONS="--require <this file>"; the file is written
// by the engine from the copy built into clutch, see node_preload.cpp). It changes nothing in the app until clutch
// stops the worker, and then does what an app's own graceful stop handler would:
//   - an app with a listener for the stop signal (process.on('SIGTERM', …)) gets the signal, and its handler
//     decides, as under PM2;
//   - an app with none (most are written so, and die at once on the signal, in the middle of their requests) has
//     its servers closed for it: each response from then on says `Connection: close`, so a client with a request
//     on its way on a kept-alive connection gets its answer and opens its next connection to another worker;
//     the idle connections are left to the server's keepAliveTimeout. Once the last connection has ended the
//     worker leaves the cluster (its channel closes) and clutch sends the stop signal, which ends it.
// Why not Node's own `disconnect`: it closes each server with http.Server.close, which since Node 19 also drops
// the kept-alive connections idle at that moment; a client's next request on one of them then fails.
// Inert anywhere but in a cluster worker (the app's own child processes inherit NODE_OPTIONS: it takes itself out
// of the variable so that they do not load it at all).
'use strict';

const own = ` --require ${JSON.stringify(__filename)}`;
if (typeof process.env.NODE_OPTIONS === 'string' && process.env.NODE_OPTIONS.endsWith(own)) {
  const before = process.env.NODE_OPTIONS.slice(0, -own.length);
  if (before) process.env.NODE_OPTIONS = before;
  else delete process.env.NODE_OPTIONS;
}

if (typeof process.send === 'function' && require('cluster').isWorker) {
  // To clutch, CLUTCH_ messages are its own; to Node, NODE_ ones are (the app's 'message' listeners see neither).
  const send = (act) => process.send({ cmd: 'CLUTCH_NODE_PRELOAD', act });
  let stopping = false;

  const stopForTheApp = () => {
    const http = require('http');
    const https = require('https');
    const net = require('net');
    const servers = process._getActiveHandles().filter((h) => h instanceof net.Server && h.listening);
    let open = servers.length + 1;
    const closed = () => {
      if (--open === 0) require('cluster').worker.disconnect();
    };
    for (const server of servers) {
      if (server instanceof http.Server || server instanceof https.Server) {
        server.prependListener('request', (req, res) => {
          if (!res.headersSent) res.setHeader('Connection', 'close');
        });
      }
      // net.Server's close, not http.Server's, which would drop the idle kept-alive connections.
      net.Server.prototype.close.call(server, closed);
    }
    closed();
  };

  process.on('internalMessage', (message) => {
    if (!message || message.cmd !== 'NODE_CLUTCH' || message.act !== 'stop' || stopping) return;
    stopping = true;
    if (process.listenerCount(String(message.signal)) > 0) send('signal');
    else stopForTheApp();
  });
  send('preloaded');
}
