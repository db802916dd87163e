'use strict';

// Minimal "framework" for egg-cluster 2.x (what it needs, per
// node_modules/egg-cluster/lib/{agent_worker,app_worker}.js):
//
//   Agent       : new Agent(options); agent.ready(cb(err)); agent.once/removeListener('error');
//                 agent.close() -> Promise (graceful-process beforeExit).
//   Application : new Application(options); app.config.cluster.listen {port, hostname};
//                 app.ready(cb(err)) -> app_worker then creates an http server with
//                 app.callback(), emits app 'server', listens, and the master counts the
//                 worker as started on cluster 'listening'; app.once/removeListener
//                 ('startTimeout'); app.close() -> Promise.
//
// Like egg, it loads `${baseDir}/agent.js` / `${baseDir}/app.js` (a function taking the
// agent/app) so that the benchmark logic stays out of the framework.
// It must have no side effects at require() time: the master requires it too.

const fs = require('fs');
const path = require('path');
const EventEmitter = require('events');
const Messenger = require('./messenger');

class Base extends EventEmitter {
  constructor(options, type, hookFile) {
    super();
    this.options = options;
    this.type = type;
    this.baseDir = options.baseDir;
    this.messenger = new Messenger();
    this._readyErr = undefined;
    this._isReady = false;
    this._readyCallbacks = [];

    const hook = path.join(this.baseDir, hookFile);
    let boot = Promise.resolve();
    if (fs.existsSync(hook)) {
      // a throw here propagates to egg-cluster's `new Agent/Application()` try/catch
      const ret = require(hook)(this);
      boot = Promise.resolve(ret);
    }
    boot.then(() => this._markReady(), err => this._markReady(err || new Error('boot failed')));
  }

  _markReady(err) {
    this._isReady = true;
    this._readyErr = err;
    const cbs = this._readyCallbacks.splice(0);
    for (const cb of cbs) process.nextTick(cb, err);
    if (err && this.listenerCount('error') > 0) this.emit('error', err);
  }

  ready(cb) {
    if (typeof cb !== 'function') {
      return new Promise((resolve, reject) => this.ready(err => (err ? reject(err) : resolve())));
    }
    if (this._isReady) process.nextTick(cb, this._readyErr);
    else this._readyCallbacks.push(cb);
  }

  async close() {
    this.emit('close');
    this.messenger.close();
  }
}

class Agent extends Base {
  constructor(options) {
    super(options, 'agent', 'agent.js');
  }
}

class Application extends Base {
  constructor(options) {
    super(options, 'application', 'app.js');
    // egg-cluster reads app.config.cluster.listen; options.port (from startCluster) wins
    this.config = {
      cluster: {
        listen: {
          port: options.port,
          hostname: '127.0.0.1',
        },
      },
    };
    this.server = null;
    this.once('server', server => { this.server = server; });
  }

  callback() {
    return (req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end('ok\n');
    };
  }
}

module.exports = { Agent, Application };
