'use strict';

// Agent side of the benchmark, loaded by framework/index.js in the agent worker.

module.exports = agent => {
  const m = agent.messenger;
  let appPid = null;
  let expected = 0;
  let received = 0;
  let next = 0;
  let outOfOrder = 0;

  // handshake: learn the app worker's pid and how many messages to expect
  m.on('bench-hello', data => {
    appPid = data.pid;
    expected = data.messages;
    received = 0;
    next = 0;
    outOfOrder = 0;
    m.sendTo(appPid, 'bench-hello-ack', { agentPid: process.pid });
  });

  // throughput: count, check ordering, notify the worker once all have arrived
  m.on('bench', data => {
    received++;
    if (data.i !== next) outOfOrder++;
    next = data.i + 1;
    if (received === expected) {
      m.sendTo(appPid, 'bench-done', { received, outOfOrder });
    }
  });

  // asked by the worker if 'bench-done' never comes (lost messages)
  m.on('bench-status', () => {
    m.sendTo(appPid, 'bench-status-reply', { received, outOfOrder });
  });

  // latency: reply to the worker that pinged
  m.on('ping', data => {
    m.sendTo(appPid, 'pong', data);
  });
};
