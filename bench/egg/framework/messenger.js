'use strict';

// Worker-side messenger with the same API and the same wire format as
// egg 3.x's IPC messenger (egg/lib/core/messenger/ipc.js, egg@3.34.0), process
// mode only. Written for this benchmark; it is not egg's code.
//
// Every method ends in ONE `sendmessage(process, msg)` call, i.e. one
// process.send() over the worker's IPC pipe to the egg-cluster master, which
// routes it (egg-cluster lib/utils/messenger.js):
//   sendToAgent(action, data) -> { action, data, to: 'agent' }
//   sendToApp(action, data)   -> { action, data, to: 'app' }
//   sendTo(pid, action, data) -> { action, data, receiverPid: String(pid) }
//   send(action, data, to)    -> { action, data, to }   (to may be 'parent'/'master')
// Incoming messages are emitted as events named after `action`.

const EventEmitter = require('events');
const sendmessage = require('sendmessage'); // same package egg@3.34 uses (^2.0.0)

class Messenger extends EventEmitter {
  constructor() {
    super();
    this.pid = String(process.pid);
    this.opids = []; // pids on the "other side", pushed by the master as 'egg-pids'
    // benchmark diagnostic (not in egg): how many process.send() calls returned false,
    // i.e. found more than 128 KiB already queued in this process's IPC pipe
    this.sendsBackpressured = 0;
    this.on('egg-pids', pids => { this.opids = pids; });
    this._onMessage = message => {
      if (message && typeof message.action === 'string') {
        this.emit(message.action, message.data);
      }
    };
    process.on('message', this._onMessage);
  }

  send(action, data, to) {
    if (sendmessage(process, { action, data, to }) === false) this.sendsBackpressured++;
    return this;
  }

  sendTo(pid, action, data) {
    if (sendmessage(process, { action, data, receiverPid: String(pid) }) === false) this.sendsBackpressured++;
    return this;
  }

  sendToApp(action, data) { return this.send(action, data, 'app'); }

  sendToAgent(action, data) { return this.send(action, data, 'agent'); }

  broadcast(action, data) {
    this.send(action, data, 'app');
    return this.send(action, data, 'agent');
  }

  sendRandom(action, data) {
    if (this.opids.length === 0) return this;
    const pid = this.opids[Math.floor(Math.random() * this.opids.length)];
    return this.sendTo(pid, action, data);
  }

  close() {
    process.removeListener('message', this._onMessage);
    this.removeAllListeners();
  }
}

module.exports = Messenger;
